//! The idempotency guard over HTTP: every transition, every refusal, against a real Redis.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use retryguard::api;

use crate::common::{RedisServer, Reply, app, config, connect, send, send_request, state_with};
use crate::conform::assert_documented;

const BASE: &str = "/api/v1/idempotency";

async fn post(app: &Router, uri: &str, body: &Value) -> Reply {
    post_raw(app, uri, body.to_string()).await
}

async fn post_raw(app: &Router, uri: &str, body: String) -> Reply {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    send_request(app, request).await
}

async fn begin(app: &Router, key: &str, body: Value) -> Reply {
    post(app, &format!("{BASE}/{key}/begin"), &body).await
}

fn token(reply: &Reply) -> u64 {
    reply.json["token"].as_u64().expect("a token")
}

#[tokio::test]
async fn begin_complete_then_replay_with_the_header() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let got = begin(&app, "order-7", json!({"fingerprint": "fp"})).await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.json);
    assert_eq!(got.json["state"], "acquired");
    assert_eq!(
        got.json["lease_seconds"], 240,
        "[guard] default_lease_seconds"
    );
    assert!(got.headers.get("idempotent-replayed").is_none());
    let t = token(&got);

    let state = send(&app, "GET", &format!("{BASE}/order-7")).await;
    assert_eq!(state.status, StatusCode::OK);
    assert_eq!(state.json["state"], "in_progress");
    assert_eq!(state.json["fingerprint"], "fp");
    assert_eq!(state.json["lease_expired"], false);
    assert_eq!(state.json["token"], t);

    let result = json!({"receipt": "ch_1", "amount": 1250, "tags": ["a", null]});
    let done = post(
        &app,
        &format!("{BASE}/order-7/complete"),
        &json!({"token": t, "result": result}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.json);
    assert_eq!(done.json["state"], "completed");
    assert_eq!(done.json["result"], result);

    // The same call again (a client retrying its HTTP request) is answered the same.
    let again = post(
        &app,
        &format!("{BASE}/order-7/complete"),
        &json!({"token": t, "result": "other"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["result"], result, "the first stored result wins");

    let replay = begin(&app, "order-7", json!({"fingerprint": "fp"})).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.json);
    assert_eq!(replay.json["state"], "completed");
    assert_eq!(replay.json["result"], result);
    assert_eq!(
        replay.headers.get("idempotent-replayed").unwrap(),
        "true",
        "{:?}",
        replay.headers
    );

    let state = send(&app, "GET", &format!("{BASE}/order-7")).await;
    assert_eq!(state.json["state"], "completed");
    assert_eq!(state.json["result"], result);

    // Retention: the record expires ttl_seconds (72 h) after its last change.
    let ttl: i64 = redis::cmd("TTL")
        .arg("retryguard:idem:order-7")
        .query(&mut connect(&redis))
        .unwrap();
    assert!((72 * 3600 - 10..=72 * 3600).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn a_held_key_is_409_with_retry_after_and_another_fingerprint_is_422() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let got = begin(&app, "k", json!({"fingerprint": "a", "lease_seconds": 30})).await;
    assert_eq!(got.status, StatusCode::CREATED);
    assert_eq!(got.json["lease_seconds"], 30);

    let busy = begin(&app, "k", json!({"fingerprint": "a"})).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.json);
    assert_eq!(busy.code(), "in_progress");
    let retry_after: u64 = busy.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(busy.json["retry_after_seconds"], retry_after);

    let other = begin(&app, "k", json!({"fingerprint": "b"})).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.json
    );
    assert_eq!(other.code(), "fingerprint_mismatch");

    // Completed keys check the fingerprint too.
    let t = token(&got);
    let done = post(
        &app,
        &format!("{BASE}/k/complete"),
        &json!({"token": t, "result": 1}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK);
    let other = begin(&app, "k", json!({"fingerprint": "b"})).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.code(), "fingerprint_mismatch");

    // A lease over the maximum is capped.
    let capped = begin(&app, "long", json!({"lease_seconds": 10_000_000})).await;
    assert_eq!(capped.status, StatusCode::CREATED);
    assert_eq!(capped.json["lease_seconds"], 24 * 3600);
}

