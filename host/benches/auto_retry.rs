//! `cargo bench --bench auto_retry`: the auto-retry sweeper's lag and the cost of the brakes'
//! accounting, on N real failed RQ jobs (default 10,000; `AUTO_BENCH_JOBS=N`). Not run in
//! CI: it needs `redis-server` on PATH and the test venv (`.venv-test/`, made by
//! scripts/test.sh).
//!
//! 1. A throwaway `redis-server`, N failed jobs made by real RQ workers, then `SAVE`: each
//!    measurement starts from the same RDB (restored, checked).
//! 2. Accounting: `RetryService::retry_all` (cooldown 0) on a binding without brakes, then on
//!    one with a breaker (closed) and a budget that applies to manual retries (its floor high
//!    enough that nothing is deferred), best of `AUTO_BENCH_RUNS` (default 3) each. Target:
//!    with ≤ 1.1× without. Each run must requeue all N exactly once.
//! 3. Sweeper lag: the N jobs entered in the due-time index, all due in the same second (2 s
//!    ahead), and an in-process sweeper (`[auto_retry]` defaults) on a binding with
//!    `auto_retry`: the lag of each requeue from the due time, p50 / p99 / max. Target: p99 ≤
//!    1 s. Every job must be requeued exactly once.
//!
//! Exits 0 when a target is missed (it reports), 1 when a correctness check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::brake::{Brakes, BreakerConfig, BudgetConfig};
use retryguard::clock::{new_operation_id, now_ms};
use retryguard::keyspace;
use retryguard::policy::{EngineConfig, PolicyEngine};
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::retry::sweeper::{Sweeper, SweeperConfig, SweeperStatus};
use retryguard::retry::{JobFilter, Outcome, Progress, RetryOptions, RetryService, ServiceConfig};

use support::python::Python;
use support::redis_server::RedisServer;
use support::{
    Snapshot, cmd, connect, env_number, make_failed_mix, queue_key, queue_state, verdict,
};

const QUEUE: &str = "auto";
const FAMILIES: &[&str] = &["network_error", "rate_limit", "temporary_error"];
const OVERHEAD_TARGET: f64 = 1.1;
const LAG_P99_TARGET_MS: u64 = 1000;

