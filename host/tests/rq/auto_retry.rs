//! Automatic retry, circuit breakers and retry budgets (docs/auto-retry.md) with real RQ
//! workers: an outage and its recovery end to end through `retryguard serve`, the sweeper's
//! leader SIGKILLed mid-sweep, a budget, two instances over one breaker, and a breaker opened
//! by hand.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::brake::state::{self as brake_state, ManualOp};
use retryguard::brake::{Brakes, BreakerConfig, BudgetConfig};
use retryguard::clock::{new_operation_id, now_ms};
use retryguard::queue::rq::RqBackend;
use retryguard::retry::{JobFilter, Outcome, Progress, RetryOptions, RetryService, tracker};
use serde_json::{Value, json};

use crate::support::{Python, RedisServer, Serve, connect, query};

/// A long-running forking `rq worker` on `queues`, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(python: &Python, url: &str, queues: &[&str]) -> Self {
        let child = python
            .command(url)
            .args(["-m", "rq.cli", "worker", "--url", url])
            .args(["--logging_level", "WARNING"])
            .args(queues)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rq worker starts");
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `secs`.
fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_request(serve: &Serve, method: &str, path: &str, body: &Value) -> (u16, Value) {
    serve.send(
        method,
        path,
        &[("host", "localhost"), ("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// Binds `*` to the policy it has, with `extra` (auto_retry, breaker, budget…) merged in.
fn bind_all(serve: &Serve, extra: Value) {
    let (status, current) = serve.http("GET", "/api/v1/policies/bindings/*");
    assert_eq!(status, 200, "{current}");
    let mut body = json!({"policy": current["policy"], "params": current["params"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, reply) = json_request(serve, "PUT", "/api/v1/policies/bindings/*", &body);
    assert_eq!(status, 200, "{reply}");
}

fn breaker(serve: &Serve, key: &str) -> Option<Value> {
    let (status, list) = serve.http("GET", "/api/v1/breakers");
    assert_eq!(status, 200, "{list}");
    list["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == key)
        .cloned()
}

fn audit_decisions(serve: &Serve, decision: &str) -> Vec<Value> {
    let (status, page) = serve.http(
        "GET",
        &format!("/api/v1/jobs/retry-audit?decision={decision}&limit=1000"),
    );
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

#[test]
fn an_outage_opens_the_breaker_which_holds_retries_and_recovery_closes_it() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let mut con = connect(&url);
    // The dependency is down.
    query::<()>(&mut con, &["SET", "dep:down", "1"]);
    // The failed jobs first: the sweeper would retry a job before it is done failing.
    let ids = python.make_failed(&url, "outage", 20, "jobs.fail_while_down", "dep");
    let serve = Serve::start_with(
        &url,
        &[
            ("RETRYGUARD_AUTO_RETRY_ENABLED", "true"),
            ("RETRYGUARD_RETRY_COOLDOWN_SECONDS", "1"),
            ("RETRYGUARD_RETRY_MAX_ATTEMPTS", "10"),
        ],
    );
    bind_all(
        &serve,
        json!({"auto_retry": true,
               "breaker": {"min_outcomes": 5, "open_seconds": 5, "half_open_probes": 2}}),
    );
    let _worker = Worker::start(python, &url, &["outage"]);

    // Nobody asks: the sweeper retries them, they fail again, and the breaker opens.
    let key = "*|network_error";
    let opened = wait_for(60, "the breaker to open", || {
        breaker(&serve, key).filter(|b| b["state"] == "open")
    });
    assert!(opened["outcomes"].as_u64().unwrap() >= 5, "{opened}");
    assert!(opened["failure_rate"].as_f64().unwrap() >= 0.5, "{opened}");
    let half_open_at = opened["half_open_at_ms"].as_u64().unwrap();

    // While it is open nothing is requeued, and the listed jobs say why, attempts unchanged.
    wait_for(20, "the retries in flight to end", || {
        let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:outage"]);
        (failed == 20).then_some(())
    });
    let runs_before: u64 = query(&mut con, &["GET", "dep"]);
    let listed = |serve: &Serve| {
        let (status, page) = serve.http("GET", "/api/v1/jobs/failed?queue=outage&limit=100");
        assert_eq!(status, 200, "{page}");
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap().to_string(),
                    (
                        j["decision"]["hold_kind"].clone(),
                        j["attempts"].as_u64().unwrap(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let first = listed(&serve);
    assert_eq!(first.len(), 20);
    for (id, (outcome, attempts)) in &first {
        assert_eq!(outcome, "circuit_open", "{id}");
        assert!(*attempts >= 1, "{id} was retried before the breaker opened");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(now_ms() < half_open_at, "the checks ran while it was open");
    let runs_after: u64 = query(&mut con, &["GET", "dep"]);
    assert_eq!(
        runs_before, runs_after,
        "nothing ran while the breaker was open"
    );
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:outage"]);
    assert_eq!(queued, 0);
    let again = listed(&serve);
    let attempts =
        |m: &BTreeMap<String, (Value, u64)>| -> Vec<u64> { m.values().map(|(_, a)| *a).collect() };
    assert_eq!(attempts(&first), attempts(&again), "a hold uses no attempt");

    // The dependency comes back: probes succeed, it closes, the sweeper retries the rest.
    query::<()>(&mut con, &["DEL", "dep:down"]);
    wait_for(60, "every job to succeed", || {
        let succeeded: BTreeMap<String, u64> = query(&mut con, &["HGETALL", "dep:succeeded"]);
        (succeeded.len() == ids.len()).then_some(())
    });
    let succeeded: BTreeMap<String, u64> = query(&mut con, &["HGETALL", "dep:succeeded"]);
    for id in &ids {
        assert_eq!(succeeded.get(id), Some(&1), "{id} succeeded exactly once");
    }
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:outage"]);
    assert_eq!(failed, 0);
    let closed = wait_for(20, "the breaker to close", || {
        breaker(&serve, key).filter(|b| b["state"] == "closed")
    });
    assert_eq!(closed["probes_left"], 0);

    // Each transition is audited (the records reach the trail through the outbox).
    let audited = wait_for(30, "the transitions in the audit trail", || {
        let d = ["breaker_opened", "breaker_half_opened", "breaker_closed"]
            .map(|d| audit_decisions(&serve, d));
        d.iter().all(|r| !r.is_empty()).then_some(d)
    });
    assert_eq!(audited[0][0]["failure_type"], "network_error");
    // And the retries were the sweeper's, actor `auto`.
    let retried = audit_decisions(&serve, "retried");
    assert!(!retried.is_empty());
    assert!(
        retried
            .iter()
            .all(|r| r["user_or_system"] == "auto" || r["actor"] == "auto"),
        "{:?}",
        retried.first()
    );
}

#[test]
fn the_sweeper_s_leader_killed_mid_sweep_is_replaced_and_no_job_runs_twice() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let env = [
        ("RETRYGUARD_AUTO_RETRY_ENABLED", "true"),
        ("RETRYGUARD_AUTO_RETRY_LEASE_TTL_SECONDS", "2"),
        ("RETRYGUARD_AUTO_RETRY_BATCH_SIZE", "20"),
    ];
    // The failed jobs first: the sweeper would retry a job before it is done failing.
    let ids = python.make_failed(&url, "failover", 300, "jobs.fail_once", "runs");
    let mut first = Serve::start_with(&url, &env);
    // 300 requeues at 100 a second: the sweep takes seconds, so the kill lands inside it.
    bind_all(
        &first,
        json!({"auto_retry": true, "max_requeues_per_second": 100}),
    );
    wait_for(20, "the first instance to lead", || {
        let (_, s) = first.http("GET", "/api/v1/auto-retry");
        (s["this_instance_leads"] == true).then_some(())
    });
    let second = Serve::start_with(&url, &env);
    let mut con = connect(&url);
    wait_for(60, "the first requeues", || {
        let queued: u64 = query(&mut con, &["LLEN", "rq:queue:failover"]);
        (queued > 0).then_some(())
    });
    first.kill();
    let queued_at_kill: u64 = query(&mut con, &["LLEN", "rq:queue:failover"]);
    assert!(
        queued_at_kill < 300,
        "the kill landed mid-sweep: {queued_at_kill}"
    );
    wait_for(60, "the standby to requeue the rest", || {
        let queued: u64 = query(&mut con, &["LLEN", "rq:queue:failover"]);
        (queued == 300).then_some(())
    });
    let (_, s) = second.http("GET", "/api/v1/auto-retry");
    assert_eq!(s["this_instance_leads"], true, "{s}");
    python.run_worker_burst(&url, &["failover"]);
    let runs: BTreeMap<String, u64> = query(&mut con, &["HGETALL", "runs:by_job"]);
    for id in &ids {
        assert_eq!(runs.get(id), Some(&2), "{id}: its failure, then one retry");
    }
    let failed: u64 = query(&mut con, &["ZCARD", "rq:failed:failover"]);
    assert_eq!(failed, 0);
}

/// The retry service of `retry.rs` (no cooldown), with `brakes` on its one binding.
async fn service(url: &str, brakes: Brakes) -> RetryService<RqBackend> {
    crate::retry::service(url, crate::retry::NO_COOLDOWN)
        .await
        .with_brakes(brakes)
}

async fn retry_all(
    svc: &RetryService<RqBackend>,
    options: &RetryOptions,
) -> BTreeMap<Outcome, u64> {
    svc.retry_all(
        &JobFilter::default(),
        options,
        "local",
        &new_operation_id(),
        &Progress::default(),
    )
    .await
    .expect("retry-all")
    .counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_caps_requeues_per_minute_and_the_deferred_go_later() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "budget", 50, "jobs.count_and_fail", "runs");
    let budget = BudgetConfig {
        ratio: 0.2,
        min_per_minute: 10,
        apply_to_manual: true,
    };
    let svc = service(
        &url,
        Brakes {
            budget: Some(budget),
            ..Brakes::default()
        },
    )
    .await;
    // A dry run asks the budget and takes nothing from it.
    let dry = retry_all(
        &svc,
        &RetryOptions {
            dry_run: true,
            ..RetryOptions::new()
        },
    )
    .await;
    assert_eq!(dry.get(&Outcome::Retried), Some(&10));
    assert_eq!(dry.get(&Outcome::BlockedBudget), Some(&40));
    // Ten a minute: the rest wait, held with a retry time in the next minute.
    let minute = now_ms() / 60_000;
    let summary = svc
        .retry_all(
            &JobFilter::default(),
            &RetryOptions::new(),
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
    if now_ms() / 60_000 != minute {
        return; // the minute turned mid-run (the counts below would span two budgets)
    }
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&10));
    assert_eq!(summary.deferred(), 40, "{summary:?}");
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:budget"]);
    assert_eq!(queued, 10);
    let page = svc.list(&JobFilter::default(), None, 100).await.unwrap();
    assert_eq!(page.jobs.len(), 40);
    // The budget is taken when a retry asks; the list shows what the policy says.
    assert!(page.jobs.iter().all(|j| j.attempts == 0));

    // The next minute: its budget counts the successes of the minute before (none here,
    // so the floor of 10). Its counter is what a new minute starts from.
    let used = format!("retryguard:budget:*:used:{minute}");
    query::<()>(&mut con, &["DEL", &used]);
    let later = retry_all(&svc, &RetryOptions::new()).await;
    assert_eq!(later.get(&Outcome::Retried), Some(&10));
    assert_eq!(later.get(&Outcome::BlockedBudget), Some(&30));
    // Successes raise it: 100 counted this minute allow 0.2 × 100 = 20.
    query::<()>(&mut con, &["DEL", &used]);
    query::<()>(
        &mut con,
        &["SET", &format!("retryguard:budget:*:ok:{minute}"), "100"],
    );
    let raised = retry_all(&svc, &RetryOptions::new()).await;
    assert_eq!(raised.get(&Outcome::Retried), Some(&20));
    assert_eq!(raised.get(&Outcome::BlockedBudget), Some(&10));

    // Without a budget nothing is deferred.
    let plain = service(&url, Brakes::default()).await;
    let rest = retry_all(&plain, &RetryOptions::new()).await;
    assert_eq!(rest.get(&Outcome::Retried), Some(&10));
    assert_eq!(rest.get(&Outcome::BlockedBudget), None);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:budget"]);
    assert_eq!(queued, 50, "each job requeued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_see_one_breaker_fed_by_real_outcomes() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "shared", 12, "jobs.count_and_fail", "runs");
    let breaker = BreakerConfig {
        min_outcomes: 5,
        half_open_probes: 2,
        ..BreakerConfig::default()
    };
    let brakes = Brakes {
        breaker: Some(breaker),
        ..Brakes::default()
    };
    let a = service(&url, brakes).await;
    let b = service(&url, brakes).await;
    // A retries 6 jobs; a real worker runs them and they fail again.
    let six = JobFilter {
        limit: Some(6),
        ..JobFilter::default()
    };
    let s = a
        .retry_all(
            &six,
            &RetryOptions::new(),
            "local",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(s.counts.get(&Outcome::Retried), Some(&6));
    python.run_worker_burst(&url, &["shared"]);
    // A's tracker records the outcomes and feeds them to the breaker in Redis.
    let tables: tracker::Tables = {
        let table = a.table();
        Arc::new(move || Arc::clone(&table))
    };
    let mut conn = a.backend().connection();
    assert_eq!(
        tracker::track_with(&mut conn, Some(&tables)).await.unwrap(),
        6
    );
    // B sees it open: every retry of the key is held, no attempt used.
    let outcomes = retry_all(&b, &RetryOptions::new()).await;
    assert_eq!(
        outcomes.get(&Outcome::BlockedCircuitOpen),
        Some(&12),
        "{outcomes:?}"
    );
    let listed = b.list(&JobFilter::default(), None, 100).await.unwrap();
    assert!(
        listed
            .jobs
            .iter()
            .all(|j| j.outcome == Outcome::BlockedCircuitOpen && j.retry_at_ms.is_some()),
        "{:?}",
        listed.jobs.first()
    );
    let views = brake_state::list(&mut conn, now_ms()).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state, "open");
    // It opened at the fifth failure; the sixth came while it was open and is not counted.
    assert_eq!(views[0].outcomes, 5);
    assert!((views[0].failure_rate - 1.0).abs() < f64::EPSILON);
    // A closes it by hand; B lets the retries through again.
    brake_state::manual(
        &mut conn,
        &views[0].key,
        ManualOp::Close,
        &breaker,
        "ops",
        "dependency fixed",
        now_ms(),
    )
    .await
    .unwrap();
    let outcomes = retry_all(&b, &RetryOptions::new()).await;
    assert_eq!(outcomes.get(&Outcome::Retried), Some(&12), "{outcomes:?}");
    let runs: BTreeMap<String, u64> = query(&mut connect(&url), &["HGETALL", "runs:by_job"]);
    assert_eq!(runs.len(), ids.len());
}

#[test]
fn a_breaker_opened_by_hand_holds_a_manual_retry_all_and_force_gets_through_audited() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "manual", 8, "jobs.network_error", "");
    let serve = Serve::start(&url);
    let key = "%2A%7Cnetwork_error";
    // Opening takes a reason, and the admin role (no tokens here: local is admin).
    let (status, reply) = json_request(
        &serve,
        "POST",
        &format!("/api/v1/breakers/{key}/open"),
        &json!({"reason": " "}),
    );
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = json_request(
        &serve,
        "POST",
        &format!("/api/v1/breakers/{key}/open"),
        &json!({"reason": "INC-42: the gateway is down"}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["state"], "open");
    let retry_all = |query: &str| {
        let (status, reply) = serve.http(
            "POST",
            &format!("/api/v1/jobs/failed/retry-all?wait_seconds=30{query}"),
        );
        assert_eq!(status, 200, "{reply}");
        reply
    };
    let held = retry_all("");
    assert_eq!(held["counts"]["blocked_circuit_open"], 8, "{held}");
    assert_eq!(held["deferred"], 8, "{held}");
    let mut con = connect(&url);
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:manual"]);
    assert_eq!(queued, 0);
    let forced = retry_all("&force=true&reason=INC-42%20replay%20now");
    assert_eq!(forced["counts"]["retried"], 8, "{forced}");
    let queued: u64 = query(&mut con, &["LLEN", "rq:queue:manual"]);
    assert_eq!(queued, 8);
    let records = wait_for(20, "the forced records", || {
        let r = audit_decisions(&serve, "retried");
        (r.len() == 8).then_some(r)
    });
    assert!(
        records.iter().all(|r| r["forced"] == true),
        "{:?}",
        records[0]
    );
    let opened = audit_decisions(&serve, "breaker_opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["retry_reason"], "INC-42: the gateway is down");
}
