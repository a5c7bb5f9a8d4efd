//! `cargo bench --bench policy_platform`: the policy registry on real `retryguard serve`
//! processes (`target/release/retryguard`) over a throwaway `redis-server`, on this machine,
//! in one run. Not run in CI: it needs `redis-server` on PATH and the test venv
//! (`.venv-test/`, made by scripts/test.sh), and takes a few minutes, about one of them
//! making the failed jobs of part 3.
//!
//! 1. **Swap propagation.** Instances A and B on one Redis. The payments example policy is
//!    uploaded to A, then `PUT /api/v1/policies/bindings/bench.*` on A alternates between it
//!    and the built-in default, `POLICY_BENCH_SWAPS` times (default 100). Each swap is timed
//!    from the PUT sent (and from the PUT answered) until B's `GET /api/v1/policies/bindings`
//!    shows `live.revision` at least the PUT's revision (polled every millisecond on a
//!    kept-alive connection). B's periodic revision check is 2 s, so figures under 2 s come
//!    from the pub/sub announcement. At the end B's listing of a real failed job of type
//!    `bench.x` must show the digest of the last swap.
//! 2. **Restart with many policies, cold vs cached.** `POLICY_BENCH_POLICIES` (default 100)
//!    distinct policies, the built-in default's bytes plus a custom section each (a valid
//!    component, a digest of its own), uploaded and bound to `bench.p<i>.*` each, so a
//!    starting instance compiles them all before its table is built. Timed: spawn of
//!    `retryguard serve` to `GET /readyz` answering 200 with the live bindings revision equal
//!    to Redis's; cold (`RETRYGUARD_POLICY_CACHE_DIR` a fresh empty dir) then cached (the same
//!    dir again), `POLICY_BENCH_RUNS` times (default 3); the same with only the seeded `*`
//!    binding as a baseline. Needs `[policy] cache_dir` in the binary; skipped (said so)
//!    without it.
//! 3. **Shadow overhead.** `POLICY_BENCH_JOBS` (default 10,000) failed jobs made by real RQ
//!    workers (`host/tests/rq/make_failed.py`), an RDB snapshot restored before every run (as
//!    `retry_all` does). Each run binds `*` to the default with `cooldown_seconds = 0`, with
//!    or without the payments policy as its shadow, and times `POST
//!    /api/v1/jobs/failed/retry-all` (a real requeue); after it every job must be in the queue
//!    exactly once, the failed registry empty, and the shadow's verdicts (`GET
//!    /api/v1/policies/experiments`) one per job with the shadow and none without.
//!    `POLICY_BENCH_RUNS` runs of each, alternating.
//!
//! Every spawned `serve` gets `RETRYGUARD_POLICY_CACHE_DIR` (a temp dir) explicitly, so no run
//! writes `./policy-cache` anywhere in the repo. `POLICY_BENCH_PARTS=swap,restart,shadow`
//! (default all three) picks parts. Prints a table with the targets (propagation: the tests
//! bound it at 1 s; restart with every policy cached < 1 s; shadow retry-all <= 1.3x without).
//! Exits 0 when a target is missed (it reports), 1 when a correctness check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;

use support::python::Python;
use support::redis_server::RedisServer;
use support::{
    Conn, Serve, Snapshot, compact, env_number, http, load, make_failed, make_failed_mix,
    percent_encode, retry_all_http, serve_binary, verdict,
};

/// The payments example (policies/payments), built by host/build.rs.
static PAYMENTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/payments_policy.wasm"));

