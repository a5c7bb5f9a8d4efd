//! The policy registry over HTTP: upload, list, bind per job type, history, rollback and
//! retire; rejected changes leave the live table alone; two instances on one Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, Reply, app, config, connect, now_ms, send, send_request,
    state_with, write_failed,
};

/// The hostile fixture (policies/hostile): for ordinary job types it classifies every failure
/// as `temporary_error` and retries at once, which tells its decisions from the default's.
static HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_policy.wasm"));

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn upload(app: &Router, query: &str, body: &[u8]) -> Reply {
    let request = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/policies?{query}"))
        .header("content-type", "application/wasm")
        .body(Body::from(body.to_vec()))
        .unwrap();
    send_request(app, request).await
}

async fn put_binding(app: &Router, pattern: &str, body: Value) -> Reply {
    let request = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/policies/bindings/{pattern}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send_request(app, request).await
}

/// The digest that judged each listed job, by job id.
async fn judged_by(app: &Router) -> Vec<(String, String, String)> {
    let reply = send(app, "GET", "/api/v1/jobs/failed").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let mut out: Vec<_> = reply.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["policy_digest"].as_str().unwrap().to_string(),
                j["failure_type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn revision(app: &Router) -> u64 {
    let reply = send(app, "GET", "/api/v1/policies/bindings").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    reply.json["revision"].as_u64().unwrap()
}

fn jobs(redis: &RedisServer) {
    let ended = now_ms() - 3 * 3600 * 1000;
    write_failed(
        &mut connect(redis),
        &[
            RawJob {
                func: "payments.cards.charge",
                ..RawJob::new("pay-1", NETWORK_TB, ended)
            },
            RawJob {
                func: "reports.daily",
                ..RawJob::new("rep-1", NETWORK_TB, ended)
            },
        ],
    );
}

#[tokio::test]
async fn the_builtin_default_is_listed_and_seeds_the_catch_all_binding() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);

    let reply = send(&app, "GET", "/api/v1/policies").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let policies = reply.json["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0]["digest"], builtin.as_str());
    assert_eq!(policies[0]["name"], "builtin-default");
    assert_eq!(policies[0]["bound_to"], json!(["*"]));
    assert_eq!(policies[0]["imports"], json!([]));

    let reply = send(&app, "GET", "/api/v1/policies/bindings/*").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["policy"], builtin.as_str());
    assert_eq!(reply.json["changed_by"], "system");
    assert_eq!(reply.json["revision"], 1);

    // A second instance on the same Redis seeds nothing more.
    let again = app_from(&redis).await;
    assert_eq!(revision(&again).await, 1);
    // Seeding is the initial state, not a change: nothing in the audit outbox.
    let len: u64 = redis::cmd("XLEN")
        .arg(retryguard::audit::Keys::OUTBOX)
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(len, 0);
}

async fn app_from(redis: &RedisServer) -> Router {
    retryguard::api::router(state_with(config(redis)).await)
}

/// The newest outbox entry's fields.
fn last_outbox_record(redis: &RedisServer) -> serde_json::Map<String, Value> {
    let mut con = connect(redis);
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(retryguard::audit::Keys::OUTBOX)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let entry = reply.ids.into_iter().next().expect("an outbox entry");
    entry
        .map
        .into_iter()
        .map(|(k, v)| {
            let s: String = redis::from_redis_value(v).unwrap();
            (k, Value::String(s))
        })
        .collect()
}

