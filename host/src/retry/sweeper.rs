//! The auto-retry sweeper (docs/auto-retry.md): retries each failed job of a binding with
//! `auto_retry` when its policy's retry time comes, without anyone listing the failed set.
//!
//! - **Due times.** `retryguard:auto:due` (ZSET, score = when to look, ms) holds the failed
//!   jobs to look at. The failure index adds a job the moment it first sees it (due at once);
//!   after each decision the sweeper moves it: to its `retry_at` (plus a per-job jitter of up
//!   to [`SweeperConfig::jitter_ms`]) while it waits (cooldown, open breaker, spent budget),
//!   out when it was requeued or is gone, and to `retryguard:auto:parked` when its binding has
//!   no `auto_retry` or its policy holds it for good. Parked jobs come back (a chunk a turn)
//!   whenever the bindings change and whenever a new sweeper takes the lease.
//! - **One sweeper.** Every instance with `[auto_retry] enabled` runs one; a lease (with a
//!   fencing token, as the audit writer's) lets one work at a time, and a standby takes over
//!   within the lease TTL. Two sweepers at once (a lease lost mid-turn) still requeue nothing
//!   twice: each requeue is the same atomic script with the stale-decision check as any retry.
//! - **Re-evaluation.** At the due time the job is read and judged again by its binding now
//!   (attempts and bindings may have changed), through [`RetryService::act`], the path of a
//!   manual retry: the brakes apply (the budget always does), the actor is `auto` and the
//!   reason names the bindings revision.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::redis_link::Link;
use tokio::sync::watch;

use super::brakes::jitter;
use super::filter::JobFilter;
use super::outcome::Outcome;
use super::service::RetryService;
use super::types::{RetryError, RetryOptions};
use crate::clock::{new_operation_id, now_ms};
use crate::keyspace;
use crate::lease::{Held, Lease};
use crate::queue::QueueBackend;
use crate::redis_error::RedisError;

/// The audit actor of automatic retries.
pub const ACTOR: &str = "auto";

/// Moves looked-at jobs on, each only if its due time is still the one read (a job the
/// failure index re-added meanwhile, failed again, keeps its new entry).
/// ARGV[1] now; then per job (4): id, due score as read, fate (done|park|at), new score.
const MOVE_LUA: &str = r#"
local due, parked = 'retryguard:auto:due', 'retryguard:auto:parked'
for i = 2, #ARGV, 4 do
  local id, read, fate = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local current = redis.call('ZSCORE', due, id)
  if current and tonumber(current) == read then
    if fate == 'at' then
      redis.call('ZADD', due, ARGV[i + 3], id)
    elseif fate == 'park' then
      redis.call('ZREM', due, id)
      redis.call('ZADD', parked, ARGV[1], id)
    else
      redis.call('ZREM', due, id)
    end
  end
end
return 1
"#;

/// Brings up to ARGV[2] parked jobs back, due at ARGV[1]; returns how many.
const UNPARK_LUA: &str = r#"
local ids = redis.call('ZRANGE', 'retryguard:auto:parked', 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZADD', 'retryguard:auto:due', 'NX', ARGV[1], id)
  redis.call('ZREM', 'retryguard:auto:parked', id)
end
return #ids
"#;

static MOVE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(MOVE_LUA));
static UNPARK: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(UNPARK_LUA));

/// The sweeper's settings (`[auto_retry]`).
#[derive(Debug, Clone, Copy)]
pub struct SweeperConfig {
    /// Due jobs looked at per turn.
    pub batch: usize,
    /// The lease's TTL: how soon a standby takes over from a sweeper that died.
    pub lease_ttl: Duration,
    /// Most time between two looks at the due index when nothing is due.
    pub idle: Duration,
    /// Jobs due at the same time are spread over this many ms (each by its id).
    pub jitter_ms: u64,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            lease_ttl: Duration::from_secs(10),
            idle: Duration::from_millis(100),
            jitter_ms: 200,
        }
    }
}

/// What becomes of a looked-at job in the due index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Requeued (its lag, ms), or gone: out of the index.
    Done(Option<u64>),
    /// Looked at again at this time (ms).
    At(u64),
    /// Nothing to do until the bindings change.
    Park,
}

/// Lags kept for the status's percentiles.
const LAGS_KEPT: usize = 10_000;

