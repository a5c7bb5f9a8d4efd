//! The reconciler: keeps the failure index equal to RQ's failed registries, incrementally.
//!
//! RQ publishes no failure event, so the reconciler watches the registries themselves. One
//! instance at a time does it, under a lease (`keyspace::TRIAGE_LEASE`) whose token fences
//! every write; a standby takes over when the holder's lease lapses. Each pass, per queue:
//!
//! 1. **New failures, fast.** RQ scores a failed job with its expiry time, `now +
//!    failure_ttl`: with one TTL a new failure scores at or above every earlier one. Members
//!    at or above the queue's watermark (its highest finite score indexed) that the index
//!    does not hold are read, fingerprinted and added. Cost: the last second's failures.
//! 2. **A count check.** The registry's live members (`ZCOUNT`: never-expiring ones, and
//!    those not yet expired) against the index's count for the queue. Equal: done.
//! 3. **A full pass, when they differ** (and at most every `full_every`): the registry walked
//!    in chunks for members the index lacks (a shorter TTL, a member missed), and each group's
//!    jobs walked for departures — requeued by `rq requeue`, deleted, expired (hash gone or
//!    not), or failed again since. retryguard's own requeues and deletes take jobs out of the
//!    index in their own atomic step (`lua/forget.lua`), so they never cost a full pass.
//!
//! Every write re-checks the registry atomically, so a job that moves while it is being
//! indexed is never counted wrong. Each new group is classified once by the policy bound to
//! its job type; when the bindings change, every group is classified again (in the
//! background, one group at a time), and its counts move with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::redis_link::Link;
use tokio::sync::watch;

use super::index::{self, INDEX_VERSION};
use crate::clock::now_ms;
use crate::keyspace;
use crate::lease::{Held, Lease};
use crate::queue::rq::{RqBackend, RqKeys};
use crate::redis_error::RedisError;
use crate::retry::RetryService;

mod classify;
mod walk;

/// Jobs read and indexed per step.
const CHUNK: usize = 500;
/// Registry and group members compared per step of a full pass.
const WALK_CHUNK: usize = 2000;
/// Most group fingerprints remembered as existing (a bound on memory, not a correctness need).
const KNOWN_GROUPS_MAX: usize = 100_000;

/// How the reconciler runs.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Pause between passes.
    pub interval: Duration,
    /// The lease's TTL: how soon a standby takes over from a holder that died.
    pub lease_ttl: Duration,
    /// Least time between two full passes of one queue.
    pub full_every: Duration,
    /// How often the whole keyspace is scanned for failed registries of queues `rq:queues`
    /// no longer names. The scan goes a step per pass (`SCAN … COUNT 20000`), so a keyspace
    /// of millions of keys never holds up a pass.
    pub discover_every: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(10),
            full_every: Duration::from_secs(2),
            discover_every: Duration::from_secs(30),
        }
    }
}

/// What this instance's reconciler is doing (for `/readyz` and metrics).
#[derive(Debug, Default)]
pub struct ReconcilerStatus {
    pub holds_lease: AtomicBool,
    pub passes: AtomicU64,
    pub last_pass_ms: AtomicU64,
    pub indexed: AtomicU64,
    pub departed: AtomicU64,
}

/// The reconciler of one instance.
pub struct Reconciler {
    service: Arc<RetryService<RqBackend>>,
    /// The service's backend without its decode cache: each job is read once here.
    backend: RqBackend,
    conn: Link,
    config: ReconcilerConfig,
    lease: Lease,
    status: Arc<ReconcilerStatus>,
    /// Groups known to exist in the index (their hash is not re-checked before an add).
    known_groups: HashSet<String>,
    /// Per queue: the highest finite registry score indexed.
    watermarks: HashMap<String, f64>,
    last_full: HashMap<String, Instant>,
    last_discovery: Option<Instant>,
    discovered: Vec<String>,
    /// The keyspace scan in progress: its cursor and what it found so far.
    scanning: Option<(u64, Vec<String>)>,
    /// The bindings revision the groups were last classified under.
    revision: Option<u64>,
    last_trim: Option<Instant>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("token", &self.lease.token())
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    pub fn new(
        service: Arc<RetryService<RqBackend>>,
        conn: Link,
        config: ReconcilerConfig,
        status: Arc<ReconcilerStatus>,
    ) -> Self {
        let token = format!(
            "reconciler-{}-{}",
            std::process::id(),
            crate::clock::new_operation_id()
        );
        Self {
            backend: service.backend().without_decode_cache(),
            service,
            conn,
            lease: Lease::new(keyspace::TRIAGE_LEASE, token, config.lease_ttl),
            config,
            status,
            known_groups: HashSet::new(),
            watermarks: HashMap::new(),
            last_full: HashMap::new(),
            last_discovery: None,
            discovered: Vec::new(),
            scanning: None,
            revision: None,
            last_trim: None,
        }
    }

