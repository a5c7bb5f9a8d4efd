//! Bad input is a JSON 4xx naming the problem; Redis down is a JSON 503, quickly.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{RedisServer, app, send, send_request};

#[tokio::test]
async fn bad_queries_are_json_400s() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    for (uri, needle) in [
        ("/api/v1/jobs/failed?limit=abc", "limit"),
        ("/api/v1/jobs/failed?limit=0", "limit"),
        ("/api/v1/jobs/failed?limit=1001", "limit"),
        ("/api/v1/jobs/failed?retryable=maybe", "retryable"),
        ("/api/v1/jobs/failed?failed_after=yesterday", "failed_after"),
        (
            "/api/v1/jobs/failed?failed_before=2026-01-01",
            "failed_before",
        ),
        (
            "/api/v1/jobs/failed?failure_type=Network%20Error",
            "failure_type",
        ),
        ("/api/v1/jobs/failed?cursor=%25%25", "cursor"),
        ("/api/v1/jobs/failed?dryrun=true", "dryrun"),
        ("/api/v1/jobs/failed?queue=a&queue=b", "queue"),
        ("/api/v1/jobs/failed/x/retry?dry_run=yes", "dry_run"),
        ("/api/v1/jobs/failed/retry-all?limit=0", "limit"),
        (
            "/api/v1/jobs/failed/retry-all?wait_seconds=3600",
            "wait_seconds",
        ),
        ("/api/v1/jobs/failed/retry-all?dry-run=true", "dry-run"),
    ] {
        let method = if uri.contains("/retry") {
            "POST"
        } else {
            "GET"
        };
        let reply = send(&app, method, uri).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{uri}: {message}");
        assert!(
            reply.code() == "invalid_query" || reply.code() == "invalid_cursor",
            "{uri}: {}",
            reply.json
        );
    }
}

#[tokio::test]
async fn force_without_reason_is_refused_before_anything_happens() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    for uri in [
        "/api/v1/jobs/failed/job-1/retry?force=true",
        "/api/v1/jobs/failed/job-1/retry?force=true&reason=%20%20",
        "/api/v1/jobs/failed/retry-all?force=true",
    ] {
        let reply = send(&app, "POST", uri).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.code(), "force_requires_reason", "{uri}");
    }
    let outbox: u64 = redis::cmd("XLEN")
        .arg("retryguard:audit:outbox")
        .query(&mut crate::common::connect(&redis))
        .unwrap();
    assert_eq!(outbox, 0, "a refused request writes no audit record");
}

#[tokio::test]
async fn unknown_jobs_routes_and_methods_are_json() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/failed/no-such-job").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    let reply = send(&app, "POST", "/api/v1/jobs/failed/no-such-job/retry").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    let reply = send(&app, "GET", "/api/v1/operations/op-nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(&app, "GET", "/api/v2/everything").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    let reply = send(&app, "DELETE", "/api/v1/jobs/failed").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
    let long_id = "x".repeat(600);
    let reply = send(&app, "GET", &format!("/api/v1/jobs/failed/{long_id}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_job_id");
    let reply = send(&app, "GET", "/api/v1/jobs/failed/a%00b").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_uris_and_bodies_are_refused() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let uri = format!("/api/v1/jobs/failed?queue={}", "q".repeat(9000));
    let reply = send(&app, "GET", &uri).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
    assert_eq!(reply.code(), "uri_too_long");
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/jobs/failed/retry-all?dry_run=true")
        .header("content-length", "100000000")
        .body(Body::from(vec![b'x'; 10]))
        .unwrap();
    let reply = send_request(&app, request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "payload_too_large");
}

#[tokio::test]
async fn redis_down_is_a_quick_json_503() {
    let mut redis = RedisServer::start();
    let app = app(&redis).await;
    assert_eq!(
        send(&app, "GET", "/api/v1/jobs/failed").await.status,
        StatusCode::OK
    );
    redis.stop();
    for (method, uri) in [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/failed/some-job"),
        ("POST", "/api/v1/jobs/failed/some-job/retry"),
        ("GET", "/api/v1/jobs/stats"),
        ("POST", "/api/v1/jobs/failed/retry-all?dry_run=true"),
        ("GET", "/readyz"),
    ] {
        let started = Instant::now();
        let reply = send(&app, method, uri).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{uri} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            reply.json
        );
        assert_eq!(reply.code(), "redis_unavailable", "{uri}");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(!message.contains("os error"), "no internals: {message}");
    }
    let reply = send(&app, "GET", "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK, "the process is up");
}