#[tokio::test]
async fn an_expired_lease_lets_a_new_owner_in_and_the_old_token_is_stale() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let first = begin(&app, "pay", json!({"fingerprint": "f", "lease_seconds": 1})).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let old = token(&first);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let state = send(&app, "GET", &format!("{BASE}/pay")).await;
    assert_eq!(state.json["state"], "in_progress");
    assert_eq!(state.json["lease_expired"], true);

    let second = begin(
        &app,
        "pay",
        json!({"fingerprint": "f", "lease_seconds": 60}),
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json);
    let new = token(&second);
    assert!(new > old, "fencing tokens grow: {old} then {new}");

    for action in ["complete", "release"] {
        let stale = post(
            &app,
            &format!("{BASE}/pay/{action}"),
            &json!({"token": old, "result": "late"}),
        )
        .await;
        if action == "release" {
            // `release` takes no result: an unknown field is a 400.
            assert_eq!(stale.status, StatusCode::BAD_REQUEST);
            let stale = post(&app, &format!("{BASE}/pay/release"), &json!({"token": old})).await;
            assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.json);
            assert_eq!(stale.code(), "stale_token");
        } else {
            assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.json);
            assert_eq!(stale.code(), "stale_token");
            assert_eq!(stale.json["state"], "in_progress");
        }
    }
    let done = post(
        &app,
        &format!("{BASE}/pay/complete"),
        &json!({"token": new, "result": {"ok": true}}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.json);

    // A lease that lapsed but that nobody took over can still be completed by its owner.
    let lone = begin(&app, "lone", json!({"lease_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let done = post(
        &app,
        &format!("{BASE}/lone/complete"),
        &json!({"token": token(&lone), "result": "late but recorded"}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.json);
}

#[tokio::test]
async fn release_frees_the_key_for_a_retry_and_delete_forgets_it() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let first = begin(&app, "mail", json!({"fingerprint": "f"})).await;
    let t1 = token(&first);
    let released = post(&app, &format!("{BASE}/mail/release"), &json!({"token": t1})).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.json);
    assert_eq!(released.json["state"], "absent");
    let state = send(&app, "GET", &format!("{BASE}/mail")).await;
    assert_eq!(state.json["state"], "absent");

    // Free: anyone may take it, with any fingerprint, and gets a larger token.
    let second = begin(&app, "mail", json!({"fingerprint": "g"})).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json);
    let t2 = token(&second);
    assert!(t2 > t1);
    let stale = post(&app, &format!("{BASE}/mail/release"), &json!({"token": t1})).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.code(), "stale_token");
    let stale = post(
        &app,
        &format!("{BASE}/mail/complete"),
        &json!({"token": t1, "result": null}),
    )
    .await;
    assert_eq!(stale.code(), "stale_token");

    // A completed key cannot be released.
    post(
        &app,
        &format!("{BASE}/mail/complete"),
        &json!({"token": t2, "result": null}),
    )
    .await;
    let refused = post(&app, &format!("{BASE}/mail/release"), &json!({"token": t2})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json["state"], "completed");

    let deleted = send(&app, "DELETE", &format!("{BASE}/mail")).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json["deleted"], true);
    let state = send(&app, "GET", &format!("{BASE}/mail")).await;
    assert_eq!(state.json["state"], "absent");
    assert_eq!(state.json["token"], Value::Null);
    let deleted = send(&app, "DELETE", &format!("{BASE}/mail")).await;
    assert_eq!(deleted.json["deleted"], false);
    let third = begin(&app, "mail", json!({})).await;
    assert!(token(&third) > t2, "tokens keep growing after a delete");

    // Completing or releasing a key nobody holds is a stale token too.
    let absent = post(&app, &format!("{BASE}/none/release"), &json!({"token": 1})).await;
    assert_eq!(absent.status, StatusCode::CONFLICT);
    assert_eq!(absent.json["state"], "absent");
}

