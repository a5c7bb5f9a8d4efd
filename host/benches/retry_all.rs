//! `cargo bench --bench retry_all`: retryguard against RQ's own tools on the same N real
//! failed jobs (default 10,000; `RETRY_BENCH_JOBS=N` to change), on this machine, in one run.
//! Not run in CI: it needs `redis-server` on PATH and the test venv (`.venv-test/`, made by
//! scripts/test.sh), and takes about a minute for 10,000 jobs, most of it making them.
//!
//! 1. A throwaway `redis-server` (the test harness's), N failed jobs made by real RQ workers
//!    (`host/tests/rq/make_failed.py`, a mix of retryable families), then `SAVE`: the RDB is
//!    the snapshot. Before every contender the server is killed, the RDB put back and the
//!    server restarted on it, so each starts from byte-identical data (checked: same key
//!    count, N failed jobs, empty queue).
//! 2. Retry-all: `rq requeue --all --queue Q` (process wall time; peak RSS from
//!    `/usr/bin/time -f %M`) vs `RetryService::retry_all` with `cooldown_seconds = 0` (in a
//!    child process of this binary, so its peak RSS is its own; the time is the call, the
//!    engine's start-up is shown apart) vs `POST /api/v1/jobs/failed/retry-all` on a
//!    `retryguard serve` (request wall time; the server's VmHWM). After each retryguard
//!    retry-all: every job is in `rq:queue:Q` exactly once and the failed registry is empty.
//! 3. Listing with the exception text / classification: RQ's Python API (`rq_list.py`, timed
//!    in-process) vs `RetryService::list` (limit 1000, cursors) vs `GET /api/v1/jobs/failed`.
//!    Each must return all N jobs once, every one classified.
//!
//! 4. The cost of `WAIT` (`[redis] wait_replicas`, on by default with Sentinel): the same
//!    `RetryService::retry_all` with a real replica attached (`--replicaof`, synced before the
//!    clock starts) and `wait_replicas = 1`, so every batch's requeue script ends with
//!    `WAIT 1 1000`. `RETRY_BENCH_WAIT=0` skips it.
//!
//! Prints a table with the targets (retry-all >= 10x `rq requeue`, listing >= 5x RQ's
//! API, retryguard peak RSS < 100 MB). Exits 0 when a target is missed (it reports), 1 when a
//! correctness check fails. `RETRY_BENCH_RUNS=R` times every contender R times (best kept);
//! `RETRY_BENCH_BATCH=B` sets the in-process service's `ServiceConfig::batch_size` (the HTTP
//! server keeps its default).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use retryguard::clock::new_operation_id;
use retryguard::config::RedisConfig;
use retryguard::policy::{EngineConfig, PolicyEngine};
use retryguard::queue::rq::RqBackend;
use retryguard::retry::{JobFilter, Progress, RetryOptions, RetryService, ServiceConfig};
use serde_json::{Value, json};

use support::python::{self, Python};
use support::redis_server::RedisServer;
use support::{
    Serve, Snapshot, compact, env_number, http, load, make_failed_mix, mb, percent_encode,
    retry_all_http, serve_binary, verdict, vm_hwm,
};

/// The queue every job is on.
const QUEUE: &str = "bench";
/// Retryable families of `host/tests/rq/jobs.py` (fast to fail), made in equal shares.
const FAMILIES: &[&str] = &["network_error", "rate_limit", "temporary_error"];
/// Page size of the listings (the API's maximum).
const PAGE: usize = 1000;
/// The targets.
const RETRY_ALL_SPEEDUP: f64 = 10.0;
const LIST_SPEEDUP: f64 = 5.0;
const MAX_RSS_MB: f64 = 100.0;
/// Set in the child processes this binary runs itself as.
const CHILD_ENV: &str = "RETRY_BENCH_CHILD";

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode);
        return ExitCode::SUCCESS;
    }
    let jobs: usize = env_number("RETRY_BENCH_JOBS", 10_000);
    let runs: usize = env_number("RETRY_BENCH_RUNS", 1).max(1);
    let mut bench = Bench::prepare(jobs);
    bench.run(runs);
    bench.report()
}

