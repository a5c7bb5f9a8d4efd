//! Requeue: jobs already evaluated and let through go back to their queue, each by one atomic
//! script (`queue::rq`'s `requeue.lua`) that re-checks the job, bumps its retry state and
//! appends its audit record — the verdict of which the script writes itself. A batch whose
//! reply is lost is re-sent with the same operation id, which the script recognises; what
//! stays unconfirmed is `unknown`, never guessed.
//!
//! It takes evaluated jobs and a queue backend, and never calls back into the service.

use std::time::Duration;

use super::evaluate::Evaluated;
use super::outcome::{JobOutcome, Outcome};
use super::records::{self, Context};
use super::types::ServiceConfig;
use crate::keyspace;
use crate::queue::{FailedJob, QueueBackend, QueueError, Requeue, RequeueResult};

/// Requeues `jobs` (all evaluated as due, or forced) and returns one outcome per job, in
/// order.
pub async fn requeue<B: QueueBackend>(
    backend: &B,
    jobs: &[Evaluated],
    cx: Context<'_>,
    config: &ServiceConfig,
) -> Vec<JobOutcome> {
    let outcomes_if_retried: Vec<JobOutcome> =
        jobs.iter().map(|e| outcome_if_retried(e, cx)).collect();
    let audits: Vec<Vec<(&'static str, String)>> = outcomes_if_retried
        .iter()
        .zip(jobs)
        .map(|(o, e)| {
            let failure = Some((&e.input, e.binding.active.params_json.as_str()));
            records::requeue_record(o, cx, failure, e.shadow.as_ref()).fields()
        })
        .collect();
    let states: Vec<String> = jobs
        .iter()
        .map(|e| keyspace::job_state(&e.view.job.id))
        .collect();
    let batch: Vec<Requeue<'_>> = jobs
        .iter()
        .zip(&audits)
        .zip(&states)
        .zip(&outcomes_if_retried)
        .map(|(((e, audit), state_key), o)| Requeue {
            job: &e.view.job,
            operation_id: cx.operation_id,
            state_key,
            outbox_key: keyspace::AUDIT_OUTBOX,
            watch_key: keyspace::OUTCOMES_WATCH,
            reason: &o.reason,
            state_ttl_seconds: state_ttl(&e.view.job, config),
            now_ms: cx.now_ms,
            first_failed_ms: e.input.first_failed_at_ms,
            policy_digest: &e.view.policy_digest,
            at_front: cx.options.at_front,
            audit,
        })
        .collect();
    let mut last_error = None;
    for attempt in 0..=config.requeue_resends {
        match backend.requeue(&batch).await {
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

/// How long a job's retry state lives: its failure TTL (RQ's default when it has none)
/// plus the grace period.
pub fn state_ttl(job: &FailedJob, config: &ServiceConfig) -> u64 {
    job.failure_ttl_seconds
        .unwrap_or(config.default_failure_ttl_seconds)
        .saturating_add(config.state_grace_seconds)
}

/// The outcome a job gets if the script requeues it.
fn outcome_if_retried(e: &Evaluated, cx: Context<'_>) -> JobOutcome {
    let view = &e.view;
    JobOutcome {
        job_id: view.job.id.clone(),
        queue: view.job.queue.clone(),
        job_type: view.job.job_type.clone(),
        outcome: Outcome::Retried,
        reason: if cx.options.force {
            format!("forced: {}", cx.options.reason.clone().unwrap_or_default())
        } else {
            view.reason.clone()
        },
        classification: view.classification.clone(),
        attempt: view.attempts + 1,
        policy_digest: view.policy_digest.clone(),
        retry_at_ms: None,
        dry_run: false,
        forced: cx.options.force,
    }
}

/// The outcome once the script has answered for the job.
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::policy::Params;
    use crate::queue::{JobRef, QueueCounts};
    use crate::registry::Table;
    use crate::retry::evaluate::tests::{default_policy, job};
    use crate::retry::evaluate::{ClassificationCache, evaluate_one};
    use crate::retry::filter::JobFilter;
    use crate::retry::state::RetryState;
    use crate::retry::types::{RetryOptions, ShadowDecision};

    const NOW: u64 = 1_800_000_000_000;

    /// What the backend was sent: per send, the operation id and each job's audit fields.
    type Sent = Vec<(String, Vec<Vec<(&'static str, String)>>)>;

    /// A queue backend that answers each requeue send from a script, and records the sends.
    /// Only `requeue` is used by the code under test.
    struct Scripted {
        replies: Mutex<VecDeque<Result<Vec<RequeueResult>, QueueError>>>,
        sent: Mutex<Sent>,
    }

    impl Scripted {
        fn new(replies: Vec<Result<Vec<RequeueResult>, QueueError>>) -> Self {
            Self {
                replies: Mutex::new(replies.into()),
                sent: Mutex::default(),
            }
        }
        fn sent(&self) -> Sent {
            self.sent.lock().unwrap().clone()
        }
    }

    fn unused<T>() -> Result<T, QueueError> {
        Err(QueueError::Unsupported("not used by requeue".into()))
    }

    impl QueueBackend for Scripted {
        async fn failed_queues(&self) -> Result<Vec<String>, QueueError> {
            unused()
        }
        async fn failed_page(
            &self,
            _: &str,
            _: Option<&JobRef>,
            _: usize,
        ) -> Result<Vec<JobRef>, QueueError> {
            unused()
        }
        async fn read_jobs(&self, _: &[JobRef]) -> Result<Vec<Option<FailedJob>>, QueueError> {
            unused()
        }
        async fn find_failed(&self, _: &str) -> Result<Option<FailedJob>, QueueError> {
            unused()
        }
        async fn snapshot(&self, _: &str, _: &str, _: u64) -> Result<u64, QueueError> {
            unused()
        }
        async fn snapshot_page(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: u64,
        ) -> Result<Vec<JobRef>, QueueError> {
            unused()
        }
        async fn requeue(&self, batch: &[Requeue<'_>]) -> Result<Vec<RequeueResult>, QueueError> {
            let op = batch
                .first()
                .map(|r| r.operation_id.to_string())
                .unwrap_or_default();
            let audits = batch.iter().map(|r| r.audit.to_vec()).collect();
            self.sent.lock().unwrap().push((op, audits));
            self.replies
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(QueueError::Redis("no reply scripted".into())))
        }
        async fn subset_page(
            &self,
            _: &str,
            _: &str,
            _: Option<&JobRef>,
            _: usize,
        ) -> Result<Vec<JobRef>, QueueError> {
            unused()
        }
        async fn snapshot_subset(&self, _: &str, _: &str, _: u64) -> Result<u64, QueueError> {
            unused()
        }
        async fn counts(&self, _: &[String]) -> Result<Vec<QueueCounts>, QueueError> {
            unused()
        }
        async fn delete(
            &self,
            _: &[crate::queue::Delete<'_>],
        ) -> Result<Vec<crate::queue::DeleteResult>, QueueError> {
            unused()
        }
    }

    /// `n` jobs evaluated as due by the default policy.
    fn due(n: usize) -> Vec<Evaluated> {
        let (engine, policy) = default_policy();
        let table = Table::single(policy, Params::new());
        let cache = ClassificationCache::default();
        (0..n)
            .map(|i| {
                let j = job(&format!("j{i}"), "ConnectionError", NOW - 120_000);
                let e = evaluate_one(
                    &engine,
                    &cache,
                    &table,
                    &JobFilter::default(),
                    j,
                    &RetryState::default(),
                    NOW,
                    true,
                    &crate::brake::Snapshot::default(),
                )
                .unwrap();
                assert_eq!(e.view.outcome, Outcome::Retried);
                e
            })
            .collect()
    }

    fn cx(options: &RetryOptions) -> Context<'_> {
        Context {
            actor: "ops",
            options,
            operation_id: "op-1",
            now_ms: NOW,
        }
    }

    fn config(resends: u32) -> ServiceConfig {
        ServiceConfig {
            requeue_resends: resends,
            ..ServiceConfig::default()
        }
    }

    #[tokio::test]
    async fn each_job_gets_the_outcome_the_script_answered() {
        let backend = Scripted::new(vec![Ok(vec![
            RequeueResult::Retried { attempts: 3 },
            RequeueResult::AlreadyRequeued,
            RequeueResult::Stale {
                why: "origin changed".into(),
            },
            RequeueResult::NotFound,
            RequeueResult::Unknown {
                why: "WRONGTYPE".into(),
            },
        ])]);
        let options = RetryOptions::new();
        let outcomes = requeue(&backend, &due(5), cx(&options), &config(3)).await;
        let got: Vec<Outcome> = outcomes.iter().map(|o| o.outcome).collect();
        assert_eq!(
            got,
            [
                Outcome::Retried,
                Outcome::AlreadyRequeued,
                Outcome::StaleDecision,
                Outcome::NotFound,
                Outcome::Unknown
            ]
        );
        assert_eq!(outcomes[0].attempt, 3, "the attempt the script counted");
        assert_eq!(outcomes[0].reason, "due now");
        assert_eq!(outcomes[2].reason, "the decision is stale: origin changed");
        assert!(outcomes[4].reason.contains("WRONGTYPE"));
        assert_eq!(backend.sent().len(), 1, "answered: sent once");
    }

    #[tokio::test]
    async fn a_lost_reply_is_sent_again_unchanged_under_the_same_operation() {
        let backend = Scripted::new(vec![
            Err(QueueError::Unavailable("connection dropped".into())),
            Ok(vec![
                RequeueResult::Retried { attempts: 1 },
                RequeueResult::Retried { attempts: 1 },
            ]),
        ]);
        let options = RetryOptions::new();
        let outcomes = requeue(&backend, &due(2), cx(&options), &config(3)).await;
        assert!(outcomes.iter().all(|o| o.outcome == Outcome::Retried));
        let sent = backend.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            sent[0], sent[1],
            "the same operation id and records, byte for byte"
        );
        assert_eq!(sent[0].0, "op-1");
    }

    #[tokio::test]
    async fn an_unconfirmed_requeue_is_unknown_never_guessed() {
        let lost = || Err(QueueError::Unavailable("timed out".into()));
        let backend = Scripted::new(vec![lost(), lost()]);
        let options = RetryOptions::new();
        let outcomes = requeue(&backend, &due(2), cx(&options), &config(1)).await;
        assert_eq!(backend.sent().len(), 2, "one send and one resend");
        for o in &outcomes {
            assert_eq!(o.outcome, Outcome::Unknown);
            assert!(o.reason.contains("timed out") && o.reason.contains("already_requeued"));
        }
        // An error that is not a lost reply is not re-sent.
        let backend = Scripted::new(vec![Err(QueueError::Redis("NOSCRIPT".into()))]);
        let outcomes = requeue(&backend, &due(1), cx(&options), &config(3)).await;
        assert_eq!(backend.sent().len(), 1);
        assert_eq!(outcomes[0].outcome, Outcome::Unknown);
    }

    #[tokio::test]
    async fn the_script_gets_the_whole_record_but_the_verdict_it_writes_itself() {
        let backend = Scripted::new(vec![Ok(vec![RequeueResult::Retried { attempts: 1 }])]);
        let mut jobs = due(1);
        jobs[0].shadow = Some(ShadowDecision {
            digest: "sha256:cd".into(),
            pattern: "*".into(),
            outcome: "blocked_cooldown".into(),
            retry_at_ms: Some(NOW + 1),
            failure_type: Some("network_error".into()),
            reason: "later".into(),
            active_outcome: "retried".into(),
            active_retry_at_ms: Some(NOW - 60_000),
        });
        let options = RetryOptions {
            force: true,
            reason: Some("INC-7".into()),
            ..RetryOptions::new()
        };
        let outcomes = requeue(&backend, &jobs, cx(&options), &config(0)).await;
        assert!(outcomes[0].forced);
        assert_eq!(outcomes[0].reason, "forced: INC-7");
        let sent = backend.sent();
        let fields = &sent[0].1[0];
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        for verdict in ["decision", "success", "error_message", "attempt_number"] {
            assert_eq!(get(verdict), None, "{verdict} is the script's");
        }
        assert_eq!(get("job_id"), Some("j0"));
        assert_eq!(get("user_or_system"), Some("ops"));
        assert_eq!(get("retry_reason"), Some("INC-7"));
        assert_eq!(get("forced"), Some("true"));
        assert_eq!(get("failure_type"), Some("network_error"));
        assert_eq!(get("shadow_policy_digest"), Some("sha256:cd"));
        assert_eq!(get("params"), Some("{}"));
        assert!(get("traceback_sha256").is_some_and(|s| s.len() == 64));
        assert_eq!(get("now_ms"), Some(NOW.to_string().as_str()));
    }

    #[test]
    fn retry_state_outlives_the_failure_by_the_grace_period() {
        let config = ServiceConfig::default();
        let mut j = job("j1", "ConnectionError", NOW);
        assert_eq!(
            state_ttl(&j, &config),
            config.default_failure_ttl_seconds + config.state_grace_seconds
        );
        j.failure_ttl_seconds = Some(600);
        assert_eq!(state_ttl(&j, &config), 600 + config.state_grace_seconds);
    }
}
