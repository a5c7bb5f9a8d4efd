//! Every sandbox limit in one place: per-policy limits and the engine-wide pool.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::LoadError;

/// Limits applied to every evaluation of one policy, before any guest code runs. A Rust
/// policy needs little; a Python or JavaScript one needs far more, so each policy has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyLimits {
    /// CPU limit in wasmtime fuel units (about one per wasm instruction), for one whole
    /// evaluation (instantiate, classify, decide). Deterministic: a replay of the same input
    /// reaches the same verdict.
    pub fuel: u64,
    /// Wall-clock backstop for one evaluation, in milliseconds (epoch interruption).
    pub deadline_ms: u64,
    /// Linear memory cap in bytes, over all memories of the instance.
    pub memory_bytes: usize,
    /// Most core and component instances one evaluation may create.
    pub instances: usize,
    /// Most tables one evaluation may create.
    pub tables: usize,
    /// Most elements in any one table.
    pub table_elements: usize,
}

impl PolicyLimits {
    /// Upper bounds that no per-policy setting may exceed.
    pub const MAX_FUEL: u64 = 10_000_000_000;
    pub const MAX_DEADLINE_MS: u64 = 10_000;
    /// The most core instances one evaluation can hold: the engine's pool gives a component
    /// at most this many (`max_core_instances_per_component` in `engine.rs`), so a larger
    /// `instances` would be a promise the pool cannot keep.
    pub const MAX_INSTANCES: usize = 32;
    /// The most elements one table can hold in the engine's pool (wasmtime's pooling
    /// default, which `engine.rs` keeps).
    pub const MAX_TABLE_ELEMENTS: usize = 20_000;

    /// The wall-clock deadline as a `Duration`.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Refuses limits that are zero, beyond the hard bounds, or beyond what the engine's
    /// instance pool was sized for.
    pub fn validate(&self, pool: &EngineConfig) -> Result<(), LoadError> {
        let bad = |msg: String| Err(LoadError::InvalidLimits(msg));
        if self.fuel == 0 || self.fuel > Self::MAX_FUEL {
            return bad(format!("fuel must be 1..={}", Self::MAX_FUEL));
        }
        if self.deadline_ms == 0 || self.deadline_ms > Self::MAX_DEADLINE_MS {
            return bad(format!("deadline_ms must be 1..={}", Self::MAX_DEADLINE_MS));
        }
        if self.memory_bytes == 0 || self.memory_bytes > pool.max_memory_bytes {
            return bad(format!(
                "memory_bytes must be 1..={} (the engine's pool slot size)",
                pool.max_memory_bytes
            ));
        }
        if self.instances == 0 || self.tables == 0 || self.table_elements == 0 {
            return bad("instances, tables and table_elements must be at least 1".into());
        }
        if self.instances > Self::MAX_INSTANCES {
            return bad(format!(
                "instances must be 1..={} (the most the engine's pool gives one evaluation)",
                Self::MAX_INSTANCES
            ));
        }
        if self.table_elements > Self::MAX_TABLE_ELEMENTS {
            return bad(format!(
                "table_elements must be 1..={} (the most the engine's pool holds in a table)",
                Self::MAX_TABLE_ELEMENTS
            ));
        }
        Ok(())
    }
}

impl Default for PolicyLimits {
    /// Sized for a Rust policy (the default one uses well under 1% of each).
    fn default() -> Self {
        Self {
            fuel: 10_000_000,
            deadline_ms: 50,
            memory_bytes: 16 << 20,
            instances: 16,
            tables: 8,
            table_elements: 20_000,
        }
    }
}

/// Engine-wide settings: the pooling allocator's slots and the epoch tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Evaluations that may run at the same moment (pool slots). More concurrent
    /// evaluations than this wait for a slot, never fail.
    pub max_concurrent_evaluations: u32,
    /// The largest linear memory any policy may be given (the pool's slot size).
    pub max_memory_bytes: usize,
    /// Largest policy accepted, in bytes.
    pub max_policy_bytes: usize,
    /// Epoch tick in milliseconds: the granularity of deadlines.
    pub epoch_tick_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent_evaluations: 64,
            max_memory_bytes: 256 << 20,
            max_policy_bytes: 32 << 20,
            epoch_tick_ms: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_beyond_the_pool_are_refused() {
        let pool = EngineConfig::default();
        assert!(PolicyLimits::default().validate(&pool).is_ok());
        let at_most = PolicyLimits {
            instances: PolicyLimits::MAX_INSTANCES,
            table_elements: PolicyLimits::MAX_TABLE_ELEMENTS,
            memory_bytes: pool.max_memory_bytes,
            ..PolicyLimits::default()
        };
        assert!(at_most.validate(&pool).is_ok());
        for (limits, says) in [
            (
                PolicyLimits {
                    instances: 1_000_000,
                    ..PolicyLimits::default()
                },
                "instances",
            ),
            (
                PolicyLimits {
                    instances: PolicyLimits::MAX_INSTANCES + 1,
                    ..PolicyLimits::default()
                },
                "instances",
            ),
            (
                PolicyLimits {
                    table_elements: PolicyLimits::MAX_TABLE_ELEMENTS + 1,
                    ..PolicyLimits::default()
                },
                "table_elements",
            ),
            (
                PolicyLimits {
                    memory_bytes: pool.max_memory_bytes + 1,
                    ..PolicyLimits::default()
                },
                "memory_bytes",
            ),
        ] {
            let e = limits.validate(&pool).unwrap_err().to_string();
            assert!(e.contains(says), "{limits:?}: {e}");
        }
    }
}
