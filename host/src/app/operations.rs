//! Retry-all operations. Each runs in a task of its own on the instance that started it, at
//! most `[server] max_concurrent_retry_all` at once per instance, and lives in Redis
//! (`store`, `retryguard:operation:<id>`) so that any instance answers its progress and takes
//! its cancel:
//!
//! - the running instance writes its progress at most every [`REPORT_EVERY`] and when it
//!   ends (that final write is retried), reading the record's `cancel` flag in the same
//!   round trip: a cancel asked on any instance stops it after its current batch;
//! - its own in-memory copy stays authoritative for that instance (a finished operation stays
//!   there for an hour), and answers when Redis cannot;
//! - a record still `running` without a heartbeat for `store::ABANDONED_AFTER_MS` reads as
//!   `abandoned`: its instance died.
//!
//! Shutdown cancels and drains them, final writes included.

pub mod store;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::Service;
use crate::clock::{new_operation_id, now_ms};
use crate::queue::QueueError;
use crate::redis_error::RedisError;
use crate::retry::{DeleteOptions, JobFilter, Progress, RetryError, RetryOptions, Summary};
pub use store::{
    Failure, FailureKind, OperationKind, OperationState, OperationStatus, OperationStore,
};

/// How often a running operation writes its progress (and reads its cancel flag) to Redis.
pub const REPORT_EVERY: Duration = Duration::from_millis(250);
/// How long a finished operation stays in this instance's memory.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Most finished operations kept in memory (the oldest go first).
const MAX_FINISHED: usize = 1000;
/// Waits before the retries of an operation's final write (after the first attempt).
const FINAL_WRITE_BACKOFF: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Why an operation stopped before its summary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Retry(RetryError),
    #[error("the retry-all task failed: {0}")]
    Panicked(String),
}

impl OperationError {
    /// What any instance reports of it (from the record in Redis).
    pub fn failure(&self) -> Failure {
        let kind = match self {
            Self::Retry(RetryError::ForceWithoutReason) => FailureKind::ForceRequiresReason,
            Self::Retry(
                RetryError::Queue(QueueError::Unavailable(_))
                | RetryError::Redis(RedisError::Unavailable(_)),
            ) => FailureKind::RedisUnavailable,
            Self::Retry(RetryError::CountMismatch { .. }) => FailureKind::CountMismatch,
            Self::Retry(_) | Self::Panicked(_) => FailureKind::Internal,
        };
        Failure {
            kind,
            detail: self.to_string(),
        }
    }
}

/// `max_concurrent_retry_all` operations run already (in this instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub running: u32,
}

/// How an operation ended: its summary, or the error that stopped it (already logged).
pub type Ended = Result<Summary, OperationError>;

/// One retry-all this instance runs (or ran).
#[derive(Debug)]
pub struct Operation {
    id: String,
    kind: OperationKind,
    dry_run: bool,
    actor: String,
    instance: String,
    started_ms: u64,
    progress: Progress,
    /// `None` while running.
    ended: watch::Sender<Option<(Ended, u64, Instant)>>,
}

impl Operation {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits up to `timeout` for the operation to end; `None` if it is still running.
    pub async fn wait(&self, timeout: Duration) -> Option<Ended> {
        let mut rx = self.ended.subscribe();
        let ended = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match ended {
            Ok(Ok(value)) => value.as_ref().map(|(e, _, _)| e.clone()),
            _ => None,
        }
    }

    fn finish(&self, ended: Ended) {
        if let Err(e) = &ended {
            tracing::warn!(operation_id = %self.id, error = %e, "retry-all failed");
        }
        self.ended
            .send_replace(Some((ended, now_ms(), Instant::now())));
    }

