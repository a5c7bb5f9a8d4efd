//! What the benches that drive real processes share (`retry_all`, `policy_platform`): the
//! test harness's throwaway `redis-server` and RQ venv, failed jobs made by real RQ workers
//! (`host/tests/rq/make_failed.py`), the RDB snapshot every timed run starts from, the
//! queue-state check after a retry-all, and `retryguard serve` children spoken to over plain
//! HTTP/1.1 (std only: one request per connection, or a kept-alive connection).
#![allow(dead_code, reason = "each bench uses a part of these helpers")]

#[path = "../../tests/rq/support/python.rs"]
pub mod python;
#[path = "../../tests/rq/support/redis_server.rs"]
pub mod redis_server;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use python::Python;
use redis_server::RedisServer;

/// `name` as a whole number (`_` allowed), or `default` when unset.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

// --- Redis ------------------------------------------------------------------------------------

pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

pub fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

pub fn failed_key(queue: &str) -> String {
    format!("rq:failed:{queue}")
}

pub fn queue_key(queue: &str) -> String {
    format!("rq:queue:{queue}")
}

/// `jobs` failed jobs on `queue` made by real RQ workers, in equal shares of `families`
/// (`jobs.<family>` of `host/tests/rq/jobs.py`); returns the ids.
pub fn make_failed_mix(
    python: &Python,
    server: &RedisServer,
    queue: &str,
    jobs: usize,
    families: &[&str],
    started: Instant,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(jobs);
    for (i, family) in families.iter().enumerate() {
        let share = jobs / families.len() + usize::from(i < jobs % families.len());
        if share > 0 {
            let func = format!("jobs.{family}");
            ids.extend(make_failed(
                python, server, queue, share, &func, jobs, started,
            ));
        }
    }
    ids
}

/// Runs `make_failed.py` for `count` jobs of `func` (a dotted name: `jobs.network_error`,
/// or one no worker can import, which fails just the same) on `queue`, printing progress
/// (read from the failed registry) every two seconds; returns the ids.
pub fn make_failed(
    python: &Python,
    server: &RedisServer,
    queue: &str,
    count: usize,
    func: &str,
    total: usize,
    started: Instant,
) -> Vec<String> {
    let url = server.url();
    let label = func.strip_prefix("jobs.").unwrap_or(func);
    let out_path = server.dir().join(format!("make_failed-{label}.json"));
    let err_path = server.dir().join(format!("make_failed-{label}.err"));
    let mut child = python
        .command(&url)
        .arg("make_failed.py")
        .args(["--redis-url", &url, "--queue", queue, "--timing"])
        .args(["--count", &count.to_string(), "--func", func])
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("make_failed.py runs");
    let mut con = connect(&url);
    let mut last = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            let failed: u64 = cmd(&mut con, &["ZCARD", &failed_key(queue)]);
            println!(
                "  making failed jobs ({label}): {failed}/{total} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "make_failed.py {label} failed: {err}");
    if !err.trim().is_empty() {
        println!("  {}", err.trim());
    }
    let text = std::fs::read_to_string(&out_path).expect("make_failed.py output");
    serde_json::from_str(&text).expect("make_failed.py prints a JSON list of ids")
}

/// An RDB snapshot of a server holding `jobs` failed jobs on `queue` and nothing queued.
///
/// A restore is compared with the snapshot on its durable keys: those without a TTL or with
/// one longer than [`SHORT_TTL_MS`] (the job hashes and results streams, whose `failure_ttl`
/// is a year by default; the queues and registries). Keys RQ gives a short TTL (its workers'
/// and maintenance locks) may expire between the save and a restore, and Redis drops them
/// when it loads the RDB: they are not compared, and the key count is not either.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    keys: u64,
    /// The durable keys at the save, sorted.
    durable: Vec<Vec<u8>>,
    queue: String,
    jobs: usize,
}

/// Keys whose TTL was shorter than this at the save may be gone from a restore.
pub const SHORT_TTL_MS: i64 = 24 * 3600 * 1000;

/// Keys per pipeline when reading every key's TTL or existence.
const KEY_CHUNK: usize = 1000;

