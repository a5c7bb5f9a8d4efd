//! `POST /api/v1/jobs/failed/delete-all`: its body's validation (400/415/422, never a 500,
//! nothing written), a dry run's answer, and the 409 of a count that changed.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, app, connect, now_ms, send_request, write_failed,
};

const PATH: &str = "/api/v1/jobs/failed/delete-all";

fn post(body: &str, content_type: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().method("POST").uri(PATH);
    if let Some(t) = content_type {
        r = r.header("content-type", t);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn json(body: &str) -> Request<Body> {
    post(body, Some("application/json"))
}

fn failed_count(con: &mut redis::Connection) -> u64 {
    redis::cmd("ZCARD")
        .arg("rq:failed:default")
        .query(con)
        .unwrap()
}

#[tokio::test]
async fn bad_bodies_are_json_400_415_or_422_and_change_nothing() {
    let redis = RedisServer::start();
    let mut con = connect(&redis);
    write_failed(
        &mut con,
        &[RawJob::new("j-1", NETWORK_TB, now_ms() - 60_000)],
    );
    let app = app(&redis).await;
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(2000));
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (json("{"), StatusCode::BAD_REQUEST, "invalid_json"),
        (json("\"x\""), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            json(r#"{"dryrun": true}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json(r#"{"limit": -1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json(r#"{"expected_count": "3"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json(r#"{"dry_run": true, "limit": 0}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json(r#"{"dry_run": true, "max_difference": 1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json(r#"{"dry_run": true, "failure_type": "Not A Type"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json(r#"{"dry_run": true, "group": "zz"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json(r#"{"dry_run": true, "wait_seconds": 100000}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (json(&long), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            json(r#"{"reason": "a\u0007b"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post(r#"{"dry_run": true}"#, Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
        ),
        (
            json(r#"{"reason": "   ", "queue": "default"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let what = format!("case {i}");
        let reply = send_request(&app, request).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.json);
        assert_eq!(reply.code(), code, "{what}: {}", reply.json);
    }
    assert_eq!(failed_count(&mut con), 1, "nothing was deleted");
    let outbox: u64 = redis::cmd("XLEN")
        .arg("retryguard:audit:outbox")
        .query(&mut con)
        .unwrap();
    assert_eq!(outbox, 0, "a refused request writes no audit record");
}

#[tokio::test]
async fn a_dry_run_counts_and_a_changed_count_is_a_409_that_deletes_nothing() {
    let redis = RedisServer::start();
    let mut con = connect(&redis);
    let now = now_ms();
    write_failed(
        &mut con,
        &[
            RawJob::new("j-1", NETWORK_TB, now - 60_000),
            RawJob::new("j-2", NETWORK_TB, now - 60_000),
        ],
    );
    let app = app(&redis).await;
    let reply = send_request(&app, json(r#"{"dry_run": true, "wait_seconds": 10}"#)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["counts"]["deleted"], 2, "{}", reply.json);
    assert_eq!(reply.json["dry_run"], true);

    write_failed(&mut con, &[RawJob::new("j-3", NETWORK_TB, now - 60_000)]);
    let reply = send_request(
        &app,
        json(r#"{"reason": "INC-9", "expected_count": 2, "wait_seconds": 10}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);
    assert_eq!(reply.code(), "conflict");
    assert_eq!(reply.json["expected_count"], 2);
    assert_eq!(reply.json["found_count"], 3);
    assert_eq!(reply.json["max_difference"], 0);
    assert_eq!(failed_count(&mut con), 3, "nothing was deleted");
    let op = reply.json["operation_id"].as_str().unwrap().to_string();
    let status = send_request(
        &app,
        Request::builder()
            .uri(format!("/api/v1/operations/{op}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status.json["state"], "conflict", "{}", status.json);
    assert_eq!(status.json["kind"], "delete_all");

    // Within max_difference it goes ahead.
    let reply = send_request(
        &app,
        json(
            r#"{"reason": "INC-9", "expected_count": 2, "max_difference": 1, "wait_seconds": 10}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["counts"]["deleted"], 3, "{}", reply.json);
    assert_eq!(failed_count(&mut con), 0);
}
