//! The policy registry: uploaded policies and the bindings that say which one judges which
//! job type (docs/policies.md), shared by every instance through Redis, swapped without a restart.
//!
//! - `store` keeps policies and bindings in Redis and changes bindings atomically with their
//!   revision, history and audit record;
//! - `pattern` resolves a job type to the most specific binding;
//! - [`Registry`] holds this instance's live [`Table`]: compiled policies by pattern. It is
//!   rebuilt off the request path when a change is announced (or the periodic revision check
//!   finds one missed) and swapped in one step; a table that fails to build is not swapped in,
//!   the last good one stays and the error shows in `/readyz` and the metrics.
//!
//! Callers take one [`Table`] snapshot per job decision (`Registry::table`), so a decision
//! never mixes two revisions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::policy::{Digest, LoadError, Params, Policy, PolicyEngine};
use crate::redis_error::RedisError;

mod bindings;
pub mod pattern;
mod policies;
pub mod store;
mod table;

use policies::Compiled;
pub use policies::{SettingsChange, SettingsChanged, Upload, Uploaded};
pub use table::{ActiveBinding, Bound, Table, params_json};

pub use pattern::{Pattern, Resolver};
pub use store::{
    BindingSpec, ChangeResult, Difference, PolicyMeta, PolicyRecord, PolicyRef, PolicySettings,
    Store, StoredBinding,
};

/// Why a registry operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad input: the message says what to change (HTTP 4xx).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Refused because of the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    #[error("the policy was rejected: {0}")]
    Rejected(#[from] LoadError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the policy engine failed: {0}")]
    Engine(String),
}

/// How the last attempt to build the table went (for `/readyz` and metrics).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SwapStatus {
    /// The revision the live table is at.
    pub revision: u64,
    /// The newest revision seen in Redis.
    pub latest_seen: u64,
    /// Why the newest revision could not be swapped in (`None`: the table is current).
    pub error: Option<String>,
    /// Swaps done since start.
    pub swaps: u64,
}

/// This instance's view of the registry.
pub struct Registry {
    store: Store,
    engine: Arc<PolicyEngine>,
    builtin: Arc<Policy>,
    table: RwLock<Arc<Table>>,
    /// Compiled policies by digest, each with the settings it was loaded with: a policy is
    /// compiled once per process, and loaded again when its stored settings change.
    compiled: Mutex<HashMap<Digest, Compiled>>,
    status: Mutex<SwapStatus>,
    /// Serializes rebuilds: one at a time, the newest wins.
    rebuild: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("revision", &self.table().revision)
            .finish_non_exhaustive()
    }
}

/// How often `watch` tries to subscribe again while it cannot.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

/// The name the built-in default policy is listed under.
pub const BUILTIN_NAME: &str = "builtin-default";

/// The largest policy upload accepted, bytes (the engine's own cap may be lower).
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;

impl Registry {
    /// The registry over `store`, with the built-in default policy; `start` makes it live.
    pub fn new(
        store: Store,
        engine: Arc<PolicyEngine>,
        builtin: Arc<Policy>,
        params: Params,
    ) -> Self {
        let table = Arc::new(Table::single(Arc::clone(&builtin), params));
        let mut compiled = HashMap::new();
        compiled.insert(
            builtin.digest(),
            Compiled::new(Arc::clone(&builtin), builtin.uses_wasi()),
        );
        Self {
            store,
            engine,
            builtin,
            table: RwLock::new(table),
            compiled: Mutex::new(compiled),
            status: Mutex::new(SwapStatus::default()),
            rebuild: tokio::sync::Mutex::new(()),
        }
    }

    /// The live table: one snapshot per decision.
    pub fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn builtin(&self) -> &Arc<Policy> {
        &self.builtin
    }

    pub fn status(&self) -> SwapStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stores the built-in policy (so it is listed and can be bound by digest) and seeds the
    /// `*` binding with it and `seed_params` when nothing binds `*` yet; then builds the table.
    /// Returns a warning when the stored `*` params differ from `seed_params`.
    pub async fn start(
        &self,
        seed_params: &Params,
        now_ms: u64,
    ) -> Result<Option<String>, RegistryError> {
        let builtin_meta = self.meta_of(
            &self.builtin,
            BUILTIN_NAME,
            "the built-in default policy",
            "builtin",
            false,
            now_ms,
        );
        // Stored once, by the first instance to start; never rewritten.
        self.store
            .add_policy(&builtin_meta, crate::policy::builtin::DEFAULT_POLICY)
            .await?;
        let spec = BindingSpec::of(PolicyRef {
            policy: builtin_meta.digest.clone(),
            params: seed_params.clone(),
        });
        self.store
            .change_binding(
                "*",
                Some(&spec),
                store::Change::Set,
                "system",
                now_ms,
                store::Condition::Unbound,
            )
            .await?;
        self.refresh().await?;
        let snapshot = self.store.bindings().await?;
        let warning = snapshot
            .bindings
            .iter()
            .find(|b| b.pattern == "*")
            .filter(|b| {
                let mut a = b.spec.active.params.clone();
                let mut c = seed_params.clone();
                a.sort();
                c.sort();
                a != c
            })
            .map(|b| {
                format!(
                    "the `*` binding in Redis has params {} but [retry] in the config says {}: \
                     the bindings in Redis are what every instance uses (change them with \
                     PUT /api/v1/policies/bindings/*)",
                    params_json(&b.spec.active.params),
                    params_json(seed_params)
                )
            });
        Ok(warning)
    }

