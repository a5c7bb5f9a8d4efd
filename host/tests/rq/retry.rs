//! The retry service against real RQ 2.12 data and real workers: listing with
//! classification, exactly-once requeue under concurrency, races with RQ itself, and the
//! policy's decisions enforced.

use std::collections::BTreeMap;
use std::sync::Arc;

use retryguard::clock::new_operation_id;
use retryguard::keyspace;
use retryguard::policy::{EngineConfig, PolicyEngine};
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::queue::{QueueBackend, Requeue, RequeueResult};
use retryguard::retry::{
    JobFilter, Outcome, Progress, RetryError, RetryOptions, RetryService, ServiceConfig,
};

use crate::support::{JobHash, MakeFailed, Python, RedisServer, connect, query, redis_get};

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The retry service over the built-in policy with `pairs` (the other suites build theirs
/// with this too).
pub(crate) async fn service(url: &str, pairs: &[(&str, &str)]) -> RetryService<RqBackend> {
    service_with(url, pairs, ServiceConfig::default().batch_size).await
}

async fn service_with(
    url: &str,
    pairs: &[(&str, &str)],
    batch_size: usize,
) -> RetryService<RqBackend> {
    let backend = RqBackend::connect(url, RedisTimeouts::default())
        .await
        .expect("connects");
    service_over(backend, pairs, batch_size)
}

/// The retry service over `backend` (connected by the caller: over TLS, through Sentinel).
pub(crate) fn service_over(
    backend: RqBackend,
    pairs: &[(&str, &str)],
    batch_size: usize,
) -> RetryService<RqBackend> {
    let conn = backend.connection();
    let engine = Arc::new(
        PolicyEngine::new(EngineConfig {
            max_concurrent_evaluations: 8,
            ..EngineConfig::default()
        })
        .expect("engine"),
    );
    let policy = engine.load_builtin().expect("builtin");
    RetryService::new(
        backend,
        conn,
        engine,
        policy,
        params(pairs),
        ServiceConfig {
            batch_size,
            ..ServiceConfig::default()
        },
    )
}

/// A requeue of `job` straight through the backend, as the service would send it.
fn raw_requeue<'a>(
    job: &'a retryguard::queue::FailedJob,
    operation_id: &'a str,
    state_key: &'a str,
) -> Requeue<'a> {
    static AUDIT: [(&str, String); 0] = [];
    Requeue {
        job,
        operation_id,
        state_key,
        outbox_key: keyspace::AUDIT_OUTBOX,
        watch_key: keyspace::OUTCOMES_WATCH,
        reason: "test",
        state_ttl_seconds: 60,
        now_ms: 1,
        first_failed_ms: 1,
        policy_digest: "d",
        at_front: false,
        audit: &AUDIT,
    }
}

/// Every job due now: the default policy with no cooldown.
pub(crate) const NO_COOLDOWN: &[(&str, &str)] = &[("cooldown_seconds", "0")];