/// What this instance's sweeper is doing.
#[derive(Debug, Default)]
pub struct SweeperStatus {
    pub leader: AtomicBool,
    pub looked_at: AtomicU64,
    pub requeued: AtomicU64,
    lags: std::sync::Mutex<VecDeque<u64>>,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl SweeperStatus {
    fn add_lags(&self, lags: &[u64]) {
        if let Ok(mut l) = self.lags.lock() {
            for lag in lags {
                if l.len() == LAGS_KEPT {
                    l.pop_front();
                }
                l.push_back(*lag);
            }
        }
    }

    /// The p50 and p99 of the last requeues' lags (ms), when there were any.
    pub fn lag_percentiles(&self) -> Option<(u64, u64)> {
        let mut lags: Vec<u64> = self.lags.lock().ok()?.iter().copied().collect();
        if lags.is_empty() {
            return None;
        }
        lags.sort_unstable();
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

impl<B: QueueBackend> RetryService<B> {
    /// Looks at due jobs `(id, due score)`: each one still failed is judged again by its
    /// binding and, when it has `auto_retry` and everything lets it go, requeued exactly once
    /// (actor `auto`). Returns each job's [`Fate`] in the due index.
    ///
    /// A requeue's lag runs from its retry time, or from its due time when it came due later
    /// (first seen, or parked, after its retry time passed), and never from before `since`:
    /// when this sweeper took over or the bindings last changed (a job opted in just now was
    /// not late before).
    pub async fn sweep(
        &self,
        due: &[(String, f64)],
        jitter_ms: u64,
        since: u64,
    ) -> Result<Vec<Fate>, RetryError> {
        let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
        let refs = self.backend().locate(&ids).await?;
        let located: Vec<_> = refs.into_iter().flatten().collect();
        let revision = self.table().revision;
        let options = RetryOptions {
            retry_only_retryable: true,
            reason: Some(format!("automatic retry (bindings revision {revision})")),
            automatic: true,
            ..RetryOptions::default()
        };
        let filter = JobFilter {
            auto_retry_only: true,
            ..JobFilter::default()
        };
        let present: std::collections::HashSet<String> =
            located.iter().map(|r| r.id.clone()).collect();
        let loaded = self.load(located).await?;
        let outcomes = self
            .act(
                loaded,
                &filter,
                &options,
                ACTOR,
                &new_operation_id(),
                usize::MAX,
            )
            .await?;
        let by_id: HashMap<&str, &super::outcome::JobOutcome> =
            outcomes.iter().map(|o| (o.job_id.as_str(), o)).collect();
        let now = now_ms();
        Ok(due
            .iter()
            .map(|(id, score)| {
                if !present.contains(id) {
                    return Fate::Done(None);
                }
                let Some(o) = by_id.get(id.as_str()) else {
                    // Its binding has no auto_retry.
                    return Fate::Park;
                };
                let due_ms = *score as u64;
                match o.outcome {
                    Outcome::Retried => {
                        // From the policy's retry time, unless the job came due later than
                        // that (first seen, or parked, after its retry time passed).
                        let from = o
                            .retry_at_ms
                            .filter(|at| at + jitter_ms + 1000 >= due_ms)
                            .unwrap_or(due_ms)
                            .max(since);
                        Fate::Done(Some(now.saturating_sub(from)))
                    }
                    Outcome::BlockedCooldown
                    | Outcome::BlockedCircuitOpen
                    | Outcome::BlockedBudget => match o.retry_at_ms {
                        Some(at) => Fate::At(at.max(now) + jitter(id, jitter_ms)),
                        None => Fate::Park,
                    },
                    // Not confirmed: looked at again (a requeue that happened finds the job
                    // gone then).
                    Outcome::Unknown => Fate::At(now + 1000),
                    Outcome::NotFound
                    | Outcome::AlreadyRequeued
                    | Outcome::StaleDecision
                    | Outcome::Deleted => Fate::Done(None),
                    Outcome::BlockedMaxAttempts
                    | Outcome::BlockedNonRetryable
                    | Outcome::BlockedUnknown
                    | Outcome::BlockedByPolicy
                    | Outcome::PolicyError => Fate::Park,
                }
            })
            .collect())
    }
}

/// The sweeper of one instance.
pub struct Sweeper<B> {
    service: Arc<RetryService<B>>,
    conn: Link,
    lease: Lease,
    config: SweeperConfig,
    status: Arc<SweeperStatus>,
    /// The bindings revision parked jobs were last brought back for.
    revision_seen: Option<u64>,
    /// Parked jobs are being brought back, a chunk a turn.
    unparking: bool,
    /// When this sweeper took the lease or saw the bindings change (lags start no earlier).
    since_ms: u64,
}

impl<B> std::fmt::Debug for Sweeper<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Parked jobs brought back per turn.
const UNPARK_CHUNK: usize = 1000;

impl<B: QueueBackend> Sweeper<B> {
    pub fn new(
        service: Arc<RetryService<B>>,
        conn: Link,
        config: SweeperConfig,
        status: Arc<SweeperStatus>,
        instance: &str,
    ) -> Self {
        let token = format!("{instance}-sweeper-{}", new_operation_id());
        Self {
            service,
            conn,
            lease: Lease::new(keyspace::AUTO_LEASE, token, config.lease_ttl),
            config,
            status,
            revision_seen: None,
            unparking: false,
            since_ms: 0,
        }
    }

    /// Sweeps until `shutdown`, then gives the lease up.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.turn().await {
                Ok(pause) => {
                    if let Ok(mut e) = self.status.last_error.lock() {
                        *e = None;
                    }
                    pause
                }
                Err(e) => {
                    tracing::warn!(error = %e, "auto-retry sweep failed; will retry");
                    if let Ok(mut last) = self.status.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                    Duration::from_secs(1)
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.lease.release(&mut self.conn).await;
        self.status.leader.store(false, Ordering::Relaxed);
    }

    /// One turn; returns how long to pause before the next (zero: more is due now).
    pub async fn turn(&mut self) -> Result<Duration, RetryError> {
        match self.lease.ensure(&mut self.conn).await? {
            Held::No => {
                self.status.leader.store(false, Ordering::Relaxed);
                return Ok(self.config.lease_ttl / 5);
            }
            // Whatever the bindings were when the last holder parked jobs, look again.
            Held::Taken => {
                self.unparking = true;
                self.since_ms = now_ms();
            }
            Held::Kept => {}
        }
        self.status.leader.store(true, Ordering::Relaxed);
        self.seed().await?;
        let table = self.service.table();
        if self.revision_seen != Some(table.revision) {
            self.revision_seen = Some(table.revision);
            self.unparking = true;
            self.since_ms = now_ms();
        }
        if self.unparking {
            let moved: usize = UNPARK
                .arg(now_ms())
                .arg(UNPARK_CHUNK)
                .invoke_async(&mut self.conn)
                .await
                .map_err(RedisError::from)?;
            self.unparking = moved == UNPARK_CHUNK;
        }
        if !table.any_auto_retry() {
            // Nothing may be retried automatically: nothing to look at.
            return Ok(self.config.idle);
        }
        let now = now_ms();
        let due: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(keyspace::AUTO_DUE)
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(self.config.batch)
            .query_async(&mut self.conn)
            .await
            .map_err(RedisError::from)?;
        if due.is_empty() {
            return self.pause_until_due(now).await;
        }
        if !self.lease.held() {
            return Ok(Duration::ZERO);
        }
        let fates = self
            .service
            .sweep(&due, self.config.jitter_ms, self.since_ms)
            .await?;
        self.apply(&due, &fates).await?;
        let lags: Vec<u64> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Done(Some(lag)) => Some(*lag),
                _ => None,
            })
            .collect();
        self.status
            .looked_at
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        self.status
            .requeued
            .fetch_add(lags.len() as u64, Ordering::Relaxed);
        self.status.add_lags(&lags);
        let durations: Vec<Duration> = lags.iter().map(|l| Duration::from_millis(*l)).collect();
        crate::metrics::global().sweep(due.len() as u64, &durations);
        Ok(if due.len() == self.config.batch {
            Duration::ZERO
        } else {
            self.config.idle.min(Duration::from_millis(20))
        })
    }

    /// The first sweeper ever turns the failure index's feed on, then puts the failures the
    /// index already holds in the due-time index, one `HSCAN` step a turn (a leader that
    /// takes over resumes from the cursor kept in `retryguard:auto:on`). Before that, an
    /// installation that never uses auto-retry pays nothing for it.
    async fn seed(&mut self) -> Result<(), RedisError> {
        let state: Option<String> = redis::cmd("GET")
            .arg(keyspace::AUTO_ON)
            .query_async(&mut self.conn)
            .await?;
        let cursor = match state.as_deref() {
            Some("on") => return Ok(()),
            Some(s) => s.strip_prefix("seeding:").unwrap_or("0").to_string(),
            None => {
                // Set first: a failure indexed from now on is fed by the index itself.
                let _: () = redis::cmd("SET")
                    .arg(keyspace::AUTO_ON)
                    .arg("seeding:0")
                    .query_async(&mut self.conn)
                    .await?;
                "0".to_string()
            }
        };
        let (next, entries): (String, Vec<String>) = redis::cmd("HSCAN")
            .arg(keyspace::TRIAGE_JOBS)
            .arg(&cursor)
            .arg("COUNT")
            .arg(UNPARK_CHUNK)
            .query_async(&mut self.conn)
            .await?;
        let now = now_ms();
        let mut pipe = redis::pipe();
        // HSCAN answers field, value, field, value…: the fields are the job ids.
        for id in entries.iter().step_by(2) {
            pipe.cmd("ZADD")
                .arg(keyspace::AUTO_DUE)
                .arg("NX")
                .arg(now)
                .arg(id)
                .ignore();
        }
        let state = if next == "0" {
            "on".to_string()
        } else {
            format!("seeding:{next}")
        };
        pipe.cmd("SET").arg(keyspace::AUTO_ON).arg(state).ignore();
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// The pause until the next job is due (at most `idle`).
    async fn pause_until_due(&mut self, now: u64) -> Result<Duration, RetryError> {
        let next: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keyspace::AUTO_DUE)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.conn)
            .await
            .map_err(RedisError::from)?;
        let until = next
            .first()
            .map(|(_, at)| Duration::from_millis((*at as u64).saturating_sub(now)))
            .unwrap_or(self.config.idle);
        Ok(until.clamp(Duration::from_millis(5), self.config.idle))
    }

