//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! `#[utoipa::path]` annotations and the `ToSchema`/`IntoParams` derives of the types they
//! take and return (never hand-written). `ApiDoc` is what is not a route (info, tags, the
//! security scheme); `super::routes` adds each route's operation beside the handler that
//! serves it, so the document and the router come from the same `#[utoipa::path]`.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiQuery, NoBody, NoQuery};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "retryguard",
        description = "Safe retries for failed RQ jobs, judged by sandboxed WebAssembly \
            policies. Every error is `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`). \
            With `[auth] tokens` configured, requests carry `Authorization: Bearer <token>` \
            (the scheme in any case); roles: every GET needs `read` (`/api/v1/policies*` \
            included), POST, PUT and DELETE need `operate`, and DELETE of an idempotency key \
            and every change under `/api/v1/policies*` need `admin`; `/healthz`, `/readyz`, \
            `/openapi.json` (and `/metrics` unless `protect_metrics`) are open. Any route may \
            also answer 400 `invalid_query` (a query parameter it does not take, named), \
            400 `unexpected_body` (a body on a route that reads none: nothing is done), \
            403 `cross_site` (a state-changing request from another site's page) or \
            `host_not_allowed` (a `Host` the server does not answer to), 413 (body over the \
            limit), 414 (URI over 8192 bytes), 415 (a JSON route's body is not \
            `application/json`) and 503 `timeout`."
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Failed jobs and retries"),
        (name = "groups", description = "Failed jobs grouped by cause: the failure index (docs/triage.md)"),
        (name = "operations", description = "Retry-all operations"),
        (name = "audit", description = "The retry audit trail"),
        (name = "idempotency", description = "The idempotency guard (docs/guard.md)"),
        (name = "policies", description = "Policies and their bindings to job types (docs/policies.md)"),
        (name = "auto-retry", description = "Automatic retry, circuit breakers and retry budgets (docs/auto-retry.md)"),
        (name = "health", description = "Probes and metrics"),
        (name = "meta", description = "This document"),
    )
)]
pub(super) struct ApiDoc;

/// Adds the `bearerAuth` scheme the operations' `security` refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token made by `retryguard auth new-token`, configured as \
                         `name:role:sha256` in `[auth] tokens`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document: `ApiDoc` with the operation of every route, built once.
pub(super) static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> =
    LazyLock::new(|| super::routes().into_openapi());

/// The document, as `/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    DOCUMENT.clone()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(openapi_json))
}

/// This OpenAPI 3.1 document (open, no token).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json(_: ApiQuery<NoQuery>, _: NoBody) -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
