//! `Link`: the one way every long-lived Redis connection is made and kept — plain, over TLS
//! (`rediss://`, with a private CA or a client certificate), or through Redis Sentinel.
//!
//! A `Link` is a [`ConnectionManager`] (one multiplexed connection that reconnects by itself)
//! that also knows *where* Redis is. redis-rs's manager reconnects to the address it was
//! built with (redis-rs #1438), which after a Sentinel failover is the old primary: dead, or
//! back as a read-only replica. So a `Link` asks the sentinels again when a call fails for
//! want of a primary (connection lost, `READONLY`, `MASTERDOWN`), and every second besides,
//! and moves every clone of itself to the new primary; it re-reads `[redis] password_file`
//! the same way, so a rotated password is picked up at the next reconnect. The failed call
//! still fails — the caller's own handling of an unavailable Redis applies — and the next
//! one goes to the new primary.
//!
//! After each requeue, the queue adapter waits for replicas (`WAIT`, `replication()`), in the
//! same pipeline, so on the same connection, as the requeue scripts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo as _, Pipeline,
    RedisFuture, RedisResult, Value,
};

mod settings;

pub use settings::{RedisConfig, RedisTimeouts, split_host_port};

/// How often a Sentinel link asks where the primary is when nothing failed.
const SENTINEL_POLL: Duration = Duration::from_secs(1);
/// The least time between two look-ups caused by failing calls: a burst of failures during a
/// failover asks the sentinels once, not once per call.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);

/// How many replicas must acknowledge each requeue, and for how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// A connection to the configured Redis that follows it (see the module's doc). Cheap to
/// clone; clones share the connection.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
    /// This clone's copy of the current manager, replaced when `generation` moves on.
    current: ConnectionManager,
    generation: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("target", &self.describe())
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: RedisConfig,
    manager_config: ConnectionManagerConfig,
    generation: AtomicU64,
    state: Mutex<State>,
    /// One look-up at a time; the others wait for its result.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

struct State {
    manager: ConnectionManager,
    target: Target,
}

/// Where the manager connects, and with which password: a look-up that finds the same needs
/// no new connection.
#[derive(Clone)]
struct Target {
    addr: String,
    password: Option<String>,
    client: Client,
}

