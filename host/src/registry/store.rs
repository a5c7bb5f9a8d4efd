//! Policies and bindings in Redis, so every instance sees the same ones (docs/policies.md).
//!
//! Keys (all retryguard's own):
//! - `retryguard:policy:<digest>:bytes` — the component, as uploaded; never deleted, so a past
//!   decision can always be replayed from its record's digest;
//! - `retryguard:policy:<digest>:meta` — [`PolicyMeta`] as JSON;
//! - `retryguard:policies` — ZSET of digests by upload time (ms);
//! - `retryguard:bindings` — HASH pattern → [`StoredBinding`] as JSON;
//! - `retryguard:bindings:revision` — bumped by every binding change;
//! - `retryguard:bindings:history:<pattern>` — LIST of earlier states of a pattern, newest first
//!   (JSON, `null` for "not bound"), at most [`HISTORY_LEN`];
//! - channel `retryguard:policies:events` — `{"kind":"policy","digest":…}` after an upload,
//!   `{"kind":"bindings","revision":N}` after a binding change,
//!   `{"kind":"policy_settings","revision":N,"digest":…}` after a settings change.
//!
//! A binding change is one Lua script (`registry/lua/set_binding.lua`): it bumps the revision,
//! stores the binding, pushes the previous state on the history and appends the audit record
//! (actor, before, after) to the outbox, all or nothing; then it publishes.
//!
//! An upload stores a digest once (`registry/lua/add_policy.lua`): identical bytes uploaded
//! again write nothing and get the stored metadata back. A stored policy's settings (name,
//! description, WASI, limits) change only through `registry/lua/set_policy_meta.lua`, which
//! compares the metadata with what the caller read, bumps the bindings revision, appends the
//! audit record (`policy_settings_changed`) and announces
//! `{"kind":"policy_settings","revision":N,"digest":…}`, all or nothing, so every instance
//! rebuilds its table with the new settings as after a binding change.

use crate::redis_link::Link;
use serde::{Deserialize, Serialize};

use crate::keyspace;
use crate::policy::types::PolicyInfo;
use crate::policy::{Params, PolicyLimits};
use crate::redis_error::RedisError;

/// Earlier states kept per pattern.
pub const HISTORY_LEN: usize = 50;

const SET_BINDING_LUA: &str = include_str!("lua/set_binding.lua");
const ADD_POLICY_LUA: &str = include_str!("lua/add_policy.lua");
const SET_POLICY_META_LUA: &str = include_str!("lua/set_policy_meta.lua");

/// The audit decision of a change to a stored policy's settings.
pub const SETTINGS_CHANGED: &str = "policy_settings_changed";

/// What is known of an uploaded policy besides its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyMeta {
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    pub name: String,
    pub description: String,
    /// The token name that uploaded it (`builtin` for the built-in default).
    pub uploader: String,
    pub uploaded_at_ms: u64,
    pub size: u64,
    /// The WIT world it implements.
    pub world: String,
    /// What it imports (WASI interfaces for other-language guests; empty for Rust ones).
    pub imports: Vec<String>,
    /// Whether it runs with the deny-all WASI (needs the operator's opt-in).
    pub allow_wasi: bool,
    /// The sandbox limits of its evaluations.
    #[schema(value_type = Object)]
    pub limits: PolicyLimits,
    /// Its own description of itself (`describe`): name, version, params with defaults.
    #[schema(value_type = Object)]
    pub info: PolicyInfo,
    /// Retired by `DELETE`: no longer bindable; the bytes stay for replays.
    #[serde(default)]
    pub retired: bool,
}

/// What a stored policy's evaluations depend on besides its bytes, and what people call it:
/// the part of [`PolicyMeta`] an upload states and `PATCH /api/v1/policies/{digest}` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySettings {
    pub name: String,
    pub description: String,
    pub allow_wasi: bool,
    pub limits: PolicyLimits,
}

