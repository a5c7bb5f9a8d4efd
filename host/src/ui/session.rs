//! Who is looking at the dashboard: login sessions in Redis, the `Viewer` every page gets,
//! and the gate in front of every `/ui/` route (login, role, CSRF).
//!
//! - **With `[auth] tokens`**, `POST /ui/login` takes a token once (the form field `token`),
//!   and the server keeps a session in Redis (`keyspace::ui_session`, under the sha256 of the
//!   cookie's value), so any instance behind a load balancer serves it. The cookie is
//!   `HttpOnly`, `SameSite=Strict`, path `/`, and `Secure` (named `__Host-rg_session`) when the
//!   server is reached over TLS (`serve` with `[tls]`, or `[server] public_url` is `https://…`). A session ends after
//!   `[ui] session_idle_minutes` without a request, `session_max_hours` after its login, at
//!   logout, or when its token leaves the config or gets another digest under the same name
//!   (the token table is read on every request, and reloads on SIGHUP or a change of the
//!   config file; the role is read from it, never from the session).
//! - **Without tokens** (loopback only) there is no login: the viewer is `local`, admin.
//! - **CSRF.** `api::origin` refuses a state-changing request from another origin first (it
//!   runs before this gate). Then every POST but the login must carry the session's CSRF
//!   token: the form field `csrf`, the header `x-csrf-token`, or the query parameter `csrf`
//!   (the policy upload form, whose multipart body is not read here). Without tokens the
//!   CSRF token is one per process.
//! - **Roles** are the API's: `read` sees pages (without action buttons), `operate` acts,
//!   `admin` changes policies; `required_role` decides per route, so a forged POST is refused
//!   here whatever the page showed.

use crate::redis_link::Link;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::{Ui, UiError};
use crate::auth::Role;
use crate::keyspace;

/// The cookie's name over plain HTTP.
pub const COOKIE: &str = "rg_session";
/// The cookie's name over TLS: the `__Host-` prefix makes browsers refuse it unless it is
/// `Secure`, has path `/` and no domain.
pub const COOKIE_SECURE: &str = "__Host-rg_session";
/// Longest cookie value accepted (a session id is 64 hex digits).
const MAX_SESSION_ID: usize = 128;
/// Longest body the gate reads to find a form's `csrf` field.
const MAX_FORM_BYTES: usize = 64 << 10;

/// Who a dashboard request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's name (`local` without tokens): the audit actor.
    pub actor: String,
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Whether there is a login session (false without tokens: no logout button).
    pub session: bool,
}

impl Viewer {
    pub fn can_operate(&self) -> bool {
        self.role >= Role::Operate
    }

    pub fn is_admin(&self) -> bool {
        self.role >= Role::Admin
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, UiError> {
        parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| UiError::internal("a /ui/ route outside the session gate"))
    }
}

/// The role a `/ui/` request needs (`None`: the login page, its form, the static files, and
/// the redirects of `/` and `/ui` to `/ui/`).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if matches!(path, "/" | "/ui" | "/ui/login") || path.starts_with("/ui/static/") {
        return None;
    }
    if matches!(*method, Method::GET | Method::HEAD) || path == "/ui/logout" {
        return Some(Role::Read);
    }
    if path.starts_with("/ui/policies") {
        return Some(Role::Admin);
    }
    Some(Role::Operate)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The session id the request's cookie carries.
pub fn cookie_session(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_SESSION_ID && v.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// A new session for `token`; returns the cookie value. The session keeps the token's name
/// and a digest of its sha256, so a token rotated under the same name ends it too.
pub async fn create(
    conn: &mut Link,
    token: &crate::auth::Token,
    idle_ms: u64,
    now_ms: u64,
) -> Result<String, UiError> {
    let id = crate::auth::random_hex(32).map_err(|e| UiError::internal(e.to_string()))?;
    let csrf = crate::auth::random_hex(32).map_err(|e| UiError::internal(e.to_string()))?;
    let key = keyspace::ui_session(&sha256_hex(&id));
    redis::pipe()
        .atomic()
        .hset_multiple(
            &key,
            &[
                ("name", token.name.clone()),
                ("token", token_tag(token)),
                ("csrf", csrf),
                ("created_ms", now_ms.to_string()),
            ],
        )
        .ignore()
        .pexpire(&key, i64::try_from(idle_ms).unwrap_or(i64::MAX))
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(id)
}

/// What a session holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The token's name.
    pub name: String,
    /// [`token_tag`] of the token at login (`None` for a session made before it was kept).
    pub token: Option<String>,
    pub csrf: String,
}