/// The queue of part 3's jobs.
const QUEUE: &str = "bench";
/// Retryable families of `host/tests/rq/jobs.py` (fast to fail), made in equal shares.
const FAMILIES: &[&str] = &["network_error", "rate_limit", "temporary_error"];
/// The pattern part 1 swaps, and the job type whose listing it checks.
const SWAP_PATTERN: &str = "bench.*";
const SWAP_JOB_TYPE: &str = "bench.x";
/// The env var of `[policy] cache_dir`.
const CACHE_ENV: &str = "RETRYGUARD_POLICY_CACHE_DIR";
/// The targets.
const PROPAGATION_BOUND_S: f64 = 1.0;
const CACHED_RESTART_S: f64 = 1.0;
const SHADOW_RATIO: f64 = 1.3;
/// How long a swap may take to reach B before it counts as lost.
const SWAP_GIVE_UP: Duration = Duration::from_secs(10);
/// How long a start may take before it is a failure.
const START_GIVE_UP: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let jobs = env_number("POLICY_BENCH_JOBS", 10_000);
    let swaps = env_number("POLICY_BENCH_SWAPS", 100).max(1);
    let policies = env_number("POLICY_BENCH_POLICIES", 100).max(1);
    let runs = env_number("POLICY_BENCH_RUNS", 3).max(1);
    let parts =
        std::env::var("POLICY_BENCH_PARTS").unwrap_or_else(|_| "swap,restart,shadow".into());
    let want = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let Some(bin) = serve_binary() else {
        eprintln!("policy_platform: `retryguard serve` does not run; build the binary first");
        return ExitCode::FAILURE;
    };
    let tmp = tempfile::Builder::new()
        .prefix("retryguard-policy-bench-")
        .tempdir()
        .expect("a temp dir");
    let cache = cache_dir_supported(&bin, tmp.path());
    let mut bench = Bench {
        bin,
        tmp: tmp.path().to_path_buf(),
        cache,
        dirs: 0,
        swap: None,
        restart: None,
        shadow: None,
        notes: Vec::new(),
        failures: Vec::new(),
    };
    println!(
        "policy_platform: {} (pid {}), {}",
        bench.bin.display(),
        std::process::id(),
        load()
    );
    if !bench.cache {
        bench.note(format!(
            "this binary refuses {CACHE_ENV} (no `[policy] cache_dir` yet): parts 1 and 3 run \
             without it, part 2 is skipped"
        ));
    }
    if want("swap") {
        bench.swap_propagation(swaps);
    }
    if want("restart") {
        if bench.cache {
            bench.restart(policies, runs);
        } else {
            println!("\n== 2. restart: skipped (no {CACHE_ENV} in this binary)");
        }
    }
    if want("shadow") {
        bench.shadow(jobs, runs);
    }
    bench.report()
}