impl PolicySettings {
    /// The fields (named as the upload's parameters) where `asked` differs from `self`, each
    /// with both values.
    pub fn differences(&self, asked: &Self) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut field = |name: &'static str, stored: String, asked: String| {
            if stored != asked {
                out.push(Difference {
                    field: name,
                    stored,
                    asked,
                });
            }
        };
        let quoted = |s: &str| format!("{s:?}");
        field("name", quoted(&self.name), quoted(&asked.name));
        field(
            "description",
            quoted(&self.description),
            quoted(&asked.description),
        );
        field(
            "allow_wasi",
            self.allow_wasi.to_string(),
            asked.allow_wasi.to_string(),
        );
        let (a, b) = (&self.limits, &asked.limits);
        field("fuel", a.fuel.to_string(), b.fuel.to_string());
        field(
            "deadline_ms",
            a.deadline_ms.to_string(),
            b.deadline_ms.to_string(),
        );
        field(
            "memory_bytes",
            a.memory_bytes.to_string(),
            b.memory_bytes.to_string(),
        );
        field(
            "instances",
            a.instances.to_string(),
            b.instances.to_string(),
        );
        field("tables", a.tables.to_string(), b.tables.to_string());
        field(
            "table_elements",
            a.table_elements.to_string(),
            b.table_elements.to_string(),
        );
        out
    }
}

/// One field where two [`PolicySettings`] differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: &'static str,
    pub stored: String,
    pub asked: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (stored {}, asked {})",
            self.field, self.stored, self.asked
        )
    }
}

impl PolicyMeta {
    /// Its settings.
    pub fn settings(&self) -> PolicySettings {
        PolicySettings {
            name: self.name.clone(),
            description: self.description.clone(),
            allow_wasi: self.allow_wasi,
            limits: self.limits,
        }
    }

    /// The same policy with `settings`.
    pub fn with_settings(&self, settings: PolicySettings) -> Self {
        Self {
            name: settings.name,
            description: settings.description,
            allow_wasi: settings.allow_wasi,
            limits: settings.limits,
            ..self.clone()
        }
    }
}

/// A policy's metadata as read, with the exact JSON stored (what a compare-and-set compares).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub meta: PolicyMeta,
    pub json: String,
}

/// A policy and its params, as a binding names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyRef {
    /// The policy's digest.
    pub policy: String,
    /// Params by name (values are strings; the policy's `validate-params` checks them).
    #[serde(default, with = "params_map")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub params: Params,
}

/// What a pattern is bound to: the acting policy and, optionally, a shadow evaluated beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BindingSpec {
    #[serde(flatten)]
    pub active: PolicyRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<PolicyRef>,
    /// Its jobs are retried by the sweeper when due (docs/auto-retry.md).
    #[serde(default)]
    pub auto_retry: bool,
    /// Its circuit breakers' settings (one breaker per failure type); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<crate::brake::BreakerConfig>,
    /// Its retry budget; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::brake::BudgetConfig>,
    /// Requeues per second at most; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requeues_per_second: Option<u32>,
}

impl BindingSpec {
    /// A binding of `active` with nothing else set.
    pub fn of(active: PolicyRef) -> Self {
        Self {
            active,
            shadow: None,
            auto_retry: false,
            breaker: None,
            budget: None,
            max_requeues_per_second: None,
        }
    }

    /// Its automatic retry and brakes.
    pub fn brakes(&self) -> crate::brake::Brakes {
        crate::brake::Brakes {
            auto_retry: self.auto_retry,
            breaker: self.breaker,
            budget: self.budget,
            max_requeues_per_second: self.max_requeues_per_second,
        }
    }
}

/// A binding as stored: the spec, and who changed it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredBinding {
    pub pattern: String,
    #[serde(flatten)]
    pub spec: BindingSpec,
    /// The bindings revision this change made.
    pub revision: u64,
    pub changed_by: String,
    pub changed_at_ms: u64,
}

/// A bindings table as read from Redis: every binding and the revision they are at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingsSnapshot {
    pub revision: u64,
    pub bindings: Vec<StoredBinding>,
}

/// Params as a JSON object (order of keys is the policy's business: sorted here).
mod params_map {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(params: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// A stored metadata JSON, read.
fn record(digest: &str, json: String) -> Result<PolicyRecord, RedisError> {
    let meta = serde_json::from_str(&json).map_err(|e| {
        RedisError::Failed(format!(
            "the stored metadata of policy {digest} is unreadable: {e}"
        ))
    })?;
    Ok(PolicyRecord { meta, json })
}

/// When [`Store::change_binding`] may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Only when the pattern is unbound (seeding `*` at first start).
    Unbound,
    /// Only when the bindings are still at this revision (the caller read them at it).
    AtRevision(u64),
}

/// What [`Store::change_binding`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeResult {
    Changed {
        revision: u64,
    },
    /// `only_if_unbound`, and the pattern was bound: nothing changed.
    AlreadyBound,
    /// The revision was not the expected one: nothing changed.
    RevisionMismatch,
}

