//! A throwaway S3 server per test: moto's server (`moto[server]`, pinned in
//! host/tests/rq/requirements.txt) on its own free port on 127.0.0.1, with one bucket, killed
//! when dropped. It honours `If-None-Match: *` on PutObject (412 when the key exists), which
//! the audit writer's conditional puts rely on. It keeps its objects in memory, so a test
//! that wants the store "down" stops it with SIGSTOP ([`MotoServer::stop`]: connections are
//! accepted by the kernel, requests hang) and resumes it with SIGCONT ([`MotoServer::cont`])
//! instead of killing it.
//!
//! Std only (no `super::`): the interpreter is `$RETRYGUARD_TEST_PYTHON`, else the repo's
//! `.venv-test/bin/python`, as support/python.rs finds it.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for the server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `python -m moto.server` child process with one bucket.
pub struct MotoServer {
    child: Child,
    port: u16,
    bucket: String,
    /// Its log (stdout and stderr), in a temp dir of its own.
    dir: tempfile::TempDir,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; continue it first all the same, so a test
        // that panicked while the store was stopped leaves nothing hanging on it.
        self.cont();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test venv's interpreter: `$RETRYGUARD_TEST_PYTHON`, else `<repo>/.venv-test/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("RETRYGUARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("host/ has a parent")
                .join(".venv-test/bin/python")
        })
}

impl MotoServer {
    /// Starts the server on a free port and creates `bucket` (3–63 characters, S3's rules).
    /// A start that fails (another process took the port first) tries another port.
    pub fn start(bucket: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("retryguard-moto-")
            .tempdir()
            .expect("a temp dir for moto");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_and_wait(dir.path(), port) {
                Ok(child) => {
                    let server = Self {
                        child,
                        port,
                        bucket: bucket.to_string(),
                        dir,
                    };
                    server.boto(&format!("s3.create_bucket(Bucket={bucket:?})"));
                    return server;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("moto's server did not start: {last_error}");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The process id (the target of [`stop`](Self::stop) and [`cont`](Self::cont)).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The standard object_store variables a `retryguard` process reads for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// [`env`](Self::env) as object_store configuration keys (`aws_endpoint`, …), for
    /// `AuditStore::open_with` in the test process.
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    }

    /// Runs Python code with `s3` (a boto3 client of this server) and `bucket` defined;
    /// returns its stdout. Panics with its stderr when it fails.
    pub fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json, sys\n\
             s3 = boto3.client('s3', endpoint_url={:?}, aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1')\n\
             bucket = {:?}\n{code}\n",
            self.endpoint(),
            self.bucket,
        );
        let out = Command::new(python())
            .args(["-c", &script])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "boto3 against moto failed: {}\n--- code\n{code}\n--- moto's log\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGSTOP: the server stops answering (the kernel still accepts connections, so
    /// requests hang until their client gives up), as a store that stopped responding.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: the server answers again, requests queued meanwhile included.
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .stdin(Stdio::null())
            .status();
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("moto.log"))
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Spawns the server on `port` and waits until it answers moto's own API (so a port taken
/// by another process in between is not mistaken for ours).
fn spawn_and_wait(dir: &Path, port: u16) -> Result<Child, String> {
    let python = python();
    let log_path = dir.join("moto.log");
    let log = std::fs::File::create(&log_path).expect("moto's log file");
    let mut child = Command::new(&python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): make the test venv with `python3 -m venv .venv-test && \
                 .venv-test/bin/pip install -r host/tests/rq/requirements.txt` (or run \
                 scripts/test.sh)",
                python.display()
            )
        });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} -m moto.server exited with {status} (is moto[server] installed? \
                 .venv-test/bin/pip install -r host/tests/rq/requirements.txt); its log ends \
                 with:\n{}",
                python.display(),
                tail(&log_path)
            ));
        }
        if answers_moto_api(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no answer on 127.0.0.1:{port} within {READY_TIMEOUT:?}; its log ends with:\n{}",
                tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /moto-api/data.json` answers 200: a moto server listens on `port`.
fn answers_moto_api(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request =
        "GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