impl Link {
    /// Connects to the Redis of `config` (asking the sentinels first, when configured). Calls
    /// time out after `[redis] response_timeout_ms` plus `extra` (for a blocking read).
    pub async fn connect(config: &RedisConfig, extra: Duration) -> RedisResult<Self> {
        #[cfg(feature = "tls")]
        if config.is_tls() || !config.sentinels.is_empty() {
            crate::tls::install_crypto_provider();
        }
        let t = config.timeouts();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(Some(t.response + extra))
            .set_number_of_retries(1);
        let target = resolve(config).await?;
        let manager = open(&target, &manager_config, t.connect + t.response).await?;
        if config.danger_accept_invalid_certs {
            tracing::warn!(
                "[redis] danger_accept_invalid_certs: the Redis server's certificate is NOT verified; anyone on the network path can read and change the queue"
            );
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            manager_config,
            generation: AtomicU64::new(0),
            state: Mutex::new(State {
                manager: manager.clone(),
                target,
            }),
            refreshing: tokio::sync::Mutex::new(None),
        });
        if !config.sentinels.is_empty() {
            tokio::spawn(poll_sentinels(Arc::downgrade(&shared)));
        }
        Ok(Self {
            shared,
            current: manager,
            generation: 0,
        })
    }

    /// A client for the current primary: for connections a `Link` does not hold, such as
    /// pub/sub (make a new one at each reconnect, so it follows a failover too).
    pub fn client(&self) -> Client {
        self.shared.lock().target.client.clone()
    }

    /// What each requeue waits for, if anything (`[redis] wait_replicas`).
    pub fn replication(&self) -> Option<Replication> {
        let c = &self.shared.config;
        let replicas = c.replicas_to_wait_for();
        (replicas > 0).then_some(Replication {
            replicas,
            timeout_ms: c.wait_timeout_ms,
        })
    }

    /// The current target, for logs and `/readyz`: `host:port`, and the master name when the
    /// sentinels chose it. Never a password.
    pub fn describe(&self) -> String {
        let addr = self.shared.lock().target.addr.clone();
        if self.shared.config.sentinels.is_empty() {
            addr
        } else {
            format!("{addr} (primary of {:?})", self.shared.config.master_name)
        }
    }

    /// Takes the manager a look-up installed since this clone last looked.
    fn sync(&mut self) {
        let now = self.shared.generation.load(Ordering::Acquire);
        if now != self.generation {
            let state = self.shared.lock();
            self.current = state.manager.clone();
            self.generation = self.shared.generation.load(Ordering::Acquire);
        }
    }

    async fn after_error(&mut self, e: &redis::RedisError) {
        if self.shared.follows() && wants_new_target(e) {
            self.shared.refresh(false).await;
            self.sync();
        }
    }

    async fn after_values(&mut self, values: &[Value]) {
        let read_only = values.iter().any(
            |v| matches!(v, Value::ServerError(e) if matches!(e.code(), "READONLY" | "MASTERDOWN")),
        );
        if read_only && self.shared.follows() {
            self.shared.refresh(false).await;
            self.sync();
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.sync();
            let result = self.current.req_packed_command(cmd).await;
            match &result {
                Err(e) => self.after_error(e).await,
                Ok(Value::ServerError(e)) if matches!(e.code(), "READONLY" | "MASTERDOWN") => {
                    self.after_values(&[]).await;
                }
                Ok(_) => {}
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.sync();
            let result = self
                .current
                .req_packed_commands(pipeline, offset, count)
                .await;
            match &result {
                Err(e) => self.after_error(e).await,
                Ok(values) => self.after_values(values).await,
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current.get_db()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it cannot leave the state half-written (it is replaced
        // whole), so a poisoned lock is still good.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the target can move: sentinels, or a password file.
    fn follows(&self) -> bool {
        !self.config.sentinels.is_empty() || !self.config.password_file.is_empty()
    }

    /// Looks the target up again and, when it moved, connects there and hands the new
    /// connection to every clone. `poll`: the periodic check (not rate-limited by failures).
    async fn refresh(&self, poll: bool) {
        let mut last = self.refreshing.lock().await;
        if !poll && last.is_some_and(|at| at.elapsed() < MIN_REFRESH_GAP) {
            return;
        }
        *last = Some(Instant::now());
        let target = match resolve(&self.config).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "looking up the Redis primary failed; keeping the current connection");
                return;
            }
        };
        let (old_addr, same) = {
            let state = self.lock();
            let same = state.target.addr == target.addr && state.target.password == target.password;
            (state.target.addr.clone(), same)
        };
        if same {
            return;
        }
        let t = self.config.timeouts();
        match open(&target, &self.manager_config, t.connect + t.response).await {
            Ok(manager) => {
                tracing::warn!(from = %old_addr, to = %target.addr, "Redis primary moved (or its password changed): reconnected");
                crate::metrics::global().redis_failover();
                {
                    let mut state = self.lock();
                    *state = State { manager, target };
                }
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(to = %target.addr, error = %e, "connecting to the new Redis primary failed; will try again");
            }
        }
    }
}

/// Every `SENTINEL_POLL`, asks the sentinels where the primary is, until the link is gone.
async fn poll_sentinels(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SENTINEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.refresh(true).await;
    }
}

/// Whether a failed call means the connection may point at the wrong place (or with a stale
/// password).
fn wants_new_target(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("READONLY" | "MASTERDOWN" | "NOAUTH" | "WRONGPASS")
        )
}

/// Connects a manager and checks the server is a primary (a sentinel's answer may be stale
/// by a moment during a failover).
async fn open(
    target: &Target,
    config: &ConnectionManagerConfig,
    limit: Duration,
) -> RedisResult<ConnectionManager> {
    let mut manager = tokio::time::timeout(
        limit,
        ConnectionManager::new_with_config(target.client.clone(), config.clone()),
    )
    .await
    .map_err(|_| {
        redis::RedisError::from((ErrorKind::Io, "connecting timed out", target.addr.clone()))
    })??;
    let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut manager).await?;
    let is_primary = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master");
    if !is_primary {
        return Err(redis::RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "not a primary (ROLE)",
            target.addr.clone(),
        )));
    }
    Ok(manager)
}

