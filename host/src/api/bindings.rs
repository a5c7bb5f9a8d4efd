//! `/api/v1/policies/bindings*` and `/api/v1/policies/experiments` (role `admin` for every
//! change, `read` to look): bind policies to job-type patterns, see a pattern's history,
//! roll it back, promote its shadow, and compare shadows with the acting policies
//! (`crate::registry` does the work; docs/policies.md tells the story).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Actor;
use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::policies::registry;
use super::{ApiError, AppState};
use std::sync::Arc;

use crate::analytics::Analytics;
use crate::analytics::experiments::ExperimentReport;
use crate::clock::now_ms;
use crate::registry::{BindingSpec, PolicyRef, StoredBinding, SwapStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(bindings))
        .routes(routes!(experiments))
        .routes(routes!(binding, bind, unbind))
        .routes(routes!(history))
        .routes(routes!(rollback))
        .routes(routes!(promote))
}

/// `GET /api/v1/policies/bindings`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingList {
    /// The revision in Redis.
    pub revision: u64,
    /// Every binding, by pattern.
    pub bindings: Vec<StoredBinding>,
    /// This instance's live table: its revision, and why a newer one is not live (if so).
    pub live: SwapStatus,
}

/// Every binding, and whether this instance runs the newest revision.
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings",
    tag = "policies",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The bindings", body = BindingList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn bindings(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingList>, ApiError> {
    let registry = registry(&state)?;
    let snapshot = registry.store().bindings().await?;
    Ok(Json(BindingList {
        revision: snapshot.revision,
        bindings: snapshot.bindings,
        live: registry.status(),
    }))
}

/// The pattern in a path: an exact job type, a prefix glob (`payments.*`) or `*`
/// (URL-encode `*` as `%2A` if your client insists).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PatternPath {
    pub pattern: String,
}

/// One binding.
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The binding", body = StoredBinding),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 404, description = "Nothing bound to this pattern", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn binding(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<StoredBinding>, ApiError> {
    let snapshot = registry(&state)?.store().bindings().await?;
    snapshot
        .bindings
        .into_iter()
        .find(|b| b.pattern == p.pattern)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("nothing is bound to `{}`", p.pattern)))
}

/// The body of `PUT /api/v1/policies/bindings/{pattern}`: the acting policy with its params,
/// and optionally a shadow. An unknown field is refused by name (a field this version does
/// not know is never silently dropped).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The acting policy's digest.
    pub policy: String,
    /// Its params by name (values are strings; the policy's `validate-params` checks them).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A policy evaluated beside the acting one, whose verdicts are only recorded.
    #[serde(default)]
    pub shadow: Option<PolicyRefRequest>,
    /// Whether the sweeper retries this binding's jobs by itself when due (also needs
    /// `[auto_retry] enabled`). Default `false`.
    #[serde(default)]
    pub auto_retry: bool,
    /// A circuit breaker per failure type: `{"failure_rate": 0.5, "window_seconds": 60,
    /// "min_outcomes": 10, "open_seconds": 30, "max_open_seconds": 600,
    /// "half_open_probes": 3}` (the defaults; a field left out takes its default). Absent or
    /// `null`: none.
    #[serde(default)]
    pub breaker: Option<crate::brake::BreakerConfig>,
    /// A retry budget: `{"ratio": 0.2, "min_per_minute": 10, "apply_to_manual": false}`.
    /// Absent or `null`: none.
    #[serde(default)]
    pub budget: Option<crate::brake::BudgetConfig>,
    /// Requeues per second at most, for every retry of this binding (a retry-all trickles).
    /// Absent or `null`: unlimited.
    #[serde(default)]
    pub max_requeues_per_second: Option<u32>,
}

/// A policy and its params, in a request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRefRequest {
    /// The policy's digest.
    pub policy: String,
    /// Params by name.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl PolicyRefRequest {
    fn into_ref(self) -> PolicyRef {
        PolicyRef {
            policy: self.policy,
            params: self.params.into_iter().collect(),
        }
    }
}

impl BindRequest {
    fn into_spec(self) -> BindingSpec {
        BindingSpec {
            active: PolicyRefRequest {
                policy: self.policy,
                params: self.params,
            }
            .into_ref(),
            shadow: self.shadow.map(PolicyRefRequest::into_ref),
            auto_retry: self.auto_retry,
            breaker: self.breaker,
            budget: self.budget,
            max_requeues_per_second: self.max_requeues_per_second,
        }
    }
}

