//! Delete-all against real RQ 2.12 data: a dry run changes nothing, a delete removes exactly
//! the filtered set (RQ's own `Job.fetch` agrees) with a `deleted` record and the job's hash
//! kept as a blob, a job requeued meanwhile is not deleted, a changed count deletes nothing,
//! and dependents go only when asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use retryguard::keyspace;
use retryguard::policy::{EngineConfig, PolicyEngine};
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::queue::{Delete, DeleteResult, QueueBackend};
use retryguard::retry::{
    DeleteOptions, JobFilter, Outcome, Progress, RetryError, RetryService, ServiceConfig,
};

use crate::support::{JobHash, Python, RedisServer, connect, query};

async fn service(url: &str) -> RetryService<RqBackend> {
    let backend = RqBackend::connect(url, RedisTimeouts::default())
        .await
        .expect("connects");
    let conn = backend.connection();
    let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
    let policy = engine.load_builtin().expect("builtin");
    RetryService::new(
        backend,
        conn,
        engine,
        policy,
        Vec::new(),
        ServiceConfig::default(),
    )
}

fn real(reason: &str) -> DeleteOptions {
    DeleteOptions {
        reason: Some(reason.into()),
        ..DeleteOptions::default()
    }
}

fn deleted(summary: &retryguard::retry::Summary) -> u64 {
    summary.counts.get(&Outcome::Deleted).copied().unwrap_or(0)
}

/// Every `rq:*` key with its `DUMP`: what RQ has, byte for byte.
fn rq_keys(con: &mut redis::Connection) -> BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = query(con, &["KEYS", "rq:*"]);
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = query(con, &["DUMP", &k]);
            (k, dump)
        })
        .collect()
}

/// Which of `ids` RQ's own `Job.fetch` still finds.
fn fetchable(python: &Python, url: &str, ids: &[String]) -> Vec<String> {
    let script = r#"
import json, os, sys
from redis import Redis
from rq.job import Job
from rq.exceptions import NoSuchJobError
conn = Redis.from_url(os.environ["RQ_TEST_REDIS_URL"])
found = []
for i in json.loads(sys.argv[1]):
    try:
        Job.fetch(i, connection=conn)
        found.append(i)
    except NoSuchJobError:
        pass
print(json.dumps(found))
"#;
    let out = python
        .command(url)
        .args(["-c", script, &serde_json::to_string(ids).unwrap()])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("a JSON list")
}