#[tokio::test]
async fn a_redis_that_hangs_is_a_503_not_a_hang() {
    let redis = RedisServer::start();
    let mut cfg = crate::common::config(&redis);
    cfg.redis.response_timeout_ms = 500;
    let app = retryguard::api::router(crate::common::state_with(cfg).await);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("ALL")
        .query(&mut crate::common::connect(&redis))
        .unwrap();
    let started = Instant::now();
    let reply = send(&app, "GET", "/api/v1/jobs/failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert_eq!(reply.code(), "redis_unavailable");
}

#[tokio::test]
async fn a_request_over_the_request_timeout_is_a_503() {
    let redis = RedisServer::start();
    let mut cfg = crate::common::config(&redis);
    cfg.redis.response_timeout_ms = 10_000;
    cfg.server.request_timeout_seconds = 1;
    cfg.server.retry_all_wait_seconds = 0;
    let app = retryguard::api::router(crate::common::state_with(cfg).await);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("ALL")
        .query(&mut crate::common::connect(&redis))
        .unwrap();
    let started = Instant::now();
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert_eq!(reply.code(), "timeout");
    assert!(reply.headers.contains_key("retry-after"));
}

/// A concrete URI for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "j-1")
        .replace("{key}", "k-1")
        .replace("{pattern}", "app.tasks.x")
        .replace("{digest}", &"0".repeat(64))
}

/// Routes that read a JSON body (every other route reads none, or the policy upload's bytes).
fn reads_json(method: &str, template: &str) -> bool {
    matches!(
        (method, template),
        ("POST", "/api/v1/idempotency/{key}/begin")
            | ("POST", "/api/v1/idempotency/{key}/complete")
            | ("POST", "/api/v1/idempotency/{key}/release")
            | ("PUT", "/api/v1/policies/bindings/{pattern}")
            | ("POST", "/api/v1/policies/{digest}/replay")
            | ("PATCH", "/api/v1/policies/{digest}")
            | ("POST", "/api/v1/jobs/failed/delete-all")
            | ("POST", "/api/v1/breakers/{key}/{op}")
    )
}

fn request(
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: &'static str,
) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = content_type {
        r = r.header("content-type", t);
    }
    r.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn every_route_refuses_unknown_parameters_and_bodies_it_does_not_read() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    for (method, template) in retryguard::api::ROUTES.iter() {
        let uri = concrete(template);
        // An unknown parameter is refused by name, everywhere, before any body is looked at.
        let bad_query = format!("{uri}?feul=5");
        let reply = send_request(
            &app,
            request(method, &bad_query, Some("application/json"), "{\"x\": 1}"),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {bad_query}: {}",
            reply.json
        );
        assert_eq!(
            reply.code(),
            "invalid_query",
            "{method} {bad_query}: {}",
            reply.json
        );
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("feul"),
            "{method} {bad_query}: {}",
            reply.json
        );
        if *template == "/api/v1/policies" && *method == "POST" {
            continue; // its body is the component
        }
        if reads_json(method, template) {
            // A JSON route: another content type is 415, an unknown field a 400 naming it.
            let reply = send_request(&app, request(method, &uri, Some("text/plain"), "{}")).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {uri}: {}",
                reply.json
            );
            assert_eq!(reply.code(), "unsupported_media_type");
            let reply = send_request(
                &app,
                request(
                    method,
                    &uri,
                    Some("application/json"),
                    "{\"retry_forever\": true}",
                ),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{method} {uri}: {}",
                reply.json
            );
            assert!(
                reply.json["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("retry_forever"),
                "{method} {uri}: {}",
                reply.json
            );
        } else {
            // A route that reads no body refuses one, whatever its type.
            for (content_type, body) in [
                (Some("application/json"), "{\"dry_run\": true}"),
                (Some("application/x-www-form-urlencoded"), "dry_run=true"),
                (None, "x"),
            ] {
                let reply = send_request(&app, request(method, &uri, content_type, body)).await;
                assert_eq!(
                    reply.status,
                    StatusCode::BAD_REQUEST,
                    "{method} {uri} {content_type:?}: {}",
                    reply.json
                );
                assert_eq!(
                    reply.code(),
                    "unexpected_body",
                    "{method} {uri}: {}",
                    reply.json
                );
            }
        }
    }
}

#[tokio::test]
async fn a_binding_with_an_unknown_field_is_refused_by_name_and_changes_nothing() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let before = send(&app, "GET", "/api/v1/policies/bindings").await;
    let digest = before.json["bindings"][0]["policy"]
        .as_str()
        .unwrap()
        .to_string();
    let body = format!("{{\"policy\": \"{digest}\", \"retry_forever\": true}}");
    let request = Request::builder()
        .method("PUT")
        .uri("/api/v1/policies/bindings/app.tasks.pay")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let reply = send_request(&app, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry_forever"),
        "{}",
        reply.json
    );
    let after = send(&app, "GET", "/api/v1/policies/bindings").await;
    assert_eq!(before.json["revision"], after.json["revision"]);
    assert_eq!(before.json["bindings"], after.json["bindings"]);
}