    /// Rebuilds the table from Redis when its revision moved; keeps the last good table when
    /// the new one fails to build.
    pub async fn refresh(&self) -> Result<(), RegistryError> {
        let _one_at_a_time = self.rebuild.lock().await;
        let snapshot = self.store.bindings().await?;
        if let Ok(mut s) = self.status.lock() {
            s.latest_seen = s.latest_seen.max(snapshot.revision);
        }
        if snapshot.revision == self.table().revision && snapshot.revision != 0 {
            return Ok(());
        }
        match self.build(&snapshot).await {
            Ok(table) => {
                let revision = table.revision;
                if let Ok(mut t) = self.table.write() {
                    *t = Arc::new(table);
                }
                if let Ok(mut s) = self.status.lock() {
                    s.revision = revision;
                    s.error = None;
                    s.swaps += 1;
                }
                crate::metrics::global().bindings_swapped(revision);
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "bindings revision {} not swapped in: {e}",
                    snapshot.revision
                );
                tracing::error!(error = %message, "keeping the last good bindings table");
                if let Ok(mut s) = self.status.lock() {
                    s.error = Some(message);
                }
                crate::metrics::global().bindings_swap_failed();
                Err(e)
            }
        }
    }

    async fn build(&self, snapshot: &store::BindingsSnapshot) -> Result<Table, RegistryError> {
        let mut entries = Vec::with_capacity(snapshot.bindings.len());
        let mut fallback = None;
        for b in &snapshot.bindings {
            let pattern = Pattern::parse(&b.pattern).map_err(RegistryError::Invalid)?;
            let active = Bound::new(
                self.compiled(&b.spec.active.policy).await?,
                b.spec.active.params.clone(),
            );
            let shadow = match &b.spec.shadow {
                Some(s) => Some(Bound::new(
                    self.compiled(&s.policy).await?,
                    s.params.clone(),
                )),
                None => None,
            };
            let binding = Arc::new(ActiveBinding {
                pattern: b.pattern.clone(),
                active,
                shadow,
                brakes: b.spec.brakes(),
            });
            if pattern == Pattern::Any {
                fallback = Some(Arc::clone(&binding));
            }
            entries.push((pattern, binding));
        }
        let fallback = match fallback {
            Some(f) => f,
            None => Arc::new(ActiveBinding {
                pattern: "*".into(),
                active: Bound::new(Arc::clone(&self.builtin), Params::new()),
                shadow: None,
                brakes: crate::brake::Brakes::default(),
            }),
        };
        Ok(Table::new(snapshot.revision, entries, fallback))
    }

    /// Compiles every stored policy that is not retired and not compiled yet, one at a time
    /// (errors only logged): an instance that starts after an upload is as ready to bind it
    /// as one that heard the announcement. With the compiled-policy cache this is a load
    /// from disk, not a compile. Returns how many policies are compiled when it is done.
    pub async fn warm(&self) -> usize {
        let stored = match self.store.policies().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the stored policies to compile them");
                return 0;
            }
        };
        for meta in stored.iter().filter(|m| !m.retired) {
            self.precompile(&meta.digest).await;
        }
        self.compiled.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Compiles an announced upload ahead of any binding (errors only logged: the bind
    /// that needs it reports them).
    async fn precompile(&self, digest: &str) {
        if let Err(e) = self.compiled(digest).await {
            tracing::warn!(%digest, error = %e, "an announced policy did not compile here");
        }
    }

    /// Follows announcements until `shutdown` resolves: a binding change rebuilds the table, an
    /// upload is compiled ahead; every `check_every` the revision is compared, covering
    /// missed messages and a lost pub/sub connection. The subscription is made on the store's
    /// current Redis each time, so it follows a Sentinel failover.
    pub async fn watch(
        self: Arc<Self>,
        check_every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut shutdown = shutdown;
        loop {
            let client = self.store.connection().client();
            let mut pubsub = match client.get_async_pubsub().await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "no pub/sub connection for policy announcements; polling the revision");
                    None
                }
            };
            if let Some(p) = pubsub.as_mut()
                && let Err(e) = p.subscribe(crate::keyspace::POLICY_EVENTS).await
            {
                tracing::warn!(error = %e, "subscribing to policy announcements failed; polling the revision");
                pubsub = None;
            }
            let mut ticker = tokio::time::interval(check_every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let message = async {
                    match pubsub.as_mut() {
                        Some(p) => p
                            .on_message()
                            .next()
                            .await
                            .map(|m| m.get_payload::<String>().unwrap_or_default()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = ticker.tick() => {
                        if let Err(e) = self.refresh_if_moved().await {
                            tracing::warn!(error = %e, "bindings revision check failed");
                        }
                        // No subscription (Redis was down when it was made): try again.
                        if pubsub.is_none() {
                            break;
                        }
                    }
                    m = message => match m {
                        Some(payload) => self.on_event(&payload).await,
                        // The connection dropped: subscribe again.
                        None => break,
                    },
                }
            }
            // A dropped subscription is made again soon; a failed one (Redis down) every
            // second at most, so announcements work again soon after Redis is back.
            let pause = if pubsub.is_some() {
                Duration::from_millis(200)
            } else {
                check_every.min(RESUBSCRIBE_EVERY)
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn refresh_if_moved(&self) -> Result<(), RegistryError> {
        let revision = self.store.revision().await?;
        if revision != self.table().revision || self.status().error.is_some() {
            self.refresh().await?;
        }
        Ok(())
    }

    async fn on_event(&self, payload: &str) {
        #[derive(serde::Deserialize)]
        struct Event {
            kind: String,
            digest: Option<String>,
        }
        match serde_json::from_str::<Event>(payload) {
            Ok(e) if e.kind == "policy" => {
                if let Some(d) = e.digest {
                    self.precompile(&d).await;
                }
            }
            Ok(_) => {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "rebuilding the bindings table failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, payload, "unreadable policy announcement"),
        }
    }
}
