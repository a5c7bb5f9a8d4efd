//! What the retry service reports for each job.

use serde::{Deserialize, Serialize};

use crate::policy::Classification;

/// The outcome of one job in a retry or retry-all.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Requeued (or, in a dry run, would be).
    Retried,
    /// The policy's retry time is still in the future.
    BlockedCooldown,
    /// The job has used every attempt the policy allows.
    BlockedMaxAttempts,
    /// The failure will not succeed on retry.
    BlockedNonRetryable,
    /// Nobody knows why it failed or whether its side effects happened.
    BlockedUnknown,
    /// The policy refused for a reason of its own (hold kind `policy-says-no`).
    BlockedByPolicy,
    /// The circuit breaker of its binding pattern and failure type is open (hold kind
    /// `circuit_open`): no attempt is used, and `retry_at_ms` is when it lets probes through.
    BlockedCircuitOpen,
    /// Its binding's retry budget for this minute is spent (hold kind `budget`): no attempt
    /// is used, and `retry_at_ms` is when the next minute's budget starts.
    BlockedBudget,
    /// The job changed since the decision (requeued by someone else, or ran and failed again).
    StaleDecision,
    /// It is no longer in the failed registry: someone else requeued it.
    AlreadyRequeued,
    /// The job does not exist (any more).
    NotFound,
    /// The policy failed (trap, timeout, …): never a retry.
    PolicyError,
    /// Redis did not confirm the requeue (or the delete): it may or may not have happened.
    /// Re-send the operation to resolve it.
    Unknown,
    /// Deleted by a delete-all (or, in a dry run, would be).
    Deleted,
}

impl Outcome {
    pub const ALL: [Outcome; 14] = [
        Self::Retried,
        Self::BlockedCooldown,
        Self::BlockedMaxAttempts,
        Self::BlockedNonRetryable,
        Self::BlockedUnknown,
        Self::BlockedByPolicy,
        Self::BlockedCircuitOpen,
        Self::BlockedBudget,
        Self::StaleDecision,
        Self::AlreadyRequeued,
        Self::NotFound,
        Self::PolicyError,
        Self::Unknown,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retried => "retried",
            Self::BlockedCooldown => "blocked_cooldown",
            Self::BlockedMaxAttempts => "blocked_max_attempts",
            Self::BlockedNonRetryable => "blocked_non_retryable",
            Self::BlockedUnknown => "blocked_unknown",
            Self::BlockedByPolicy => "blocked_by_policy",
            Self::BlockedCircuitOpen => "blocked_circuit_open",
            Self::BlockedBudget => "blocked_budget",
            Self::StaleDecision => "stale_decision",
            Self::AlreadyRequeued => "already_requeued",
            Self::NotFound => "not_found",
            Self::PolicyError => "policy_error",
            Self::Unknown => "unknown",
            Self::Deleted => "deleted",
        }
    }
}

/// One job's outcome, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub job_id: String,
    pub queue: String,
    pub job_type: String,
    pub outcome: Outcome,
    pub reason: String,
    pub classification: Option<Classification>,
    /// The attempt this retry is (1 for the first retry); for a blocked job, the attempts
    /// already made.
    pub attempt: u32,
    pub policy_digest: String,
    /// For `blocked_cooldown`: when the cooldown ends (epoch ms).
    pub retry_at_ms: Option<u64>,
    pub dry_run: bool,
    pub forced: bool,
}
