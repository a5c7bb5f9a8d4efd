//! Queue backends: reading failed jobs from, and requeueing them into, the Redis a job queue
//! already uses. Nothing above this module knows a queue's key names or encodings.

use std::future::Future;

use serde::{Deserialize, Serialize};

pub mod rq;

/// Where a failed job sits: its queue, its id, and its registry score (RQ: the epoch second
/// at which its failure record expires, `+inf` for a job kept forever, `failure_ttl=-1`).
/// Listing cursors are built from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub queue: String,
    pub id: String,
    #[serde(with = "score")]
    pub score: f64,
}

/// A registry score in JSON: a number, or `"+inf"`/`"-inf"` (JSON has no infinity, and
/// serde_json writes a non-finite `f64` as `null`, which would make the cursor of a page
/// ending on a job kept forever unreadable).
mod score {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(score: &f64, s: S) -> Result<S::Ok, S::Error> {
        if score.is_finite() {
            s.serialize_f64(*score)
        } else if *score > 0.0 {
            s.serialize_str("+inf")
        } else if *score < 0.0 {
            s.serialize_str("-inf")
        } else {
            Err(serde::ser::Error::custom("a registry score is never NaN"))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Score {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Score::deserialize(d)? {
            Score::Number(n) => Ok(n),
            Score::Text(t) => match t.as_str() {
                "+inf" | "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(D::Error::custom(format!("not a score: {other:?}"))),
            },
        }
    }
}

/// A failed job as the queue recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedJob {
    pub id: String,
    /// The queue it failed on and returns to (RQ: `origin`).
    pub queue: String,
    /// The job's function name; the description when the data could not be decoded.
    pub job_type: String,
    /// The queue's status for the job (`failed`, `stopped`, …).
    pub status: String,
    /// The job's creation time as the queue wrote it: with the id, it names one incarnation
    /// of a job id (a reused id starts afresh).
    pub created_at: String,
    /// When the job most recently failed (RQ: `ended_at`), epoch ms.
    pub failed_at_ms: Option<u64>,
    /// The outermost exception's type and message, parsed from the traceback.
    pub exc_type: String,
    pub exc_message: String,
    /// The full traceback, or the queue's own failure text.
    pub traceback: String,
    /// The id of the newest entry of the job's results stream when it was read: a requeue
    /// goes through only while it is still the newest (else the decision is stale).
    pub result_id: String,
    /// Retries the queue's own retry setting still had left.
    pub retries_left: Option<u32>,
    /// How long the queue keeps the failure (seconds), when set.
    pub failure_ttl_seconds: Option<u64>,
}

/// One requeue to perform atomically.
#[derive(Debug, Clone)]
pub struct Requeue<'a> {
    pub job: &'a FailedJob,
    /// The operation it belongs to: a re-sent requeue of the same operation is recognised.
    pub operation_id: &'a str,
    /// retryguard's own state and audit keys, written in the same atomic step.
    pub state_key: &'a str,
    pub outbox_key: &'a str,
    /// The set of requeued jobs whose outcome is still to be recorded.
    pub watch_key: &'a str,
    pub state_ttl_seconds: u64,
    pub now_ms: u64,
    pub first_failed_ms: u64,
    pub policy_digest: &'a str,
    /// Push at the front of the queue instead of the back.
    pub at_front: bool,
    /// Why it is retried (the record's `error_message` when it is).
    pub reason: &'a str,
    /// The audit record's fields but decision, success, error message and attempt number,
    /// which the backend sets from what the atomic step finds.
    pub audit: &'a [(&'static str, String)],
}

/// What one atomic requeue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueResult {
    /// Requeued (now, or by an earlier send of the same operation); attempts after it.
    Retried { attempts: u32 },
    /// No longer in the failed registry: someone else requeued it.
    AlreadyRequeued,
    /// It is not the failure the decision was about any more.
    Stale { why: String },
    /// The job is gone (its dangling registry member was pruned).
    NotFound,
    /// Redis answered this job's requeue with an error, or with a reply that is none of the
    /// above: whether it happened is unknown (a script may fail after a write). Sending the
    /// same requeue again resolves it. Only this job is unknown; the rest of the batch keeps
    /// its outcomes.
    Unknown { why: String },
}

/// One delete to perform atomically (RQ: what `job.delete()` deletes, with its audit record).
#[derive(Debug, Clone)]
pub struct Delete<'a> {
    /// The job as read for the decision: the delete goes through only while it is still this
    /// failure (same registry, status, newest result, `created_at`).
    pub job: &'a FailedJob,
    /// retryguard's retry state of the job (deleted with it), the audit outbox, and the hash
    /// that keeps audit blobs by sha256 (the job's hash is stored there, as a JSON object,
    /// before the record that names it).
    pub state_key: &'a str,
    pub outbox_key: &'a str,
    pub blobs_key: &'a str,
    /// Also delete the jobs that depend on it (RQ's `delete_dependents=True`).
    pub delete_dependents: bool,
    /// Why (the record's `error_message`).
    pub reason: &'a str,
    /// The audit record's fields but decision, success and error message, which the backend
    /// sets from what the atomic step finds (and `job_blob_sha256`, which it adds).
    pub audit: &'a [(&'static str, String)],
    /// The fields of a dependent's record (who, which operation, why): the backend adds the
    /// dependent's id, queue and verdict.
    pub dependent_audit: &'a [(&'static str, String)],
}

