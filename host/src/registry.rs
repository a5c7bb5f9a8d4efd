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

use crate::policy::{
    Digest, LoadError, LoadOptions, Params, Policy, PolicyEngine, PolicyLimits, WORLD,
};
use crate::queue::QueueError;

pub mod experiments;
pub mod pattern;
pub mod store;

pub use pattern::{Pattern, Resolver};
pub use store::{
    BindingSpec, ChangeResult, Difference, PolicyMeta, PolicyRecord, PolicyRef, PolicySettings,
    Store, StoredBinding,
};

/// A policy with its params, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Bound {
    pub policy: Arc<Policy>,
    pub params: Params,
    /// The params as the JSON object audit records carry.
    pub params_json: String,
}

impl Bound {
    pub fn new(policy: Arc<Policy>, params: Params) -> Self {
        let params_json = params_json(&params);
        Self {
            policy,
            params,
            params_json,
        }
    }
}

/// Params as a JSON object, keys sorted.
pub fn params_json(params: &Params) -> String {
    let map: std::collections::BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// One binding of the live table.
#[derive(Debug, Clone)]
pub struct ActiveBinding {
    /// The pattern as written (`*`, `payments.*`, `app.tasks.charge_card`).
    pub pattern: String,
    pub active: Bound,
    /// Evaluated beside `active` on every decision, never acted on.
    pub shadow: Option<Bound>,
}

/// The bindings of one revision, compiled. Immutable: a change builds a new one.
#[derive(Debug)]
pub struct Table {
    pub revision: u64,
    resolver: Resolver<Arc<ActiveBinding>>,
    /// What a job type no pattern matches gets: the `*` binding, else the built-in default.
    fallback: Arc<ActiveBinding>,
}

impl Table {
    /// A table of one `*` binding (tests, and the CLI's one-policy commands).
    pub fn single(policy: Arc<Policy>, params: Params) -> Self {
        let binding = Arc::new(ActiveBinding {
            pattern: "*".into(),
            active: Bound::new(policy, params),
            shadow: None,
        });
        Self {
            revision: 0,
            resolver: Resolver::new([(Pattern::Any, Arc::clone(&binding))]),
            fallback: binding,
        }
    }

    /// The binding that judges `job_type`.
    pub fn resolve(&self, job_type: &str) -> &Arc<ActiveBinding> {
        self.resolver
            .resolve(job_type)
            .map(|(_, b)| b)
            .unwrap_or(&self.fallback)
    }

    /// The `*` binding (what judges a job whose type is not known, e.g. one not found).
    pub fn default_binding(&self) -> &Arc<ActiveBinding> {
        &self.fallback
    }
}

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
    Queue(#[from] QueueError),
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

/// A compiled policy and the stored settings it was loaded with.
#[derive(Debug, Clone)]
struct Compiled {
    limits: PolicyLimits,
    allow_wasi: bool,
    policy: Arc<Policy>,
}

impl Compiled {
    fn new(policy: Arc<Policy>, allow_wasi: bool) -> Self {
        Self {
            limits: *policy.limits(),
            allow_wasi,
            policy,
        }
    }

    /// Whether it was loaded with the settings `meta` stores now.
    fn matches(&self, meta: &PolicyMeta) -> bool {
        self.limits == meta.limits && self.allow_wasi == meta.allow_wasi
    }
}

/// What an upload did: stored the policy now, or found the same bytes stored already (then
/// nothing changed: `meta` is the stored record, name, uploader and limits as they were).
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub meta: PolicyMeta,
    pub created: bool,
}

/// A change to a stored policy's settings: `None` keeps a field as stored.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub allow_wasi: Option<bool>,
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<usize>,
    pub instances: Option<usize>,
}

