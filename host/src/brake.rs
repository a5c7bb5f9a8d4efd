//! The brakes on retrying (docs/auto-retry.md): a circuit breaker per binding pattern ×
//! failure type, a retry budget and a requeue rate limit per binding. A binding opts into
//! each in its body (`registry::BindingSpec`); this module holds their settings, their
//! shared state in Redis (`state`, one Lua script per transition) and the read-only view
//! of that state a batch of decisions is made with (`Snapshot`).
//!
//! The host enforces every brake. A policy only sees them: the failure's `attributes` carry
//! the breaker's state and failure rate and the budget left ([`attributes`]).

pub mod state;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use state::{BreakerView, Snapshot, Transition};

/// A circuit breaker's settings, per binding. Every field has the default resilience4j
/// users start from, adapted to jobs (docs/auto-retry.md says why each).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Opens when this share of the retried jobs' outcomes in the window failed again
    /// (0 < rate ≤ 1).
    pub failure_rate: f64,
    /// The sliding window of outcomes, in seconds.
    pub window_seconds: u32,
    /// Fewer outcomes than this in the window never open it.
    pub min_outcomes: u32,
    /// How long it stays open before it lets probes through; doubles on each re-open.
    pub open_seconds: u32,
    /// The cap of that doubling.
    pub max_open_seconds: u32,
    /// Requeues let through while half-open; their outcomes close or re-open it.
    pub half_open_probes: u32,
}

// The rate is checked finite in `validate`, so equality is an equivalence.
impl Eq for BreakerConfig {}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window_seconds: 60,
            min_outcomes: 10,
            open_seconds: 30,
            max_open_seconds: 600,
            half_open_probes: 3,
        }
    }
}

/// A retry budget's settings, per binding: requeues per minute stay at or under
/// `max(min_per_minute, ratio × successful completions in the last minute)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Requeues allowed per successful completion (0 < ratio ≤ 100).
    pub ratio: f64,
    /// Requeues always allowed per minute, however few jobs succeed.
    pub min_per_minute: u32,
    /// Whether manual retries (API, CLI, dashboard) count against it and wait too; by default
    /// only automatic ones do.
    pub apply_to_manual: bool,
}

impl Eq for BudgetConfig {}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_minute: 10,
            apply_to_manual: false,
        }
    }
}

/// What a binding sets of automatic retry and its brakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Brakes {
    /// Its jobs are retried by the sweeper when due (with `[auto_retry] enabled`).
    pub auto_retry: bool,
    pub breaker: Option<BreakerConfig>,
    pub budget: Option<BudgetConfig>,
    /// Requeues per second at most (a retry-all trickles; unlimited when `None`).
    pub max_requeues_per_second: Option<u32>,
}

/// Largest settings accepted (a typo of a few zeros is refused, not obeyed).
const MAX_SECONDS: u32 = 7 * 24 * 3600;
const MAX_COUNT: u32 = 1_000_000;

impl BreakerConfig {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.failure_rate;
        if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
            return Err(format!(
                "breaker.failure_rate must be > 0 and <= 1, not {rate}"
            ));
        }
        for (name, v, min) in [
            ("window_seconds", self.window_seconds, 1),
            ("open_seconds", self.open_seconds, 1),
            ("max_open_seconds", self.max_open_seconds, 1),
        ] {
            if !(min..=MAX_SECONDS).contains(&v) {
                return Err(format!(
                    "breaker.{name} must be between {min} and {MAX_SECONDS}, not {v}"
                ));
            }
        }
        for (name, v) in [
            ("min_outcomes", self.min_outcomes),
            ("half_open_probes", self.half_open_probes),
        ] {
            if !(1..=MAX_COUNT).contains(&v) {
                return Err(format!(
                    "breaker.{name} must be between 1 and {MAX_COUNT}, not {v}"
                ));
            }
        }
        if self.max_open_seconds < self.open_seconds {
            return Err(format!(
                "breaker.max_open_seconds ({}) must be at least open_seconds ({})",
                self.max_open_seconds, self.open_seconds
            ));
        }
        Ok(())
    }
}

impl BudgetConfig {
    pub fn validate(&self) -> Result<(), String> {
        let r = self.ratio;
        if !(r.is_finite() && r > 0.0 && r <= 100.0) {
            return Err(format!("budget.ratio must be > 0 and <= 100, not {r}"));
        }
        if self.min_per_minute > MAX_COUNT {
            return Err(format!(
                "budget.min_per_minute must be at most {MAX_COUNT}, not {}",
                self.min_per_minute
            ));
        }
        Ok(())
    }
}

