//! `[redis]`'s settings: where the job queue's Redis is and how to reach it — plain, over
//! TLS (`rediss://`, optionally with a client certificate), or through Redis Sentinel. The
//! configuration (`config`) reads and checks them; `Link` uses them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timeouts on every Redis call: Redis down is a clear error, never a hang.
#[derive(Debug, Clone, Copy)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
        }
    }
}

/// `[redis]`: the Redis the job queue uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host:port/db`, `rediss://…` for TLS, or
    /// `unix:///path/to/socket`. With `sentinels`, its host and port are not used: the
    /// sentinels name the primary; the scheme, credentials and database still apply.
    pub url: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// A file holding the password (one line; a trailing newline is ignored). It replaces
    /// the URL's password and is read again at every reconnect, so a rotated secret takes
    /// effect without a restart.
    pub password_file: String,
    /// `rediss://` only: a PEM file of the CA(s) to verify the server against, instead of
    /// the system's roots.
    pub ca_file: String,
    /// `rediss://` only: a PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: String,
    /// `rediss://` only: the PEM private key of `cert_file`.
    pub key_file: String,
    /// `rediss://` only: accept any server certificate and name. Anyone on the path can then
    /// read and change the queue: for a throwaway test only; logged loudly at start.
    pub danger_accept_invalid_certs: bool,
    /// Redis Sentinel: `host:port` of each sentinel. Empty: `url` names the server directly.
    pub sentinels: Vec<String>,
    /// Redis Sentinel: the name the sentinels monitor the primary by (`mymaster`).
    pub master_name: String,
    /// Redis Sentinel: the sentinels' own `requirepass`, when they have one.
    pub sentinel_password: String,
    /// After each requeue, wait until this many replicas acknowledged it (`WAIT`), so a
    /// failover cannot lose a requeue a worker already ran. Unset: 1 with `sentinels`, 0
    /// without.
    pub wait_replicas: Option<u32>,
    /// How long the `WAIT` after a requeue may take before the requeue is reported as not
    /// confirmed.
    pub wait_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let t = RedisTimeouts::default();
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            connect_timeout_ms: duration_ms(t.connect),
            response_timeout_ms: duration_ms(t.response),
            password_file: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            danger_accept_invalid_certs: false,
            sentinels: Vec::new(),
            master_name: String::new(),
            sentinel_password: String::new(),
            wait_replicas: None,
            wait_timeout_ms: 1000,
        }
    }
}

impl RedisConfig {
    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// How many replicas each requeue waits for (see `wait_replicas`).
    pub fn replicas_to_wait_for(&self) -> u32 {
        self.wait_replicas
            .unwrap_or(if self.sentinels.is_empty() { 0 } else { 1 })
    }

    /// The Redis timeouts of `[redis]`.
    pub fn timeouts(&self) -> RedisTimeouts {
        RedisTimeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            response: Duration::from_millis(self.response_timeout_ms),
        }
    }
}

/// `host:port` (IPv6 as `[::1]:26379`), or `None`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
