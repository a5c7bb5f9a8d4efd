//! The registry's watch over a Redis that goes away: once Redis is back, announcements
//! reach the other instance again within a second (not only the periodic revision check).

use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::policy::Params;
use retryguard::registry::{BindingSpec, PolicyRef, Upload};

use crate::common::{RedisServer, config, now_ms, state_with};

/// The hostile fixture: a second policy with its own digest.
static HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_policy.wasm"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_work_again_after_redis_restarts() {
    let mut redis = RedisServer::start_durable();
    let a = state_with(config(&redis)).await;
    let b = state_with(config(&redis)).await;
    let (a, b) = (
        Arc::clone(a.service.registry().unwrap()),
        Arc::clone(b.service.registry().unwrap()),
    );
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    // A revision check far longer than the test: only an announcement can make B swap.
    tokio::spawn(Arc::clone(&b).watch(Duration::from_secs(300), stopped));
    let hostile = a
        .upload(
            HOSTILE.to_vec(),
            Upload {
                name: "hostile".into(),
                ..Upload::default()
            },
            "test",
            now_ms(),
        )
        .await
        .unwrap()
        .meta
        .digest;
    let builtin = a.builtin().digest().to_string();
    let spec = |digest: &str| {
        BindingSpec::of(PolicyRef {
            policy: digest.to_string(),
            params: Params::new(),
        })
    };
    let judge_on_b = || {
        b.table()
            .resolve("payments.cards.charge")
            .active
            .policy
            .digest()
            .to_string()
    };
    let swap = async |want: &str| -> Option<Duration> {
        let sent = Instant::now();
        a.bind("payments.*", &spec(want), "test", now_ms())
            .await
            .unwrap();
        while sent.elapsed() < Duration::from_secs(1) {
            if judge_on_b() == want {
                return Some(sent.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        swap(&hostile).await.is_some(),
        "announced before the restart"
    );

    // Redis goes away (SIGKILL) and comes back with its data (AOF, fsync always).
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    // B subscribes again within about a second of Redis being back; A's connection
    // manager reconnects on its next command.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (round, want) in [&builtin, &hostile, &builtin].into_iter().enumerate() {
        let mut took = None;
        // A's first command after the restart may fail while it reconnects.
        for _ in 0..20 {
            match a.bind("payments.*", &spec(want), "test", now_ms()).await {
                Ok(_) => {
                    took = Some(());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(
            took.is_some(),
            "round {round}: A could not bind after the restart"
        );
        let sent = Instant::now();
        let mut seen = false;
        while sent.elapsed() < Duration::from_secs(1) {
            if judge_on_b() == *want {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            seen,
            "round {round}: B did not follow within 1 s after Redis restarted: it did not \
             subscribe again"
        );
    }
}

/// Sends `PATCH /api/v1/policies/{digest}` with a JSON body to `app`.
async fn patch_policy(
    app: &axum::Router,
    digest: &str,
    body: serde_json::Value,
) -> crate::common::Reply {
    let request = axum::http::Request::builder()
        .method("PATCH")
        .uri(format!("/api/v1/policies/{digest}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    crate::common::send_request(app, request).await
}

/// The fuel limit `registry` evaluates `job_type` under now.
fn live_fuel(registry: &retryguard::registry::Registry, job_type: &str) -> u64 {
    registry
        .table()
        .resolve(job_type)
        .active
        .policy
        .limits()
        .fuel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_reaches_every_instance_like_a_binding_change() {
    let redis = RedisServer::start();
    let a_state = state_with(config(&redis)).await;
    let a_app = retryguard::api::router(a_state.clone());
    let a = Arc::clone(a_state.service.registry().unwrap());
    // B follows announcements (its revision check far longer than the test); C only checks
    // the revision, when asked (as its periodic check does).
    let b_state = state_with(config(&redis)).await;
    let b = Arc::clone(b_state.service.registry().unwrap());
    let c_state = state_with(config(&redis)).await;
    let c = Arc::clone(c_state.service.registry().unwrap());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(Arc::clone(&b).watch(Duration::from_secs(300), stopped));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/policies?name=hostile")
        .header("content-type", "application/wasm")
        .body(axum::body::Body::from(HOSTILE))
        .unwrap();
    let reply = crate::common::send_request(&a_app, request).await;
    assert_eq!(
        reply.status,
        axum::http::StatusCode::CREATED,
        "{}",
        reply.json
    );
    let hostile = reply.json["digest"].as_str().unwrap().to_string();
    let spec = BindingSpec::of(PolicyRef {
        policy: hostile.clone(),
        params: Params::new(),
    });
    a.bind("payments.*", &spec, "test", now_ms()).await.unwrap();
    let job = "payments.cards.charge";
    let follows = async |registry: &retryguard::registry::Registry, digest: &str, fuel: u64| {
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(1) {
            let table = registry.table();
            let active = &table.resolve(job).active;
            if active.policy.digest().to_string() == digest && active.policy.limits().fuel == fuel {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    };
    assert!(
        follows(&b, &hostile, 10_000_000).await,
        "B follows the bind"
    );
    c.refresh().await.unwrap();
    assert_eq!(live_fuel(&c, job), 10_000_000);

    // A changes the bound policy's limits: every instance evaluates with them within a second.
    let reply = patch_policy(&a_app, &hostile, serde_json::json!({"fuel": 20_000_000})).await;
    assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.json);
    assert_eq!(live_fuel(&a, job), 20_000_000, "A, when it answers");
    assert!(
        follows(&b, &hostile, 20_000_000).await,
        "B did not reload the policy with its new limits within 1 s of the announcement"
    );
    c.refresh().await.unwrap();
    assert_eq!(
        live_fuel(&c, job),
        20_000_000,
        "C's revision check did not reload the policy with its new limits"
    );
    // Every instance is at the same revision.
    assert_eq!(b.table().revision, a.table().revision);
    assert_eq!(c.table().revision, a.table().revision);

    // And back: the same path again.
    let reply = patch_policy(&a_app, &hostile, serde_json::json!({"fuel": 10_000_000})).await;
    assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.json);
    assert!(follows(&b, &hostile, 10_000_000).await, "B follows it back");
    c.refresh().await.unwrap();
    assert_eq!(live_fuel(&c, job), 10_000_000);
}
