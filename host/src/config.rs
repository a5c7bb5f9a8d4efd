//! The configuration of `retryguard serve`: `./retryguard.toml` (or `--config PATH`), then
//! environment variables `RETRYGUARD_<SECTION>_<KEY>` over it. Unknown keys are errors that
//! name the key: a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{EngineConfig, PolicyLimits};
use crate::redis_link::RedisTimeouts;

mod env;
mod redis;
mod sections;

pub use crate::redis_link::{RedisConfig, split_host_port};
use env::apply_env;
pub use env::{KEYS, Kind, env_var};
pub use sections::{
    AuditConfig, AuthConfig, AutoRetryConfig, GuardConfig, PolicyConfig, RetryConfig, ServerConfig,
    TlsConfig, TriageConfig, UiConfig,
};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "retryguard.toml";

/// Prefix of every environment variable the configuration reads.
pub const ENV_PREFIX: &str = "RETRYGUARD_";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub server: ServerConfig,
    pub retry: RetryConfig,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    pub triage: TriageConfig,
    pub auto_retry: AutoRetryConfig,
    pub ui: UiConfig,
    pub guard: GuardConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
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
        self.redis.validate()?;
        if let Err((key, message)) = self.tls.validate() {
            return invalid(key, message);
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
        if !s.public_url.is_empty() && s.public_origin().is_none() {
            return invalid(
                "server.public_url",
                format!(
                    "must be an http(s) origin such as https://retryguard.example.com, not {:?}",
                    s.public_url
                ),
            );
        }
        if let Err(e) = self.policy_limits().validate(&EngineConfig::default()) {
            return invalid("policy", e.to_string());
        }
        let a = &self.audit;
        if let Err(e) = a.store_url() {
            return invalid("audit.url", e);
        }
        for (key, value, range) in [
            ("audit.flush_interval_ms", a.flush_interval_ms, 10..=60_000),
            ("audit.batch_size", a.batch_size, 1..=100_000),
            ("audit.lease_ttl_seconds", a.lease_ttl_seconds, 3..=600),
            ("audit.max_lag_seconds", a.max_lag_seconds, 1..=86_400),
            ("triage.interval_ms", self.triage.interval_ms, 10..=60_000),
            (
                "triage.lease_ttl_seconds",
                self.triage.lease_ttl_seconds,
                2..=600,
            ),
            (
                "triage.full_pass_every_ms",
                self.triage.full_pass_every_ms,
                100..=3_600_000,
            ),
            (
                "auto_retry.batch_size",
                self.auto_retry.batch_size,
                1..=10_000,
            ),
            (
                "auto_retry.interval_ms",
                self.auto_retry.interval_ms,
                5..=60_000,
            ),
            (
                "auto_retry.lease_ttl_seconds",
                self.auto_retry.lease_ttl_seconds,
                2..=600,
            ),
            (
                "auto_retry.jitter_ms",
                self.auto_retry.jitter_ms,
                0..=60_000,
            ),
            (
                "ui.session_idle_minutes",
                self.ui.session_idle_minutes,
                1..=7 * 24 * 60,
            ),
            (
                "ui.session_max_hours",
                self.ui.session_max_hours,
                1..=30 * 24,
            ),
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
        self.redis.timeouts()
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
        assert_eq!(
            c.redis_timeouts().response,
            std::time::Duration::from_millis(1500)
        );
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
            redis: RedisConfig {
                wait_replicas: Some(1),
                ..RedisConfig::default()
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
