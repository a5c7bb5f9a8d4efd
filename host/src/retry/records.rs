//! The retry service's audit records, built with `crate::audit::NewRecord`: one per job
//! outcome, and one at the start and the end of a retry-all (docs/audit.md).

use super::filter::JobFilter;
use super::outcome::{JobOutcome, Outcome};
use super::types::{RetryOptions, ShadowDecision, Summary};
use crate::audit::{FailureColumns, NewRecord, Verdict};
use crate::policy::FailureInput;

/// What a job's record says besides its outcome: who, under which operation, with which
/// policy input and params, and what the shadow said.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub actor: &'a str,
    pub options: &'a RetryOptions,
    pub operation_id: &'a str,
    pub now_ms: u64,
}

/// The record of one job's outcome. `failure` is the policy input (for replay), with the
/// binding's params; `shadow` the shadow policy's verdict, if the binding has one.
pub fn job_record(
    o: &JobOutcome,
    cx: Context<'_>,
    failure: Option<(&FailureInput, &str)>,
    shadow: Option<&ShadowDecision>,
) -> NewRecord {
    NewRecord {
        verdict: Some(Verdict {
            decision: o.outcome.as_str().to_string(),
            success: Some(o.outcome == Outcome::Retried),
            error_message: Some(o.reason.clone()),
            attempt_number: Some(o.attempt),
        }),
        ..requeue_record(o, cx, failure, shadow)
    }
}

/// The record handed to the requeue script: a job record without the verdict, which the
/// script writes itself from what it finds, in the same atomic step as the requeue.
pub fn requeue_record(
    o: &JobOutcome,
    cx: Context<'_>,
    failure: Option<(&FailureInput, &str)>,
    shadow: Option<&ShadowDecision>,
) -> NewRecord {
    NewRecord {
        actor: cx.actor.to_string(),
        verdict: None,
        job_id: Some(o.job_id.clone()),
        job_type: Some(o.job_type.clone()),
        queue: Some(o.queue.clone()),
        retry_reason: Some(cx.options.reason.clone().unwrap_or_default()),
        failure_type: o.classification.as_ref().map(|c| c.failure_type.clone()),
        retryable: o.classification.as_ref().map(|c| c.retryable),
        operation_id: Some(cx.operation_id.to_string()),
        policy_digest: Some(o.policy_digest.clone()),
        shadow: shadow.map(|s| {
            (
                s.digest.clone(),
                serde_json::to_string(s).unwrap_or_default(),
            )
        }),
        dry_run: cx.options.dry_run,
        forced: o.forced,
        params: failure.map(|(_, params)| params.to_string()),
        failure: failure.map(|(f, _)| FailureColumns::of(f)),
        now_ms: Some(cx.now_ms),
        ..NewRecord::default()
    }
}

/// The record written before a retry-all changes anything.
pub fn operation_started(
    operation_id: &str,
    actor: &str,
    options: &RetryOptions,
    filter: &JobFilter,
    now_ms: u64,
) -> NewRecord {
    NewRecord {
        actor: actor.to_string(),
        verdict: Some(Verdict {
            decision: "operation_started".into(),
            ..Verdict::default()
        }),
        operation_id: Some(operation_id.to_string()),
        retry_reason: Some(options.reason.clone().unwrap_or_default()),
        dry_run: options.dry_run,
        forced: options.force,
        filter: Some(serde_json::to_string(filter).unwrap_or_default()),
        now_ms: Some(now_ms),
        ..NewRecord::default()
    }
}

/// The record written when a retry-all ends, with its per-outcome counts.
pub fn operation_finished(
    summary: &Summary,
    actor: &str,
    filter: &JobFilter,
    now_ms: u64,
) -> NewRecord {
    NewRecord {
        actor: actor.to_string(),
        verdict: Some(Verdict {
            decision: "operation_finished".into(),
            error_message: Some(if summary.cancelled {
                "cancelled before it finished".to_string()
            } else {
                String::new()
            }),
            ..Verdict::default()
        }),
        operation_id: Some(summary.operation_id.clone()),
        dry_run: summary.dry_run,
        filter: Some(serde_json::to_string(filter).unwrap_or_default()),
        counts: Some(serde_json::to_string(&summary.counts).unwrap_or_default()),
        cancelled: Some(summary.cancelled),
        now_ms: Some(now_ms),
        ..NewRecord::default()
    }
}