impl SettingsChange {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.allow_wasi.is_none()
            && self.fuel.is_none()
            && self.deadline_ms.is_none()
            && self.memory_bytes.is_none()
            && self.instances.is_none()
    }

    fn apply(&self, stored: &PolicySettings) -> PolicySettings {
        let l = stored.limits;
        PolicySettings {
            name: self
                .name
                .as_deref()
                .map_or_else(|| stored.name.clone(), |n| n.trim().to_string()),
            description: self
                .description
                .clone()
                .unwrap_or_else(|| stored.description.clone()),
            allow_wasi: self.allow_wasi.unwrap_or(stored.allow_wasi),
            limits: PolicyLimits {
                fuel: self.fuel.unwrap_or(l.fuel),
                deadline_ms: self.deadline_ms.unwrap_or(l.deadline_ms),
                memory_bytes: self.memory_bytes.unwrap_or(l.memory_bytes),
                instances: self.instances.unwrap_or(l.instances),
                ..l
            },
        }
    }
}

/// What a settings change did.
#[derive(Debug, Clone)]
pub struct SettingsChanged {
    /// The policy as stored now.
    pub meta: PolicyMeta,
    /// The fields that changed (empty: the request asked for what was stored; nothing was
    /// written).
    pub changed: Vec<&'static str>,
    /// The bindings revision the change made (`None` when nothing changed).
    pub revision: Option<u64>,
}

/// Checks a policy's name and description.
fn check_text(name: &str, description: &str) -> Result<(), RegistryError> {
    if name.trim().is_empty() || name.len() > 128 {
        return Err(RegistryError::Invalid(
            "a policy needs a name of 1 to 128 bytes".into(),
        ));
    }
    // A name is shown in tables, logs and the audit trail: a control character (a newline,
    // an escape sequence) would forge lines there.
    if name.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "a policy name may not contain control characters: {name:?}"
        )));
    }
    if description.len() > 4096 {
        return Err(RegistryError::Invalid(
            "a policy description may be at most 4096 bytes".into(),
        ));
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(RegistryError::Invalid(
            "a policy description may not contain control characters but newlines and tabs".into(),
        ));
    }
    Ok(())
}

