//! `cargo bench --bench policy_eval`: the cost of one full policy evaluation.
//!
//! - `wasm/1-thread`: fresh store + instantiate + classify + decide of the built-in default
//!   policy on a ~1.4 KB traceback (what every decision costs);
//! - `wasm/2-threads`: the same from two threads at once (criterion reports the time per
//!   evaluation; throughput = 1 / that);
//! - `native`: the same logic compiled natively (the `retryguard-policy-default` rlib).
//!
//! After criterion it prints per-evaluation percentiles and throughput from a plain timed
//! loop, the figures quoted in the README, and the same percentiles for the payments example
//! policy (what a shadow or a second binding costs per decision).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use retryguard::policy::{EngineConfig, FailureInput, PolicyEngine};
use retryguard_policy_default as native;

/// A requests failure chained through urllib3, as RQ records it: 1.4 KB.
const TRACEBACK: &str = r#"Traceback (most recent call last):
  File "/usr/local/lib/python3.11/site-packages/urllib3/connection.py", line 198, in _new_conn
    sock = connection.create_connection(
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/local/lib/python3.11/site-packages/urllib3/util/connection.py", line 85, in create_connection
    raise err
ConnectionRefusedError: [Errno 111] Connection refused

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/usr/local/lib/python3.11/site-packages/urllib3/connectionpool.py", line 787, in urlopen
    response = self._make_request(
               ^^^^^^^^^^^^^^^^^^^
urllib3.exceptions.NewConnectionError: <urllib3.connection.HTTPSConnection object at 0x7f3b2c1d5e50>: Failed to establish a new connection: [Errno 111] Connection refused

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/usr/local/lib/python3.11/site-packages/rq/job.py", line 1385, in _execute
    result = self.func(*self.args, **self.kwargs)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/billing/tasks.py", line 42, in charge_card
    resp = session.post(f"{API}/v1/charges", json=payload, timeout=10)
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.payments.example', port=443): Max retries exceeded with url: /v1/charges (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3b2c1d5e50>: Failed to establish a new connection: [Errno 111] Connection refused'))
"#;

const NOW_MS: u64 = 1_795_953_600_000;

/// The payments example policy (policies/payments), built by host/build.rs.
static PAYMENTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/payments_policy.wasm"));

fn failure() -> FailureInput {
    let mut f = FailureInput {
        job_id: "5f1d2c3b-8e7a-4b6c-9d0e-1f2a3b4c5d6e".into(),
        job_type: "billing.tasks.charge_card".into(),
        queue: "payments".into(),
        job_status: "failed".into(),
        traceback: TRACEBACK.into(),
        failed_at_ms: NOW_MS - 5_000,
        first_failed_at_ms: NOW_MS - 5_000,
        attempts: 1,
        seed: 99,
        ..FailureInput::default()
    };
    f.fill_exception_from_traceback();
    f
}

fn native_eval(f: &FailureInput, params: &native::Params) -> native::Decision {
    let view = native::FailureView {
        job_type: &f.job_type,
        job_status: &f.job_status,
        exc_type: &f.exc_type,
        exc_message: &f.exc_message,
        traceback: &f.traceback,
        failed_at_ms: f.failed_at_ms,
        attempts: f.attempts,
        seed: f.seed,
    };
    let c = native::classify(&view);
    native::decide(&view, c.failure_type, c.retryable, params, NOW_MS)
}

fn benches(c: &mut Criterion) {
    assert!(
        (1300..1600).contains(&TRACEBACK.len()),
        "{}",
        TRACEBACK.len()
    );
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let policy = engine.load_builtin().unwrap();
    let f = failure();
    let params = Vec::new();
    let eval = engine.evaluate(&policy, &f, &params, NOW_MS).unwrap();
    assert_eq!(eval.classification.failure_type, "network_error");
    println!("fuel per evaluation: {}", eval.fuel_used);

    let mut group = c.benchmark_group("policy_eval");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("wasm/1-thread", |b| {
        b.iter(|| {
            engine
                .evaluate(&policy, black_box(&f), &params, NOW_MS)
                .unwrap()
        })
    });
    group.bench_function("wasm/2-threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(2) {
                            engine
                                .evaluate(&policy, black_box(&f), &params, NOW_MS)
                                .unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let native_params = native::Params::default();
    group.bench_function("native", |b| {
        b.iter(|| native_eval(black_box(&f), &native_params))
    });
    group.finish();

    report(&engine, &policy, &f, &native_params);
}

/// Per-evaluation percentiles and throughput from a plain loop.
fn report(
    engine: &PolicyEngine,
    policy: &retryguard::policy::Policy,
    f: &FailureInput,
    native_params: &native::Params,
) {
    const N: usize = 20_000;
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(engine.evaluate(policy, f, &Vec::new(), NOW_MS).unwrap());
        samples.push(t.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((N as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    let mut native_samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(native_eval(f, native_params));
        native_samples.push(t.elapsed());
    }
    native_samples.sort();
    let native_p50 = native_samples[N / 2].as_secs_f64() * 1e6;

    let throughput = |threads: usize| {
        let per_thread = 40_000 / threads;
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        black_box(engine.evaluate(policy, f, &Vec::new(), NOW_MS).unwrap());
                    }
                });
            }
        });
        (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
    };
    let (one, two) = (throughput(1), throughput(2));
    println!("\npolicy_eval summary ({N} sequential evaluations, ~1.4 KB traceback)");
    println!(
        "  wasm full evaluation: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us",
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
    println!(
        "  native same logic:    p50 {native_p50:.2} us (wasm/native {:.1}x)",
        pct(0.5) / native_p50
    );
    println!("  throughput: 1 thread {one:.0}/s, 2 threads {two:.0}/s");

    let payments = engine
        .load(PAYMENTS, &retryguard::policy::LoadOptions::default())
        .unwrap();
    let eval = engine.evaluate(&payments, f, &Vec::new(), NOW_MS).unwrap();
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(engine.evaluate(&payments, f, &Vec::new(), NOW_MS).unwrap());
        samples.push(t.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((N as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    println!(
        "  payments example:     p50 {:.1} us, p90 {:.1} us, p99 {:.1} us ({} fuel)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        eval.fuel_used
    );
}

criterion_group!(policy_eval, benches);

fn main() {
    policy_eval();
    Criterion::default().configure_from_args().final_summary();
}