/// The Redis side of the registry.
#[derive(Clone)]
pub struct Store {
    conn: Link,
    set_binding: redis::Script,
    add_policy: redis::Script,
    set_policy_meta: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What a binding change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Set,
    Delete,
    Rollback,
    /// The shadow became the active policy.
    Promote,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Set => "binding_set",
            Self::Delete => "binding_deleted",
            Self::Rollback => "binding_rolled_back",
            Self::Promote => "binding_promoted",
        }
    }
}

impl Store {
    pub fn new(conn: Link) -> Self {
        Self {
            conn,
            set_binding: redis::Script::new(SET_BINDING_LUA),
            add_policy: redis::Script::new(ADD_POLICY_LUA),
            set_policy_meta: redis::Script::new(SET_POLICY_META_LUA),
        }
    }

    /// The connection (for the registry's pub/sub watch: `Link::client`).
    pub fn connection(&self) -> &Link {
        &self.conn
    }

    /// Stores a policy's bytes and metadata and announces it, unless its digest is stored
    /// already: then nothing is written and the stored record is returned (`Some`), whatever
    /// `meta` says. Atomic, so two uploads of the same bytes at once store one record.
    pub async fn add_policy(
        &self,
        meta: &PolicyMeta,
        bytes: &[u8],
    ) -> Result<Option<PolicyRecord>, RedisError> {
        let json = serde_json::to_string(meta).map_err(|e| RedisError::Failed(e.to_string()))?;
        let mut conn = self.conn.clone();
        let existing: Option<String> = self
            .add_policy
            .key(keyspace::policy_meta(&meta.digest))
            .key(keyspace::policy_bytes(&meta.digest))
            .key(keyspace::POLICIES)
            .arg(json)
            .arg(bytes)
            .arg(meta.uploaded_at_ms)
            .arg(&meta.digest)
            .arg(keyspace::POLICY_EVENTS)
            .invoke_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        existing.map(|json| record(&meta.digest, json)).transpose()
    }