/// Where to connect now: the URL's server, or the primary the sentinels name; with the
/// password file's current content.
async fn resolve(config: &RedisConfig) -> RedisResult<Target> {
    let mut info = config.url.as_str().into_connection_info()?;
    let password = read_password(config)?;
    if let Some(p) = &password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    if !config.sentinels.is_empty() {
        let (host, port) = primary_from_sentinels(config).await?;
        info = info.set_addr(tcp_addr(config, host, port));
    }
    let addr = match info.addr() {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    };
    Ok(Target {
        addr,
        password: password.or_else(|| info.redis_settings().password().map(str::to_owned)),
        client: client_for(config, info)?,
    })
}

/// `[redis] password_file`'s first line, if configured.
fn read_password(config: &RedisConfig) -> RedisResult<Option<String>> {
    if config.password_file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&config.password_file).map_err(|e| {
        redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "[redis] password_file cannot be read",
            format!("{}: {e}", config.password_file),
        ))
    })?;
    Ok(Some(text.lines().next().unwrap_or("").to_owned()))
}

/// A TCP address with the URL's TLS choice.
fn tcp_addr(config: &RedisConfig, host: String, port: u16) -> ConnectionAddr {
    if config.is_tls() {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: config.danger_accept_invalid_certs,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

/// A client for `info`, with the CA and client certificate of `[redis]` when it is TLS.
fn client_for(config: &RedisConfig, info: ConnectionInfo) -> RedisResult<Client> {
    if !config.is_tls() {
        return Client::open(info);
    }
    #[cfg(feature = "tls")]
    {
        let mut info = info;
        if config.danger_accept_invalid_certs
            && let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone()
        {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: true,
                tls_params: None,
            });
        }
        let pem = |setting: &'static str, path: &str| {
            crate::tls::read_pem(setting, path).map_err(|e| {
                redis::RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a TLS file of [redis]",
                    e.to_string(),
                ))
            })
        };
        let root_cert = match config.ca_file.as_str() {
            "" => None,
            path => Some(pem("redis.ca_file", path)?),
        };
        let client_tls = if config.cert_file.is_empty() {
            None
        } else {
            Some(redis::ClientTlsConfig {
                client_cert: pem("redis.cert_file", &config.cert_file)?,
                client_key: pem("redis.key_file", &config.key_file)?,
            })
        };
        Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = info;
        Err(redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "this build has no TLS (the `tls` cargo feature is off)",
        )))
    }
}

/// Asks each sentinel in turn for the primary's address; the first answer wins.
async fn primary_from_sentinels(config: &RedisConfig) -> RedisResult<(String, u16)> {
    let t = config.timeouts();
    let mut failures = Vec::new();
    for sentinel in &config.sentinels {
        let Some((host, port)) = split_host_port(sentinel) else {
            continue;
        };
        let mut redis_settings = redis::RedisConnectionInfo::default();
        if !config.sentinel_password.is_empty() {
            redis_settings = redis_settings.set_password(&config.sentinel_password);
        }
        let asked = async {
            let info = tcp_addr(config, host, port)
                .into_connection_info()?
                .set_redis_settings(redis_settings);
            let client = client_for(config, info)?;
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(Some(t.response));
            let mut con = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&config.master_name)
                .query_async::<Option<(String, u16)>>(&mut con)
                .await
        };
        match tokio::time::timeout(t.connect + t.response, asked).await {
            Ok(Ok(Some(addr))) => return Ok(addr),
            Ok(Ok(None)) => failures.push(format!(
                "{sentinel}: does not monitor {:?}",
                config.master_name
            )),
            Ok(Err(e)) => failures.push(format!("{sentinel}: {e}")),
            Err(_) => failures.push(format!("{sentinel}: timed out")),
        }
    }
    Err(redis::RedisError::from((
        ErrorKind::Io,
        "no sentinel named the primary",
        failures.join("; "),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_of_a_moved_primary_ask_again() {
        let readonly = redis::RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "READONLY You can't write against a read only replica.",
        ));
        assert!(wants_new_target(&readonly));
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(wants_new_target(&io));
        let script = redis::RedisError::from((ErrorKind::Client, "bad reply"));
        assert!(!wants_new_target(&script));
    }
}
