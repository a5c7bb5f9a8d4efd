//! Retry-all operations: each runs in its own task past the request that started it, at most
//! `max_concurrent_retry_all` at once; `GET /api/v1/operations/{id}` watches one and
//! `DELETE` cancels it. Finished operations are kept in memory for an hour, capped in count.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::views::{SummaryJson, all_counts};
pub use crate::app::operations::{Busy, Operation, OperationError, Operations};
use crate::clock::format_rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(show, cancel))
}

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationJson {
    pub operation_id: String,
    /// `running`, `finished`, `failed` or `cancelled`.
    pub state: &'static str,
    pub dry_run: bool,
    pub cancel_requested: bool,
    /// Jobs in the snapshots of the failed registries it walks.
    pub total: u64,
    /// Jobs that got an outcome so far.
    pub processed: u64,
    /// Jobs per outcome so far, every outcome present.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub summary: Option<SummaryJson>,
    /// `{"error": {"code", "message"}}` of a failed operation.
    pub error: Option<ErrorBody>,
}

/// What `GET /api/v1/operations/{id}` shows.
fn view(op: &Operation) -> OperationJson {
    let progress = op.progress();
    let cancel_requested = progress
        .cancelled
        .load(std::sync::atomic::Ordering::Relaxed);
    let (state, summary, error, finished_at) = match op.ended() {
        None => ("running", None, None, None),
        Some((Ok(s), at)) => (
            if s.cancelled { "cancelled" } else { "finished" },
            Some(SummaryJson::from(&s)),
            None,
            Some(format_rfc3339(at)),
        ),
        Some((Err(e), at)) => (
            "failed",
            None,
            Some(ApiError::from(e).body()),
            Some(format_rfc3339(at)),
        ),
    };
    OperationJson {
        operation_id: op.id().to_string(),
        state,
        dry_run: op.dry_run(),
        cancel_requested,
        total: progress.total.load(std::sync::atomic::Ordering::Relaxed),
        processed: progress
            .processed
            .load(std::sync::atomic::Ordering::Relaxed),
        counts: all_counts(&progress.counts()),
        started_at: format_rfc3339(op.started_ms()),
        finished_at,
        summary,
        error,
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

fn find(state: &AppState, id: &str) -> Result<Arc<Operation>, ApiError> {
    if id.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_operation_id",
            "an operation id is at most 128 bytes",
        ));
    }
    state.operations.get(id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no operation {id:?} (finished ones are kept for an hour)"
        ))
    })
}

/// A retry-all operation: its state, progress and summary (role `read`).
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
        (status = 404, description = "No such operation (finished ones are kept for an hour)", body = ErrorBody),
        (status = 503, description = "Request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    Ok(Json(view(&*find(&state, &id)?)))
}

/// Asks the operation to stop after its current batch; answers with its state (role
/// `operate`).
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
        (status = 404, description = "No such operation (finished ones are kept for an hour)", body = ErrorBody),
        (status = 503, description = "Request timeout", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    let op = find(&state, &id)?;
    if op.cancel() {
        tracing::info!(operation_id = %op.id(), "retry-all cancel requested");
    }
    Ok(Json(view(&op)))
}
