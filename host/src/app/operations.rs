//! Retry-all operations of one process: each runs in a task of its own, at most
//! `[server] max_concurrent_retry_all` at once, watched through its progress and cancelled
//! after its current batch; a finished one stays visible for an hour. The API shows them
//! (`GET /api/v1/operations/{id}`); shutdown cancels and drains them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::Service;
use crate::clock::{new_operation_id, now_ms};
use crate::retry::{JobFilter, Progress, RetryError, RetryOptions, Summary};

/// How long a finished operation stays visible.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Most finished operations kept (the oldest go first).
const MAX_FINISHED: usize = 1000;

/// Why an operation stopped before its summary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Retry(RetryError),
    #[error("the retry-all task failed: {0}")]
    Panicked(String),
}

/// `max_concurrent_retry_all` operations run already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub running: u32,
}

/// How an operation ended: its summary, or the error that stopped it (already logged).
pub type Ended = Result<Summary, OperationError>;

/// One retry-all, running or finished.
#[derive(Debug)]
pub struct Operation {
    id: String,
    dry_run: bool,
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

    /// Whether it ran as a dry run.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// When it started (epoch ms).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Its progress so far (and its cancel flag).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// How and when (epoch ms) it ended; `None` while it runs.
    pub fn ended(&self) -> Option<(Ended, u64)> {
        self.ended
            .borrow()
            .as_ref()
            .map(|(e, at, _)| (e.clone(), *at))
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

/// The registry of operations.
#[derive(Debug)]
pub struct Operations {
    entries: Mutex<HashMap<String, Arc<Operation>>>,
    permits: Arc<Semaphore>,
    max_running: u32,
}

impl Operations {
    pub fn new(max_running: u32) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_running as usize)),
            max_running,
        }
    }

    /// Starts a retry-all in its own task; `429` when `max_running` already run.
    pub fn start(
        &self,
        service: Arc<Service>,
        filter: JobFilter,
        options: RetryOptions,
        actor: String,
    ) -> Result<Arc<Operation>, Busy> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Busy {
                running: self.max_running,
            })?;
        let (ended, _) = watch::channel(None);
        let op = Arc::new(Operation {
            id: new_operation_id(),
            dry_run: options.dry_run,
            started_ms: now_ms(),
            progress: Progress::default(),
            ended,
        });
        self.insert(Arc::clone(&op));
        tracing::info!(operation_id = %op.id, ?filter, dry_run = options.dry_run, force = options.force, "retry-all started");
        let task_op = Arc::clone(&op);
        tokio::spawn(async move {
            let run_op = Arc::clone(&task_op);
            // The work runs in a task of its own so that even a panic ends the operation.
            let run = tokio::spawn(async move {
                service
                    .retry_all(&filter, &options, &actor, &run_op.id, &run_op.progress)
                    .await
            });
            let ended = match run.await {
                Ok(result) => result.map_err(OperationError::Retry),
                Err(e) => Err(OperationError::Panicked(e.to_string())),
            };
            tracing::info!(operation_id = %task_op.id, ok = ended.is_ok(), "retry-all ended");
            // The slot is free before anyone can see the operation ended.
            drop(permit);
            task_op.finish(ended);
        });
        Ok(op)
    }

    /// A running operation, or a finished one younger than `KEEP_FINISHED`.
    pub fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.lock()
            .get(id)
            .filter(|o| {
                o.finished_at()
                    .is_none_or(|at| at.elapsed() < KEEP_FINISHED)
            })
            .cloned()
    }

    /// Asks every running operation to stop after its current batch (at shutdown).
    pub fn cancel_all(&self) {
        for op in self.lock().values() {
            if op.finished_at().is_none() {
                op.progress.cancelled.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Waits until no operation runs, at most `timeout`; true if none does.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = self.permits.acquire_many(self.max_running);
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