    /// Every uploaded policy, oldest first.
    pub async fn policies(&self) -> Result<Vec<PolicyMeta>, RedisError> {
        let mut conn = self.conn.clone();
        let digests: Vec<String> = redis::cmd("ZRANGE")
            .arg(keyspace::POLICIES)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = digests.iter().map(|d| keyspace::policy_meta(d)).collect();
        let metas: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(metas
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    /// One policy's metadata.
    pub async fn policy(&self, digest: &str) -> Result<Option<PolicyMeta>, RedisError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(keyspace::policy_meta(digest))
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// One policy's metadata with the JSON it is stored as (for a compare-and-set); an
    /// unreadable record is an error, not "not stored".
    pub async fn policy_record(&self, digest: &str) -> Result<Option<PolicyRecord>, RedisError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(keyspace::policy_meta(digest))
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        json.map(|json| record(digest, json)).transpose()
    }

    /// One policy's bytes.
    pub async fn policy_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(keyspace::policy_bytes(digest))
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)
    }

    /// Replaces a policy's metadata with `new` if it is still `current` (`false`: it changed
    /// meanwhile, nothing was written). Not a settings change: no revision, no audit record
    /// (retiring, and restoring a retired policy by uploading it again); `announce` publishes
    /// the upload announcement, so every instance compiles it ahead.
    pub async fn replace_meta(
        &self,
        current: &PolicyRecord,
        new: &PolicyMeta,
        announce: bool,
    ) -> Result<bool, RedisError> {
        let announcement = if announce {
            format!(r#"{{"kind":"policy","digest":"{}"}}"#, new.digest)
        } else {
            String::new()
        };
        let reply = self
            .set_meta(current, new, "", "", "", &announcement)
            .await?;
        Ok(reply == 0)
    }

    /// Changes a stored policy's settings if its metadata is still `current`, in one atomic
    /// step with a new bindings revision, the audit record (`policy_settings_changed`: actor,
    /// settings before and after) and the announcement. `None`: it changed meanwhile,
    /// nothing was written.
    pub async fn change_settings(
        &self,
        current: &PolicyRecord,
        new: &PolicyMeta,
        actor: &str,
    ) -> Result<Option<u64>, RedisError> {
        let json = |s: &PolicySettings| {
            serde_json::to_string(s).map_err(|e| RedisError::Failed(e.to_string()))
        };
        let change = format!(
            r#""before":{},"after":{}"#,
            json(&current.meta.settings())?,
            json(&new.settings())?
        );
        let reply = self
            .set_meta(current, new, SETTINGS_CHANGED, actor, &change, "")
            .await?;
        Ok(u64::try_from(reply).ok().filter(|r| *r > 0))
    }

    async fn set_meta(
        &self,
        current: &PolicyRecord,
        new: &PolicyMeta,
        decision: &str,
        actor: &str,
        change: &str,
        announcement: &str,
    ) -> Result<i64, RedisError> {
        let json = serde_json::to_string(new).map_err(|e| RedisError::Failed(e.to_string()))?;
        let mut conn = self.conn.clone();
        self.set_policy_meta
            .key(keyspace::policy_meta(&new.digest))
            .key(keyspace::BINDINGS_REVISION)
            .key(keyspace::AUDIT_OUTBOX)
            .arg(&current.json)
            .arg(json)
            .arg(decision)
            .arg(actor)
            .arg(&new.digest)
            .arg(change)
            .arg(keyspace::POLICY_EVENTS)
            .arg(announcement)
            .invoke_async(&mut conn)
            .await
            .map_err(RedisError::from)
    }

    /// Every binding and the revision they are at, read together.
    pub async fn bindings(&self) -> Result<BindingsSnapshot, RedisError> {
        let mut conn = self.conn.clone();
        let (revision, all): (Option<u64>, Vec<(String, String)>) = redis::pipe()
            .atomic()
            .get(keyspace::BINDINGS_REVISION)
            .hgetall(keyspace::BINDINGS)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        let mut bindings: Vec<StoredBinding> = all
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str(&json).ok())
            .collect();
        bindings.sort_by(|a, b| a.pattern.cmp(&b.pattern));
        Ok(BindingsSnapshot {
            revision: revision.unwrap_or(0),
            bindings,
        })
    }

    /// The bindings revision alone (the periodic check for missed announcements).
    pub async fn revision(&self) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        let r: Option<u64> = redis::cmd("GET")
            .arg(keyspace::BINDINGS_REVISION)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(r.unwrap_or(0))
    }

    /// Earlier states of a pattern, newest first (`None`: it was not bound).
    pub async fn history(&self, pattern: &str) -> Result<Vec<Option<StoredBinding>>, RedisError> {
        let mut conn = self.conn.clone();
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(keyspace::binding_history(pattern))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(items
            .into_iter()
            .map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    /// Sets (`Some`) or removes (`None`) the binding of `pattern` in one atomic step with its
    /// revision, history and audit record, if `condition` holds.
    pub async fn change_binding(
        &self,
        pattern: &str,
        spec: Option<&BindingSpec>,
        change: Change,
        actor: &str,
        now_ms: u64,
        condition: Condition,
    ) -> Result<ChangeResult, RedisError> {
        let (only_if_unbound, expected_revision) = match condition {
            Condition::Always => (false, None),
            Condition::Unbound => (true, None),
            Condition::AtRevision(r) => (false, Some(r)),
        };
        let after = match spec {
            Some(spec) => serde_json::to_string(&StoredBinding {
                pattern: pattern.to_string(),
                spec: spec.clone(),
                // Set by the script to the revision it makes.
                revision: 0,
                changed_by: actor.to_string(),
                changed_at_ms: now_ms,
            })
            .map_err(|e| RedisError::Failed(e.to_string()))?,
            None => String::new(),
        };
        let mut conn = self.conn.clone();
        let reply: i64 = self
            .set_binding
            .key(keyspace::BINDINGS)
            .key(keyspace::BINDINGS_REVISION)
            .key(keyspace::binding_history(pattern))
            .key(keyspace::AUDIT_OUTBOX)
            .arg(pattern)
            .arg(after)
            .arg(change.as_str())
            .arg(actor)
            .arg(if only_if_unbound { "1" } else { "0" })
            .arg(HISTORY_LEN)
            .arg(keyspace::POLICY_EVENTS)
            .arg(expected_revision.map(|r| r.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(match reply {
            -1 => ChangeResult::AlreadyBound,
            -2 => ChangeResult::RevisionMismatch,
            r => ChangeResult::Changed {
                revision: u64::try_from(r).unwrap_or(0),
            },
        })
    }
}
