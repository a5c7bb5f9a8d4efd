//! `POST /api/v1/jobs/failed/delete-all`: delete every failed job a filter matches, as RQ's
//! `job.delete()` does, audited per job, as an operation like retry-all (role `operate`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Actor;
use super::error::{ApiError, ApiJson, ApiQuery, ErrorBody, ErrorDetail, NoQuery};
use super::operations::OperationError;
use super::views::SummaryJson;
use crate::retry::{DeleteOptions, JobFilter, RetryError};

/// Longest `reason` accepted (it goes into every audit record).
const MAX_REASON_BYTES: usize = 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(delete_all))
}

/// What to delete, and how. Every field is optional; unknown fields are refused.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteAllBody {
    /// Count and record what would be deleted; delete nothing (default false). Run it first:
    /// its `counts.deleted` is the `expected_count` of the real delete.
    dry_run: bool,
    /// Why (written to every audit record; required unless `dry_run`; at most 1024 bytes).
    reason: Option<String>,
    /// The count of the dry run. When given, a counting pass runs before any delete; if the
    /// filter now matches more than `max_difference` jobs more or fewer, nothing is deleted
    /// (409, or state `conflict`).
    expected_count: Option<u64>,
    /// How far the count may drift from `expected_count` (default 0; needs `expected_count`).
    max_difference: Option<u64>,
    /// Also delete the jobs that depend on each deleted job (RQ's `delete_dependents`;
    /// default false: dependents are kept).
    delete_dependents: bool,
    /// Only this queue.
    queue: Option<String>,
    /// Only job types matching this glob.
    job_type: Option<String>,
    /// Only this failure type (`[a-z0-9_]{1,64}`).
    failure_type: Option<String>,
    /// Only jobs of this failure group (its fingerprint).
    group: Option<String>,
    /// Only jobs whose text holds this (as in the listing's `q`).
    q: Option<String>,
    /// At most this many jobs (at least 1).
    #[schema(minimum = 1)]
    limit: Option<u64>,
    /// How long to wait for the result before answering 202 (default
    /// `[server] retry_all_wait_seconds`; at most the request timeout less one).
    wait_seconds: Option<u64>,
}

/// A delete-all still running: watch it at `status_url`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeleteAccepted {
    operation_id: String,
    /// `/api/v1/operations/{operation_id}` (also the `Location` header).
    status_url: String,
}

/// The 409 of a count that is not the expected one: nothing was deleted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CountConflict {
    error: ErrorDetail,
    operation_id: String,
    expected_count: u64,
    /// What the counting pass found now.
    found_count: u64,
    max_difference: u64,
}

