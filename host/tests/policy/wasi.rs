//! The deny-all WASI, against a real wasm32-wasip2 guest (policies/wasi-probe) that uses
//! std's clock, env, filesystem, network, stdio and randomness and reports what it saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::policy::{Decision, EvalError, LoadError, LoadOptions, Policy, PolicyLimits};

use crate::common::*;

/// The WASI probe fixture (policies/wasi-probe), built for wasm32-wasip2 by host/build.rs.
static WASI_PROBE_POLICY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wasi_probe_policy.wasm"));

/// Roomier than a pure Rust policy's defaults: std's WASI start-up costs instructions, and
/// the first WASI call of the process starts wasmtime-wasi's runtime.
fn probe_options() -> LoadOptions {
    LoadOptions {
        limits: PolicyLimits {
            fuel: 100_000_000,
            deadline_ms: 5_000,
            ..PolicyLimits::default()
        },
        allow_wasi: true,
    }
}

fn probe_policy() -> Arc<Policy> {
    engine()
        .load(WASI_PROBE_POLICY, &probe_options())
        .expect("the WASI probe loads when WASI is allowed")
}

/// Evaluates the probe at `now_ms` for a failure with `seed`; returns its report as a map.
fn probe(policy: &Policy, now_ms: u64, seed: u64) -> HashMap<String, String> {
    let mut f = failure("app.tasks.probe", "");
    f.seed = seed;
    let eval = engine()
        .evaluate(policy, &f, &vec![], now_ms)
        .expect("the probe evaluates");
    assert_eq!(eval.decision, Decision::RetryAt { at_ms: now_ms });
    eval.classification
        .reason
        .split(' ')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn refused_unless_allowed_listing_the_interfaces() {
    let err = engine()
        .load(WASI_PROBE_POLICY, &LoadOptions::default())
        .unwrap_err();
    let LoadError::WasiNotAllowed(names) = &err else {
        panic!("expected WasiNotAllowed, got {err:?}");
    };
    for interface in [
        "wasi:cli/environment@",
        "wasi:clocks/wall-clock@",
        "wasi:filesystem/preopens@",
        "wasi:random/random@",
        "wasi:sockets/tcp@",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(interface)),
            "{interface} missing from {names:?}"
        );
    }
    assert!(err.to_string().contains("wasi:cli/environment@"), "{err}");
}

#[test]
fn loads_with_allow_wasi_and_lists_its_wasi_imports() {
    let policy = probe_policy();
    assert!(policy.uses_wasi());
    assert_eq!(policy.info().name, "wasi-probe");
    let imports = policy.imports();
    assert!(!imports.is_empty());
    assert!(
        imports.iter().all(|name| name.starts_with("wasi:")),
        "{imports:?}"
    );
    for interface in [
        "wasi:io/streams@",
        "wasi:cli/stdout@",
        "wasi:clocks/monotonic-clock@",
        "wasi:random/insecure-seed@",
    ] {
        assert!(
            imports.iter().any(|n| n.starts_with(interface)),
            "{interface} missing from {imports:?}"
        );
    }
}

#[test]
fn a_pure_policy_stays_on_the_empty_linker_even_when_wasi_is_allowed() {
    let policy = engine()
        .load(
            retryguard::policy::builtin::DEFAULT_POLICY,
            &probe_options(),
        )
        .expect("loads");
    assert!(!policy.uses_wasi());
    assert!(policy.imports().is_empty());
}

#[test]
fn sees_only_the_evaluation_now_and_nothing_of_the_host() {
    let policy = probe_policy();
    let now = NOON_MS + 1_234;
    let started = Instant::now();
    let report = probe(&policy, now, 7);
    let elapsed = started.elapsed();
    let get = |key: &str| {
        report
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from {report:?}"))
            .as_str()
    };

    assert_eq!(
        get("wall_ms"),
        now.to_string(),
        "wall clock is the evaluation's now"
    );
    assert_eq!(get("env"), "0", "no environment");
    assert_eq!(get("args"), "0", "no arguments");
    for denied in ["fs_root", "passwd", "tcp"] {
        assert!(
            get(denied).starts_with("err:"),
            "{denied} must be denied: {report:?}"
        );
    }
    assert_eq!(get("stdout"), "ok", "stdout writes succeed (discarded)");
    assert_eq!(get("stderr"), "ok", "stderr writes succeed (discarded)");
    // An hour's sleep passes on the guest's monotonic clock, not on the host's.
    assert_eq!(get("slept_ms"), "3600000");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn randomness_follows_the_failure_seed() {
    let policy = probe_policy();
    let a = probe(&policy, NOON_MS, 7);
    let again = probe(&policy, NOON_MS + 60_000, 7);
    let b = probe(&policy, NOON_MS, 8);
    for key in ["hash", "random"] {
        assert!(!a[key].starts_with("err:"), "{key}: {a:?}");
        assert_eq!(a[key], again[key], "{key}: same seed, same bytes");
        assert_ne!(a[key], b[key], "{key}: another seed, other bytes");
    }
    assert_eq!(a["random"].len(), 32, "16 random bytes in hex: {a:?}");
}

#[test]
fn exit_is_an_error_not_a_crash() {
    let policy = probe_policy();
    let err = engine()
        .evaluate(&policy, &failure("probe.exit", ""), &vec![], NOON_MS)
        .unwrap_err();
    assert!(
        matches!(&err, EvalError::Trap(msg) if msg.contains("wasi:cli/exit")),
        "{err:?}"
    );
    // The same policy still works afterwards.
    assert_eq!(probe(&policy, NOON_MS, 7)["env"], "0");
}

#[test]
fn a_std_wasip2_guest_fits_the_default_fuel() {
    // Documents the cost: about 32,000 units, well within a Rust policy's default.
    let policy = probe_policy();
    let eval = engine()
        .evaluate(&policy, &failure("app.tasks.probe", ""), &vec![], NOON_MS)
        .expect("evaluates");
    assert!(
        eval.fuel_used < PolicyLimits::default().fuel,
        "{}",
        eval.fuel_used
    );
}