    /// Its state as this instance knows it now.
    pub fn status(&self) -> OperationStatus {
        let progress = &self.progress;
        let (state, ended_ms, error) = match self.ended.borrow().as_ref() {
            None => (OperationState::Running, None, None),
            Some((Ok(s), at, _)) if s.cancelled => (OperationState::Cancelled, Some(*at), None),
            Some((Ok(_), at, _)) => (OperationState::Succeeded, Some(*at), None),
            Some((Err(e @ OperationError::Retry(RetryError::CountMismatch { .. })), at, _)) => {
                (OperationState::Conflict, Some(*at), Some(e.failure()))
            }
            Some((Err(e), at, _)) => (OperationState::Failed, Some(*at), Some(e.failure())),
        };
        OperationStatus {
            id: self.id.clone(),
            kind: self.kind,
            state,
            dry_run: self.dry_run,
            actor: self.actor.clone(),
            instance: self.instance.clone(),
            started_ms: self.started_ms,
            ended_ms,
            updated_ms: ended_ms.unwrap_or_else(now_ms),
            total: progress.total.load(Ordering::Relaxed),
            processed: progress.processed.load(Ordering::Relaxed),
            counts: progress.counts(),
            cancel_requested: progress.cancelled.load(Ordering::Relaxed),
            error,
        }
    }

    /// Asks it to stop after its current batch; false if it had ended already.
    pub fn cancel(&self) -> bool {
        if self.finished_at().is_some() {
            return false;
        }
        self.progress.cancelled.store(true, Ordering::Relaxed);
        true
    }

    fn finished_at(&self) -> Option<Instant> {
        self.ended.borrow().as_ref().map(|(_, _, at)| *at)
    }
}

/// Where an answer about an operation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Its record in Redis, as the instance that runs it last wrote it.
    Redis,
    /// This instance's own copy: it runs (or ran) the operation, and Redis could not be read
    /// or is behind (`Seen::warning` says which).
    Local,
}

/// An operation as seen from this instance.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: OperationStatus,
    pub source: Source,
    /// Why the answer is the local copy rather than Redis's record.
    pub warning: Option<String>,
}

/// The operations of this instance, and the way to every instance's through Redis.
#[derive(Debug)]
pub struct Operations {
    entries: Mutex<HashMap<String, Arc<Operation>>>,
    permits: Arc<Semaphore>,
    max_running: u32,
    store: OperationStore,
    instance: String,
    /// Operations whose final state is not yet written to Redis (shutdown waits for them).
    unreported: Arc<watch::Sender<usize>>,
}