impl Snapshot {
    /// Checks the failed registry holds `jobs` jobs, then `SAVE`s and keeps a copy of the RDB.
    pub fn save(server: &RedisServer, queue: &str, jobs: usize) -> Self {
        let mut con = connect(&server.url());
        let failed: u64 = cmd(&mut con, &["ZCARD", &failed_key(queue)]);
        assert_eq!(failed, jobs as u64, "every job is in the failed registry");
        let durable = durable_keys(&mut con);
        let keys: u64 = cmd(&mut con, &["DBSIZE"]);
        let _: String = cmd(&mut con, &["SAVE"]);
        let path = server.dir().join("snapshot.rdb");
        std::fs::copy(server.dir().join("dump.rdb"), &path).expect("copy the RDB");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "  snapshot: {keys} keys ({} durable, {} with a TTL under {} h, not compared), RDB \
             {:.1} MB",
            durable.len(),
            keys.saturating_sub(durable.len() as u64),
            SHORT_TTL_MS / 3_600_000,
            size as f64 / 1e6
        );
        Self {
            path,
            keys,
            durable,
            queue: queue.to_string(),
            jobs,
        }
    }

    /// The keys the server held at the save (short-lived ones included).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Kills Redis, puts the snapshot back, restarts on it, and checks it is the snapshot:
    /// every durable key of the save there, every job failed, nothing queued.
    pub fn restore(&self, server: &mut RedisServer) {
        let started = Instant::now();
        server.stop();
        std::fs::copy(&self.path, server.dir().join("dump.rdb")).expect("put RDB back");
        server.restart();
        let mut con = connect(&server.url());
        let keys: u64 = cmd(&mut con, &["DBSIZE"]);
        let failed: u64 = cmd(&mut con, &["ZCARD", &failed_key(&self.queue)]);
        let queued: u64 = cmd(&mut con, &["LLEN", &queue_key(&self.queue)]);
        let missing = missing_keys(&mut con, &self.durable);
        assert!(
            missing.is_empty() && failed == self.jobs as u64 && queued == 0,
            "the restored snapshot differs: {} of its {} durable keys missing (first: {:?}), \
             {failed} failed, {queued} queued ({keys} keys, saved {})",
            missing.len(),
            self.durable.len(),
            missing
                .first()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            self.keys
        );
        println!(
            "  (snapshot restored in {:.2} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Every key with no TTL or one of at least [`SHORT_TTL_MS`], sorted.
fn durable_keys(con: &mut redis::Connection) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(KEY_CHUNK)
            .query(con)
            .unwrap_or_else(|e| panic!("SCAN: {e}"));
        all.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    all.sort();
    all.dedup();
    let mut durable = Vec::with_capacity(all.len());
    for chunk in all.chunks(KEY_CHUNK) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("PTTL").arg(key);
        }
        let ttls: Vec<i64> = pipe.query(con).unwrap_or_else(|e| panic!("PTTL: {e}"));
        // -1: no TTL; -2: gone since the scan.
        durable.extend(
            chunk
                .iter()
                .zip(ttls)
                .filter(|(_, ttl)| *ttl == -1 || *ttl >= SHORT_TTL_MS)
                .map(|(key, _)| key.clone()),
        );
    }
    durable
}

/// The keys of `keys` the server does not hold.
fn missing_keys(con: &mut redis::Connection, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut missing = Vec::new();
    for chunk in keys.chunks(KEY_CHUNK) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("EXISTS").arg(key);
        }
        let exists: Vec<u8> = pipe.query(con).unwrap_or_else(|e| panic!("EXISTS: {e}"));
        missing.extend(
            chunk
                .iter()
                .zip(exists)
                .filter(|(_, n)| *n == 0)
                .map(|(key, _)| key.clone()),
        );
    }
    missing
}

