//! Shared helpers: an engine, the built-in and fixture policies, failure builders.

use std::sync::{Arc, OnceLock};

use retryguard::policy::{EngineConfig, FailureInput, LoadOptions, Policy, PolicyEngine};

/// The hostile fixture policy (policies/hostile), built by host/build.rs.
pub static HOSTILE_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_policy.wasm"));

/// The payments example policy (policies/payments), built by host/build.rs.
pub static PAYMENTS_POLICY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/payments_policy.wasm"));

/// 2026-11-29T12:00:00Z in epoch milliseconds.
pub const NOON_MS: u64 = 1_795_953_600_000;

/// One engine for the whole test binary, as in production (one per process).
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(EngineConfig::default()).expect("engine starts"))
}

pub fn default_policy() -> Arc<Policy> {
    engine().load_builtin().expect("the built-in policy loads")
}

pub fn hostile_policy(options: &LoadOptions) -> Arc<Policy> {
    engine()
        .load(HOSTILE_POLICY, options)
        .expect("the hostile fixture passes its smoke test")
}

/// A failure of `job_type` that failed at noon, with this traceback.
pub fn failure(job_type: &str, traceback: &str) -> FailureInput {
    let mut f = FailureInput {
        job_id: "job-1".into(),
        job_type: job_type.into(),
        queue: "default".into(),
        job_status: "failed".into(),
        traceback: traceback.into(),
        failed_at_ms: NOON_MS,
        first_failed_at_ms: NOON_MS,
        seed: 7,
        ..FailureInput::default()
    };
    f.fill_exception_from_traceback();
    f
}

pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
