//! Classification: a new group by the policy bound to its job type, and every group again
//! when the bindings change (its counts move with it).

use std::sync::Arc;

use crate::redis_link::Link;

use super::Reconciler;
use crate::clock::now_ms;
use crate::keyspace;
use crate::queue::FailedJob;
use crate::queue::rq::RqBackend;
use crate::redis_error::RedisError;
use crate::retry::RetryService;
use crate::retry::evaluate::{evaluate_cached, failure_input};
use crate::retry::state::RetryState;
use crate::triage::index::{self, Fenced};

impl Reconciler {
    /// Classifies every group again when the bindings changed since they were classified.
    pub(super) async fn reclassify_if_rebound(
        &mut self,
        conn: &mut Link,
    ) -> Result<(), RedisError> {
        let table = self.service.table();
        if self.revision == Some(table.revision) {
            return Ok(());
        }
        let groups: Vec<String> = redis::cmd("ZRANGE")
            .arg(keyspace::TRIAGE_GROUPS)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        let now = now_ms();
        for chunk in groups.chunks(100) {
            let mut pipe = redis::pipe();
            for fp in chunk {
                pipe.cmd("HMGET").arg(keyspace::triage_group(fp)).arg(&[
                    "job_type",
                    "exc_type",
                    "failure_type",
                    "retryable",
                    "policy_digest",
                ]);
                pipe.cmd("HMGET")
                    .arg(keyspace::triage_group_example(fp))
                    .arg(&["job_id", "message", "traceback"]);
            }
            let replies: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
            let mut examples = Vec::new();
            for (fp, pair) in chunk.iter().zip(replies.chunks(2)) {
                let [group, example] = pair else { continue };
                let field = |v: &Vec<Option<String>>, i: usize| {
                    v.get(i).cloned().flatten().unwrap_or_default()
                };
                examples.push((
                    fp.clone(),
                    (field(group, 2), field(group, 3) == "1", field(group, 4)),
                    FailedJob {
                        id: field(example, 0),
                        queue: String::new(),
                        job_type: field(group, 0),
                        status: "failed".into(),
                        created_at: String::new(),
                        failed_at_ms: Some(now),
                        exc_type: field(group, 1),
                        exc_message: field(example, 1),
                        traceback: field(example, 2),
                        result_id: String::new(),
                        retries_left: None,
                        failure_ttl_seconds: None,
                    },
                ));
            }
            let service = Arc::clone(&self.service);
            let changed: Vec<(String, String, bool, String)> =
                tokio::task::spawn_blocking(move || {
                    examples
                        .into_iter()
                        .filter_map(|(fp, old, job)| {
                            let new = classify(&service, &job, now);
                            (new != old).then_some((fp, new.0, new.1, new.2))
                        })
                        .collect()
                })
                .await
                .map_err(|e| RedisError::Failed(format!("reclassifying groups: {e}")))?;
            for (fp, failure_type, retryable, digest) in changed {
                let r = index::reclassify(
                    conn,
                    self.lease.token(),
                    &fp,
                    &failure_type,
                    retryable,
                    &digest,
                    now,
                )
                .await?;
                if r == Fenced::LeaseLost {
                    self.lease.lost();
                    return Ok(());
                }
            }
        }
        self.revision = Some(table.revision);
        Ok(())
    }
}

/// How the policy bound to the job's type classifies it: failure type, retryable, and the
/// policy's digest. A policy that fails is `policy_error`, not retryable.
pub(super) fn classify(
    service: &RetryService<RqBackend>,
    job: &FailedJob,
    now: u64,
) -> (String, bool, String) {
    let table = service.table();
    let binding = table.resolve(&job.job_type);
    let input = failure_input(job, &RetryState::default());
    let digest = binding.active.policy.digest().to_string();
    match evaluate_cached(
        service.engine(),
        service.cache(),
        job,
        &input,
        &binding.active,
        now,
    ) {
        Ok(e) => (
            e.classification.failure_type,
            e.classification.retryable,
            digest,
        ),
        Err(_) => ("policy_error".to_string(), false, digest),
    }
}
