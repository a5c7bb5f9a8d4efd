//! A real `retryguard serve` on a free port over a test's Redis, killed when dropped, and a
//! raw HTTP/1.1 client for it that sends exactly the headers and body a test gives.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `retryguard serve` on a free port, killed when dropped.
pub struct Serve {
    child: Child,
    pub port: u16,
    _audit: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply: the status and the JSON body (`null` when there is none).
pub type Reply = (u16, serde_json::Value);

impl Serve {
    /// Serve with cooldown 0 (a failed job is due at once), once it accepts connections.
    pub fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, &[])
    }

    /// [`Serve::start`] with more `RETRYGUARD_*` variables.
    pub fn start_with(redis_url: &str, env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let audit = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retryguard"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RETRYGUARD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .current_dir(std::env::temp_dir())
            .env("RETRYGUARD_REDIS_URL", redis_url)
            .env("RETRYGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("RETRYGUARD_AUDIT_DIR", audit.path())
            .env("RETRYGUARD_RETRY_COOLDOWN_SECONDS", "0")
            .env("RETRYGUARD_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("retryguard serve starts");
        let serve = Self {
            child,
            port,
            _audit: audit,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < deadline, "serve did not listen in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// The process id (to tell which instance holds a lease).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, now (no graceful stop: leases are left to expire).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One bodiless request (`Host: localhost`, as a local client sends it).
    pub fn http(&self, method: &str, path: &str) -> Reply {
        self.send(method, path, &[("host", "localhost")], None)
    }

    /// One request with exactly these headers; `body` is sent with its `content-length`
    /// (`None`: `content-length: 0`). `transfer-encoding: chunked` among the headers sends
    /// the body as one chunk instead.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let chunked = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let body = body.unwrap_or_default();
        let mut bytes = Vec::new();
        if chunked {
            request.push_str("connection: close\r\n\r\n");
            bytes.extend_from_slice(request.as_bytes());
            bytes.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(body);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            request.push_str(&format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            ));
            bytes.extend_from_slice(request.as_bytes());
            bytes.extend_from_slice(body);
        }
        stream.write_all(&bytes).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let body = match body.find('{') {
            Some(start) => &body[start..=body.rfind('}').unwrap_or(start)],
            None => "null",
        };
        (status, serde_json::from_str(body).unwrap())
    }
}
