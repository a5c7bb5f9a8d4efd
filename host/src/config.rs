//! The configuration of `retryguard serve`: `./retryguard.toml` (or `--config PATH`), then
//! environment variables `RETRYGUARD_<SECTION>_<KEY>` over it. Unknown keys are errors that
//! name the key: a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::IntoConnectionInfo as _;
use serde::{Deserialize, Serialize};

use crate::policy::{EngineConfig, Params, PolicyLimits};
use crate::queue::rq::RedisTimeouts;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "retryguard.toml";

/// Prefix of every environment variable the configuration reads.
pub const ENV_PREFIX: &str = "RETRYGUARD_";

/// Top-level shorthands: `RETRYGUARD_LISTEN` is `[server] listen`. (`RETRYGUARD_REDIS_URL`
/// is `[redis] url` by the general rule.)
const SHORTHANDS: &[(&str, &str, &str)] = &[
    ("LISTEN", "server", "listen"),
    ("AUDIT_DIR", "audit", "path"),
];

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub server: ServerConfig,
    pub retry: RetryConfig,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    pub guard: GuardConfig,
    pub auth: AuthConfig,
}

/// `[redis]`: the Redis the job queue uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db` (or `unix:///path/to/socket`).
    pub url: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let t = RedisTimeouts::default();
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            connect_timeout_ms: duration_ms(t.connect),
            response_timeout_ms: duration_ms(t.response),
        }
    }
}

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
        }
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
    /// The audit directory (`AUDIT_DIR`). Instances sharing one Redis must share it too.
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

impl AuditConfig {
    /// The writer's settings.
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

/// The type of a key, for reading it from an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Bool,
    /// A list of texts; in an environment variable, comma-separated.
    List,
}

/// Every key: section, key, type. The README's table and the env mapping follow it (a test
/// keeps it equal to the structs).
pub const KEYS: &[(&str, &str, Kind)] = &[
    ("redis", "url", Kind::Text),
    ("redis", "connect_timeout_ms", Kind::Integer),
    ("redis", "response_timeout_ms", Kind::Integer),
    ("server", "listen", Kind::Text),
    ("server", "allowed_hosts", Kind::List),
    ("server", "request_timeout_seconds", Kind::Integer),
    ("server", "body_limit_bytes", Kind::Integer),
    ("server", "retry_all_wait_seconds", Kind::Integer),
    ("server", "max_concurrent_retry_all", Kind::Integer),
    ("retry", "max_attempts", Kind::Integer),
    ("retry", "cooldown_seconds", Kind::Integer),
    ("retry", "exponential_backoff", Kind::Bool),
    ("retry", "max_cooldown_seconds", Kind::Integer),
    ("retry", "retry_unknown", Kind::Bool),
    ("policy", "fuel", Kind::Integer),
    ("policy", "deadline_ms", Kind::Integer),
    ("policy", "memory_bytes", Kind::Integer),
    ("policy", "cache_dir", Kind::Text),
    ("audit", "path", Kind::Text),
    ("audit", "writer", Kind::Bool),
    ("audit", "flush_interval_ms", Kind::Integer),
    ("audit", "batch_size", Kind::Integer),
    ("audit", "retention_days", Kind::Integer),
    ("audit", "lease_ttl_seconds", Kind::Integer),
    ("audit", "max_lag_seconds", Kind::Integer),
    ("guard", "ttl_seconds", Kind::Integer),
    ("guard", "default_lease_seconds", Kind::Integer),
    ("guard", "max_lease_seconds", Kind::Integer),
    ("guard", "max_result_bytes", Kind::Integer),
    ("auth", "tokens", Kind::List),
    ("auth", "protect_metrics", Kind::Bool),
];