/// What a session keeps of its token: the sha256 of the token's sha256 (so Redis never holds
/// the digest the config holds).
pub fn token_tag(token: &crate::auth::Token) -> String {
    hex::encode(Sha256::digest(token.sha256))
}

/// The session `id` names, renewed for another idle period. `None` when it does not exist,
/// or has passed its absolute lifetime (then it is deleted).
pub async fn load(
    conn: &mut Link,
    id: &str,
    idle_ms: u64,
    max_ms: u64,
    now_ms: u64,
) -> Result<Option<Stored>, UiError> {
    let key = keyspace::ui_session(&sha256_hex(id));
    let (fields, _): (std::collections::HashMap<String, String>, i64) = redis::pipe()
        .hgetall(&key)
        .pexpire(&key, i64::try_from(idle_ms).unwrap_or(i64::MAX))
        .query_async(conn)
        .await?;
    let (Some(name), Some(csrf), Some(created)) = (
        fields.get("name"),
        fields.get("csrf"),
        fields.get("created_ms").and_then(|c| c.parse::<u64>().ok()),
    ) else {
        return Ok(None);
    };
    if now_ms.saturating_sub(created) > max_ms {
        destroy(conn, id).await?;
        return Ok(None);
    }
    Ok(Some(Stored {
        name: name.clone(),
        token: fields.get("token").cloned(),
        csrf: csrf.clone(),
    }))
}

/// Ends the session `id` (logout).
pub async fn destroy(conn: &mut Link, id: &str) -> Result<(), UiError> {
    let key = keyspace::ui_session(&sha256_hex(id));
    redis::cmd("DEL").arg(&key).query_async::<()>(conn).await?;
    Ok(())
}

/// The `Set-Cookie` value of a session (an empty `id` with `max_age` 0 clears it).
pub fn set_cookie(ui: &Ui, id: &str, max_age_seconds: u64) -> String {
    let secure = if ui.secure { "; Secure" } else { "" };
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}",
        ui.cookie_name()
    )
}

/// The viewer of a request: the loopback viewer without tokens, the session's token with
/// them (`None`: no valid session).
async fn viewer(ui: &Ui, headers: &HeaderMap) -> Result<Option<Viewer>, UiError> {
    if !ui.app.auth.enabled() {
        return Ok(Some(Viewer {
            actor: crate::api::ACTOR.to_string(),
            role: Role::Admin,
            csrf: ui.loopback_csrf.clone(),
            session: false,
        }));
    }
    let Some(id) = cookie_session(headers, ui.cookie_name()) else {
        return Ok(None);
    };
    let mut conn = ui.app.backend.connection();
    let (idle, max) = ui.session_limits_ms();
    let Some(stored) = load(&mut conn, &id, idle, max, crate::clock::now_ms()).await? else {
        return Ok(None);
    };
    // The token table as it is now (it reloads without a restart): a token removed, or given
    // another digest under the same name, ends its sessions at their next request.
    let token = ui
        .app
        .auth
        .by_name(&stored.name)
        .filter(|t| stored.token.as_ref().is_none_or(|tag| *tag == token_tag(t)));
    let Some(token) = token else {
        destroy(&mut conn, &id).await?;
        return Ok(None);
    };
    Ok(Some(Viewer {
        actor: token.name,
        role: token.role,
        csrf: stored.csrf,
        session: true,
    }))
}