#[tokio::test]
async fn upload_bind_per_job_type_history_rollback_and_retire() {
    let redis = RedisServer::start();
    jobs(&redis);
    let app = app(&redis).await;
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let hostile = digest_of(HOSTILE);

    // Before: the default judges both job types.
    let before = judged_by(&app).await;
    assert!(
        before
            .iter()
            .all(|(_, d, t)| *d == builtin && t == "network_error"),
        "{before:?}"
    );

    let reply = upload(&app, "name=hostile-fixture&description=test", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["digest"], hostile.as_str());
    assert_eq!(reply.json["uploader"], "local");
    assert_eq!(reply.json["info"]["name"], "hostile");
    assert_eq!(reply.json["bound_to"], json!([]));
    // The same bytes again: harmless.
    let reply = upload(&app, "name=hostile-fixture", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);

    let reply = put_binding(&app, "payments.*", json!({"policy": hostile, "params": {}})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["revision"], 2);
    assert_eq!(reply.json["binding"]["pattern"], "payments.*");
    assert_eq!(reply.json["binding"]["changed_by"], "local");

    // Live on this instance when the PUT answers: payments by the upload, the rest by `*`.
    let after = judged_by(&app).await;
    assert_eq!(
        after,
        vec![
            ("pay-1".into(), hostile.clone(), "temporary_error".into()),
            ("rep-1".into(), builtin.clone(), "network_error".into()),
        ]
    );
    let record = last_outbox_record(&redis);
    assert_eq!(record["decision"], "binding_set");
    assert_eq!(record["job_type"], "payments.*");
    let change: Value = serde_json::from_str(record["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(change["before"], Value::Null);
    assert_eq!(change["after"]["policy"], hostile.as_str());
    assert_eq!(change["revision"], 2);

    // An exact pattern beats the glob: bind one job type back to the default, with params.
    let reply = put_binding(
        &app,
        "payments.cards.charge",
        json!({"policy": builtin, "params": {"max_attempts": "5"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(judged_by(&app).await[0].1, builtin);

    // Change the glob's params, then roll back: the previous digest and params return.
    let reply = put_binding(
        &app,
        "payments.*",
        json!({"policy": builtin, "params": {"max_attempts": "7"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let reply = send(&app, "GET", "/api/v1/policies/bindings/payments.*/history").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let history = reply.json["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["policy"], hostile.as_str());
    assert_eq!(history[1], Value::Null);
    let reply = send(
        &app,
        "POST",
        "/api/v1/policies/bindings/payments.*/rollback",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["binding"]["policy"], hostile.as_str());
    assert_eq!(reply.json["binding"]["params"], json!({}));
    assert_eq!(
        last_outbox_record(&redis)["decision"],
        "binding_rolled_back"
    );

    // Retiring a bound policy is refused; unbound, it retires, and its bytes stay.
    let reply = send(&app, "DELETE", &format!("/api/v1/policies/{hostile}")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("payments.*")
    );
    let reply = send(&app, "DELETE", "/api/v1/policies/bindings/payments.*").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["binding"], Value::Null);
    let reply = send(&app, "DELETE", &format!("/api/v1/policies/{hostile}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["retired"], true);
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("retryguard:policy:{hostile}:bytes"))
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(stored, HOSTILE, "a retired policy's bytes stay for replays");
    // A retired policy cannot be bound.
    let reply = put_binding(&app, "payments.*", json!({"policy": hostile})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retired")
    );
}

#[tokio::test]
async fn rejected_uploads_and_bindings_leave_the_live_table_unchanged() {
    let redis = RedisServer::start();
    jobs(&redis);
    let app = app(&redis).await;
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let before = judged_by(&app).await;
    let rev = revision(&app).await;

    let core_module = b"\0asm\x01\0\0\0";
    let cases: Vec<(&str, &[u8], StatusCode, &str)> = vec![
        ("name=x", b"", StatusCode::BAD_REQUEST, "invalid_body"),
        (
            "name=x",
            b"definitely not wasm",
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_rejected",
        ),
        (
            "name=x",
            core_module,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_rejected",
        ),
        (
            "name=x",
            &HOSTILE[..HOSTILE.len() / 2],
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_rejected",
        ),
        ("name=", HOSTILE, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "description=no-name",
            HOSTILE,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "name=x&fuel=0",
            HOSTILE,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_rejected",
        ),
        (
            "name=x&fuel=lots",
            HOSTILE,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    for (query, body, status, code) in cases {
        let reply = upload(&app, query, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{query}: {}",
            reply.json
        );
        assert!(!reply.json["error"]["message"].as_str().unwrap().is_empty());
    }
    let reply = send(&app, "GET", "/api/v1/policies").await;
    assert_eq!(
        reply.json["policies"].as_array().unwrap().len(),
        1,
        "{}",
        reply.json
    );

    let unknown = "0".repeat(64);
    let bindings: Vec<(&str, Value, StatusCode)> = vec![
        (
            "payments.*",
            json!({"policy": unknown}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "payments.*",
            json!({"policy": "not-a-digest"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "payments.*",
            json!({"policy": builtin, "params": {"max_attempts": "many"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "payments.*",
            json!({"policy": builtin, "params": {"no_such_param": "1"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "payments.*",
            json!({"policy": builtin, "shadow": {"policy": unknown}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "pay*ments",
            json!({"policy": builtin}),
            StatusCode::BAD_REQUEST,
        ),
        ("payments.*", json!({"params": {}}), StatusCode::BAD_REQUEST),
        (
            "payments.*",
            json!({"policy": builtin, "params": {"max_attempts": 3}}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (pattern, body, status) in bindings {
        let reply = put_binding(&app, pattern, body.clone()).await;
        assert_eq!(reply.status, status, "{pattern} {body}: {}", reply.json);
    }
    let reply = send(&app, "DELETE", "/api/v1/policies/bindings/*").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);
    let reply = send(
        &app,
        "POST",
        "/api/v1/policies/bindings/payments.*/rollback",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.json);

    assert_eq!(
        revision(&app).await,
        rev,
        "a refused change bumped the revision"
    );
    assert_eq!(judged_by(&app).await, before);
}

/// Polls `f` until it holds or `within` passes; returns how long it took.
async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_reach_another_instance_within_a_second_and_no_request_fails_meanwhile() {
    let redis = RedisServer::start();
    jobs(&redis);
    let a = app(&redis).await;
    let b_state = state_with(config(&redis)).await;
    let registry = Arc::clone(b_state.service.registry().unwrap());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    // A long revision check: only the announcement can make B swap within a second.
    tokio::spawn(registry.watch(
        redis::Client::open(redis.url()).unwrap(),
        Duration::from_secs(30),
        stopped,
    ));
    let b = retryguard::api::router(b_state);
    let hostile = digest_of(HOSTILE);
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    // Let B subscribe before A announces.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = upload(&a, "name=hostile", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);

    // Lists and dry-run retry-alls against both instances for as long as the swaps go on.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |app: Router, done: Arc<std::sync::atomic::AtomicBool>| {
        let (hostile, builtin) = (hostile.clone(), builtin.clone());
        tokio::spawn(async move {
            let mut requests = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (id, digest, _) in judged_by(&app).await {
                    assert!(digest == hostile || digest == builtin, "{id}: {digest}");
                }
                let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all?dry_run=true").await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
                requests += 2;
            }
            requests
        })
    };
    let loads = [
        load(a.clone(), Arc::clone(&done)),
        load(b.clone(), Arc::clone(&done)),
    ];

    for round in 0..20 {
        let want = if round % 2 == 0 {
            hostile.clone()
        } else {
            builtin.clone()
        };
        let reply = put_binding(&a, "payments.*", json!({"policy": want})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        let took = eventually(Duration::from_secs(1), async || {
            judged_by(&b).await[0].1 == want
        })
        .await;
        assert!(
            took.is_some(),
            "round {round}: instance B still judges by the old binding after 1 s"
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loads {
        let requests = l
            .await
            .expect("no request failed and every decision used a bound digest");
        assert!(requests > 0);
    }
}

/// The outbox entries that carry a shadow verdict, as field maps.
fn shadow_records(redis: &RedisServer) -> Vec<std::collections::HashMap<String, String>> {
    let mut con = connect(redis);
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(retryguard::audit::Keys::OUTBOX)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect::<std::collections::HashMap<_, _>>()
        })
        .filter(|m| m.contains_key("shadow_decision"))
        .collect()
}

/// What `decision` a policy's verdict is, as the retry service names it.
fn outcome_of(d: &retryguard::policy::Decision, now: u64) -> (String, Option<u64>) {
    use retryguard::policy::{Decision, HoldKind};
    match d {
        Decision::RetryAt { at_ms } if *at_ms <= now => ("retried".into(), Some(*at_ms)),
        Decision::RetryAt { at_ms } => ("blocked_cooldown".into(), Some(*at_ms)),
        Decision::Hold { kind, .. } => (
            match kind {
                HoldKind::MaxAttempts => "blocked_max_attempts",
                HoldKind::NonRetryable => "blocked_non_retryable",
                HoldKind::UnknownFailure => "blocked_unknown",
                HoldKind::PolicySaysNo => "blocked_by_policy",
            }
            .into(),
            None,
        ),
    }
}

#[tokio::test]
async fn shadow_verdicts_are_recorded_and_experiments_equal_direct_evaluation() {
    use retryguard::policy::{EngineConfig, FailureInput, LoadOptions, PolicyEngine};
    let redis = RedisServer::start();
    jobs(&redis);
    let ended = now_ms() - 3 * 3600 * 1000;
    write_failed(
        &mut connect(&redis),
        &[RawJob {
            func: "payments.cards.refund",
            ..RawJob::new("pay-2", crate::common::VALIDATION_TB, ended)
        }],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = retryguard::audit::AuditDir::open(tmp.path()).unwrap();
    let app = retryguard::api::router(
        state_with(config(&redis))
            .await
            .with_audit_dir(Arc::new(dir)),
    );
    let hostile = digest_of(HOSTILE);
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let reply = upload(&app, "name=hostile", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let reply = put_binding(
        &app,
        "payments.*",
        json!({"policy": builtin, "shadow": {"policy": hostile, "params": {}}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["binding"]["shadow"]["policy"], hostile.as_str());

    // The shadow is never acted on: a dry run, then a real retry-all, act by the default.
    let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all?dry_run=true").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["counts"]["retried"], 2, "{}", reply.json);
    assert_eq!(
        reply.json["counts"]["blocked_non_retryable"], 1,
        "{}",
        reply.json
    );

    // Evaluate both policies directly on each recorded input, at the recorded clock.
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let active = engine.load_builtin().unwrap();
    let shadow = engine.load(HOSTILE, &LoadOptions::default()).unwrap();
    let records = shadow_records(&redis);
    assert_eq!(
        records.len(),
        2,
        "only the payments jobs have a shadow: {records:?}"
    );
    let mut con = connect(&redis);
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    let mut agreed = 0;
    for r in &records {
        assert_eq!(r["policy_digest"], builtin);
        assert_eq!(r["shadow_policy_digest"], hostile);
        let traceback: String = redis::cmd("HGET")
            .arg(retryguard::audit::Keys::BLOBS)
            .arg(&r["traceback_sha256"])
            .query(&mut con)
            .unwrap();
        let num = |k: &str| r[k].parse::<u64>().unwrap();
        let input = FailureInput {
            job_id: r["job_id"].clone(),
            job_type: r["job_type"].clone(),
            queue: r["queue"].clone(),
            job_status: r["job_status"].clone(),
            exc_type: r["exc_type"].clone(),
            exc_message: r["exc_message"].clone(),
            traceback,
            failed_at_ms: num("failed_at_ms"),
            first_failed_at_ms: num("first_failed_at_ms"),
            attempts: u32::try_from(num("prior_attempts")).unwrap(),
            last_attempt_at_ms: r.get("last_attempt_at_ms").map(|v| v.parse().unwrap()),
            queue_retries_left: r.get("queue_retries_left").map(|v| v.parse().unwrap()),
            seed: num("seed"),
            attributes: Vec::new(),
        };
        let now = num("now_ms");
        let a = engine.evaluate(&active, &input, &Vec::new(), now).unwrap();
        let s = engine.evaluate(&shadow, &input, &Vec::new(), now).unwrap();
        let (ao, at) = outcome_of(&a.decision, now);
        let (so, st) = outcome_of(&s.decision, now);
        let recorded: Value = serde_json::from_str(&r["shadow_decision"]).unwrap();
        assert_eq!(recorded["outcome"], so.as_str(), "{recorded}");
        assert_eq!(recorded["active_outcome"], ao.as_str(), "{recorded}");
        match retryguard::registry::experiments::compare(&ao, at, &so, st) {
            None => agreed += 1,
            Some(kind) => *want.entry(kind.to_string()).or_default() += 1,
        }
    }
    assert!(
        !want.is_empty(),
        "the fixture and the default should disagree somewhere"
    );

    let reply = send(&app, "GET", "/api/v1/policies/experiments").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let experiments = reply.json["experiments"].as_array().unwrap();
    assert_eq!(experiments.len(), 1, "{experiments:?}");
    let e = &experiments[0];
    assert_eq!(e["pattern"], "payments.*");
    assert_eq!(e["policy_digest"], builtin.as_str());
    assert_eq!(e["shadow_digest"], hostile.as_str());
    assert_eq!(e["decisions"], 2);
    assert_eq!(e["agreed"], agreed);
    assert_eq!(e["disagreements"], json!(want));
    assert_eq!(
        e["examples"].as_array().unwrap().len() as u64,
        want.values().sum::<u64>()
    );

    // Replay: the fixture over every failed job, beside what is bound now.
    let reply = send_request(
        &app,
        Request::builder()
            .method("POST")
            .uri(format!("/api/v1/policies/{hostile}/replay"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"filter": {"job_type": "payments.*"}}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["jobs"], 2, "{}", reply.json);
    assert_eq!(reply.json["candidate"], hostile.as_str());
    assert_eq!(
        reply.json["candidate_outcomes"]["retried"], 2,
        "{}",
        reply.json
    );
    assert_eq!(
        reply.json["bound_outcomes"]["blocked_non_retryable"], 1,
        "{}",
        reply.json
    );
    assert_eq!(
        reply.json["differences"]["active_holds_shadow_retries"], 1,
        "{}",
        reply.json
    );
}