/// After a retry-all of every job in `ids`: each is in `rq:queue:Q` exactly once, and
/// nothing is left in `rq:failed:Q`.
pub fn queue_state(url: &str, queue: &str, ids: &[String]) -> Result<(), String> {
    let mut con = connect(url);
    let queued: Vec<String> = cmd(&mut con, &["LRANGE", &queue_key(queue), "0", "-1"]);
    let failed: u64 = cmd(&mut con, &["ZCARD", &failed_key(queue)]);
    let unique: HashSet<&String> = queued.iter().collect();
    let expected: HashSet<&String> = ids.iter().collect();
    let mut problems = Vec::new();
    if queued.len() != ids.len() {
        problems.push(format!(
            "{} ids in {} (want {})",
            queued.len(),
            queue_key(queue),
            ids.len()
        ));
    }
    if unique.len() != queued.len() {
        problems.push(format!("{} ids queued twice", queued.len() - unique.len()));
    }
    if unique != expected {
        problems.push(format!(
            "{} jobs missing from the queue, {} unknown ids in it",
            expected.difference(&unique).count(),
            unique.difference(&expected).count()
        ));
    }
    if failed != 0 {
        problems.push(format!("{failed} jobs still in {}", failed_key(queue)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

// --- retryguard serve -------------------------------------------------------------------------

/// `target/release/retryguard`, built by cargo with this bench; `None` if it cannot serve.
pub fn serve_binary() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_retryguard"));
    let ok = Command::new(&bin)
        .args(["serve", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

/// A `retryguard serve` child, killed when dropped.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Spawns `serve` and waits until `/healthz` answers (30 s at most).
    pub fn start(bin: &Path, redis_url: &str, dir: &Path) -> Self {
        let mut serve = Self::spawn(bin, redis_url, dir, "serve", &[]);
        serve.wait_up(Duration::from_secs(30));
        serve
    }

    /// Spawns `serve` on a free loopback port without waiting: only our settings (run in
    /// `<dir>/serve-cwd`, an empty dir, so no retryguard.toml; no inherited RETRYGUARD_*),
    /// cooldown 0, a 600 s request timeout, then `env` (which may override those). Its log
    /// (stderr) is `<dir>/<name>.log`.
    pub fn spawn(
        bin: &Path,
        redis_url: &str,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RETRYGUARD_") {
                cmd.env_remove(k);
            }
        }
        let log = dir.join(format!("{name}.log"));
        let empty = dir.join("serve-cwd");
        std::fs::create_dir_all(&empty).expect("serve's dir");
        cmd.arg("serve")
            .current_dir(&empty)
            .env("RETRYGUARD_REDIS_URL", redis_url)
            .env("RETRYGUARD_LISTEN", addr.to_string())
            .env("RETRYGUARD_RETRY_COOLDOWN_SECONDS", "0")
            .env("RETRYGUARD_SERVER_REQUEST_TIMEOUT_SECONDS", "600");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serve log"))
            .spawn()
            .expect("retryguard serve starts");
        Self { child, addr, log }
    }

    /// Panics with the log if the process has exited.
    pub fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "retryguard serve exited with {status}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Whether something accepts connections on its port.
    pub fn listening(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
    }

    /// Waits until `/healthz` answers 200; panics after `timeout` or if the process exits.
    pub fn wait_up(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running();
            if self.listening() && http(self.addr, "GET", "/healthz").0 == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "retryguard serve is not up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's peak RSS so far (`VmHWM`).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        vm_hwm(&format!("/proc/{}/status", self.child.id()))
    }

    /// SIGTERM (a graceful stop), then SIGKILL if it is still running after 10 s.
    pub fn stop(mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/v1/jobs/failed/retry-all?wait_seconds=300` (a real requeue), following the
/// operation to its end if it answers 202; the summary and the first response's body.
pub fn retry_all_http(addr: SocketAddr) -> (Value, String) {
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/jobs/failed/retry-all?wait_seconds=300",
    );
    let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status == 202 {
        // Still running after wait_seconds: follow the operation to its end.
        let url = v["status_url"].as_str().unwrap_or_default().to_string();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let (_, body) = http(addr, "GET", &url);
            let op: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if op["state"] != "running" {
                v = op["summary"].clone();
                break;
            }
        }
    } else {
        assert_eq!(status, 200, "retry-all answered {status}: {body}");
    }
    (v, body)
}

// --- plain HTTP/1.1 ---------------------------------------------------------------------------

/// One HTTP/1.1 request (`Connection: close`, no body); the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to retryguard serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(700)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or_default();
    }
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A kept-alive HTTP/1.1 connection: requests one after another on one socket, so a poll
/// costs no connect. Responses are read by `Content-Length` or chunked encoding.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to retryguard serve");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(700)))
            .expect("timeout");
        Self {
            addr,
            reader: BufReader::new(stream),
        }
    }

    /// Sends one request (with a body of the given content type, if any) and reads the
    /// response: the status and the body.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> (u16, String) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        let bytes = match body {
            Some((content_type, bytes)) => {
                head.push_str(&format!("Content-Type: {content_type}\r\n"));
                bytes
            }
            None => &[],
        };
        head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
        let mut request = head.into_bytes();
        request.extend_from_slice(bytes);
        self.reader
            .get_mut()
            .write_all(&request)
            .expect("send the request");
        self.read_response()
    }

    /// `request` with a JSON body, the answer parsed (`Null` if it is not JSON).
    pub fn json(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let text = body.map(Value::to_string);
        let (status, answer) = self.request(
            method,
            path,
            text.as_deref().map(|t| ("application/json", t.as_bytes())),
        );
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read the response");
        assert!(n > 0, "the server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    fn read_response(&mut self) -> (u16, String) {
        let status_line = self.line();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().expect("a Content-Length");
            } else if let Some(v) = lower.strip_prefix("transfer-encoding:") {
                chunked = v.contains("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = self.line();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .expect("a chunk size");
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().is_empty() {}
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader
                    .read_exact(&mut body[start..])
                    .expect("read a chunk");
                self.line();
            }
        } else {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).expect("read the body");
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

// --- figures ----------------------------------------------------------------------------------

pub fn vm_hwm(status_path: &str) -> Option<u64> {
    std::fs::read_to_string(status_path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "MET   " } else { "MISSED" }
}

/// A JSON object of counts as `k n, …`, zeros left out.
pub fn compact(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => v.to_string(),
    }
}

pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "load unknown".into(),
        |l| {
            let parts: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load average {} (1/5/15 min)", parts.join(" "))
        },
    )
}
