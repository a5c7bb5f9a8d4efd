//! Retry-all operations: each runs in its own task past the request that started it, at most
//! `max_concurrent_retry_all` at once; `GET /api/v1/operations/{id}` watches one and
//! `DELETE` cancels it. Finished operations are kept in memory for an hour, capped in count.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::views::{SummaryJson, all_counts};
use super::{AppState, Service};
use crate::clock::format_rfc3339;
use crate::clock::{new_operation_id, now_ms};
use crate::retry::{JobFilter, Progress, RetryOptions, Summary};

/// How long a finished operation stays visible.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Most finished operations kept (the oldest go first).
const MAX_FINISHED: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(show, cancel))
}

/// How an operation ended: its summary, or the error that stopped it (already logged).
pub type Ended = Result<Summary, ApiError>;

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
            e.log();
        }
        self.ended
            .send_replace(Some((ended, now_ms(), Instant::now())));
    }

    fn finished_at(&self) -> Option<Instant> {
        self.ended.borrow().as_ref().map(|(_, _, at)| *at)
    }

    /// What `GET /api/v1/operations/{id}` shows.
    fn view(&self) -> OperationJson {
        let ended = self.ended.borrow();
        let cancel_requested = self.progress.cancelled.load(Ordering::Relaxed);
        let (state, summary, error, finished_at) = match ended.as_ref() {
            None => ("running", None, None, None),
            Some((Ok(s), at, _)) => (
                if s.cancelled { "cancelled" } else { "finished" },
                Some(SummaryJson::from(s)),
                None,
                Some(format_rfc3339(*at)),
            ),
            Some((Err(e), at, _)) => ("failed", None, Some(e.body()), Some(format_rfc3339(*at))),
        };
        OperationJson {
            operation_id: self.id.clone(),
            state,
            dry_run: self.dry_run,
            cancel_requested,
            total: self.progress.total.load(Ordering::Relaxed),
            processed: self.progress.processed.load(Ordering::Relaxed),
            counts: all_counts(&self.progress.counts()),
            started_at: format_rfc3339(self.started_ms),
            finished_at,
            summary,
            error,
        }
    }
}

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationJson {
    pub operation_id: String,
    /// `running`, `finished`, `failed` or `cancelled`.
    pub state: &'static str,
    pub dry_run: bool,
    pub cancel_requested: bool,
    /// Jobs in the snapshots of the failed registries it walks.
    pub total: u64,
    /// Jobs that got an outcome so far.
    pub processed: u64,
    /// Jobs per outcome so far, every outcome present.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub summary: Option<SummaryJson>,
    /// `{"error": {"code", "message"}}` of a failed operation.
    pub error: Option<ErrorBody>,
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
    ) -> Result<Arc<Operation>, ApiError> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            ApiError::TooManyOperations {
                running: self.max_running,
            }
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
                Ok(result) => result.map_err(ApiError::from),
                Err(e) => Err(ApiError::Internal(format!(
                    "the retry-all task failed: {e}"
                ))),
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

fn find(state: &AppState, id: &str) -> Result<Arc<Operation>, ApiError> {
    if id.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_operation_id",
            "an operation id is at most 128 bytes",
        ));
    }
    state.operations.get(id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no operation {id:?} (finished ones are kept for an hour)"
        ))
    })
}

/// A retry-all operation: its state, progress and summary (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/operations/{id}",
    tag = "operations",
    params(("id" = String, Path, description = "The operation id (at most 128 bytes)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation", body = OperationJson),
        (status = 400, description = "A malformed id (`invalid_operation_id`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 404, description = "No such operation (finished ones are kept for an hour)", body = ErrorBody),
        (status = 503, description = "Request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    Ok(Json(find(&state, &id)?.view()))
}

/// Asks the operation to stop after its current batch; answers with its state (role
/// `operate`).
#[utoipa::path(
    delete,
    path = "/api/v1/operations/{id}",
    tag = "operations",
    params(("id" = String, Path, description = "The operation id (at most 128 bytes)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The operation, `cancel_requested` set if it was running", body = OperationJson),
        (status = 400, description = "A malformed id (`invalid_operation_id`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 404, description = "No such operation (finished ones are kept for an hour)", body = ErrorBody),
        (status = 503, description = "Request timeout", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<OperationJson>, ApiError> {
    let op = find(&state, &id)?;
    if op.finished_at().is_none() {
        op.progress.cancelled.store(true, Ordering::Relaxed);
        tracing::info!(operation_id = %op.id, "retry-all cancel requested");
    }
    Ok(Json(op.view()))
}
