//! The RQ 2.x adapter (docs/rq-layout.md has the data layout and its traps).
//!
//! Reads are pipelined (one round trip per batch of jobs) and decode only what they need;
//! the requeue is one Lua script per job (`rq/lua/requeue.lua`), pipelined per batch.

use std::sync::Arc;
use std::time::Duration;

use crate::redis_link::Link;
use redis::{RedisError, Value};

use super::{
    Delete, DeleteResult, FailedJob, JobRef, QueueBackend, QueueCounts, QueueError, Requeue,
    RequeueResult,
};

pub mod decode;
mod delete;
#[doc(hidden)]
pub mod fuzzing;
mod jobs;
mod keys;
mod requeue;
mod status;

use jobs::{DecodeCache, JOB_FIELDS, bulk, job_from_replies, parse_job, stream_id_ms};
pub use keys::RqKeys;
use requeue::{is_noscript, is_wrongtype, parse_requeue_reply, requeue_command, requeue_results};
pub use status::RedisStatus;

/// The requeue script, loaded once per connection (and again after `NOSCRIPT`), with the
/// failure index's `triage_forget` before it.
const REQUEUE_LUA: &str = concat!(
    include_str!("../triage/lua/forget.lua"),
    include_str!("rq/lua/requeue.lua")
);

/// The delete script (RQ 2.12's `job.delete()`, re-checked and audited), with the failure
/// index's `triage_forget` before it.
const DELETE_LUA: &str = concat!(
    include_str!("../triage/lua/forget.lua"),
    include_str!("rq/lua/delete.lua")
);

/// Removes dangling failed-registry members (their job hash is gone), re-checking each
/// atomically, and takes them out of the failure index. KEYS[1] failed registry, KEYS[2] job
/// hash; ARGV[1] job id, ARGV[2] queue.
const PRUNE_LUA: &str = concat!(
    include_str!("../triage/lua/forget.lua"),
    r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  local removed = redis.call('ZREM', KEYS[1], ARGV[1])
  triage_forget(ARGV[1], ARGV[2])
  return removed
end
return 0
"#
);

/// How many results-stream entries are read to find the newest failure.
const RESULTS_LOOKBACK: usize = 8;

pub use crate::redis_link::RedisTimeouts;

