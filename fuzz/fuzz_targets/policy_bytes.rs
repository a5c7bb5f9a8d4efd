//! Policy bytes as uploaded: `PolicyEngine::load` (size cap, component header, wasmtime
//! compile, imports, world and exports, smoke evaluation), then one evaluation of what loaded.
//!
//! Asserts: no panic, whatever the bytes (a `LoadError` or a policy); a loaded policy reports
//! its own size and sha256 digest, a name and version within their caps, and every
//! evaluation of it is either a well-formed result (failure type `[a-z0-9_]{1,64}`, reasons
//! at most 1024 bytes) or an `EvalError`; the same bytes load the same way twice.
//!
//! The corpus starts from real components (the default policy, WAT-built ones): random bytes
//! rarely get past the header.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use retryguard::policy::{
    Decision, EngineConfig, LoadError, LoadOptions, PolicyEngine, PolicyLimits, builtin,
};

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(EngineConfig {
            max_concurrent_evaluations: 2,
            max_memory_bytes: 16 << 20,
            max_policy_bytes: 1 << 20,
            epoch_tick_ms: 1,
        })
        .expect("the engine starts")
    })
}

fn options() -> LoadOptions {
    LoadOptions {
        limits: PolicyLimits {
            // Tight, so a looping policy costs the fuzzer little.
            fuel: 2_000_000,
            deadline_ms: 50,
            memory_bytes: 16 << 20,
            ..PolicyLimits::default()
        },
        allow_wasi: false,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let engine = engine();
    let loaded = engine.load(bytes, &options());
    let policy = match loaded {
        Ok(policy) => policy,
        Err(LoadError::SmokeFailed { .. }) => return,
        Err(first) => {
            // Compiled components are cached by digest: a second load must agree. (Not
            // asked of a failed smoke evaluation: a deadline depends on the machine's load.)
            let again = engine.load(bytes, &options()).err().map(|e| e.to_string());
            assert_eq!(again, Some(first.to_string()));
            return;
        }
    };
    assert_eq!(policy.size(), bytes.len());
    assert_eq!(policy.digest(), retryguard::policy::Digest::of(bytes));
    assert!(policy.imports().is_empty());
    assert!(policy.info().name.len() <= 128 && policy.info().version.len() <= 64);
    for (_, failure) in builtin::smoke_failures() {
        let now = failure.failed_at_ms;
        if let Ok(e) = engine.evaluate(&policy, &failure, &Vec::new(), now) {
            let t = &e.classification.failure_type;
            assert!((1..=64).contains(&t.len()), "{t:?}");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
            assert!(e.classification.reason.len() <= 1024);
            if let Decision::Hold { reason, .. } = &e.decision {
                assert!(reason.len() <= 1024);
            }
        }
    }
});
