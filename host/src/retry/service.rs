//! The retry service: list failed jobs with their classification and decision, and retry
//! one or many, exactly once. No HTTP types here: the API and the CLI call these functions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::Serialize;

use super::audit;
use super::filter::JobFilter;
use super::outcome::{JobOutcome, Outcome};
use super::replay::Origin;
pub use super::replay::{
    CurrentReplay, RecordedReplay, RecordedWindow, ReplayError, ReplayExample, ReplayReport,
    ReplayTally,
};
use super::state::{self, Keys, Recorded, RetryState};
use crate::audit::AuditDir;
use crate::policy::types::derive_seed;
use crate::policy::{
    Classification, Decision, Digest, EvalError, Evaluation, FailureInput, HoldKind, Params,
    Policy, PolicyEngine,
};
use crate::queue::{FailedJob, JobRef, QueueBackend, QueueError, Requeue, RequeueResult};
use crate::registry::{ActiveBinding, Bound, Registry, Table};

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
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("force requires a reason")]
    ForceWithoutReason,
    #[error("the policy engine failed: {0}")]
    Engine(String),
}

/// Jobs read for one batch, not yet evaluated.
#[derive(Debug)]
struct Loaded {
    refs: Vec<JobRef>,
    jobs: Vec<Option<FailedJob>>,
    states: Vec<RetryState>,
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
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            state_grace_seconds: 7 * 86_400,
            default_failure_ttl_seconds: 365 * 86_400,
            snapshot_ttl_seconds: 3600,
            requeue_resends: 3,
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
    fn add(&self, outcomes: &[JobOutcome]) {
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

/// The retry service over one queue backend and the policy engine.
pub struct RetryService<B> {
    backend: B,
    conn: ConnectionManager,
    engine: Arc<PolicyEngine>,
    /// Which policy judges which job type.
    policies: Policies,
    config: ServiceConfig,
    cache: Arc<ClassificationCache>,
    /// Queues found by the last discovery, and when (see `listed_queues`).
    queues: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

/// Classifications by (job id, results entry id, policy digest): a failure is classified
/// once per policy, so listing 100,000 failed jobs again does not re-run `classify` for each
/// (the decision still runs every time: it depends on the clock and the attempts).
#[derive(Debug, Default)]
pub struct ClassificationCache {
    entries: std::sync::Mutex<std::collections::HashMap<(String, String, Digest), Classification>>,
}

impl ClassificationCache {
    /// Most entries kept; the cache is emptied when it would grow past this.
    pub const CAPACITY: usize = 200_000;

    fn get(&self, key: &(String, String, Digest)) -> Option<Classification> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: (String, String, Digest), value: Classification) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(key, value);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B> std::fmt::Debug for RetryService<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryService")
            .field("bindings_revision", &self.policies.table().revision)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A new operation id: time-ordered and unique enough (ms + 64 random-ish bits).
pub fn new_operation_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = derive_seed(&format!("{}:{n}", std::process::id()), n as u32)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    format!("op-{:013x}-{mix:016x}", now_ms())
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

/// A job evaluated by the binding of its job type: what the list shows and the retry acts on.
#[derive(Debug, Clone)]
struct Evaluated {
    view: JobView,
    input: FailureInput,
    binding: Arc<ActiveBinding>,
    /// What the binding's shadow policy says of the same input (decisions only, not lists).
    shadow: Option<ShadowDecision>,
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

impl ShadowDecision {
    /// The audit fields: `shadow_policy_digest`, and `shadow_decision` as a JSON object.
    fn audit_fields(&self) -> [(&'static str, String); 2] {
        [
            ("shadow_policy_digest", self.digest.clone()),
            (
                "shadow_decision",
                serde_json::to_string(self).unwrap_or_default(),
            ),
        ]
    }
}

/// Appends the shadow's fields to a record when there is a shadow.
fn with_shadow(
    mut record: Vec<(&'static str, String)>,
    shadow: Option<&ShadowDecision>,
) -> Vec<(&'static str, String)> {
    if let Some(s) = shadow {
        record.extend(s.audit_fields());
    }
    record
}

impl<B: QueueBackend> RetryService<B> {
    /// A service where `policy` with `params` judges every job type.
    pub fn new(
        backend: B,
        conn: ConnectionManager,
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
            config,
            cache: Arc::new(ClassificationCache::default()),
            queues: std::sync::Mutex::new(None),
        }
    }

    /// Judges each job type by the registry's live bindings (`retryguard serve`).
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.policies = Policies::Registry(registry);
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
    pub fn cache(&self) -> &ClassificationCache {
        &self.cache
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Lists failed jobs matching `filter`, ordered by queue then (score, id), after `cursor`.
    pub async fn list(
        &self,
        filter: &JobFilter,
        cursor: Option<JobRef>,
        limit: usize,
    ) -> Result<Page, RetryError> {
        let mut queues = self.listed_queues().await?;
        if let Some(q) = &filter.queue {
            queues.retain(|name| name == q);
        }
        if let Some(c) = &cursor {
            queues.retain(|name| name.as_str() >= c.queue.as_str());
        }
        let now = now_ms();
        // One job more than asked tells whether there is a next page.
        let mut found: Vec<(JobRef, JobView)> = Vec::new();
        'queues: for queue in queues {
            let mut after = cursor.clone().filter(|c| c.queue == queue);
            loop {
                // One job more than asked tells whether there is a next page.
                let batch = self.config.batch_size.min(limit + 1 - found.len()).max(1);
                let refs = self
                    .backend
                    .failed_page(&queue, after.as_ref(), batch)
                    .await?;
                if refs.is_empty() {
                    break;
                }
                after = refs.last().cloned();
                let views = self.evaluate_refs(&refs, filter, now).await?;
                for (r, view) in refs.into_iter().zip(views) {
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
        let next_cursor = if more {
            found.last().map(|(r, _)| r.clone())
        } else {
            None
        };
        let jobs = found.into_iter().map(|(_, view)| view).collect();
        Ok(Page { jobs, next_cursor })
    }

    /// What-if: evaluates `candidate` over the current failed jobs matching `filter` (at most
    /// `max_jobs`) beside the policy each is bound to now, and reports how their decisions
    /// differ. Changes nothing and writes no audit record.
    pub async fn replay(
        &self,
        candidate: &Bound,
        filter: &JobFilter,
        max_jobs: usize,
    ) -> Result<CurrentReplay, RetryError> {
        let now = now_ms();
        let mut queues = self.backend.failed_queues().await?;
        if let Some(q) = &filter.queue {
            queues.retain(|name| name == q);
        }
        let mut report = CurrentReplay {
            now_ms: now,
            ..CurrentReplay::default()
        };
        'queues: for queue in queues {
            let mut after: Option<JobRef> = None;
            loop {
                let refs = self
                    .backend
                    .failed_page(&queue, after.as_ref(), self.config.batch_size)
                    .await?;
                if refs.is_empty() {
                    break;
                }
                after = refs.last().cloned();
                let (jobs, states) = self.read_with_state(&refs).await?;
                let present: Vec<_> = jobs
                    .into_iter()
                    .zip(states)
                    .filter_map(|(j, s)| j.map(|j| (j, s)))
                    .collect();
                let evaluated = self.evaluate_jobs(present, filter, now, false).await?;
                let engine = Arc::clone(&self.engine);
                let cache = Arc::clone(&self.cache);
                let candidate = candidate.clone();
                let compared: Vec<_> = tokio::task::spawn_blocking(move || {
                    evaluated
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            let eval = evaluate_cached(
                                &engine,
                                &cache,
                                &e.view.job,
                                &e.input,
                                &candidate,
                                now,
                            );
                            let c = view_of(
                                e.view.job.clone(),
                                e.view.attempts,
                                &candidate.policy,
                                eval,
                                now,
                            );
                            (e, c)
                        })
                        .collect()
                })
                .await
                .map_err(|err| RetryError::Engine(err.to_string()))?;
                let origin = Origin {
                    record_id: None,
                    recorded_decision: None,
                    at_ms: now,
                };
                for (e, c) in compared {
                    report.tally.add(&e.view, &c, origin);
                    if report.tally.jobs as usize >= max_jobs {
                        report.tally.complete = false;
                        break 'queues;
                    }
                }
            }
        }
        Ok(report)
    }

    /// What-if over the past: evaluates `candidate` over the policy decisions recorded in
    /// the audit trail within `window`, each at its recorded clock, beside the verdict each
    /// record stands for (see `super::replay`). Changes nothing and writes no audit record.
    pub async fn replay_recorded(
        &self,
        candidate: &Bound,
        dir: &Arc<AuditDir>,
        registry: &Registry,
        window: &RecordedWindow,
    ) -> Result<RecordedReplay, ReplayError> {
        let mut conn = self.conn.clone();
        super::replay::recorded(&self.engine, &mut conn, dir, registry, candidate, window).await
    }

    /// The queues with failed jobs, for listings: discovery scans the whole keyspace, so
    /// its result is reused for a few seconds (a retry-all always discovers afresh).
    async fn listed_queues(&self) -> Result<Vec<String>, RetryError> {
        const FRESH_FOR: Duration = Duration::from_secs(5);
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
    async fn evaluate_jobs(
        &self,
        jobs: Vec<(FailedJob, RetryState)>,
        filter: &JobFilter,
        now: u64,
        shadows: bool,
    ) -> Result<Vec<Option<Evaluated>>, RetryError> {
        // One table for the whole batch: no decision mixes two bindings revisions.
        let table = self.policies.table();
        let chunks = split_for_cores(jobs);
        let mut tasks = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let engine = Arc::clone(&self.engine);
            let table = Arc::clone(&table);
            let filter = filter.clone();
            let cache = Arc::clone(&self.cache);
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|(job, state)| {
                        evaluate_one(&engine, &cache, &table, &filter, job, &state, now, shadows)
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
            let table = self.policies.table();
            let record = audit::record(
                &outcome,
                actor,
                options,
                &operation_id,
                None,
                &table.default_binding().active.params_json,
                now_ms(),
            );
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
            &audit::operation_started(operation_id, actor, options, filter, now),
        )
        .await?;
        let mut queues = self.backend.failed_queues().await?;
        if let Some(q) = &filter.queue {
            queues.retain(|name| name == q);
        }
        let mut snapshots = Vec::new();
        for queue in &queues {
            let key = Keys::snapshot(operation_id, queue);
            let size = self
                .backend
                .snapshot(queue, &key, self.config.snapshot_ttl_seconds)
                .await?;
            progress.total.fetch_add(size, Ordering::Relaxed);
            snapshots.push((queue.clone(), key, size));
        }
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
            &audit::operation_finished(&summary, actor, filter, now_ms()),
        )
        .await?;
        Ok(summary)
    }

    /// Reads, evaluates and acts on one batch of jobs; returns the outcomes of the jobs the
    /// filter matched (jobs no longer failed are `not_found`).
    /// Reads one page of a retry-all's snapshot, with the jobs and their retry state.
    async fn load_page(
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
    async fn load(&self, refs: Vec<JobRef>) -> Result<Loaded, RetryError> {
        let (jobs, states) = self.read_with_state(&refs).await?;
        Ok(Loaded { refs, jobs, states })
    }

    /// Evaluates loaded jobs and acts on at most `max` of those the filter matches (jobs
    /// gone since they were listed are `not_found`); returns their outcomes.
    async fn act(
        &self,
        loaded: Loaded,
        filter: &JobFilter,
        options: &RetryOptions,
        actor: &str,
        operation_id: &str,
        max: usize,
    ) -> Result<Vec<JobOutcome>, RetryError> {
        let now = now_ms();
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
        for e in evaluated.into_iter().flatten().take(budget) {
            let view = &e.view;
            let (outcome, reason) = enforce(view, options, now);
            if outcome == Outcome::Retried && !options.dry_run {
                to_requeue.push(e);
                continue;
            }
            let job = view.job.clone();
            let o = JobOutcome {
                job_id: job.id.clone(),
                queue: job.queue.clone(),
                job_type: job.job_type.clone(),
                outcome,
                reason,
                classification: view.classification.clone(),
                attempt: if outcome == Outcome::Retried {
                    view.attempts + 1
                } else {
                    view.attempts
                },
                policy_digest: view.policy_digest.clone(),
                retry_at_ms: view.retry_at_ms,
                dry_run: options.dry_run,
                forced: options.force && outcome == Outcome::Retried,
            };
            to_record.push((o, e));
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
                state_ttl_seconds: self.state_ttl(&e.view.job),
                dry_run: options.dry_run,
                audit: with_shadow(
                    audit::record(
                        o,
                        actor,
                        options,
                        operation_id,
                        Some(&e.input),
                        &e.binding.active.params_json,
                        now,
                    ),
                    e.shadow.as_ref(),
                ),
            })
            .collect();
        let mut conn = self.conn.clone();
        // Jobs gone since the snapshot: nothing to change, but each outcome is recorded.
        let gone_records: Vec<Vec<(&'static str, String)>> = outcomes
            .iter()
            .map(|o| {
                audit::record(
                    o,
                    actor,
                    options,
                    operation_id,
                    None,
                    &fallback.active.params_json,
                    now,
                )
            })
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
        if !to_requeue.is_empty() {
            outcomes.extend(
                self.requeue(&to_requeue, options, actor, operation_id, now)
                    .await,
            );
        }
        for o in &outcomes {
            crate::metrics::global().retry_outcome(o.outcome.as_str(), o.dry_run);
        }
        Ok(outcomes)
    }

    async fn requeue(
        &self,
        jobs: &[Evaluated],
        options: &RetryOptions,
        actor: &str,
        operation_id: &str,
        now: u64,
    ) -> Vec<JobOutcome> {
        let outcomes_if_retried: Vec<JobOutcome> = jobs
            .iter()
            .map(|Evaluated { view, .. }| JobOutcome {
                job_id: view.job.id.clone(),
                queue: view.job.queue.clone(),
                job_type: view.job.job_type.clone(),
                outcome: Outcome::Retried,
                reason: if options.force {
                    format!("forced: {}", options.reason.clone().unwrap_or_default())
                } else {
                    view.reason.clone()
                },
                classification: view.classification.clone(),
                attempt: view.attempts + 1,
                policy_digest: view.policy_digest.clone(),
                retry_at_ms: None,
                dry_run: false,
                forced: options.force,
            })
            .collect();
        let audits: Vec<Vec<(&'static str, String)>> = outcomes_if_retried
            .iter()
            .zip(jobs)
            .map(|(o, e)| {
                let mut record = audit::record(
                    o,
                    actor,
                    options,
                    operation_id,
                    Some(&e.input),
                    &e.binding.active.params_json,
                    now,
                );
                record.retain(|(k, _)| !audit::SET_BY_REQUEUE_SCRIPT.contains(k));
                with_shadow(record, e.shadow.as_ref())
            })
            .collect();
        let states: Vec<String> = jobs.iter().map(|e| Keys::state(&e.view.job.id)).collect();
        let batch: Vec<Requeue<'_>> = jobs
            .iter()
            .zip(&audits)
            .zip(&states)
            .zip(&outcomes_if_retried)
            .map(
                |(((Evaluated { view, input, .. }, audit), state_key), o)| Requeue {
                    job: &view.job,
                    operation_id,
                    state_key,
                    outbox_key: Keys::OUTBOX,
                    watch_key: Keys::WATCH,
                    reason: &o.reason,
                    state_ttl_seconds: self.state_ttl(&view.job),
                    now_ms: now,
                    first_failed_ms: input.first_failed_at_ms,
                    policy_digest: &view.policy_digest,
                    at_front: options.at_front,
                    audit,
                },
            )
            .collect();
        let mut last_error = None;
        for attempt in 0..=self.config.requeue_resends {
            match self.backend.requeue(&batch).await {
                Ok(results) => {
                    return outcomes_if_retried
                        .into_iter()
                        .zip(results)
                        .map(|(o, r)| apply_requeue_result(o, r))
                        .collect();
                }
                Err(e @ QueueError::Unavailable(_)) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 * (u64::from(attempt) + 1))).await;
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        let why = last_error.map(|e| e.to_string()).unwrap_or_default();
        outcomes_if_retried
            .into_iter()
            .map(|mut o| {
                o.outcome = Outcome::Unknown;
                o.reason = format!(
                    "the requeue was sent but not confirmed ({why}); retry the job again to resolve it: the requeue re-checks atomically, so it answers `already_requeued` if this one happened"
                );
                o
            })
            .collect()
    }

    fn state_ttl(&self, job: &FailedJob) -> u64 {
        job.failure_ttl_seconds
            .unwrap_or(self.config.default_failure_ttl_seconds)
            .saturating_add(self.config.state_grace_seconds)
    }
}

fn check_options(options: &RetryOptions) -> Result<(), RetryError> {
    if options.force
        && options
            .reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        return Err(RetryError::ForceWithoutReason);
    }
    Ok(())
}

fn not_found(job_id: &str, options: &RetryOptions, policy: &Policy) -> JobOutcome {
    JobOutcome {
        job_id: job_id.to_string(),
        queue: String::new(),
        job_type: String::new(),
        outcome: Outcome::NotFound,
        reason: "no such failed job".into(),
        classification: None,
        attempt: 0,
        policy_digest: policy.digest().to_string(),
        retry_at_ms: None,
        dry_run: options.dry_run,
        forced: false,
    }
}

fn apply_requeue_result(mut o: JobOutcome, r: RequeueResult) -> JobOutcome {
    match r {
        RequeueResult::Retried { attempts } => o.attempt = attempts,
        RequeueResult::AlreadyRequeued => {
            o.outcome = Outcome::AlreadyRequeued;
            o.reason = "already requeued by someone else".into();
        }
        RequeueResult::Stale { why } => {
            o.outcome = Outcome::StaleDecision;
            o.reason = format!("the decision is stale: {why}");
        }
        RequeueResult::NotFound => {
            o.outcome = Outcome::NotFound;
            o.reason = "the job is gone".into();
        }
        RequeueResult::Unknown { why } => {
            o.outcome = Outcome::Unknown;
            o.reason = format!(
                "Redis answered this job's requeue with an error ({why}); retry the job again to resolve it: the requeue re-checks atomically, so it answers `already_requeued` if this one happened"
            );
        }
    }
    o
}

/// Jobs in at most one chunk per core (and at least 64 jobs a chunk: below that a second
/// task costs more than it saves), in order.
fn split_for_cores<T>(jobs: Vec<T>) -> Vec<Vec<T>> {
    const MIN_CHUNK: usize = 64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks = cores.min(jobs.len().div_ceil(MIN_CHUNK)).max(1);
    let size = jobs.len().div_ceil(chunks).max(1);
    let mut out = Vec::with_capacity(chunks);
    let mut rest = jobs.into_iter();
    loop {
        let chunk: Vec<T> = rest.by_ref().take(size).collect();
        if chunk.is_empty() {
            break;
        }
        out.push(chunk);
    }
    out
}

/// One job: its binding's verdict, the filter, and (when asked) the shadow's verdict.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn evaluate_one(
    engine: &PolicyEngine,
    cache: &ClassificationCache,
    table: &Table,
    filter: &JobFilter,
    job: FailedJob,
    state: &RetryState,
    now: u64,
    shadows: bool,
) -> Option<Evaluated> {
    if !filter.matches_job(&job.queue, &job.job_type, job.failed_at_ms) {
        return None;
    }
    let binding = Arc::clone(table.resolve(&job.job_type));
    let input = failure_input(&job, state);
    let eval = evaluate_cached(engine, cache, &job, &input, &binding.active, now);
    let view = view_of(job, state.attempts, &binding.active.policy, eval, now);
    let matches = match &view.classification {
        Some(c) => filter.matches_classification(&c.failure_type, c.retryable),
        None => !filter.needs_classification(),
    };
    if !matches {
        return None;
    }
    // Same input, same clock; never acted on.
    let shadow = binding.shadow.as_ref().filter(|_| shadows).map(|s| {
        let eval = evaluate_cached(engine, cache, &view.job, &input, s, now);
        let v = verdict_of(eval, now);
        ShadowDecision {
            digest: s.policy.digest().to_string(),
            pattern: binding.pattern.clone(),
            outcome: v.outcome.as_str().to_string(),
            retry_at_ms: v.retry_at_ms,
            failure_type: v.classification.map(|c| c.failure_type),
            reason: v.reason,
            active_outcome: view.outcome.as_str().to_string(),
            active_retry_at_ms: view.retry_at_ms,
        }
    });
    Some(Evaluated {
        view,
        input,
        binding,
        shadow,
    })
}

/// Evaluates `job` with a bound policy, its classification taken from / put in `cache` (a
/// failure is classified once per policy; the decision runs every time).
fn evaluate_cached(
    engine: &PolicyEngine,
    cache: &ClassificationCache,
    job: &FailedJob,
    input: &FailureInput,
    bound: &Bound,
    now: u64,
) -> Result<Evaluation, EvalError> {
    let cacheable = !job.result_id.is_empty();
    let key = (job.id.clone(), job.result_id.clone(), bound.policy.digest());
    let known = cacheable.then(|| cache.get(&key)).flatten();
    let eval = engine.evaluate_with(&bound.policy, input, &bound.params, now, known.as_ref());
    if let (Ok(e), None, true) = (&eval, &known, cacheable) {
        cache.put(key, e.classification.clone());
    }
    eval
}

/// The policy's input for a job.
fn failure_input(job: &FailedJob, state: &RetryState) -> FailureInput {
    let failed_at = job.failed_at_ms.unwrap_or(0);
    FailureInput {
        job_id: job.id.clone(),
        job_type: job.job_type.clone(),
        queue: job.queue.clone(),
        job_status: job.status.clone(),
        exc_type: job.exc_type.clone(),
        exc_message: job.exc_message.clone(),
        traceback: job.traceback.clone(),
        failed_at_ms: failed_at,
        first_failed_at_ms: state.first_failed_ms.unwrap_or(failed_at),
        attempts: state.attempts,
        last_attempt_at_ms: state.last_attempt_ms,
        queue_retries_left: job.retries_left,
        seed: derive_seed(&job.id, state.attempts),
        attributes: Vec::new(),
    }
}

/// A policy's evaluation as the retry service shows it (also what a replay compares).
pub(super) fn view_of(
    job: FailedJob,
    attempts: u32,
    policy: &Policy,
    eval: Result<Evaluation, EvalError>,
    now: u64,
) -> JobView {
    let v = verdict_of(eval, now);
    JobView {
        job,
        attempts,
        policy_digest: policy.digest().to_string(),
        classification: v.classification,
        outcome: v.outcome,
        reason: v.reason,
        retry_at_ms: v.retry_at_ms,
        hold_kind: v.hold_kind,
    }
}

/// What an evaluation means at `now`, in the outcomes' vocabulary.
struct Verdict {
    classification: Option<Classification>,
    outcome: Outcome,
    reason: String,
    retry_at_ms: Option<u64>,
    hold_kind: Option<HoldKind>,
}

fn verdict_of(eval: Result<Evaluation, EvalError>, now: u64) -> Verdict {
    let eval = match eval {
        Ok(eval) => eval,
        Err(e) => {
            return Verdict {
                classification: None,
                outcome: Outcome::PolicyError,
                reason: format!("policy error: {e}"),
                retry_at_ms: None,
                hold_kind: None,
            };
        }
    };
    let (outcome, reason, retry_at_ms, hold_kind) = match eval.decision {
        Decision::RetryAt { at_ms } if at_ms <= now => {
            (Outcome::Retried, "due now".to_string(), Some(at_ms), None)
        }
        Decision::RetryAt { at_ms } => (
            Outcome::BlockedCooldown,
            format!("cooling down for {} s more", (at_ms - now).div_ceil(1000)),
            Some(at_ms),
            None,
        ),
        Decision::Hold { kind, reason } => {
            let outcome = match kind {
                HoldKind::MaxAttempts => Outcome::BlockedMaxAttempts,
                HoldKind::NonRetryable => Outcome::BlockedNonRetryable,
                HoldKind::UnknownFailure => Outcome::BlockedUnknown,
                HoldKind::PolicySaysNo => Outcome::BlockedByPolicy,
            };
            (outcome, reason, None, Some(kind))
        }
    };
    Verdict {
        classification: Some(eval.classification),
        outcome,
        reason,
        retry_at_ms,
        hold_kind,
    }
}

/// The host enforces the policy's decision, with the operator's options.
fn enforce(view: &JobView, options: &RetryOptions, _now: u64) -> (Outcome, String) {
    if options.force {
        return (
            Outcome::Retried,
            format!(
                "forced over {}: {}",
                view.outcome.as_str(),
                options.reason.clone().unwrap_or_default()
            ),
        );
    }
    match view.outcome {
        // Let a non-retryable hold through when asked; never max attempts or cooldown.
        Outcome::BlockedNonRetryable if !options.retry_only_retryable => (
            Outcome::Retried,
            format!(
                "retry_only_retryable=false lets a non-retryable failure through: {}",
                view.reason
            ),
        ),
        outcome => (outcome, view.reason.clone()),
    }
}

/// Counts for `GET /api/v1/jobs/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub queues: Vec<crate::queue::QueueCounts>,
    /// Failed jobs per failure type (`policy_error` when the policy failed).
    pub failed_by_type: BTreeMap<String, u64>,
    /// Failed jobs classified for `failed_by_type`.
    pub failed_examined: u64,
    /// False when more failed jobs exist than were examined.
    pub failed_complete: bool,
    /// Length of retryguard's audit outbox stream.
    pub outbox_len: u64,
}

/// What Redis says about itself, for `/readyz`. `None`: `CONFIG GET` was refused (managed
/// Redis often disables it) or the setting is unknown.
#[derive(Debug, Clone, Serialize)]
pub struct RedisStatus {
    pub ping_ms: u64,
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    pub maxmemory_policy: Option<String>,
}

impl<B: QueueBackend> RetryService<B> {
    /// Counts per queue, failed jobs by failure type (classifying at most `max_jobs`), and
    /// the audit outbox length.
    pub async fn stats(&self, max_jobs: usize) -> Result<Stats, RetryError> {
        let queues = self.backend.counts().await?;
        let mut failed_by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut examined: u64 = 0;
        let mut cursor = None;
        let mut complete = true;
        loop {
            let room = max_jobs.saturating_sub(examined as usize);
            if room == 0 {
                complete = false;
                break;
            }
            let page = self
                .list(&JobFilter::default(), cursor, room.min(1000))
                .await?;
            for view in &page.jobs {
                let key = view
                    .classification
                    .as_ref()
                    .map_or("policy_error", |c| c.failure_type.as_str());
                *failed_by_type.entry(key.to_string()).or_default() += 1;
            }
            examined += page.jobs.len() as u64;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut conn = self.conn.clone();
        let outbox_len = state::outbox_len(&mut conn).await?;
        Ok(Stats {
            queues,
            failed_by_type,
            failed_examined: examined,
            failed_complete: complete,
            outbox_len,
        })
    }

    /// PINGs Redis and reads its durability settings (each `None` if `CONFIG` is refused).
    pub async fn redis_status(&self) -> Result<RedisStatus, RetryError> {
        let mut conn = self.conn.clone();
        let started = std::time::Instant::now();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(crate::queue::rq::redis_error)?;
        let ping_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut setting = async |name: &str| -> Result<Option<String>, RetryError> {
            match redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<Vec<String>>(&mut conn)
                .await
            {
                Ok(pair) => Ok(pair.get(1).cloned()),
                Err(e) => match crate::queue::rq::redis_error(e) {
                    e @ QueueError::Unavailable(_) => Err(e.into()),
                    _ => Ok(None),
                },
            }
        };
        Ok(RedisStatus {
            ping_ms,
            appendonly: setting("appendonly").await?,
            appendfsync: setting("appendfsync").await?,
            maxmemory_policy: setting("maxmemory-policy").await?,
        })
    }

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
