//! The RQ 2.x adapter (docs/rq-layout.md has the data layout and its traps).
//!
//! Reads are pipelined (one round trip per batch of jobs) and decode only what they need;
//! the requeue is one Lua script per job (`rq/lua/requeue.lua`), pipelined per batch.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};

use super::{FailedJob, JobRef, QueueBackend, QueueCounts, QueueError, Requeue, RequeueResult};
use crate::queue::rq::decode::{exc_info, exc_string, job_type_from_data, parse_rq_time};

pub mod decode;
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod status;
pub use status::RedisStatus;

pub use keys::RqKeys;

/// The requeue script, loaded once per connection (and again after `NOSCRIPT`).
const REQUEUE_LUA: &str = include_str!("rq/lua/requeue.lua");

/// How many results-stream entries are read to find the newest failure.
const RESULTS_LOOKBACK: usize = 8;

/// Timeouts on every Redis call: Redis down is a clear error, never a hang.
#[derive(Debug, Clone, Copy)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
        }
    }
}

/// The RQ 2.x backend over one auto-reconnecting Redis connection.
#[derive(Clone)]
pub struct RqBackend {
    conn: ConnectionManager,
    requeue: redis::Script,
    decoded: Arc<DecodeCache>,
}

impl std::fmt::Debug for RqBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RqBackend").finish_non_exhaustive()
    }
}