/// The environment variable of a key: `RETRYGUARD_SERVER_LISTEN`.
pub fn env_var(section: &str, key: &str) -> String {
    format!("{ENV_PREFIX}{}_{}", section, key).to_ascii_uppercase()
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Reads `path`, or `./retryguard.toml` when it exists, or nothing; then the process
    /// environment over it; then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (file, text) = match path {
            Some(p) => (Some(p.to_path_buf()), Some(read(p)?)),
            None if Path::new(DEFAULT_PATH).is_file() => {
                let p = PathBuf::from(DEFAULT_PATH);
                let text = read(&p)?;
                (Some(p), Some(text))
            }
            None => (None, None),
        };
        Self::from_parts(file.as_deref(), text.as_deref(), std::env::vars())
    }

    /// Builds the configuration from a file's text (if any) and environment variables.
    pub fn from_parts(
        path: Option<&Path>,
        text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let path = path.unwrap_or(Path::new(DEFAULT_PATH));
        let file_error = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let mut table = match text {
            Some(text) => {
                // Deserialize once on its own: errors then carry the file's line and column.
                toml::from_str::<Config>(text).map_err(|e| file_error(e.to_string()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| file_error(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Env {
                    var: format!("{ENV_PREFIX}*"),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, the Redis URL, the listen address. The `[retry]`
    /// params are checked by the policy itself at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message,
            })
        };
        if let Err(e) = self.redis.url.as_str().into_connection_info() {
            return invalid("redis.url", format!("not a Redis URL: {e}"));
        }
        for (key, value) in [
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return invalid(key, format!("must be 1..=600000, not {value}"));
            }
        }
        let s = &self.server;
        match s.listen.parse::<SocketAddr>() {
            Err(_) => {
                return invalid(
                    "server.listen",
                    format!(
                        "{:?} is not an address and port such as 127.0.0.1:8000",
                        s.listen
                    ),
                );
            }
            Ok(addr) if !addr.ip().is_loopback() && self.auth.tokens.is_empty() => {
                return invalid(
                    "server.listen",
                    format!(
                        "{addr} is not a loopback address, and no [auth] tokens are configured: \
                         without tokens the API listens on 127.0.0.1 or ::1 only (add tokens \
                         with `retryguard auth new-token`)"
                    ),
                );
            }
            Ok(_) => {}
        }
        for host in &s.allowed_hosts {
            let name = host.trim();
            if name == "*" {
                if self.auth.tokens.is_empty() {
                    return invalid(
                        "server.allowed_hosts",
                        "`*` (any Host) needs [auth] tokens: without them any web page could \
                         read this API through a DNS-rebinding name"
                            .into(),
                    );
                }
                continue;
            }
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
            if !valid {
                return invalid(
                    "server.allowed_hosts",
                    format!(
                        "{host:?} is not a host name (letters, digits, `.`, `-`, `_`; no scheme \
                         or port), or `*`"
                    ),
                );
            }
        }
        if !(1..=3600).contains(&s.request_timeout_seconds) {
            return invalid(
                "server.request_timeout_seconds",
                format!("must be 1..=3600, not {}", s.request_timeout_seconds),
            );
        }
        if s.retry_all_wait_seconds >= s.request_timeout_seconds {
            return invalid(
                "server.retry_all_wait_seconds",
                format!(
                    "must be less than server.request_timeout_seconds ({}), not {}",
                    s.request_timeout_seconds, s.retry_all_wait_seconds
                ),
            );
        }
        if !(1..=(64 << 20)).contains(&s.body_limit_bytes) {
            return invalid(
                "server.body_limit_bytes",
                format!("must be 1..=67108864, not {}", s.body_limit_bytes),
            );
        }
        if !(1..=64).contains(&s.max_concurrent_retry_all) {
            return invalid(
                "server.max_concurrent_retry_all",
                format!("must be 1..=64, not {}", s.max_concurrent_retry_all),
            );
        }
        if let Err(e) = self.policy_limits().validate(&EngineConfig::default()) {
            return invalid("policy", e.to_string());
        }
        let a = &self.audit;
        if a.path.trim().is_empty() {
            return invalid("audit.path", "must not be empty".into());
        }
        for (key, value, range) in [
            ("audit.flush_interval_ms", a.flush_interval_ms, 10..=60_000),
            ("audit.batch_size", a.batch_size, 1..=100_000),
            ("audit.lease_ttl_seconds", a.lease_ttl_seconds, 3..=600),
            ("audit.max_lag_seconds", a.max_lag_seconds, 1..=86_400),
            (
                "audit.retention_days",
                u64::from(a.retention_days),
                0..=36_500,
            ),
        ] {
            if !range.contains(&value) {
                return invalid(
                    key,
                    format!("must be {}..={}, not {value}", range.start(), range.end()),
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut digests = std::collections::BTreeMap::new();
        for entry in &self.auth.tokens {
            let token =
                crate::auth::Token::parse(entry).map_err(|message| ConfigError::Invalid {
                    key: "auth.tokens".into(),
                    message,
                })?;
            if !names.insert(token.name.clone()) {
                return invalid(
                    "auth.tokens",
                    format!("two tokens are named {:?}", token.name),
                );
            }
            // One token under two names (or roles) would act as whichever comes first: the
            // audit trail would name the wrong actor, or the token would get the wrong role.
            if let Some(first) = digests.insert(token.sha256, token.name.clone()) {
                return invalid(
                    "auth.tokens",
                    format!(
                        "tokens {first:?} and {:?} have the same sha256: one token must have \
                         one name and one role (make another with `retryguard auth new-token`)",
                        token.name
                    ),
                );
            }
        }
        let g = &self.guard;
        for (key, value, range) in [
            ("guard.ttl_seconds", g.ttl_seconds, 60..=365 * 86_400),
            (
                "guard.max_lease_seconds",
                g.max_lease_seconds,
                1..=7 * 86_400,
            ),
            ("guard.max_result_bytes", g.max_result_bytes, 1..=(16 << 20)),
        ] {
            if !range.contains(&value) {
                return invalid(
                    key,
                    format!("must be {}..={}, not {value}", range.start(), range.end()),
                );
            }
        }
        if g.max_result_bytes.saturating_add(4096) > self.server.body_limit_bytes {
            return invalid(
                "guard.max_result_bytes",
                format!(
                    "must be at least 4096 below server.body_limit_bytes ({}), so a result that \
                     fits also fits in a request; not {}",
                    self.server.body_limit_bytes, g.max_result_bytes
                ),
            );
        }
        if !(1..=g.max_lease_seconds).contains(&g.default_lease_seconds) {
            return invalid(
                "guard.default_lease_seconds",
                format!(
                    "must be 1..=guard.max_lease_seconds ({}), not {}",
                    g.max_lease_seconds, g.default_lease_seconds
                ),
            );
        }
        if a.flush_interval_ms >= a.lease_ttl_seconds * 1000 / 3 {
            return invalid(
                "audit.flush_interval_ms",
                format!(
                    "must be below a third of audit.lease_ttl_seconds ({} s), not {}",
                    a.lease_ttl_seconds, a.flush_interval_ms
                ),
            );
        }
        Ok(())
    }

    /// The compiled-policy cache directory of `[policy]`, `None` when disabled.
    pub fn policy_cache_dir(&self) -> Option<PathBuf> {
        let dir = self.policy.cache_dir.trim();
        (!dir.is_empty()).then(|| PathBuf::from(dir))
    }

    /// The sandbox limits of `[policy]`.
    pub fn policy_limits(&self) -> PolicyLimits {
        PolicyLimits {
            fuel: self.policy.fuel,
            deadline_ms: self.policy.deadline_ms,
            memory_bytes: usize::try_from(self.policy.memory_bytes).unwrap_or(usize::MAX),
            ..PolicyLimits::default()
        }
    }

    /// The Redis timeouts of `[redis]`.
    pub fn redis_timeouts(&self) -> RedisTimeouts {
        RedisTimeouts {
            connect: Duration::from_millis(self.redis.connect_timeout_ms),
            response: Duration::from_millis(self.redis.response_timeout_ms),
        }
    }

    /// The listen address (validated by `validate`).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "server.listen".into(),
                message: format!("{:?} is not an address and port", self.server.listen),
            })
    }
}

/// The Redis URL with any password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes `RETRYGUARD_<SECTION>_<KEY>` (and the shorthands) into `table`. A variable of a
/// known section with an unknown key is an error; other `RETRYGUARD_*` variables (such as
/// `RETRYGUARD_CONFIG` or `RETRYGUARD_LOG`) are not configuration keys and are left alone.
/// An empty value counts as unset.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, v)| k.starts_with(ENV_PREFIX) && !v.is_empty())
        .collect();
    vars.sort();
    let mut seen: Vec<(&str, &str, String)> = Vec::new();
    for (var, value) in &vars {
        let name = &var[ENV_PREFIX.len()..];
        let target = if let Some((_, section, key)) = SHORTHANDS.iter().find(|(s, _, _)| *s == name)
        {
            Some((*section, *key))
        } else {
            let section = [
                "redis", "server", "retry", "policy", "audit", "guard", "auth",
            ]
            .into_iter()
            .find(|s| name.starts_with(&format!("{}_", s.to_ascii_uppercase())));
            match section {
                None => None,
                Some(section) => {
                    let key = name[section.len() + 1..].to_ascii_lowercase();
                    match KEYS.iter().find(|(s, k, _)| *s == section && *k == key) {
                        Some((s, k, _)) => Some((*s, *k)),
                        None => {
                            let keys: Vec<String> = KEYS
                                .iter()
                                .filter(|(s, _, _)| *s == section)
                                .map(|(s, k, _)| env_var(s, k))
                                .collect();
                            return Err(ConfigError::Env {
                                var: var.clone(),
                                message: format!(
                                    "[{section}] has no key `{key}` (known: {})",
                                    keys.join(", ")
                                ),
                            });
                        }
                    }
                }
            }
        };
        let Some((section, key)) = target else {
            continue;
        };
        if let Some((_, _, other)) = seen.iter().find(|(s, k, _)| *s == section && *k == key) {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!("{other} sets [{section}] {key} too: set only one of them"),
            });
        }
        seen.push((section, key, var.clone()));
        let kind = KEYS
            .iter()
            .find(|(s, k, _)| *s == section && *k == key)
            .map_or(Kind::Text, |(_, _, kind)| *kind);
        let parsed = parse_env_value(kind, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), parsed);
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("the config file's `{section}` is not a table"),
                });
            }
        }
    }
    Ok(())
}

