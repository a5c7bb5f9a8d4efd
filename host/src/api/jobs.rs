//! `/api/v1/jobs/…`: list failed jobs with what their policy says, retry one, retry many,
//! and counts. Each handler checks its input, calls one service function, shapes the JSON.

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
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::views::{
    JobJson, JobPage, OutcomeJson, SummaryJson, decode_cursor, encode_cursor, parse_rfc3339,
};
use crate::retry::{JobFilter, Outcome, RetryOptions};

/// Most jobs one page of a listing returns.
pub const MAX_PAGE: u32 = 1000;
/// Jobs a page returns when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;
/// Longest job id, queue name or job-type glob accepted.
const MAX_NAME_BYTES: usize = 512;
/// Longest `reason` accepted (it goes into every audit record).
const MAX_REASON_BYTES: usize = 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(retry_all))
        .routes(routes!(show))
        .routes(routes!(retry))
        .routes(routes!(stats))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this queue.
    queue: Option<String>,
    /// Only job types matching this glob (e.g. `app.tasks.*`).
    job_type: Option<String>,
    /// Only this failure type (`[a-z0-9_]{1,64}`, as the policy classifies).
    failure_type: Option<String>,
    /// Only jobs whose failure type is (or is not) retryable.
    retryable: Option<bool>,
    /// Only jobs that failed at or after this RFC 3339 time.
    failed_after: Option<String>,
    /// Only jobs that failed before this RFC 3339 time.
    failed_before: Option<String>,
    /// Only jobs of this failure group (its fingerprint, from `/api/v1/jobs/failed/groups`).
    group: Option<String>,
    /// Case-insensitive text in the job type, exception type, raw message, or the group's
    /// parameterized message and top frame (at most 256 bytes). A bounded scan: one page
    /// reads at most 10,000 jobs (see `scan_limited`); combine with `group` or `queue`.
    q: Option<String>,
    /// Jobs per page, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// List failed jobs with what the policy says about each (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/failed",
    tag = "jobs",
    params(ListQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One page of failed jobs", body = JobPage),
        (status = 400, description = "A malformed parameter (`invalid_query`, `invalid_cursor`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
    _: NoBody,
) -> Result<Json<JobPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}, not {limit}"),
        ));
    }
    let filter = JobFilter {
        queue: name("queue", q.queue)?,
        job_type: name("job_type", q.job_type)?,
        failure_type: failure_type(q.failure_type)?,
        retryable: q.retryable,
        failed_after_ms: time("failed_after", q.failed_after)?,
        failed_before_ms: time("failed_before", q.failed_before)?,
        limit: None,
        group: q
            .group
            .filter(|g| !g.is_empty())
            .map(|g| super::groups::fingerprint(&g))
            .transpose()?,
        q: super::groups::search(q.q)?,
        auto_retry_only: false,
    };
    let cursor = q
        .cursor
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(&c))
        .transpose()?;
    let page = state.service.list(&filter, cursor, limit as usize).await?;
    let jobs: Vec<JobJson> = page
        .jobs
        .into_iter()
        .map(|v| JobJson::new(v, false))
        .collect();
    Ok(Json(JobPage {
        jobs,
        next_cursor: page.next_cursor.as_ref().map(encode_cursor),
        scanned: page.scanned,
        scan_limited: page.scan_limited,
    }))
}

