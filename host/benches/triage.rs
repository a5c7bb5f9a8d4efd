//! `cargo bench --bench triage`: the failure index at 10,000 and at 1,000,000 failed jobs, on
//! a real `retryguard serve` over a throwaway `redis-server`. Not run in CI (it needs
//! `redis-server` on PATH, about 2 GB of Redis memory and several minutes at 1,000,000).
//!
//! For each size N (`TRIAGE_BENCH_SIZES`, default `10000,1000000`):
//!
//! 1. **Data.** N failed jobs written straight in RQ 2.12's layout (job hash, results stream
//!    with the compressed traceback, failed registry scored `ended_at + failure_ttl`), as
//!    `retryguard demo` writes them: 5 queues, 20 job types, 200 causes in a long-tail
//!    (Zipf) distribution, every message with its own ids, amounts, hosts and times.
//! 2. **Index build** from scratch: `serve` starts, and the time until `stats` says the index
//!    is built and counts N (jobs/s).
//! 3. **Latency** (sequential, kept-alive, `TRIAGE_BENCH_REQUESTS` each, default 200): p50 and
//!    p99 of `stats`, a groups page, a groups search, the first page of a group's jobs, and
//!    the dashboard's overview, groups, group and jobs pages (whole HTML).
//! 4. **Lag.** A burst of 10,000 new failures written at once: the time until the index counts
//!    them. Then 2,000 new failures/s for 10 s: the largest gap between what was written and
//!    what the index counted, in seconds of arrivals.
//! 5. **`GET /api/v1/jobs/failed?limit=100`** at 16 and at 50 connections for 10 s each:
//!    requests/s, p50, p99.
//! 6. **Retry-all of one group** (at most 50,000 of its jobs): jobs/s.
//! 7. `serve`'s peak RSS (VmHWM) over all of it, and the index's Redis memory per job.
//!
//! Prints a table per size, then the 1,000,000-to-10,000 ratio of each latency and the
//! targets. Exits 1 only when a correctness check fails (a count that never matches).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use support::redis_server::RedisServer;
use support::{Conn, Serve, cmd, connect, load, mb, serve_binary, verdict};

const QUEUES: usize = 5;
const JOB_TYPES: usize = 20;
const CAUSES: usize = 200;
const FAILURE_TTL_S: u64 = 31_536_000;

/// The exception templates a cause is made of: type, message with `{n}` (a per-job number),
/// `{amount}`, `{host}`, `{at}` placeholders, and the in-application frame it is raised in.
const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "requests.exceptions.ConnectionError",
        "HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded with url: /v1/charges/{n}",
        "client",
    ),
    (
        "billing.errors.CardDeclined",
        "card for order {n} declined: amount {amount} EUR",
        "charge",
    ),
    (
        "TimeoutError",
        "timed out after {amount}s waiting for {host}",
        "fetch",
    ),
    ("KeyError", "'order_{n}'", "lookup"),
    (
        "ValueError",
        "invalid quantity {amount} for sku {n}",
        "validate",
    ),
    (
        "sqlite3.OperationalError",
        "database is locked (waited {amount}s, job {n})",
        "save",
    ),
    (
        "PermissionError",
        "[Errno 13] Permission denied: '/data/exports/{n}.csv'",
        "export",
    ),
    (
        "urllib.error.HTTPError",
        "HTTP Error 503: Service Unavailable from {host} at {at}",
        "notify",
    ),
    (
        "app.errors.QuotaExceeded",
        "quota exceeded for tenant {n}: {amount} requests",
        "throttle",
    ),
    (
        "RuntimeError",
        "worker {host} lost its lease at {at}",
        "run",
    ),
];

/// A small deterministic PRNG (xorshift64*): the same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The cause of a job: Zipf over `CAUSES` (cause 0 the most common).
struct Causes {
    cumulative: Vec<f64>,
}

