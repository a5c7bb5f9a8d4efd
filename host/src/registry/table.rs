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
    /// Its automatic retry and brakes (`crate::brake`).
    pub brakes: crate::brake::Brakes,
}

/// The bindings of one revision, compiled. Immutable: a change builds a new one.
#[derive(Debug)]
pub struct Table {
    pub revision: u64,
    resolver: Resolver<Arc<ActiveBinding>>,
    /// What a job type no pattern matches gets: the `*` binding, else the built-in default.
    fallback: Arc<ActiveBinding>,
    /// The patterns with a retry budget, and it.
    budgets: Vec<(String, crate::brake::BudgetConfig)>,
    /// Whether any binding has `auto_retry`.
    any_auto_retry: bool,
}

impl Table {
    /// The table of one revision: `resolver` over its patterns, `fallback` for a job type
    /// none matches.
    pub fn new(
        revision: u64,
        entries: Vec<(Pattern, Arc<ActiveBinding>)>,
        fallback: Arc<ActiveBinding>,
    ) -> Self {
        let budgets = entries
            .iter()
            .filter_map(|(_, b)| Some((b.pattern.clone(), b.brakes.budget?)))
            .collect();
        let any_auto_retry =
            fallback.brakes.auto_retry || entries.iter().any(|(_, b)| b.brakes.auto_retry);
        Self {
            revision,
            resolver: Resolver::new(entries),
            fallback,
            budgets,
            any_auto_retry,
        }
    }

    /// A table of one `*` binding (tests, and the CLI's one-policy commands).
    pub fn single(policy: Arc<Policy>, params: Params) -> Self {
        let binding = Arc::new(ActiveBinding {
            pattern: "*".into(),
            active: Bound::new(policy, params),
            shadow: None,
            brakes: crate::brake::Brakes::default(),
        });
        Self::new(0, vec![(Pattern::Any, Arc::clone(&binding))], binding)
    }

    /// The same table with `brakes` on its one `*` binding (tests and benchmarks of the
    /// brakes without a registry).
    pub fn single_with(policy: Arc<Policy>, params: Params, brakes: crate::brake::Brakes) -> Self {
        let binding = Arc::new(ActiveBinding {
            pattern: "*".into(),
            active: Bound::new(policy, params),
            shadow: None,
            brakes,
        });
        Self::new(0, vec![(Pattern::Any, Arc::clone(&binding))], binding)
    }

    /// The patterns with a retry budget, and it.
    pub fn budgets(&self) -> &[(String, crate::brake::BudgetConfig)] {
        &self.budgets
    }

    /// Whether any binding has `auto_retry`.
    pub fn any_auto_retry(&self) -> bool {
        self.any_auto_retry
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
