//! Retry-all: a summary when it finishes in time, else an operation to watch or cancel.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use retryguard::api;

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, VALIDATION_TB, app, config, connect, now_ms, send, state_with,
    write_failed,
};

#[tokio::test]
async fn retry_all_answers_with_the_summary_when_it_finishes_in_time() {
    let redis = RedisServer::start();
    let old = now_ms() - 2 * 3600 * 1000;
    write_failed(
        &mut connect(&redis),
        &[
            RawJob::new("n1", NETWORK_TB, old),
            RawJob::new("n2", NETWORK_TB, old),
            RawJob::new("v1", VALIDATION_TB, old),
            RawJob {
                queue: "other",
                ..RawJob::new("n3", NETWORK_TB, old)
            },
        ],
    );
    let app = app(&redis).await;
    let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all?dry_run=true").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["dry_run"], true);
    assert_eq!(reply.json["total"], 4);
    assert_eq!(reply.json["counts"]["retried"], 3);
    assert_eq!(reply.json["counts"]["blocked_non_retryable"], 1);
    assert_eq!(
        reply.json["counts"]["unknown"], 0,
        "every outcome is listed"
    );
    let queued: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(queued, 0, "a dry run requeues nothing");

    let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all?queue=default").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["total"], 3);
    assert_eq!(reply.json["counts"]["retried"], 2);
    assert_eq!(reply.json["cancelled"], false);
    let queued: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(queued, 2);
    let id = reply.json["operation_id"].as_str().unwrap();
    let op = send(&app, "GET", &format!("/api/v1/operations/{id}")).await;
    assert_eq!(op.status, StatusCode::OK);
    assert_eq!(op.json["state"], "finished");
    assert_eq!(op.json["summary"]["counts"]["retried"], 2);
}

#[tokio::test]
async fn a_long_retry_all_becomes_an_operation_to_watch_and_cancel() {
    let redis = RedisServer::start();
    let old = now_ms() - 2 * 3600 * 1000;
    let ids: Vec<String> = (0..3000).map(|i| format!("job-{i}")).collect();
    let jobs: Vec<RawJob<'_>> = ids
        .iter()
        .map(|id| RawJob::new(id, NETWORK_TB, old))
        .collect();
    write_failed(&mut connect(&redis), &jobs);
    let mut cfg = config(&redis);
    cfg.server.max_concurrent_retry_all = 1;
    let app = api::router(state_with(cfg).await);

    let reply = send(
        &app,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true&wait_seconds=0",
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let id = reply.json["operation_id"].as_str().unwrap().to_string();
    let url = reply.json["status_url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/api/v1/operations/{id}"));
    assert_eq!(reply.headers.get("location").unwrap(), url.as_str());

    // Only one may run at a time here.
    let busy = send(
        &app,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true&wait_seconds=0",
    )
    .await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS, "{}", busy.json);
    assert_eq!(busy.code(), "too_many_operations");
    assert!(busy.headers.contains_key("retry-after"));

    let cancel = send(&app, "DELETE", &url).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.json);
    assert_eq!(cancel.json["cancel_requested"], true);

    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let op = send(&app, "GET", &url).await;
        assert_eq!(op.status, StatusCode::OK);
        if op.json["state"] != "running" {
            break op;
        }
        assert!(
            Instant::now() < deadline,
            "the operation never ended: {}",
            op.json
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last.json["state"], "cancelled", "{}", last.json);
    assert_eq!(last.json["total"], 3000);
    assert!(
        last.json["processed"].as_u64().unwrap() < 3000,
        "{}",
        last.json
    );
    assert_eq!(last.json["summary"]["cancelled"], true);
    assert!(last.json["finished_at"].is_string());

    // The permit is back: another may start.
    let reply = send(
        &app,
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true&limit=5",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["total"], 5);
}
