//! Retry-all operations: each runs in its own task past the request that started it, at most
//! `max_concurrent_retry_all` at once per instance. They live in Redis
//! (`retryguard:operation:<id>`), so `GET /api/v1/operations/{id}` answers on any instance and
//! `DELETE` cancels from any instance; the instance that runs one answers from its own copy
//! when Redis cannot. Records are kept 7 days after they end.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::views::{SummaryJson, all_counts};
pub use crate::app::operations::{
    Busy, Failure, FailureKind, Operation, OperationError, OperationState, OperationStatus,
    Operations, Seen, Source,
};
use crate::clock::format_rfc3339;
use crate::retry::Summary;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(show, cancel))
}

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationJson {
    pub operation_id: String,
    /// What it does: `retry_all` or `delete_all`.
    pub kind: &'static str,
    /// `running`, `finished`, `failed`, `cancelled`, `conflict` (a delete-all whose count was
    /// not the expected one: it deleted nothing), or `abandoned`: still `running` in Redis
    /// but its instance has not reported for 30 s (it died, or lost Redis that long); its
    /// progress is as last reported and it will not go on.
    pub state: &'static str,
    pub dry_run: bool,
    /// Who started it (the token's name, or `local`).
    pub actor: String,
    pub cancel_requested: bool,
    /// Jobs in the snapshots of the failed registries it walks.
    pub total: u64,
    /// Jobs that got an outcome so far.
    pub processed: u64,
    /// Jobs per outcome so far, every outcome present.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// When its instance last reported it: every 250 ms while it runs, and when it ended.
    pub updated_at: String,
    /// The instance that runs it (`<host>-<pid>-<n>`).
    pub instance: String,
    /// `redis`: its record in Redis, as its instance last wrote it (at most about 250 ms
    /// behind while it runs). `local`: the copy of the instance that runs it, answering
    /// because Redis could not be read or is behind (see `warning`).
    pub source: &'static str,
    /// Why the answer is not Redis's record (with `source` `local`).
    pub warning: Option<String>,
    /// The result, once `finished` or `cancelled`.
    pub summary: Option<SummaryJson>,
    /// `{"error": {"code", "message"}}` of a failed operation.
    pub error: Option<ErrorBody>,
}

/// The API's name of a state (`succeeded` in Redis is `finished` here, as it always was).
fn state_name(state: OperationState) -> &'static str {
    match state {
        OperationState::Running => "running",
        OperationState::Succeeded => "finished",
        OperationState::Failed => "failed",
        OperationState::Cancelled => "cancelled",
        OperationState::Abandoned => "abandoned",
        OperationState::Conflict => "conflict",
    }
}

/// What `GET /api/v1/operations/{id}` shows.
pub(crate) fn view(seen: Seen) -> OperationJson {
    let Seen {
        status: s,
        source,
        warning,
    } = seen;
    let summary = matches!(
        s.state,
        OperationState::Succeeded | OperationState::Cancelled
    )
    .then(|| {
        SummaryJson::from(&Summary {
            operation_id: s.id.clone(),
            total: s.processed,
            counts: s.counts.clone(),
            cancelled: s.state == OperationState::Cancelled,
            dry_run: s.dry_run,
        })
    });
    let error = match (&s.error, s.state) {
        (Some(failure), OperationState::Failed | OperationState::Conflict) => {
            Some(ApiError::from(failure).body())
        }
        _ => None,
    };
    OperationJson {
        kind: s.kind.as_str(),
        state: state_name(s.state),
        dry_run: s.dry_run,
        actor: s.actor,
        cancel_requested: s.cancel_requested,
        total: s.total,
        processed: s.processed,
        counts: all_counts(&s.counts),
        started_at: format_rfc3339(s.started_ms),
        finished_at: s.ended_ms.map(format_rfc3339),
        updated_at: format_rfc3339(s.updated_ms),
        instance: s.instance,
        source: match source {
            Source::Redis => "redis",
            Source::Local => "local",
        },
        warning,
        summary,
        error,
        operation_id: s.id,
    }
}

impl From<&Failure> for ApiError {
    fn from(f: &Failure) -> Self {
        match f.kind {
            FailureKind::RedisUnavailable => Self::RedisUnavailable(f.detail.clone()),
            FailureKind::ForceRequiresReason => Self::ForceRequiresReason,
            FailureKind::Internal => Self::Internal(f.detail.clone()),
            FailureKind::CountMismatch => Self::Conflict(f.detail.clone()),
        }
    }
}

impl From<OperationError> for ApiError {
    fn from(e: OperationError) -> Self {
        match e {
            OperationError::Retry(e) => e.into(),
            e @ OperationError::Panicked(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<Busy> for ApiError {
    fn from(b: Busy) -> Self {
        Self::TooManyOperations { running: b.running }
    }
}

pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_operation_id",
            "an operation id is at most 128 bytes",
        ));
    }
    Ok(())
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no operation {id:?} (finished ones are kept for 7 days)"
    ))
}

/// A retry-all operation of any instance: its state, progress and summary (role `read`).
///
/// Read from Redis, where the instance that runs it reports every 250 ms; `abandoned` when
/// that instance has not reported for 30 s (it died). The instance that runs it answers from
/// its own copy when Redis cannot (`source` `local`, with a `warning`).
#[utoipa::path(
    get,
    path = "/api/v1/operations/{id}",
    tag = "operations",
    params(("id" = String, Path, description = "The operation id (at most 128 bytes)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation", body = OperationJson),
        (status = 400, description = "A malformed id (`invalid_operation_id`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 404, description = "No such operation (finished ones are kept for 7 days)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (and this instance does not run the operation), or request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    check_id(&id)?;
    let seen = state.operations.status(&id).await?;
    Ok(Json(view(seen.ok_or_else(|| not_found(&id))?)))
}

/// Asks the operation to stop after its current batch; answers with its state (role
/// `operate`).
///
/// Works on any instance: it sets the cancel flag of the operation's record in Redis, which
/// the instance that runs it reads within about 250 ms.
#[utoipa::path(
    delete,
    path = "/api/v1/operations/{id}",
    tag = "operations",
    params(("id" = String, Path, description = "The operation id (at most 128 bytes)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation, `cancel_requested` set if it was running", body = OperationJson),
        (status = 400, description = "A malformed id (`invalid_operation_id`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 404, description = "No such operation (finished ones are kept for 7 days)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (and this instance does not run the operation), or request timeout", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    check_id(&id)?;
    let (seen, requested) = state
        .operations
        .cancel(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if requested {
        tracing::info!(operation_id = %id, instance = %seen.status.instance, "retry-all cancel requested");
    }
    Ok(Json(view(seen)))
}