impl Causes {
    fn new() -> Self {
        let weights: Vec<f64> = (0..CAUSES).map(|c| 1.0 / (c as f64 + 1.0)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self { cumulative }
    }
    fn pick(&self, rng: &mut Rng) -> usize {
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .iter()
            .position(|c| x <= *c)
            .unwrap_or(CAUSES - 1)
    }
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `pickle.dumps((func, None, (), {}), protocol=5)`, as RQ writes a job's `data`.
fn pickled_call(func: &str) -> Vec<u8> {
    let mut body = vec![b'(', 0x8c, u8::try_from(func.len()).unwrap()];
    body.extend_from_slice(func.as_bytes());
    body.extend_from_slice(b"\x94N)}\x94t\x94.");
    let mut p = vec![0x80, 0x05, 0x95];
    p.extend_from_slice(&(body.len() as u64).to_le_bytes());
    p.extend_from_slice(&body);
    p
}

fn rq_time(ms: u64) -> String {
    retryguard::clock::format_rfc3339(ms)
}

/// Writes `count` failed jobs with ids `<prefix>-<i>` that failed in the `spread_ms` before
/// `at_ms`, in pipelines of 2,000. RQ scores a failure `failed_at + failure_ttl`, so new
/// failures (a spread of a second) score above the older ones, as they do under RQ.
fn write_jobs(url: &str, prefix: &str, count: usize, at_ms: u64, spread_ms: u64, seed: u64) {
    let mut con = connect(url);
    let causes = Causes::new();
    let mut rng = Rng(seed | 1);
    let data: Vec<Vec<u8>> = (0..JOB_TYPES)
        .map(|t| zlib(&pickled_call(&format!("app.tasks.type_{t:02}"))))
        .collect();
    let mut i = 0;
    while i < count {
        let mut pipe = redis::pipe();
        for _ in 0..2000.min(count - i) {
            let cause = causes.pick(&mut rng);
            let (exc, template, func) = TEMPLATES[cause % TEMPLATES.len()];
            let job_type = cause % JOB_TYPES;
            let queue = format!("q{}", cause % QUEUES);
            let n = rng.below(1_000_000_000);
            let ended = at_ms - rng.below(spread_ms.max(1));
            let message = template
                .replace("{n}", &n.to_string())
                .replace(
                    "{amount}",
                    &format!("{}.{:02}", rng.below(500), rng.below(100)),
                )
                .replace("{host}", &format!("db-{}.prod.internal", rng.below(40)))
                .replace("{at}", &rq_time(ended));
            // The cause is the template and the frame it is raised in (cause / templates
            // picks one of 20 frames): 200 causes.
            let frame = format!("{func}_{}", cause / TEMPLATES.len());
            let traceback = format!(
                "Traceback (most recent call last):\n  File \"/usr/lib/python3.11/site-packages/rq/job.py\", line 1430, in perform\n    rv = self._execute()\n  File \"/srv/app/tasks/type_{job_type:02}.py\", line {}, in {frame}\n    raise Error()\n{exc}: {message}\n",
                10 + rng.below(200)
            );
            let id = format!("{prefix}-{i}");
            let key = format!("rq:job:{id}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("status")
                .arg("failed")
                .arg("origin")
                .arg(&queue)
                .arg("data")
                .arg(&data[job_type])
                .arg("description")
                .arg(format!("app.tasks.type_{job_type:02}()"))
                .arg("created_at")
                .arg(rq_time(ended - 2000))
                .arg("enqueued_at")
                .arg(rq_time(ended - 2000))
                .arg("started_at")
                .arg(rq_time(ended - 1000))
                .arg("ended_at")
                .arg(rq_time(ended))
                .arg("timeout")
                .arg(180)
                .ignore();
            pipe.cmd("XADD")
                .arg(format!("rq:results:{id}"))
                .arg(format!("{ended}-0"))
                .arg("type")
                .arg(2)
                .arg("exc_string")
                .arg(base64::engine::general_purpose::STANDARD.encode(zlib(traceback.as_bytes())))
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("rq:failed:{queue}"))
                .arg(ended / 1000 + FAILURE_TTL_S)
                .arg(&id)
                .ignore();
            i += 1;
        }
        for q in 0..QUEUES {
            pipe.cmd("SADD")
                .arg("rq:queues")
                .arg(format!("rq:queue:q{q}"))
                .ignore();
        }
        pipe.query::<()>(&mut con).expect("writes the jobs");
    }
}

fn used_memory(url: &str) -> u64 {
    let info: String = cmd(&mut connect(url), &["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn stats(conn: &mut Conn) -> Value {
    let (status, v) = conn.json("GET", "/api/v1/jobs/stats", None);
    assert_eq!(status, 200, "{v}");
    v
}

/// Polls `stats` until the index is built and counts `want`; the time it took.
fn wait_for_count(conn: &mut Conn, want: u64, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let s = stats(conn);
        if s["index"]["built"] == true && s["failed_total"].as_u64() == Some(want) {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            eprintln!("index at {} of {want} after {timeout:?}", s["failed_total"]);
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// p50 and p99 (ms) of `n` sequential requests of `path`.
fn latency(conn: &mut Conn, path: &str, n: usize) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let (status, body) = conn.request("GET", path, None);
            assert_eq!(status, 200, "{path}: {body}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    percentiles(&mut ms)
}

fn percentiles(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    (at(0.50), at(0.99))
}

/// `path` from `connections` kept-alive connections for `seconds`: requests/s, p50, p99.
fn load_test(addr: SocketAddr, path: &str, connections: usize, seconds: u64) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let all: Arc<Mutex<Vec<f64>>> = Arc::default();
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let all = Arc::clone(&all);
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, _) = conn.request("GET", &path, None);
                    assert_eq!(status, 200);
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                all.lock().unwrap().extend(mine);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut ms = std::mem::take(&mut *all.lock().unwrap());
    let rate = ms.len() as f64 / elapsed;
    let (p50, p99) = percentiles(&mut ms);
    (rate, p50, p99)
}

#[derive(Debug, Default, Clone)]
struct Figures {
    build_s: f64,
    build_rate: f64,
    latencies: BTreeMap<&'static str, (f64, f64)>,
    burst_lag_s: f64,
    sustained_lag_s: f64,
    list16: (f64, f64, f64),
    list50: (f64, f64, f64),
    retry_jobs: u64,
    retry_rate: f64,
    peak_rss_mb: f64,
    index_bytes_per_job: f64,
}

fn run(n: usize, requests: usize) -> Option<Figures> {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let now = retryguard::clock::now_ms();
    let t = Instant::now();
    write_jobs(&url, "job", n, now, 3_600_000, 42);
    eprintln!(
        "[{n}] wrote {n} failed jobs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let before = used_memory(&url);
    let bin = serve_binary().expect("the retryguard binary");
    let audit = dir.path().join("audit");
    let audit = audit.to_string_lossy().into_owned();
    let mut serve = Serve::spawn(
        &bin,
        &url,
        dir.path(),
        "serve",
        &[
            ("RETRYGUARD_AUDIT_DIR", audit.as_str()),
            ("RETRYGUARD_LOG", "warn"),
        ],
    );
    let started = Instant::now();
    serve.wait_up(Duration::from_secs(60));
    let mut conn = Conn::open(serve.addr);
    let mut f = Figures::default();
    let build = wait_for_count(&mut conn, n as u64, Duration::from_secs(1800))?;
    f.build_s = started.elapsed().as_secs_f64().max(build.as_secs_f64());
    f.build_rate = n as f64 / f.build_s;
    f.index_bytes_per_job = (used_memory(&url).saturating_sub(before)) as f64 / n as f64;
    eprintln!(
        "[{n}] index built in {:.1} s (serve's peak RSS so far {:.1} MB)",
        f.build_s,
        mb(serve.peak_rss_kb().unwrap_or(0))
    );

    let (_, groups) = conn.json("GET", "/api/v1/jobs/failed/groups?limit=1", None);
    let top = groups["groups"][0].clone();
    let fp = top["fingerprint"].as_str().unwrap().to_string();
    f.latencies
        .insert("stats", latency(&mut conn, "/api/v1/jobs/stats", requests));
    f.latencies.insert(
        "groups page",
        latency(&mut conn, "/api/v1/jobs/failed/groups?limit=50", requests),
    );
    f.latencies.insert(
        "groups search",
        latency(
            &mut conn,
            "/api/v1/jobs/failed/groups?q=declined&limit=50",
            requests,
        ),
    );
    f.latencies.insert(
        "a group's first page",
        latency(
            &mut conn,
            &format!("/api/v1/jobs/failed?group={fp}&limit=100"),
            requests,
        ),
    );
    // The dashboard's pages, whole HTML as the browser gets it (loopback: no login).
    for (name, path) in [
        ("ui overview", "/ui/".to_string()),
        ("ui groups", "/ui/groups".to_string()),
        ("ui group", format!("/ui/groups/{fp}")),
        ("ui jobs", "/ui/jobs".to_string()),
    ] {
        f.latencies
            .insert(name, latency(&mut conn, &path, requests));
    }

    // A burst of 10,000 new failures.
    let t = Instant::now();
    write_jobs(&url, "burst", 10_000, retryguard::clock::now_ms(), 1000, 7);
    let written = t.elapsed();
    let lag = wait_for_count(&mut conn, n as u64 + 10_000, Duration::from_secs(600))?;
    f.burst_lag_s = lag.as_secs_f64();
    eprintln!(
        "[{n}] burst of 10,000 written in {:.2} s, indexed {:.2} s after",
        written.as_secs_f64(),
        f.burst_lag_s
    );

    // 2,000 new failures/s for 10 s, 200 every 100 ms.
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let url = url.clone();
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let start = Instant::now();
            for round in 0..100u64 {
                let due = start + Duration::from_millis(round * 100);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                write_jobs(
                    &url,
                    &format!("stream{round}"),
                    200,
                    retryguard::clock::now_ms(),
                    100,
                    round + 100,
                );
                written.fetch_add(200, Ordering::Relaxed);
            }
        })
    };
    let base = n as u64 + 10_000;
    let mut max_gap = 0u64;
    while !writer.is_finished() {
        let w = written.load(Ordering::Relaxed);
        let indexed = stats(&mut conn)["failed_total"].as_u64().unwrap_or(0);
        max_gap = max_gap.max((base + w).saturating_sub(indexed));
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.join().unwrap();
    wait_for_count(&mut conn, base + 20_000, Duration::from_secs(600))?;
    f.sustained_lag_s = max_gap as f64 / 2000.0;

    eprintln!(
        "[{n}] latencies and lag measured (peak RSS so far {:.1} MB)",
        mb(serve.peak_rss_kb().unwrap_or(0))
    );
    let list = "/api/v1/jobs/failed?limit=100";
    f.list16 = load_test(serve.addr, list, 16, 10);
    f.list50 = load_test(serve.addr, list, 50, 10);

    eprintln!(
        "[{n}] listings under load measured (peak RSS so far {:.1} MB)",
        mb(serve.peak_rss_kb().unwrap_or(0))
    );
    // Retry-all of (at most 50,000 jobs of) the largest group.
    let (_, detail) = conn.json("GET", &format!("/api/v1/jobs/failed/groups/{fp}"), None);
    let count = detail["count"].as_u64().unwrap_or(0).min(50_000);
    let t = Instant::now();
    let (status, body) = conn.json(
        "POST",
        &format!("/api/v1/jobs/failed/retry-all?group={fp}&limit={count}&wait_seconds=590"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    f.retry_jobs = body["counts"]["retried"].as_u64().unwrap_or(0);
    f.retry_rate = f.retry_jobs as f64 / t.elapsed().as_secs_f64();
    f.peak_rss_mb = mb(serve.peak_rss_kb().unwrap_or(0));
    drop(serve);
    Some(f)
}

fn print(n: usize, f: &Figures) {
    println!("\n## {n} failed jobs\n");
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| index build from scratch | {:.1} s ({:.0} jobs/s) |",
        f.build_s, f.build_rate
    );
    for (name, (p50, p99)) in &f.latencies {
        println!("| {name}: p50 / p99 | {p50:.2} / {p99:.2} ms |");
    }
    println!(
        "| burst of 10,000 new failures: indexed after | {:.2} s |",
        f.burst_lag_s
    );
    println!(
        "| 2,000 new failures/s for 10 s: largest lag | {:.2} s |",
        f.sustained_lag_s
    );
    for (c, (rate, p50, p99)) in [(16, f.list16), (50, f.list50)] {
        println!(
            "| `GET /api/v1/jobs/failed?limit=100`, {c} connections | {rate:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms |"
        );
    }
    println!(
        "| retry-all of one group ({} jobs) | {:.0} jobs/s |",
        f.retry_jobs, f.retry_rate
    );
    println!("| `serve` peak RSS | {:.1} MB |", f.peak_rss_mb);
    println!(
        "| Redis memory of the index, per job | {:.0} bytes |",
        f.index_bytes_per_job
    );
}

fn main() -> ExitCode {
    let sizes: Vec<usize> = std::env::var("TRIAGE_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().expect("a size"))
        .collect();
    let requests = support::env_number("TRIAGE_BENCH_REQUESTS", 200);
    println!("# triage bench ({})", load());
    let mut all = Vec::new();
    for &n in &sizes {
        match run(n, requests) {
            Some(f) => {
                print(n, &f);
                all.push((n, f));
            }
            None => {
                eprintln!("[{n}] a count never matched: the index is wrong");
                return ExitCode::FAILURE;
            }
        }
    }
    if let [(small, s), .., (large, l)] = all.as_slice() {
        println!("\n## {large} against {small}\n");
        println!("| latency (p99) | ratio | target ≤ 2× |\n| --- | --- | --- |");
        for (name, (_, p99)) in &l.latencies {
            let base = s.latencies[name].1;
            let ratio = p99 / base;
            println!(
                "| {name} | {ratio:.2}× | {} |",
                verdict(ratio <= 2.0).trim()
            );
        }
        println!("\n## Targets at {large}\n");
        let stats_p99 = l.latencies["stats"].1;
        let groups_p99 = l.latencies["groups page"].1;
        println!(
            "- stats p99 ≤ 50 ms: {stats_p99:.1} ms {}",
            verdict(stats_p99 <= 50.0)
        );
        println!(
            "- groups p99 ≤ 50 ms: {groups_p99:.1} ms {}",
            verdict(groups_p99 <= 50.0)
        );
        println!(
            "- jobs/failed p99 ≤ 100 ms at 16 connections: {:.1} ms {}",
            l.list16.2,
            verdict(l.list16.2 <= 100.0)
        );
        println!(
            "- jobs/failed ≥ 2× 192 req/s at 50 connections: {:.0} req/s {}",
            l.list50.0,
            verdict(l.list50.0 >= 384.0)
        );
        for page in ["ui overview", "ui groups", "ui jobs"] {
            let p99 = l.latencies[page].1;
            println!(
                "- dashboard {page} p99 ≤ 100 ms: {p99:.1} ms {}",
                verdict(p99 <= 100.0)
            );
        }
        let assets = retryguard::ui::CSS.len() + retryguard::ui::JS.len();
        println!(
            "- dashboard JS + CSS ≤ 100 KB: {:.1} KB {}",
            assets as f64 / 1000.0,
            verdict(assets <= 100_000)
        );
        println!(
            "- peak RSS ≤ 100 MB: {:.1} MB {}",
            l.peak_rss_mb,
            verdict(l.peak_rss_mb <= 100.0)
        );
        println!(
            "- burst of 10,000 indexed within 5 s: {:.2} s {}",
            l.burst_lag_s,
            verdict(l.burst_lag_s <= 5.0)
        );
        println!(
            "- 2,000/s indexed within 2 s: {:.2} s {}",
            l.sustained_lag_s,
            verdict(l.sustained_lag_s <= 2.0)
        );
    }
    ExitCode::SUCCESS
}
