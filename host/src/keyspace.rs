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
/// The audit writer lease (a string holding the holder's token). `v2`: the writers that read
/// the one-field outbox entry (`audit::encoding`).
pub const AUDIT_LEASE: &str = "retryguard:audit:v2:lease";
/// The lease of the writers before the one-field outbox entry. Every instance of this version
/// sets it to [`AUDIT_FENCE`], with no expiry, so that no writer of an earlier version takes
/// it again (`audit::fence_earlier_writers`).
pub const AUDIT_LEASE_V1: &str = "retryguard:audit:lease";
/// What [`AUDIT_LEASE_V1`] holds for ever once this version has connected.
pub const AUDIT_FENCE: &str = "fenced: the audit outbox holds one-field entries, which an earlier audit writer (one stream field per column) would lose; see docs/audit.md, Upgrading";
/// Tracebacks waiting to be written to the audit's `_blobs/` (hash: sha256 → text).
pub const AUDIT_BLOBS: &str = "retryguard:audit:blobs";
/// The audit lease holder's last report (hash).
pub const AUDIT_WRITER_STATUS: &str = "retryguard:audit:writer";

/// Requeued jobs whose outcome is still to be recorded (ZSET, score = requeue ms).
pub const OUTCOMES_WATCH: &str = "retryguard:outcomes:watch";

/// A dashboard login session (hash: `name` (the token's), `csrf`, `created_ms`), under the
/// sha256 of its cookie value, so the keyspace holds no usable session id. It expires after
/// `[ui] session_idle_minutes` without a request (every request renews it).
pub fn ui_session(id_sha256: &str) -> String {
    format!("retryguard:ui:session:{id_sha256}")
}

/// A job's retry state (hash). Its `created_at` field ties it to one incarnation of the job
/// id: a reused id starts afresh.
pub fn job_state(job_id: &str) -> String {
    format!("retryguard:job:{job_id}")
}

/// A retry-all's snapshot of one queue's failed registry (ZSET, with a TTL).
pub fn snapshot(operation_id: &str, queue: &str) -> String {
    format!("retryguard:snapshot:{operation_id}:{queue}")
}

/// One bulk operation (retry-all; delete-all to come) as the instance that runs it last
/// reported it (hash: `kind`, `state`, `dry_run`, `actor`, `instance`, `started_ms`,
/// `ended_ms`, `updated_ms` (the heartbeat), `total`, `processed`, `count:<outcome>`,
/// `error_kind`, `error`, and `cancel`, which any instance may set). Every write renews its
/// TTL of 7 days, so it expires 7 days after it ends (or after the last heartbeat of an
/// instance that died). `crate::app::operations::store` reads and writes it.
pub fn operation(operation_id: &str) -> String {
    format!("retryguard:operation:{operation_id}")
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

/// Prefix of every key of the failure index (`crate::triage`). The version in it is
/// `triage::index::INDEX_VERSION`: a new layout is a new prefix, rebuilt from the registries.
/// The Lua scripts that keep the index (`triage/lua/*.lua`) spell it out too.
pub const TRIAGE_PREFIX: &str = "retryguard:triage:v1:";

/// The failure index's bookkeeping (hash): version, watermarks per queue, build state.
pub const TRIAGE_META: &str = "retryguard:triage:v1:meta";
/// The reconciler's lease (a string holding the holder's token, which fences its writes).
pub const TRIAGE_LEASE: &str = "retryguard:triage:v1:lease";
/// Job id → fingerprint of the group it is counted in (hash).
pub const TRIAGE_JOBS: &str = "retryguard:triage:v1:jobs";
/// Groups with failed jobs, by count (ZSET: fingerprint → count).
pub const TRIAGE_GROUPS: &str = "retryguard:triage:v1:groups";
/// Groups with failed jobs, by last failure (ZSET: fingerprint → epoch ms).
pub const TRIAGE_GROUPS_LAST: &str = "retryguard:triage:v1:groups:last";
/// Failed jobs per queue and failure type (hash: `<queue>\t<failure type>` → count).
pub const TRIAGE_COUNTS: &str = "retryguard:triage:v1:counts";
/// Failures per hour over every group (hash: epoch hour → count), the last 48 hours.
pub const TRIAGE_HOURS: &str = "retryguard:triage:v1:hours";
/// The queues the index knows (set of names).
pub const TRIAGE_QUEUES: &str = "retryguard:triage:v1:queues";

/// One group (hash): what the cause is, how it is classified, counts per queue (`q:<queue>`).
pub fn triage_group(fingerprint: &str) -> String {
    format!("{TRIAGE_PREFIX}group:{fingerprint}")
}

/// One group's jobs on one queue (ZSET: job id → failed-registry score, as RQ's registry).
pub fn triage_group_jobs(fingerprint: &str, queue: &str) -> String {
    format!("{TRIAGE_PREFIX}group:{fingerprint}:jobs:{queue}")
}

/// One group's newest job ids (list, at most `triage::index::SAMPLE_SIZE`).
pub fn triage_group_sample(fingerprint: &str) -> String {
    format!("{TRIAGE_PREFIX}group:{fingerprint}:sample")
}

/// One group's failures per hour (hash: epoch hour → count), the last 48 hours.
pub fn triage_group_hours(fingerprint: &str) -> String {
    format!("{TRIAGE_PREFIX}group:{fingerprint}:hours")
}

/// One group's example failure (hash: job id, raw message, traceback capped in size).
pub fn triage_group_example(fingerprint: &str) -> String {
    format!("{TRIAGE_PREFIX}group:{fingerprint}:example")
}

/// Every circuit breaker's key (SET of `<pattern>|<failure type>`).
pub const BREAKERS: &str = "retryguard:breakers";

/// A circuit breaker's state (hash; `crate::brake`'s `lua/common.lua` lists its fields). Its
/// sliding window of outcomes is the ZSETs `<this>:ok` and `<this>:fail` (score: when).
pub fn breaker(key: &str) -> String {
    format!("retryguard:breaker:{key}")
}

/// A binding's retry budget counters of one minute (`kind` `used`: requeues taken; `ok`:
/// successful completions counted), expiring after 3 minutes.
pub fn budget(pattern: &str, kind: &str, minute: u64) -> String {
    format!("retryguard:budget:{pattern}:{kind}:{minute}")
}

/// Set by the first auto-retry sweeper (kept): from then on the failure index feeds the due
/// index. `seeding:<cursor>` while that sweeper puts the failures already indexed in (an
/// `HSCAN` of the index's job → group hash, resumed by the next leader), then `on`.
pub const AUTO_ON: &str = "retryguard:auto:on";

/// The auto-retry sweeper's lease (a string holding the holder's token).
pub const AUTO_LEASE: &str = "retryguard:auto:lease";
/// Failed jobs by when the sweeper is to look at them (ZSET, score = epoch ms). The failure
/// index adds each job it first sees; the sweeper moves it on after each decision.
pub const AUTO_DUE: &str = "retryguard:auto:due";
/// Failed jobs the sweeper has nothing to do for until the bindings change (ZSET, score =
/// when parked): their binding has no `auto_retry`, or their policy holds them for good.
pub const AUTO_PARKED: &str = "retryguard:auto:parked";
/// The sweeper leader's last report (hash: `instance`, `updated_ms`, `lag_p50_ms`,
/// `lag_p99_ms`, `swept`, `retried`).
pub const AUTO_STATUS: &str = "retryguard:auto:status";
