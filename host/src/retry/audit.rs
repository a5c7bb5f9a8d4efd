//! Audit records as they enter the outbox stream `retryguard:audit:outbox`, under the seed's
//! column names plus what a replay needs (docs/audit.md). The record's time is its stream
//! id; `crate::audit` moves the outbox into parquet.

use super::filter::JobFilter;
use super::outcome::JobOutcome;
use super::service::{RetryOptions, Summary};
use crate::policy::FailureInput;

/// Formats epoch milliseconds as RFC 3339 UTC with microseconds.
pub fn rfc3339(ms: u64) -> String {
    // RQ's own timestamp format is RFC 3339 with microseconds.
    crate::queue::rq::decode::format_rq_time(ms)
}

/// The record of one job's outcome. `failure` carries the policy input for replay; large
/// texts go in by digest.
pub fn record(
    o: &JobOutcome,
    actor: &str,
    options: &RetryOptions,
    operation_id: &str,
    failure: Option<&FailureInput>,
    params_json: &str,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    let mut r = vec![
        ("job_id", o.job_id.clone()),
        ("job_type", o.job_type.clone()),
        ("queue", o.queue.clone()),
        ("user_or_system", actor.to_string()),
        ("retry_reason", options.reason.clone().unwrap_or_default()),
        ("attempt_number", o.attempt.to_string()),
        (
            "failure_type",
            o.classification
                .as_ref()
                .map(|c| c.failure_type.clone())
                .unwrap_or_default(),
        ),
        (
            "retryable",
            o.classification
                .as_ref()
                .map(|c| c.retryable.to_string())
                .unwrap_or_default(),
        ),
        ("decision", o.outcome.as_str().to_string()),
        ("operation_id", operation_id.to_string()),
        ("policy_digest", o.policy_digest.clone()),
        ("dry_run_flag", options.dry_run.to_string()),
        ("forced", o.forced.to_string()),
        (
            "success",
            (o.outcome == super::Outcome::Retried).to_string(),
        ),
        ("error_message", o.reason.clone()),
        ("now_ms", now_ms.to_string()),
    ];
    if let Some(f) = failure {
        r.push(("params", params_json.to_string()));
        r.extend(crate::audit::schema::failure_fields(f));
    }
    r
}

/// The fields the requeue script writes itself, from what it finds: a record for a
/// requeue carries every other field.
pub const SET_BY_REQUEUE_SCRIPT: [&str; 4] =
    ["decision", "success", "error_message", "attempt_number"];

/// The record written before a retry-all changes anything.
pub fn operation_started(
    operation_id: &str,
    actor: &str,
    options: &RetryOptions,
    filter: &JobFilter,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("decision", "operation_started".into()),
        ("operation_id", operation_id.to_string()),
        ("user_or_system", actor.to_string()),
        ("retry_reason", options.reason.clone().unwrap_or_default()),
        ("dry_run_flag", options.dry_run.to_string()),
        ("forced", options.force.to_string()),
        ("filter", serde_json::to_string(filter).unwrap_or_default()),
        ("now_ms", now_ms.to_string()),
    ]
}

/// The record written when a retry-all ends, with its per-outcome counts.
pub fn operation_finished(
    summary: &Summary,
    actor: &str,
    filter: &JobFilter,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("decision", "operation_finished".into()),
        ("operation_id", summary.operation_id.clone()),
        ("user_or_system", actor.to_string()),
        ("dry_run_flag", summary.dry_run.to_string()),
        ("filter", serde_json::to_string(filter).unwrap_or_default()),
        (
            "counts",
            serde_json::to_string(&summary.counts).unwrap_or_default(),
        ),
        ("cancelled", summary.cancelled.to_string()),
        (
            "error_message",
            if summary.cancelled {
                "cancelled before it finished".to_string()
            } else {
                String::new()
            },
        ),
        ("now_ms", now_ms.to_string()),
    ]
}
