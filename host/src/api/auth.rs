//! Bearer tokens on the API: the middleware, and which role each route needs. The tokens
//! and roles themselves are `crate::auth` (the config parses them too).
//!
//! Tokens are configured as `name:role:sha256-of-token` (`[auth] tokens`): the server never
//! holds a token itself. A request's token is hashed and compared with every configured
//! digest in constant time; the matching token's name is the actor of everything the request
//! does (`user_or_system` in the audit trail). Without any token configured the API is open
//! to loopback callers only (the config refuses another listen address) and the actor is
//! `local`.
//!
//! Which role a route needs is decided here, in one place (`required_role`), so a new route
//! is protected by default: any method but GET/HEAD needs `operate`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ACTOR, ApiError, AppState};
pub use crate::auth::{Auth, Role, Token, new_token};

/// The role a request needs; `None` for the probes and the OpenAPI document anyone may
/// call (and `/metrics` unless `[auth] protect_metrics`).
pub fn required_role(method: &Method, path: &str, protect_metrics: bool) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || (path == "/metrics" && !protect_metrics)
    {
        return None;
    }
    let admin_path = path.starts_with("/api/v1/policies")
        || path.starts_with("/api/v1/breakers")
        || path == "/api/v1/jobs/failed/groups/rebuild";
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::Read);
    }
    if admin_path || (method == Method::DELETE && path.starts_with("/api/v1/idempotency/")) {
        return Some(Role::Admin);
    }
    Some(Role::Operate)
}

/// Who a request acts as: the token's name, or `local` without auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Actor>()
            .cloned()
            .unwrap_or_else(|| Actor(ACTOR.to_string())))
    }
}

/// The middleware: 401 without a valid token, 403 when its role is too low; otherwise the
/// request goes on with its `Actor`.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let protect_metrics = state.config.auth.protect_metrics;
    let Some(needed) = required_role(req.method(), req.uri().path(), protect_metrics) else {
        return next.run(req).await;
    };
    if !state.auth.enabled() {
        req.extensions_mut().insert(Actor(ACTOR.to_string()));
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented.filter(|t| !t.is_empty()) else {
        return unauthorized("this endpoint needs a bearer token (Authorization: Bearer …)");
    };
    let Some(token) = state.auth.find(presented) else {
        return unauthorized("the bearer token is not valid");
    };
    if token.role < needed {
        return ApiError::Forbidden(format!(
            "token {:?} has role {}; this needs {}",
            token.name,
            token.role.as_str(),
            needed.as_str()
        ))
        .into_response();
    }
    tracing::debug!(actor = %token.name, "authenticated");
    req.extensions_mut().insert(Actor(token.name.clone()));
    next.run(req).await
}

/// The token of an `Authorization` value `Bearer <token>`. The scheme is case-insensitive
/// (RFC 7235 §2.1: `BEARER`, `bearer`, `Bearer`); spaces or tabs may follow it.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches([' ', '\t']))
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::Unauthorized(message.to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"retryguard\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer rg_x",
            "bearer rg_x",
            "BEARER rg_x",
            "bEaReR  rg_x ",
            "Bearer\trg_x",
        ] {
            assert_eq!(bearer_token(value), Some("rg_x"), "{value:?}");
        }
        for value in ["Basic rg_x", "Bearerrg_x", "rg_x", "Token rg_x", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn roles_by_route() {
        let r = |m: Method, p: &str| required_role(&m, p, false);
        assert_eq!(r(Method::GET, "/metrics"), None);
        assert_eq!(
            required_role(&Method::GET, "/metrics", true),
            Some(Role::Read)
        );
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::GET, "/readyz"), None);
        assert_eq!(r(Method::GET, "/openapi.json"), None);
        assert_eq!(r(Method::GET, "/api/v1/jobs/failed"), Some(Role::Read));
        assert_eq!(r(Method::GET, "/api/v1/jobs/retry-audit"), Some(Role::Read));
        assert_eq!(
            r(Method::POST, "/api/v1/jobs/failed/x/retry"),
            Some(Role::Operate)
        );
        assert_eq!(
            r(Method::DELETE, "/api/v1/operations/op"),
            Some(Role::Operate)
        );
        assert_eq!(
            r(Method::POST, "/api/v1/idempotency/k/begin"),
            Some(Role::Operate)
        );
        assert_eq!(
            r(Method::DELETE, "/api/v1/idempotency/k"),
            Some(Role::Admin)
        );
        assert_eq!(r(Method::POST, "/api/v1/policies"), Some(Role::Admin));
        assert_eq!(r(Method::PUT, "/anything/new"), Some(Role::Operate));
        assert!(Role::Admin > Role::Operate && Role::Operate > Role::Read);
    }
}