#[tokio::test]
async fn bad_input_is_a_json_4xx() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let long = "k".repeat(256);
    let r = begin(&app, &long, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.code(), "invalid_key");
    // 255 bytes after percent-decoding is fine: "%C3%A9" is one 2-byte character.
    let r = begin(&app, &format!("{}{}", "%C3%A9".repeat(127), "k"), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let r = begin(&app, &"%C3%A9".repeat(128), json!({})).await;
    assert_eq!(r.code(), "invalid_key");
    // Slashes and spaces travel percent-encoded.
    let r = begin(&app, "tenant%2Forder%207", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let r = send(&app, "GET", &format!("{BASE}/tenant%2Forder%207")).await;
    assert_eq!(r.json["key"], "tenant/order 7");
    let r = begin(&app, "", json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.code(), "invalid_key", "an empty key");

    let r = begin(&app, "x", json!({"fingerprint": "f".repeat(1025)})).await;
    assert_eq!(r.code(), "invalid_fingerprint");
    let r = begin(&app, "x", json!({"lease_seconds": 0})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = begin(&app, "x", json!({"lease_seconds": -1})).await;
    assert_eq!(r.code(), "invalid_json");
    let r = begin(&app, "x", json!({"lease": 5})).await;
    assert_eq!(r.code(), "invalid_json", "unknown fields are refused");
    let r = post_raw(&app, &format!("{BASE}/x/begin"), "{not json".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_json");
    let r = post_raw(&app, &format!("{BASE}/x/complete"), "{}".into()).await;
    assert_eq!(r.code(), "invalid_json", "token is required");

    // A body over [server] body_limit_bytes (128 KiB) is refused before the guard sees it.
    let got = begin(&app, "big", json!({})).await;
    let r = post(
        &app,
        &format!("{BASE}/big/complete"),
        &json!({"token": token(&got), "result": "x".repeat(128 << 10)}),
    )
    .await;
    assert_eq!(r.code(), "payload_too_large", "{}", r.json);

    // A result over [guard] max_result_bytes is a 413 result_too_large.
    let mut cfg = config(&redis);
    cfg.guard.max_result_bytes = 1000;
    let small = api::router(state_with(cfg).await);
    let r = post(
        &small,
        &format!("{BASE}/big/complete"),
        &json!({"token": token(&got), "result": {"blob": "x".repeat(1000)}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.json);
    assert_eq!(r.code(), "result_too_large");
    let r = post(
        &small,
        &format!("{BASE}/big/complete"),
        &json!({"token": token(&got), "result": "x".repeat(990)}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "992 bytes of JSON fit: {}",
        r.json
    );
    let state = send(&app, "GET", &format!("{BASE}/big")).await;
    assert_eq!(state.json["result"], "x".repeat(990));

    let r = send(&app, "PUT", &format!("{BASE}/big")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_begins_on_one_key_acquire_it_exactly_once() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let mut callers = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            begin(&app, "race", json!({"fingerprint": "same"})).await
        }));
    }
    let mut acquired = 0;
    let mut busy = 0;
    for caller in callers {
        let r = caller.await.unwrap();
        match r.status {
            StatusCode::CREATED => acquired += 1,
            StatusCode::CONFLICT => {
                assert_eq!(r.code(), "in_progress");
                assert!(r.headers.contains_key("retry-after"));
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.json),
        }
    }
    assert_eq!((acquired, busy), (1, 49));
}

/// Found by schemathesis (scripts/schemathesis.sh): an unknown key answered `token` and
/// `updated_ms` as `null` where the document said integer, and a stored result that is not a
/// JSON object did not match the documented `object`.
#[tokio::test]
async fn key_states_and_stored_results_match_the_documented_schemas() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let doc = send(&app, "GET", "/openapi.json").await.json;
    let key_template = "/api/v1/idempotency/{key}";

    let absent = send(&app, "GET", &format!("{BASE}/never-held")).await;
    assert_eq!(absent.json["token"], Value::Null, "{}", absent.json);
    assert_documented(&doc, "GET", key_template, &absent);

    for (n, result) in [json!(null), json!(7), json!("text"), json!([1, "a"])]
        .into_iter()
        .enumerate()
    {
        let key = format!("scalar-{n}");
        let got = begin(&app, &key, json!({"fingerprint": "fp"})).await;
        assert_documented(&doc, "POST", "/api/v1/idempotency/{key}/begin", &got);
        let done = post(
            &app,
            &format!("{BASE}/{key}/complete"),
            &json!({"token": token(&got), "result": result}),
        )
        .await;
        assert_eq!(done.json["result"], result);
        assert_documented(&doc, "POST", "/api/v1/idempotency/{key}/complete", &done);
        let replay = begin(&app, &key, json!({"fingerprint": "fp"})).await;
        assert_eq!(replay.status, StatusCode::OK);
        assert_documented(&doc, "POST", "/api/v1/idempotency/{key}/begin", &replay);
        let shown = send(&app, "GET", &format!("{BASE}/{key}")).await;
        assert_documented(&doc, "GET", key_template, &shown);
    }
}
