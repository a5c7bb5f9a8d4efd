//! The HTTP API of `retryguard serve` (axum). `router(state)` builds the whole app, so tests
//! call it with `tower::ServiceExt::oneshot` and no socket.
//!
//! Layers: handlers (`jobs`, `operations`, `health`, `audit`) extract and check input, call one
//! function of the retry service, and shape the JSON; they never touch Redis or wasmtime.
//! Every route gets a request id, a timeout, and limits on URI and body size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use crate::audit::AuditStore;
use crate::config::Config;

pub mod auth;
pub mod bindings;
pub mod brakes;
pub mod delete;
pub mod error;
pub mod groups;
pub mod guard;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod origin;
pub mod policies;
pub mod replay;
pub mod retry_audit;
pub mod views;

pub use error::ApiError;
pub use operations::Operations;

/// Who requests act as when no token is configured (the API then listens on loopback only).
pub const ACTOR: &str = "local";

/// Longest request URI accepted (path and query).
pub const MAX_URI_BYTES: usize = 8192;

/// The retry service the API runs on.
pub type Service = crate::app::Service;

/// Everything a handler can reach: the process's parts (`crate::app::App`) and the API's own
/// request policy (tokens, hosts). A handler takes the part it needs as
/// its state (`State<Arc<Guard>>`, `State<AuditReader>`, …: axum's `FromRef`), never a Redis
/// connection.
#[derive(Debug, Clone, axum::extract::FromRef)]
pub struct AppState {
    pub service: Arc<Service>,
    pub operations: Arc<Operations>,
    pub config: Arc<Config>,
    /// The bearer tokens of `[auth]` (none: open to loopback callers, actor `local`).
    pub auth: Arc<auth::Auth>,
    /// The `Host` names this server answers to (`[server] listen` and `allowed_hosts`).
    pub hosts: Arc<origin::HostPolicy>,
    /// The idempotency guard.
    pub guard: Arc<crate::guard::Guard>,
    /// The audit trail's health and queries (without a directory the audit endpoints answer
    /// 503 `audit_not_configured`).
    pub audit: crate::audit::AuditReader,
    /// Analyses over the audit trail.
    pub analytics: Arc<crate::analytics::Analytics>,
    /// The queue adapter, for Redis's own status.
    pub backend: crate::queue::rq::RqBackend,
    /// This process's auto-retry sweeper.
    pub sweeper: Arc<crate::retry::sweeper::SweeperStatus>,
}

impl AppState {
    /// The state over an already built service (tests), without an audit directory.
    pub fn new(service: Arc<Service>, config: Arc<Config>) -> Self {
        Self::from_app(App::new(service, config))
    }

    /// The state over a process's parts.
    pub fn from_app(app: App) -> Self {
        let config = app.config;
        Self {
            auth: Arc::new(auth::Auth::from_config(&config.auth.tokens)),
            hosts: Arc::new(
                origin::HostPolicy::new(&config.server.listen, &config.server.allowed_hosts)
                    .with_public_origin(config.server.public_origin()),
            ),
            operations: app.operations,
            service: app.service,
            guard: app.guard,
            audit: app.audit,
            analytics: app.analytics,
            backend: app.backend,
            sweeper: app.sweeper,
            config,
        }
    }

    /// The same state, with audit queries over `dir`.
    pub fn with_audit_dir(self, dir: Arc<AuditStore>) -> Self {
        let app = App {
            config: self.config.clone(),
            service: self.service.clone(),
            backend: self.backend.clone(),
            guard: self.guard.clone(),
            audit: self.audit.clone(),
            analytics: self.analytics.clone(),
            operations: self.operations.clone(),
            sweeper: self.sweeper.clone(),
        }
        .with_audit_dir(dir);
        Self {
            audit: app.audit,
            analytics: app.analytics,
            ..self
        }
    }
}

/// The whole app: every route, JSON 404/405 fallbacks, and the per-request layers.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            origin::same_origin,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), limits))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Refuses oversized URIs and bodies up front, and answers `503 timeout` for a request that
/// takes longer than `request_timeout_seconds` (a retry-all goes on as an operation).
pub(crate) async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path().len() + req.uri().query().map_or(0, str::len);
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong(MAX_URI_BYTES).into_response();
    }
    // A policy upload is a component of up to 32 MiB; every other body has the server's limit.
    let limit = if req.method() == axum::http::Method::POST
        && matches!(req.uri().path(), "/api/v1/policies" | "/ui/policies/upload")
    {
        crate::registry::MAX_UPLOAD_BYTES as u64
    } else {
        state.config.server.body_limit_bytes
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    let timeout = Duration::from_secs(state.config.server.request_timeout_seconds);
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    }
}

/// Every route with its OpenAPI operation. Each path is written once, in its handler's
/// `#[utoipa::path]`: `routes!` routes the handler there and adds the operation to the
/// document (`openapi::ApiDoc`, the part that is no route), so what is served and what is
/// documented cannot drift apart.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(jobs::router())
        .merge(delete::router())
        .merge(groups::router())
        .merge(operations::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(retry_audit::router())
        .merge(guard::router())
        .merge(policies::router())
        .merge(bindings::router())
        .merge(brakes::router())
        .merge(replay::router())
        .merge(openapi::router())
}

/// Every route the app serves, as (method, path template), in the axum syntax (`{name}` for
/// a variable segment): the operations of the OpenAPI document, which `routes` builds with
/// the router. The metric labels (`route_template`) come from it, and the API tests check
/// that the router serves each (and no other method on these paths). A template with a
/// literal segment comes before one with a variable in its place (`retry-all` before
/// `{id}`), as axum prefers it.
pub static ROUTES: LazyLock<Vec<(&'static str, &'static str)>> = LazyLock::new(|| {
    let document: &'static utoipa::openapi::OpenApi = &openapi::DOCUMENT;
    let mut routes: Vec<(&'static str, &'static str)> = document
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("OPTIONS", &item.options),
                ("HEAD", &item.head),
                ("PATCH", &item.patch),
                ("TRACE", &item.trace),
            ]
            .into_iter()
            .filter(|(_, operation)| operation.is_some())
            .map(|(method, _)| (method, path.as_str()))
        })
        .collect();
    // Segment by segment, a literal before a variable.
    routes.sort_by_cached_key(|(method, path)| {
        let segments: Vec<(bool, &str)> = path
            .split('/')
            .map(|segment| (segment.starts_with('{'), segment))
            .collect();
        (segments, *method)
    });
    routes
});

/// The route a path belongs to, with its variable segments as `{name}`, for metric labels
/// (bounded: any path that is no route is `other`).
pub fn route_template(path: &str) -> &'static str {
    // The dashboard's pages share one label (`crate::ui`), its files another.
    if path == "/" {
        return "/";
    } else if path.starts_with("/ui/static/") {
        return "/ui/static";
    } else if path == "/ui" || path.starts_with("/ui/") {
        return "/ui";
    }
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .map(|(_, template)| *template)
        .find(|template| {
            let mut want = template.split('/');
            let mut got = path.split('/');
            loop {
                match (want.next(), got.next()) {
                    (None, None) => return true,
                    (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                    _ => return false,
                }
            }
        })
        .unwrap_or("other")
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the caller's `x-request-id` when sane, else a new one), logs
/// the request in a span carrying it, and returns it in the response header.
pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            format!("req-{:x}-{n:x}", crate::clock::now_ms())
        });
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let route = route_template(req.uri().path());
    let method = req.method().as_str().to_string();
    let mut response = next.run(req).instrument(span.clone()).await;
    crate::metrics::global().request(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request done"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}