impl Operations {
    pub fn new(max_running: u32, store: OperationStore) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_running as usize)),
            max_running,
            store,
            instance: instance_name(),
            unreported: Arc::new(watch::Sender::new(0)),
        }
    }

    /// This instance's name in the records it writes (`<host>-<pid>-<n>`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Starts a retry-all in its own task, once its first record is written (or could not
    /// be); `Busy` when `max_running` already run in this instance.
    pub async fn start(
        &self,
        service: Arc<Service>,
        filter: JobFilter,
        options: RetryOptions,
        actor: String,
    ) -> Result<Arc<Operation>, Busy> {
        let dry_run = options.dry_run;
        tracing::info!(
            ?filter,
            dry_run,
            force = options.force,
            "retry-all starting"
        );
        self.launch(
            OperationKind::RetryAll,
            dry_run,
            actor,
            move |op| async move {
                service
                    .retry_all(&filter, &options, &op.actor, &op.id, &op.progress)
                    .await
            },
        )
        .await
    }

    /// Starts a delete-all (`Service::delete_all`) as [`Operations::start`] starts a
    /// retry-all: same permits, records and reports.
    pub async fn start_delete_all(
        &self,
        service: Arc<Service>,
        filter: JobFilter,
        options: DeleteOptions,
        actor: String,
    ) -> Result<Arc<Operation>, Busy> {
        let dry_run = options.dry_run;
        tracing::info!(?filter, dry_run, expected_count = ?options.expected_count, "delete-all starting");
        self.launch(
            OperationKind::DeleteAll,
            dry_run,
            actor,
            move |op| async move {
                service
                    .delete_all(&filter, &options, &op.actor, &op.id, &op.progress)
                    .await
            },
        )
        .await
    }

    /// Runs `work` as an operation of `kind` in its own task, once its first record is
    /// written (or could not be); `Busy` when `max_running` already run in this instance.
    async fn launch<F, Fut>(
        &self,
        kind: OperationKind,
        dry_run: bool,
        actor: String,
        work: F,
    ) -> Result<Arc<Operation>, Busy>
    where
        F: FnOnce(Arc<Operation>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Summary, RetryError>> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Busy {
                running: self.max_running,
            })?;
        let (ended, _) = watch::channel(None);
        let op = Arc::new(Operation {
            id: new_operation_id(),
            kind,
            dry_run,
            actor,
            instance: self.instance.clone(),
            started_ms: now_ms(),
            progress: Progress::default(),
            ended,
        });
        self.insert(Arc::clone(&op));
        tracing::info!(operation_id = %op.id, instance = %self.instance, kind = kind.as_str(), dry_run, "operation started");
        // Written before the caller learns the id, so any instance knows it at once; if Redis
        // does not answer, the heartbeats write it later (and the run itself needs Redis).
        if let Err(e) = self.store.write(&op.status()).await {
            tracing::warn!(operation_id = %op.id, error = %e, "operation: the first record was not written to Redis");
        }
        self.unreported.send_modify(|n| *n += 1);
        let unreported = Arc::clone(&self.unreported);
        let store = self.store.clone();
        let task_op = Arc::clone(&op);
        tokio::spawn(async move {
            let run_op = Arc::clone(&task_op);
            // The work runs in a task of its own so that even a panic ends the operation.
            let mut run = tokio::spawn(work(run_op));
            let mut reporter = Reporter::new(store, Arc::clone(&task_op));
            let start = tokio::time::Instant::now() + REPORT_EVERY;
            let mut tick = tokio::time::interval_at(start, REPORT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let joined = loop {
                tokio::select! {
                    joined = &mut run => break joined,
                    _ = tick.tick() => reporter.report().await,
                }
            };
            let ended = match joined {
                Ok(result) => result.map_err(OperationError::Retry),
                Err(e) => Err(OperationError::Panicked(e.to_string())),
            };
            tracing::info!(operation_id = %task_op.id, kind = kind.as_str(), ok = ended.is_ok(), "operation ended");
            // The slot is free before anyone can see the operation ended; the local copy
            // ends before the record, so this instance never answers behind Redis.
            drop(permit);
            task_op.finish(ended);
            reporter.report_final().await;
            unreported.send_modify(|n| *n = n.saturating_sub(1));
        });
        Ok(op)
    }

    /// An operation this instance runs, or ran less than `KEEP_FINISHED` ago.
    pub fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.lock()
            .get(id)
            .filter(|o| {
                o.finished_at()
                    .is_none_or(|at| at.elapsed() < KEEP_FINISHED)
            })
            .cloned()
    }

    /// An operation of any instance: its record in Redis, or this instance's own copy when
    /// Redis cannot be read, has no record, still says `running` of one that ended here, or
    /// calls one that runs here `abandoned` (its heartbeats did not get through).
    /// `Ok(None)`: no such operation. `Err`: Redis cannot be read and this instance does not
    /// hold it.
    pub async fn status(&self, id: &str) -> Result<Option<Seen>, RedisError> {
        let local = self.get(id);
        let remote = self.store.read(id, now_ms()).await;
        let own = |warning: String| {
            local.as_ref().map(|op| Seen {
                status: op.status(),
                source: Source::Local,
                warning: Some(warning),
            })
        };
        match remote {
            Ok(Some(record)) => {
                let behind = local.as_ref().is_some_and(|op| match record.state {
                    OperationState::Abandoned => true,
                    OperationState::Running => op.finished_at().is_some(),
                    _ => false,
                });
                if behind {
                    return Ok(own(
                        "Redis is behind (its progress or final state was not written yet): this is the copy of the instance that runs it".into(),
                    ));
                }
                Ok(Some(Seen {
                    status: record,
                    source: Source::Redis,
                    warning: None,
                }))
            }
            Ok(None) => Ok(own(
                "Redis holds no record of it (not written yet): this is the copy of the instance that runs it".into(),
            )),
            Err(e) if local.is_some() => {
                tracing::warn!(operation_id = %id, error = %e, "operation: Redis could not be read; answering from this instance");
                Ok(own(format!(
                    "Redis could not be read ({e}): this is the copy of the instance that runs it"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Asks an operation of any instance to stop after its current batch: this instance's own
    /// at once, any through its record's `cancel` flag (seen by its instance within
    /// `REPORT_EVERY` and a batch). Answers how it is now, and whether it was running.
    pub async fn cancel(&self, id: &str) -> Result<Option<(Seen, bool)>, RedisError> {
        let local = self.get(id);
        let mut requested = local.as_ref().is_some_and(|op| op.cancel());
        match self.store.request_cancel(id).await {
            Ok(set) => requested |= set,
            // Ours is cancelled already; its next report writes the flag.
            Err(e) if local.is_some() => {
                tracing::warn!(operation_id = %id, error = %e, "operation: the cancel flag was not written to Redis");
            }
            Err(e) => return Err(e),
        }
        Ok(self.status(id).await?.map(|seen| (seen, requested)))
    }

    /// Asks every operation this instance runs to stop after its current batch (at
    /// shutdown).
    pub fn cancel_all(&self) {
        for op in self.lock().values() {
            if op.finished_at().is_none() {
                op.progress.cancelled.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Waits until no operation runs here and every final state is written (or given up),
    /// at most `timeout`; true if so.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = async {
            let permits = self.permits.acquire_many(self.max_running).await;
            let mut unreported = self.unreported.subscribe();
            let _ = unreported.wait_for(|n| *n == 0).await;
            permits
        };
        matches!(tokio::time::timeout(timeout, all).await, Ok(Ok(_)))
    }

    fn insert(&self, op: Arc<Operation>) {
        let mut entries = self.lock();
        // Forget finished operations past their time, then the oldest beyond the cap.
        entries.retain(|_, o| {
            o.finished_at()
                .is_none_or(|at| at.elapsed() < KEEP_FINISHED)
        });
        let mut finished: Vec<(Instant, String)> = entries
            .values()
            .filter_map(|o| o.finished_at().map(|at| (at, o.id.clone())))
            .collect();
        if finished.len() >= MAX_FINISHED {
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() + 1 - MAX_FINISHED) {
                entries.remove(id);
            }
        }
        entries.insert(op.id.clone(), op);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Operation>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes one running operation's record: its heartbeats, then its final state.
struct Reporter {
    store: OperationStore,
    op: Arc<Operation>,
    /// The last write failed (logged once per run of failures).
    failing: bool,
}

impl Reporter {
    fn new(store: OperationStore, op: Arc<Operation>) -> Self {
        Self {
            store,
            op,
            failing: false,
        }
    }

    /// One progress write; a `cancel` flag set in Redis cancels the run (after its batch).
    async fn report(&mut self) {
        match self.store.write(&self.op.status()).await {
            Ok(cancel) => {
                if self.failing {
                    tracing::info!(operation_id = %self.op.id, "operation: progress written to Redis again");
                    self.failing = false;
                }
                let already = self.op.progress.cancelled.load(Ordering::Relaxed);
                if cancel && !already && self.op.cancel() {
                    tracing::info!(operation_id = %self.op.id, "retry-all cancel requested (through Redis)");
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(operation_id = %self.op.id, error = %e, "operation: progress not written to Redis; will retry");
                    self.failing = true;
                }
            }
        }
    }

    /// The final write, retried with a backoff: other instances would otherwise see it
    /// `running`, then `abandoned`.
    async fn report_final(&self) {
        let status = self.op.status();
        let mut last = match self.store.write(&status).await {
            Ok(_) => return,
            Err(e) => e,
        };
        for wait in FINAL_WRITE_BACKOFF {
            tokio::time::sleep(wait).await;
            match self.store.write(&status).await {
                Ok(_) => {
                    tracing::info!(operation_id = %self.op.id, "operation: final state written to Redis after a retry");
                    return;
                }
                Err(e) => last = e,
            }
        }
        tracing::error!(operation_id = %self.op.id, state = status.state.as_str(), error = %last, "operation: the final state could not be written to Redis; other instances will report it abandoned (this one knows it for an hour)");
    }
}

/// A name for this instance, distinct between processes and between the `Operations` of one
/// process: `<host>-<pid>-<n>`.
fn instance_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}