/// The outbox entries, as field maps.
fn outbox(con: &mut redis::Connection) -> Vec<BTreeMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        query(con, &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"]);
    entries
        .into_iter()
        .map(|(_, f)| retryguard::audit::encoding::pairs(&f).into_iter().collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_counts() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "dry", 3, "jobs.network_error", "");
    let mut con = connect(&url);
    let before = rq_keys(&mut con);
    let svc = service(&url).await;
    let options = DeleteOptions {
        dry_run: true,
        ..DeleteOptions::default()
    };
    let summary = svc
        .delete_all(
            &JobFilter::default(),
            &options,
            "ops",
            "op-dry",
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(deleted(&summary), 3);
    assert!(summary.dry_run);
    assert_eq!(rq_keys(&mut con), before, "no RQ key changed");
    let records: Vec<_> = outbox(&mut con)
        .into_iter()
        .filter(|r| r.get("decision").map(String::as_str) == Some("deleted"))
        .collect();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["dry_run_flag"] == "true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_exactly_the_filtered_jobs_and_audits_each() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let network = python.make_failed(&url, "mixed", 2, "jobs.network_error", "");
    let validation = python.make_failed(&url, "mixed", 2, "jobs.validation_error", "");
    let mut con = connect(&url);
    let hash_before = JobHash::read(&mut con, &network[0]);
    let svc = service(&url).await;
    let filter = JobFilter {
        job_type: Some("jobs.network_error".into()),
        ..JobFilter::default()
    };
    let summary = svc
        .delete_all(
            &filter,
            &real("INC-42"),
            "ops",
            "op-del",
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(deleted(&summary), 2, "{summary:?}");
    assert!(!summary.dry_run);

    let all: Vec<String> = network.iter().chain(&validation).cloned().collect();
    assert_eq!(
        fetchable(python, &url, &all),
        validation,
        "RQ finds only the others"
    );
    for id in &network {
        for key in [
            format!("rq:job:{id}"),
            format!("rq:results:{id}"),
            format!("rq:executions:{id}"),
            format!("rq:job:{id}:dependents"),
        ] {
            let exists: u64 = query(&mut con, &["EXISTS", &key]);
            assert_eq!(exists, 0, "{key} is gone");
        }
        let score: Option<f64> = query(&mut con, &["ZSCORE", "rq:failed:mixed", id]);
        assert_eq!(score, None);
    }
    let left: u64 = query(&mut con, &["ZCARD", "rq:failed:mixed"]);
    assert_eq!(left, 2);

    let records: Vec<_> = outbox(&mut con)
        .into_iter()
        .filter(|r| r.get("decision").map(String::as_str) == Some("deleted"))
        .collect();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert!(network.contains(&r["job_id"]));
        assert_eq!(r["user_or_system"], "ops");
        assert_eq!(r["operation_id"], "op-del");
        assert_eq!(r["retry_reason"], "INC-42");
        assert_eq!(r["dry_run_flag"], "false");
        assert_eq!(r["success"], "true");
        let blob: Option<String> = query(
            &mut con,
            &["HGET", keyspace::AUDIT_BLOBS, &r["job_blob_sha256"]],
        );
        let blob: serde_json::Value =
            serde_json::from_str(&blob.expect("the job's hash is kept")).unwrap();
        assert_eq!(blob["status"], "failed");
        assert_eq!(blob["origin"], "mixed");
        let traceback: Option<String> = query(
            &mut con,
            &["HGET", keyspace::AUDIT_BLOBS, &r["traceback_sha256"]],
        );
        assert!(traceback.is_some_and(|t| t.contains("Traceback")));
        if r["job_id"] == network[0] {
            assert_eq!(
                blob["created_at"].as_str(),
                hash_before.text("created_at").as_deref()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_requeued_after_it_was_read_is_not_deleted() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "race", 2, "jobs.count_and_fail", "runs");
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .expect("connects");
    let first = backend.find_failed(&ids[0]).await.unwrap().expect("failed");
    let second = backend.find_failed(&ids[1]).await.unwrap().expect("failed");

    // Between the read and the delete, RQ requeues both; the second runs and fails again.
    python.rq(
        &url,
        &["requeue", "--all", "--queue", "race", "--url", &url],
    );
    let mut con = connect(&url);
    let _: i64 = query(&mut con, &["LREM", "rq:queue:race", "0", &ids[0]]);
    python.run_worker_burst(&url, &["race"]);

    let state_keys = [keyspace::job_state(&ids[0]), keyspace::job_state(&ids[1])];
    let audit = [("job_id", "x".to_string())];
    let batch: Vec<Delete<'_>> = [&first, &second]
        .into_iter()
        .zip(&state_keys)
        .map(|(job, state_key)| Delete {
            job,
            state_key,
            outbox_key: keyspace::AUDIT_OUTBOX,
            blobs_key: keyspace::AUDIT_BLOBS,
            delete_dependents: false,
            reason: "test",
            audit: &audit,
            dependent_audit: &[],
        })
        .collect();
    let results = backend.delete(&batch).await.expect("answers");
    assert_eq!(results[0], DeleteResult::AlreadyRequeued, "{results:?}");
    assert!(
        matches!(&results[1], DeleteResult::Stale { why } if why.contains("newer result")),
        "{results:?}"
    );
    assert_eq!(fetchable(python, &url, &ids), ids, "both are still there");
    let decisions: Vec<String> = outbox(&mut con)
        .into_iter()
        .filter_map(|r| r.get("decision").cloned())
        .collect();
    assert_eq!(
        decisions,
        ["already_requeued", "stale_decision"],
        "each refusal audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_count_is_a_conflict_that_deletes_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "count", 3, "jobs.network_error", "");
    let mut con = connect(&url);
    let before = rq_keys(&mut con);
    let svc = service(&url).await;
    let options = DeleteOptions {
        expected_count: Some(2),
        ..real("INC-1")
    };
    let err = svc
        .delete_all(
            &JobFilter::default(),
            &options,
            "ops",
            "op-c",
            &Progress::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RetryError::CountMismatch {
                expected: 2,
                found: 3,
                max_difference: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(rq_keys(&mut con), before, "nothing deleted");
    let options = DeleteOptions {
        expected_count: Some(3),
        ..real("INC-1")
    };
    let summary = svc
        .delete_all(
            &JobFilter::default(),
            &options,
            "ops",
            "op-d",
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(deleted(&summary), 3);
}

/// Two parents that fail, each with a dependent that stays deferred.
const PARENTS_AND_CHILDREN: &str = r#"
import os
from redis import Redis
from rq import Queue, SimpleWorker
conn = Redis.from_url(os.environ["RQ_TEST_REDIS_URL"])
for name in ("keep", "drop"):
    q = Queue(name, connection=conn)
    parent = q.enqueue("jobs.network_error", job_id=f"parent-{name}")
    q.enqueue("jobs.count_and_succeed", "runs", job_id=f"child-{name}", depends_on=parent)
    SimpleWorker([q], connection=conn).work(burst=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_are_deleted_only_when_asked() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let out = python
        .command(&url)
        .args(["-c", PARENTS_AND_CHILDREN])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    let mut con = connect(&url);
    for child in ["child-keep", "child-drop"] {
        assert_eq!(
            JobHash::read(&mut con, child).text("status").as_deref(),
            Some("deferred")
        );
    }
    let svc = service(&url).await;
    for (queue, with_dependents) in [("keep", false), ("drop", true)] {
        let filter = JobFilter {
            queue: Some(queue.into()),
            ..JobFilter::default()
        };
        let options = DeleteOptions {
            delete_dependents: with_dependents,
            ..real("cleanup")
        };
        let summary = svc
            .delete_all(
                &filter,
                &options,
                "ops",
                &format!("op-{queue}"),
                &Progress::default(),
            )
            .await
            .unwrap();
        assert_eq!(deleted(&summary), 1, "{summary:?}");
    }
    let ids: Vec<String> = ["parent-keep", "child-keep", "parent-drop", "child-drop"]
        .map(String::from)
        .to_vec();
    assert_eq!(fetchable(python, &url, &ids), ["child-keep"]);
    let deferred: Vec<String> = query(&mut con, &["ZRANGE", "rq:deferred:drop", "0", "-1"]);
    assert!(
        deferred.is_empty(),
        "the deleted dependent left its registry"
    );
    let kept: Vec<String> = query(&mut con, &["ZRANGE", "rq:deferred:keep", "0", "-1"]);
    assert_eq!(kept, ["child-keep"]);
    let child_record = outbox(&mut con)
        .into_iter()
        .find(|r| r.get("job_id").map(String::as_str) == Some("child-drop"))
        .expect("the dependent's own record");
    assert_eq!(child_record["decision"], "deleted");
    assert_eq!(child_record["operation_id"], "op-drop");
}
