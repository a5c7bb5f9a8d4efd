//! The retry service's types: how a retry is asked for (`RetryOptions`), what it reports
//! (`JobView`, `Page`, `Summary`, `Progress`) and its errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use super::outcome::{JobOutcome, Outcome};
use crate::policy::{Classification, HoldKind};
use crate::queue::{FailedJob, JobRef, QueueError};

/// How a retry is to be done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOptions {
    /// Compute outcomes and write `dry_run` audit records; change no queue key or state.
    pub dry_run: bool,
    /// Override the policy's decision (requires a reason); never the atomic checks.
    pub force: bool,
    /// When false, a `non-retryable` hold is let through (never max attempts or cooldown).
    pub retry_only_retryable: bool,
    /// Why, for the audit trail.
    pub reason: Option<String>,
    /// Push at the front of the queue.
    pub at_front: bool,
    /// Made by the auto-retry sweeper (the retry budget always applies to it).
    pub automatic: bool,
}

impl RetryOptions {
    /// The defaults of the API: retry only retryable failures, no force, no dry run.
    pub fn new() -> Self {
        Self {
            retry_only_retryable: true,
            ..Self::default()
        }
    }
}

/// Errors of the service itself (per-job problems are outcomes, not errors).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetryError {
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Redis(#[from] crate::redis_error::RedisError),
    #[error("force requires a reason")]
    ForceWithoutReason,
    #[error("the policy engine failed: {0}")]
    Engine(String),
    /// A delete-all's counting pass found a set whose size differs from the caller's
    /// `expected_count` by more than `max_difference`: nothing was deleted.
    #[error(
        "the filter now matches {found} jobs, not the expected {expected} (± {max_difference}): nothing was deleted; run a dry run again"
    )]
    CountMismatch {
        expected: u64,
        found: u64,
        max_difference: u64,
    },
    /// A real delete needs a reason (it goes into every audit record).
    #[error("a delete requires a reason: it is written to the audit trail")]
    DeleteWithoutReason,
}

/// How a delete-all is to be done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Count and record `deleted` (flagged `dry_run`) records; delete nothing.
    pub dry_run: bool,
    /// Why, for the audit trail (required unless a dry run).
    pub reason: Option<String>,
    /// The count the caller's dry run reported: when set, a counting pass runs first and the
    /// delete ends in a conflict, deleting nothing, if the set now differs by more than
    /// `max_difference`.
    pub expected_count: Option<u64>,
    pub max_difference: u64,
    /// Also delete the jobs that depend on each deleted job (RQ's `delete_dependents`).
    pub delete_dependents: bool,
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Jobs read, evaluated and requeued per pipelined batch.
    pub batch_size: usize,
    /// How long retry state outlives the job's own failure TTL.
    pub state_grace_seconds: u64,
    /// RQ's default failure TTL (one year), for jobs that do not say.
    pub default_failure_ttl_seconds: u64,
    /// How long a retry-all's snapshot lives.
    pub snapshot_ttl_seconds: u64,
    /// How often a batch whose reply was lost is re-sent before its jobs are `unknown`.
    pub requeue_resends: u32,
    /// Listings (and single-job reads) that read and evaluate at once; more wait their turn.
    /// Each holds a page of jobs with their tracebacks in memory (a few MB): this bounds the
    /// memory of many concurrent listings, and the CPU they need is the same either way.
    pub max_concurrent_listings: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            state_grace_seconds: 7 * 86_400,
            default_failure_ttl_seconds: 365 * 86_400,
            snapshot_ttl_seconds: 3600,
            requeue_resends: 3,
            max_concurrent_listings: 8,
        }
    }
}

/// A failed job with what its policy says now.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job: FailedJob,
    pub attempts: u32,
    pub policy_digest: String,
    /// The classification, when the policy produced one.
    pub classification: Option<Classification>,
    /// The decision as an outcome (`retried` = would retry now).
    pub outcome: Outcome,
    pub reason: String,
    pub retry_at_ms: Option<u64>,
    pub hold_kind: Option<HoldKind>,
}

/// A page of failed jobs and the cursor of the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<JobRef>,
    /// Jobs read to fill the page.
    pub scanned: u64,
    /// The page ended at the scan bound (`service::MAX_SCAN`), not at `limit` or the end:
    /// `next_cursor` goes on from the last job read.
    pub scan_limited: bool,
}

/// Progress and result of a retry-all, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub processed: AtomicU64,
    pub cancelled: AtomicBool,
    counts: std::sync::Mutex<BTreeMap<Outcome, u64>>,
}

impl Progress {
    pub fn counts(&self) -> BTreeMap<Outcome, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
    pub(super) fn add(&self, outcomes: &[JobOutcome]) {
        if let Ok(mut counts) = self.counts.lock() {
            for o in outcomes {
                *counts.entry(o.outcome).or_default() += 1;
            }
        }
        self.processed
            .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
    }
}

/// The summary of a retry-all.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub operation_id: String,
    pub total: u64,
    pub counts: BTreeMap<Outcome, u64>,

    pub cancelled: bool,
    pub dry_run: bool,
}

impl Summary {
    /// Jobs the brakes held for later (`blocked_circuit_open` + `blocked_budget`).
    pub fn deferred(&self) -> u64 {
        [Outcome::BlockedCircuitOpen, Outcome::BlockedBudget]
            .iter()
            .filter_map(|o| self.counts.get(o))
            .sum()
    }
}

/// A shadow policy's verdict, recorded beside the real decision and never acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowDecision {
    pub digest: String,
    /// The binding's pattern, so experiments group by binding.
    pub pattern: String,
    /// What it would do, in the vocabulary of `decision` (`retried`, `blocked_cooldown`, …).
    pub outcome: String,
    pub retry_at_ms: Option<u64>,
    pub failure_type: Option<String>,
    pub reason: String,
    /// What the acting policy decided (before the operator's options), and its retry time,
    /// for comparing "whether" and "when".
    pub active_outcome: String,
    pub active_retry_at_ms: Option<u64>,
}
