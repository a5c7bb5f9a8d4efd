//! The JSON the API sends: jobs, outcomes, summaries; RFC 3339 times and opaque cursors.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use super::error::ApiError;
use crate::clock::format_rfc3339;
use crate::policy::HoldKind;
use crate::queue::JobRef;
use crate::retry::{JobOutcome, JobView, Outcome, Summary};

/// Longest cursor accepted (a `JobRef` of a long queue name and id).
const MAX_CURSOR_BYTES: usize = 4096;

/// A failed job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobJson {
    pub id: String,
    pub queue: String,
    pub job_type: String,
    pub status: String,
    pub exc_type: String,
    pub exc_message: String,
    pub failed_at: Option<String>,
    /// The policy's failure type (`null` when the policy failed).
    pub failure_type: Option<String>,
    /// Whether the failure type is retryable (`null` when the policy failed).
    pub retryable: Option<bool>,
    /// Whether a retry is allowed right now (`decision.action == "retry"`).
    pub is_retryable: bool,
    /// Retries retryguard has made for this job.
    pub attempts: u32,
    pub decision: DecisionJson,
    pub policy_digest: String,
    /// Only in `GET /api/v1/jobs/failed/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// What the policy says now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionJson {
    /// `retry` (due now), `wait` (cooling down until `retry_at`), `hold` (see `hold_kind`),
    /// `error` (the policy failed: never a retry).
    pub action: &'static str,
    pub retry_at: Option<String>,
    /// Why a `hold`: the policy's hold kind (`null` unless `action` is `hold`).
    pub hold_kind: Option<HoldKind>,
    pub reason: String,
}

impl JobJson {
    pub fn new(view: JobView, with_traceback: bool) -> Self {
        let action = match view.outcome {
            Outcome::Retried => "retry",
            Outcome::BlockedCooldown => "wait",
            Outcome::PolicyError => "error",
            _ => "hold",
        };
        let job = view.job;
        Self {
            id: job.id,
            queue: job.queue,
            job_type: job.job_type,
            status: job.status,
            exc_type: job.exc_type,
            exc_message: job.exc_message,
            failed_at: job.failed_at_ms.map(format_rfc3339),
            failure_type: view.classification.as_ref().map(|c| c.failure_type.clone()),
            retryable: view.classification.as_ref().map(|c| c.retryable),
            is_retryable: action == "retry",
            attempts: view.attempts,
            decision: DecisionJson {
                action,
                retry_at: view.retry_at_ms.map(format_rfc3339),
                hold_kind: view.hold_kind,
                reason: view.reason,
            },
            policy_digest: view.policy_digest,
            traceback: with_traceback.then_some(job.traceback),
        }
    }
}

/// One job's retry outcome.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutcomeJson {
    pub job_id: String,
    pub queue: String,
    pub job_type: String,
    pub outcome: Outcome,
    pub reason: String,
    pub failure_type: Option<String>,
    pub retryable: Option<bool>,
    /// The attempt this retry is (1 = first retry); for a blocked job, attempts so far.
    pub attempt: u32,
    pub policy_digest: String,
    /// For `blocked_cooldown`: when the cooldown ends.
    pub retry_at: Option<String>,
    pub dry_run: bool,
    pub forced: bool,
}

impl From<JobOutcome> for OutcomeJson {
    fn from(o: JobOutcome) -> Self {
        Self {
            job_id: o.job_id,
            queue: o.queue,
            job_type: o.job_type,
            outcome: o.outcome,
            reason: o.reason,
            failure_type: o.classification.as_ref().map(|c| c.failure_type.clone()),
            retryable: o.classification.as_ref().map(|c| c.retryable),
            attempt: o.attempt,
            policy_digest: o.policy_digest,
            retry_at: o.retry_at_ms.map(format_rfc3339),
            dry_run: o.dry_run,
            forced: o.forced,
        }
    }
}

/// One page of failed jobs, newest failures first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobJson>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Jobs read to fill this page.
    pub scanned: u64,
    /// The page ended because one request reads at most 10,000 jobs, not at `limit`: a
    /// selective filter (`q`, `failure_type`…) over many jobs goes on at `next_cursor`.
    /// Narrow with `group` or `queue` to read fewer.
    pub scan_limited: bool,
}

/// Counts of every outcome, zeros included, so clients need not know the list.
pub fn all_counts(counts: &BTreeMap<Outcome, u64>) -> BTreeMap<&'static str, u64> {
    Outcome::ALL
        .iter()
        .map(|o| (o.as_str(), counts.get(o).copied().unwrap_or(0)))
        .collect()
}

/// The result of a retry-all.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SummaryJson {
    pub operation_id: String,
    /// Jobs that matched the filter and got an outcome.
    pub total: u64,
    /// Jobs per outcome, every outcome present (zeros included).
    pub counts: BTreeMap<&'static str, u64>,
    /// Jobs the brakes held for later: `blocked_circuit_open` + `blocked_budget` (each
    /// carries when it may go; the auto-retry sweeper, or the next retry-all, takes it then).
    pub deferred: u64,
    pub cancelled: bool,
    pub dry_run: bool,
}

impl From<&Summary> for SummaryJson {
    fn from(s: &Summary) -> Self {
        Self {
            operation_id: s.operation_id.clone(),
            total: s.total,
            counts: all_counts(&s.counts),
            deferred: s.deferred(),
            cancelled: s.cancelled,
            dry_run: s.dry_run,
        }
    }
}

pub use crate::clock::parse_rfc3339;

/// The opaque cursor of a listing: base64url (no padding) of the JSON of a `JobRef`.
pub fn encode_cursor(r: &JobRef) -> String {
    let json = serde_json::to_vec(r).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Reads a cursor made by `encode_cursor`.
pub fn decode_cursor(cursor: &str) -> Result<JobRef, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this API returned (pass next_cursor unchanged)",
        )
    };
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| bad())?;
    let r: JobRef = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if r.score.is_nan() || r.queue.is_empty() || r.id.is_empty() {
        return Err(bad());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets() {
        let z = parse_rfc3339("2026-11-29T12:00:01.234Z").unwrap();
        assert_eq!(z, 1_795_953_601_234);
        assert_eq!(parse_rfc3339("2026-11-29T12:00:01.234+00:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-29T14:00:01.234+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-29T07:30:01.234-04:30"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-29t12:00:01.234z"), Some(z));
        assert_eq!(parse_rfc3339(&format_rfc3339(z)), Some(z));
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29T12:00:00",
            "2026-11-29T12:00:00+2:00",
            "2026-11-29T12:00:00+24:00",
            "2026-11-29T12:00:00+0a:00",
            "yesterday",
            "1970-01-01T00:00:00+01:00",
            "2026-11-29 12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let r = JobRef {
            queue: "default".into(),
            id: "abc".into(),
            score: 1_795_953_601.0,
        };
        assert_eq!(decode_cursor(&encode_cursor(&r)).unwrap(), r);
        // RQ scores a job kept forever (`failure_ttl=-1`) `+inf`: its cursor must read back.
        let forever = JobRef {
            score: f64::INFINITY,
            ..r.clone()
        };
        assert_eq!(decode_cursor(&encode_cursor(&forever)).unwrap(), forever);
        let nan = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"queue":"q","id":"a","score":"nan"}"#);
        let null = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"queue":"q","id":"a","score":null}"#);
        for bad in [
            "",
            "%%%",
            "bm90IGpzb24",
            &"A".repeat(MAX_CURSOR_BYTES + 1),
            &nan,
            &null,
        ] {
            let e = decode_cursor(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_cursor", "{bad}");
        }
    }
}
