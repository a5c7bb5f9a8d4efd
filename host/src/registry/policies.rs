//! Uploaded policies: upload (content-addressed, checked against the contract and the
//! limits), settings changes, retirement, and the compiled-policy cache behind them.

use std::sync::Arc;

use super::store::{PolicyMeta, PolicyRecord, PolicySettings};
use super::{Bound, MAX_UPLOAD_BYTES, Registry, RegistryError};
use crate::policy::{Digest, LoadOptions, Params, Policy, PolicyLimits, WORLD};

/// A compiled policy and the stored settings it was loaded with.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    limits: PolicyLimits,
    allow_wasi: bool,
    policy: Arc<Policy>,
}

impl Compiled {
    pub(super) fn new(policy: Arc<Policy>, allow_wasi: bool) -> Self {
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
    pub(super) fn meta_of(
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
    pub(super) async fn compiled(&self, digest: &str) -> Result<Arc<Policy>, RegistryError> {
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

    pub(super) async fn load_blocking(
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
    pub(super) async fn check_params(
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
    pub(super) async fn uploaded_again(
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
