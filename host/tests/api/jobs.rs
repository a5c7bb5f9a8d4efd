//! Listing, showing and retrying failed jobs written in RQ 2.x's layout.

use axum::http::StatusCode;

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, VALIDATION_TB, app, connect, now_ms, reconcile, send,
    write_failed,
};

#[tokio::test]
async fn an_empty_redis_lists_nothing() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/failed").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json,
        serde_json::json!({"jobs": [], "next_cursor": null, "scanned": 0, "scan_limited": false})
    );
    reconcile(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["queues"], serde_json::json!([]));
    assert_eq!(reply.json["failed_by_type"], serde_json::json!({}));
    assert_eq!(reply.json["failed_by_type_complete"], true);
    assert_eq!(reply.json["audit_outbox_length"], 0);
}

#[tokio::test]
async fn lists_jobs_with_their_classification_and_decision() {
    let redis = RedisServer::start();
    let now = now_ms();
    write_failed(
        &mut connect(&redis),
        &[
            RawJob::new("due", NETWORK_TB, now - 2 * 3600 * 1000),
            RawJob::new("cooling", NETWORK_TB, now - 1000),
            RawJob {
                func: "app.tasks.validate",
                ..RawJob::new("invalid", VALIDATION_TB, now - 3600 * 1000)
            },
        ],
    );
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/failed").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let job = |id: &str| jobs.iter().find(|j| j["id"] == id).unwrap().clone();

    let due = job("due");
    assert_eq!(due["queue"], "default");
    assert_eq!(due["job_type"], "app.tasks.charge");
    assert_eq!(due["status"], "failed");
    assert_eq!(due["exc_type"], "ConnectionRefusedError");
    assert_eq!(due["failure_type"], "network_error");
    assert_eq!(due["retryable"], true);
    assert_eq!(due["is_retryable"], true);
    assert_eq!(due["attempts"], 0);
    assert_eq!(due["decision"]["action"], "retry");
    assert_eq!(due["decision"]["hold_kind"], serde_json::Value::Null);
    assert!(due["failed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(due["policy_digest"].as_str().unwrap().len(), 64);
    assert!(
        due.get("traceback").is_none(),
        "listings leave tracebacks out"
    );

    let cooling = job("cooling");
    assert_eq!(cooling["decision"]["action"], "wait");
    assert_eq!(cooling["is_retryable"], false);
    assert!(
        cooling["decision"]["retry_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let invalid = job("invalid");
    assert_eq!(invalid["job_type"], "app.tasks.validate");
    assert_eq!(invalid["failure_type"], "validation_error");
    assert_eq!(invalid["retryable"], false);
    assert_eq!(invalid["decision"]["action"], "hold");
    assert_eq!(invalid["decision"]["hold_kind"], "non_retryable");

    // Filters.
    let reply = send(&app, "GET", "/api/v1/jobs/failed?retryable=false").await;
    let ids: Vec<_> = reply.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(ids, ["invalid"]);
    let reply = send(&app, "GET", "/api/v1/jobs/failed?job_type=*.validate").await;
    assert_eq!(reply.json["jobs"].as_array().unwrap().len(), 1);
    let reply = send(
        &app,
        "GET",
        "/api/v1/jobs/failed?failure_type=network_error",
    )
    .await;
    assert_eq!(reply.json["jobs"].as_array().unwrap().len(), 2);
    let reply = send(&app, "GET", "/api/v1/jobs/failed?queue=other").await;
    assert_eq!(reply.json["jobs"].as_array().unwrap().len(), 0);
    let after = retryguard::queue::rq::decode::format_rq_time(now - 60_000);
    let reply = send(
        &app,
        "GET",
        &format!("/api/v1/jobs/failed?failed_after={after}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let ids: Vec<_> = reply.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(ids, ["cooling"]);

    // One job, with its traceback.
    let reply = send(&app, "GET", "/api/v1/jobs/failed/invalid").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["traceback"], VALIDATION_TB);
    assert_eq!(reply.json["decision"]["hold_kind"], "non_retryable");

    // Stats, from the failure index.
    reconcile(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["queues"][0]["queue"], "default");
    assert_eq!(reply.json["queues"][0]["failed"], 3);
    assert_eq!(reply.json["failed_by_type"]["network_error"], 2);
    assert_eq!(reply.json["failed_by_type"]["validation_error"], 1);
    assert_eq!(reply.json["failed_by_type_examined"], 3);
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let redis = RedisServer::start();
    let now = now_ms();
    let ids: Vec<String> = (0..25).map(|i| format!("job-{i:02}")).collect();
    let jobs: Vec<RawJob<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| RawJob {
            queue: if i % 2 == 0 { "a" } else { "b" },
            ..RawJob::new(id, NETWORK_TB, now - 3600 * 1000 - (i as u64 % 3) * 1000)
        })
        .collect();
    write_failed(&mut connect(&redis), &jobs);
    let app = app(&redis).await;
    let mut seen = Vec::new();
    let mut uri = "/api/v1/jobs/failed?limit=7".to_string();
    for _ in 0..10 {
        let reply = send(&app, "GET", &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        for j in reply.json["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        match reply.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/jobs/failed?limit=7&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no repeats: {seen:?}");
    assert_eq!(sorted, ids, "no gaps");
}

#[tokio::test]
async fn pages_cross_jobs_kept_forever_whose_score_is_infinite() {
    // RQ scores a failure kept forever (`failure_ttl=-1`) `+inf`; a page ending on one must
    // still give a cursor that reads back (JSON has no infinity).
    let redis = RedisServer::start();
    let now = now_ms();
    let ids: Vec<String> = (0..9).map(|i| format!("job-{i}")).collect();
    let jobs: Vec<RawJob<'_>> = ids
        .iter()
        .map(|id| RawJob::new(id, NETWORK_TB, now - 3600 * 1000))
        .collect();
    let mut con = connect(&redis);
    write_failed(&mut con, &jobs);
    for id in &ids[3..] {
        let _: () = redis::cmd("ZADD")
            .arg("rq:failed:default")
            .arg("+inf")
            .arg(id)
            .query(&mut con)
            .unwrap();
    }
    let app = app(&redis).await;
    let mut seen = Vec::new();
    let mut uri = "/api/v1/jobs/failed?limit=2".to_string();
    for _ in 0..10 {
        let reply = send(&app, "GET", &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
        for j in reply.json["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        match reply.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/jobs/failed?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every job once, in (score, id) order");
}

#[tokio::test]
async fn a_retry_requeues_once_and_a_second_is_already_requeued() {
    let redis = RedisServer::start();
    let now = now_ms();
    let mut con = connect(&redis);
    write_failed(
        &mut con,
        &[
            RawJob::new("due", NETWORK_TB, now - 2 * 3600 * 1000),
            RawJob::new("invalid", VALIDATION_TB, now - 3600 * 1000),
        ],
    );
    let app = app(&redis).await;

    // A dry run changes nothing.
    let reply = send(&app, "POST", "/api/v1/jobs/failed/due/retry?dry_run=true").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["outcome"], "retried");
    assert_eq!(reply.json["dry_run"], true);
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:default")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert!(queued.is_empty());

    let reply = send(&app, "POST", "/api/v1/jobs/failed/due/retry").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["outcome"], "retried");
    assert_eq!(reply.json["attempt"], 1);
    assert_eq!(reply.json["failure_type"], "network_error");
    assert_eq!(reply.json["forced"], false);
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:default")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(queued, ["due"]);
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("rq:failed:default")
        .arg("due")
        .query(&mut con)
        .unwrap();
    assert_eq!(score, None, "no longer in the failed registry");
    let status: String = redis::cmd("HGET")
        .arg("rq:job:due")
        .arg("status")
        .query(&mut con)
        .unwrap();
    assert_eq!(status, "queued");

    let reply = send(&app, "POST", "/api/v1/jobs/failed/due/retry").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["outcome"], "already_requeued");
    let queued: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut con)
        .unwrap();
    assert_eq!(queued, 1, "requeued exactly once");
    let reply = send(&app, "GET", "/api/v1/jobs/failed/due").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // The policy holds a validation error; retry_only_retryable=false lets it through.
    let reply = send(&app, "POST", "/api/v1/jobs/failed/invalid/retry").await;
    assert_eq!(reply.json["outcome"], "blocked_non_retryable");
    let reply = send(
        &app,
        "POST",
        "/api/v1/jobs/failed/invalid/retry?retry_only_retryable=false",
    )
    .await;
    assert_eq!(reply.json["outcome"], "retried", "{}", reply.json);

    let outbox: u64 = redis::cmd("XLEN")
        .arg("retryguard:audit:outbox")
        .query(&mut con)
        .unwrap();
    assert!(outbox >= 4, "every decision is audited: {outbox}");
    let actors: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("retryguard:audit:outbox")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    for (_, fields) in actors {
        let fields = retryguard::audit::encoding::pairs(&fields);
        let actor = fields
            .iter()
            .find(|(k, _)| k == "user_or_system")
            .map(|(_, v)| v.as_str());
        assert_eq!(actor, Some("local"));
    }
}

#[tokio::test]
async fn force_with_a_reason_overrides_a_hold() {
    let redis = RedisServer::start();
    write_failed(
        &mut connect(&redis),
        &[RawJob::new(
            "invalid",
            VALIDATION_TB,
            now_ms() - 3600 * 1000,
        )],
    );
    let app = app(&redis).await;
    let reply = send(
        &app,
        "POST",
        "/api/v1/jobs/failed/invalid/retry?force=true&reason=fixed%20the%20data",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["outcome"], "retried");
    assert_eq!(reply.json["forced"], true);
    assert!(
        reply.json["reason"]
            .as_str()
            .unwrap()
            .contains("fixed the data")
    );
}
