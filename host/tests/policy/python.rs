//! The Python example policy (policies/python, built with componentize-py by
//! `policies/python/build.sh`): loaded with the WASI opt-in and limits of its own, it must
//! classify and decide exactly as the built-in default policy, of which it is a port, on every
//! row of the contract table and across params and attempts.
//!
//! The component is not built by host/build.rs (it needs componentize-py, from PyPI): the
//! test reads `$RETRYGUARD_PYTHON_POLICY`, else `target/python-policy/policy.wasm`. When it is
//! missing the tests fail under CI (`CI=true`), naming the build script, and are skipped with
//! a printed reason elsewhere.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use retryguard::policy::{Evaluation, FailureInput, LoadError, LoadOptions, Policy, PolicyLimits};

use crate::common::*;
use crate::contract::{case_failure, contract_table};

/// The limits the Python policy runs under: CPython interprets the whole port, so it needs
/// far more than a Rust policy. Measured (docs/policies.md, "Limits"): at most 1.43 million
/// fuel and 40 ms per evaluation over the contract table on a busy 2-core machine, and more
/// than 8 MiB but less than 16 MiB of memory; these leave about 14x, 12x and 2x of headroom.
pub fn python_limits() -> PolicyLimits {
    PolicyLimits {
        fuel: 20_000_000,
        deadline_ms: 500,
        memory_bytes: 32 << 20,
        ..PolicyLimits::default()
    }
}

fn python_options() -> LoadOptions {
    LoadOptions {
        limits: python_limits(),
        allow_wasi: true,
    }
}

fn component_path() -> PathBuf {
    match std::env::var_os("RETRYGUARD_PYTHON_POLICY") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/python-policy/policy.wasm"),
    }
}

/// The component's bytes; `None` (after saying why) when it was not built, outside CI.
fn python_bytes() -> Option<&'static [u8]> {
    static BYTES: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let path = component_path();
            match std::fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    let why = format!(
                        "the Python policy component {} is missing ({e}): build it with \
                         policies/python/build.sh (needs Python 3.11 and componentize-py from \
                         PyPI), or point RETRYGUARD_PYTHON_POLICY at one",
                        path.display()
                    );
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "{why} (under CI=true this is a failure)"
                    );
                    println!("SKIPPED: {why}");
                    eprintln!("SKIPPED: {why}");
                    None
                }
            }
        })
        .as_deref()
}

/// The Python policy, loaded (compiled and smoke-tested) once for the whole test binary.
fn python_policy() -> Option<Arc<Policy>> {
    static POLICY: OnceLock<Option<Arc<Policy>>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let bytes = python_bytes()?;
            let started = Instant::now();
            let policy = engine()
                .load(bytes, &python_options())
                .unwrap_or_else(|e| panic!("the Python policy does not load: {e}"));
            println!(
                "python policy: {} bytes, loaded (compiled + smoke-tested) in {:.1} s",
                bytes.len(),
                started.elapsed().as_secs_f64()
            );
            Some(policy)
        })
        .clone()
}

fn evaluate(policy: &Policy, f: &FailureInput, pairs: &[(&str, &str)]) -> Evaluation {
    engine()
        .evaluate(policy, f, &params(pairs), NOON_MS)
        .unwrap_or_else(|e| panic!("{} ({:?}): evaluation failed: {e}", f.job_type, f.exc_type))
}

/// Runs `f` through both policies; records any difference.
fn compare(
    python: &Policy,
    default: &Policy,
    what: &str,
    f: &FailureInput,
    pairs: &[(&str, &str)],
    wrong: &mut Vec<String>,
    costs: &mut Vec<(u64, Duration)>,
) {
    let started = Instant::now();
    let py = evaluate(python, f, pairs);
    costs.push((py.fuel_used, started.elapsed()));
    let rs = evaluate(default, f, pairs);
    if py.classification != rs.classification {
        wrong.push(format!(
            "{what}: classification\n  python: {:?}\n  rust:   {:?}",
            py.classification, rs.classification
        ));
    }
    if py.decision != rs.decision {
        wrong.push(format!(
            "{what}: decision\n  python: {:?}\n  rust:   {:?}",
            py.decision, rs.decision
        ));
    }
}

fn report(label: &str, costs: &[(u64, Duration)]) {
    let n = costs.len().max(1) as u64;
    let fuel_max = costs.iter().map(|c| c.0).max().unwrap_or(0);
    let fuel_mean = costs.iter().map(|c| c.0).sum::<u64>() / n;
    let time_max = costs.iter().map(|c| c.1).max().unwrap_or_default();
    let time_mean = costs.iter().map(|c| c.1).sum::<Duration>() / n as u32;
    println!(
        "python policy, {label}: {} evaluations, fuel mean {fuel_mean} max {fuel_max}, time \
         mean {:.2} ms max {:.2} ms",
        costs.len(),
        time_mean.as_secs_f64() * 1e3,
        time_max.as_secs_f64() * 1e3
    );
    let limits = python_limits();
    assert!(
        fuel_max * 4 <= limits.fuel,
        "fuel {fuel_max} leaves under 4x headroom in the limit {}",
        limits.fuel
    );
}