/// Whether `serve --check-config` accepts `RETRYGUARD_POLICY_CACHE_DIR` (it refuses unknown
/// `RETRYGUARD_` variables). It connects to nothing.
fn cache_dir_supported(bin: &Path, tmp: &Path) -> bool {
    let cwd = tmp.join("check-config");
    std::fs::create_dir_all(&cwd).expect("a dir");
    let check = |with: bool| {
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RETRYGUARD_") {
                cmd.env_remove(k);
            }
        }
        if with {
            cmd.env(CACHE_ENV, tmp.join("check-config-cache"));
        }
        cmd.args(["serve", "--check-config"])
            .current_dir(&cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let (without, with) = (check(false), check(true));
    assert!(
        without,
        "`retryguard serve --check-config` fails with no settings at all"
    );
    with
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[derive(Debug)]
struct SwapFigures {
    swaps: usize,
    /// Seconds from the PUT sent / answered to B's live revision reaching the PUT's.
    from_sent: Vec<f64>,
    from_answered: Vec<f64>,
    /// The PUT's own round trip.
    put: Vec<f64>,
}

#[derive(Debug)]
struct RestartFigures {
    policies: usize,
    upload_s: f64,
    bind_s: f64,
    baseline_cold: Vec<f64>,
    baseline_cached: Vec<f64>,
    cold: Vec<f64>,
    cached: Vec<f64>,
}

#[derive(Debug)]
struct ShadowFigures {
    jobs: usize,
    without: Vec<f64>,
    with: Vec<f64>,
}

#[derive(Debug)]
struct Bench {
    bin: PathBuf,
    tmp: PathBuf,
    /// Whether the binary knows `[policy] cache_dir`.
    cache: bool,
    /// Temp dirs handed out so far.
    dirs: usize,
    swap: Option<SwapFigures>,
    restart: Option<RestartFigures>,
    shadow: Option<ShadowFigures>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Bench {
    fn fail(&mut self, what: String) {
        eprintln!("CORRECTNESS FAILURE: {what}");
        self.failures.push(what);
    }

    fn note(&mut self, what: String) {
        println!("  note: {what}");
        self.notes.push(what);
    }

    /// A new empty dir under the bench's temp dir.
    fn fresh_dir(&mut self, what: &str) -> PathBuf {
        self.dirs += 1;
        let dir = self.tmp.join(format!("{what}-{}", self.dirs));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    /// `serve` on `redis`, its policy cache in `cache` (when the binary has one), plus `env`.
    fn spawn(&self, redis: &RedisServer, name: &str, cache: &Path, env: &[(&str, &str)]) -> Serve {
        let cache = cache.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = Vec::new();
        if self.cache {
            all.push((CACHE_ENV, cache.as_str()));
        }
        all.extend_from_slice(env);
        Serve::spawn(&self.bin, &redis.url(), redis.dir(), name, &all)
    }

    fn start(&self, redis: &RedisServer, name: &str, cache: &Path) -> Serve {
        let mut serve = self.spawn(redis, name, cache, &[]);
        serve.wait_up(Duration::from_secs(120));
        serve
    }

    // --- 1. swap propagation --------------------------------------------------------------

    fn swap_propagation(&mut self, swaps: usize) {
        println!("\n== 1. swap propagation: {swaps} swaps of {SWAP_PATTERN} on A, seen live on B");
        let redis = RedisServer::start();
        let python = Python::venv();
        // A real failed job of type bench.x: no worker can import `bench`, so it fails.
        let ids = make_failed(
            python,
            &redis,
            "bench-swap",
            1,
            SWAP_JOB_TYPE,
            1,
            Instant::now(),
        );
        let (cache_a, cache_b) = (self.fresh_dir("cache-a"), self.fresh_dir("cache-b"));
        let a = self.start(&redis, "serve-a", &cache_a);
        let b = self.start(&redis, "serve-b", &cache_b);
        let mut ca = Conn::open(a.addr);
        let mut cb = Conn::open(b.addr);

        let default = sha256_hex(retryguard::policy::builtin::DEFAULT_POLICY);
        let payments = sha256_hex(PAYMENTS);
        let (status, body) = ca.request(
            "POST",
            "/api/v1/policies?name=payments-bench",
            Some(("application/wasm", PAYMENTS)),
        );
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 201 || v["digest"] != payments.as_str() {
            self.fail(format!("upload of payments to A answered {status}: {body}"));
            return;
        }
        let (_, listed) = ca.json("GET", "/api/v1/policies", None);
        let digests: Vec<&str> = listed["policies"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["digest"].as_str()).collect())
            .unwrap_or_default();
        if !digests.contains(&default.as_str()) || !digests.contains(&payments.as_str()) {
            self.fail(format!(
                "GET /api/v1/policies lists {digests:?}, not the default {default} and payments \
                 {payments}"
            ));
        }

        // A warm-up swap (not counted): B is up and subscribed.
        let path = format!("/api/v1/policies/bindings/{}", percent_encode(SWAP_PATTERN));
        let (rev, _) = self.put_binding(&mut ca, &path, &default);
        if rev.is_none_or(|rev| self.wait_live(&mut cb, rev, Instant::now()).is_none()) {
            self.fail("the warm-up swap never reached B".into());
            return;
        }

        let mut figures = SwapFigures {
            swaps,
            from_sent: Vec::with_capacity(swaps),
            from_answered: Vec::with_capacity(swaps),
            put: Vec::with_capacity(swaps),
        };
        let mut last = default.clone();
        for i in 0..swaps {
            let digest = if i % 2 == 0 { &payments } else { &default };
            let sent = Instant::now();
            let (rev, answered) = self.put_binding(&mut ca, &path, digest);
            let Some(rev) = rev else { return };
            let Some(seen) = self.wait_live(&mut cb, rev, sent) else {
                self.fail(format!(
                    "swap {i} (revision {rev}) not live on B after {SWAP_GIVE_UP:?}"
                ));
                return;
            };
            figures.from_sent.push(secs(seen - sent));
            figures.from_answered.push(secs(seen - answered));
            figures.put.push(secs(answered - sent));
            last.clone_from(digest);
        }
        println!(
            "  from PUT sent:     {}\n  from PUT answered: {}\n  the PUT itself:    {}",
            stats_ms(&figures.from_sent),
            stats_ms(&figures.from_answered),
            stats_ms(&figures.put)
        );
        let slow = figures.from_sent.iter().filter(|s| **s >= 2.0).count();
        if slow > 0 {
            self.note(format!(
                "{slow} of {swaps} swaps took >= 2 s: the periodic check, not pub/sub, made them live"
            ));
        }

        // B judges bench.x by the last swap's policy.
        let (status, listing) = cb.json(
            "GET",
            &format!("/api/v1/jobs/failed?job_type={SWAP_JOB_TYPE}"),
            None,
        );
        let job = listing["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["id"] == ids[0].as_str()));
        match job {
            Some(j) if j["policy_digest"] == last.as_str() && j["job_type"] == SWAP_JOB_TYPE => {
                println!(
                    "  B lists {SWAP_JOB_TYPE} ({}) judged by {} (the last swap's): ok",
                    j["failure_type"], last
                );
            }
            _ => self.fail(format!(
                "B's listing of {SWAP_JOB_TYPE} ({status}) does not show the last swap's digest \
                 {last}: {listing}"
            )),
        }
        drop((a, b));
        self.swap = Some(figures);
    }

    /// PUTs `pattern -> digest` (params `{}`) on A; the new revision (`None` on a failure,
    /// recorded) and when the answer was read.
    fn put_binding(&mut self, conn: &mut Conn, path: &str, digest: &str) -> (Option<u64>, Instant) {
        let body = json!({"policy": digest, "params": {}});
        let (status, v) = conn.json("PUT", path, Some(&body));
        let answered = Instant::now();
        let rev = v["revision"].as_u64();
        if status != 200 || rev.is_none() || v["binding"]["policy"] != digest {
            self.fail(format!("PUT {path} -> {digest} answered {status}: {v}"));
            return (None, answered);
        }
        (rev, answered)
    }

    /// Polls B's bindings until its live revision is at least `rev`; when it was seen.
    fn wait_live(&mut self, conn: &mut Conn, rev: u64, since: Instant) -> Option<Instant> {
        loop {
            let (status, v) = conn.json("GET", "/api/v1/policies/bindings", None);
            let now = Instant::now();
            if status != 200 {
                self.fail(format!(
                    "B's GET /api/v1/policies/bindings answered {status}: {v}"
                ));
                return None;
            }
            if !v["live"]["error"].is_null() {
                self.fail(format!(
                    "B's live table reports a swap error: {}",
                    v["live"]
                ));
                return None;
            }
            if v["live"]["revision"]
                .as_u64()
                .is_some_and(|live| live >= rev)
            {
                return Some(now);
            }
            if now - since > SWAP_GIVE_UP {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // --- 2. restart with many policies ------------------------------------------------------

    fn restart(&mut self, policies: usize, runs: usize) {
        println!(
            "\n== 2. restart: spawn to ready with {policies} bound policies, cold vs cached \
             ({runs} runs each)"
        );
        let redis = RedisServer::start();

        // The baseline: only the `*` binding the first start seeds.
        let cache = self.fresh_dir("cache-seed");
        let mut seed = self.start(&redis, "serve-seed", &cache);
        let base_rev = self.live_revision(&mut seed, "the seeding instance");
        let _ = seed.stop();
        let (baseline_cold, baseline_cached) =
            self.timed_starts(&redis, base_rev, runs, "baseline");

        // Many policies, each bound to its own pattern.
        let cache = self.fresh_dir("cache-setup");
        let mut setup = self.start(&redis, "serve-setup", &cache);
        let mut conn = Conn::open(setup.addr);
        let base = retryguard::policy::builtin::DEFAULT_POLICY;
        let started = Instant::now();
        let mut digests = Vec::with_capacity(policies);
        for i in 0..policies {
            let bytes = with_custom_section(base, i);
            let digest = sha256_hex(&bytes);
            let (status, body) = conn.request(
                "POST",
                &format!("/api/v1/policies?name=bench-p{i}"),
                Some(("application/wasm", &bytes)),
            );
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status != 201 || v["digest"] != digest.as_str() {
                self.fail(format!(
                    "upload {i} answered {status} (want digest {digest}): {body}"
                ));
                return;
            }
            digests.push(digest);
        }
        let upload_s = secs(started.elapsed());
        let unique: std::collections::HashSet<&String> = digests.iter().collect();
        if unique.len() != policies || unique.contains(&sha256_hex(base)) {
            self.fail(format!(
                "the {policies} variants have {} distinct digests (the default's among them: {})",
                unique.len(),
                unique.contains(&sha256_hex(base))
            ));
        }
        println!("  uploaded {policies} policies in {upload_s:.1} s");
        let started = Instant::now();
        let mut rev = 0;
        for (i, digest) in digests.iter().enumerate() {
            let pattern = format!("bench.p{i}.*");
            let path = format!("/api/v1/policies/bindings/{}", percent_encode(&pattern));
            match self.put_binding(&mut conn, &path, digest).0 {
                Some(r) => rev = r,
                None => return,
            }
        }
        let bind_s = secs(started.elapsed());
        println!("  bound them to bench.p<i>.* in {bind_s:.1} s (revision {rev})");
        let (_, v) = conn.json("GET", "/api/v1/policies/bindings", None);
        let bound = v["bindings"].as_array().map_or(0, Vec::len);
        if bound != policies + 1 || v["revision"].as_u64() != Some(rev) {
            self.fail(format!(
                "after binding: {bound} bindings (want {}), revision {} (want {rev})",
                policies + 1,
                v["revision"]
            ));
        }
        drop(conn);
        self.live_revision(&mut setup, "the setup instance");
        let _ = setup.stop();

        let (cold, cached) = self.timed_starts(&redis, rev, runs, &format!("{policies} policies"));
        self.restart = Some(RestartFigures {
            policies,
            upload_s,
            bind_s,
            baseline_cold,
            baseline_cached,
            cold,
            cached,
        });
    }

    /// `runs` times: a start with a fresh empty cache dir, then one with the same dir.
    fn timed_starts(
        &mut self,
        redis: &RedisServer,
        rev: u64,
        runs: usize,
        what: &str,
    ) -> (Vec<f64>, Vec<f64>) {
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let dir = self.fresh_dir("cache-restart");
            let s = self.timed_start(redis, &dir, rev);
            let (files, bytes) = dir_size(&dir);
            println!(
                "  {what}, run {run}: cold {s:.3} s (cache then: {files} files, {:.1} MB)",
                bytes as f64 / 1e6
            );
            cold.push(s);
            let s = self.timed_start(redis, &dir, rev);
            println!("  {what}, run {run}: cached {s:.3} s");
            cached.push(s);
        }
        println!(
            "  {what}: median cold {:.3} s, cached {:.3} s",
            median(&cold),
            median(&cached)
        );
        (cold, cached)
    }

    /// Seconds from spawning `serve` to `/readyz` 200 with its live bindings revision equal to
    /// Redis's (and `rev`); then stops it.
    fn timed_start(&mut self, redis: &RedisServer, cache: &Path, rev: u64) -> f64 {
        let started = Instant::now();
        let mut serve = self.spawn(redis, "serve-restart", cache, &[]);
        let seconds = loop {
            serve.check_running();
            if serve.listening() && http(serve.addr, "GET", "/readyz").0 == 200 {
                let (status, body) = http(serve.addr, "GET", "/api/v1/policies/bindings");
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let live = v["live"]["revision"].as_u64();
                if status == 200 && live == v["revision"].as_u64() && live == Some(rev) {
                    break secs(started.elapsed());
                }
                if !v["live"]["error"].is_null() {
                    self.fail(format!(
                        "a starting instance reports a swap error: {}",
                        v["live"]
                    ));
                    break secs(started.elapsed());
                }
            }
            assert!(
                started.elapsed() < START_GIVE_UP,
                "retryguard serve not ready within {START_GIVE_UP:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        if serve.stop().is_none_or(|s| !s.success()) {
            self.note("an instance did not stop cleanly on SIGTERM within 10 s".into());
        }
        seconds
    }

    /// The instance's live revision, checked equal to Redis's.
    fn live_revision(&mut self, serve: &mut Serve, who: &str) -> u64 {
        serve.check_running();
        let (status, body) = http(serve.addr, "GET", "/api/v1/policies/bindings");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let (live, stored) = (v["live"]["revision"].as_u64(), v["revision"].as_u64());
        if status != 200 || live.is_none() || live != stored {
            self.fail(format!("{who}: bindings answered {status}: {body}"));
        }
        stored.unwrap_or(0)
    }

    // --- 3. shadow overhead ------------------------------------------------------------------

    fn shadow(&mut self, jobs: usize, runs: usize) {
        println!(
            "\n== 3. shadow overhead: retry-all of {jobs} failed jobs, `*` bound with and \
             without a shadow ({runs} runs each)"
        );
        let python = Python::venv();
        let mut redis = RedisServer::start();
        let started = Instant::now();
        let ids = make_failed_mix(python, &redis, QUEUE, jobs, FAMILIES, started);
        println!(
            "  made {} failed jobs in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(ids.len(), jobs, "make_failed.py made every job");
        let snapshot = Snapshot::save(&redis, QUEUE, jobs);
        let cache = self.fresh_dir("cache-shadow");
        let default = sha256_hex(retryguard::policy::builtin::DEFAULT_POLICY);
        let payments = sha256_hex(PAYMENTS);
        let mut figures = ShadowFigures {
            jobs,
            without: Vec::new(),
            with: Vec::new(),
        };
        for run in 1..=runs {
            for shadow in [false, true] {
                snapshot.restore(&mut redis);
                let audit = self.fresh_dir("audit-shadow");
                let audit = audit.to_string_lossy().into_owned();
                let mut serve = self.spawn(
                    &redis,
                    "serve-shadow",
                    &cache,
                    &[("RETRYGUARD_AUDIT_DIR", audit.as_str())],
                );
                serve.wait_up(Duration::from_secs(120));
                let mut conn = Conn::open(serve.addr);
                let (status, body) = conn.request(
                    "POST",
                    "/api/v1/policies?name=payments-bench",
                    Some(("application/wasm", PAYMENTS)),
                );
                assert_eq!(status, 201, "upload of payments: {body}");
                let mut spec = json!({"policy": default, "params": {"cooldown_seconds": "0"}});
                if shadow {
                    spec["shadow"] = json!({"policy": payments, "params": {}});
                }
                let (status, v) = conn.json("PUT", "/api/v1/policies/bindings/*", Some(&spec));
                let bound = &v["binding"];
                if status != 200
                    || bound["policy"] != default.as_str()
                    || bound["params"]["cooldown_seconds"] != "0"
                    || (shadow && bound["shadow"]["policy"] != payments.as_str())
                    || (!shadow && !bound["shadow"].is_null())
                {
                    self.fail(format!("PUT * ({spec}) answered {status}: {v}"));
                    return;
                }
                drop(conn);

                let started = Instant::now();
                let (summary, body) = retry_all_http(serve.addr);
                let seconds = secs(started.elapsed());
                let label = if shadow {
                    "with shadow"
                } else {
                    "without shadow"
                };
                println!(
                    "  run {run} {label:<15} {seconds:>7.3} s  {}",
                    compact(&summary["counts"])
                );
                let who = format!("run {run} {label}");
                let retried = summary["counts"]["retried"].as_u64().unwrap_or(0);
                if retried != jobs as u64 {
                    self.fail(format!("{who}: {retried} of {jobs} jobs retried: {body}"));
                }
                if let Err(e) = support::queue_state(&redis.url(), QUEUE, &ids) {
                    self.fail(format!("{who}: {e}"));
                }
                self.check_experiments(&serve, &who, shadow, jobs);
                drop(serve);
                if shadow {
                    figures.with.push(seconds);
                } else {
                    figures.without.push(seconds);
                }
            }
        }
        self.shadow = Some(figures);
    }

    /// The shadow's verdicts in the audit trail (outbox included): one per job on `*` with a
    /// shadow, none without.
    fn check_experiments(&mut self, serve: &Serve, who: &str, shadow: bool, jobs: usize) {
        let (status, body) = http(serve.addr, "GET", "/api/v1/policies/experiments?hours=1");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 200 {
            self.fail(format!("{who}: experiments answered {status}: {body}"));
            return;
        }
        let decisions: u64 = v["experiments"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| e["pattern"] == "*")
                    .filter_map(|e| e["decisions"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let want = if shadow { jobs as u64 } else { 0 };
        if decisions != want {
            self.fail(format!(
                "{who}: {decisions} shadow verdicts on `*` in the audit trail, want {want} \
                 (examined {}, complete {})",
                v["examined"], v["complete"]
            ));
        } else if shadow {
            let e = v["experiments"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["pattern"] == "*"))
                .cloned()
                .unwrap_or(Value::Null);
            println!(
                "    shadow verdicts: {decisions}, agreement {}, differences {}",
                e["agreement_rate"],
                compact(&e["disagreements"])
            );
        }
    }

    // --- the table -----------------------------------------------------------------------------

    fn report(&self) -> ExitCode {
        println!();
        println!("policy_platform: {}", load());
        println!("{:<46} {:<44} target", "measure", "figure");
        let mut verdicts = Vec::new();
        if let Some(s) = &self.swap {
            let row = |name: &str, v: &[f64]| {
                println!("{name:<46} {:<44}", stats_ms(v));
            };
            println!("-- 1. swap propagation, A -> B ({} swaps)", s.swaps);
            row("PUT sent -> live on B", &s.from_sent);
            row("PUT answered -> live on B", &s.from_answered);
            row("PUT round trip on A", &s.put);
            let max = percentile(&s.from_sent, 100.0);
            verdicts.push(format!(
                "{} propagation max <= {PROPAGATION_BOUND_S} s (the tests' bound; no figure \
                 target): {:.1} ms",
                verdict(max <= PROPAGATION_BOUND_S),
                max * 1e3
            ));
        }
        if let Some(r) = &self.restart {
            println!(
                "-- 2. restart, spawn -> /readyz 200 at Redis's revision (median of {}; each run)",
                r.cold.len()
            );
            let row = |name: &str, v: &[f64], target: &str| {
                println!(
                    "{name:<46} {:<44} {target}",
                    format!("{:.3} s  ({})", median(v), list_s(v))
                );
            };
            row("only `*` (built-in), cold", &r.baseline_cold, "");
            row("only `*` (built-in), cached", &r.baseline_cached, "");
            row(&format!("{} policies bound, cold", r.policies), &r.cold, "");
            row(
                &format!("{} policies bound, cached", r.policies),
                &r.cached,
                &format!("< {CACHED_RESTART_S} s"),
            );
            println!(
                "{:<46} {:<44}",
                "(setup: upload / bind them all)",
                format!("{:.1} s / {:.1} s", r.upload_s, r.bind_s)
            );
            let m = median(&r.cached);
            verdicts.push(format!(
                "{} restart with {} cached policies < {CACHED_RESTART_S} s: {m:.3} s (median; \
                 cold {:.3} s, {:.1}x)",
                verdict(m < CACHED_RESTART_S),
                r.policies,
                median(&r.cold),
                median(&r.cold) / m
            ));
        }
        if let Some(s) = &self.shadow {
            println!(
                "-- 3. retry-all of {} jobs, `*` cooldown 0 ({} runs each)",
                s.jobs,
                s.with.len()
            );
            let row = |name: &str, v: &[f64]| {
                let (best, med) = (percentile(v, 0.0), median(v));
                println!(
                    "{name:<46} {:<44}",
                    format!(
                        "best {best:.3} s, median {med:.3} s ({:.0} jobs/s)",
                        s.jobs as f64 / med
                    )
                );
            };
            row("without shadow", &s.without);
            row("with the payments policy as shadow", &s.with);
            let ratio = median(&s.with) / median(&s.without);
            let best_ratio = percentile(&s.with, 0.0) / percentile(&s.without, 0.0);
            println!(
                "{:<46} {:<44} <= {SHADOW_RATIO}x",
                "with / without",
                format!("{ratio:.2}x median, {best_ratio:.2}x best")
            );
            verdicts.push(format!(
                "{} shadow retry-all <= {SHADOW_RATIO}x without: {ratio:.2}x (median; best \
                 {best_ratio:.2}x)",
                verdict(ratio <= SHADOW_RATIO)
            ));
        }
        println!();
        println!("targets:");
        for v in &verdicts {
            println!("  {v}");
        }
        if !self.notes.is_empty() {
            println!("notes:");
            for n in &self.notes {
                println!("  {n}");
            }
        }
        if self.failures.is_empty() {
            println!("correctness: every check passed");
            ExitCode::SUCCESS
        } else {
            println!("correctness: {} check(s) FAILED:", self.failures.len());
            for f in &self.failures {
                println!("  {f}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `base` (a component) with one more custom section (id 0) named `retryguard-bench-<i>`:
/// still a valid component, with a digest of its own.
fn with_custom_section(base: &[u8], i: usize) -> Vec<u8> {
    let name = format!("retryguard-bench-{i}");
    let payload = format!("policy_platform bench variant {i}");
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload.as_bytes());
    let mut out = base.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Unsigned LEB128.
fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The nearest-rank percentile (`0` the least, `100` the most).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

fn stats_ms(v: &[f64]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(v, 50.0) * 1e3,
        percentile(v, 99.0) * 1e3,
        percentile(v, 100.0) * 1e3
    )
}

fn list_s(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Files and bytes under `dir`, recursively.
fn dir_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (f, b) = dir_size(&e.path());
                    files += f;
                    bytes += b;
                }
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}
