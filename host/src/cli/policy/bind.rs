//! The body of `retryguard policy bind`: the policies, and the binding's automatic retry and
//! brakes (docs/auto-retry.md). A bind replaces the whole binding, as `PUT` does: flags left
//! out are not set.

use clap::Args;
use serde_json::{Value, json};

use crate::cli::jobs::Reported;

/// A binding's automatic retry and brakes.
#[derive(Debug, Args)]
pub(crate) struct BrakeArgs {
    /// Retry this binding's jobs automatically when due (needs `[auto_retry] enabled` on a
    /// server).
    #[arg(long)]
    auto_retry: bool,
    /// A circuit breaker per failure type: a JSON object of the fields to change from the
    /// defaults, e.g. '{"min_outcomes": 5}', or '{}' for all the defaults.
    #[arg(long, value_name = "JSON")]
    breaker: Option<String>,
    /// A retry budget, e.g. '{"ratio": 0.2, "min_per_minute": 10, "apply_to_manual": true}'.
    #[arg(long, value_name = "JSON")]
    budget: Option<String>,
    /// Requeues per second at most (a retry-all trickles).
    #[arg(long, value_name = "N")]
    max_requeues_per_second: Option<u32>,
}

impl BrakeArgs {
    /// Adds the flags given to `body`.
    pub(super) fn add_to(&self, body: &mut Value) -> Result<(), Reported> {
        if self.auto_retry {
            body["auto_retry"] = json!(true);
        }
        for (name, text) in [("breaker", &self.breaker), ("budget", &self.budget)] {
            if let Some(text) = text {
                let v: Value = serde_json::from_str(text).map_err(|e| {
                    eprintln!("error: --{name} is not a JSON object: {e}");
                    Reported
                })?;
                if !v.is_object() {
                    eprintln!("error: --{name} must be a JSON object, e.g. '{{}}'");
                    return Err(Reported);
                }
                body[name] = v;
            }
        }
        if let Some(n) = self.max_requeues_per_second {
            body["max_requeues_per_second"] = json!(n);
        }
        Ok(())
    }
}