#[test]
fn python_policy_needs_the_wasi_opt_in() {
    let Some(bytes) = python_bytes() else { return };
    let err = engine()
        .load(
            bytes,
            &LoadOptions {
                limits: python_limits(),
                allow_wasi: false,
            },
        )
        .unwrap_err();
    assert!(matches!(err, LoadError::WasiNotAllowed(_)), "{err:?}");
    let policy = python_policy().expect("loads");
    assert!(policy.uses_wasi());
    // Its description is its own; its params are the default policy's.
    let info = policy.info();
    assert_eq!(info.name, "default-python");
    let names = |p: &Policy| -> Vec<(String, String)> {
        p.info()
            .params
            .iter()
            .map(|s| (s.name.clone(), s.default_value.clone()))
            .collect()
    };
    assert_eq!(names(&policy), names(&default_policy()));
}

#[test]
fn python_policy_matches_the_default_on_the_contract_table() {
    let Some(python) = python_policy() else {
        return;
    };
    let default = default_policy();
    let mut wrong = Vec::new();
    let (mut from_fields, mut from_traceback) = (Vec::new(), Vec::new());
    let cases = contract_table();
    assert!(cases.len() >= 45);
    for case in &cases {
        // As the host passes it: type and message parsed from the traceback.
        let f = case_failure(case);
        let what = format!("{} (fields)", case.file);
        compare(
            &python,
            &default,
            &what,
            &f,
            &[],
            &mut wrong,
            &mut from_fields,
        );
        // Only the traceback: the policy parses it itself.
        let f = FailureInput {
            exc_type: String::new(),
            exc_message: String::new(),
            ..f
        };
        let what = format!("{} (traceback)", case.file);
        compare(
            &python,
            &default,
            &what,
            &f,
            &[],
            &mut wrong,
            &mut from_traceback,
        );
    }
    report("contract table, from fields", &from_fields);
    report("contract table, from the traceback", &from_traceback);
    assert!(
        wrong.is_empty(),
        "{} differences:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn python_policy_matches_the_default_across_params_and_attempts() {
    let Some(python) = python_policy() else {
        return;
    };
    let default = default_policy();
    let cases = contract_table();
    // One row of each failure type.
    let mut picked: Vec<_> = Vec::new();
    for case in &cases {
        if !picked
            .iter()
            .any(|c: &&crate::contract::Case| c.failure_type == case.failure_type)
        {
            picked.push(case);
        }
    }
    let param_sets: &[&[(&str, &str)]] = &[
        &[("max_attempts", "5"), ("cooldown_seconds", "10")],
        &[("exponential_backoff", "false"), ("max_attempts", "4")],
        &[("retry_unknown", "true"), ("max_cooldown_seconds", "100")],
        &[("max_attempts", "0")],
        // Invalid at decision time: held as policy-says-no, same reason.
        &[("max_attempts", "many")],
    ];
    let mut wrong = Vec::new();
    let mut costs = Vec::new();
    for case in &picked {
        for pairs in param_sets {
            for attempts in [0, 1, 3, 4, 9] {
                let mut f = case_failure(case);
                f.attempts = attempts;
                f.failed_at_ms = NOON_MS - u64::from(attempts) * 1_000;
                let what = format!("{} attempts={attempts} params={pairs:?}", case.file);
                compare(&python, &default, &what, &f, pairs, &mut wrong, &mut costs);
            }
        }
    }
    report("params x attempts", &costs);
    assert!(
        wrong.is_empty(),
        "{} differences:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn python_policy_validates_params_as_the_default_does() {
    let Some(python) = python_policy() else {
        return;
    };
    let default = default_policy();
    let long_key = "k".repeat(300);
    let long_value = format!("{}é\n\"x'", "9".repeat(70));
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![
            ("max_attempts", "1000"),
            ("max_cooldown_seconds", "2592000"),
        ],
        vec![("max_attempt", "3")],
        vec![(long_key.as_str(), "1")],
        vec![("max_attempts", "3"), ("max_attempts", "4")],
        vec![("max_attempts", "")],
        vec![("max_attempts", "-1")],
        vec![("max_attempts", "1001")],
        vec![("max_attempts", "99999999999999999999999")],
        vec![("cooldown_seconds", "1e3")],
        vec![("cooldown_seconds", "2592001")],
        vec![("exponential_backoff", "True")],
        vec![("retry_unknown", "yes")],
        vec![("cooldown_seconds", "120"), ("max_cooldown_seconds", "60")],
        vec![("cooldown_seconds", "7200")],
        vec![("max_attempts", long_value.as_str())],
        vec![("max_attempts", "\u{0}\t")],
    ];
    for pairs in &cases {
        let py = engine()
            .validate_params(&python, &params(pairs))
            .expect("evaluates");
        let rs = engine()
            .validate_params(&default, &params(pairs))
            .expect("evaluates");
        assert_eq!(py, rs, "{pairs:?}");
    }
}
