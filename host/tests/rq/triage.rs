//! The failure index against real RQ 2.12 failures: grouping by cause, departures of every
//! kind, retry-all of one group, rebuild, broken jobs, and a reconciler killed mid-stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::clock::new_operation_id;
use retryguard::keyspace;
use retryguard::policy::{EngineConfig, PolicyEngine};
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::retry::{JobFilter, Progress, RetryOptions, RetryService, ServiceConfig};
use retryguard::triage::read::{self, GroupQuery};
use retryguard::triage::{Reconciler, ReconcilerConfig, ReconcilerStatus};

use crate::support::{MakeFailed, Python, RedisServer, Serve, connect, query};

async fn service(url: &str) -> Arc<RetryService<RqBackend>> {
    let backend = RqBackend::connect(url, RedisTimeouts::default())
        .await
        .expect("connects");
    let conn = backend.connection();
    let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
    let policy = engine.load_builtin().expect("builtin");
    Arc::new(RetryService::new(
        backend,
        conn,
        engine,
        policy,
        vec![("cooldown_seconds".to_string(), "0".to_string())],
        ServiceConfig::default(),
    ))
}

fn reconciler(svc: &Arc<RetryService<RqBackend>>) -> Reconciler {
    let config = ReconcilerConfig {
        // Every pass may be a full one: the tests check the end state, not the fast path.
        full_every: Duration::ZERO,
        ..ReconcilerConfig::default()
    };
    Reconciler::new(
        Arc::clone(svc),
        svc.backend().connection(),
        config,
        Arc::new(ReconcilerStatus::default()),
    )
}

/// Every group (fingerprint → count) the index holds, and its counts per queue × type.
async fn snapshot(
    svc: &RetryService<RqBackend>,
) -> (BTreeMap<String, u64>, BTreeMap<(String, String), u64>) {
    let mut conn = svc.backend().connection();
    let page = read::groups(
        &mut conn,
        &GroupQuery {
            limit: 10_000,
            ..GroupQuery::default()
        },
    )
    .await
    .expect("groups");
    let groups = page
        .groups
        .iter()
        .map(|g| (g.fingerprint.clone(), g.count))
        .collect();
    let counts = read::counts(&mut conn).await.expect("counts");
    (groups, counts.by_queue_and_type)
}

