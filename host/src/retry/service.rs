//! The retry service: list failed jobs with their classification and decision, and retry
//! one or many, exactly once. No HTTP types here: the API and the CLI call these functions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::redis_link::Link;

use super::brakes;
use super::evaluate::{
    ClassificationCache, Evaluated, check_options, decided, enforce, evaluate_one, not_found,
    split_for_cores,
};
use super::filter::JobFilter;
use super::outcome::{JobOutcome, Outcome};
use super::records::{self, Context};
use super::requeue::state_ttl;
use super::state::{self, Recorded, RetryState};
use super::types::{JobView, Page, Progress, RetryError, RetryOptions, ServiceConfig, Summary};
use crate::brake;
use crate::clock::{new_operation_id, now_ms};
use crate::keyspace;
use crate::policy::{Params, Policy, PolicyEngine};
use crate::queue::rq::RqKeys;
use crate::queue::{FailedJob, JobRef, QueueBackend};
use crate::registry::{Registry, Table};

/// Most jobs one listing reads (a filter that matches few of many jobs ends its page early).
pub const MAX_SCAN: usize = 10_000;

/// Jobs read for one batch, not yet evaluated.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) refs: Vec<JobRef>,
    pub(super) jobs: Vec<Option<FailedJob>>,
    pub(super) states: Vec<RetryState>,
}

/// The retry service over one queue backend and the policy engine.
pub struct RetryService<B> {
    backend: B,
    pub(super) conn: Link,
    engine: Arc<PolicyEngine>,
    /// Which policy judges which job type.
    policies: Policies,
    pub(super) config: ServiceConfig,
    cache: Arc<ClassificationCache>,
    /// Queues found by the last discovery, and when (see `listed_queues`).
    queues: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
    /// Turns of listings (`ServiceConfig::max_concurrent_listings`).
    listings: tokio::sync::Semaphore,
}

impl<B> std::fmt::Debug for RetryService<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryService")
            .field("bindings_revision", &self.policies.table().revision)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where the service's policies come from: one policy for every job type, or the live
/// bindings of the policy registry.
#[derive(Debug, Clone)]
enum Policies {
    Fixed(Arc<Table>),
    Registry(Arc<Registry>),
}

impl Policies {
    /// The table one decision uses from start to end.
    fn table(&self) -> Arc<Table> {
        match self {
            Self::Fixed(t) => Arc::clone(t),
            Self::Registry(r) => r.table(),
        }
    }
}

impl<B: QueueBackend> RetryService<B> {
    /// A service where `policy` with `params` judges every job type.
    pub fn new(
        backend: B,
        conn: Link,
        engine: Arc<PolicyEngine>,
        policy: Arc<Policy>,
        params: Params,
        config: ServiceConfig,
    ) -> Self {
        Self {
            backend,
            conn,
            engine,
            policies: Policies::Fixed(Arc::new(Table::single(policy, params))),
            cache: Arc::new(ClassificationCache::default()),
            queues: std::sync::Mutex::new(None),
            listings: tokio::sync::Semaphore::new(config.max_concurrent_listings.max(1)),
            config,
        }
    }