impl Brakes {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        if let Some(b) = &self.budget {
            b.validate()?;
        }
        if let Some(r) = self.max_requeues_per_second
            && !(1..=MAX_COUNT).contains(&r)
        {
            return Err(format!(
                "max_requeues_per_second must be between 1 and {MAX_COUNT}, not {r}"
            ));
        }
        Ok(())
    }

    /// Whether the budget applies to a retry by `actor`.
    pub fn budget_for(&self, automatic: bool) -> Option<&BudgetConfig> {
        self.budget
            .as_ref()
            .filter(|b| automatic || b.apply_to_manual)
    }
}

/// A breaker's key: the binding's pattern and the failure type, joined by `|` (a pattern
/// never holds one).
pub fn breaker_key(pattern: &str, failure_type: &str) -> String {
    format!("{pattern}|{failure_type}")
}

/// The pattern and failure type of a key, or `None` when it is not one.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let (pattern, failure_type) = key.split_once('|')?;
    (!pattern.is_empty() && !failure_type.is_empty() && !failure_type.contains('|'))
        .then_some((pattern, failure_type))
}

/// The attribute keys a policy finds the brakes under (docs/policies.md lists them).
pub const ATTR_BREAKER_STATE: &str = "retryguard.breaker.state";
pub const ATTR_BREAKER_FAILURE_RATE: &str = "retryguard.breaker.failure_rate";
pub const ATTR_BUDGET_LEFT: &str = "retryguard.budget.left";

/// The attributes of a failure judged under breaker `key` and the binding's budget, from
/// `snapshot`: none when neither brake knows anything of it.
pub fn attributes(snapshot: &Snapshot, key: &str, pattern: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(b) = snapshot.breakers.get(key) {
        out.push((ATTR_BREAKER_STATE.to_string(), b.state.clone()));
        out.push((
            ATTR_BREAKER_FAILURE_RATE.to_string(),
            format!("{:.3}", b.failure_rate),
        ));
    }
    if let Some(left) = snapshot.budget_left.get(pattern) {
        out.push((ATTR_BUDGET_LEFT.to_string(), left.to_string()));
    }
    out
}

/// Breakers of a snapshot that hold retries at `now`, by key: when each may let probes
/// through (`None`: opened by hand, until closed by hand).
pub fn holding(snapshot: &Snapshot, now: u64) -> HashMap<&str, Option<u64>> {
    snapshot
        .breakers
        .iter()
        .filter(|(_, b)| b.holds_at(now))
        .map(|(k, b)| (k.as_str(), b.half_open_at_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_breaker_takes_the_defaults_and_bad_values_are_named() {
        let b: BreakerConfig = serde_json::from_str(r#"{"failure_rate": 0.25}"#).unwrap();
        assert_eq!(
            b,
            BreakerConfig {
                failure_rate: 0.25,
                ..BreakerConfig::default()
            }
        );
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"rate": 1}"#).is_err());
        let bad = BreakerConfig {
            failure_rate: 1.5,
            ..BreakerConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("failure_rate"));
        let bad = BreakerConfig {
            max_open_seconds: 10,
            ..BreakerConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_open_seconds"));
        assert!(BreakerConfig::default().validate().is_ok());
        assert!(
            BudgetConfig {
                ratio: f64::NAN,
                ..BudgetConfig::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn keys_split_back_into_pattern_and_failure_type() {
        let k = breaker_key("payments.*", "network_error");
        assert_eq!(split_key(&k), Some(("payments.*", "network_error")));
        assert_eq!(split_key("payments.*"), None);
        assert_eq!(split_key("|x"), None);
        assert_eq!(split_key("a|b|c"), None);
    }

    #[test]
    fn the_budget_applies_to_manual_retries_only_when_asked() {
        let brakes = Brakes {
            budget: Some(BudgetConfig::default()),
            ..Brakes::default()
        };
        assert!(brakes.budget_for(true).is_some());
        assert!(brakes.budget_for(false).is_none());
        let manual = Brakes {
            budget: Some(BudgetConfig {
                apply_to_manual: true,
                ..BudgetConfig::default()
            }),
            ..Brakes::default()
        };
        assert!(manual.budget_for(false).is_some());
    }
}