/// What an upload says about the policy besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub name: String,
    pub description: String,
    pub limits: Option<PolicyLimits>,
    pub allow_wasi: bool,
}

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
        let spec = BindingSpec {
            active: PolicyRef {
                policy: builtin_meta.digest.clone(),
                params: seed_params.clone(),
            },
            shadow: None,
        };
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

    fn meta_of(
        &self,
        policy: &Policy,
        name: &str,
        description: &str,
        uploader: &str,
        allow_wasi: bool,
        now_ms: u64,
    ) -> PolicyMeta {
        PolicyMeta {
            digest: policy.digest().to_string(),
            name: name.to_string(),
            description: description.to_string(),
            uploader: uploader.to_string(),
            uploaded_at_ms: now_ms,
            size: policy.size() as u64,
            world: WORLD.to_string(),
            imports: policy.imports().to_vec(),
            allow_wasi,
            limits: *policy.limits(),
            info: policy.info().clone(),
            retired: false,
        }
    }

    /// The stored policy `digest`, compiled (once) and loaded with the settings stored for
    /// it now: after a settings change it is loaded again with the new ones. The built-in
    /// default is this process's own (its limits are `[policy]` in the config).
    async fn compiled(&self, digest: &str) -> Result<Arc<Policy>, RegistryError> {
        let parsed = Digest::parse(digest).ok_or_else(|| {
            RegistryError::Invalid(format!("`{digest}` is not a policy digest (64 hex digits)"))
        })?;
        if parsed == self.builtin.digest() {
            return Ok(Arc::clone(&self.builtin));
        }
        let meta =
            self.store.policy(digest).await?.ok_or_else(|| {
                RegistryError::NotFound(format!("no policy with digest {digest}"))
            })?;
        if let Some(c) = self
            .compiled
            .lock()
            .ok()
            .and_then(|c| c.get(&parsed).cloned())
            .filter(|c| c.matches(&meta))
        {
            return Ok(c.policy);
        }
        let bytes = self.store.policy_bytes(digest).await?.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "the bytes of policy {digest} are missing from Redis"
            ))
        })?;
        let options = LoadOptions {
            limits: meta.limits,
            allow_wasi: meta.allow_wasi,
        };
        let policy = self.load_blocking(bytes, options).await?;
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(parsed, Compiled::new(Arc::clone(&policy), meta.allow_wasi));
        }
        Ok(policy)
    }

    async fn load_blocking(
        &self,
        bytes: Vec<u8>,
        options: LoadOptions,
    ) -> Result<Arc<Policy>, RegistryError> {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || engine.load(&bytes, &options))
            .await
            .map_err(|e| RegistryError::Engine(e.to_string()))?
            .map_err(RegistryError::Rejected)
    }

    /// Checks params with the policy's own `validate-params`.
    async fn check_params(
        &self,
        policy: &Arc<Policy>,
        params: &Params,
    ) -> Result<(), RegistryError> {
        let engine = Arc::clone(&self.engine);
        let policy = Arc::clone(policy);
        let params = params.clone();
        let verdict = tokio::task::spawn_blocking(move || engine.validate_params(&policy, &params))
            .await
            .map_err(|e| RegistryError::Engine(e.to_string()))?
            .map_err(|e| RegistryError::Engine(format!("validate-params failed: {e}")))?;
        verdict.map_err(|message| {
            RegistryError::Invalid(format!("params refused by the policy: {message}"))
        })
    }

    /// Validates, compiles and stores an uploaded policy; announces it so every instance
    /// compiles it before it is bound.
    ///
    /// Identical bytes uploaded again keep what is stored (`created: false`): the stored
    /// record is answered as it is, and a retired one is restored. When the upload asks for
    /// other settings than the stored ones (name, description, WASI, limits; an omitted one
    /// means its default, as for a first upload) it is refused (409) naming them: those
    /// change only through [`Registry::change_settings`], audited.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        upload: Upload,
        uploader: &str,
        now_ms: u64,
    ) -> Result<Uploaded, RegistryError> {
        check_text(&upload.name, &upload.description)?;
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(RegistryError::Invalid(format!(
                "a policy may be at most {MAX_UPLOAD_BYTES} bytes"
            )));
        }
        let asked = PolicySettings {
            name: upload.name.trim().to_string(),
            description: upload.description.clone(),
            allow_wasi: upload.allow_wasi,
            limits: upload.limits.unwrap_or(*self.builtin.limits()),
        };
        // Limits the engine cannot honour are refused whether or not the bytes are stored.
        asked
            .limits
            .validate(self.engine.config())
            .map_err(RegistryError::Rejected)?;
        let digest = Digest::of(&bytes).to_string();
        if let Some(stored) = self.store.policy_record(&digest).await? {
            return self.uploaded_again(stored, &asked).await;
        }
        let options = LoadOptions {
            limits: asked.limits,
            allow_wasi: asked.allow_wasi,
        };
        let stored = bytes.clone();
        // Validation as in the engine: header, size, compile, imports, world, smoke evaluation.
        let policy = self.load_blocking(bytes, options).await?;
        let meta = self.meta_of(
            &policy,
            &asked.name,
            &asked.description,
            uploader,
            asked.allow_wasi,
            now_ms,
        );
        // Stored only if still absent: an upload of the same bytes that won the race is kept.
        if let Some(existing) = self.store.add_policy(&meta, &stored).await? {
            return self.uploaded_again(existing, &asked).await;
        }
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(policy.digest(), Compiled::new(policy, asked.allow_wasi));
        }
        Ok(Uploaded {
            meta,
            created: true,
        })
    }

    /// The same bytes uploaded again: the stored record, unchanged (a retired one restored),
    /// or 409 naming the settings the upload asked to be different.
    async fn uploaded_again(
        &self,
        stored: PolicyRecord,
        asked: &PolicySettings,
    ) -> Result<Uploaded, RegistryError> {
        let digest = stored.meta.digest.clone();
        let differences = stored.meta.settings().differences(asked);
        if !differences.is_empty() {
            let listed: Vec<String> = differences.iter().map(ToString::to_string).collect();
            return Err(RegistryError::Conflict(format!(
                "policy {digest} is stored already, with other settings than this upload asks                  for: {}. Uploading the same bytes again changes nothing; change the stored                  policy's settings with PATCH /api/v1/policies/{digest} (retryguard policy                  update {digest} …), which is audited and applied by every instance",
                listed.join(", ")
            )));
        }
        if !stored.meta.retired {
            return Ok(Uploaded {
                meta: stored.meta,
                created: false,
            });
        }
        let restored = PolicyMeta {
            retired: false,
            ..stored.meta.clone()
        };
        if !self.store.replace_meta(&stored, &restored, true).await? {
            return Err(RegistryError::Conflict(format!(
                "policy {digest} changed while it was uploaded again: try again"
            )));
        }
        Ok(Uploaded {
            meta: restored,
            created: false,
        })
    }

    /// Changes a stored policy's settings (name, description, WASI, limits): checked (the
    /// limits against the engine's pool, the policy loaded and smoke-evaluated with the new
    /// ones), then written in one atomic step with a new bindings revision, the audit record
    /// (`policy_settings_changed`, actor, before, after) and the announcement, so every
    /// instance applies it as it applies a binding change. Live on this instance when this
    /// returns. Asking for what is stored changes nothing (no revision, no record).
    pub async fn change_settings(
        &self,
        digest: &str,
        change: &SettingsChange,
        actor: &str,
    ) -> Result<SettingsChanged, RegistryError> {
        let parsed = Digest::parse(digest).ok_or_else(|| {
            RegistryError::Invalid(format!("`{digest}` is not a policy digest (64 hex digits)"))
        })?;
        if change.is_empty() {
            return Err(RegistryError::Invalid(
                "nothing to change: give at least one of name, description, allow_wasi, fuel, \
                 deadline_ms, memory_bytes, instances"
                    .into(),
            ));
        }
        let stored =
            self.store.policy_record(digest).await?.ok_or_else(|| {
                RegistryError::NotFound(format!("no policy with digest {digest}"))
            })?;
        let before = stored.meta.settings();
        let after = change.apply(&before);
        check_text(&after.name, &after.description)?;
        let changed: Vec<&'static str> = before
            .differences(&after)
            .into_iter()
            .map(|d| d.field)
            .collect();
        if changed.is_empty() {
            return Ok(SettingsChanged {
                meta: stored.meta,
                changed,
                revision: None,
            });
        }
        let runs_differently =
            after.limits != before.limits || after.allow_wasi != before.allow_wasi;
        if runs_differently && parsed == self.builtin.digest() {
            return Err(RegistryError::Conflict(
                "the built-in default runs with each instance's [policy] limits from its \
                 config: change those (and restart), or upload your own policy"
                    .into(),
            ));
        }
        after
            .limits
            .validate(self.engine.config())
            .map_err(RegistryError::Rejected)?;
        let reloaded = if runs_differently {
            let bytes = self.store.policy_bytes(digest).await?.ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "the bytes of policy {digest} are missing from Redis"
                ))
            })?;
            let options = LoadOptions {
                limits: after.limits,
                allow_wasi: after.allow_wasi,
            };
            // The policy must still load and pass its smoke evaluation under the new settings.
            Some(self.load_blocking(bytes, options).await?)
        } else {
            None
        };
        let meta = stored.meta.with_settings(after.clone());
        let Some(revision) = self.store.change_settings(&stored, &meta, actor).await? else {
            return Err(RegistryError::Conflict(format!(
                "policy {digest} changed meanwhile: look at it again, then retry"
            )));
        };
        if let (Some(policy), Ok(mut c)) = (reloaded, self.compiled.lock()) {
            c.insert(parsed, Compiled::new(policy, after.allow_wasi));
        }
        self.refresh().await?;
        Ok(SettingsChanged {
            meta,
            changed,
            revision: Some(revision),
        })
    }

    /// A stored policy with params, compiled and its params checked: the candidate of a
    /// replay.
    pub async fn candidate(&self, digest: &str, params: &Params) -> Result<Bound, RegistryError> {
        if self.store.policy(digest).await?.is_none() {
            return Err(RegistryError::NotFound(format!(
                "no policy with digest {digest}"
            )));
        }
        let policy = self.compiled(digest).await?;
        self.check_params(&policy, params).await?;
        Ok(Bound::new(policy, params.clone()))
    }

    /// Every uploaded policy (the built-in default among them), oldest first.
    pub async fn policies(&self) -> Result<Vec<PolicyMeta>, RegistryError> {
        Ok(self.store.policies().await?)
    }

    /// Retires a policy: refused while any binding (or shadow) names it; its bytes stay.
    pub async fn retire(&self, digest: &str) -> Result<PolicyMeta, RegistryError> {
        let record =
            self.store.policy_record(digest).await?.ok_or_else(|| {
                RegistryError::NotFound(format!("no policy with digest {digest}"))
            })?;
        let meta = record.meta.clone();
        let bound: Vec<String> = self
            .store
            .bindings()
            .await?
            .bindings
            .into_iter()
            .filter(|b| {
                b.spec.active.policy == digest
                    || b.spec.shadow.as_ref().is_some_and(|s| s.policy == digest)
            })
            .map(|b| b.pattern)
            .collect();
        if !bound.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "policy {digest} is bound to {}: bind those patterns to another policy first",
                bound.join(", ")
            )));
        }
        let retired = PolicyMeta {
            retired: true,
            ..meta
        };
        // Compare-and-set: a settings change meanwhile is never written over.
        if !self.store.replace_meta(&record, &retired, false).await? {
            return Err(RegistryError::Conflict(format!(
                "policy {digest} changed meanwhile: try again"
            )));
        }
        Ok(retired)
    }

    /// Checks a binding spec: policies exist, are not retired, compile, accept the params.
    async fn check_spec(&self, spec: &BindingSpec) -> Result<(), RegistryError> {
        for (role, r) in std::iter::once(("policy", &spec.active))
            .chain(spec.shadow.iter().map(|s| ("shadow policy", s)))
        {
            let meta = self.store.policy(&r.policy).await?.ok_or_else(|| {
                RegistryError::Invalid(format!("the {role} {} is not uploaded", r.policy))
            })?;
            if meta.retired {
                return Err(RegistryError::Invalid(format!(
                    "the {role} {} is retired: upload it again to use it",
                    r.policy
                )));
            }
            let policy = self.compiled(&r.policy).await?;
            self.check_params(&policy, &r.params).await?;
        }
        Ok(())
    }

    /// Binds `pattern` to `spec` after checking it; the new table is live on this instance
    /// when this returns, and announced to the others.
    pub async fn bind(
        &self,
        pattern: &str,
        spec: &BindingSpec,
        actor: &str,
        now_ms: u64,
    ) -> Result<u64, RegistryError> {
        let pattern = Pattern::parse(pattern)
            .map_err(RegistryError::Invalid)?
            .to_string();
        self.check_spec(spec).await?;
        let revision = match self
            .store
            .change_binding(
                &pattern,
                Some(spec),
                store::Change::Set,
                actor,
                now_ms,
                store::Condition::Always,
            )
            .await?
        {
            ChangeResult::Changed { revision } => revision,
            other => {
                return Err(RegistryError::Conflict(format!(
                    "the binding did not change: {other:?}"
                )));
            }
        };
        self.refresh().await?;
        Ok(revision)
    }

    /// Removes the binding of `pattern` (never `*`: every job type needs a policy).
    pub async fn unbind(
        &self,
        pattern: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<u64, RegistryError> {
        let pattern = Pattern::parse(pattern).map_err(RegistryError::Invalid)?;
        if pattern == Pattern::Any {
            return Err(RegistryError::Conflict(
                "the `*` binding cannot be removed, only changed: every job type needs a policy"
                    .into(),
            ));
        }
        let pattern = pattern.to_string();
        let snapshot = self.store.bindings().await?;
        if !snapshot.bindings.iter().any(|b| b.pattern == pattern) {
            return Err(RegistryError::NotFound(format!(
                "nothing is bound to `{pattern}`"
            )));
        }
        let revision = match self
            .store
            .change_binding(
                &pattern,
                None,
                store::Change::Delete,
                actor,
                now_ms,
                store::Condition::AtRevision(snapshot.revision),
            )
            .await?
        {
            ChangeResult::Changed { revision } => revision,
            _ => {
                return Err(RegistryError::Conflict(
                    "the bindings changed meanwhile: try again".into(),
                ));
            }
        };
        self.refresh().await?;
        Ok(revision)
    }

    /// Promotes the shadow of `pattern`: its policy and params become the active ones and
    /// the binding has no shadow any more. Refused (409) when `pattern` has no shadow, or
    /// when the bindings changed between reading and writing (compare-and-set on the
    /// revision: what was watched in shadow is what gets promoted).
    pub async fn promote(
        &self,
        pattern: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<StoredBinding, RegistryError> {
        let pattern = Pattern::parse(pattern)
            .map_err(RegistryError::Invalid)?
            .to_string();
        let snapshot = self.store.bindings().await?;
        let Some(current) = snapshot.bindings.iter().find(|b| b.pattern == pattern) else {
            return Err(RegistryError::NotFound(format!(
                "nothing is bound to `{pattern}`"
            )));
        };
        let Some(shadow) = current.spec.shadow.clone() else {
            return Err(RegistryError::Conflict(format!(
                "`{pattern}` has no shadow policy to promote"
            )));
        };
        let spec = BindingSpec {
            active: shadow,
            shadow: None,
        };
        self.check_spec(&spec).await?;
        match self
            .store
            .change_binding(
                &pattern,
                Some(&spec),
                store::Change::Promote,
                actor,
                now_ms,
                store::Condition::AtRevision(snapshot.revision),
            )
            .await?
        {
            ChangeResult::Changed { .. } => {}
            _ => {
                return Err(RegistryError::Conflict(
                    "the bindings changed meanwhile: look at the shadow again, then retry".into(),
                ));
            }
        }
        self.refresh().await?;
        self.store
            .bindings()
            .await?
            .bindings
            .into_iter()
            .find(|b| b.pattern == pattern)
            .ok_or_else(|| RegistryError::Conflict("the binding changed meanwhile".into()))
    }

    /// Restores the state `pattern` had before its last change.
    pub async fn rollback(
        &self,
        pattern: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Option<StoredBinding>, RegistryError> {
        let pattern = Pattern::parse(pattern)
            .map_err(RegistryError::Invalid)?
            .to_string();
        let revision = self.store.revision().await?;
        let history = self.store.history(&pattern).await?;
        let Some(previous) = history.into_iter().next() else {
            return Err(RegistryError::NotFound(format!(
                "`{pattern}` has no earlier state to roll back to"
            )));
        };
        let spec = previous.as_ref().map(|b| b.spec.clone());
        if let Some(spec) = &spec {
            self.check_spec(spec).await?;
        } else if pattern == "*" {
            return Err(RegistryError::Conflict(
                "the `*` binding's earlier state is unbound: it cannot be removed".into(),
            ));
        }
        match self
            .store
            .change_binding(
                &pattern,
                spec.as_ref(),
                store::Change::Rollback,
                actor,
                now_ms,
                store::Condition::AtRevision(revision),
            )
            .await?
        {
            ChangeResult::Changed { .. } => {}
            _ => {
                return Err(RegistryError::Conflict(
                    "the bindings changed meanwhile: try again".into(),
                ));
            }
        }
        self.refresh().await?;
        let now = self.store.bindings().await?;
        Ok(now.bindings.into_iter().find(|b| b.pattern == pattern))
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
            }),
        };
        Ok(Table {
            revision: snapshot.revision,
            resolver: Resolver::new(entries),
            fallback,
        })
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
    /// missed messages and a lost pub/sub connection.
    pub async fn watch(
        self: Arc<Self>,
        client: redis::Client,
        check_every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut shutdown = shutdown;
        loop {
            let mut pubsub = match client.get_async_pubsub().await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "no pub/sub connection for policy announcements; polling the revision");
                    None
                }
            };
            if let Some(p) = pubsub.as_mut()
                && let Err(e) = p.subscribe(store::EVENTS_CHANNEL).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_descriptions_refuse_control_characters() {
        assert!(check_text("strict payments", "line one\nline\ttwo").is_ok());
        for name in ["a\nb", "\u{1b}[31mred", "nul\0", "tab\there", "del\u{7f}"] {
            let e = check_text(name, "").unwrap_err().to_string();
            assert!(e.contains("control characters"), "{name:?}: {e}");
        }
        assert!(check_text("ok", "bell\u{7}").is_err());
        assert!(check_text(" ", "").is_err());
        assert!(check_text(&"x".repeat(129), "").is_err());
    }
}