/// The gate in front of every `/ui/` route: a viewer, the role the route needs, and the
/// CSRF token of a state-changing request. Pages of a request without a session redirect
/// to the login page; anything else without one is refused.
pub async fn gate(State(ui): State<std::sync::Arc<Ui>>, req: Request, next: Next) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let viewer = match viewer(&ui, req.headers()).await {
        Ok(Some(v)) => v,
        Ok(None) if req.method() == Method::GET => {
            let next_path = req
                .uri()
                .path_and_query()
                .map_or("/ui/", |p| p.as_str())
                .to_string();
            let target = format!("/ui/login?next={}", super::format::url_encode(&next_path));
            return super::redirect(&target);
        }
        Ok(None) => {
            return UiError::new(
                StatusCode::UNAUTHORIZED,
                "Your session has ended: log in again.",
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    if viewer.role < needed {
        return UiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Token {:?} has role {}; this needs {}.",
                viewer.actor,
                viewer.role.as_str(),
                needed.as_str()
            ),
        )
        .into_response();
    }
    let mut req = req;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        req = match check_csrf(req, &viewer.csrf).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        };
    }
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

/// Passes the request on when it carries `expected`; reads (and puts back) a form body to
/// find its `csrf` field.
async fn check_csrf(req: Request, expected: &str) -> Result<Request, UiError> {
    let refused = || {
        UiError::new(
            StatusCode::FORBIDDEN,
            "This form is not from this session (missing or wrong CSRF token): reload the page \
             and try again.",
        )
    };
    let matches = |presented: &str| constant_time_eq(presented.as_bytes(), expected.as_bytes());
    if let Some(h) = req.headers().get("x-csrf-token") {
        return if matches(h.to_str().unwrap_or("")) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    if let Some(q) = req.uri().query()
        && let Some(v) = form_field(q.as_bytes(), "csrf")
    {
        return if matches(&v) { Ok(req) } else { Err(refused()) };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            UiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("A form may be at most {MAX_FORM_BYTES} bytes."),
            )
        })?;
    match form_field(&bytes, "csrf") {
        Some(v) if matches(&v) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(refused()),
    }
}

/// The first value of `name` in an `application/x-www-form-urlencoded` text.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded_pairs(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    body.split(|b| *b == b'&').filter_map(|pair| {
        let mut it = pair.splitn(2, |b| *b == b'=');
        let k = super::format::url_decode(it.next()?)?;
        let v = super::format::url_decode(it.next().unwrap_or(b""))?;
        Some((k, v))
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn roles_by_route() {
        let r = |m: Method, p: &str| required_role(&m, p);
        assert_eq!(r(Method::GET, "/ui/login"), None);
        assert_eq!(r(Method::POST, "/ui/login"), None);
        assert_eq!(r(Method::GET, "/ui/static/app.css"), None);
        assert_eq!(r(Method::GET, "/"), None);
        assert_eq!(r(Method::GET, "/ui/"), Some(Role::Read));
        assert_eq!(r(Method::GET, "/ui/policies"), Some(Role::Read));
        assert_eq!(r(Method::POST, "/ui/logout"), Some(Role::Read));
        assert_eq!(r(Method::POST, "/ui/groups/x/retry"), Some(Role::Operate));
        assert_eq!(r(Method::POST, "/ui/jobs/x/delete"), Some(Role::Operate));
        assert_eq!(r(Method::POST, "/ui/policies/bind"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/ui/new-route"), Some(Role::Operate));
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rg_session=abc123; b=2"),
        );
        assert_eq!(cookie_session(&h, COOKIE).as_deref(), Some("abc123"));
        assert_eq!(cookie_session(&h, COOKIE_SECURE), None);
        h.insert(header::COOKIE, HeaderValue::from_static("rg_session=<x>"));
        assert_eq!(cookie_session(&h, COOKIE), None);
    }

    #[test]
    fn form_fields() {
        assert_eq!(
            form_field(b"a=1&csrf=ab%20c+d&csrf=2", "csrf").as_deref(),
            Some("ab c d")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