    /// Runs passes until `shutdown`, then gives the lease up.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "failure index: a pass failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.lease.release(&mut self.conn).await;
        self.status.holds_lease.store(false, Ordering::Relaxed);
    }

    /// One pass: new failures, departures, classification, bookkeeping.
    pub async fn pass(&mut self) -> Result<(), RedisError> {
        let held = self.lease.ensure(&mut self.conn).await?;
        self.status
            .holds_lease
            .store(held != Held::No, Ordering::Relaxed);
        if held == Held::No {
            return Ok(());
        }
        let started = now_ms();
        if held == Held::Taken {
            // What the last holder knew is in Redis; this instance's memory may be stale.
            self.known_groups.clear();
            self.last_full.clear();
            self.revision = None;
            tracing::info!(holder = %self.lease.token(), "failure index: took the reconciler lease");
        }
        let mut conn = self.conn.clone();
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keyspace::TRIAGE_META)
            .query_async(&mut conn)
            .await?;
        let version_ok = meta.get("version") == Some(&INDEX_VERSION.to_string());
        let rebuild = meta.get("rebuild_requested_ms").cloned();
        let mut built = meta.get("built_ms").is_some_and(|b| !b.is_empty());
        if !version_ok || rebuild.is_some() {
            self.start_over(&mut conn, rebuild.as_deref()).await?;
            built = false;
        } else {
            for (k, v) in &meta {
                if let (Some(q), Ok(score)) = (k.strip_prefix("wm:"), v.parse::<f64>()) {
                    let wm = self.watermarks.entry(q.to_string()).or_insert(score);
                    *wm = wm.max(score);
                }
            }
        }
        let queues = self.queues(&mut conn).await?;
        let mut complete = true;
        for queue in &queues {
            if !self.lease.held() {
                return Ok(());
            }
            complete &= self.reconcile_queue(&mut conn, queue).await?;
        }
        self.reclassify_if_rebound(&mut conn).await?;
        if self
            .last_trim
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            let groups: Vec<String> = redis::cmd("ZRANGE")
                .arg(keyspace::TRIAGE_GROUPS)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            index::trim_hours(&mut conn, &groups, started).await?;
            self.last_trim = Some(Instant::now());
        }
        let finished = now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(keyspace::TRIAGE_META)
            .arg("last_pass_ms")
            .arg(finished)
            .arg("pass_duration_ms")
            .arg(finished.saturating_sub(started))
            .arg("holder")
            .arg(self.lease.token())
            .ignore();
        // Built once every queue had its full pass, the keyspace scan included.
        if complete && !built && self.last_discovery.is_some() {
            pipe.cmd("HSET")
                .arg(keyspace::TRIAGE_META)
                .arg("built_ms")
                .arg(finished)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        self.status.passes.fetch_add(1, Ordering::Relaxed);
        self.status.last_pass_ms.store(finished, Ordering::Relaxed);
        Ok(())
    }

    /// Renews the lease during long work (a first build of 1,000,000 jobs takes minutes);
    /// whether it is still ours.
    async fn keep_lease(&mut self, conn: &mut Link) -> Result<bool, RedisError> {
        let held = self.lease.ensure(conn).await? != Held::No;
        self.status.holds_lease.store(held, Ordering::Relaxed);
        Ok(held)
    }

    /// Empties the index for a rebuild (asked for, or a new layout version).
    async fn start_over(
        &mut self,
        conn: &mut Link,
        requested: Option<&str>,
    ) -> Result<(), RedisError> {
        tracing::info!(
            requested,
            "failure index: building from scratch (version {INDEX_VERSION})"
        );
        index::clear(conn).await?;
        self.known_groups.clear();
        self.watermarks.clear();
        self.last_full.clear();
        self.revision = None;
        redis::cmd("HSET")
            .arg(keyspace::TRIAGE_META)
            .arg("version")
            .arg(INDEX_VERSION)
            .arg("build_started_ms")
            .arg(now_ms())
            .arg("built_ms")
            .arg("")
            .query_async::<()>(conn)
            .await?;
        Ok(())
    }

    /// The queues to reconcile: those `rq:queues` names, those the index knows, and (every
    /// `discover_every`) every failed registry in the keyspace.
    async fn queues(&mut self, conn: &mut Link) -> Result<Vec<String>, RedisError> {
        if self.scanning.is_none()
            && self
                .last_discovery
                .is_none_or(|t| t.elapsed() >= self.config.discover_every)
        {
            self.scanning = Some((0, Vec::new()));
        }
        if let Some((cursor, mut found)) = self.scanning.take() {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(RqKeys::FAILED_PATTERN)
                .arg("COUNT")
                .arg(20_000)
                .query_async(conn)
                .await?;
            found.extend(keys.iter().filter_map(|k| RqKeys::failed_queue_name(k)));
            if next == 0 {
                found.sort();
                found.dedup();
                self.discovered = found;
                self.last_discovery = Some(Instant::now());
            } else {
                self.scanning = Some((next, found));
            }
        }
        let (registered, known): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(RqKeys::QUEUES)
            .cmd("SMEMBERS")
            .arg(keyspace::TRIAGE_QUEUES)
            .query_async(conn)
            .await?;
        let mut queues: Vec<String> = registered
            .iter()
            .filter_map(|k| RqKeys::queue_name(k))
            .chain(known)
            .chain(self.discovered.iter().cloned())
            .collect();
        queues.sort();
        queues.dedup();
        if !queues.is_empty() {
            redis::cmd("SADD")
                .arg(keyspace::TRIAGE_QUEUES)
                .arg(&queues)
                .query_async::<()>(conn)
                .await?;
        }
        Ok(queues)
    }

    /// The fast path, the count check and (when they differ) a full pass of one queue.
    /// Returns whether the index now holds the queue's count.
    async fn reconcile_queue(&mut self, conn: &mut Link, queue: &str) -> Result<bool, RedisError> {
        if self.watermarks.contains_key(queue) {
            self.new_above_watermark(conn, queue).await?;
        }
        let (live, indexed) = self.counts(conn, queue).await?;
        if live == indexed && self.watermarks.contains_key(queue) {
            return Ok(true);
        }
        let due = self
            .last_full
            .get(queue)
            .is_none_or(|t| t.elapsed() >= self.config.full_every);
        if !due {
            return Ok(false);
        }
        self.full_pass(conn, queue).await?;
        self.last_full.insert(queue.to_string(), Instant::now());
        let (live, indexed) = self.counts(conn, queue).await?;
        Ok(live == indexed)
    }

    /// The registry's live members and the index's count of `queue`.
    async fn counts(&self, conn: &mut Link, queue: &str) -> Result<(u64, u64), RedisError> {
        let now_s = now_ms() / 1000;
        let failed = RqKeys::failed(queue);
        let (never, live, counts): (u64, u64, HashMap<String, i64>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&failed)
            .arg("-inf")
            .arg("(0")
            .cmd("ZCOUNT")
            .arg(&failed)
            .arg(now_s)
            .arg("+inf")
            .cmd("HGETALL")
            .arg(keyspace::TRIAGE_COUNTS)
            .query_async(conn)
            .await?;
        let indexed: i64 = counts
            .iter()
            .filter(|(k, _)| k.split_once('\t').is_some_and(|(q, _)| q == queue))
            .map(|(_, n)| *n)
            .sum();
        Ok((never + live, u64::try_from(indexed).unwrap_or(0)))
    }
}
