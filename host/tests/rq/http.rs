//! Exactly once through the HTTP API: eight concurrent `retry-all` callers over real RQ
//! failures, then a real worker counts every execution.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use retryguard::api::{self, AppState};
use retryguard::config::Config;
use retryguard::policy::{EngineConfig, PolicyEngine};
use tower::ServiceExt as _;

use crate::support::{Python, RedisServer, connect, query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_http_retry_alls_run_each_job_exactly_once_more() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "http", 200, "jobs.count_and_fail", "runs");

    let mut config = Config::default();
    config.redis.url = url.clone();
    config.retry.cooldown_seconds = Some(0);
    config.server.max_concurrent_retry_all = 8;
    let engine = Arc::new(
        PolicyEngine::new(EngineConfig {
            max_concurrent_evaluations: 8,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let policy = engine.load_builtin().unwrap();
    let state = AppState::from_app(
        retryguard::app::App::connect(Arc::new(config), engine, policy)
            .await
            .unwrap(),
    );
    let app = api::router(state);

    let mut callers = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            let request = Request::builder()
                .method("POST")
                .uri("/api/v1/jobs/failed/retry-all?queue=http&wait_seconds=50")
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, json)
        }));
    }
    let mut retried = 0;
    for caller in callers {
        let (status, json) = caller.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{json}");
        let counts = json["counts"].as_object().expect("per-outcome counts");
        let sum: u64 = counts.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(sum, json["total"].as_u64().unwrap(), "{json}");
        for (outcome, n) in counts.iter().filter(|(_, n)| n.as_u64() != Some(0)) {
            match outcome.as_str() {
                "retried" => retried += n.as_u64().unwrap(),
                "already_requeued" | "not_found" | "stale_decision" => {}
                other => panic!("unexpected outcome {other}: {json}"),
            }
        }
    }
    assert_eq!(retried, 200);

    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:http"]);
    assert_eq!(queued, 200);
    python.run_worker_burst(&url, &["http"]);
    let runs: BTreeMap<String, u64> = query(&mut con, &["HGETALL", "runs:by_job"]);
    assert!(
        ids.iter().all(|id| runs.get(id) == Some(&2)),
        "every job ran exactly one more time: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_key_of_the_wrong_type_never_makes_the_api_answer_5xx() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = Python::venv().make_failed(&url, "broken", 3, "jobs.count_and_fail", "runs");
    let mut con = connect(&url);
    // Still in the failed registry under its live score; its hash is now a string.
    let key = format!("rq:job:{}", ids[0]);
    let _: u64 = query(&mut con, &["DEL", &key]);
    let _: () = query(&mut con, &["SET", &key, "x"]);

    let mut config = Config::default();
    config.redis.url = url.clone();
    config.retry.cooldown_seconds = Some(0);
    let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).unwrap());
    let policy = engine.load_builtin().unwrap();
    let state = AppState::from_app(
        retryguard::app::App::connect(Arc::new(config), engine, policy)
            .await
            .unwrap(),
    );
    let app = api::router(state);
    for (method, uri) in [
        ("GET", "/api/v1/jobs/failed".to_string()),
        ("GET", format!("/api/v1/jobs/failed/{}", ids[0])),
        ("GET", "/api/v1/jobs/stats".to_string()),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?wait_seconds=50".to_string(),
        ),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:broken"]);
    assert_eq!(
        queued, 2,
        "every readable job was retried, the broken one held"
    );
}