// --- the parent: data, contenders, table ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    RetryAll,
    List,
}

/// One timed contender.
#[derive(Debug, Clone)]
struct Row {
    task: Task,
    name: &'static str,
    rq: bool,
    seconds: f64,
    peak_rss_kb: Option<u64>,
    note: String,
}

#[derive(Debug)]
struct Bench {
    jobs: usize,
    ids: Vec<String>,
    server: RedisServer,
    python: &'static Python,
    snapshot: Snapshot,
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl Bench {
    /// Starts Redis, makes the failed jobs and saves the snapshot.
    fn prepare(jobs: usize) -> Self {
        let python = Python::venv();
        let server = RedisServer::start();
        println!(
            "retry_all: {jobs} failed jobs on queue {QUEUE:?}, redis-server on port {}",
            server.port()
        );
        let started = Instant::now();
        let ids = make_failed_mix(python, &server, QUEUE, jobs, FAMILIES, started);
        println!(
            "  made {} failed jobs in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(ids.len(), jobs, "make_failed.py made every job");
        let snapshot = Snapshot::save(&server, QUEUE, jobs);
        Self {
            jobs,
            ids,
            server,
            python,
            snapshot,
            rows: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Kills Redis, puts the snapshot back, restarts on it, and checks it is the snapshot.
    fn restore(&mut self) {
        self.snapshot.restore(&mut self.server);
    }

    fn run(&mut self, runs: usize) {
        let serve = serve_binary();
        for run in 1..=runs {
            if runs > 1 {
                println!("run {run}/{runs}");
            }
            self.restore();
            let row = self.rq_requeue();
            self.push(row);
            self.restore();
            let row = self.service(Task::RetryAll);
            self.push(row);
            if env_number("RETRY_BENCH_WAIT", 1) != 0 {
                self.restore();
                let row = self.service_with_replica();
                self.push(row);
            }
            if let Some(bin) = &serve {
                self.restore();
                let row = self.http_retry_all(bin);
                self.push(row);
            }
            self.restore();
            let row = self.rq_list();
            self.push(row);
            self.restore();
            let row = self.service(Task::List);
            self.push(row);
            if let Some(bin) = &serve {
                // Listing changes nothing: the same data serves the HTTP listing.
                let row = self.http_list(bin);
                self.push(row);
            }
        }
        if serve.is_none() {
            println!(
                "  (no `retryguard serve`: the HTTP rows are skipped; build the binary first)"
            );
        }
    }

    /// Keeps the fastest run of each contender (and the largest peak RSS seen).
    fn push(&mut self, row: Row) {
        println!(
            "  {:<34} {:>8.3} s  {:>8} MB  {}",
            row.name,
            row.seconds,
            row.peak_rss_kb
                .map_or("n/a".into(), |kb| format!("{:.1}", mb(kb))),
            row.note
        );
        match self.rows.iter_mut().find(|r| r.name == row.name) {
            Some(best) => {
                let rss = best.peak_rss_kb.max(row.peak_rss_kb);
                if row.seconds < best.seconds {
                    *best = row;
                }
                best.peak_rss_kb = rss;
            }
            None => self.rows.push(row),
        }
    }

    fn fail(&mut self, what: String) {
        eprintln!("CORRECTNESS FAILURE: {what}");
        self.failures.push(what);
    }

    fn rq_requeue(&mut self) -> Row {
        let url = self.server.url();
        let rss_file = self.server.dir().join("rq-requeue.time");
        let time = Path::new("/usr/bin/time");
        let mut cmd = if time.exists() {
            let mut c = Command::new(time);
            c.args(["-f", "%M", "-o"]).arg(&rss_file);
            c.arg(self.python.path());
            c
        } else {
            Command::new(self.python.path())
        };
        cmd.current_dir(python::jobs_dir())
            .env("PYTHONPATH", python::jobs_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-m", "rq.cli", "requeue", "--all", "--queue", QUEUE, "--url",
            ])
            .arg(&url);
        let started = Instant::now();
        let out = cmd.output().expect("rq requeue runs");
        let seconds = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "rq requeue failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let peak_rss_kb = std::fs::read_to_string(&rss_file)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
        // RQ's own result is reported, not held against it.
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let left = match self.queue_state() {
            Ok(()) => "every job queued once".to_string(),
            Err(e) => format!("RQ left: {e}"),
        };
        // How much of its wall time is the interpreter and imports alone.
        let started = Instant::now();
        let imports = self
            .python
            .command(&url)
            .args(["-c", "import rq.cli"])
            .status()
            .is_ok_and(|s| s.success());
        let note = format!(
            "{said}; {left}; `python -c 'import rq.cli'` alone {}",
            if imports {
                format!("{:.2} s", started.elapsed().as_secs_f64())
            } else {
                "failed".into()
            }
        );
        Row {
            task: Task::RetryAll,
            name: "rq requeue --all (CLI process)",
            rq: true,
            seconds,
            peak_rss_kb,
            note,
        }
    }

    /// `RetryService::retry_all` waiting for one replica after each requeue (`WAIT 1`), with a
    /// replica of the restored server attached and in sync before it starts.
    fn service_with_replica(&mut self) -> Row {
        let replica = RedisServer::start_with_args(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            self.server.port().to_string(),
        ]);
        let mut con = redis::Client::open(replica.url())
            .and_then(|c| c.get_connection())
            .expect("the replica answers");
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .expect("INFO");
            if info.contains("master_link_status:up") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not sync: {info}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut row = self.service_child(Task::RetryAll, true);
        row.name = "retryguard retry_all, WAIT 1 replica";
        row
    }

    /// `RetryService::retry_all` or `list` in a child process of this binary.
    fn service(&mut self, task: Task) -> Row {
        self.service_child(task, false)
    }

    fn service_child(&mut self, task: Task, wait: bool) -> Row {
        let mode = match task {
            Task::RetryAll => "retry-all",
            Task::List => "list",
        };
        let exe = std::env::current_exe().expect("this binary's path");
        let out = Command::new(exe)
            .env(CHILD_ENV, mode)
            .env("RETRY_BENCH_URL", self.server.url())
            .env("RETRY_BENCH_CHILD_WAIT", if wait { "1" } else { "0" })
            .stderr(Stdio::inherit())
            .output()
            .expect("the child runs");
        assert!(
            out.status.success(),
            "the {mode} child failed: {}",
            out.status
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the {mode} child printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let seconds = v["seconds"].as_f64().expect("seconds");
        let setup = v["setup_seconds"].as_f64().unwrap_or(0.0);
        let peak_rss_kb = v["peak_rss_kb"].as_u64();
        let note = match task {
            Task::RetryAll => {
                let retried = v["counts"]["retried"].as_u64().unwrap_or(0);
                self.check_retried(mode, retried, v["counts"].to_string());
                format!("start-up {setup:.2} s apart; {}", compact(&v["counts"]))
            }
            Task::List => {
                self.check_listing(
                    "RetryService::list",
                    v["jobs"].as_u64().unwrap_or(0),
                    v["unique"].as_u64().unwrap_or(0),
                    v["classified"].as_u64().unwrap_or(0),
                );
                format!(
                    "start-up {setup:.2} s apart; {} pages; {}",
                    v["pages"],
                    compact(&v["failure_types"])
                )
            }
        };
        Row {
            task,
            name: match task {
                Task::RetryAll => "retryguard RetryService::retry_all",
                Task::List => "retryguard RetryService::list",
            },
            rq: false,
            seconds,
            peak_rss_kb,
            note,
        }
    }

    fn http_retry_all(&mut self, bin: &Path) -> Row {
        let server = Serve::start(bin, &self.server.url(), self.server.dir());
        let started = Instant::now();
        let (v, body) = retry_all_http(server.addr);
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_kb = server.peak_rss_kb();
        drop(server);
        let retried = v["counts"]["retried"].as_u64().unwrap_or(0);
        self.check_retried("HTTP retry-all", retried, body);
        Row {
            task: Task::RetryAll,
            name: "retryguard POST …/retry-all (HTTP)",
            rq: false,
            seconds,
            peak_rss_kb,
            note: format!("server VmHWM; {}", compact(&v["counts"])),
        }
    }

    fn rq_list(&mut self) -> Row {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/rq_list.py");
        let out = self
            .python
            .command(&self.server.url())
            .arg(&script)
            .args(["--redis-url", &self.server.url(), "--queue", QUEUE])
            .output()
            .expect("rq_list.py runs");
        assert!(
            out.status.success(),
            "rq_list.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("rq_list.py prints JSON");
        let (jobs, with_exc) = (v["jobs"].as_u64(), v["with_exc"].as_u64());
        let note = if jobs == Some(self.jobs as u64) && with_exc == jobs {
            "every job with its exception text".to_string()
        } else {
            format!("(RQ listed {jobs:?} jobs, {with_exc:?} with exception text)")
        };
        Row {
            task: Task::List,
            name: "RQ Python API list (rq_list.py)",
            rq: true,
            seconds: v["seconds"].as_f64().expect("seconds"),
            peak_rss_kb: v["peak_rss_kb"].as_u64(),
            note,
        }
    }

    fn http_list(&mut self, bin: &Path) -> Row {
        let server = Serve::start(bin, &self.server.url(), self.server.dir());
        let started = Instant::now();
        let mut seen = HashSet::new();
        let (mut jobs, mut classified, mut pages) = (0u64, 0u64, 0u64);
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/jobs/failed?limit={PAGE}");
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&percent_encode(c));
            }
            let (status, body) = http(server.addr, "GET", &path);
            assert_eq!(status, 200, "GET {path} answered {status}: {body}");
            let v: Value = serde_json::from_str(&body).expect("a JSON page");
            pages += 1;
            for job in v["jobs"].as_array().expect("jobs") {
                jobs += 1;
                seen.insert(job["id"].as_str().unwrap_or_default().to_string());
                classified += u64::from(job["failure_type"].is_string());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_kb = server.peak_rss_kb();
        drop(server);
        self.check_listing("HTTP list", jobs, seen.len() as u64, classified);
        Row {
            task: Task::List,
            name: "retryguard GET /jobs/failed (HTTP)",
            rq: false,
            seconds,
            peak_rss_kb,
            note: format!("server VmHWM; {pages} pages"),
        }
    }

    /// After a retryguard retry-all: all N retried, each id in the queue exactly once, the
    /// failed registry empty.
    fn check_retried(&mut self, who: &str, retried: u64, summary: String) {
        if retried != self.jobs as u64 {
            self.fail(format!(
                "{who}: {retried} of {} jobs retried: {summary}",
                self.jobs
            ));
        }
        if let Err(e) = self.queue_state() {
            self.fail(format!("{who}: {e}"));
        }
    }

    /// Every job in `rq:queue:Q` exactly once, and nothing left in `rq:failed:Q`.
    fn queue_state(&self) -> Result<(), String> {
        support::queue_state(&self.server.url(), QUEUE, &self.ids)
    }

    fn check_listing(&mut self, who: &str, jobs: u64, unique: u64, classified: u64) {
        let n = self.jobs as u64;
        if jobs != n || unique != n || classified != n {
            self.fail(format!(
                "{who}: listed {jobs} jobs ({unique} distinct, {classified} classified), want {n}"
            ));
        }
    }

    fn report(&self) -> ExitCode {
        let n = self.jobs as f64;
        println!();
        println!("retry_all: {} failed jobs, {}", self.jobs, load());
        println!(
            "{:<36} {:>9} {:>10} {:>12} {:>9}",
            "contender", "wall s", "jobs/s", "peak RSS MB", "vs RQ"
        );
        let mut verdicts = Vec::new();
        for task in [Task::RetryAll, Task::List] {
            let (label, target) = match task {
                Task::RetryAll => ("retry-all", RETRY_ALL_SPEEDUP),
                Task::List => ("list", LIST_SPEEDUP),
            };
            println!("-- {label}");
            let rq = self.rows.iter().find(|r| r.task == task && r.rq);
            for row in self.rows.iter().filter(|r| r.task == task) {
                let speedup = rq.map(|rq| rq.seconds / row.seconds);
                println!(
                    "{:<36} {:>9.3} {:>10.0} {:>12} {:>9}",
                    row.name,
                    row.seconds,
                    n / row.seconds,
                    row.peak_rss_kb
                        .map_or("n/a".into(), |kb| format!("{:.1}", mb(kb))),
                    if row.rq {
                        "1.0x".to_string()
                    } else {
                        speedup.map_or("n/a".into(), |s| format!("{s:.1}x"))
                    }
                );
                if row.rq {
                    continue;
                }
                if let Some(s) = speedup {
                    verdicts.push(format!(
                        "{} {label} speed >= {target}x RQ: {s:.1}x ({})",
                        verdict(s >= target),
                        row.name
                    ));
                }
                if let Some(kb) = row.peak_rss_kb {
                    verdicts.push(format!(
                        "{} peak RSS < {MAX_RSS_MB} MB: {:.1} MB ({})",
                        verdict(mb(kb) < MAX_RSS_MB),
                        mb(kb),
                        row.name
                    ));
                }
            }
        }
        println!();
        println!("targets:");
        for v in &verdicts {
            println!("  {v}");
        }
        println!();
        println!("notes:");
        for row in &self.rows {
            println!("  {}: {}", row.name, row.note);
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

// --- the child: the service in its own process ------------------------------------------------

/// Runs `retry-all` or `list` through `RetryService` and prints one JSON line.
fn child(mode: &str) {
    let url = std::env::var("RETRY_BENCH_URL").expect("RETRY_BENCH_URL");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let result = runtime.block_on(async {
        let setup = Instant::now();
        let wait = std::env::var("RETRY_BENCH_CHILD_WAIT").is_ok_and(|v| v == "1");
        let redis = RedisConfig {
            url: url.clone(),
            wait_replicas: Some(u32::from(wait)),
            ..RedisConfig::default()
        };
        let backend = RqBackend::connect_with(&redis).await.expect("connects");
        let conn = backend.connection();
        let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
        let policy = engine.load_builtin().expect("the built-in policy");
        let params = vec![("cooldown_seconds".to_string(), "0".to_string())];
        let mut config = ServiceConfig::default();
        if let Ok(n) = std::env::var("RETRY_BENCH_BATCH") {
            config.batch_size = n.parse().expect("RETRY_BENCH_BATCH is a number");
        }
        let svc = RetryService::new(backend, conn, engine, policy, params, config);
        let setup_seconds = setup.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut out = match mode {
            "retry-all" => {
                let progress = Progress::default();
                let summary = svc
                    .retry_all(
                        &JobFilter::default(),
                        &RetryOptions::new(),
                        "bench",
                        &new_operation_id(),
                        &progress,
                    )
                    .await
                    .expect("retry-all");
                let counts: BTreeMap<&str, u64> = summary
                    .counts
                    .iter()
                    .map(|(o, n)| (o.as_str(), *n))
                    .collect();
                json!({"total": summary.total, "counts": counts})
            }
            "list" => {
                let (mut jobs, mut classified, mut pages) = (0u64, 0u64, 0u64);
                let mut ids = HashSet::new();
                let mut types: BTreeMap<String, u64> = BTreeMap::new();
                let mut cursor = None;
                loop {
                    let page = svc
                        .list(&JobFilter::default(), cursor, PAGE)
                        .await
                        .expect("list");
                    pages += 1;
                    for view in &page.jobs {
                        jobs += 1;
                        ids.insert(view.job.id.clone());
                        if let Some(c) = &view.classification {
                            classified += 1;
                            *types.entry(c.failure_type.clone()).or_default() += 1;
                        }
                    }
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                json!({"jobs": jobs, "unique": ids.len(), "classified": classified,
                       "pages": pages, "failure_types": types})
            }
            other => panic!("unknown {CHILD_ENV} mode {other:?}"),
        };
        out["seconds"] = json!(started.elapsed().as_secs_f64());
        out["setup_seconds"] = json!(setup_seconds);
        out
    });
    let mut result = result;
    result["peak_rss_kb"] = json!(vm_hwm("/proc/self/status"));
    println!("{result}");
}
