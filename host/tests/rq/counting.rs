//! The counting jobs: every real execution is counted, so exactly-once can be asserted.

use std::collections::HashMap;

use crate::support::{JobHash, MakeFailed, Python, RedisServer, ResultEntry, connect, query};

/// `<key>:by_job`: how many times each job ran.
fn runs_by_job(con: &mut redis::Connection, key: &str) -> HashMap<String, u64> {
    query(con, &["HGETALL", &format!("{key}:by_job")])
}

#[test]
fn count_and_fail_runs_exactly_once_per_job_and_a_later_worker_does_not_rerun_it() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "count", 20, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    let total: u64 = query(&mut con, &["GET", "runs"]);
    assert_eq!(total, 20);
    let by_job = runs_by_job(&mut con, "runs");
    assert_eq!(by_job.len(), ids.len());
    assert!(
        ids.iter().all(|id| by_job.get(id) == Some(&1)),
        "{by_job:?}"
    );

    // Failed jobs are not in the queue: a real forking worker finds nothing to run.
    python.run_worker_burst(&url, &["count"]);
    let total: u64 = query(&mut con, &["GET", "runs"]);
    assert_eq!(total, 20);
}

#[test]
fn fail_once_fails_under_a_forking_worker_then_succeeds_after_rqs_requeue() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = MakeFailed::new("once", 4, "jobs.fail_once")
        .arg("runs")
        .enqueue_only()
        .run(python, &url);
    python.run_worker_burst(&url, &["once"]);
    let mut con = connect(&url);
    for id in &ids {
        assert_eq!(
            JobHash::read(&mut con, id).text("status").as_deref(),
            Some("failed")
        );
    }
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:once"]);
    assert_eq!(failed, 4);

    python.rq(
        &url,
        &["requeue", "--all", "--queue", "once", "--url", &url],
    );
    python.run_worker_burst(&url, &["once"]);
    for id in &ids {
        assert_eq!(
            JobHash::read(&mut con, id).text("status").as_deref(),
            Some("finished")
        );
        let kinds: Vec<Option<u8>> = ResultEntry::all(&mut con, id)
            .iter()
            .map(ResultEntry::kind)
            .collect();
        assert_eq!(
            kinds,
            [Some(1), Some(2)],
            "{id}: succeeded (newest), failed before"
        );
    }
    let by_job = runs_by_job(&mut con, "runs");
    assert!(
        ids.iter().all(|id| by_job.get(id) == Some(&2)),
        "{by_job:?}"
    );
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:once"]);
    assert_eq!(failed, 0);
}

#[test]
fn count_and_succeed_counts_and_finishes() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = MakeFailed::new("ok", 3, "jobs.count_and_succeed")
        .arg("runs")
        .expect("finished")
        .run(Python::venv(), &url);
    let mut con = connect(&url);
    let by_job = runs_by_job(&mut con, "runs");
    assert!(
        ids.iter().all(|id| by_job.get(id) == Some(&1)),
        "{by_job:?}"
    );
    for id in &ids {
        assert_eq!(ResultEntry::newest(&mut con, id).unwrap().kind(), Some(1));
    }
}

#[test]
fn charge_then_fail_charges_once_per_job_and_fails_with_a_timeout() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = Python::venv().make_failed(&url, "charge", 5, "jobs.charge_then_fail", "card");
    let mut con = connect(&url);
    let ledger: Vec<String> = query(&mut con, &["LRANGE", "card:ledger", "0", "-1"]);
    assert_eq!(ledger, ids, "one charge per job, in run order");
    for id in &ids {
        let text = ResultEntry::newest(&mut con, id)
            .unwrap()
            .exc_text()
            .unwrap();
        assert!(text.ends_with("\nTimeoutError: timed out\n"), "{text}");
        assert!(text.contains(", in charge_then_fail\n"), "{text}");
    }
}

/// The bulk path: `cargo test --release --test rq -- --ignored --nocapture ten_thousand`.
#[test]
#[ignore = "slow (tens of seconds): run by hand to measure make_failed.py"]
fn ten_thousand_failed_jobs() {
    let server = RedisServer::start();
    let url = server.url();
    let started = std::time::Instant::now();
    let ids = Python::venv().make_failed(&url, "bulk", 10_000, "jobs.count_and_fail", "runs");
    let elapsed = started.elapsed();
    println!("make_failed.py: 10,000 failed jobs in {elapsed:.2?}");
    let mut con = connect(&url);
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:bulk"]);
    assert_eq!(failed, 10_000);
    assert_eq!(runs_by_job(&mut con, "runs").len(), ids.len());
}
