//! The live table: the compiled bindings of one revision, and how a job type resolves to
//! its binding.

use std::sync::Arc;

use super::pattern::{Pattern, Resolver};
use crate::policy::{Params, Policy};

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
    /// The table of one revision: `resolver` over its patterns, `fallback` for a job type
    /// none matches.
    pub fn new(
        revision: u64,
        resolver: Resolver<Arc<ActiveBinding>>,
        fallback: Arc<ActiveBinding>,
    ) -> Self {
        Self {
            revision,
            resolver,
            fallback,
        }
    }

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
