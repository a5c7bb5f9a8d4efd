//! The sections of the configuration file, each with its defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Params, PolicyLimits};

/// `[server]`: the HTTP service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `IP:port`; loopback only without `[auth] tokens`.
    pub listen: String,
    /// Names (besides the listen address) that requests may carry in `Host`, e.g. the name
    /// of a TLS proxy in front; `*` accepts any (only with tokens). Refuses DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Longest any request may take; a retry-all goes on as an operation past it.
    pub request_timeout_seconds: u64,
    /// Largest request body accepted.
    pub body_limit_bytes: u64,
    /// How long `POST …/retry-all` waits for its operation before answering `202`.
    pub retry_all_wait_seconds: u64,
    /// Retry-all operations that may run at once; more get `429`.
    pub max_concurrent_retry_all: u32,
    /// The origin browsers reach this server at when a TLS proxy is in front
    /// (`https://retryguard.example.com`): the dashboard's `Origin` check accepts it and its
    /// session cookie gets `Secure`. Empty: the server's own address.
    pub public_url: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            allowed_hosts: Vec::new(),
            request_timeout_seconds: 60,
            // Room for a guard result of `max_result_bytes` and its JSON envelope.
            body_limit_bytes: 128 << 10,
            retry_all_wait_seconds: 30,
            max_concurrent_retry_all: 4,
            public_url: String::new(),
        }
    }
}

impl ServerConfig {
    /// `public_url`'s origin, `scheme://host[:port]` in lower case (`None` when it is empty or
    /// not an http(s) URL without credentials). A path, a query or a trailing `/` are
    /// dropped: an origin has none.
    pub fn public_origin(&self) -> Option<String> {
        let url = self.public_url.trim();
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
        let valid = !authority.is_empty()
            && !authority.contains('@')
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        valid.then(|| format!("{scheme}://{authority}"))
    }
}

/// `[retry]`: the default policy's params. Unset keys take the policy's own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: Option<u32>,
    pub cooldown_seconds: Option<u64>,
    pub exponential_backoff: Option<bool>,
    pub max_cooldown_seconds: Option<u64>,
    pub retry_unknown: Option<bool>,
}

impl RetryConfig {
    /// The keys that are set, as policy params (to be checked with
    /// `PolicyEngine::validate_params`).
    pub fn params(&self) -> Params {
        let mut params = Params::new();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                params.push((key.to_string(), v));
            }
        };
        set("max_attempts", self.max_attempts.map(|v| v.to_string()));
        set(
            "cooldown_seconds",
            self.cooldown_seconds.map(|v| v.to_string()),
        );
        set(
            "exponential_backoff",
            self.exponential_backoff.map(|v| v.to_string()),
        );
        set(
            "max_cooldown_seconds",
            self.max_cooldown_seconds.map(|v| v.to_string()),
        );
        set("retry_unknown", self.retry_unknown.map(|v| v.to_string()));
        params
    }
}

/// `[policy]`: the sandbox limits of every evaluation, and where compiled policies are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub fuel: u64,
    pub deadline_ms: u64,
    pub memory_bytes: u64,
    /// The on-disk cache of compiled policies (`docs/policies.md`), written only by this
    /// process; empty disables it (every start compiles every bound policy again).
    pub cache_dir: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let l = PolicyLimits::default();
        Self {
            fuel: l.fuel,
            deadline_ms: l.deadline_ms,
            memory_bytes: l.memory_bytes as u64,
            cache_dir: "./policy-cache".into(),
        }
    }
}

/// `[audit]`: the durable audit trail (`docs/audit.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Where the trail lives: `file:///path` or `s3://bucket/prefix` (also `gs://`,
    /// `az://`); empty means `path`. Instances sharing one Redis must share it too.
    pub url: String,
    /// The audit directory (`AUDIT_DIR`), when `url` is empty: `url`'s short form.
    pub path: String,
    /// Whether this instance takes part in writing (one writer at a time holds a lease).
    pub writer: bool,
    /// A batch is written when its oldest record is this old…
    pub flush_interval_ms: u64,
    /// …or when it holds this many records.
    pub batch_size: u64,
    /// Partitions older than this many days are deleted; 0 keeps everything.
    pub retention_days: u32,
    /// How long the writer lease lasts without renewal.
    pub lease_ttl_seconds: u64,
    /// `/readyz` reports the audit degraded when a record waits longer than this.
    pub max_lag_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        let w = crate::audit::WriterConfig::default();
        Self {
            url: String::new(),
            path: "./audit".into(),
            writer: true,
            flush_interval_ms: duration_ms(w.flush_interval),
            batch_size: w.batch_size as u64,
            retention_days: w.retention_days,
            lease_ttl_seconds: w.lease_ttl.as_secs(),
            max_lag_seconds: 30,
        }
    }
}

/// `[ui]`: the dashboard at `/ui/` (`docs/dashboard.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Whether `serve` answers `/ui/` (off: `/ui/…` is 404 and `/` stays as the API has it).
    pub enabled: bool,
    /// Whether a job's page shows its arguments (RQ's `description`, which may hold personal
    /// data or secrets); only to `operate` and above even then.
    pub show_job_args: bool,
    /// A session ends after this long without a request.
    pub session_idle_minutes: u64,
    /// A session ends this long after its login, however active.
    pub session_max_hours: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            show_job_args: false,
            session_idle_minutes: 30,
            session_max_hours: 12,
        }
    }
}