/// The answer to a binding change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingChanged {
    /// The bindings revision the change made (live on this instance already).
    pub revision: u64,
    /// The pattern's binding now (`null`: unbound).
    pub binding: Option<StoredBinding>,
}

async fn changed(state: &AppState, pattern: &str) -> Result<Json<BindingChanged>, ApiError> {
    let snapshot = registry(state)?.store().bindings().await?;
    Ok(Json(BindingChanged {
        revision: snapshot.revision,
        binding: snapshot.bindings.into_iter().find(|b| b.pattern == pattern),
    }))
}

/// Binds a pattern to a policy with params (checked by the policy's `validate-params`), and
/// optionally a shadow policy evaluated beside it. Audited, announced, live on every
/// instance within about a second.
#[utoipa::path(
    put,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    request_body = BindRequest,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Bound", body = BindingChanged),
        (status = 400, description = "A bad pattern, unknown or retired policy, or params the policy refuses", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 422, description = "The stored policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
pub async fn bind(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    ApiJson(request): ApiJson<BindRequest>,
) -> Result<Json<BindingChanged>, ApiError> {
    let spec = request.into_spec();
    registry(&state)?
        .bind(&p.pattern, &spec, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// Removes a binding (never `*`: every job type needs a policy).
#[utoipa::path(
    delete,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Removed", body = BindingChanged),
        (status = 400, description = "Not a pattern", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "Nothing bound to this pattern", body = ErrorBody),
        (status = 409, description = "`*`, or the bindings changed meanwhile", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn unbind(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .unbind(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// A pattern's earlier states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingHistory {
    pub pattern: String,
    /// Newest first; `null` where the pattern was not bound.
    pub history: Vec<Option<StoredBinding>>,
}

/// A pattern's earlier states, newest first (the last 50 changes).
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings/{pattern}/history",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The history", body = BindingHistory),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingHistory>, ApiError> {
    let history = registry(&state)?.store().history(&p.pattern).await?;
    Ok(Json(BindingHistory {
        pattern: p.pattern,
        history,
    }))
}

/// Restores the pattern's state before its last change (policy, params and shadow; or
/// unbound). Audited and announced like any change; a second rollback undoes the first.
#[utoipa::path(
    post,
    path = "/api/v1/policies/bindings/{pattern}/rollback",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Rolled back", body = BindingChanged),
        (status = 400, description = "Not a pattern, or the earlier state no longer validates", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No earlier state", body = ErrorBody),
        (status = 409, description = "The bindings changed meanwhile, or it would unbind `*`", body = ErrorBody),
        (status = 422, description = "The earlier policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .rollback(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// Promotes the pattern's shadow: the shadow policy and params become the active ones and
/// the binding has no shadow any more — after watching it in `/api/v1/policies/experiments`.
/// Audited (`binding_promoted`) and announced like any change; `…/rollback` undoes it.
#[utoipa::path(
    post,
    path = "/api/v1/policies/bindings/{pattern}/promote",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Promoted", body = BindingChanged),
        (status = 400, description = "Not a pattern, or the shadow's params no longer validate", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "Nothing is bound to the pattern", body = ErrorBody),
        (status = 409, description = "The binding has no shadow, or the bindings changed meanwhile", body = ErrorBody),
        (status = 422, description = "The shadow policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .promote(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// The window of `GET /api/v1/policies/experiments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExperimentsQuery {
    /// How far back to look, hours (1–720, default 24).
    pub hours: Option<u64>,
}

/// Shadow experiments: for each binding with a shadow policy, how often the shadow agreed
/// with the acting policy over the decisions recorded in the audit trail, how they differed
/// (would retry vs hold, a different time, a different hold) and the newest examples.
#[utoipa::path(
    get,
    path = "/api/v1/policies/experiments",
    tag = "policies",
    params(ExperimentsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The experiments", body = ExperimentReport),
        (status = 400, description = "`hours` out of range", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable, or no audit directory is configured", body = ErrorBody),
    )
)]
pub async fn experiments(
    State(analytics): State<Arc<Analytics>>,
    ApiQuery(q): ApiQuery<ExperimentsQuery>,
    _: NoBody,
) -> Result<Json<ExperimentReport>, ApiError> {
    let hours = q.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("hours must be 1 to 720, not {hours}"),
        ));
    }
    let since = now_ms().saturating_sub(hours * 3_600_000);
    let report = analytics
        .experiments(since)
        .await?
        .ok_or(ApiError::AuditNotConfigured)?;
    Ok(Json(report))
}
