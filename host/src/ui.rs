//! The dashboard at `/ui/`: the retry console in a browser, served by `retryguard serve` on
//! the API's port, with the API's roles (docs/dashboard.md).
//!
//! - **Rendering.** Server-rendered HTML from askama templates compiled into the binary
//!   (`host/templates/`, escaping everything by default), charts as server-rendered SVG
//!   (`svg`), and two embedded static files (`host/assets/`): the stylesheet, and a small
//!   script for the live parts (operation progress, local times) and the confirmations. The
//!   pages work without the script, apart from live updates.
//! - **Data.** Handlers call the same functions the API's handlers call (the failure index,
//!   the retry service, the operations, the registry, the audit trail); nothing here reads
//!   Redis keys of its own but the sessions (`session`) and a job's RQ description.
//! - **Security.** `session` is the gate (login, role, CSRF); `api::origin` refuses another
//!   origin's POSTs before it; `headers` adds the CSP and the other headers to every answer.
//!
//! `app(state)` is the whole HTTP app of `serve`: the API's router plus these routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{ApiError, AppState};

pub mod format;
mod pages;
pub mod session;
pub mod svg;

pub use session::Viewer;

/// The dashboard's state: the API's, and what the dashboard adds.
#[derive(Debug)]
pub struct Ui {
    pub app: AppState,
    /// The CSRF token of every form when there are no tokens (one per process).
    loopback_csrf: String,
    /// Whether browsers reach the server over TLS (`serve` has `[tls]`, or `[server]
    /// public_url` is `https://…`): the session cookie is then `Secure`.
    secure: bool,
}

impl Ui {
    fn new(app: AppState) -> Self {
        let secure = app.config.tls.enabled()
            || app
                .config
                .server
                .public_origin()
                .is_some_and(|o| o.starts_with("https://"));
        Self {
            // Without /dev/urandom nothing else would work either; a fixed token would only
            // weaken the CSRF check, which the Origin check still backs.
            loopback_csrf: crate::auth::random_hex(32)
                .unwrap_or_else(|_| format!("{:x}", crate::clock::now_ms())),
            secure,
            app,
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            session::COOKIE_SECURE
        } else {
            session::COOKIE
        }
    }

    /// `[ui]`'s idle and absolute session lifetimes, in ms.
    fn session_limits_ms(&self) -> (u64, u64) {
        let ui = &self.app.config.ui;
        (
            ui.session_idle_minutes.saturating_mul(60_000),
            ui.session_max_hours.saturating_mul(3_600_000),
        )
    }
}

/// The HTTP app of `serve`: the API, and the dashboard unless `[ui] enabled = false`.
pub fn app(state: AppState) -> Router {
    let enabled = state.config.ui.enabled;
    let api = crate::api::router(state.clone());
    if !enabled {
        return api;
    }
    api.merge(router(state))
}

/// The dashboard's routes with their layers (the API's fallback answers anything else).
fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    let ui = Arc::new(Ui::new(state.clone()));
    Router::new()
        .route("/", get(|| async { redirect("/ui/") }))
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/static/app.css", get(css))
        .route("/ui/static/app.js", get(js))
        .route(
            "/ui/login",
            get(pages::login::form).post(pages::login::submit),
        )
        .route("/ui/logout", post(pages::login::logout))
        .merge(pages::router())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(ui.clone(), session::gate))
        .layer(middleware::from_fn(headers))
        .with_state(ui)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::origin::same_origin,
        ))
        .layer(middleware::from_fn_with_state(state, crate::api::limits))
        .layer(middleware::from_fn(crate::api::request_id))
}

/// The stylesheet and the script, embedded.
pub const CSS: &str = include_str!("../assets/app.css");
pub const JS: &str = include_str!("../assets/app.js");

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated every time: an upgraded binary serves its own files at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A `303 See Other` to a path of this server.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The content security policy: scripts and styles only from this origin's files (no
/// inline script or style at all), no framing, forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The headers of every dashboard answer. Pages show job data, so none is stored.
async fn headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/ui/static/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// An error page: a status and a sentence for the operator.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        if e.status().is_server_error() {
            e.log();
        }
        let detail = e.detail();
        Self::new(e.status(), detail.message)
    }
}

impl From<redis::RedisError> for UiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::from(crate::redis_error::RedisError::from(e)).into()
    }
}

impl From<crate::redis_error::RedisError> for UiError {
    fn from(e: crate::redis_error::RedisError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let page = pages::ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: self.message,
        };
        let mut response = pages::html(&page);
        *response.status_mut() = self.status;
        response
    }
}

/// Shared by the pages: a handler's result.
pub type UiResult = Result<Response, UiError>;

/// The state a page handler gets.
pub type UiState = State<Arc<Ui>>;
