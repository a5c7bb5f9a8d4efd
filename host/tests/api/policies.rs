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
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
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
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let (_, fields) = reply.into_iter().next().expect("an outbox entry");
    retryguard::audit::encoding::pairs(&fields)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
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
    // The same bytes again, asking for the same settings: the stored policy, unchanged.
    let reply = upload(&app, "name=hostile-fixture&description=test", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["already_stored"], true, "{}", reply.json);

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
    tokio::spawn(registry.watch(Duration::from_secs(30), stopped));
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
    outbox_records(redis)
        .into_iter()
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
                HoldKind::CircuitOpen => "blocked_circuit_open",
                HoldKind::Budget => "blocked_budget",
            }
            .into(),
            None,
        ),
    }
}

#[tokio::test]
async fn shadow_verdicts_are_recorded_and_experiments_equal_direct_evaluation() {
    use retryguard::policy::{EngineConfig, LoadOptions, PolicyEngine};
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
    let dir = retryguard::audit::AuditStore::local(tmp.path()).unwrap();
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
            .arg(retryguard::keyspace::AUDIT_BLOBS)
            .arg(&r["traceback_sha256"])
            .query(&mut con)
            .unwrap();
        let input = recorded_input(r, traceback);
        let now: u64 = r["now_ms"].parse().unwrap();
        let a = engine.evaluate(&active, &input, &Vec::new(), now).unwrap();
        let s = engine.evaluate(&shadow, &input, &Vec::new(), now).unwrap();
        let (ao, at) = outcome_of(&a.decision, now);
        let (so, st) = outcome_of(&s.decision, now);
        let recorded: Value = serde_json::from_str(&r["shadow_decision"]).unwrap();
        assert_eq!(recorded["outcome"], so.as_str(), "{recorded}");
        assert_eq!(recorded["active_outcome"], ao.as_str(), "{recorded}");
        match retryguard::analytics::experiments::compare(&ao, at, &so, st) {
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
    assert_eq!(reply.json["candidate"], hostile.as_str());
    let current = &reply.json["current"];
    assert_eq!(current["jobs"], 2, "{}", reply.json);
    assert_eq!(
        current["candidate_outcomes"]["retried"], 2,
        "{}",
        reply.json
    );
    assert_eq!(
        current["bound_outcomes"]["blocked_non_retryable"], 1,
        "{}",
        reply.json
    );
    assert_eq!(
        current["differences"]["active_holds_shadow_retries"], 1,
        "{}",
        reply.json
    );
    // The dry run's decisions on the payments jobs are in the audit too: the fixture over
    // them differs exactly as the shadow did.
    let recorded = &reply.json["recorded"];
    assert_eq!(recorded["configured"], true, "{}", reply.json);
    assert_eq!(recorded["jobs"], 2, "{}", reply.json);
    assert_eq!(recorded["agreed"], agreed, "{}", reply.json);
    assert_eq!(recorded["differences"], json!(want), "{}", reply.json);
}

/// The outbox entries, oldest first, as field maps.
fn outbox_records(redis: &RedisServer) -> Vec<std::collections::HashMap<String, String>> {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
        .arg("-")
        .arg("+")
        .query(&mut connect(redis))
        .unwrap();
    reply
        .into_iter()
        .map(|(_, fields)| {
            retryguard::audit::encoding::pairs(&fields)
                .into_iter()
                .collect()
        })
        .collect()
}

/// The policy input a decision record carries, with its traceback.
fn recorded_input(
    r: &std::collections::HashMap<String, String>,
    traceback: String,
) -> retryguard::policy::FailureInput {
    let num = |k: &str| r[k].parse::<u64>().unwrap();
    retryguard::policy::FailureInput {
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
    }
}

async fn post_replay(app: &Router, digest: &str, body: Value) -> Reply {
    send_request(
        app,
        Request::builder()
            .method("POST")
            .uri(format!("/api/v1/policies/{digest}/replay"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// An unknown failure with a traceback of its own (its blob is deleted below).
const ODD_TB: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 5, in sync\n    frob()\nFrobnicationError: the frobnicator is unhappy\n";

#[tokio::test]
async fn replay_over_the_audit_agrees_with_itself_and_differs_as_direct_evaluation_says() {
    use retryguard::policy::{EngineConfig, LoadOptions, PolicyEngine};
    let redis = RedisServer::start();
    let old = now_ms() - 3 * 3600 * 1000;
    write_failed(
        &mut connect(&redis),
        &[
            RawJob {
                func: "payments.cards.charge",
                ..RawJob::new("net-old", NETWORK_TB, old)
            },
            // Failed a moment ago: the default cools it down (a retry time in the future).
            RawJob {
                func: "payments.cards.capture",
                ..RawJob::new("net-new", NETWORK_TB, now_ms() - 1000)
            },
            RawJob {
                func: "reports.daily",
                ..RawJob::new("val-1", crate::common::VALIDATION_TB, old)
            },
            RawJob {
                func: "reports.sync",
                ..RawJob::new("odd-1", ODD_TB, old)
            },
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = retryguard::audit::AuditStore::local(tmp.path()).unwrap();
    let app = retryguard::api::router(
        state_with(config(&redis))
            .await
            .with_audit_dir(Arc::new(dir)),
    );
    let doc = send(&app, "GET", "/openapi.json").await.json;
    let hostile = digest_of(HOSTILE);
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let reply = upload(&app, "name=hostile", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);

    // Decisions: a dry run over every job, then a real retry-all (requeues and holds).
    let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all?dry_run=true").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let reply = send(&app, "POST", "/api/v1/jobs/failed/retry-all").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(
        reply.json["counts"]["retried"].as_u64().unwrap() >= 1,
        "{}",
        reply.json
    );
    // The odd job's traceback is lost: its decisions cannot be replayed.
    let odd_sha = digest_of(ODD_TB.as_bytes());
    let _: u64 = redis::cmd("HDEL")
        .arg(retryguard::keyspace::AUDIT_BLOBS)
        .arg(&odd_sha)
        .query(&mut connect(&redis))
        .unwrap();

    // What each policy says of each recorded input at its recorded clock.
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let active = engine.load_builtin().unwrap();
    let candidate = engine.load(HOSTILE, &LoadOptions::default()).unwrap();
    let records = outbox_records(&redis);
    let mut con = connect(&redis);
    let (mut skipped, mut missing, mut replayed, mut agreed, mut payments) = (0, 0, 0, 0, 0);
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    let mut bound_outcomes: std::collections::BTreeMap<String, u64> = Default::default();
    let mut outcomes = std::collections::BTreeSet::new();
    for r in &records {
        if !r.contains_key("seed") {
            skipped += 1;
            continue;
        }
        assert_eq!(r["policy_digest"], builtin);
        if r["traceback_sha256"] == odd_sha {
            missing += 1;
            continue;
        }
        replayed += 1;
        if r["job_type"].starts_with("payments.") {
            payments += 1;
        }
        let traceback: String = redis::cmd("HGET")
            .arg(retryguard::keyspace::AUDIT_BLOBS)
            .arg(&r["traceback_sha256"])
            .query(&mut con)
            .unwrap();
        let input = recorded_input(r, traceback);
        let now: u64 = r["now_ms"].parse().unwrap();
        let a = engine.evaluate(&active, &input, &Vec::new(), now).unwrap();
        let c = engine
            .evaluate(&candidate, &input, &Vec::new(), now)
            .unwrap();
        let (ao, at) = outcome_of(&a.decision, now);
        let (co, ct) = outcome_of(&c.decision, now);
        outcomes.insert(ao.clone());
        *bound_outcomes.entry(ao.clone()).or_default() += 1;
        match retryguard::analytics::experiments::compare(&ao, at, &co, ct) {
            None => agreed += 1,
            Some(kind) => *want.entry(kind.to_string()).or_default() += 1,
        }
    }
    assert!(skipped >= 4, "two operations start and finish: {records:?}");
    assert_eq!(
        missing, 2,
        "the odd job: one decision per retry-all: {records:?}"
    );
    assert!(
        outcomes.contains("retried")
            && outcomes.contains("blocked_cooldown")
            && outcomes.contains("blocked_non_retryable"),
        "retries, a cooldown and holds were recorded: {outcomes:?}"
    );
    assert!(!want.is_empty(), "the fixture should differ somewhere");

    // The default with its own params agrees with every decision it made.
    let reply = post_replay(&app, &builtin, json!({"source": "audit"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    crate::conform::assert_documented(&doc, "POST", "/api/v1/policies/{digest}/replay", &reply);
    assert!(reply.json["current"].is_null(), "{}", reply.json);
    let r = &reply.json["recorded"];
    assert_eq!(r["configured"], true, "{r}");
    assert_eq!(r["examined"], records.len(), "{r}");
    assert_eq!(r["skipped"], skipped, "{r}");
    assert_eq!(r["filtered_out"], 0, "{r}");
    assert_eq!(r["unreplayable"], missing, "{r}");
    assert_eq!(
        r["unreplayable_reasons"],
        json!({"traceback_missing": missing}),
        "{r}"
    );
    assert_eq!(r["jobs"], replayed, "{r}");
    assert_eq!(r["agreed"], replayed, "{r}");
    assert_eq!(r["differences"], json!({}), "{r}");
    assert_eq!(r["bound_outcomes"], json!(bound_outcomes), "{r}");
    assert_eq!(r["candidate_outcomes"], json!(bound_outcomes), "{r}");
    assert_eq!(r["complete"], true, "{r}");

    // The fixture differs exactly as evaluating it directly says.
    let reply = post_replay(
        &app,
        &hostile,
        json!({"source": "audit", "audit": {"hours": 1}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    crate::conform::assert_documented(&doc, "POST", "/api/v1/policies/{digest}/replay", &reply);
    let r = &reply.json["recorded"];
    assert_eq!(r["jobs"], replayed, "{r}");
    assert_eq!(r["agreed"], agreed, "{r}");
    assert_eq!(r["differences"], json!(want), "{r}");
    assert_eq!(r["bound_outcomes"], json!(bound_outcomes), "{r}");
    let examples = r["examples"].as_array().unwrap();
    assert_eq!(
        examples.len() as u64,
        want.values().sum::<u64>().min(20),
        "{r}"
    );
    for e in examples {
        assert!(e["record_id"].is_string(), "{e}");
        assert_eq!(e["bound_digest"], builtin.as_str(), "{e}");
    }

    // Both sources, one job type glob; a cap on the records replayed.
    let reply = post_replay(
        &app,
        &hostile,
        json!({"filter": {"job_type": "payments.*"}, "audit": {"max_records": 1}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    crate::conform::assert_documented(&doc, "POST", "/api/v1/policies/{digest}/replay", &reply);
    assert!(reply.json["current"]["jobs"].is_u64(), "{}", reply.json);
    let r = &reply.json["recorded"];
    assert_eq!(r["jobs"], 1, "{r}");
    assert_eq!(r["complete"], false, "{r}");
    let reply = post_replay(
        &app,
        &hostile,
        json!({"filter": {"job_type": "payments.*"}}),
    )
    .await;
    let r = &reply.json["recorded"];
    assert_eq!(r["jobs"], payments, "{r}");
    assert_eq!(r["unreplayable"], 0, "{r}");
    assert_eq!(r["complete"], true, "{r}");
}

#[tokio::test]
async fn replay_refuses_bad_bodies_and_says_when_there_is_no_audit() {
    let redis = RedisServer::start();
    jobs(&redis);
    let app = app(&redis).await;
    let doc = send(&app, "GET", "/openapi.json").await.json;
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);

    // No audit directory: the recorded section says so; the current one is there.
    let reply = post_replay(&app, &builtin, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    crate::conform::assert_documented(&doc, "POST", "/api/v1/policies/{digest}/replay", &reply);
    assert_eq!(reply.json["current"]["jobs"], 2, "{}", reply.json);
    assert_eq!(reply.json["current"]["agreed"], 2, "{}", reply.json);
    assert_eq!(
        reply.json["recorded"]["configured"], false,
        "{}",
        reply.json
    );
    assert!(
        reply.json["recorded"]["message"]
            .as_str()
            .unwrap()
            .contains("audit")
    );
    let reply = post_replay(&app, &builtin, json!({"source": "current"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert!(reply.json["recorded"].is_null(), "{}", reply.json);

    let now = now_ms();
    for (body, needle) in [
        (json!({"source": "past"}), "source"),
        (json!({"audit": {"hours": 0}}), "hours"),
        (json!({"audit": {"hours": 721}}), "hours"),
        (json!({"audit": {"hours": 1, "since_ms": 5}}), "not both"),
        (
            json!({"audit": {"since_ms": now, "until_ms": now - 1}}),
            "before",
        ),
        (
            json!({"audit": {"since_ms": 0, "until_ms": now}}),
            "720 hours",
        ),
        (json!({"audit": {"max_records": 0}}), "max_records"),
        (json!({"audit": {"max_records": 100_001}}), "max_records"),
        (json!({"audit": {"hours": 1, "limit": 5}}), "limit"),
        (
            json!({"source": "current", "audit": {"hours": 1}}),
            "source",
        ),
        (json!({"source": "audit", "max_jobs": 5}), "source"),
        (json!({"max_jobs": 0}), "max_jobs"),
    ] {
        let reply = post_replay(&app, &builtin, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.json
        );
        crate::conform::assert_documented(&doc, "POST", "/api/v1/policies/{digest}/replay", &reply);
        let message = reply.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {}", reply.json);
    }
}

/// A `multipart/form-data` body: text fields, then (if given) the `policy` file part.
fn multipart(fields: &[(&str, &str)], policy: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "retryguard-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(bytes) = policy {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"policy\"; \
                 filename=\"policy.wasm\"\r\ncontent-type: application/wasm\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_form(
    app: &Router,
    query: &str,
    fields: &[(&str, &str)],
    policy: Option<&[u8]>,
) -> Reply {
    let (content_type, body) = multipart(fields, policy);
    let request = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/policies{query}"))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    send_request(app, request).await
}

#[tokio::test]
async fn a_multipart_upload_stores_the_same_policy_as_raw_bytes_and_bad_forms_are_400() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let before = revision(&app).await;
    let reply = upload_form(
        &app,
        "",
        &[
            ("name", "hostile-by-form"),
            ("description", "uploaded as a form"),
            ("fuel", "2000000"),
        ],
        Some(HOSTILE),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["digest"], digest_of(HOSTILE).as_str());
    assert_eq!(reply.json["name"], "hostile-by-form");
    assert_eq!(reply.json["description"], "uploaded as a form");
    assert_eq!(reply.json["limits"]["fuel"], 2_000_000);
    // A form field and the query together: the name may come from the query (the same
    // bytes and settings again: the stored policy, unchanged).
    let reply = upload_form(
        &app,
        "?name=hostile-by-form",
        &[("description", "uploaded as a form"), ("fuel", "2000000")],
        Some(HOSTILE),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["already_stored"], true, "{}", reply.json);
    assert_eq!(reply.json["name"], "hostile-by-form");

    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Form, Option<&[u8]>, &str); 6] = [
        (&[("name", "x")], None, "part named `policy`"),
        (&[], Some(HOSTILE), "needs a name"),
        (
            &[("name", "x"), ("color", "red")],
            Some(HOSTILE),
            "unknown form field `color`",
        ),
        (
            &[("name", "x"), ("allow_wasi", "maybe")],
            Some(HOSTILE),
            "allow_wasi",
        ),
        (
            &[("name", "x"), ("fuel", "lots")],
            Some(HOSTILE),
            "whole number",
        ),
        (&[("name", "x")], Some(b""), "component's bytes"),
    ];
    for (fields, policy, says) in cases {
        let reply = upload_form(&app, "", fields, policy).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{fields:?}: {}",
            reply.json
        );
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{fields:?}: {}",
            reply.json
        );
    }
    // A form that is not the policy world: refused like raw bytes.
    let reply = upload_form(&app, "", &[("name", "junk")], Some(b"\0asm\x01\0\0\0")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.json
    );
    assert_eq!(revision(&app).await, before, "uploads change no binding");
}

#[tokio::test]
async fn promote_makes_the_shadow_active_is_audited_and_rolls_back() {
    let redis = RedisServer::start();
    jobs(&redis);
    let app = app(&redis).await;
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let hostile = digest_of(HOSTILE);
    let reply = upload(&app, "name=candidate", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);

    // Nothing bound, then bound without a shadow: nothing to promote.
    let reply = send(&app, "POST", "/api/v1/policies/bindings/payments.*/promote").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.json);
    let reply = put_binding(
        &app,
        "payments.*",
        json!({"policy": builtin, "params": {"max_attempts": "2"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let reply = send(&app, "POST", "/api/v1/policies/bindings/payments.*/promote").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);

    // The candidate in shadow, then promoted with its own params.
    let reply = put_binding(
        &app,
        "payments.*",
        json!({"policy": builtin, "params": {"max_attempts": "2"},
               "shadow": {"policy": hostile, "params": {}}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let before = revision(&app).await;
    let reply = send(&app, "POST", "/api/v1/policies/bindings/payments.*/promote").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(
        reply.json["binding"]["policy"],
        hostile.as_str(),
        "{}",
        reply.json
    );
    assert_eq!(reply.json["binding"]["params"], json!({}), "{}", reply.json);
    assert!(reply.json["binding"]["shadow"].is_null(), "{}", reply.json);
    assert_eq!(revision(&app).await, before + 1);
    // Live at once: the payments job is judged by the promoted policy, the other by `*`.
    let judged = judged_by(&app).await;
    assert!(
        judged.iter().any(|(_, d, _)| *d == hostile)
            && judged.iter().any(|(_, d, _)| *d == builtin),
        "{judged:?}"
    );
    let record = last_outbox_record(&redis);
    assert_eq!(record["decision"], "binding_promoted");
    assert_eq!(record["job_type"], "payments.*");
    assert_eq!(record["policy_digest"], hostile.as_str());
    let attributes: Value = serde_json::from_str(record["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(
        attributes["before"]["shadow"]["policy"],
        hostile.as_str(),
        "{attributes}"
    );
    assert!(attributes["after"]["shadow"].is_null(), "{attributes}");

    // Rollback restores the binding as it was watched: builtin acting, candidate in shadow.
    let reply = send(
        &app,
        "POST",
        "/api/v1/policies/bindings/payments.*/rollback",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(
        reply.json["binding"]["policy"],
        builtin.as_str(),
        "{}",
        reply.json
    );
    assert_eq!(
        reply.json["binding"]["params"]["max_attempts"], "2",
        "{}",
        reply.json
    );
    assert_eq!(
        reply.json["binding"]["shadow"]["policy"],
        hostile.as_str(),
        "{}",
        reply.json
    );
}

/// The number of entries in the audit outbox.
fn outbox_len(redis: &RedisServer) -> u64 {
    redis::cmd("XLEN")
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
        .query(&mut connect(redis))
        .unwrap()
}

/// A request as the token holder `token` (no token: `None`).
fn as_token(
    method: &str,
    uri: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(body)).unwrap()
}

async fn patch_policy(app: &Router, digest: &str, body: Value) -> Reply {
    send_request(
        app,
        as_token(
            "PATCH",
            &format!("/api/v1/policies/{digest}"),
            None,
            "application/json",
            body.to_string().into_bytes(),
        ),
    )
    .await
}

/// The limits the live table of `state`'s instance evaluates `job_type` under.
fn live_limits(state: &retryguard::api::AppState, job_type: &str) -> Value {
    let table = state.service.registry().unwrap().table();
    serde_json::to_value(table.resolve(job_type).active.policy.limits()).unwrap()
}

#[tokio::test]
async fn uploading_identical_bytes_again_keeps_the_stored_policy_and_asks_for_patch() {
    let redis = RedisServer::start();
    jobs(&redis);
    // Two admins: whoever uploads the same bytes second is not recorded as their uploader.
    let (alice, alice_entry) =
        retryguard::api::auth::new_token("alice", retryguard::api::auth::Role::Admin).unwrap();
    let (bob, bob_entry) =
        retryguard::api::auth::new_token("bob", retryguard::api::auth::Role::Admin).unwrap();
    let mut c = config(&redis);
    c.auth.tokens = vec![alice_entry, bob_entry];
    let state = state_with(c).await;
    let app = retryguard::api::router(state.clone());
    let hostile = digest_of(HOSTILE);
    let up = async |token: &str, query: &str| {
        send_request(
            &app,
            as_token(
                "POST",
                &format!("/api/v1/policies?{query}"),
                Some(token),
                "application/wasm",
                HOSTILE.to_vec(),
            ),
        )
        .await
    };
    let get_policy = async || {
        let r = send_request(
            &app,
            as_token(
                "GET",
                &format!("/api/v1/policies/{hostile}"),
                Some(&alice),
                "application/json",
                Vec::new(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        r.json
    };

    let first = up(
        &alice,
        "name=strict&description=d&fuel=20000000&instances=20",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json);
    let reply = send_request(
        &app,
        as_token(
            "PUT",
            "/api/v1/policies/bindings/payments.*",
            Some(&alice),
            "application/json",
            json!({"policy": hostile}).to_string().into_bytes(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let stored = get_policy().await;
    let live = live_limits(&state, "payments.cards.charge");
    assert_eq!(live["fuel"], 20_000_000, "{live}");
    let rev = reply.json["revision"].as_u64().unwrap();
    let records = outbox_len(&redis);

    // Identical bytes and settings, by someone else: 200, the stored policy as it is.
    let again = up(&bob, "name=strict&description=d&fuel=20000000&instances=20").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["already_stored"], true, "{}", again.json);
    assert_eq!(again.json["uploader"], "alice", "{}", again.json);
    assert_eq!(
        again.json["bound_to"],
        json!(["payments.*"]),
        "{}",
        again.json
    );

    // Other settings for the same bytes: refused, naming each field, pointing at PATCH.
    let cases: [(&str, &[&str]); 4] = [
        (
            "name=lenient&description=d&fuel=20000000&instances=20",
            &["name"],
        ),
        (
            "name=strict&description=d&fuel=1000000000&instances=20",
            &["fuel"],
        ),
        // Omitted limits mean the defaults, as for a first upload: not what is stored.
        ("name=strict&description=d", &["fuel", "instances"]),
        (
            "name=strict&fuel=20000000&instances=20&allow_wasi=true",
            &["description", "allow_wasi"],
        ),
    ];
    for (query, fields) in cases {
        let reply = up(&bob, query).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::CONFLICT, "conflict"),
            "{query}: {}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        for field in fields {
            assert!(message.contains(field), "{query}: {message}");
        }
        assert!(
            message.contains(&format!("PATCH /api/v1/policies/{hostile}")),
            "{query}: {message}"
        );
    }
    // Limits the engine's pool cannot hold: 422, stored or not.
    for query in [
        "name=strict&description=d&fuel=20000000&instances=1000000",
        "name=strict&description=d&fuel=20000000&instances=33",
    ] {
        let reply = up(&bob, query).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "policy_rejected"),
            "{query}: {}",
            reply.json
        );
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("instances"),
            "{}",
            reply.json
        );
    }

    // Nothing changed: the stored record, the live limits, the revision, the audit trail.
    assert_eq!(get_policy().await, stored);
    assert_eq!(live_limits(&state, "payments.cards.charge"), live);
    let reply = send_request(
        &app,
        as_token(
            "GET",
            "/api/v1/policies/bindings",
            Some(&alice),
            "application/json",
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(reply.json["revision"], rev, "{}", reply.json);
    assert_eq!(outbox_len(&redis), records);
    assert_eq!(first.json["already_stored"], false, "{}", first.json);
}

#[tokio::test]
async fn limits_beyond_the_engine_pool_are_refused_and_nothing_is_stored() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    for query in ["name=x&instances=1000000", "name=x&instances=33"] {
        let reply = upload(&app, query, HOSTILE).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "policy_rejected"),
            "{query}: {}",
            reply.json
        );
    }
    let reply = send(&app, "GET", "/api/v1/policies").await;
    assert_eq!(
        reply.json["policies"].as_array().unwrap().len(),
        1,
        "only the built-in default: {}",
        reply.json
    );
    // The most the pool holds is accepted.
    let reply = upload(&app, "name=x&instances=32", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["limits"]["instances"], 32, "{}", reply.json);
}

#[tokio::test]
async fn a_settings_change_is_its_own_audited_change_live_when_it_answers() {
    let redis = RedisServer::start();
    jobs(&redis);
    let state = state_with(config(&redis)).await;
    let app = retryguard::api::router(state.clone());
    let hostile = digest_of(HOSTILE);
    let builtin = digest_of(retryguard::policy::builtin::DEFAULT_POLICY);
    let reply = upload(&app, "name=strict", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let uploaded_at = reply.json["uploaded_at_ms"].clone();
    let reply = put_binding(&app, "payments.*", json!({"policy": hostile})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let rev = revision(&app).await;
    let default_fuel = live_limits(&state, "payments.cards.charge")["fuel"].clone();
    assert_eq!(default_fuel, 10_000_000);

    let reply = patch_policy(
        &app,
        &hostile,
        json!({"name": "strict-v2", "fuel": 20_000_000, "instances": 20}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(
        reply.json["changed"],
        json!(["name", "fuel", "instances"]),
        "{}",
        reply.json
    );
    assert_eq!(reply.json["revision"], rev + 1, "{}", reply.json);
    assert_eq!(reply.json["policy"]["name"], "strict-v2");
    assert_eq!(reply.json["policy"]["limits"]["fuel"], 20_000_000);
    assert_eq!(reply.json["policy"]["bound_to"], json!(["payments.*"]));
    // Kept: who uploaded it when.
    assert_eq!(reply.json["policy"]["uploader"], "local");
    assert_eq!(reply.json["policy"]["uploaded_at_ms"], uploaded_at);
    // Live on this instance when it answers: the bound policy runs with the new limits.
    let live = live_limits(&state, "payments.cards.charge");
    assert_eq!(
        (live["fuel"].clone(), live["instances"].clone()),
        (json!(20_000_000), json!(20))
    );
    assert_eq!(revision(&app).await, rev + 1);
    // Audited like a binding change.
    let record = last_outbox_record(&redis);
    assert_eq!(record["decision"], "policy_settings_changed");
    assert_eq!(record["user_or_system"], "local");
    assert_eq!(record["policy_digest"], hostile.as_str());
    let change: Value = serde_json::from_str(record["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(change["revision"], rev + 1, "{change}");
    assert_eq!(change["policy"], hostile.as_str(), "{change}");
    assert_eq!(change["before"]["name"], "strict", "{change}");
    assert_eq!(change["before"]["limits"]["fuel"], 10_000_000, "{change}");
    assert_eq!(change["after"]["name"], "strict-v2", "{change}");
    assert_eq!(change["after"]["limits"]["fuel"], 20_000_000, "{change}");
    assert_eq!(change["after"]["limits"]["instances"], 20, "{change}");

    // Uploading the same bytes with the new settings now finds them stored.
    let reply = upload(&app, "name=strict-v2&fuel=20000000&instances=20", HOSTILE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["already_stored"], true);

    // Refused, each changing nothing.
    let records = outbox_len(&redis);
    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        (
            hostile.clone(),
            json!({"instances": 1_000_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "instances",
        ),
        (
            hostile.clone(),
            json!({"memory_bytes": 1u64 << 40}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "memory_bytes",
        ),
        (
            hostile.clone(),
            json!({"fuel": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "fuel",
        ),
        (
            hostile.clone(),
            json!({"fuel": 5, "uploader": "mallory"}),
            StatusCode::BAD_REQUEST,
            "uploader",
        ),
        (
            hostile.clone(),
            json!({}),
            StatusCode::BAD_REQUEST,
            "nothing to change",
        ),
        (
            hostile.clone(),
            json!({"name": " "}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            "0".repeat(64),
            json!({"fuel": 5}),
            StatusCode::NOT_FOUND,
            "no policy",
        ),
        (
            builtin.clone(),
            json!({"fuel": 20_000_000}),
            StatusCode::CONFLICT,
            "[policy]",
        ),
    ];
    for (digest, body, status, says) in cases {
        let reply = patch_policy(&app, &digest, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.json);
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{body}: {}",
            reply.json
        );
    }
    // Asking for what is stored: nothing written.
    let reply = patch_policy(&app, &hostile, json!({"fuel": 20_000_000})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["changed"], json!([]));
    assert!(reply.json["revision"].is_null(), "{}", reply.json);
    assert_eq!(revision(&app).await, rev + 1);
    assert_eq!(outbox_len(&redis), records);
    assert_eq!(
        live_limits(&state, "payments.cards.charge")["fuel"],
        20_000_000
    );
}

#[test]
fn the_cli_says_when_an_upload_was_stored_already_and_updates_settings() {
    let redis = RedisServer::start();
    let (child, port, _stdout) = crate::common::spawn_serve_with(&redis, &[]);
    /// Stops `serve` however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Killed(child);
    let file = std::env::temp_dir().join(format!("retryguard-hostile-{port}.wasm"));
    std::fs::write(&file, HOSTILE).unwrap();
    let file = file.to_string_lossy().into_owned();
    let policy = |args: &[&str]| {
        crate::common::retryguard()
            .arg("policy")
            .args(args)
            .env("RETRYGUARD_SERVER", format!("http://127.0.0.1:{port}"))
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let hostile = digest_of(HOSTILE);

    let out = policy(&["upload", &file, "--name", "strict", "--fuel", "20000000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("uploaded "),
        "{}",
        text(&out.stdout)
    );
    let out = policy(&["upload", &file, "--name", "strict", "--fuel", "20000000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("already stored")
            && text(&out.stdout).contains("nothing changed"),
        "{}",
        text(&out.stdout)
    );
    let out = policy(&["upload", &file, "--name", "lenient", "--fuel", "20000000"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("conflict") && err.contains("name") && err.contains("PATCH"),
        "{err}"
    );

    let out = policy(&[
        "update",
        &hostile,
        "--fuel",
        "30000000",
        "--name",
        "strict-v2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["changed"], json!(["name", "fuel"]), "{json}");
    assert_eq!(json["policy"]["limits"]["fuel"], 30_000_000, "{json}");
    let out = policy(&["update", &hostile, "--instances", "1000000"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("instances"),
        "{}",
        text(&out.stderr)
    );
    let out = policy(&["update", &hostile]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nothing to change"),
        "{}",
        text(&out.stderr)
    );

    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_form_setting_also_in_the_query_or_given_twice_is_refused_and_nothing_is_stored() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let before = revision(&app).await;
    for (query, fields, says) in [
        (
            "?fuel=2000000",
            &[("name", "twice"), ("fuel", "3000000")][..],
            "both as a query parameter and as a form field",
        ),
        (
            "?name=a",
            &[("name", "b")][..],
            "both as a query parameter and as a form field",
        ),
        ("", &[("name", "a"), ("name", "b")][..], "given twice"),
    ] {
        let reply = upload_form(&app, query, fields, Some(HOSTILE)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query} {fields:?}: {}",
            reply.json
        );
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{query} {fields:?}: {}",
            reply.json
        );
    }
    let listed = send(&app, "GET", "/api/v1/policies").await;
    assert!(
        !listed
            .json
            .to_string()
            .contains(digest_of(HOSTILE).as_str()),
        "{}",
        listed.json
    );
    assert_eq!(revision(&app).await, before);
}
