//! Bindings: which policy (and shadow) judges which job-type pattern — bind, unbind,
//! promote a shadow, roll back — each one compare-and-set on the bindings revision.

use super::Pattern;
use super::store::{self, BindingSpec, ChangeResult, StoredBinding};
use super::{Registry, RegistryError};

impl Registry {
    /// Checks a binding spec: policies exist, are not retired, compile, accept the params.
    pub(super) async fn check_spec(&self, spec: &BindingSpec) -> Result<(), RegistryError> {
        spec.brakes().validate().map_err(RegistryError::Invalid)?;
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
        // The shadow's policy and params become the active ones; auto-retry and the brakes
        // stay as they are.
        let spec = BindingSpec {
            active: shadow,
            shadow: None,
            ..current.spec.clone()
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
}
