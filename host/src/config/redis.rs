//! `[redis]`: the checks of its settings (`redis_link::RedisConfig`), which serde cannot make.

use redis::IntoConnectionInfo as _;

use super::ConfigError;
use crate::redis_link::{RedisConfig, split_host_port};

impl RedisConfig {
    /// Checks what serde cannot.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message,
            })
        };
        if let Err(e) = self.url.as_str().into_connection_info() {
            return invalid("redis.url", format!("not a Redis URL: {e}"));
        }
        if self.url.contains("#insecure") {
            return invalid(
                "redis.url",
                "`#insecure` is not read from the URL: set [redis] danger_accept_invalid_certs \
                 = true, if you truly mean to skip verification"
                    .into(),
            );
        }
        for (key, value) in [
            ("redis.connect_timeout_ms", self.connect_timeout_ms),
            ("redis.response_timeout_ms", self.response_timeout_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return invalid(key, format!("must be 1..=600000, not {value}"));
            }
        }
        if !self.is_tls() {
            for (key, value) in [
                ("redis.ca_file", !self.ca_file.is_empty()),
                ("redis.cert_file", !self.cert_file.is_empty()),
                ("redis.key_file", !self.key_file.is_empty()),
                (
                    "redis.danger_accept_invalid_certs",
                    self.danger_accept_invalid_certs,
                ),
            ] {
                if value {
                    return invalid(
                        key,
                        "applies to TLS only: the URL must start with rediss://".into(),
                    );
                }
            }
        } else if !cfg!(feature = "tls") {
            return invalid(
                "redis.url",
                "this build has no TLS (the `tls` cargo feature is off)".into(),
            );
        }
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return invalid(
                "redis.cert_file",
                "a client certificate needs both cert_file and key_file".into(),
            );
        }
        if self.sentinels.is_empty() {
            if !self.master_name.is_empty() || !self.sentinel_password.is_empty() {
                return invalid(
                    "redis.master_name",
                    "applies to Redis Sentinel only: set [redis] sentinels too".into(),
                );
            }
        } else {
            if self.url.starts_with("unix://") {
                return invalid(
                    "redis.url",
                    "with sentinels the URL gives scheme, credentials and database: use \
                     redis:// or rediss://"
                        .into(),
                );
            }
            if self.master_name.is_empty() {
                return invalid(
                    "redis.master_name",
                    "sentinels need the name they monitor the primary by (`mymaster`)".into(),
                );
            }
            if self.sentinels.len() > 32 {
                return invalid("redis.sentinels", "at most 32".into());
            }
            for s in &self.sentinels {
                if split_host_port(s).is_none() {
                    return invalid(
                        "redis.sentinels",
                        format!("{s:?} is not host:port (e.g. 10.0.0.7:26379)"),
                    );
                }
            }
        }
        if let Some(n) = self.wait_replicas
            && n > 16
        {
            return invalid("redis.wait_replicas", format!("must be 0..=16, not {n}"));
        }
        if !(1..=60_000).contains(&self.wait_timeout_ms) {
            return invalid(
                "redis.wait_timeout_ms",
                format!("must be 1..=60000, not {}", self.wait_timeout_ms),
            );
        }
        if self.replicas_to_wait_for() > 0 && self.wait_timeout_ms >= self.response_timeout_ms {
            return invalid(
                "redis.wait_timeout_ms",
                format!(
                    "must be below redis.response_timeout_ms ({}), or the connection gives up \
                     before the WAIT answers",
                    self.response_timeout_ms
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(c: RedisConfig) -> String {
        match c.validate() {
            Ok(()) => panic!("accepted {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_sentinel_and_wait_settings_are_checked_with_the_key_named() {
        let tls = || RedisConfig {
            url: "rediss://redis.example:6380/0".into(),
            ..RedisConfig::default()
        };
        assert!(tls().validate().is_ok());
        assert!(tls().is_tls());
        let e = refused(RedisConfig {
            url: "rediss://redis.example:6380/0#insecure".into(),
            ..RedisConfig::default()
        });
        assert!(e.contains("danger_accept_invalid_certs"), "{e}");
        let e = refused(RedisConfig {
            ca_file: "/etc/ca.pem".into(),
            ..RedisConfig::default()
        });
        assert!(
            e.starts_with("redis.ca_file") && e.contains("rediss://"),
            "{e}"
        );
        let e = refused(RedisConfig {
            cert_file: "/etc/client.pem".into(),
            ..tls()
        });
        assert!(e.contains("key_file"), "{e}");

        let sentinel = || RedisConfig {
            sentinels: vec!["10.0.0.7:26379".into(), "[::1]:26379".into()],
            master_name: "mymaster".into(),
            ..RedisConfig::default()
        };
        assert!(sentinel().validate().is_ok());
        assert_eq!(sentinel().replicas_to_wait_for(), 1);
        assert_eq!(RedisConfig::default().replicas_to_wait_for(), 0);
        let e = refused(RedisConfig {
            master_name: String::new(),
            ..sentinel()
        });
        assert!(e.starts_with("redis.master_name"), "{e}");
        let e = refused(RedisConfig {
            sentinels: vec!["10.0.0.7".into()],
            ..sentinel()
        });
        assert!(e.contains("host:port"), "{e}");
        let e = refused(RedisConfig {
            master_name: "mymaster".into(),
            ..RedisConfig::default()
        });
        assert!(e.contains("sentinels"), "{e}");
        let e = refused(RedisConfig {
            wait_timeout_ms: 5_000,
            ..sentinel()
        });
        assert!(e.starts_with("redis.wait_timeout_ms"), "{e}");
        let e = refused(RedisConfig {
            wait_replicas: Some(17),
            ..RedisConfig::default()
        });
        assert!(e.starts_with("redis.wait_replicas"), "{e}");
    }

    #[test]
    fn host_port_pairs() {
        assert_eq!(
            split_host_port("10.0.0.7:26379"),
            Some(("10.0.0.7".into(), 26379))
        );
        assert_eq!(split_host_port("[::1]:26379"), Some(("::1".into(), 26379)));
        assert_eq!(split_host_port("sentinel:0"), None);
        assert_eq!(split_host_port(":26379"), None);
        assert_eq!(split_host_port("host"), None);
    }
}