/// The truth: live members of every failed registry.
fn registry_total(url: &str, queues: &[&str]) -> u64 {
    let mut con = connect(url);
    queues
        .iter()
        .map(|q| query::<u64>(&mut con, &["ZCARD", &format!("rq:failed:{q}")]))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cause_is_one_group_whatever_its_values_and_departures_leave_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let py = Python::venv();
    let declined = MakeFailed::new("pay", 6, "jobs.card_declined")
        .arg("12.50")
        .run(py, &url);
    MakeFailed::new("pay", 2, "jobs.card_declined")
        .arg("99.99")
        .run(py, &url);
    let refused = MakeFailed::new("pay", 3, "jobs.network_error").run(py, &url);
    MakeFailed::new("other", 2, "jobs.validation_error").run(py, &url);
    // Kept by RQ for one second only: its failure expires before the departures are checked.
    MakeFailed::new("other", 1, "jobs.timeout")
        .failure_ttl(1)
        .run(py, &url);

    let svc = service(&url).await;
    let mut r = reconciler(&svc);
    r.pass().await.expect("pass");
    let mut conn = svc.backend().connection();
    // RQ's failure_ttl of 1 s (its registry score is the second it expires): counted while it
    // lasts, if the pass came in time, and gone from the next pass on either way.
    std::thread::sleep(Duration::from_millis(2100));
    r.pass().await.expect("pass");
    let by_type = read::counts(&mut conn).await.expect("counts").by_type();
    assert_eq!(by_type.get("timeout"), None, "{by_type:?}");
    let page = read::groups(
        &mut conn,
        &GroupQuery {
            limit: 100,
            ..GroupQuery::default()
        },
    )
    .await
    .expect("groups");
    assert_eq!(page.total_jobs, 13, "the expired failure left: {page:#?}");
    let counts: Vec<(String, u64)> = page
        .groups
        .iter()
        .map(|g| (g.exc_type.clone(), g.count))
        .collect();
    // Sorted by count: eight declines (two amounts, eight ids) are one cause.
    assert_eq!(
        counts,
        [
            ("billing.errors.CardDeclined".to_string(), 8),
            ("ConnectionRefusedError".to_string(), 3),
            ("ValueError".to_string(), 2),
        ],
        "{page:#?}"
    );
    let declines = &page.groups[0];
    assert_eq!(declines.job_type, "jobs.card_declined");
    assert_eq!(declines.queues, BTreeMap::from([("pay".to_string(), 8)]));
    assert!(
        !declines.message.contains("12.50") && declines.message.contains("declined"),
        "{}",
        declines.message
    );
    assert_eq!(declines.sample_job_ids.len(), 8);
    let stats = read::counts(&mut conn).await.expect("counts");
    assert_eq!(stats.total(), 13);
    assert_eq!(stats.by_type()["network_error"], 3);
    assert_eq!(stats.by_type()["validation_error"], 2);

    // Search is over the group's text, case-insensitively.
    let found = read::groups(
        &mut conn,
        &GroupQuery {
            q: Some("carddeclined".into()),
            limit: 100,
            ..GroupQuery::default()
        },
    )
    .await
    .expect("search");
    assert_eq!(found.groups.len(), 1);

    // The listing of one group is exactly its jobs.
    let filter = JobFilter {
        group: Some(declines.fingerprint.clone()),
        ..JobFilter::default()
    };
    let listed = svc.list(&filter, None, 100).await.expect("lists");
    assert_eq!(listed.jobs.len(), 8);
    assert!(
        listed
            .jobs
            .iter()
            .all(|v| v.job.job_type == "jobs.card_declined")
    );

    // `rq requeue` (RQ's own tool) takes one job out; the group follows at the next pass.
    py.rq(
        &url,
        &["requeue", "--queue", "pay", "--url", &url, &declined[0]],
    );
    // A deletion behind retryguard's back (the job hash and its registry member).
    let mut con = connect(&url);
    let _: i64 = query(&mut con, &["ZREM", "rq:failed:pay", &declined[1]]);
    // A job whose registry entry expired (its score in the past) but is still listed:
    // RQ's maintenance would drop it; the index drops it at once.
    let _: i64 = query(&mut con, &["ZADD", "rq:failed:pay", "XX", "1", &refused[0]]);
    r.pass().await.expect("pass");
    let (groups, _) = snapshot(&svc).await;
    assert_eq!(groups[&declines.fingerprint], 6, "{groups:?}");
    assert_eq!(groups.values().sum::<u64>(), 10, "{groups:?}");
    let stats = read::counts(&mut conn).await.expect("counts");
    assert_eq!(stats.by_type()["network_error"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_of_a_group_requeues_exactly_its_jobs_once_and_empties_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let py = Python::venv();
    let key = "ran";
    MakeFailed::new("q", 5, "jobs.count_and_fail")
        .arg(key)
        .run(py, &url);
    MakeFailed::new("q", 4, "jobs.card_declined").run(py, &url);
    let svc = service(&url).await;
    let mut r = reconciler(&svc);
    r.pass().await.expect("pass");
    let mut conn = svc.backend().connection();
    let page = read::groups(
        &mut conn,
        &GroupQuery {
            q: Some("count_and_fail".into()),
            limit: 10,
            ..GroupQuery::default()
        },
    )
    .await
    .expect("groups");
    let group = page.groups.first().expect("the group").clone();
    assert_eq!(group.count, 5);
    let filter = JobFilter {
        group: Some(group.fingerprint.clone()),
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
        .expect("retry-all");
    assert_eq!(summary.total, 5, "{summary:?}");
    let retried = summary
        .counts
        .iter()
        .find(|(o, _)| o.as_str() == "retried")
        .map_or(0, |(_, n)| *n);
    assert_eq!(retried, 5, "{summary:?}");
    // The requeue took each job out of the index in its own step: no pass needed.
    let (groups, _) = snapshot(&svc).await;
    assert!(!groups.contains_key(&group.fingerprint), "{groups:?}");
    assert_eq!(groups.values().sum::<u64>(), 4);
    // The other cause was not touched, and each retried job ran once more (fails again).
    py.run_worker_burst(&url, &["q"]);
    let mut con = connect(&url);
    let runs: u64 = query(&mut con, &["GET", key]);
    assert_eq!(runs, 10, "5 first runs + 5 retries, each once");
    assert_eq!(registry_total(&url, &["q"]), 9);
    // The retried jobs failed again: the next pass counts them again.
    r.pass().await.expect("pass");
    let (groups, _) = snapshot(&svc).await;
    assert_eq!(groups.get(&group.fingerprint), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_scratch_equals_the_incremental_index_and_broken_jobs_are_a_group() {
    let redis = RedisServer::start();
    let url = redis.url();
    let py = Python::venv();
    MakeFailed::new("a", 3, "jobs.card_declined").run(py, &url);
    let svc = service(&url).await;
    let mut r = reconciler(&svc);
    r.pass().await.expect("pass");
    // More failures arrive and are picked up incrementally.
    MakeFailed::new("a", 2, "jobs.network_error").run(py, &url);
    MakeFailed::new("b", 2, "jobs.timeout").run(py, &url);
    // A job key of the wrong type, and one whose data does not decode.
    let mut con = connect(&url);
    let _: i64 = query(&mut con, &["ZADD", "rq:failed:a", "+inf", "not-a-hash"]);
    let _: String = query(&mut con, &["SET", "rq:job:not-a-hash", "garbage"]);
    let _: i64 = query(&mut con, &["ZADD", "rq:failed:a", "+inf", "odd-data"]);
    let _: i64 = query(
        &mut con,
        &[
            "HSET",
            "rq:job:odd-data",
            "status",
            "failed",
            "origin",
            "a",
            "data",
            "not zlib",
            "exc_info",
            "\u{1}\u{2}",
        ],
    );
    r.pass().await.expect("pass");
    let incremental = snapshot(&svc).await;
    assert_eq!(incremental.0.values().sum::<u64>(), 9, "{incremental:?}");
    let mut conn = svc.backend().connection();
    let page = read::groups(
        &mut conn,
        &GroupQuery {
            limit: 100,
            ..GroupQuery::default()
        },
    )
    .await
    .expect("groups");
    let broken: Vec<_> = page.groups.iter().filter(|g| g.broken).collect();
    assert_eq!(
        broken.iter().map(|g| g.count).sum::<u64>(),
        1,
        "the key of the wrong type is a broken job: {page:#?}"
    );

    read::request_rebuild(&mut conn, 1).await.expect("asks");
    r.pass().await.expect("pass");
    let state = read::state(&mut conn).await.expect("state");
    assert!(state.built);
    assert_eq!(snapshot(&svc).await, incremental);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_s_leader_killed_mid_stream_leaves_counts_equal_to_the_registries() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("RETRYGUARD_TRIAGE_LEASE_TTL_SECONDS", "2"),
        ("RETRYGUARD_TRIAGE_INTERVAL_MS", "50"),
        ("RETRYGUARD_TRIAGE_FULL_PASS_EVERY_MS", "200"),
    ];
    let mut first = Serve::start_with(&url, &env);
    let second = Serve::start_with(&url, &env);
    // Failures stream in while the leader works.
    let streaming = {
        let url = url.clone();
        std::thread::spawn(move || {
            for round in 0..4 {
                MakeFailed::new("s", 150, "jobs.card_declined")
                    .arg(&format!("{round}.00"))
                    .run(Python::venv(), &url);
                MakeFailed::new("s", 50, "jobs.network_error").run(Python::venv(), &url);
            }
        })
    };
    // Kill whichever instance holds the lease, while failures still arrive.
    let mut con = connect(&url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let h: Option<String> = query(&mut con, &["GET", keyspace::TRIAGE_LEASE]);
        if let Some(h) = h.filter(|_| registry_total(&url, &["s"]) > 100) {
            break h;
        }
        assert!(Instant::now() < deadline, "no reconciler took the lease");
        std::thread::sleep(Duration::from_millis(20));
    };
    let survivor = if holder.contains(&format!("-{}-", first.pid())) {
        first.kill();
        second
    } else {
        drop(second);
        first
    };
    streaming.join().expect("the failures were made");
    let truth = registry_total(&url, &["s"]);
    assert_eq!(truth, 800);
    // The standby takes over within the lease TTL and catches up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, stats) = survivor.http("GET", "/api/v1/jobs/stats");
        assert_eq!(code, 200, "{stats}");
        if stats["failed_total"] == truth {
            assert_eq!(stats["failed_by_type"]["network_error"], 200, "{stats}");
            assert_eq!(
                stats["failed_by_type"].as_object().unwrap().len(),
                2,
                "{stats}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index never reached the registries' {truth}: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, groups) = survivor.http("GET", "/api/v1/jobs/failed/groups");
    assert_eq!(code, 200, "{groups}");
    let counts: Vec<u64> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [600, 200], "{groups}");
}
