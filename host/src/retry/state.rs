//! retryguard's own per-job retry state and audit outbox, in Redis (never in RQ's `meta`).

use crate::redis_link::Link;

use crate::audit::encoding::RECORD_FIELD;
use crate::redis_error::RedisError;

/// What retryguard remembers about one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Retries retryguard has made for this incarnation of the job.
    pub attempts: u32,
    pub first_failed_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
}

const STATE_FIELDS: [&str; 4] = [
    "created_at",
    "attempts",
    "first_failed_ms",
    "last_attempt_ms",
];

/// Reads the retry state of each `(job id, created_at)`, in one round trip. State written
/// for another incarnation of the id counts as none.
pub async fn read_states(
    conn: &mut Link,
    jobs: &[(&str, &str)],
) -> Result<Vec<RetryState>, RedisError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (id, _) in jobs {
        pipe.cmd("HMGET")
            .arg(crate::keyspace::job_state(id))
            .arg(&STATE_FIELDS[..]);
    }
    let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await.map_err(RedisError::from)?;
    Ok(jobs
        .iter()
        .zip(rows)
        .map(|((_, created_at), row)| {
            let field = |i: usize| row.get(i).cloned().flatten();
            if field(0).as_deref() != Some(*created_at) {
                return RetryState::default();
            }
            RetryState {
                attempts: field(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                first_failed_ms: field(2).and_then(|v| v.parse().ok()),
                last_attempt_ms: field(3).and_then(|v| v.parse().ok()),
            }
        })
        .collect())
}

/// A decision that changes nothing in the queue: recorded in the job's state (unless a dry
/// run) and in the audit outbox, in one MULTI so neither is written without the other.
#[derive(Debug, Clone)]
pub struct Recorded<'a> {
    pub job_id: &'a str,
    pub created_at: &'a str,
    pub decision: &'a str,
    pub policy_digest: &'a str,
    pub first_failed_ms: u64,
    pub state_ttl_seconds: u64,
    pub dry_run: bool,
    pub audit: crate::audit::NewRecord,
}

/// Writes a batch of decisions and their audit records.
pub async fn record_decisions(conn: &mut Link, batch: &[Recorded<'_>]) -> Result<(), RedisError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for r in batch {
        if !r.dry_run {
            let key = crate::keyspace::job_state(r.job_id);
            // A state of another incarnation is replaced, never mixed.
            pipe.cmd("EVAL")
                .arg(RECORD_STATE_LUA)
                .arg(1)
                .arg(&key)
                .arg(r.created_at)
                .arg(r.decision)
                .arg(r.policy_digest)
                .arg(r.first_failed_ms)
                .arg(r.state_ttl_seconds.max(1))
                .ignore();
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(crate::keyspace::AUDIT_OUTBOX).arg("*");
        cmd.arg(RECORD_FIELD).arg(r.audit.encoded());
        pipe.add_command(cmd).ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(RedisError::from)
}

const RECORD_STATE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'created_at') ~= ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'created_at', ARGV[1], 'last_decision', ARGV[2], 'policy_digest', ARGV[3])
redis.call('HSETNX', KEYS[1], 'first_failed_ms', ARGV[4])
redis.call('HSETNX', KEYS[1], 'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"#;

/// Stores texts that audit records name by sha256 (tracebacks) until the audit writer
/// moves them to `_blobs/`. Called before the records are written, so a record never
/// names a text that is nowhere.
pub async fn stash_blobs(conn: &mut Link, texts: &[&str]) -> Result<(), RedisError> {
    use sha2::{Digest as _, Sha256};
    let mut seen = std::collections::HashSet::new();
    let mut pipe = redis::pipe();
    for text in texts {
        let sha = hex::encode(Sha256::digest(text.as_bytes()));
        if seen.insert(sha.clone()) {
            pipe.cmd("HSETNX")
                .arg(crate::keyspace::AUDIT_BLOBS)
                .arg(sha)
                .arg(*text)
                .ignore();
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    pipe.query_async::<()>(conn).await.map_err(RedisError::from)
}

/// Appends free-standing audit records (operation started/finished).
pub async fn append_audit(
    conn: &mut Link,
    record: &crate::audit::NewRecord,
) -> Result<(), RedisError> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(crate::keyspace::AUDIT_OUTBOX).arg("*");
    cmd.arg(RECORD_FIELD).arg(record.encoded());
    cmd.query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(RedisError::from)
}

/// Appends several free-standing audit records in one round trip.
pub async fn append_audits(
    conn: &mut Link,
    records: &[crate::audit::NewRecord],
) -> Result<(), RedisError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for record in records {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(crate::keyspace::AUDIT_OUTBOX).arg("*");
        cmd.arg(RECORD_FIELD).arg(record.encoded());
        pipe.add_command(cmd).ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(RedisError::from)
}

/// Counts of the outbox (for stats until the audit writer exists).
pub async fn outbox_len(conn: &mut Link) -> Result<u64, RedisError> {
    redis::cmd("XLEN")
        .arg(crate::keyspace::AUDIT_OUTBOX)
        .query_async(conn)
        .await
        .map_err(RedisError::from)
}