/// What one atomic delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteResult {
    /// Deleted, with this many dependents.
    Deleted { dependents: u32 },
    /// No longer in the failed registry: someone requeued it (or deleted it).
    AlreadyRequeued,
    /// It is not the failure the decision was about any more (or a key has the wrong type).
    Stale { why: String },
    /// The job is gone (its dangling registry member was pruned).
    NotFound,
    /// Redis answered with an error or not at all: whether it happened is unknown.
    Unknown { why: String },
}

/// Counts per state of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueCounts {
    pub queue: String,
    pub queued: u64,
    pub started: u64,
    pub failed: u64,
    pub finished: u64,
    pub deferred: u64,
    pub scheduled: u64,
}

/// Errors of a queue backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// Redis did not answer (down, timed out, connection dropped): the result of a write
    /// in flight is unknown.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// The data is not a layout this adapter supports (e.g. RQ 3.x).
    #[error("unsupported queue data: {0}")]
    Unsupported(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(String),
}

impl From<crate::redis_error::RedisError> for QueueError {
    fn from(e: crate::redis_error::RedisError) -> Self {
        match e {
            crate::redis_error::RedisError::Unavailable(m) => Self::Unavailable(m),
            crate::redis_error::RedisError::Failed(m) => Self::Redis(m),
        }
    }
}

/// A queue's failed jobs, read and requeued. Implementations pipeline their reads.
pub trait QueueBackend: Send + Sync + 'static {
    /// Names of the queues that have (or had) failed jobs.
    fn failed_queues(&self) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Up to `limit` failed jobs of `queue` ordered by (score, id), strictly after `after`.
    fn failed_page(
        &self,
        queue: &str,
        after: Option<&JobRef>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobRef>, QueueError>> + Send;

    /// [`failed_page`](Self::failed_page) over `set` instead of the registry: a ZSET of
    /// some of `queue`'s failed job ids scored as in its registry (a failure group's jobs,
    /// which retryguard keeps). Its members may have left the registry since.
    fn subset_page(
        &self,
        set: &str,
        queue: &str,
        after: Option<&JobRef>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobRef>, QueueError>> + Send;

    /// [`snapshot`](Self::snapshot) of `set` (as in [`subset_page`](Self::subset_page)).
    fn snapshot_subset(
        &self,
        set: &str,
        key: &str,
        ttl_seconds: u64,
    ) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Reads jobs in one round trip. `None` for a job whose data is gone (its dangling
    /// registry member is pruned). A job whose keys cannot be read (RQ: a job hash or results
    /// stream of another Redis type) is still returned, its failure text saying why, and
    /// never fails the others; `requeue` refuses it.
    fn read_jobs(
        &self,
        refs: &[JobRef],
    ) -> impl Future<Output = Result<Vec<Option<FailedJob>>, QueueError>> + Send;

    /// Finds one failed job by id, in whichever queue's failed registry holds it.
    fn find_failed(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<FailedJob>, QueueError>> + Send;

    /// Where each of `ids` is failed, in one or two round trips: its ref, or `None` when no
    /// failed registry holds it (the auto-retry sweeper's lookup of due jobs). The default
    /// asks [`find_failed`](Self::find_failed) for each.
    fn locate(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Option<JobRef>>, QueueError>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.find_failed(id).await?.map(|j| JobRef {
                    queue: j.queue,
                    id: j.id,
                    score: 0.0,
                }));
            }
            Ok(out)
        }
    }

    /// Copies `queue`'s failed registry into `key` (expiring after `ttl_seconds`), so a long
    /// walk over it never skips a job that is removed concurrently; returns its size.
    fn snapshot(
        &self,
        queue: &str,
        key: &str,
        ttl_seconds: u64,
    ) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Members `start..start+count` of a snapshot made by `snapshot`.
    fn snapshot_page(
        &self,
        queue: &str,
        key: &str,
        start: u64,
        count: u64,
    ) -> impl Future<Output = Result<Vec<JobRef>, QueueError>> + Send;

    /// Performs each requeue atomically, pipelined, each with its own result: one job's
    /// data (odd bytes, a key of the wrong type) is that job's refusal, never an error of the
    /// batch. A `QueueError::Unavailable` means the outcome of the whole batch is unknown:
    /// re-send it with the same operation id.
    fn requeue(
        &self,
        batch: &[Requeue<'_>],
    ) -> impl Future<Output = Result<Vec<RequeueResult>, QueueError>> + Send;

    /// Deletes each job atomically, pipelined, each with its own result (as `requeue`): the
    /// job's hash is kept as an audit blob first, then one script re-checks the job, deletes
    /// it and appends its record. A `QueueError::Unavailable` leaves the batch unknown.
    fn delete(
        &self,
        batch: &[Delete<'_>],
    ) -> impl Future<Output = Result<Vec<DeleteResult>, QueueError>> + Send;

    /// Job counts per state of each of `queues`.
    fn counts(
        &self,
        queues: &[String],
    ) -> impl Future<Output = Result<Vec<QueueCounts>, QueueError>> + Send;
}
