//! The app under test, requests, and failed RQ 2.x jobs written with raw Redis commands.

use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use retryguard::api::{self, AppState};
use retryguard::config::Config;
use retryguard::policy::{EngineConfig, Policy, PolicyEngine};
use retryguard::queue::rq::decode::format_rq_time;
use tower::ServiceExt as _;

pub use crate::redis_server::RedisServer;

/// A network failure: retryable.
pub const NETWORK_TB: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 9, in charge\n    sock.connect(addr)\nConnectionRefusedError: [Errno 111] Connection refused\n";
/// A validation failure: not retryable.
pub const VALIDATION_TB: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 3, in charge\n    raise ValueError(\"amount must be positive\")\nValueError: amount must be positive\n";

/// One engine and the built-in policy for the whole test binary.
fn engine() -> &'static (Arc<PolicyEngine>, Arc<Policy>) {
    static ENGINE: OnceLock<(Arc<PolicyEngine>, Arc<Policy>)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Arc::new(
            PolicyEngine::new(EngineConfig {
                max_concurrent_evaluations: 8,
                ..EngineConfig::default()
            })
            .unwrap(),
        );
        let policy = engine.load_builtin().unwrap();
        (engine, policy)
    })
}

/// The config of a test against `redis`: short Redis timeouts.
pub fn config(redis: &RedisServer) -> Config {
    let mut c = Config::default();
    c.redis.url = redis.url();
    c.redis.connect_timeout_ms = 500;
    c.redis.response_timeout_ms = 1000;
    c
}

/// The app's state over `config`'s Redis.
pub async fn state_with(config: Config) -> AppState {
    let (engine, policy) = engine();
    let app =
        retryguard::app::App::connect(Arc::new(config), Arc::clone(engine), Arc::clone(policy))
            .await
            .unwrap();
    AppState::from_app(app)
}

/// One pass of the failure index's reconciler over `redis` (what `serve` runs in the
/// background): the counts `stats` answers with are the index's.
pub async fn reconcile(redis: &RedisServer) {
    let (engine, policy) = engine();
    let app = retryguard::app::App::connect(
        Arc::new(config(redis)),
        Arc::clone(engine),
        Arc::clone(policy),
    )
    .await
    .unwrap();
    let mut reconciler = retryguard::triage::Reconciler::new(
        Arc::clone(&app.service),
        app.backend.connection(),
        retryguard::triage::ReconcilerConfig::default(),
        Arc::default(),
    );
    reconciler.pass().await.unwrap();
}

/// The router over a test Redis.
pub async fn app(redis: &RedisServer) -> Router {
    api::router(state_with(config(redis)).await)
}

/// A response: status, headers, JSON body (every answer of the API is JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }
}

pub async fn send(app: &Router, method: &str, uri: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    send_request(app, request).await
}

pub async fn send_request(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{status} {json}"
    );
    Reply {
        status,
        headers,
        json,
    }
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A failed job as RQ 2.x stores it.
#[derive(Debug, Clone)]
pub struct RawJob<'a> {
    pub id: &'a str,
    pub queue: &'a str,
    pub func: &'a str,
    pub traceback: &'a str,
    /// When it failed (epoch ms).
    pub ended_ms: u64,
}