    async fn apply(&mut self, due: &[(String, f64)], fates: &[Fate]) -> Result<(), RedisError> {
        let mut script = MOVE.prepare_invoke();
        script.arg(now_ms());
        for ((id, score), fate) in due.iter().zip(fates) {
            let (name, at) = match fate {
                Fate::Done(_) => ("done", 0),
                Fate::At(at) => ("at", *at),
                Fate::Park => ("park", 0),
            };
            script
                .arg(id)
                // Due scores are whole milliseconds.
                .arg(*score as u64)
                .arg(name)
                .arg(at);
        }
        script.invoke_async::<i64>(&mut self.conn).await?;
        Ok(())
    }
}

/// What `GET /api/v1/auto-retry` reports.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AutoRetryStatus {
    /// `[auto_retry] enabled` on this instance.
    pub enabled: bool,
    /// The lease holder's token (`<host>-<pid>-…-sweeper-…`), when a sweeper holds it.
    pub leader: Option<String>,
    /// Whether this instance's sweeper is the one working.
    pub this_instance_leads: bool,
    /// Failed jobs waiting for their due time, and of those, due now.
    pub due: u64,
    pub due_now: u64,
    /// The earliest due time (epoch ms).
    pub next_due_ms: Option<u64>,
    /// Jobs with nothing to do until the bindings change.
    pub parked: u64,
    /// Whether any binding has `auto_retry`.
    pub any_binding_opted_in: bool,
    /// The lag (retry time → requeue) of this instance's last requeues, when it made some.
    pub lag_p50_ms: Option<u64>,
    pub lag_p99_ms: Option<u64>,
    /// Jobs this instance's sweeper looked at and requeued since it started.
    pub looked_at: u64,
    pub requeued: u64,
    /// Its last error, if its last turn failed.
    pub last_error: Option<String>,
}