/// One failed job with its traceback and what the policy says (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/failed/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The RQ job id (1..=512 bytes)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The job, `traceback` included", body = JobJson),
        (status = 400, description = "A malformed job id (`invalid_job_id`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 404, description = "No failed job with this id (`not_found`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<JobJson>, ApiError> {
    let id = job_id(id)?;
    match state.service.get(&id).await? {
        Some(view) => Ok(Json(JobJson::new(view, true))),
        None => Err(ApiError::NotFound(format!("no failed job {id:?}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RetryQuery {
    /// Decide and report, requeue nothing (default false).
    #[param(required = false)]
    dry_run: bool,
    /// Retry even when the policy says no; needs `reason` (default false).
    #[param(required = false)]
    force: bool,
    /// Only retry when the failure type is retryable (default true).
    #[param(required = false, default = true)]
    retry_only_retryable: bool,
    /// Why (written to the audit trail; required with `force`; at most 1024 bytes).
    reason: Option<String>,
}

impl Default for RetryQuery {
    fn default() -> Self {
        Self {
            dry_run: false,
            force: false,
            retry_only_retryable: true,
            reason: None,
        }
    }
}

/// Retry one failed job if its policy allows (role `operate`).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/failed/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The RQ job id (1..=512 bytes)"), RetryQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The outcome (requeued, or why not)", body = OutcomeJson),
        (status = 400, description = "A malformed parameter (`invalid_query`, `invalid_job_id`, `force_requires_reason`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 404, description = "No failed job with this id (`not_found`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn retry(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RetryQuery>,
    _: NoBody,
) -> Result<Json<OutcomeJson>, ApiError> {
    let id = job_id(id)?;
    let options = options(q.dry_run, q.force, q.retry_only_retryable, q.reason)?;
    let outcome = state.service.retry(&id, &options, &actor).await?;
    if outcome.outcome == Outcome::NotFound {
        return Err(ApiError::NotFound(format!("no failed job {id:?}")));
    }
    Ok(Json(outcome.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RetryAllQuery {
    /// Decide and report, requeue nothing (default false).
    #[param(required = false)]
    dry_run: bool,
    /// Retry even when the policy says no; needs `reason` (default false).
    #[param(required = false)]
    force: bool,
    /// Only retry jobs whose failure type is retryable (default true).
    #[param(required = false, default = true)]
    retry_only_retryable: bool,
    /// Only this queue.
    queue: Option<String>,
    /// Only job types matching this glob.
    job_type: Option<String>,
    /// Only this failure type (`[a-z0-9_]{1,64}`).
    failure_type: Option<String>,
    /// Only jobs of this failure group (its fingerprint): exactly the group's jobs, each
    /// re-checked to still carry the fingerprint.
    group: Option<String>,
    /// Only jobs whose text holds this (as in the listing's `q`).
    q: Option<String>,
    /// At most this many jobs (at least 1).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// Why (written to the audit trail; required with `force`).
    reason: Option<String>,
    /// How long to wait for the result before answering 202 (default
    /// `[server] retry_all_wait_seconds`; at most the request timeout less one).
    wait_seconds: Option<u64>,
}

/// A retry-all still running: watch it at `status_url`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    operation_id: String,
    /// `/api/v1/operations/{operation_id}` (also the `Location` header).
    status_url: String,
}

impl Default for RetryAllQuery {
    fn default() -> Self {
        Self {
            dry_run: false,
            force: false,
            retry_only_retryable: true,
            queue: None,
            job_type: None,
            failure_type: None,
            group: None,
            q: None,
            limit: None,
            reason: None,
            wait_seconds: None,
        }
    }
}

/// Retry every failed job matching the filter that its policy allows, as an operation that
/// goes on past the request (role `operate`).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/failed/retry-all",
    tag = "jobs",
    params(RetryAllQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation finished within `wait_seconds`", body = SummaryJson),
        (status = 202, description = "Still running: see `status_url` (and `Location`)", body = Accepted,
            headers(("Location" = String, description = "The operation's status URL"))),
        (status = 400, description = "A malformed parameter (`invalid_query`, `force_requires_reason`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 429, description = "Too many retry-all operations running in this instance (`too_many_operations`, `Retry-After`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn retry_all(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiQuery(q): ApiQuery<RetryAllQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    let options = options(q.dry_run, q.force, q.retry_only_retryable, q.reason)?;
    if q.limit == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be at least 1",
        ));
    }
    let server = &state.config.server;
    // The answer must leave before the request timeout: the operation goes on regardless.
    let max_wait = server.request_timeout_seconds.saturating_sub(1);
    let wait = q.wait_seconds.unwrap_or(server.retry_all_wait_seconds);
    if wait > max_wait {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait_seconds must be 0..={max_wait} (the request timeout less one)"),
        ));
    }
    let filter = JobFilter {
        queue: name("queue", q.queue)?,
        job_type: name("job_type", q.job_type)?,
        failure_type: failure_type(q.failure_type)?,
        limit: q.limit,
        group: q
            .group
            .filter(|g| !g.is_empty())
            .map(|g| super::groups::fingerprint(&g))
            .transpose()?,
        q: super::groups::search(q.q)?,
        ..JobFilter::default()
    };
    let operation = state
        .operations
        .start(state.service.clone(), filter, options, actor)
        .await?;
    match operation.wait(Duration::from_secs(wait)).await {
        Some(Ok(summary)) => Ok(Json(SummaryJson::from(&summary)).into_response()),
        Some(Err(e)) => Err(e.into()),
        None => {
            let url = format!("/api/v1/operations/{}", operation.id());
            let body = Accepted {
                operation_id: operation.id().to_string(),
                status_url: url.clone(),
            };
            Ok((StatusCode::ACCEPTED, [(header::LOCATION, url)], Json(body)).into_response())
        }
    }
}

/// What `GET /api/v1/jobs/stats` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Stats {
    /// Jobs per queue and registry (RQ's own counts).
    queues: Vec<crate::queue::QueueCounts>,
    /// Failed jobs per failure type, from the failure index: every failed job, each counted
    /// under its group's classification. Adds up to `failed_total`.
    failed_by_type: std::collections::BTreeMap<String, u64>,
    /// Failed jobs the index counts (equals `failed_by_type_examined`, kept for clients of
    /// the earlier sampled counts).
    failed_total: u64,
    failed_by_type_examined: u64,
    /// Whether the index has completed its first full pass (`false` while it builds).
    failed_by_type_complete: bool,
    /// The failure index's state: version, built, last pass, holder.
    index: crate::triage::read::IndexState,
    audit_outbox_length: u64,
    /// Today's retry metrics from the audit trail (`date`, `retries_today`, `decisions`,
    /// rates, per job type…); `null` without an audit directory or when it cannot be read.
    #[schema(value_type = Option<Object>)]
    retries: Option<crate::analytics::stats::RetryStats>,
    /// Whether the audit trail keeps up; `null` when it cannot be read.
    audit: Option<crate::audit::AuditHealth>,
}

/// Counts: jobs per queue, failed jobs per failure type (from the failure index: the cost
/// does not grow with the failed jobs, and no policy runs), today's retries, audit health
/// (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/stats",
    tag = "jobs",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The counts", body = Stats),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn stats(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<Stats>, ApiError> {
    let s = crate::triage::read::stats(&state.backend).await?;
    // Today's retry metrics from the audit trail; `null` when the audit is not configured
    // or cannot be read (logged): the queue counts still answer.
    let retries = match state.analytics.retry_stats(crate::clock::now_ms()).await {
        Ok(r) => r,
        Err(e) => {
            ApiError::from(e).log();
            None
        }
    };
    let audit = audit_health(&state.audit).await;
    let total = s.counts.total();
    Ok(Json(Stats {
        queues: s.queues,
        failed_by_type: s.counts.by_type(),
        failed_total: total,
        failed_by_type_examined: total,
        failed_by_type_complete: s.index.built,
        index: s.index,
        audit_outbox_length: s.outbox_len,
        retries,
        audit,
    }))
}

/// Whether the audit trail keeps up (`crate::audit::health`); `None` (`null`) when it cannot
/// be read (logged).
pub(super) async fn audit_health(
    audit: &crate::audit::AuditReader,
) -> Option<crate::audit::AuditHealth> {
    match audit.health().await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit health");
            None
        }
    }
}

pub(crate) fn options(
    dry_run: bool,
    force: bool,
    retry_only_retryable: bool,
    reason: Option<String>,
) -> Result<RetryOptions, ApiError> {
    let reason = reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if let Some(r) = &reason
        && (r.len() > MAX_REASON_BYTES || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("reason must be at most {MAX_REASON_BYTES} bytes without control characters"),
        ));
    }
    if force && reason.is_none() {
        return Err(ApiError::ForceRequiresReason);
    }
    Ok(RetryOptions {
        dry_run,
        force,
        retry_only_retryable,
        reason,
        at_front: false,
        automatic: false,
    })
}

/// A job id from the path: bounded, no control characters.
pub(crate) fn job_id(id: String) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > MAX_NAME_BYTES || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            format!("a job id is 1..={MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(id)
}

/// A queue name or job-type glob: empty means unset.
pub(crate) fn name(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("{param} must be at most {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(Some(v))
}

/// A failure type: `[a-z0-9_]{1,64}`, as policies produce them.
pub(crate) fn failure_type(value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ok = v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_query",
            "failure_type is 1-64 characters of [a-z0-9_], e.g. network_error",
        ));
    }
    Ok(Some(v))
}

fn time(param: &str, value: Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    parse_rfc3339(&v).map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!("{param} must be an RFC 3339 time such as 2026-11-29T12:00:00Z"),
        )
    })
}
