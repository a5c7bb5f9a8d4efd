//! `/healthz` and `/readyz`.

use axum::http::StatusCode;

use crate::common::{RedisServer, app, send};

#[tokio::test]
async fn healthz_answers_and_every_response_has_a_request_id() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["status"], "ok");
    let id = reply.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(id.starts_with("req-"), "{id}");
    let reply = send(&app, "GET", "/nowhere").await;
    assert!(reply.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn readyz_warns_about_a_redis_that_forgets_and_reports_its_settings() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["status"], "ready");
    assert_eq!(reply.json["redis"]["appendonly"], "no");
    assert_eq!(
        reply.json["redis"]["server"],
        format!("127.0.0.1:{}", redis.port()),
        "the server connected to"
    );
    assert!(reply.json["redis"]["maxmemory_policy"].is_string());
    assert!(reply.json["redis"]["appendfsync"].is_string());
    let warnings = reply.json["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("appendonly")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn readyz_is_quiet_for_a_durable_redis() {
    let redis = RedisServer::start_durable();
    let mut con = crate::common::connect(&redis);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut con)
        .unwrap();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["redis"]["appendonly"], "yes");
    assert_eq!(reply.json["warnings"], serde_json::json!([]));
}

#[tokio::test]
async fn readyz_reports_unknown_when_config_is_disabled() {
    let redis = RedisServer::start();
    let mut con = crate::common::connect(&redis);
    // As managed Redis does: CONFIG is not available to clients.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-config")
        .query(&mut con)
        .unwrap();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["redis"]["appendonly"], "unknown");
    assert_eq!(reply.json["redis"]["maxmemory_policy"], "unknown");
    assert_eq!(reply.json["warnings"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn readyz_and_stats_report_an_audit_that_falls_behind() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/readyz").await;
    assert_eq!(reply.json["audit"]["status"], "ok", "{}", reply.json);
    // A record waiting for a minute, and no writer: degraded (still ready: retries keep
    // their records in the outbox).
    let mut con = crate::common::connect(&redis);
    let old = format!("{}-0", retryguard::clock::now_ms() - 60_000);
    let _: String = redis::cmd("XADD")
        .arg("retryguard:audit:outbox")
        .arg(&old)
        .arg("decision")
        .arg("retried")
        .query(&mut con)
        .unwrap();
    let reply = send(&app, "GET", "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["status"], "degraded", "{}", reply.json);
    assert_eq!(reply.json["audit"]["status"], "degraded");
    assert_eq!(reply.json["audit"]["backlog"], 1);
    assert!(
        reply.json["audit"]["reason"]
            .as_str()
            .unwrap()
            .contains("no audit writer"),
        "{}",
        reply.json
    );
    // A writer that reports a write error.
    let _: () = redis::cmd("HSET")
        .arg("retryguard:audit:writer")
        .arg("last_error")
        .arg("audit directory: No space left on device (os error 28)")
        .query(&mut con)
        .unwrap();
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(reply.json["audit"]["status"], "degraded");
    assert!(
        reply.json["audit"]["reason"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{}",
        reply.json
    );
}

#[tokio::test]
async fn metrics_expose_requests_outcomes_evaluations_and_redis_gauges_in_prometheus_text() {
    use tower::ServiceExt as _;
    let redis = RedisServer::start();
    crate::common::write_failed(
        &mut crate::common::connect(&redis),
        &[crate::common::RawJob::new(
            "m-1",
            crate::common::NETWORK_TB,
            retryguard::clock::now_ms() - 3_600_000,
        )],
    );
    let app = app(&redis).await;
    crate::common::reconcile(&redis).await;
    let reply = send(&app, "POST", "/api/v1/jobs/failed/m-1/retry?dry_run=true").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let response = app
        .clone()
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for needle in [
        "retryguard_http_requests_total{route=\"/api/v1/jobs/failed/{id}/retry\",method=\"POST\",status=\"200\"}",
        "retryguard_retry_outcomes_total{outcome=\"retried\",dry_run=\"true\"}",
        "retryguard_policy_evaluations_total{policy=\"",
        "retryguard_policy_evaluation_duration_seconds_bucket{policy=\"",
        "retryguard_rq_jobs{queue=\"default\",state=\"failed\"} 1",
        "retryguard_failed_jobs_by_type{queue=\"default\",failure_type=\"network_error\"} 1",
        "retryguard_failure_index_built 1",
        "retryguard_audit_backlog 1",
        "retryguard_redis_up 1",
        "# TYPE retryguard_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