fn parse_env_value(kind: Kind, value: &str) -> Result<toml::Value, String> {
    let value = value.trim();
    match kind {
        Kind::Text => Ok(toml::Value::String(value.to_string())),
        Kind::Integer => value
            .replace('_', "")
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| format!("expected a non-negative integer, got {value:?}")),
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {value:?}")),
        },
        Kind::List => Ok(toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(None, Some(text), env(vars))
    }

    #[test]
    fn one_token_digest_under_two_names_or_roles_is_refused() {
        let digest = "ab".repeat(32);
        for (a, b) in [("alice:read", "bob:read"), ("alice:read", "alice2:admin")] {
            let text = format!("[auth]\ntokens = [\"{a}:{digest}\", \"{b}:{digest}\"]\n");
            let e = parse(&text, &[]).unwrap_err().to_string();
            assert!(e.contains("same sha256"), "{text}: {e}");
            assert!(!e.contains(&digest), "the error never echoes a digest: {e}");
        }
        let other = "cd".repeat(32);
        let text = format!("[auth]\ntokens = [\"alice:read:{digest}\", \"bob:admin:{other}\"]\n");
        assert!(parse(&text, &[]).is_ok());
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let c = Config::from_parts(None, None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.server.listen, "127.0.0.1:8000");
        assert_eq!(c.server.retry_all_wait_seconds, 30);
        assert_eq!(c.server.max_concurrent_retry_all, 4);
        assert!(c.retry.params().is_empty());
        assert_eq!(c.policy_limits(), PolicyLimits::default());
    }

    #[test]
    fn parses_every_section() {
        let c = parse(
            r#"
            [redis]
            url = "redis://:pw@10.0.0.5:6380/2"
            connect_timeout_ms = 500
            response_timeout_ms = 1500
            [server]
            listen = "[::1]:9000"
            request_timeout_seconds = 20
            body_limit_bytes = 102400
            retry_all_wait_seconds = 5
            max_concurrent_retry_all = 2
            [retry]
            max_attempts = 5
            cooldown_seconds = 30
            exponential_backoff = false
            max_cooldown_seconds = 600
            retry_unknown = true
            [policy]
            fuel = 20000000
            deadline_ms = 100
            memory_bytes = 8388608
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.redis.connect_timeout_ms, 500);
        assert_eq!(c.redis_timeouts().response, Duration::from_millis(1500));
        assert_eq!(c.listen_addr().unwrap().port(), 9000);
        assert_eq!(c.server.max_concurrent_retry_all, 2);
        assert_eq!(
            c.retry.params(),
            vec![
                ("max_attempts".to_string(), "5".to_string()),
                ("cooldown_seconds".into(), "30".into()),
                ("exponential_backoff".into(), "false".into()),
                ("max_cooldown_seconds".into(), "600".into()),
                ("retry_unknown".into(), "true".into()),
            ]
        );
        assert_eq!(c.policy_limits().memory_bytes, 8 << 20);
        assert_eq!(c.policy_limits().deadline_ms, 100);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse(
            "[redis]\nurl = \"redis://file:6379/0\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("RETRYGUARD_REDIS_URL", "redis://env:6379/3"),
                ("RETRYGUARD_LISTEN", "127.0.0.1:9999"),
                ("RETRYGUARD_RETRY_MAX_ATTEMPTS", "7"),
                ("RETRYGUARD_RETRY_RETRY_UNKNOWN", "true"),
                ("RETRYGUARD_POLICY_FUEL", "5_000_000"),
                // Not configuration keys: left alone.
                ("RETRYGUARD_CONFIG", "/elsewhere.toml"),
                ("RETRYGUARD_TEST_PYTHON", "/usr/bin/python3"),
                ("HOME", "/root"),
                // Empty is unset.
                ("RETRYGUARD_SERVER_BODY_LIMIT_BYTES", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.redis.url, "redis://env:6379/3");
        assert_eq!(c.server.listen, "127.0.0.1:9999");
        assert_eq!(c.retry.max_attempts, Some(7));
        assert_eq!(c.retry.retry_unknown, Some(true));
        assert_eq!(c.policy.fuel, 5_000_000);
        assert_eq!(
            c.server.body_limit_bytes,
            ServerConfig::default().body_limit_bytes
        );
        let c = parse("", &[("RETRYGUARD_SERVER_LISTEN", "[::1]:8001")]).unwrap();
        assert_eq!(c.server.listen, "[::1]:8001");
    }

    #[test]
    fn refuses_unknown_keys_naming_them() {
        let e = parse("[server]\nlisten_addr = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let e = parse("[retry]\nmax_attempt = 3\n", &[]).unwrap_err();
        assert!(e.to_string().contains("max_attempt"), "{e}");
        let e = parse("[serverr]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("serverr"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = parse("", &[("RETRYGUARD_SERVER_LISTN", "x")]).unwrap_err();
        assert!(e.to_string().contains("RETRYGUARD_SERVER_LISTN"), "{e}");
        assert!(e.to_string().contains("RETRYGUARD_SERVER_LISTEN"), "{e}");
    }

    #[test]
    fn refuses_bad_values() {
        for (text, vars, needle) in [
            ("[server]\nlisten = 8000\n", vec![], "listen"),
            (
                "[server]\nlisten = \"localhost\"\n",
                vec![],
                "server.listen",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:8000\"\n",
                vec![],
                "not a loopback",
            ),
            ("[redis]\nurl = \"http://x\"\n", vec![], "redis.url"),
            (
                "[server]\nretry_all_wait_seconds = 60\nrequest_timeout_seconds = 60\n",
                vec![],
                "retry_all_wait_seconds",
            ),
            (
                "[server]\nmax_concurrent_retry_all = 0\n",
                vec![],
                "max_concurrent_retry_all",
            ),
            ("[policy]\nfuel = 0\n", vec![], "fuel"),
            ("[retry]\nmax_attempts = -1\n", vec![], "max_attempts"),
            ("[redis\n", vec![], "retryguard.toml"),
            (
                "",
                vec![("RETRYGUARD_SERVER_BODY_LIMIT_BYTES", "lots")],
                "RETRYGUARD_SERVER_BODY_LIMIT_BYTES",
            ),
            (
                "",
                vec![("RETRYGUARD_RETRY_RETRY_UNKNOWN", "maybe")],
                "true or false",
            ),
            (
                "",
                vec![
                    ("RETRYGUARD_LISTEN", "127.0.0.1:1"),
                    ("RETRYGUARD_SERVER_LISTEN", "127.0.0.1:2"),
                ],
                "only one",
            ),
        ] {
            let e = parse(text, &vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} {vars:?}: {e}");
        }
    }

    #[test]
    fn keys_table_matches_the_structs() {
        let full = toml::Table::try_from(Config {
            auth: AuthConfig {
                tokens: vec!["t:read:00".into()],
                protect_metrics: false,
            },
            retry: RetryConfig {
                max_attempts: Some(1),
                cooldown_seconds: Some(1),
                exponential_backoff: Some(true),
                max_cooldown_seconds: Some(1),
                retry_unknown: Some(true),
            },
            ..Config::default()
        })
        .unwrap();
        let mut from_structs: Vec<(String, String)> = full
            .iter()
            .flat_map(|(section, t)| {
                t.as_table()
                    .into_iter()
                    .flat_map(|t| t.keys())
                    .map(move |k| (section.clone(), k.clone()))
            })
            .collect();
        from_structs.sort();
        let mut listed: Vec<(String, String)> = KEYS
            .iter()
            .map(|(s, k, _)| (s.to_string(), k.to_string()))
            .collect();
        listed.sort();
        assert_eq!(from_structs, listed);
    }

    #[test]
    fn the_example_file_is_valid_and_the_readme_names_every_key() {
        let example = include_str!("../../retryguard.toml.example");
        let c = parse(example, &[]).unwrap();
        assert_eq!(c, Config::default(), "the example shows the defaults");
        let readme = include_str!("../../README.md");
        for (section, key, _) in KEYS {
            assert!(
                example.contains(&format!("{key} =")),
                "retryguard.toml.example lacks {key}"
            );
            assert!(
                readme.contains(&format!("`[{section}] {key}`"))
                    && readme.contains(&env_var(section, key)),
                "README lacks [{section}] {key} or its variable"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:secret@host/1"),
            "redis://user:***@host/1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