impl RqBackend {
    /// Connects to `url` and checks that the data there is RQ 2.x.
    pub async fn connect(url: &str, timeouts: RedisTimeouts) -> Result<Self, QueueError> {
        let client = redis::Client::open(url).map_err(|e| QueueError::Redis(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            timeouts.connect + timeouts.response,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| QueueError::Unavailable(format!("connecting to {url} timed out")))?
        .map_err(redis_error)?;
        let backend = Self {
            conn,
            requeue: redis::Script::new(REQUEUE_LUA),
            decoded: Arc::default(),
        };
        backend.refuse_unsupported_layouts().await?;
        // Loaded up front, so the first batch is not sent twice (NOSCRIPT, then again).
        backend.load_script().await?;
        Ok(backend)
    }

    /// The connection, for retryguard's own keys (retry state, audit outbox).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// RQ 3.x makes the key prefix configurable and adds a rate limiter (keys
    /// `rq:rl:<key>`, `…:allowed`, `…:rate_limited`; checked against rq 3.0.0) that a raw push
    /// would bypass: refuse its data clearly until it is supported. The requeue script also
    /// refuses any job hash that carries a `rate_limit_key`.
    async fn refuse_unsupported_layouts(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("rq:rl:*")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if let Some(key) = found.first() {
                return Err(QueueError::Unsupported(format!(
                    "this Redis holds RQ 3.x rate-limiter keys ({key}); retryguard supports RQ 2.x and a raw requeue would bypass 3.x rate limits"
                )));
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The first failed registry (by queue name) that holds `id`, and its score.
    async fn find_in_failed_registries(
        &self,
        id: &str,
    ) -> Result<Option<(String, f64)>, QueueError> {
        let queues = self.failed_queues().await?;
        if queues.is_empty() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.cmd("ZSCORE").arg(RqKeys::failed(q)).arg(id);
        }
        let scores: Vec<redis::RedisResult<Option<f64>>> = pipe
            .ignore_errors()
            .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
            .await
            .map_err(redis_error)?
            .into_iter()
            // A registry key of another type holds no job.
            .map(|reply| reply.and_then(|v| Ok(redis::from_redis_value(v)?)))
            .collect();
        for (queue, score) in queues.into_iter().zip(scores) {
            match score {
                Ok(Some(score)) => return Ok(Some((queue, score))),
                Ok(None) => {}
                Err(e) if is_wrongtype(&e) => {}
                Err(e) => return Err(redis_error(e)),
            }
        }
        Ok(None)
    }

    async fn load_script(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        self.requeue
            .load_async(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

/// Maps a Redis error: connection trouble is `Unavailable` (the outcome of a write in flight
/// is unknown), anything else `Redis`.
pub(crate) fn redis_error(e: RedisError) -> QueueError {
    crate::redis_error::RedisError::from(e).into()
}

const JOB_FIELDS: [&str; 9] = [
    "status",
    "origin",
    "data",
    "description",
    "created_at",
    "ended_at",
    "exc_info",
    "retries_left",
    "failure_ttl",
];

impl QueueBackend for RqBackend {
    async fn failed_queues(&self) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = Vec::new();
        let registered: Vec<String> = redis::cmd("SMEMBERS")
            .arg(RqKeys::QUEUES)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        names.extend(registered.iter().filter_map(|k| RqKeys::queue_name(k)));
        // A queue may have been removed from rq:queues while its failed registry remains.
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(RqKeys::FAILED_PATTERN)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            names.extend(found.iter().filter_map(|k| RqKeys::failed_queue_name(k)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn failed_page(
        &self,
        queue: &str,
        after: Option<&JobRef>,
        limit: usize,
    ) -> Result<Vec<JobRef>, QueueError> {
        let mut conn = self.conn.clone();
        let key = RqKeys::failed(queue);
        // Members with the cursor's score that sort after its id, then higher scores.
        let mut refs = Vec::with_capacity(limit);
        let (min, skip_until) = match after {
            Some(c) => (format!("{}", c.score), Some(c)),
            None => ("-inf".to_string(), None),
        };
        let mut offset = 0usize;
        while refs.len() < limit {
            let batch = limit.max(100);
            let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(&min)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(offset)
                .arg(batch)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let exhausted = found.len() < batch;
            offset += found.len();
            for (id, score) in found {
                if let Some(c) = skip_until
                    && score == c.score
                    && id.as_str() <= c.id.as_str()
                {
                    continue;
                }
                refs.push(JobRef {
                    queue: queue.to_string(),
                    id,
                    score,
                });
                if refs.len() == limit {
                    break;
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(refs)
    }

    async fn read_jobs(&self, refs: &[JobRef]) -> Result<Vec<Option<FailedJob>>, QueueError> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for r in refs {
            pipe.cmd("HMGET")
                .arg(RqKeys::job(&r.id))
                .arg(&JOB_FIELDS[..]);
            pipe.cmd("XREVRANGE")
                .arg(RqKeys::results(&r.id))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(RESULTS_LOOKBACK);
        }
        // Each reply on its own: one job's key of the wrong type (`WRONGTYPE`) is that job's
        // problem, never the whole page's.
        let replies: Vec<redis::RedisResult<Value>> = pipe
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut jobs = Vec::with_capacity(refs.len());
        let mut dangling = Vec::new();
        for (r, pair) in refs.iter().zip(replies.chunks(2)) {
            let job = match pair {
                [hash, results] => job_from_replies(r, hash, results, &self.decoded)?,
                _ => None,
            };
            if job.is_none() {
                dangling.push(r);
            }
            jobs.push(job);
        }
        if !dangling.is_empty() {
            prune_dangling(&mut conn, &dangling).await?;
        }
        Ok(jobs)
    }

    async fn find_failed(&self, id: &str) -> Result<Option<FailedJob>, QueueError> {
        let mut conn = self.conn.clone();
        let origin: redis::RedisResult<Value> = redis::cmd("HGET")
            .arg(RqKeys::job(id))
            .arg("origin")
            .query_async(&mut conn)
            .await;
        let origin = match origin {
            Ok(Value::Nil) => return Ok(None),
            Ok(v) => bulk(&v)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string),
            // The job key is not a hash: it cannot say which queue the job failed on.
            Err(e) if is_wrongtype(&e) => None,
            Err(e) => return Err(redis_error(e)),
        };
        let found = match origin {
            Some(queue) => {
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(RqKeys::failed(&queue))
                    .arg(id)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                score.map(|score| (queue, score))
            }
            // Without an origin that names a queue, the failed registries are asked.
            None => self.find_in_failed_registries(id).await?,
        };
        let Some((queue, score)) = found else {
            return Ok(None);
        };
        let r = JobRef {
            queue,
            id: id.to_string(),
            score,
        };
        Ok(self.read_jobs(&[r]).await?.pop().flatten())
    }

    async fn snapshot(&self, queue: &str, key: &str, ttl_seconds: u64) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let (size, _): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("ZRANGESTORE")
            .arg(key)
            .arg(RqKeys::failed(queue))
            .arg(0)
            .arg(-1)
            .cmd("EXPIRE")
            .arg(key)
            .arg(ttl_seconds.max(1))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(size)
    }

    async fn snapshot_page(
        &self,
        queue: &str,
        key: &str,
        start: u64,
        count: u64,
    ) -> Result<Vec<JobRef>, QueueError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(start)
            .arg(start + count - 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(found
            .into_iter()
            .map(|(id, score)| JobRef {
                queue: queue.to_string(),
                id,
                score,
            })
            .collect())
    }

    async fn requeue(&self, batch: &[Requeue<'_>]) -> Result<Vec<RequeueResult>, QueueError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let build = || {
            let mut pipe = redis::pipe();
            for r in batch {
                pipe.add_command(requeue_command(self.requeue.get_hash(), r));
            }
            pipe
        };
        let mut replies: Vec<redis::RedisResult<Value>> = build()
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if replies.iter().any(is_noscript) {
            // Redis restarted or flushed its scripts: load and re-send. Re-sending is safe:
            // a job this batch already requeued answers `retried` for the same operation.
            self.load_script().await?;
            replies = build()
                .ignore_errors()
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        if replies.len() != batch.len() {
            return Err(QueueError::Redis(format!(
                "{} replies to a pipeline of {} requeues",
                replies.len(),
                batch.len()
            )));
        }
        Ok(requeue_results(replies))
    }

    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        let queues = self.failed_queues().await?;
        if queues.is_empty() {
            // An empty pipeline is a client error in redis-rs.
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.cmd("LLEN").arg(RqKeys::queue(q));
            for registry in ["wip", "failed", "finished", "deferred", "scheduled"] {
                pipe.cmd("ZCARD").arg(RqKeys::registry(registry, q));
            }
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        Ok(queues
            .into_iter()
            .zip(counts.chunks(6))
            .map(|(queue, c)| QueueCounts {
                queue,
                queued: c.first().copied().unwrap_or(0),
                started: c.get(1).copied().unwrap_or(0),
                failed: c.get(2).copied().unwrap_or(0),
                finished: c.get(3).copied().unwrap_or(0),
                deferred: c.get(4).copied().unwrap_or(0),
                scheduled: c.get(5).copied().unwrap_or(0),
            })
            .collect())
    }
}

fn requeue_command(hash: &str, r: &Requeue<'_>) -> redis::Cmd {
    let job = r.job;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(hash)
        .arg(9)
        .arg(RqKeys::failed(&job.queue))
        .arg(RqKeys::job(&job.id))
        .arg(RqKeys::results(&job.id))
        .arg(RqKeys::queue(&job.queue))
        .arg(RqKeys::QUEUES)
        .arg(RqKeys::dependents(&job.id))
        .arg(r.state_key)
        .arg(r.outbox_key)
        .arg(r.watch_key)
        .arg(&job.id)
        .arg(&job.queue)
        .arg(&job.result_id)
        .arg(decode::format_rq_time(r.now_ms))
        .arg(r.operation_id)
        .arg(if r.at_front { "1" } else { "0" })
        .arg(r.state_ttl_seconds.max(1))
        .arg(r.now_ms)
        .arg(&job.created_at)
        .arg(r.first_failed_ms)
        .arg(r.policy_digest)
        .arg(r.reason);
    for (field, value) in r.audit {
        cmd.arg(*field).arg(value);
    }
    cmd
}

/// Whether Redis refused a command because its key holds another type.
fn is_wrongtype(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

fn is_noscript(reply: &redis::RedisResult<Value>) -> bool {
    matches!(reply, Err(e) if e.code() == Some("NOSCRIPT"))
}

/// Each reply of a requeue pipeline parsed on its own: an error reply (or one that makes no
/// sense) is that job's `Unknown`, never the whole batch's.
fn requeue_results(replies: Vec<redis::RedisResult<Value>>) -> Vec<RequeueResult> {
    replies
        .into_iter()
        .map(|reply| {
            reply
                .map_err(redis_error)
                .and_then(parse_requeue_reply)
                .unwrap_or_else(|e| RequeueResult::Unknown { why: e.to_string() })
        })
        .collect()
}

fn parse_requeue_reply(reply: Value) -> Result<RequeueResult, QueueError> {
    let parts: Vec<String> =
        redis::from_redis_value(reply).map_err(|e| QueueError::Redis(e.to_string()))?;
    let detail = parts.get(1).cloned().unwrap_or_default();
    match parts.first().map(String::as_str) {
        Some("retried") => Ok(RequeueResult::Retried {
            attempts: detail.parse().unwrap_or(0),
        }),
        Some("already_requeued") => Ok(RequeueResult::AlreadyRequeued),
        Some("stale_decision") => Ok(RequeueResult::Stale { why: detail }),
        Some("not_found") => Ok(RequeueResult::NotFound),
        other => Err(QueueError::Redis(format!(
            "unexpected reply from the requeue script: {other:?}"
        ))),
    }
}

async fn prune_dangling(conn: &mut ConnectionManager, refs: &[&JobRef]) -> Result<(), QueueError> {
    // Only members whose hash is still missing are removed (checked again atomically).
    const PRUNE: &str = "if redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('ZREM', KEYS[1], ARGV[1]) end return 0";
    let mut pipe = redis::pipe();
    for r in refs {
        pipe.cmd("EVAL")
            .arg(PRUNE)
            .arg(2)
            .arg(RqKeys::failed(&r.queue))
            .arg(RqKeys::job(&r.id))
            .arg(&r.id)
            .ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(redis_error)
}

/// What a failed job's compressed fields decode to: the job's type (from the pickled `data`)
/// and its newest failure (from a results entry's `exc_string`), parsed.
#[derive(Debug)]
struct DecodedFailure {
    job_type: String,
    exc_type: String,
    exc_message: String,
    traceback: String,
}

impl DecodedFailure {
    fn bytes(&self) -> usize {
        self.job_type.len() + self.exc_type.len() + self.exc_message.len() + self.traceback.len()
    }
}

/// Decoded failures of jobs by (job id, `created_at`, newest results entry id, id of the entry
/// that held the failure). A results entry never changes once written and a job's `data` is
/// fixed at creation, so the same key always decodes to the same failure: listing the same
/// failed jobs again skips base64, two inflates and the traceback parser for each (they were
/// most of a listing's CPU time). Bounded by bytes; emptied when it would grow past them.
#[derive(Debug, Default)]
struct DecodeCache {
    inner: std::sync::Mutex<DecodeCacheInner>,
}

type DecodeKey = (String, String, String, String);

#[derive(Debug, Default)]
struct DecodeCacheInner {
    entries: std::collections::HashMap<DecodeKey, Arc<DecodedFailure>>,
    bytes: usize,
}

impl DecodeCache {
    /// The most decoded text kept (tracebacks are capped at 1 MiB each, so a byte budget, not
    /// a count, bounds the memory).
    const MAX_BYTES: usize = 64 << 20;

    fn get(&self, key: &DecodeKey) -> Option<Arc<DecodedFailure>> {
        self.inner.lock().ok()?.entries.get(key).cloned()
    }

    fn put(&self, key: DecodeKey, value: Arc<DecodedFailure>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let size = value.bytes() + key.0.len() + key.1.len() + key.2.len() + key.3.len();
        if inner.bytes + size > Self::MAX_BYTES {
            inner.entries.clear();
            inner.bytes = 0;
        }
        if size <= Self::MAX_BYTES && inner.entries.insert(key, value).is_none() {
            inner.bytes += size;
        }
    }
}

/// The bytes of a bulk-string reply; `None` for nil or anything else.
fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The id and flat field/value list of each entry of an `XREVRANGE` reply, borrowed.
fn stream_entries(results: &Value) -> Vec<(&[u8], &[Value])> {
    let Value::Array(entries) = results else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(pair) => match pair.as_slice() {
                [id, Value::Array(kv)] => Some((bulk(id)?, kv.as_slice())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A job from its `HMGET` and `XREVRANGE` replies, either of which may be an error. A job
/// key or results key of the wrong type (`WRONGTYPE`) makes the job [`broken`]; any other
/// error is Redis's.
fn job_from_replies(
    r: &JobRef,
    hash: &redis::RedisResult<Value>,
    results: &redis::RedisResult<Value>,
    cache: &DecodeCache,
) -> Result<Option<FailedJob>, QueueError> {
    match (hash, results) {
        (Ok(hash), Ok(results)) => Ok(parse_job_with(r, hash, results, Some(cache))),
        // Nothing of the job can be read: its status is what the failed registry it was
        // found in says (and so a job in no failed registry is `not_found` to a retry,
        // never `already_requeued`).
        (Err(e), _) if is_wrongtype(e) => Ok(Some(broken(
            r,
            None,
            &format!("{} is not a hash", RqKeys::job(&r.id)),
        ))),
        // The hash is readable, the results stream is not: the job's own fields still say
        // what it is (its type picks the policy), its failure is unknown. A hash that is
        // gone is a job that is gone.
        (Ok(hash), Err(e)) if is_wrongtype(e) => Ok(parse_job(r, hash, &Value::Nil).map(|job| {
            broken(
                r,
                Some(job),
                &format!("{} is not a stream", RqKeys::results(&r.id)),
            )
        })),
        (Err(e), _) | (_, Err(e)) => Err(redis_error(e.clone())),
    }
}

/// A failed job retryguard cannot read because one of its keys holds the wrong type: like a
/// failure whose `exc_string` is undecodable, its failure text says why, in parentheses (not
/// a Python exception, so the default policy holds it as `unknown`). Its results entry id is
/// empty, so no decode or classification cache keeps it, and the requeue script refuses it
/// (it checks every key's type first) whatever the decision, forced or not.
fn broken(r: &JobRef, readable: Option<FailedJob>, why: &str) -> FailedJob {
    let mut job = readable.unwrap_or_else(|| FailedJob {
        id: r.id.clone(),
        queue: r.queue.clone(),
        job_type: String::new(),
        status: "failed".to_string(),
        created_at: String::new(),
        failed_at_ms: None,
        exc_type: String::new(),
        exc_message: String::new(),
        traceback: String::new(),
        result_id: String::new(),
        retries_left: None,
        failure_ttl_seconds: None,
    });
    job.exc_type.clear();
    job.exc_message.clear();
    job.result_id.clear();
    job.traceback = format!("(unreadable job: {why}; retryguard never requeues it)");
    job
}

/// Builds a `FailedJob` from the job hash fields (`JOB_FIELDS` order) and the newest
/// results-stream entries. `None` when the hash is gone.
fn parse_job(r: &JobRef, hash: &Value, results: &Value) -> Option<FailedJob> {
    parse_job_with(r, hash, results, None)
}

/// [`parse_job`], reusing and filling `cache` for what has to be decompressed.
fn parse_job_with(
    r: &JobRef,
    hash: &Value,
    results: &Value,
    cache: Option<&DecodeCache>,
) -> Option<FailedJob> {
    let Value::Array(fields) = hash else {
        return None;
    };
    let field = |i: usize| fields.get(i).and_then(bulk);
    let text = |i: usize| {
        field(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    // HMGET of a missing hash gives all nils: the job is gone.
    let status = String::from_utf8_lossy(field(0)?).into_owned();
    let origin = text(1);
    let created_at = text(4);

    let entries = stream_entries(results);
    let result_id = entries
        .first()
        .map(|(id, _)| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_default();
    // The newest entry that recorded a failure, and its `exc_string`.
    let failure_entry = entries.iter().find_map(|(id, kv)| {
        kv.chunks_exact(2)
            .find(|pair| bulk(&pair[0]) == Some(b"exc_string".as_slice()))
            .map(|pair| (*id, bulk(&pair[1]).unwrap_or_default()))
    });
    // Without a results entry (RQ 1.x layout) the failure is in the hash: not cached.
    let key = failure_entry
        .filter(|_| !result_id.is_empty())
        .map(|(id, _)| {
            (
                r.id.clone(),
                created_at.clone(),
                result_id.clone(),
                String::from_utf8_lossy(id).into_owned(),
            )
        });
    let cached = cache.zip(key.as_ref()).and_then(|(c, k)| c.get(k));
    let decoded = match cached {
        Some(d) => d,
        None => {
            let job_type = field(2)
                .and_then(job_type_from_data)
                .unwrap_or_else(|| text(3));
            let traceback = match failure_entry {
                Some((_, v)) => {
                    exc_string(v).unwrap_or_else(|e| format!("(undecodable exc_string: {e})"))
                }
                None => field(6).and_then(|b| exc_info(b).ok()).unwrap_or_default(),
            };
            let (exc_type, exc_message) =
                match retryguard_policy_default::traceback::parse_outermost(&traceback) {
                    Some(p) => (p.exc_type.to_string(), p.message),
                    None => (String::new(), String::new()),
                };
            let d = Arc::new(DecodedFailure {
                job_type,
                exc_type,
                exc_message,
                traceback,
            });
            if let (Some(c), Some(k)) = (cache, key) {
                c.put(k, Arc::clone(&d));
            }
            d
        }
    };
    Some(FailedJob {
        id: r.id.clone(),
        queue: if origin.is_empty() {
            r.queue.clone()
        } else {
            origin
        },
        job_type: decoded.job_type.clone(),
        status,
        created_at,
        // A stopped job has no `ended_at`: its newest results entry's id (epoch ms) is
        // then the only record of when it ended.
        failed_at_ms: parse_rq_time(&text(5)).or_else(|| stream_id_ms(&result_id)),
        exc_type: decoded.exc_type.clone(),
        exc_message: decoded.exc_message.clone(),
        traceback: decoded.traceback.clone(),
        result_id,
        retries_left: text(7).parse().ok(),
        failure_ttl_seconds: text(8).parse().ok(),
    })
}

/// The epoch milliseconds of a stream entry id (`<ms>-<seq>`).
fn stream_id_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> redis::RedisResult<Value> {
        Ok(Value::Array(
            parts
                .iter()
                .map(|p| Value::BulkString(p.as_bytes().to_vec()))
                .collect(),
        ))
    }

    #[test]
    fn one_bad_requeue_reply_is_that_jobs_unknown_only() {
        let error: redis::RedisResult<Value> = Err(RedisError::from(std::io::Error::other(
            "OOM command not allowed when used memory > 'maxmemory'",
        )));
        let results = requeue_results(vec![
            reply(&["retried", "2"]),
            error,
            reply(&["\u{fffd}garbage"]),
            reply(&["stale_decision", "status is \\xff"]),
            reply(&["already_requeued"]),
        ]);
        assert_eq!(results[0], RequeueResult::Retried { attempts: 2 });
        assert!(
            matches!(&results[1], RequeueResult::Unknown { why } if why.contains("OOM")),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(&results[2], RequeueResult::Unknown { .. }),
            "{:?}",
            results[2]
        );
        assert_eq!(
            results[3],
            RequeueResult::Stale {
                why: "status is \\xff".into()
            }
        );
        assert_eq!(results[4], RequeueResult::AlreadyRequeued);
    }
}