impl<'a> RawJob<'a> {
    pub fn new(id: &'a str, traceback: &'a str, ended_ms: u64) -> Self {
        Self {
            id,
            queue: "default",
            func: "app.tasks.charge",
            traceback,
            ended_ms,
        }
    }
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `pickle.dumps((func, None, (1,), {}), protocol=5)`, as RQ writes a job's `data`.
fn pickled_call(func: &str) -> Vec<u8> {
    let name = func.as_bytes();
    let mut body = vec![b'(', 0x8c, u8::try_from(name.len()).unwrap()];
    body.extend_from_slice(name);
    body.extend_from_slice(b"\x94NK\x01\x85\x94}\x94t\x94.");
    let mut p = vec![0x80, 0x05, 0x95];
    p.extend_from_slice(&(body.len() as u64).to_le_bytes());
    p.extend_from_slice(&body);
    p
}

/// Writes the job hash, its failed-registry member, its queue in `rq:queues`, and a failed
/// entry in its results stream, as RQ 2.12 does.
pub fn write_failed(con: &mut redis::Connection, jobs: &[RawJob<'_>]) {
    let mut pipe = redis::pipe();
    for j in jobs {
        let created = format_rq_time(j.ended_ms.saturating_sub(60_000));
        let ended = format_rq_time(j.ended_ms);
        pipe.cmd("HSET")
            .arg(format!("rq:job:{}", j.id))
            .arg("status")
            .arg("failed")
            .arg("origin")
            .arg(j.queue)
            .arg("data")
            .arg(zlib(&pickled_call(j.func)))
            .arg("description")
            .arg(format!("{}(1)", j.func))
            .arg("created_at")
            .arg(&created)
            .arg("enqueued_at")
            .arg(&created)
            .arg("started_at")
            .arg(&created)
            .arg("ended_at")
            .arg(&ended)
            .arg("failure_ttl")
            .arg(31_536_000)
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("rq:failed:{}", j.queue))
            .arg(j.ended_ms / 1000 + 31_536_000)
            .arg(j.id)
            .ignore();
        pipe.cmd("SADD")
            .arg("rq:queues")
            .arg(format!("rq:queue:{}", j.queue))
            .ignore();
        let exc = base64::engine::general_purpose::STANDARD.encode(zlib(j.traceback.as_bytes()));
        pipe.cmd("XADD")
            .arg(format!("rq:results:{}", j.id))
            .arg("*")
            .arg("type")
            .arg(2)
            .arg("exc_string")
            .arg(exc)
            .arg("created_at")
            .arg(&ended)
            .ignore();
    }
    pipe.query::<()>(con).unwrap();
}

pub fn connect(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .unwrap()
}

/// The `retryguard` binary, run where no retryguard.toml is and with none of the caller's
/// RETRYGUARD_* settings.
pub fn retryguard() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_retryguard"));
    cmd.current_dir(std::env::temp_dir());
    for (k, _) in std::env::vars() {
        if k.starts_with("RETRYGUARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running `retryguard serve`: the child, its port, and its stdout (the banner).
pub type Serve = (
    std::process::Child,
    u16,
    std::io::BufReader<std::process::ChildStdout>,
);

/// `retryguard serve` over `redis` on a free port, its audit directory a fresh one under the
/// temp dir: the child, its port, and its stdout (the banner) for the caller to read.
pub fn spawn_serve(redis: &RedisServer) -> Serve {
    let port = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let audit = std::env::temp_dir().join(format!("retryguard-test-audit-{port}"));
    spawn_serve_on(redis, port, &[("RETRYGUARD_AUDIT_DIR", audit.as_os_str())])
}

/// `retryguard serve` over `redis` with extra environment (e.g. its audit directory and
/// flush interval), once it says it listens.
pub fn spawn_serve_with(redis: &RedisServer, env: &[(&str, &std::ffi::OsStr)]) -> Serve {
    use std::io::BufRead as _;
    let port = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (child, port, mut stdout) = spawn_serve_on(redis, port, env);
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "serve exited");
    }
    (child, port, stdout)
}

fn spawn_serve_on(redis: &RedisServer, port: u16, env: &[(&str, &std::ffi::OsStr)]) -> Serve {
    let mut child = retryguard()
        .arg("serve")
        .env("RETRYGUARD_REDIS_URL", redis.url())
        .env("RETRYGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, port, stdout)
}

/// Sends SIGTERM and waits up to `within` for a clean exit.
pub fn sigterm_and_wait(child: &mut std::process::Child, within: std::time::Duration) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("serve did not stop within {within:?} of SIGTERM");
}

/// A byte string as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's stdout and stderr, labelled, for an assertion's message.
pub fn both(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    )
}