/// Delete every failed job matching the filter, as RQ 2.12's `job.delete()` does (the job,
/// its registry and queue entries, executions, group membership, dependents and dependencies
/// sets, and its results stream), as an operation that goes on past the request (role
/// `operate`).
///
/// Each job is deleted by one atomic step that re-checks it is still the failure that was
/// read (a job retried meanwhile is `already_requeued` or `stale_decision`, not deleted) and
/// appends its `deleted` audit record; its hash is kept as an audit blob
/// (`job_blob_sha256`). Run `dry_run: true` first, then send its `counts.deleted` as
/// `expected_count`: a counting pass then runs before any delete, and a set that changed by
/// more than `max_difference` deletes nothing (409 with both counts when the answer waits;
/// otherwise the operation ends in state `conflict`).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/failed/delete-all",
    tag = "jobs",
    request_body = DeleteAllBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation finished within `wait_seconds` (`counts.deleted`: jobs deleted, or that would be in a dry run)", body = SummaryJson),
        (status = 202, description = "Still running: see `status_url` (and `Location`)", body = DeleteAccepted,
            headers(("Location" = String, description = "The operation's status URL"))),
        (status = 400, description = "Malformed JSON, an unknown field or a wrong type (`invalid_json`), a field out of range (`invalid_body`), any query parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 409, description = "The filter now matches a count other than `expected_count` (± `max_difference`): nothing was deleted (`conflict`)", body = CountConflict),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A delete without a `reason` (`reason_required`)", body = ErrorBody),
        (status = 429, description = "Too many operations running in this instance (`too_many_operations`, `Retry-After`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn delete_all(
    State(state): State<AppState>,
    Actor(actor): Actor,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<DeleteAllBody>,
) -> Result<Response, ApiError> {
    let server = &state.config.server;
    let max_wait = server.request_timeout_seconds.saturating_sub(1);
    let (filter, options, wait) = checked(body, server.retry_all_wait_seconds, max_wait)?;
    let operation = state
        .operations
        .start_delete_all(state.service.clone(), filter, options, actor)
        .await?;
    match operation.wait(Duration::from_secs(wait)).await {
        Some(Ok(summary)) => Ok(Json(SummaryJson::from(&summary)).into_response()),
        Some(Err(OperationError::Retry(
            e @ RetryError::CountMismatch {
                expected,
                found,
                max_difference,
            },
        ))) => {
            let body = CountConflict {
                error: ApiError::from(e).detail(),
                operation_id: operation.id().to_string(),
                expected_count: expected,
                found_count: found,
                max_difference,
            };
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Some(Err(e)) => Err(e.into()),
        None => {
            let url = format!("/api/v1/operations/{}", operation.id());
            let body = DeleteAccepted {
                operation_id: operation.id().to_string(),
                status_url: url.clone(),
            };
            Ok((StatusCode::ACCEPTED, [(header::LOCATION, url)], Json(body)).into_response())
        }
    }
}

/// The body checked: the filter, the options and the wait. 400 `invalid_body` for a value
/// out of range, 422 `reason_required` for a real delete without a reason.
fn checked(
    body: DeleteAllBody,
    default_wait: u64,
    max_wait: u64,
) -> Result<(JobFilter, DeleteOptions, u64), ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_body", message);
    // The query checks of retry-all, reported as the body's.
    let as_body = |e: ApiError| match e {
        ApiError::BadRequest { message, .. } => invalid(message),
        other => other,
    };
    if body.limit == Some(0) {
        return Err(invalid("limit must be at least 1".into()));
    }
    let wait = body.wait_seconds.unwrap_or(default_wait);
    if wait > max_wait {
        return Err(invalid(format!(
            "wait_seconds must be 0..={max_wait} (the request timeout less one)"
        )));
    }
    if body.max_difference.is_some() && body.expected_count.is_none() {
        return Err(invalid(
            "max_difference needs expected_count (the count of your dry run)".into(),
        ));
    }
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if let Some(r) = &reason
        && (r.len() > MAX_REASON_BYTES || r.chars().any(char::is_control))
    {
        return Err(invalid(format!(
            "reason must be at most {MAX_REASON_BYTES} bytes without control characters"
        )));
    }
    let filter = JobFilter {
        queue: super::jobs::name("queue", body.queue).map_err(as_body)?,
        job_type: super::jobs::name("job_type", body.job_type).map_err(as_body)?,
        failure_type: super::jobs::failure_type(body.failure_type).map_err(as_body)?,
        limit: body.limit,
        group: body
            .group
            .filter(|g| !g.is_empty())
            .map(|g| super::groups::fingerprint(&g))
            .transpose()
            .map_err(as_body)?,
        q: super::groups::search(body.q).map_err(as_body)?,
        ..JobFilter::default()
    };
    if !body.dry_run && reason.is_none() {
        return Err(RetryError::DeleteWithoutReason.into());
    }
    let options = DeleteOptions {
        dry_run: body.dry_run,
        reason,
        expected_count: body.expected_count,
        max_difference: body.max_difference.unwrap_or(0),
        delete_dependents: body.delete_dependents,
    };
    Ok((filter, options, wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> DeleteAllBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_real_delete_needs_a_reason_and_values_in_range() {
        let code = |json: &str| checked(body(json), 5, 29).err().map(|e| e.code());
        assert_eq!(code(r#"{"dry_run": true}"#), None);
        assert_eq!(code(r#"{}"#), Some("reason_required"));
        assert_eq!(code(r#"{"reason": "  "}"#), Some("reason_required"));
        assert_eq!(code(r#"{"reason": "INC-1"}"#), None);
        assert_eq!(
            code(r#"{"dry_run": true, "limit": 0}"#),
            Some("invalid_body")
        );
        assert_eq!(
            code(r#"{"dry_run": true, "max_difference": 2}"#),
            Some("invalid_body")
        );
        assert_eq!(
            code(r#"{"dry_run": true, "failure_type": "Bad Type"}"#),
            Some("invalid_body")
        );
        assert_eq!(
            code(r#"{"dry_run": true, "wait_seconds": 30}"#),
            Some("invalid_body")
        );
        let (filter, options, wait) = checked(
            body(r#"{"reason": "INC-1", "queue": "q", "expected_count": 3, "delete_dependents": true}"#),
            5,
            29,
        )
        .unwrap();
        assert_eq!(filter.queue.as_deref(), Some("q"));
        assert_eq!(options.expected_count, Some(3));
        assert_eq!(options.max_difference, 0);
        assert!(options.delete_dependents && !options.dry_run);
        assert_eq!(wait, 5);
    }
}
