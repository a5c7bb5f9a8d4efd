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
    tokio::spawn(Arc::clone(&b).watch(
        redis::Client::open(redis.url()).unwrap(),
        Duration::from_secs(300),
        stopped,
    ));
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
        .digest;
    let builtin = a.builtin().digest().to_string();
    let spec = |digest: &str| BindingSpec {
        active: PolicyRef {
            policy: digest.to_string(),
            params: Params::new(),
        },
        shadow: None,
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