    /// Judges each job type by the registry's live bindings (`retryguard serve`).
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.policies = Policies::Registry(registry);
        self
    }

    /// The same service with `brakes` on its one binding (a service on a fixed policy:
    /// tests and benchmarks of the brakes without a registry).
    pub fn with_brakes(mut self, brakes: brake::Brakes) -> Self {
        if let Policies::Fixed(t) = &self.policies {
            let b = t.default_binding();
            self.policies = Policies::Fixed(Arc::new(Table::single_with(
                Arc::clone(&b.active.policy),
                b.active.params.clone(),
                brakes,
            )));
        }
        self
    }

    /// The policy registry, when the service runs on one.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        match &self.policies {
            Policies::Registry(r) => Some(r),
            Policies::Fixed(_) => None,
        }
    }

    /// The bindings table decisions use now.
    pub fn table(&self) -> Arc<Table> {
        self.policies.table()
    }

    /// The classification cache (for stats and tests).
    pub fn cache(&self) -> &Arc<ClassificationCache> {
        &self.cache
    }

    /// The policy engine the service evaluates with.
    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }

    /// Reads the page of `queue`'s failed jobs after `after` and evaluates each present one
    /// by its binding (no shadows), for analyses over every failed job (replay). Returns the
    /// evaluated jobs and the page's last ref: `None` once the queue is read to its end.
    pub async fn evaluate_page(
        &self,
        queue: &str,
        after: Option<&JobRef>,
        filter: &JobFilter,
        now: u64,
    ) -> Result<(Vec<Evaluated>, Option<JobRef>), RetryError> {
        let refs = self
            .backend
            .failed_page(queue, after, self.config.batch_size)
            .await?;
        let last = refs.last().cloned();
        if refs.is_empty() {
            return Ok((Vec::new(), None));
        }
        let (jobs, states) = self.read_with_state(&refs).await?;
        let present: Vec<_> = jobs
            .into_iter()
            .zip(states)
            .filter_map(|(j, s)| j.map(|j| (j, s)))
            .collect();
        let evaluated = self.evaluate_jobs(present, filter, now, false).await?;
        Ok((evaluated.into_iter().flatten().collect(), last))
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Lists failed jobs matching `filter`, ordered by queue then (score, id), after `cursor`.
    /// Reads at most `MAX_SCAN` jobs: past them the page ends early, its `next_cursor` at
    /// the last job read (a selective filter over many jobs is read over several pages).
    pub async fn list(
        &self,
        filter: &JobFilter,
        cursor: Option<JobRef>,
        limit: usize,
    ) -> Result<Page, RetryError> {
        let _turn = self.listings.acquire().await;
        let mut queues = match &filter.group {
            Some(fp) => self.group_queues(fp).await?,
            None => self.listed_queues().await?,
        };
        if let Some(q) = &filter.queue {
            queues.retain(|name| name == q);
        }
        if let Some(c) = &cursor {
            queues.retain(|name| name.as_str() >= c.queue.as_str());
        }
        let now = now_ms();
        // One job more than asked tells whether there is a next page.
        let mut found: Vec<(JobRef, JobView)> = Vec::new();
        let mut scanned = 0usize;
        let mut last_read: Option<JobRef> = None;
        'queues: for queue in queues {
            let set = filter
                .group
                .as_ref()
                .map(|fp| keyspace::triage_group_jobs(fp, &queue));
            let mut after = cursor.clone().filter(|c| c.queue == queue);
            loop {
                if scanned >= MAX_SCAN {
                    break 'queues;
                }
                let batch = self.config.batch_size.min(limit + 1 - found.len()).max(1);
                let refs = match &set {
                    Some(set) => {
                        self.backend
                            .subset_page(set, &queue, after.as_ref(), batch)
                            .await?
                    }
                    None => {
                        self.backend
                            .failed_page(&queue, after.as_ref(), batch)
                            .await?
                    }
                };
                if refs.is_empty() {
                    break;
                }
                scanned += refs.len();
                after = refs.last().cloned();
                let views = self.evaluate_refs(&refs, filter, now).await?;
                for (r, view) in refs.into_iter().zip(views) {
                    last_read = Some(r.clone());
                    if let Some(view) = view {
                        found.push((r, view));
                        if found.len() > limit {
                            break 'queues;
                        }
                    }
                }
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let scan_limited = !more && scanned >= MAX_SCAN;
        let next_cursor = if more {
            found.last().map(|(r, _)| r.clone())
        } else if scan_limited {
            last_read
        } else {
            None
        };
        let jobs = found.into_iter().map(|(_, view)| view).collect();
        Ok(Page {
            jobs,
            next_cursor,
            scanned: scanned as u64,
            scan_limited,
        })
    }

    /// The queues with failed jobs, for listings and retry-alls: the queues the failure
    /// index knows (its reconciler scans the keyspace for failed registries in the
    /// background, a step per pass) and those `rq:queues` names. Before any reconciler has
    /// run, the keyspace is scanned here, and that answer is reused for a few seconds.
    pub(super) async fn listed_queues(&self) -> Result<Vec<String>, RetryError> {
        const FRESH_FOR: Duration = Duration::from_secs(5);
        let mut conn = self.conn.clone();
        let (known, registered): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(keyspace::TRIAGE_QUEUES)
            .cmd("SMEMBERS")
            .arg(RqKeys::QUEUES)
            .query_async(&mut conn)
            .await
            // Reading the queues is the queue's read, as the keyspace scan it replaces was:
            // Redis down is `QueueError::Unavailable`, whichever way the queues are found.
            .map_err(|e| crate::queue::QueueError::from(crate::redis_error::RedisError::from(e)))?;
        if !known.is_empty() {
            let mut queues: Vec<String> = known
                .into_iter()
                .chain(registered.iter().filter_map(|k| RqKeys::queue_name(k)))
                .collect();
            queues.sort();
            queues.dedup();
            return Ok(queues);
        }
        if let Ok(cached) = self.queues.lock()
            && let Some((at, queues)) = cached.as_ref()
            && at.elapsed() < FRESH_FOR
            // Nothing cached means nothing to read: ask Redis, so a down Redis is noticed.
            && !queues.is_empty()
        {
            return Ok(queues.clone());
        }
        let queues = self.backend.failed_queues().await?;
        if let Ok(mut cached) = self.queues.lock() {
            *cached = Some((std::time::Instant::now(), queues.clone()));
        }
        Ok(queues)
    }

    /// One failed job, with what its policy says now.
    pub async fn get(&self, id: &str) -> Result<Option<JobView>, RetryError> {
        let _turn = self.listings.acquire().await;
        let Some(job) = self.backend.find_failed(id).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let states = state::read_states(&mut conn, &[(&job.id, &job.created_at)]).await?;
        let state = states.into_iter().next().unwrap_or_default();
        let views = self
            .evaluate_jobs(vec![(job, state)], &JobFilter::default(), now_ms(), false)
            .await?;
        Ok(views.into_iter().next().flatten().map(|e| e.view))
    }

    /// Reads and evaluates a page of refs; `None` for jobs gone or filtered out.
    async fn evaluate_refs(
        &self,
        refs: &[JobRef],
        filter: &JobFilter,
        now: u64,
    ) -> Result<Vec<Option<JobView>>, RetryError> {
        let (jobs, states) = self.read_with_state(refs).await?;
        let pairs: Vec<_> = jobs
            .into_iter()
            .zip(states)
            .map(|(job, state)| job.map(|j| (j, state)))
            .collect();
        let mut out = Vec::with_capacity(pairs.len());
        let present: Vec<_> = pairs.iter().flatten().cloned().collect();
        let mut evaluated = self
            .evaluate_jobs(present, filter, now, false)
            .await?
            .into_iter();
        for p in pairs {
            out.push(match p {
                Some(_) => evaluated.next().flatten().map(|e| e.view),
                None => None,
            });
        }
        Ok(out)
    }

    async fn read_with_state(
        &self,
        refs: &[JobRef],
    ) -> Result<(Vec<Option<FailedJob>>, Vec<RetryState>), RetryError> {
        let jobs = self.backend.read_jobs(refs).await?;
        let keys: Vec<(&str, &str)> = jobs
            .iter()
            .map(|j| match j {
                Some(j) => (j.id.as_str(), j.created_at.as_str()),
                None => ("", "\u{0}none"),
            })
            .collect();
        let mut conn = self.conn.clone();
        let states = state::read_states(&mut conn, &keys).await?;
        Ok((jobs, states))
    }

    /// Evaluates jobs on the blocking pool (policies are CPU work), split over up to one
    /// task per core; applies the filter. The order of `jobs` is kept.
    pub(super) async fn evaluate_jobs(
        &self,
        jobs: Vec<(FailedJob, RetryState)>,
        filter: &JobFilter,
        now: u64,
        shadows: bool,
    ) -> Result<Vec<Option<Evaluated>>, RetryError> {
        // One table for the whole batch: no decision mixes two bindings revisions.
        let table = self.policies.table();
        // And one reading of the brakes.
        let brakes =
            Arc::new(brake::state::snapshot(&mut self.conn.clone(), table.budgets(), now).await?);
        let chunks = split_for_cores(jobs);
        let mut tasks = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let engine = Arc::clone(&self.engine);
            let table = Arc::clone(&table);
            let filter = filter.clone();
            let cache = Arc::clone(&self.cache);
            let brakes = Arc::clone(&brakes);
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|(job, state)| {
                        evaluate_one(
                            &engine, &cache, &table, &filter, job, &state, now, shadows, &brakes,
                        )
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut evaluated = Vec::new();
        for task in tasks {
            evaluated.extend(task.await.map_err(|e| RetryError::Engine(e.to_string()))?);
        }
        Ok(evaluated)
    }

    /// Retries one job.
    pub async fn retry(
        &self,
        job_id: &str,
        options: &RetryOptions,
        actor: &str,
    ) -> Result<JobOutcome, RetryError> {
        check_options(options)?;
        let operation_id = new_operation_id();
        let Some(job) = self.backend.find_failed(job_id).await? else {
            let outcome = self.not_failed(job_id, options).await?;
            let mut conn = self.conn.clone();
            let cx = Context {
                actor,
                options,
                operation_id: &operation_id,
                now_ms: now_ms(),
            };
            let record = records::job_record(&outcome, cx, None, None);
            state::append_audit(&mut conn, &record).await?;
            crate::metrics::global().retry_outcome(outcome.outcome.as_str(), outcome.dry_run);
            return Ok(outcome);
        };
        let r = JobRef {
            queue: job.queue.clone(),
            id: job.id.clone(),
            score: 0.0,
        };
        let loaded = self.load(vec![r]).await?;
        let mut outcomes = self
            .act(
                loaded,
                &JobFilter::default(),
                options,
                actor,
                &operation_id,
                usize::MAX,
            )
            .await?;
        Ok(outcomes.pop().unwrap_or_else(|| {
            not_found(
                job_id,
                options,
                &self.policies.table().default_binding().active.policy,
            )
        }))
    }

    /// Retries every failed job matching `filter`: snapshots each queue's failed registry,
    /// then works through it in pipelined batches. Returns the per-outcome summary.
    pub async fn retry_all(
        &self,
        filter: &JobFilter,
        options: &RetryOptions,
        actor: &str,
        operation_id: &str,
        progress: &Progress,
    ) -> Result<Summary, RetryError> {
        check_options(options)?;
        let mut conn = self.conn.clone();
        let now = now_ms();
        state::append_audit(
            &mut conn,
            &records::operation_started(operation_id, actor, options, filter, now),
        )
        .await?;
        // A group's retry-all walks the group's jobs only (each still re-checked).
        let snapshots = self.snapshots(filter, operation_id, progress).await?;
        let mut matched: u64 = 0;
        let limit = filter.limit.unwrap_or(u64::MAX);
        // Pages overlap: the next page is read while this one is evaluated and requeued.
        // Safe because every requeue re-checks its job atomically.
        'queues: for (queue, key, size) in &snapshots {
            let batch = self.config.batch_size as u64;
            let mut start = 0;
            let mut current = if *size > 0 {
                start = batch.min(*size);
                Some(self.load_page(queue, key, 0, start).await?)
            } else {
                None
            };
            while let Some(loaded) = current.take() {
                if progress.cancelled.load(Ordering::Relaxed) || matched >= limit {
                    break 'queues;
                }
                let remaining = usize::try_from(limit - matched).unwrap_or(usize::MAX);
                let next_start = start;
                let count = batch.min(size - next_start);
                start += count;
                let prefetch = async {
                    if count == 0 {
                        return Ok(None);
                    }
                    self.load_page(queue, key, next_start, count)
                        .await
                        .map(Some)
                };
                let (outcomes, next) = tokio::join!(
                    self.act(loaded, filter, options, actor, operation_id, remaining),
                    prefetch
                );
                let outcomes = outcomes?;
                current = next?;
                matched += outcomes.len() as u64;
                progress.add(&outcomes);
            }
        }
        let summary = Summary {
            operation_id: operation_id.to_string(),
            total: matched,
            counts: progress.counts(),
            cancelled: progress.cancelled.load(Ordering::Relaxed),
            dry_run: options.dry_run,
        };
        state::append_audit(
            &mut conn,
            &records::operation_finished(&summary, actor, filter, now_ms()),
        )
        .await?;
        Ok(summary)
    }

    /// Reads one page of a retry-all's snapshot, with the jobs and their retry state.
    pub(super) async fn load_page(
        &self,
        queue: &str,
        key: &str,
        start: u64,
        count: u64,
    ) -> Result<Loaded, RetryError> {
        let refs = self.backend.snapshot_page(queue, key, start, count).await?;
        self.load(refs).await
    }

    /// Reads jobs and their retry state in one pipelined step each.
    pub(super) async fn load(&self, refs: Vec<JobRef>) -> Result<Loaded, RetryError> {
        let (jobs, states) = self.read_with_state(&refs).await?;
        Ok(Loaded { refs, jobs, states })
    }

    /// Evaluates loaded jobs and acts on at most `max` of those the filter matches (jobs
    /// gone since they were listed are `not_found`); returns their outcomes.
    pub(super) async fn act(
        &self,
        loaded: Loaded,
        filter: &JobFilter,
        options: &RetryOptions,
        actor: &str,
        operation_id: &str,
        max: usize,
    ) -> Result<Vec<JobOutcome>, RetryError> {
        let now = now_ms();
        let cx = Context {
            actor,
            options,
            operation_id,
            now_ms: now,
        };
        let Loaded { refs, jobs, states } = loaded;
        let mut gone = Vec::new();
        let mut present = Vec::new();
        for (r, (job, state)) in refs.iter().zip(jobs.into_iter().zip(states)) {
            match job {
                Some(job) => present.push((job, state)),
                // Gone since the snapshot (requeued by someone else, or deleted).
                None if filter.queue.as_deref().is_none_or(|q| q == r.queue) => {
                    gone.push(r.id.clone());
                }
                None => {}
            }
        }
        let evaluated = self.evaluate_jobs(present, filter, now, true).await?;
        // A job gone has no job type: the `*` binding speaks for it.
        let fallback = Arc::clone(self.policies.table().default_binding());
        // Never act on more jobs than asked: the limit counts every job with an outcome.
        let mut budget = max;
        let mut outcomes: Vec<JobOutcome> = Vec::new();
        for id in gone {
            if budget == 0 {
                break;
            }
            budget -= 1;
            outcomes.push(not_found(&id, options, &fallback.active.policy));
        }
        let mut to_requeue: Vec<Evaluated> = Vec::new();
        let mut to_record: Vec<(JobOutcome, Evaluated)> = Vec::new();
        let mut candidates = Vec::new();
        for e in evaluated.into_iter().flatten().take(budget) {
            let (outcome, reason) = enforce(&e.view, options, now);
            if outcome == Outcome::Retried {
                candidates.push((e, reason));
                continue;
            }
            let o = decided(&e.view, outcome, reason, options);
            to_record.push((o, e));
        }
        let mut conn = self.conn.clone();
        // The breakers and budgets may still hold what the policy and options let go.
        let gated = brakes::gate(&mut conn, candidates, options, now).await?;
        to_record.extend(gated.held);
        for (e, reason) in gated.go {
            if options.dry_run {
                to_record.push((decided(&e.view, Outcome::Retried, reason, options), e));
            } else {
                to_requeue.push(e);
            }
        }

        // Decisions that change nothing in the queue: state + audit, atomically per batch.
        let records: Vec<Recorded<'_>> = to_record
            .iter()
            .map(|(o, e)| Recorded {
                job_id: &e.view.job.id,
                created_at: &e.view.job.created_at,
                decision: o.outcome.as_str(),
                policy_digest: &o.policy_digest,
                first_failed_ms: e.input.first_failed_at_ms,
                state_ttl_seconds: state_ttl(&e.view.job, &self.config),
                dry_run: options.dry_run,
                audit: records::job_record(
                    o,
                    cx,
                    Some((&e.input, e.binding.active.params_json.as_str())),
                    e.shadow.as_ref(),
                ),
            })
            .collect();
        // Jobs gone since the snapshot: nothing to change, but each outcome is recorded.
        let gone_records: Vec<_> = outcomes
            .iter()
            .map(|o| records::job_record(o, cx, None, None))
            .collect();
        state::append_audits(&mut conn, &gone_records).await?;
        // Tracebacks go in by digest: stored before any record that names them.
        let blobs: Vec<&str> = to_record
            .iter()
            .map(|(_, e)| e.input.traceback.as_str())
            .chain(to_requeue.iter().map(|e| e.input.traceback.as_str()))
            .collect();
        state::stash_blobs(&mut conn, &blobs).await?;
        state::record_decisions(&mut conn, &records).await?;
        outcomes.extend(to_record.into_iter().map(|(o, _)| o));

        // Requeues: one atomic script per job, pipelined; a lost reply is re-sent with the
        // same operation id, which the script recognises.
        outcomes.extend(
            brakes::requeue_paced(&self.backend, &mut conn, to_requeue, cx, &self.config).await?,
        );
        for o in &outcomes {
            crate::metrics::global().retry_outcome(o.outcome.as_str(), o.dry_run);
        }
        Ok(outcomes)
    }
}

impl<B: QueueBackend> RetryService<B> {
    /// The outcome of retrying a job that is not in a failed registry: `already_requeued`
    /// when its hash is still there with another status, else `not_found`.
    async fn not_failed(
        &self,
        job_id: &str,
        options: &RetryOptions,
    ) -> Result<JobOutcome, RetryError> {
        let r = JobRef {
            queue: String::new(),
            id: job_id.to_string(),
            score: 0.0,
        };
        let job = self.backend.read_jobs(&[r]).await?.pop().flatten();
        let fallback = Arc::clone(&self.policies.table().default_binding().active.policy);
        Ok(match job {
            Some(job) if job.status != "failed" && job.status != "stopped" => JobOutcome {
                queue: job.queue,
                job_type: job.job_type,
                outcome: Outcome::AlreadyRequeued,
                reason: format!(
                    "not in the failed registry any more (status {}): already requeued",
                    job.status
                ),
                ..not_found(job_id, options, &fallback)
            },
            _ => not_found(job_id, options, &fallback),
        })
    }
}
