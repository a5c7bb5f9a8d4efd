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