/// Reads the sweeper's state from Redis and this instance's `status`.
pub async fn status(
    conn: &mut Link,
    enabled: bool,
    any_binding_opted_in: bool,
    local: &SweeperStatus,
    now: u64,
) -> Result<AutoRetryStatus, RedisError> {
    let (leader, due, due_now, next, parked): (Option<String>, u64, u64, Vec<(String, f64)>, u64) =
        redis::pipe()
            .cmd("GET")
            .arg(keyspace::AUTO_LEASE)
            .cmd("ZCARD")
            .arg(keyspace::AUTO_DUE)
            .cmd("ZCOUNT")
            .arg(keyspace::AUTO_DUE)
            .arg("-inf")
            .arg(now)
            .cmd("ZRANGE")
            .arg(keyspace::AUTO_DUE)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .cmd("ZCARD")
            .arg(keyspace::AUTO_PARKED)
            .query_async(conn)
            .await?;
    let lags = local.lag_percentiles();
    Ok(AutoRetryStatus {
        enabled,
        leader,
        this_instance_leads: local.leader.load(Ordering::Relaxed),
        due,
        due_now,
        next_due_ms: next.first().map(|(_, at)| *at as u64),
        parked,
        any_binding_opted_in,
        lag_p50_ms: lags.map(|l| l.0),
        lag_p99_ms: lags.map(|l| l.1),
        looked_at: local.looked_at.load(Ordering::Relaxed),
        requeued: local.requeued.load(Ordering::Relaxed),
        last_error: local.last_error.lock().ok().and_then(|e| e.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_percentiles_come_from_the_kept_lags() {
        let s = SweeperStatus::default();
        assert_eq!(s.lag_percentiles(), None);
        s.add_lags(&(1..=100).collect::<Vec<u64>>());
        assert_eq!(s.lag_percentiles(), Some((51, 99)));
        s.add_lags(&vec![7; LAGS_KEPT]);
        assert_eq!(s.lag_percentiles(), Some((7, 7)), "only the last ones kept");
    }
}
