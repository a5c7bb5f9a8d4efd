//! The environment layer of the configuration: `RETRYGUARD_<SECTION>_<KEY>` (and the
//! shorthands) over the file's table, each variable read as its key's type.

use super::{ConfigError, ENV_PREFIX};

/// Top-level shorthands: `RETRYGUARD_LISTEN` is `[server] listen`. (`RETRYGUARD_REDIS_URL`
/// is `[redis] url` by the general rule.)
const SHORTHANDS: &[(&str, &str, &str)] = &[
    ("LISTEN", "server", "listen"),
    ("AUDIT_DIR", "audit", "path"),
];

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
    ("redis", "password_file", Kind::Text),
    ("redis", "ca_file", Kind::Text),
    ("redis", "cert_file", Kind::Text),
    ("redis", "key_file", Kind::Text),
    ("redis", "danger_accept_invalid_certs", Kind::Bool),
    ("redis", "sentinels", Kind::List),
    ("redis", "master_name", Kind::Text),
    ("redis", "sentinel_password", Kind::Text),
    ("redis", "wait_replicas", Kind::Integer),
    ("redis", "wait_timeout_ms", Kind::Integer),
    ("server", "listen", Kind::Text),
    ("server", "allowed_hosts", Kind::List),
    ("server", "request_timeout_seconds", Kind::Integer),
    ("server", "body_limit_bytes", Kind::Integer),
    ("server", "retry_all_wait_seconds", Kind::Integer),
    ("server", "max_concurrent_retry_all", Kind::Integer),
    ("server", "public_url", Kind::Text),
    ("retry", "max_attempts", Kind::Integer),
    ("retry", "cooldown_seconds", Kind::Integer),
    ("retry", "exponential_backoff", Kind::Bool),
    ("retry", "max_cooldown_seconds", Kind::Integer),
    ("retry", "retry_unknown", Kind::Bool),
    ("policy", "fuel", Kind::Integer),
    ("policy", "deadline_ms", Kind::Integer),
    ("policy", "memory_bytes", Kind::Integer),
    ("policy", "cache_dir", Kind::Text),
    ("audit", "url", Kind::Text),
    ("audit", "path", Kind::Text),
    ("audit", "writer", Kind::Bool),
    ("audit", "flush_interval_ms", Kind::Integer),
    ("audit", "batch_size", Kind::Integer),
    ("audit", "retention_days", Kind::Integer),
    ("audit", "lease_ttl_seconds", Kind::Integer),
    ("audit", "max_lag_seconds", Kind::Integer),
    ("triage", "reconciler", Kind::Bool),
    ("triage", "interval_ms", Kind::Integer),
    ("triage", "lease_ttl_seconds", Kind::Integer),
    ("triage", "full_pass_every_ms", Kind::Integer),
    ("auto_retry", "enabled", Kind::Bool),
    ("auto_retry", "batch_size", Kind::Integer),
    ("auto_retry", "interval_ms", Kind::Integer),
    ("auto_retry", "lease_ttl_seconds", Kind::Integer),
    ("auto_retry", "jitter_ms", Kind::Integer),
    ("ui", "enabled", Kind::Bool),
    ("ui", "show_job_args", Kind::Bool),
    ("ui", "session_idle_minutes", Kind::Integer),
    ("ui", "session_max_hours", Kind::Integer),
    ("guard", "ttl_seconds", Kind::Integer),
    ("guard", "default_lease_seconds", Kind::Integer),
    ("guard", "max_lease_seconds", Kind::Integer),
    ("guard", "max_result_bytes", Kind::Integer),
    ("auth", "tokens", Kind::List),
    ("auth", "protect_metrics", Kind::Bool),
    ("tls", "cert_file", Kind::Text),
    ("tls", "key_file", Kind::Text),
];

/// The environment variable of a key: `RETRYGUARD_SERVER_LISTEN`.
pub fn env_var(section: &str, key: &str) -> String {
    format!("{ENV_PREFIX}{}_{}", section, key).to_ascii_uppercase()
}

/// Writes `RETRYGUARD_<SECTION>_<KEY>` (and the shorthands) into `table`. A variable of a
/// known section with an unknown key is an error; other `RETRYGUARD_*` variables (such as
/// `RETRYGUARD_CONFIG` or `RETRYGUARD_LOG`) are not configuration keys and are left alone.
/// An empty value counts as unset.
pub(super) fn apply_env(
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
                "redis",
                "server",
                "retry",
                "policy",
                "audit",
                "triage",
                "auto_retry",
                "ui",
                "guard",
                "auth",
                "tls",
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