fn main() -> ExitCode {
    let jobs = env_number("AUTO_BENCH_JOBS", 10_000);
    let runs = env_number("AUTO_BENCH_RUNS", 3).max(1);
    let python = Python::venv();
    let mut server = RedisServer::start();
    println!(
        "auto_retry: {jobs} failed jobs on queue {QUEUE:?}, redis-server on port {}",
        server.port()
    );
    let started = Instant::now();
    let ids = make_failed_mix(python, &server, QUEUE, jobs, FAMILIES, started);
    assert_eq!(ids.len(), jobs);
    println!("  made them in {:.1} s", started.elapsed().as_secs_f64());
    let snapshot = Snapshot::save(&server, QUEUE, jobs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();

    // 2. Accounting.
    let brakes = Brakes {
        breaker: Some(BreakerConfig::default()),
        budget: Some(BudgetConfig {
            ratio: 0.2,
            min_per_minute: 1_000_000,
            apply_to_manual: true,
        }),
        ..Brakes::default()
    };
    let mut best = [f64::MAX, f64::MAX];
    for run in 0..runs {
        for (i, b) in [Brakes::default(), brakes].into_iter().enumerate() {
            snapshot.restore(&mut server);
            let url = server.url();
            let (seconds, retried) = runtime.block_on(async {
                let svc = service(&url, b).await;
                let t = Instant::now();
                let s = svc
                    .retry_all(
                        &JobFilter::default(),
                        &RetryOptions::new(),
                        "bench",
                        &new_operation_id(),
                        &Progress::default(),
                    )
                    .await
                    .expect("retry-all");
                (
                    t.elapsed().as_secs_f64(),
                    s.counts.get(&Outcome::Retried).copied().unwrap_or(0),
                )
            });
            if retried != jobs as u64 {
                failures.push(format!("run {run} brakes={i}: retried {retried} of {jobs}"));
            }
            if let Err(e) = queue_state(&url, QUEUE, &ids) {
                failures.push(format!("run {run} brakes={i}: {e}"));
            }
            println!(
                "  retry-all {} brakes: {seconds:.3} s",
                if i == 0 { "without" } else { "with" }
            );
            best[i] = best[i].min(seconds);
        }
    }
    let ratio = best[1] / best[0];

    // 3. Sweeper lag.
    snapshot.restore(&mut server);
    let url = server.url();
    let due_at = (now_ms() / 1000 + 3) * 1000;
    let mut con = connect(&url);
    for chunk in ids.chunks(1000) {
        let mut c = redis::cmd("ZADD");
        c.arg(keyspace::AUTO_DUE);
        for id in chunk {
            c.arg(due_at).arg(id);
        }
        let _: u64 = c.query(&mut con).unwrap();
    }
    let cpu_before = redis_cpu(&mut con);
    let status = Arc::new(SweeperStatus::default());
    let (lags, requeued, drained) = runtime.block_on(async {
        let svc = Arc::new(
            service(
                &url,
                Brakes {
                    auto_retry: true,
                    ..Brakes::default()
                },
            )
            .await,
        );
        let conn = svc.backend().connection();
        let sweeper = Sweeper::new(
            Arc::clone(&svc),
            conn,
            SweeperConfig::default(),
            Arc::clone(&status),
            "bench",
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(sweeper.run(stopped));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut drained = None;
        let mut check = svc.backend().connection();
        while Instant::now() < deadline {
            let left: u64 = redis::cmd("ZCARD")
                .arg(keyspace::AUTO_DUE)
                .query_async(&mut check)
                .await
                .unwrap();
            if left == 0 {
                drained = Some(now_ms().saturating_sub(due_at));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(true);
        let _ = task.await;
        (
            status.lag_percentiles(),
            status.requeued.load(std::sync::atomic::Ordering::Relaxed),
            drained,
        )
    });
    let redis_seconds = redis_cpu(&mut con) - cpu_before;
    let queued: u64 = cmd(&mut con, &["LLEN", &queue_key(QUEUE)]);
    if requeued != jobs as u64 || queued != jobs as u64 {
        failures.push(format!(
            "sweeper: requeued {requeued}, queue holds {queued}, of {jobs}"
        ));
    }
    if let Err(e) = queue_state(&url, QUEUE, &ids) {
        failures.push(format!("sweeper: {e}"));
    }

    println!();
    println!("| measure | figure | target | |");
    println!("|---|---|---|---|");
    println!(
        "| retry-all of {jobs}: without brakes / with breaker + budget (best of {runs}) | {:.3} s / {:.3} s = {ratio:.2}x | <= {OVERHEAD_TARGET}x | {} |",
        best[0],
        best[1],
        verdict(ratio <= OVERHEAD_TARGET)
    );
    match lags {
        Some((p50, p99)) => println!(
            "| sweeper lag, {jobs} due in the same second: p50 / p99 (all requeued {} ms after the due time) | {p50} ms / {p99} ms | p99 <= {LAG_P99_TARGET_MS} ms | {} |",
            drained.map_or("-".into(), |d| d.to_string()),
            verdict(p99 <= LAG_P99_TARGET_MS)
        ),
        None => failures.push("the sweeper requeued nothing".into()),
    }
    println!(
        "| Redis CPU during the sweep (user + sys) | {redis_seconds:.3} s = {:.0} µs per job | | |",
        redis_seconds * 1e6 / jobs as f64
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

async fn service(url: &str, brakes: Brakes) -> RetryService<RqBackend> {
    let backend = RqBackend::connect(url, RedisTimeouts::default())
        .await
        .expect("connects");
    let conn = backend.connection();
    let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
    let policy = engine.load_builtin().expect("builtin");
    RetryService::new(
        backend,
        conn,
        engine,
        policy,
        vec![("cooldown_seconds".into(), "0".into())],
        ServiceConfig::default(),
    )
    .with_brakes(brakes)
}

/// Redis's own CPU time so far (`INFO cpu`: used_cpu_user + used_cpu_sys), in seconds.
fn redis_cpu(con: &mut redis::Connection) -> f64 {
    let info: String = cmd(con, &["INFO", "cpu"]);
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "used_cpu_user" | "used_cpu_sys"))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}