fn runs_by_job(con: &mut redis::Connection, key: &str) -> BTreeMap<String, u64> {
    query(con, &["HGETALL", &format!("{key}:by_job")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_real_failures_with_job_type_classification_and_decision() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    for (func, _) in FAMILIES {
        python.make_failed(&url, "zoo", 2, &format!("jobs.{func}"), "");
    }
    let svc = service(&url, &[]).await;
    let page = svc
        .list(&JobFilter::default(), None, 1000)
        .await
        .expect("lists");
    assert_eq!(page.jobs.len(), FAMILIES.len() * 2);
    assert!(page.next_cursor.is_none());
    for view in &page.jobs {
        let func = view
            .job
            .job_type
            .strip_prefix("jobs.")
            .expect("job type decoded");
        let (_, want) = FAMILIES
            .iter()
            .find(|(f, _)| *f == func)
            .expect("a known family");
        let c = view.classification.as_ref().expect("classified");
        assert_eq!(&c.failure_type, want, "{func}: {}", c.reason);
        assert!(!view.job.traceback.is_empty());
        assert!(view.job.failed_at_ms.is_some());
        let expected = if c.retryable {
            Outcome::BlockedCooldown
        } else if c.failure_type == "unknown" {
            Outcome::BlockedUnknown
        } else {
            Outcome::BlockedNonRetryable
        };
        assert_eq!(view.outcome, expected, "{func}");
    }

    // Paging with (score, id) cursors visits every job once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = svc
            .list(&JobFilter::default(), cursor, 3)
            .await
            .expect("page");
        seen.extend(page.jobs.iter().map(|v| v.job.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), FAMILIES.len() * 2);
    assert_eq!(unique.len(), seen.len());

    // Filters by failure type and retryability.
    let filter = JobFilter {
        failure_type: Some("validation_error".into()),
        ..JobFilter::default()
    };
    let page = svc.list(&filter, None, 100).await.expect("filtered");
    assert_eq!(page.jobs.len(), 2);
}

const FAMILIES: &[(&str, &str)] = &[
    ("network_error", "network_error"),
    ("timeout", "timeout"),
    ("rate_limit", "rate_limit"),
    ("database_lock", "database_lock"),
    ("validation_error", "validation_error"),
    ("logic_error", "logic_error"),
    ("data_not_found", "data_not_found"),
    ("permission_error", "permission_error"),
    ("custom_unknown", "unknown"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_runs_again_once_and_finishes() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "once", 5, "jobs.fail_once", "runs");
    let svc = service(&url, NO_COOLDOWN).await;
    for id in &ids {
        let o = svc
            .retry(id, &RetryOptions::new(), "local")
            .await
            .expect("retries");
        assert_eq!(o.outcome, Outcome::Retried, "{}", o.reason);
        assert_eq!(o.attempt, 1);
        // A second retry finds nothing to do.
        let again = svc
            .retry(id, &RetryOptions::new(), "local")
            .await
            .expect("answers");
        assert!(
            matches!(again.outcome, Outcome::NotFound | Outcome::AlreadyRequeued),
            "{again:?}"
        );
    }
    python.run_worker_burst(&url, &["once"]);
    let mut con = connect(&url);
    for id in &ids {
        assert_eq!(
            JobHash::read(&mut con, id).text("status").as_deref(),
            Some("finished")
        );
    }
    let runs = runs_by_job(&mut con, "runs");
    assert!(ids.iter().all(|id| runs.get(id) == Some(&2)), "{runs:?}");
    // Every decision reached the audit outbox.
    let outbox: u64 = query(&mut con, &["XLEN", keyspace::AUDIT_OUTBOX]);
    assert_eq!(outbox, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_retry_alls_requeue_each_job_exactly_once() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "race", 200, "jobs.count_and_fail", "runs");
    let svc = Arc::new(service(&url, NO_COOLDOWN).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = Arc::clone(&svc);
        tasks.push(tokio::spawn(async move {
            let progress = Progress::default();
            svc.retry_all(
                &JobFilter::default(),
                &RetryOptions::new(),
                "local",
                &new_operation_id(),
                &progress,
            )
            .await
            .expect("retry-all")
        }));
    }
    let mut retried = 0;
    for t in tasks {
        let summary = t.await.expect("task");
        retried += summary.counts.get(&Outcome::Retried).copied().unwrap_or(0);
        let others: u64 = summary
            .counts
            .iter()
            .filter(|(o, _)| **o != Outcome::Retried)
            .map(|(o, n)| {
                assert!(
                    matches!(
                        o,
                        Outcome::AlreadyRequeued | Outcome::NotFound | Outcome::StaleDecision
                    ),
                    "{o:?}"
                );
                *n
            })
            .sum();
        assert_eq!(summary.counts.values().sum::<u64>(), summary.total);
        let _ = others;
    }
    assert_eq!(
        retried, 200,
        "each job requeued exactly once across callers"
    );
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:race"]);
    assert_eq!(queued, 200, "no id pushed twice");

    python.run_worker_burst(&url, &["race"]);
    let runs = runs_by_job(&mut con, "runs");
    assert_eq!(runs.len(), 200);
    assert!(
        ids.iter().all(|id| runs.get(id) == Some(&2)),
        "every job ran exactly one more time: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rq_requeued_and_that_failed_again_since_the_decision_is_stale() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "stale", 1, "jobs.count_and_fail", "runs");
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .expect("connects");
    let decided = backend
        .find_failed(&ids[0])
        .await
        .expect("reads")
        .expect("failed");

    // Between the decision and the requeue, RQ itself requeues it and it fails again.
    python.rq(
        &url,
        &["requeue", "--all", "--queue", "stale", "--url", &url],
    );
    python.run_worker_burst(&url, &["stale"]);

    let state_key = keyspace::job_state(&decided.id);
    let requeue = raw_requeue(&decided, "op-stale", &state_key);
    let result = backend.requeue(&[requeue]).await.expect("answers");
    assert!(
        matches!(&result[0], RequeueResult::Stale { .. }),
        "{result:?}"
    );
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:stale"]);
    assert_eq!(queued, 0, "not requeued on a stale decision");
    let runs: u64 = query(&mut con, &["GET", "runs"]);
    assert_eq!(
        runs, 2,
        "the original run and RQ's own requeue, nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_requeue_of_the_same_operation_is_answered_not_repeated() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "lost", 1, "jobs.count_and_fail", "runs");
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .expect("connects");
    let job = backend.find_failed(&ids[0]).await.unwrap().unwrap();
    let state_key = keyspace::job_state(&job.id);
    let requeue = raw_requeue(&job, "op-lost-reply", &state_key);
    let first = backend
        .requeue(std::slice::from_ref(&requeue))
        .await
        .unwrap();
    // The reply was "lost": the caller re-sends the same operation.
    let second = backend
        .requeue(std::slice::from_ref(&requeue))
        .await
        .unwrap();
    assert_eq!(first, [RequeueResult::Retried { attempts: 1 }]);
    assert_eq!(second, [RequeueResult::Retried { attempts: 1 }]);
    // Another operation is told the truth.
    let other = Requeue {
        operation_id: "op-other",
        ..requeue.clone()
    };
    let third = backend.requeue(&[other]).await.unwrap();
    assert_eq!(third, [RequeueResult::AlreadyRequeued]);
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:lost"]);
    assert_eq!(queued, 1);
    let outbox: u64 = query(&mut con, &["XLEN", keyspace::AUDIT_OUTBOX]);
    assert_eq!(
        outbox, 2,
        "one audit record for the requeue (not for its re-send), one for the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_cooldown_max_attempts_non_retryable_and_force() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let net = python.make_failed(&url, "rules", 1, "jobs.count_and_fail", "runs");
    let bad = python.make_failed(&url, "rules", 1, "jobs.validation_error", "");
    let opts = RetryOptions::new();

    // Default cooldown (60 s) counted from ended_at: blocked, with the time it opens.
    let svc = service(&url, &[]).await;
    let o = svc.retry(&net[0], &opts, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::BlockedCooldown);
    let ended = JobHash::read(&mut connect(&url), &net[0])
        .time_ms("ended_at")
        .expect("ended_at");
    assert_eq!(o.retry_at_ms, Some(ended + 60_000));

    // max_attempts=1: one retry, then the job (failing again) is held.
    let svc = service(&url, &[("cooldown_seconds", "0"), ("max_attempts", "1")]).await;
    let o = svc.retry(&net[0], &opts, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::Retried);
    python.run_worker_burst(&url, &["rules"]);
    let o = svc.retry(&net[0], &opts, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::BlockedMaxAttempts, "{}", o.reason);
    assert_eq!(o.attempt, 1);

    // Non-retryable: held, unless retry_only_retryable=false lets it through.
    let o = svc.retry(&bad[0], &opts, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::BlockedNonRetryable);
    let dry_through = RetryOptions {
        retry_only_retryable: false,
        dry_run: true,
        ..RetryOptions::new()
    };
    let o = svc.retry(&bad[0], &dry_through, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::Retried);
    assert!(o.dry_run);

    // force needs a reason; with one it overrides max attempts (never atomicity).
    let force = RetryOptions {
        force: true,
        ..RetryOptions::new()
    };
    let err = svc.retry(&net[0], &force, "local").await.unwrap_err();
    assert!(matches!(err, RetryError::ForceWithoutReason));
    let force = RetryOptions {
        force: true,
        reason: Some("gateway fixed, ticket OPS-1".into()),
        ..RetryOptions::new()
    };
    let o = svc.retry(&net[0], &force, "local").await.unwrap();
    assert_eq!(o.outcome, Outcome::Retried);
    assert!(o.forced);
    assert_eq!(o.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_no_rq_key_and_no_retry_state() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "dry", 20, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    let dump = |con: &mut redis::Connection| {
        let mut keys: Vec<String> = query(con, &["KEYS", "*"]);
        // The audit's own keys: the outbox, the tracebacks it names, and the fence set as
        // the service connects (`audit::fence_earlier_writers`).
        keys.retain(|k| {
            ![
                keyspace::AUDIT_OUTBOX,
                keyspace::AUDIT_BLOBS,
                keyspace::AUDIT_LEASE_V1,
            ]
            .contains(&k.as_str())
        });
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v: Option<Vec<u8>> = query(con, &["DUMP", &k]);
                (k, v)
            })
            .collect::<Vec<_>>()
    };
    let before = dump(&mut con);
    let svc = service(&url, NO_COOLDOWN).await;
    let options = RetryOptions {
        dry_run: true,
        ..RetryOptions::new()
    };
    let summary = svc
        .retry_all(
            &JobFilter::default(),
            &options,
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&20));
    let mut after = dump(&mut con);
    after.retain(|(k, _)| !k.starts_with("retryguard:snapshot:"));
    assert_eq!(before, after, "no rq:* key and no retry state changed");
    let records: Vec<(String, Vec<(String, String)>)> =
        query(&mut con, &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"]);
    assert_eq!(records.len(), 22, "20 decisions + started + finished");
    assert!(records.iter().all(|(_, fields)| {
        retryguard::audit::encoding::pairs(fields)
            .iter()
            .any(|(k, v)| k == "dry_run_flag" && v == "true")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_short_failure_ttl_retried_behind_a_backlog_is_not_lost() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = MakeFailed::new("ttl", 1, "jobs.fail_once")
        .arg("runs")
        .failure_ttl(2)
        .run(python, &url);
    let svc = service(&url, NO_COOLDOWN).await;
    let o = svc
        .retry(&ids[0], &RetryOptions::new(), "local")
        .await
        .unwrap();
    assert_eq!(o.outcome, Outcome::Retried);
    // The backlog: nobody runs the queue for longer than the failure TTL.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let mut con = connect(&url);
    assert!(
        JobHash::read(&mut con, &ids[0]).exists(),
        "the job hash survived"
    );
    python.run_worker_burst(&url, &["ttl"]);
    assert_eq!(
        JobHash::read(&mut con, &ids[0]).text("status").as_deref(),
        Some("finished")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_members_and_deleted_jobs_are_not_found() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "gone", 3, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    let _: u64 = query(&mut con, &["DEL", &format!("rq:job:{}", ids[0])]);
    let svc = service(&url, NO_COOLDOWN).await;
    let page = svc.list(&JobFilter::default(), None, 100).await.unwrap();
    assert_eq!(page.jobs.len(), 2);
    let members: u64 = query(&mut con, &["ZCARD", "rq:failed:gone"]);
    assert_eq!(members, 2, "the dangling member was pruned");
    let o = svc
        .retry(&ids[0], &RetryOptions::new(), "local")
        .await
        .unwrap();
    assert_eq!(o.outcome, Outcome::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_batch_loses_and_duplicates_nothing_after_restart() {
    let mut server = RedisServer::start_durable();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "down", 400, "jobs.count_and_fail", "runs");
    // Small batches, so the kill lands between and inside pipelined batches.
    let svc = Arc::new(service_with(&url, NO_COOLDOWN, 50).await);
    let running = {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move {
            svc.retry_all(
                &JobFilter::default(),
                &RetryOptions::new(),
                "local",
                &new_operation_id(),
                &Progress::default(),
            )
            .await
        })
    };
    // Kill Redis (SIGKILL) as soon as the first requeues have landed.
    let mut con = connect(&url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queued: u64 = query(&mut con, &["LLEN", "rq:queue:down"]);
        if queued > 0 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    server.stop();
    let started = std::time::Instant::now();
    let first = running.await.expect("task");
    assert!(
        matches!(
            first,
            // Redis went away under the queue adapter or under retryguard's own writes.
            Err(
                RetryError::Queue(retryguard::queue::QueueError::Unavailable(_))
                    | RetryError::Redis(retryguard::redis_error::RedisError::Unavailable(_))
            )
        ),
        "a clear error, not a hang: {first:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    server.restart();
    let mut con = connect(&url);
    let before: u64 = query(&mut con, &["LLEN", "rq:queue:down"]);
    assert!(
        before > 0 && before < 400,
        "the kill landed mid-run: {before} requeued"
    );
    // The connection re-establishes itself on the next calls, as an operator's retry would.
    let mut attempt = 0;
    let summary = loop {
        let result = svc
            .retry_all(
                &JobFilter::default(),
                &RetryOptions::new(),
                "local",
                &new_operation_id(),
                &Progress::default(),
            )
            .await;
        match result {
            // Either connection may still hold the error of a reconnect tried while Redis
            // was down: redis-rs's connection manager reports it once, then reconnects.
            Err(
                RetryError::Queue(retryguard::queue::QueueError::Unavailable(_))
                | RetryError::Redis(retryguard::redis_error::RedisError::Unavailable(_)),
            ) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            other => break other.expect("works again after the restart"),
        }
    };
    let retried = summary.counts.get(&Outcome::Retried).copied().unwrap_or(0);
    assert_eq!(retried + before, 400, "{summary:?}");
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:down"]);
    assert_eq!(queued, 400, "every job exactly once in the queue");
    python.run_worker_burst(&url, &["down"]);
    let runs = runs_by_job(&mut connect(&url), "runs");
    assert!(
        ids.iter().all(|id| runs.get(id) == Some(&2)),
        "each job ran exactly one more time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifications_are_cached_per_failure_and_policy() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "cache", 5, "jobs.network_error", "");
    let svc = service(&url, &[]).await;
    assert!(svc.cache().is_empty());
    let first = svc.list(&JobFilter::default(), None, 100).await.unwrap();
    assert_eq!(svc.cache().len(), 5);
    let second = svc.list(&JobFilter::default(), None, 100).await.unwrap();
    assert_eq!(svc.cache().len(), 5, "the second listing hit the cache");
    let classes = |p: &retryguard::retry::Page| {
        p.jobs
            .iter()
            .map(|v| v.classification.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(classes(&first), classes(&second));
}

/// Enqueues a parent that fails once and a child that depends on it, and runs a real worker:
/// the parent fails, the child stays deferred.
const PARENT_AND_CHILD: &str = r#"
import json, os, sys
from redis import Redis
from rq import Queue, SimpleWorker
conn = Redis.from_url(os.environ["RQ_TEST_REDIS_URL"])
q = Queue("deps", connection=conn)
parent = q.enqueue("jobs.fail_once", "runs", job_id="parent")
child = q.enqueue("jobs.count_and_succeed", "runs", job_id="child", depends_on=parent)
SimpleWorker([q], connection=conn).work(burst=True)
print(json.dumps([parent.get_status(refresh=True), child.get_status(refresh=True)]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_a_retried_parent_are_released_when_it_finishes() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let out = python
        .command(&url)
        .args(["-c", PARENT_AND_CHILD])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    // The worker logs to stdout too: the statuses are the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let statuses: Vec<String> = serde_json::from_str(last).expect("statuses");
    assert_eq!(statuses, ["failed", "deferred"]);

    let svc = service(&url, NO_COOLDOWN).await;
    let o = svc
        .retry("parent", &RetryOptions::new(), "local")
        .await
        .unwrap();
    assert_eq!(o.outcome, Outcome::Retried, "{}", o.reason);
    python.run_worker_burst(&url, &["deps"]);
    let mut con = connect(&url);
    assert_eq!(
        JobHash::read(&mut con, "parent").text("status").as_deref(),
        Some("finished")
    );
    assert_eq!(
        JobHash::read(&mut con, "child").text("status").as_deref(),
        Some("finished"),
        "the dependent ran after its parent finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_3_rate_limiter_data_is_refused_clearly() {
    let server = RedisServer::start();
    let url = server.url();
    let mut con = connect(&url);
    let _: () = query(&mut con, &["SET", "rq:rl:payments", "3"]);
    let err = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, retryguard::queue::QueueError::Unsupported(msg) if msg.contains("RQ 3.x")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_acts_on_no_more_jobs_than_its_limit() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "limit", 10, "jobs.count_and_fail", "runs");
    let svc = service(&url, NO_COOLDOWN).await;
    let filter = JobFilter {
        limit: Some(3),
        ..JobFilter::default()
    };
    let summary = svc
        .retry_all(
            &filter,
            &RetryOptions::new(),
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(summary.total, 3);
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&3));
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:limit"]);
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:limit"]);
    assert_eq!((queued, failed), (3, 7));
}

/// Overwrites `key` with a plain string, as a stray `SET` (or another program) would.
fn overwrite_with_string(con: &mut redis::Connection, key: &str) {
    let _: u64 = query(con, &["DEL", key]);
    let _: () = query(con, &["SET", key, "not what RQ wrote"]);
}

/// Every outcome of a retry-all, by name (so a failure message shows them all).
fn counts_by_name(summary: &retryguard::retry::Summary) -> BTreeMap<&'static str, u64> {
    summary
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(o, n)| (o.as_str(), *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_key_or_results_key_of_the_wrong_type_is_held_as_broken_and_the_rest_served() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "broken", 5, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    // Both stay in the failed registry under the live score RQ gave them (now + failure_ttl).
    let (no_hash, no_stream) = (&ids[0], &ids[1]);
    overwrite_with_string(&mut con, &format!("rq:job:{no_hash}"));
    overwrite_with_string(&mut con, &format!("rq:results:{no_stream}"));
    let svc = service(&url, NO_COOLDOWN).await;

    // The unfiltered list: every job, the two broken ones held with the reason in their text.
    let page = svc
        .list(&JobFilter::default(), None, 100)
        .await
        .expect("lists");
    assert_eq!(page.jobs.len(), 5);
    for view in &page.jobs {
        let (key, want) = if &view.job.id == no_hash {
            (
                format!("rq:job:{no_hash} is not a hash"),
                Outcome::BlockedUnknown,
            )
        } else if &view.job.id == no_stream {
            (
                format!("rq:results:{no_stream} is not a stream"),
                Outcome::BlockedUnknown,
            )
        } else {
            (String::new(), Outcome::Retried)
        };
        assert_eq!(view.outcome, want, "{}: {}", view.job.id, view.reason);
        assert!(view.job.traceback.contains(&key), "{}", view.job.traceback);
        assert_eq!(view.job.queue, "broken");
    }
    // The job type still comes from a readable hash (it picks the policy).
    let readable = page.jobs.iter().find(|v| &v.job.id == no_stream).unwrap();
    assert_eq!(readable.job.job_type, "jobs.count_and_fail");

    // Show, for each.
    for id in [no_hash, no_stream] {
        let view = svc.get(id).await.expect("shows").expect("found");
        assert_eq!(view.outcome, Outcome::BlockedUnknown, "{}", view.reason);
        assert!(view.job.traceback.contains("unreadable job"));
    }

    // (The failure index counts broken jobs too: host/tests/rq/triage.rs.)

    // Retry-all: the three readable jobs are requeued, the broken ones held.
    let summary = svc
        .retry_all(
            &JobFilter::default(),
            &RetryOptions::new(),
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .expect("retry-all");
    assert_eq!(
        counts_by_name(&summary),
        BTreeMap::from([("blocked_unknown", 2), ("retried", 3)])
    );

    // Forced, each is refused by the requeue script itself, and nothing of it changes.
    let force = RetryOptions {
        force: true,
        reason: Some("ticket OPS-2".into()),
        ..RetryOptions::new()
    };
    for (id, key, kind) in [
        (no_hash, format!("rq:job:{no_hash}"), "hash"),
        (no_stream, format!("rq:results:{no_stream}"), "stream"),
    ] {
        let o = svc.retry(id, &force, "local").await.expect("answers");
        assert_eq!(o.outcome, Outcome::StaleDecision, "{}", o.reason);
        assert!(
            o.reason
                .contains(&format!("{key} holds a string, not a {kind}")),
            "{}",
            o.reason
        );
        let score: Option<f64> = query(&mut con, &["ZSCORE", "rq:failed:broken", id]);
        assert!(score.is_some(), "still in the failed registry");
        assert_eq!(
            redis_get(&url, &key).as_deref(),
            Some("not what RQ wrote"),
            "untouched"
        );
    }
    assert_eq!(
        JobHash::read(&mut con, no_stream).text("status").as_deref(),
        Some("failed")
    );
    let queued: Vec<String> = query(&mut con, &["LRANGE", "rq:queue:broken", "0", "-1"]);
    assert_eq!(queued.len(), 3);
    assert!(!queued.contains(no_hash) && !queued.contains(no_stream));

    // Out of every failed registry, an unreadable job is not found (never "already requeued").
    let _: u64 = query(&mut con, &["ZREM", "rq:failed:broken", no_hash]);
    let o = svc
        .retry(no_hash, &RetryOptions::new(), "local")
        .await
        .expect("answers");
    assert_eq!(o.outcome, Outcome::NotFound, "{}", o.reason);
    assert!(svc.get(no_hash).await.expect("shows").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_key_of_the_wrong_type_never_loses_the_job() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "nolist", 1, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    // The queue list is a string: the push would fail after the job left the registry.
    overwrite_with_string(&mut con, "rq:queue:nolist");
    let svc = service(&url, NO_COOLDOWN).await;
    let o = svc
        .retry(&ids[0], &RetryOptions::new(), "local")
        .await
        .expect("answers");
    assert_eq!(o.outcome, Outcome::StaleDecision, "{}", o.reason);
    assert!(
        o.reason
            .contains("rq:queue:nolist holds a string, not a list"),
        "{}",
        o.reason
    );
    let score: Option<f64> = query(&mut con, &["ZSCORE", "rq:failed:nolist", &ids[0]]);
    assert!(score.is_some(), "still in the failed registry");
    assert_eq!(
        JobHash::read(&mut con, &ids[0]).text("status").as_deref(),
        Some("failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_with_an_undecodable_status_never_turns_the_batch_unknown() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "bytes", 20, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    let odd = &ids[7];
    let _: () = redis::cmd("HSET")
        .arg(format!("rq:job:{odd}"))
        .arg("status")
        .arg(&b"\xff\n"[..])
        .query(&mut con)
        .unwrap();
    let svc = service(&url, NO_COOLDOWN).await;
    let summary = svc
        .retry_all(
            &JobFilter::default(),
            &RetryOptions::new(),
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .expect("retry-all");
    assert_eq!(
        counts_by_name(&summary),
        BTreeMap::from([("retried", 19), ("stale_decision", 1)])
    );
    let queued: Vec<String> = query(&mut con, &["LRANGE", "rq:queue:bytes", "0", "-1"]);
    assert_eq!(queued.len(), 19);
    assert!(!queued.contains(odd));

    // Its own outcome says why, in escaped text; its audit record says the same.
    let o = svc
        .retry(odd, &RetryOptions::new(), "local")
        .await
        .expect("answers");
    assert_eq!(o.outcome, Outcome::StaleDecision);
    assert!(o.reason.ends_with(r"status is \xff\x0a"), "{}", o.reason);
    let records: Vec<BTreeMap<String, Vec<u8>>> = {
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(keyspace::AUDIT_OUTBOX)
            .arg("-")
            .arg("+")
            .query(&mut con)
            .unwrap();
        entries
            .into_iter()
            .map(|(_, kv)| match <[_; 1]>::try_from(kv) {
                // The encoded record (`r`): printable, since every odd byte is escaped.
                Ok([(k, json)]) if k == retryguard::audit::encoding::RECORD_FIELD => {
                    let json = String::from_utf8(json).expect("an escaped record is UTF-8");
                    retryguard::audit::encoding::pairs(&[(k, json)])
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect()
                }
                Ok(one) => one.into_iter().collect(),
                Err(kv) => kv.into_iter().collect(),
            })
            .filter(|r: &BTreeMap<String, Vec<u8>>| {
                r.get("job_id").map(Vec::as_slice) == Some(odd.as_bytes())
            })
            .collect()
    };
    assert_eq!(records.len(), 2, "one record per refusal");
    for r in records {
        assert_eq!(
            r.get("error_message").map(Vec::as_slice),
            Some(&br"status is \xff\x0a"[..])
        );
    }
}
