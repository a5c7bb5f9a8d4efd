//! A throwaway `redis-server` per test: its own free port on 127.0.0.1 and its own temp dir,
//! never the shared Redis on 6379. Std only, so any test binary can include this one file.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` and `restart` wait for `PING` to answer `PONG`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    durable: bool,
    /// More `redis-server` arguments (TLS ports, `--replicaof`, …), after the defaults.
    extra: Vec<String>,
    /// A Sentinel: this config file (written in `dir`) and `--sentinel`.
    sentinel: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// An in-memory server: `--save ""`, `--appendonly no`.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that loses nothing it acknowledged: `--appendonly yes --appendfsync always`,
    /// so data written before a [`stop`](Self::stop) is there after [`restart`](Self::restart).
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        Self::start_full(durable, Vec::new(), None)
    }

    /// An in-memory server with more arguments (`--tls-port`, `--replicaof`, …); the plain
    /// port stays on for `ping` and the test's own tools.
    pub fn start_with_args(extra: Vec<String>) -> Self {
        Self::start_full(false, extra, None)
    }

    /// A Redis Sentinel that monitors `name` at 127.0.0.1:`primary_port` with `quorum`, and
    /// notices a dead primary after `down_after_ms`.
    pub fn start_sentinel(name: &str, primary_port: u16, quorum: u32, down_after_ms: u64) -> Self {
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {name} {down_after_ms}\n\
             sentinel failover-timeout {name} 10000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        Self::start_full(false, Vec::new(), Some(config))
    }

    fn start_full(durable: bool, extra: Vec<String>, sentinel: Option<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("retryguard-redis-")
            .tempdir()
            .expect("a temp dir for redis-server");
        let mut server = Self {
            port: free_port(),
            durable,
            extra,
            sentinel,
            dir,
            child: None,
        };
        // The port is free when picked; another process may take it before redis-server
        // binds it, so a start that fails tries another port.
        let mut last_error = String::new();
        for _ in 0..5 {
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
            server.port = free_port();
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working dir (its AOF and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server hard (SIGKILL, no shutdown save) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same dir and settings (a durable
    /// server reloads its AOF). Stops it first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// Whether the server answers `PING` with `PONG` right now.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let mut cmd = Command::new("redis-server");
        if let Some(config) = &self.sentinel {
            // A sentinel rewrites its config file: one of its own, written at the first start
            // only (a restarted sentinel keeps what it learnt).
            let path = self.dir.path().join("sentinel.conf");
            if !path.exists() {
                std::fs::write(&path, config).expect("write sentinel.conf");
            }
            cmd.arg(&path).arg("--sentinel");
        }
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"]);
        if self.sentinel.is_none() {
            if self.durable {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            } else {
                cmd.args(["--appendonly", "no"]);
            }
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); it must be on PATH: scripts/test.sh \
                     installs it, or `apt-get install -y redis-server`"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(self.port) {
                // Ours, not a server that took the port between `free_port` and the bind.
                let pid = self.child.as_ref().map(Child::id);
                return match server_pid(self.port) {
                    Some(p) if Some(p) == pid => Ok(()),
                    other => {
                        self.stop();
                        Err(format!(
                            "port {} answers, but as process {other:?}, not ours ({pid:?})",
                            self.port
                        ))
                    }
                };
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "it exited with {status}; its log ({}) ends with:\n{}",
                    log.display(),
                    tail(&log)
                ));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "no PONG on 127.0.0.1:{} within {READY_TIMEOUT:?}; its log ({}) ends \
                     with:\n{}",
                    self.port,
                    log.display(),
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `PING` in RESP over a plain socket; true on `+PONG`. A server still loading its AOF
/// answers `-LOADING …`, which is not ready.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// The `process_id` from `INFO server`.
fn server_pid(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .ok()?;
    let mut reader = std::io::BufReader::new(stream);
    let mut header = String::new();
    std::io::BufRead::read_line(&mut reader, &mut header).ok()?;
    let len: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
