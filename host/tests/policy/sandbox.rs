//! Misbehaving policies: each asserts its specific error kind, that it was stopped well
//! under a second, and that the next good evaluation still succeeds.

use std::time::{Duration, Instant};

use retryguard::policy::{
    Decision, EngineConfig, EvalError, LoadError, LoadOptions, PolicyEngine, PolicyLimits,
};

use crate::common::*;

/// Evaluates the hostile fixture for `job_type` and returns the error and how long it took.
fn hostile(job_type: &str, limits: PolicyLimits) -> (EvalError, Duration) {
    let policy = hostile_policy(&LoadOptions {
        limits,
        allow_wasi: false,
    });
    let started = Instant::now();
    let result = engine().evaluate(&policy, &failure(job_type, ""), &vec![], NOON_MS);
    let elapsed = started.elapsed();
    let err = result.expect_err("the misbehaving evaluation must fail");
    // The engine and the very same policy still work afterwards.
    let ok = engine()
        .evaluate(&policy, &failure("app.tasks.ok", ""), &vec![], NOON_MS)
        .expect("a good evaluation after a bad one");
    assert_eq!(ok.decision, Decision::RetryAt { at_ms: NOON_MS });
    (err, elapsed)
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let (err, elapsed) = hostile("hostile.loop", PolicyLimits::default());
    assert!(
        matches!(err, EvalError::OutOfFuel { limit: 10_000_000 }),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn infinite_loop_with_huge_fuel_hits_the_epoch_deadline() {
    let limits = PolicyLimits {
        fuel: PolicyLimits::MAX_FUEL,
        deadline_ms: 20,
        ..PolicyLimits::default()
    };
    let (err, elapsed) = hostile("hostile.loop", limits);
    assert!(matches!(err, EvalError::Deadline { .. }), "{err:?}");
    assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let limits = PolicyLimits {
        memory_bytes: 8 << 20,
        ..PolicyLimits::default()
    };
    let (err, elapsed) = hostile("hostile.alloc", limits);
    assert!(
        matches!(err, EvalError::MemoryCap { cap } if cap == 8 << 20),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn deep_recursion_is_stopped() {
    let (err, elapsed) = hostile("hostile.recurse", PolicyLimits::default());
    let stopped = match &err {
        EvalError::StackOverflow => true,
        // Rust keeps part of its stack in linear memory: overflowing that is an
        // out-of-bounds access.
        EvalError::Trap(msg) => msg.contains("out of bounds"),
        _ => false,
    };
    assert!(stopped, "{err:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn explicit_trap_is_an_error() {
    let (err, _) = hostile("hostile.trap", PolicyLimits::default());
    assert!(
        matches!(&err, EvalError::Trap(msg) if msg.contains("unreachable")),
        "{err:?}"
    );
}

#[test]
fn invalid_failure_type_is_malformed_output() {
    let (err, _) = hostile("hostile.bad-type", PolicyLimits::default());
    assert!(
        matches!(&err, EvalError::MalformedOutput(msg) if msg.contains("failure type")),
        "{err:?}"
    );
}

#[test]
fn oversized_reason_is_malformed_output() {
    let (err, _) = hostile("hostile.huge-reason", PolicyLimits::default());
    assert!(
        matches!(&err, EvalError::MalformedOutput(msg) if msg.contains("reason")),
        "{err:?}"
    );
}

#[test]
fn table_cap_is_enforced() {
    let capped = LoadOptions {
        limits: PolicyLimits {
            table_elements: 1,
            ..PolicyLimits::default()
        },
        allow_wasi: false,
    };
    let err = engine().load(HOSTILE_POLICY, &capped).unwrap_err();
    assert!(
        matches!(&err, LoadError::SmokeFailed { source: EvalError::Instantiate(msg), .. } if msg.contains("table")),
        "{err:?}"
    );
}

#[test]
fn policy_over_the_size_cap_is_refused() {
    let small = PolicyEngine::new(EngineConfig {
        max_policy_bytes: 1000,
        max_concurrent_evaluations: 2,
        ..EngineConfig::default()
    })
    .expect("engine");
    let err = small
        .load(HOSTILE_POLICY, &LoadOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { cap: 1000, .. }),
        "{err:?}"
    );
}

#[test]
fn limits_beyond_the_pool_are_refused() {
    let options = LoadOptions {
        limits: PolicyLimits {
            memory_bytes: EngineConfig::default().max_memory_bytes + 1,
            ..PolicyLimits::default()
        },
        allow_wasi: false,
    };
    let err = engine().load(HOSTILE_POLICY, &options).unwrap_err();
    assert!(matches!(err, LoadError::InvalidLimits(_)), "{err:?}");
}