/// The RQ 2.x backend over one auto-reconnecting Redis connection.
#[derive(Clone)]
pub struct RqBackend {
    conn: Link,
    /// Shared: the backend is cloned with every request's state, the script's text is 10 KB.
    requeue: Arc<redis::Script>,
    delete: Arc<redis::Script>,
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
        let config = crate::redis_link::RedisConfig {
            url: url.to_owned(),
            connect_timeout_ms: u64::try_from(timeouts.connect.as_millis()).unwrap_or(u64::MAX),
            response_timeout_ms: u64::try_from(timeouts.response.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        Self::connect_with(&config).await
    }

    /// Connects to the Redis of `[redis]` (TLS, Sentinel and all) and checks that the data
    /// there is RQ 2.x.
    pub async fn connect_with(config: &crate::redis_link::RedisConfig) -> Result<Self, QueueError> {
        let timeouts = config.timeouts();
        let conn = tokio::time::timeout(
            // Sentinels first, then the primary: room for both.
            (timeouts.connect + timeouts.response) * 2,
            Link::connect(config, Duration::ZERO),
        )
        .await
        .map_err(|_| {
            QueueError::Unavailable(format!(
                "connecting to Redis timed out after {} ms",
                (timeouts.connect + timeouts.response).as_millis() * 2
            ))
        })?
        .map_err(redis_error)?;
        let backend = Self {
            conn,
            requeue: Arc::new(redis::Script::new(REQUEUE_LUA)),
            delete: Arc::new(redis::Script::new(DELETE_LUA)),
            decoded: Arc::default(),
        };
        backend.refuse_unsupported_layouts().await?;
        // Before this connection adds any one-field audit entry: no earlier writer may
        // take the audit lease again.
        crate::audit::fence_earlier_writers(&mut backend.conn.clone())
            .await
            .map_err(redis_error)?;
        // Loaded up front, so the first batch is not sent twice (NOSCRIPT, then again).
        backend.load_script().await?;
        Ok(backend)
    }

    /// The same backend without the decode cache: for a reader that reads each job once
    /// (the failure index's reconciler), so it neither fills nor evicts the listings' cache.
    pub fn without_decode_cache(&self) -> Self {
        Self {
            decoded: Arc::new(DecodeCache::none()),
            ..self.clone()
        }
    }

    /// The connection, for retryguard's own keys (retry state, audit outbox).
    pub fn connection(&self) -> Link {
        self.conn.clone()
    }

    /// RQ's `description` of a job: the call with its arguments as RQ wrote it
    /// (`app.tasks.charge(42, currency='EUR')`), at most 64 KiB of it; `None` when the job
    /// has none or Redis cannot answer (the dashboard shows it only when allowed). The
    /// pickled `data` is never unpickled.
    pub async fn job_description(&self, id: &str) -> Option<String> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(RqKeys::job(id))
            .arg("description")
            .query_async(&mut conn)
            .await
            .ok()?;
        let mut raw = raw?;
        raw.truncate(64 << 10);
        Some(String::from_utf8_lossy(&raw).into_owned())
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

    /// Up to `limit` members of the ZSET `key` (ids of `queue`'s failed jobs) ordered by
    /// (score, id), strictly after `after`.
    async fn zset_page(
        &self,
        key: &str,
        queue: &str,
        after: Option<&JobRef>,
        limit: usize,
    ) -> Result<Vec<JobRef>, QueueError> {
        let mut conn = self.conn.clone();
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
                .arg(key)
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

    /// Copies the ZSET `source` into `key`, expiring after `ttl_seconds`; returns its size.
    async fn copy_zset(
        &self,
        source: &str,
        key: &str,
        ttl_seconds: u64,
    ) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let (size, _): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("ZRANGESTORE")
            .arg(key)
            .arg(source)
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

    async fn load_script(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        self.requeue
            .load_async(&mut conn)
            .await
            .map_err(redis_error)?;
        self.delete
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
        self.zset_page(&RqKeys::failed(queue), queue, after, limit)
            .await
    }

    async fn subset_page(
        &self,
        set: &str,
        queue: &str,
        after: Option<&JobRef>,
        limit: usize,
    ) -> Result<Vec<JobRef>, QueueError> {
        self.zset_page(set, queue, after, limit).await
    }

    async fn snapshot_subset(
        &self,
        set: &str,
        key: &str,
        ttl_seconds: u64,
    ) -> Result<u64, QueueError> {
        self.copy_zset(set, key, ttl_seconds).await
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

    async fn locate(&self, ids: &[String]) -> Result<Vec<Option<JobRef>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(RqKeys::job(id)).arg("origin");
        }
        // A job key of another type is that job's answer (not found here), not the batch's.
        let origins: Vec<Option<String>> = pipe
            .ignore_errors()
            .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
            .await
            .map_err(redis_error)?
            .into_iter()
            .map(|v| {
                redis::from_redis_value::<Option<String>>(v.ok()?)
                    .ok()
                    .flatten()
            })
            .collect();
        let mut pipe = redis::pipe();
        for (id, origin) in ids.iter().zip(&origins) {
            let queue = origin.as_deref().unwrap_or_default();
            pipe.cmd("ZSCORE").arg(RqKeys::failed(queue)).arg(id);
        }
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        Ok(ids
            .iter()
            .zip(origins)
            .zip(scores)
            .map(|((id, origin), score)| {
                let queue = origin?;
                Some(JobRef {
                    queue,
                    id: id.clone(),
                    score: score?,
                })
            })
            .collect())
    }

    async fn snapshot(&self, queue: &str, key: &str, ttl_seconds: u64) -> Result<u64, QueueError> {
        self.copy_zset(&RqKeys::failed(queue), key, ttl_seconds)
            .await
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
        // With `[redis] wait_replicas`, a WAIT closes the pipeline: on the same connection, so
        // it covers these requeues (a WAIT on a fresh connection would cover nothing).
        let replication = conn.replication();
        let build = || {
            let mut pipe = redis::pipe();
            for r in batch {
                pipe.add_command(requeue_command(self.requeue.get_hash(), r));
            }
            if let Some(r) = replication {
                pipe.cmd("WAIT").arg(r.replicas).arg(r.timeout_ms);
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
        if let Some(r) = replication {
            let acked = replies.pop();
            check_replicated(r, acked)?;
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

    async fn delete(&self, batch: &[Delete<'_>]) -> Result<Vec<DeleteResult>, QueueError> {
        self.delete_batch(batch).await
    }

    async fn counts(&self, queues: &[String]) -> Result<Vec<QueueCounts>, QueueError> {
        if queues.is_empty() {
            // An empty pipeline is a client error in redis-rs.
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("LLEN").arg(RqKeys::queue(q));
            for registry in ["wip", "failed", "finished", "deferred", "scheduled"] {
                pipe.cmd("ZCARD").arg(RqKeys::registry(registry, q));
            }
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        Ok(queues
            .iter()
            .zip(counts.chunks(6))
            .map(|(queue, c)| QueueCounts {
                queue: queue.clone(),
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

/// The WAIT that closed a requeue pipeline: fewer replicas than asked is `Unavailable`, as a
/// Redis that stopped answering mid-batch is. The requeues stand on the primary but could
/// vanish in a failover; the caller's retry of the batch is safe (a requeued job answers
/// `retried` for the same operation), and docs/operations.md says what window remains.
fn check_replicated(
    r: crate::redis_link::Replication,
    acked: Option<redis::RedisResult<Value>>,
) -> Result<(), QueueError> {
    let got = match acked {
        Some(Ok(Value::Int(n))) => n,
        Some(Ok(other)) => {
            return Err(QueueError::Redis(format!("WAIT answered {other:?}")));
        }
        Some(Err(e)) => return Err(redis_error(e)),
        None => return Err(QueueError::Redis("no reply to WAIT".into())),
    };
    if got < i64::from(r.replicas) {
        crate::metrics::global().requeue_unreplicated();
        return Err(QueueError::Unavailable(format!(
            "the requeue is on the Redis primary but {got} of {} replicas acknowledged it within \
             {} ms ([redis] wait_replicas): not confirmed, a failover now could undo it",
            r.replicas, r.timeout_ms
        )));
    }
    Ok(())
}

async fn prune_dangling(conn: &mut Link, refs: &[&JobRef]) -> Result<(), QueueError> {
    // Only members whose hash is still missing are removed (checked again atomically).
    let mut pipe = redis::pipe();
    for r in refs {
        pipe.cmd("EVAL")
            .arg(PRUNE_LUA)
            .arg(2)
            .arg(RqKeys::failed(&r.queue))
            .arg(RqKeys::job(&r.id))
            .arg(&r.id)
            .arg(&r.queue)
            .ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(redis_error)
}
