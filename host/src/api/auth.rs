//! Bearer tokens with roles (`read` < `operate` < `admin`).
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
use sha2::{Digest as _, Sha256};

use super::{ACTOR, ApiError, AppState};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET endpoints.
    Read,
    /// Retries, operations, the idempotency guard.
    Operate,
    /// Policies, bindings, deleting guard keys.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "operate" => Some(Self::Operate),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl Token {
    /// Parses `name:role:sha256hex`; the error says what is wrong (never echoing the digest).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(role), Some(digest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("a token is `name:role:sha256` (see `retryguard auth new-token`)".into());
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !valid_name {
            return Err(format!(
                "token name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - @ (it becomes the audit actor)"
            ));
        }
        let role = Role::parse(role).ok_or_else(|| {
            format!("token {name}: role {role:?} is not one of read, operate, admin")
        })?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(digest, &mut sha256).map_err(|_| {
            format!("token {name}: the third part must be the token's sha256 as 64 hex digits")
        })?;
        Ok(Self {
            name: name.to_string(),
            role,
            sha256,
        })
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

impl Auth {
    /// From `[auth] tokens` (already validated by the config).
    pub fn from_config(entries: &[String]) -> Self {
        Self {
            tokens: entries
                .iter()
                .filter_map(|e| Token::parse(e).ok())
                .collect(),
        }
    }

    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token whose digest matches `presented`'s. Every configured digest is compared,
    /// each in constant time, so the time taken says nothing about which bytes matched.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.sha256, &digest) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The role a request needs; `None` for the probes and the OpenAPI document anyone may
/// call (and `/metrics` unless `[auth] protect_metrics`).
pub fn required_role(method: &Method, path: &str, protect_metrics: bool) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || (path == "/metrics" && !protect_metrics)
    {
        return None;
    }
    let admin_path = path.starts_with("/api/v1/policies");
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

/// A new random token (32 bytes from the OS, hex) and its config entry.
pub fn new_token(name: &str, role: Role) -> std::io::Result<(String, String)> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("rg_{}", hex::encode(bytes));
    let entry = format!(
        "{name}:{}:{}",
        role.as_str(),
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    Ok((token, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match_by_digest_only() {
        let (token, entry) = new_token("ops-alice", Role::Operate).unwrap();
        let auth = Auth::from_config(std::slice::from_ref(&entry));
        assert!(auth.enabled());
        let found = auth.find(&token).unwrap();
        assert_eq!(found.name, "ops-alice");
        assert_eq!(found.role, Role::Operate);
        assert!(auth.find("rg_wrong").is_none());
        assert!(
            !entry.contains(&token),
            "the config holds the digest, not the token"
        );
        for bad in ["x", "a:b", "bad name:read:00", "n:root:00", "n:read:zz"] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }

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