/// `[triage]`: the failure index and its reconciler (`docs/triage.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriageConfig {
    /// Whether this instance takes part in keeping the index (one at a time holds a lease).
    pub reconciler: bool,
    /// Pause between two passes of the reconciler.
    pub interval_ms: u64,
    /// How long the reconciler's lease lasts without renewal: a standby takes over after it.
    pub lease_ttl_seconds: u64,
    /// Least time between two full passes over one queue (only when the counts differ).
    pub full_pass_every_ms: u64,
}

impl Default for TriageConfig {
    fn default() -> Self {
        let r = crate::triage::ReconcilerConfig::default();
        Self {
            reconciler: true,
            interval_ms: duration_ms(r.interval),
            lease_ttl_seconds: r.lease_ttl.as_secs(),
            full_pass_every_ms: duration_ms(r.full_every),
        }
    }
}

/// `[auto_retry]`: the sweeper that retries the jobs of bindings with `auto_retry` when they
/// are due (`docs/auto-retry.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoRetryConfig {
    /// Whether this instance runs a sweeper (one at a time works; the others stand by).
    pub enabled: bool,
    /// Due jobs looked at per turn.
    pub batch_size: u64,
    /// Most time between two looks at the due-time index when nothing is due.
    pub interval_ms: u64,
    /// How long the sweeper's lease lasts without renewal: a standby takes over after it.
    pub lease_ttl_seconds: u64,
    /// Jobs due at the same time are spread over this many ms.
    pub jitter_ms: u64,
}

impl Default for AutoRetryConfig {
    fn default() -> Self {
        let s = crate::retry::sweeper::SweeperConfig::default();
        Self {
            enabled: false,
            batch_size: s.batch as u64,
            interval_ms: duration_ms(s.idle),
            lease_ttl_seconds: s.lease_ttl.as_secs(),
            jitter_ms: s.jitter_ms,
        }
    }
}

impl AutoRetryConfig {
    /// The sweeper's settings.
    pub fn sweeper_config(&self) -> crate::retry::sweeper::SweeperConfig {
        crate::retry::sweeper::SweeperConfig {
            batch: usize::try_from(self.batch_size).unwrap_or(500),
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds),
            idle: Duration::from_millis(self.interval_ms),
            jitter_ms: self.jitter_ms,
        }
    }
}

impl TriageConfig {
    /// The reconciler's settings.
    pub fn reconciler_config(&self) -> crate::triage::ReconcilerConfig {
        crate::triage::ReconcilerConfig {
            interval: Duration::from_millis(self.interval_ms),
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds),
            full_every: Duration::from_millis(self.full_pass_every_ms),
            ..crate::triage::ReconcilerConfig::default()
        }
    }
}

impl AuditConfig {
    /// The writer's settings.
    /// Where the trail lives (`url`, else `path`).
    pub fn store_url(&self) -> Result<crate::audit::StoreUrl, String> {
        crate::audit::StoreUrl::parse(&self.url, &self.path)
    }

    /// How long one request to an object store may take: well inside the writer's lease,
    /// which is renewed right before each put (`audit/bucket.rs`).
    pub fn store_request_timeout(&self) -> Duration {
        (Duration::from_secs(self.lease_ttl_seconds) * 3 / 5)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub fn writer_config(&self) -> crate::audit::WriterConfig {
        crate::audit::WriterConfig {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            batch_size: usize::try_from(self.batch_size).unwrap_or(usize::MAX),
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds),
            retention_days: self.retention_days,
            ..crate::audit::WriterConfig::default()
        }
    }
}

/// `[guard]`: the idempotency guard job code calls around its side effects (docs/guard.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// How long a key is remembered after its last change (completed results included).
    pub ttl_seconds: u64,
    /// The lease of a `begin` that names none: RQ's default job timeout (180 s) + 60 s.
    pub default_lease_seconds: u64,
    /// Longest lease a `begin` may ask for.
    pub max_lease_seconds: u64,
    /// Largest result `complete` stores.
    pub max_result_bytes: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            ttl_seconds: 72 * 3600,
            default_lease_seconds: 240,
            max_lease_seconds: 24 * 3600,
            max_result_bytes: 64 << 10,
        }
    }
}

/// `[auth]`: bearer tokens with roles (`docs/operations.md`). With none, the API listens on
/// loopback only and every request acts as `local`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `name:role:sha256-of-token` entries (`retryguard auth new-token` makes one); the
    /// name is the actor in the audit trail, the role one of `read`, `operate`, `admin`.
    pub tokens: Vec<String>,
    /// Require a `read` token for `/metrics` too (it is open by default, like the probes).
    pub protect_metrics: bool,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `[tls]`: `serve` over HTTPS (`docs/operations.md`). Both files or neither; empty: plain
/// HTTP. The files are read again when they change and on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), its own certificate first.
    pub cert_file: String,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl TlsConfig {
    /// Whether `serve` speaks HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.trim().is_empty() || !self.key_file.trim().is_empty()
    }

    /// Both files or neither, each a readable file: `(key, message)` of what is wrong. The
    /// certificate and key themselves are parsed when `serve` starts (`tls` feature).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let (cert, key) = (self.cert_file.trim(), self.key_file.trim());
        let missing = match (cert.is_empty(), key.is_empty()) {
            (true, true) => return Ok(()),
            (false, false) => None,
            (false, true) => Some(("tls.key_file", "tls.cert_file")),
            (true, false) => Some(("tls.cert_file", "tls.key_file")),
        };
        if let Some((absent, given)) = missing {
            return Err((
                absent,
                format!("{given} is set but {absent} is not: give both, or neither for plain HTTP"),
            ));
        }
        for (setting, path) in [("tls.cert_file", cert), ("tls.key_file", key)] {
            if let Err(e) = std::fs::File::open(path) {
                return Err((setting, format!("cannot read {path:?}: {e}")));
            }
        }
        Ok(())
    }
}
