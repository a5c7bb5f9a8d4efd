//! Operations live in Redis: a second instance (a second `AppState` over the same Redis, as
//! behind a load balancer) reads an operation's progress and cancels it; a record whose
//! instance stopped reporting is `abandoned`; the instance that runs one answers from its
//! own copy when Redis is down.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use retryguard::api;

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, Reply, config, connect, now_ms, send, state_with, write_failed,
};

/// `n` retryable failed jobs on `default`.
fn write_jobs(redis: &RedisServer, n: usize) {
    let old = now_ms() - 2 * 3600 * 1000;
    let ids: Vec<String> = (0..n).map(|i| format!("job-{i}")).collect();
    let jobs: Vec<RawJob<'_>> = ids
        .iter()
        .map(|id| RawJob::new(id, NETWORK_TB, old))
        .collect();
    for chunk in jobs.chunks(5000) {
        write_failed(&mut connect(redis), chunk);
    }
}

/// Polls `url` on `app` until the state is not `running`.
async fn until_ended(app: &Router, url: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let op = send(app, "GET", url).await;
        assert_eq!(op.status, StatusCode::OK, "{}", op.json);
        if op.json["state"] != "running" {
            return op;
        }
        assert!(
            Instant::now() < deadline,
            "the operation never ended: {}",
            op.json
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn another_instance_reads_the_progress_and_cancels() {
    let redis = RedisServer::start();
    write_jobs(&redis, 40_000);
    let mut cfg = config(&redis);
    cfg.server.max_concurrent_retry_all = 1;
    let runner_state = state_with(cfg.clone()).await;
    let other_state = state_with(cfg).await;
    let runner_instance = runner_state.operations.instance().to_string();
    assert_ne!(runner_instance, other_state.operations.instance());
    let runner = api::router(runner_state);
    let other = api::router(other_state);

    let started = Instant::now();
    let reply = send(
        &runner,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true&wait_seconds=0",
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let url = reply.json["status_url"].as_str().unwrap().to_string();
    let id = reply.json["operation_id"].as_str().unwrap().to_string();

    // The record is written before the answer: the other instance knows it at once.
    let seen = send(&other, "GET", &url).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.json);
    assert_eq!(seen.json["operation_id"], id.as_str());
    assert_eq!(seen.json["source"], "redis");
    assert_eq!(seen.json["kind"], "retry_all");
    assert_eq!(seen.json["instance"], runner_instance.as_str());
    assert_eq!(seen.json["actor"], "local");
    assert_eq!(seen.json["dry_run"], true);
    assert!(seen.json["updated_at"].is_string());

    // Its progress reaches the other instance while it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let seen = send(&other, "GET", &url).await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.json);
        assert_eq!(
            seen.json["state"],
            "running",
            "ended before any progress was seen ({:?}): {}",
            started.elapsed(),
            seen.json
        );
        if seen.json["processed"].as_u64().unwrap() > 0 {
            break seen;
        }
        assert!(Instant::now() < deadline, "no progress: {}", seen.json);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(progress.json["total"], 40_000, "{}", progress.json);
    assert_eq!(progress.json["source"], "redis");

    // Cancelled through the other instance: the runner reads the flag with its next report.
    let cancel = send(&other, "DELETE", &url).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.json);
    assert_eq!(cancel.json["cancel_requested"], true, "{}", cancel.json);
    assert_eq!(cancel.json["instance"], runner_instance.as_str());

    let last = until_ended(&other, &url).await;
    assert_eq!(last.json["state"], "cancelled", "{}", last.json);
    assert_eq!(last.json["source"], "redis");
    assert_eq!(last.json["cancel_requested"], true);
    assert_eq!(last.json["total"], 40_000);
    let processed = last.json["processed"].as_u64().unwrap();
    assert!(processed < 40_000, "{}", last.json);
    assert_eq!(last.json["summary"]["cancelled"], true);
    assert_eq!(last.json["summary"]["total"], processed);
    assert!(last.json["finished_at"].is_string());

    // The runner agrees, and its slot is free again.
    let own = until_ended(&runner, &url).await;
    assert_eq!(own.json["state"], "cancelled", "{}", own.json);
    assert_eq!(own.json["processed"], processed);
    let again = send(
        &runner,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true&limit=5",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);

    // Kept 7 days after it ended.
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("retryguard:operation:{id}"))
        .query(&mut connect(&redis))
        .unwrap();
    assert!(ttl > 6 * 86_400 && ttl <= 7 * 86_400, "ttl {ttl}");
}

#[tokio::test]
async fn an_operation_whose_instance_stopped_reporting_is_abandoned() {
    let redis = RedisServer::start();
    let app = api::router(state_with(config(&redis)).await);
    let now = now_ms();
    let write = |id: &str, updated_ms: u64| {
        let _: () = redis::cmd("HSET")
            .arg(format!("retryguard:operation:{id}"))
            .arg(&[
                ("kind", "retry_all".to_string()),
                ("state", "running".to_string()),
                ("dry_run", "0".to_string()),
                ("actor", "ops-alice".to_string()),
                ("instance", "gone-host-42-0".to_string()),
                ("started_ms", (now - 120_000).to_string()),
                ("updated_ms", updated_ms.to_string()),
                ("total", "100".to_string()),
                ("processed", "40".to_string()),
                ("count:retried", "38".to_string()),
                ("count:blocked_non_retryable", "2".to_string()),
            ])
            .query(&mut connect(&redis))
            .unwrap();
    };
    // Its last heartbeat a minute ago: the instance died.
    write("op-dead", now - 60_000);
    // One that reported just now runs on.
    write("op-alive", now);

    let dead = send(&app, "GET", "/api/v1/operations/op-dead").await;
    assert_eq!(dead.status, StatusCode::OK, "{}", dead.json);
    assert_eq!(dead.json["state"], "abandoned", "{}", dead.json);
    assert_eq!(dead.json["source"], "redis");
    assert_eq!(dead.json["instance"], "gone-host-42-0");
    assert_eq!(dead.json["actor"], "ops-alice");
    assert_eq!(dead.json["processed"], 40);
    assert_eq!(dead.json["counts"]["retried"], 38);
    assert_eq!(dead.json["counts"]["unknown"], 0);
    assert!(dead.json["summary"].is_null());
    assert!(dead.json["finished_at"].is_null());

    let alive = send(&app, "GET", "/api/v1/operations/op-alive").await;
    assert_eq!(alive.status, StatusCode::OK, "{}", alive.json);
    assert_eq!(alive.json["state"], "running", "{}", alive.json);

    // A cancel is recorded (should its instance come back, it stops), the state stays.
    let cancel = send(&app, "DELETE", "/api/v1/operations/op-dead").await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.json);
    assert_eq!(cancel.json["state"], "abandoned");
    assert_eq!(cancel.json["cancel_requested"], true);

    let missing = send(&app, "GET", "/api/v1/operations/op-never").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.json);
}

#[tokio::test]
async fn without_redis_the_instance_that_ran_it_answers_from_its_own_copy() {
    let mut redis = RedisServer::start();
    write_jobs(&redis, 3);
    let runner = api::router(state_with(config(&redis)).await);
    let other = api::router(state_with(config(&redis)).await);
    let reply = send(
        &runner,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let url = format!(
        "/api/v1/operations/{}",
        reply.json["operation_id"].as_str().unwrap()
    );
    let seen = until_ended(&other, &url).await;
    assert_eq!(seen.json["state"], "finished", "{}", seen.json);

    redis.stop();
    let own = send(&runner, "GET", &url).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.json);
    assert_eq!(own.json["source"], "local");
    assert_eq!(own.json["state"], "finished");
    assert_eq!(own.json["summary"]["counts"]["retried"], 3);
    assert!(
        own.json["warning"]
            .as_str()
            .unwrap()
            .starts_with("Redis could not be read"),
        "{}",
        own.json
    );
    let none = send(&other, "GET", &url).await;
    assert_eq!(
        none.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        none.json
    );
    assert_eq!(none.code(), "redis_unavailable");
}
