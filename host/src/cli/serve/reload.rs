//! What `serve` reloads without a restart: the bearer tokens of `[auth]` (the whole
//! configuration is read again, file and environment, exactly as at start, and only the
//! tokens are applied) and the `[tls]` certificate. Both on SIGHUP, and when their files
//! change: their modification times and sizes are looked at every [`POLL`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::https::CertResolver;
use crate::auth::{Auth, Replaced};
use crate::config::Config;

/// How often the files' modification times are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// A file's modification time and size (`None`: it cannot be read now).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The reloader of one `serve`.
pub struct Reloader {
    /// `--config` as given (`None`: `./retryguard.toml` when it exists), read as at start.
    pub config_arg: Option<PathBuf>,
    /// The configuration `serve` started with: keys other than the tokens that differ from
    /// it are named in the log (they need a restart).
    pub started: Arc<Config>,
    pub auth: Arc<Auth>,
    pub certs: Option<Arc<CertResolver>>,
}

impl Reloader {
    /// Runs until `stop` turns true. `hangup` is the SIGHUP stream, registered before the
    /// server announced itself (so a SIGHUP never kills it).
    pub async fn run(
        self,
        mut hangup: Option<tokio::signal::unix::Signal>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let config_file = self
            .config_arg
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
        let cert_files: Vec<PathBuf> = self
            .certs
            .iter()
            .flat_map(|c| c.files())
            .map(PathBuf::from)
            .collect();
        let mut config_stamp = stamp(&config_file);
        let mut cert_stamps: Vec<Stamp> = cert_files.iter().map(|p| stamp(p)).collect();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = hup => {
                    tracing::info!("SIGHUP: reading the configuration and the certificate again");
                    config_stamp = stamp(&config_file);
                    cert_stamps = cert_files.iter().map(|p| stamp(p)).collect();
                    self.reload_tokens("SIGHUP");
                    self.reload_certs("SIGHUP");
                }
                _ = tick.tick() => {
                    let now = stamp(&config_file);
                    if now != config_stamp {
                        config_stamp = now;
                        self.reload_tokens("the config file changed");
                    }
                    let now: Vec<Stamp> = cert_files.iter().map(|p| stamp(p)).collect();
                    if now != cert_stamps {
                        cert_stamps = now;
                        self.reload_certs("the certificate files changed");
                    }
                }
            }
        }
    }

    /// Reads the configuration as at start and applies its tokens.
    fn reload_tokens(&self, why: &str) {
        let config = match Config::load(self.config_arg.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    reason = why,
                    error = %e,
                    "configuration reload failed: the tokens in use stay until it is fixed"
                );
                return;
            }
        };
        let others = changed_keys(&self.started, &config);
        if !others.is_empty() {
            tracing::warn!(
                keys = %others.join(", "),
                "configuration reload: only [auth] tokens apply without a restart; these changed \
                 keys take effect at the next start"
            );
        }
        match self.auth.replace(&config.auth.tokens) {
            Replaced::Unchanged => {
                tracing::info!(
                    reason = why,
                    "configuration reload: the tokens are unchanged"
                );
            }
            Replaced::NeedsRestart => tracing::warn!(
                reason = why,
                "configuration reload: [auth] tokens were added to a server started without \
                 tokens (open to loopback callers); they apply at the next start"
            ),
            Replaced::Changed { added, removed } => {
                tracing::info!(
                    reason = why,
                    added = %added.join(", "),
                    removed = %removed.join(", "),
                    tokens = self.auth.len(),
                    "configuration reload: the [auth] tokens changed"
                );
                if self.auth.is_empty() {
                    tracing::error!(
                        "configuration reload: no [auth] tokens are left: every request that \
                         needs one is refused (401) until tokens are added again"
                    );
                }
            }
        }
    }

    fn reload_certs(&self, why: &str) {
        let Some(certs) = &self.certs else {
            return;
        };
        match certs.reload() {
            Ok(()) => tracing::info!(
                reason = why,
                cert_file = certs.files()[0],
                "tls: certificate reloaded; new connections get it"
            ),
            Err(e) => tracing::error!(
                reason = why,
                error = %e,
                "tls: certificate reload failed; the certificate in use stays"
            ),
        }
    }
}

/// `section.key` of every key whose value differs between `a` and `b`, but the tokens.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
    let (a, b) = (table(a), table(b));
    let mut changed = Vec::new();
    let sections: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for section in sections {
        let empty = toml::Table::new();
        let sa = a.get(section).and_then(|v| v.as_table()).unwrap_or(&empty);
        let sb = b.get(section).and_then(|v| v.as_table()).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
        for key in keys {
            if section == "auth" && key == "tokens" {
                continue;
            }
            if sa.get(key) != sb.get(key) {
                changed.push(format!("{section}.{key}"));
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_all_but_the_tokens() {
        let a = Config::default();
        let mut b = Config::default();
        b.auth.tokens = vec!["x:read:00".into()];
        assert!(changed_keys(&a, &b).is_empty());
        b.server.listen = "127.0.0.1:1".into();
        b.retry.max_attempts = Some(9);
        assert_eq!(
            changed_keys(&a, &b),
            vec![
                "retry.max_attempts".to_string(),
                "server.listen".to_string()
            ]
        );
    }
}
