//! `POST /api/v1/policies/{digest}/replay` (role `admin`): what-if, a candidate policy and
//! params over the current failed jobs and the recorded decisions, changing nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, NoQuery};
use super::policies::{DigestPath, registry};
use super::{ApiError, AppState};
use crate::clock::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(replay))
}

/// Which failed jobs a replay looks at (current jobs and recorded decisions alike).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayFilter {
    pub queue: Option<String>,
    /// Job type glob (`payments.*`).
    pub job_type: Option<String>,
}

/// What a replay evaluates the candidate over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySource {
    /// The failed jobs in Redis now, beside the policy bound to each now.
    Current,
    /// The policy decisions recorded in the audit trail, each at its recorded clock.
    Audit,
    /// Both.
    #[default]
    Both,
}

/// Which recorded decisions a replay reads: `hours` back from now (default 24), or
/// `since_ms`/`until_ms` (until defaults to now, since to 24 h before until); at most 720 h.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayAudit {
    /// The last this many hours (1–720).
    pub hours: Option<u64>,
    /// Records at or after this time (epoch ms).
    pub since_ms: Option<u64>,
    /// Records before this time (epoch ms).
    pub until_ms: Option<u64>,
    /// Most recorded decisions replayed (1–100,000, default 10,000).
    pub max_records: Option<u64>,
}

/// The body of a replay.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayBody {
    /// The candidate's params.
    #[schema(value_type = BTreeMap<String, String>)]
    pub params: BTreeMap<String, String>,
    pub filter: ReplayFilter,
    /// `current`, `audit` or `both` (default).
    pub source: ReplaySource,
    /// Most current jobs evaluated (1–100,000, default 10,000).
    pub max_jobs: Option<u64>,
    /// The window of recorded decisions (needs `source` `audit` or `both`).
    pub audit: Option<ReplayAudit>,
}

/// Longest window of recorded decisions one replay reads.
const MAX_REPLAY_HOURS: u64 = 720;

/// Checks a replay's window of recorded decisions against `now`: `(since, until, max)`.
fn replay_window(a: &ReplayAudit, now: u64) -> Result<(u64, u64, u64), ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_body", message);
    let max_records = a.max_records.unwrap_or(10_000);
    if !(1..=100_000).contains(&max_records) {
        return Err(bad(format!(
            "audit.max_records must be 1 to 100000, not {max_records}"
        )));
    }
    let (since, until) = match (a.hours, a.since_ms, a.until_ms) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(bad(
                "audit: give either hours or since_ms/until_ms, not both".into(),
            ));
        }
        (Some(h), None, None) => {
            if !(1..=MAX_REPLAY_HOURS).contains(&h) {
                return Err(bad(format!(
                    "audit.hours must be 1 to {MAX_REPLAY_HOURS}, not {h}"
                )));
            }
            (now.saturating_sub(h * 3_600_000), now)
        }
        (None, since, until) => {
            let until = until.unwrap_or(now);
            let since = since.unwrap_or(until.saturating_sub(24 * 3_600_000));
            if since >= until {
                return Err(bad(format!(
                    "audit.since_ms ({since}) must be before audit.until_ms ({until})"
                )));
            }
            if until - since > MAX_REPLAY_HOURS * 3_600_000 {
                return Err(bad(format!(
                    "audit: the window is at most {MAX_REPLAY_HOURS} hours; since_ms to until_ms spans {} ms",
                    until - since
                )));
            }
            (since, until)
        }
    };
    Ok((since, until, max_records))
}

/// What-if: evaluates the policy `digest` with `params` over the current failed jobs beside
/// the policy bound to each job's type now, and over the policy decisions recorded in the
/// audit trail (each on its recorded input, at its recorded clock) beside the verdict the
/// record stands for, and reports how the decisions differ, with counts and examples.
/// Changes nothing. Without an audit directory the recorded section says so.
#[utoipa::path(
    post,
    path = "/api/v1/policies/{digest}/replay",
    tag = "policies",
    params(DigestPath),
    request_body = ReplayBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "How the candidate differs", body = crate::analytics::replay::ReplayReport),
        (status = 400, description = "Bad body, or params the policy refuses", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 422, description = "The stored policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<DigestPath>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<crate::analytics::replay::ReplayReport>, ApiError> {
    use crate::analytics::replay::{RecordedWindow, ReplayError, ReplayReport};
    let bad = |message: String| ApiError::bad_request("invalid_body", message);
    let current = body.source != ReplaySource::Audit;
    let recorded = body.source != ReplaySource::Current;
    if !current && body.max_jobs.is_some() {
        return Err(bad(
            "max_jobs limits the current jobs: it needs source `current` or `both`".into(),
        ));
    }
    if !recorded && body.audit.is_some() {
        return Err(bad(
            "audit picks recorded decisions: it needs source `audit` or `both`".into(),
        ));
    }
    let max_jobs = body.max_jobs.unwrap_or(10_000);
    if !(1..=100_000).contains(&max_jobs) {
        return Err(bad(format!("max_jobs must be 1 to 100000, not {max_jobs}")));
    }
    let now = now_ms();
    let (since, until, max_records) = replay_window(&body.audit.unwrap_or_default(), now)?;
    let registry = registry(&state)?;
    let params: crate::policy::Params = body.params.clone().into_iter().collect();
    let candidate = registry.candidate(&p.digest, &params).await?;
    let filter = crate::retry::JobFilter {
        queue: body.filter.queue,
        job_type: body.filter.job_type,
        ..crate::retry::JobFilter::default()
    };
    let mut report = ReplayReport {
        candidate: candidate.policy.digest().to_string(),
        params: body.params,
        current: None,
        recorded: None,
    };
    if current {
        let max_jobs = usize::try_from(max_jobs).unwrap_or(usize::MAX);
        report.current = Some(
            crate::analytics::replay::current(&state.service, &candidate, &filter, max_jobs)
                .await?,
        );
    }
    if recorded {
        let window = RecordedWindow {
            since_ms: since,
            until_ms: until,
            filter,
            max_records,
        };
        report.recorded = Some(
            state
                .analytics
                .replay_recorded(registry, &candidate, &window)
                .await
                .map_err(|e| match e {
                    ReplayError::Query(e) => ApiError::from(e),
                    ReplayError::Retry(e) => ApiError::from(e),
                })?,
        );
    }
    Ok(Json(report))
}
