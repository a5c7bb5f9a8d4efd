//! Every Redis key and channel retryguard owns, in one place: all are under `retryguard:`
//! (RQ's own keys are `crate::queue::rq::RqKeys`). docs/architecture.md lists them with
//! their types and lifetimes.
//!
//! A leaf: it uses nothing else of the crate.

/// The audit outbox stream: every decision enters it in the step that makes it, and the
/// audit writer moves it into parquet.
pub const AUDIT_OUTBOX: &str = "retryguard:audit:outbox";
/// The audit writers' consumer group on the outbox.
pub const AUDIT_GROUP: &str = "retryguard-audit";
/// The audit writer lease (a string holding the holder's token).
pub const AUDIT_LEASE: &str = "retryguard:audit:lease";
/// Tracebacks waiting to be written to the audit's `_blobs/` (hash: sha256 → text).
pub const AUDIT_BLOBS: &str = "retryguard:audit:blobs";
/// The audit lease holder's last report (hash).
pub const AUDIT_WRITER_STATUS: &str = "retryguard:audit:writer";

/// Requeued jobs whose outcome is still to be recorded (ZSET, score = requeue ms).
pub const OUTCOMES_WATCH: &str = "retryguard:outcomes:watch";

/// A job's retry state (hash). Its `created_at` field ties it to one incarnation of the job
/// id: a reused id starts afresh.
pub fn job_state(job_id: &str) -> String {
    format!("retryguard:job:{job_id}")
}

/// A retry-all's snapshot of one queue's failed registry (ZSET, with a TTL).
pub fn snapshot(operation_id: &str, queue: &str) -> String {
    format!("retryguard:snapshot:{operation_id}:{queue}")
}

/// The pub/sub channel of policy and binding changes.
pub const POLICY_EVENTS: &str = "retryguard:policies:events";
/// The ZSET of every uploaded policy's digest.
pub const POLICIES: &str = "retryguard:policies";
/// The HASH of bindings by pattern.
pub const BINDINGS: &str = "retryguard:bindings";
/// The revision counter of the bindings.
pub const BINDINGS_REVISION: &str = "retryguard:bindings:revision";

/// What is known of an uploaded policy besides its bytes (hash).
pub fn policy_meta(digest: &str) -> String {
    format!("retryguard:policy:{digest}:meta")
}

/// An uploaded policy's component bytes (string).
pub fn policy_bytes(digest: &str) -> String {
    format!("retryguard:policy:{digest}:bytes")
}

/// Earlier states of one binding pattern (list, newest first).
pub fn binding_history(pattern: &str) -> String {
    format!("retryguard:bindings:history:{pattern}")
}

/// Prefix of every idempotency record's key.
pub const IDEMPOTENCY_PREFIX: &str = "retryguard:idem:";

/// The Redis key of the idempotency record of `key`.
pub fn idempotency_record(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}
