//! The payments example policy (policies/payments) through the engine: the default's failure
//! types, only network errors and timeouts retried, full jitter from the host's seed.

use std::sync::Arc;

use retryguard::policy::types::derive_seed;
use retryguard::policy::{Decision, HoldKind, LoadOptions, Policy};

use crate::common::*;
use crate::contract::{case_failure, contract_table};

fn payments_policy() -> Arc<Policy> {
    engine()
        .load(PAYMENTS_POLICY, &LoadOptions::default())
        .expect("the payments policy loads with the default (Rust-sized) limits")
}

#[test]
fn describes_itself_and_imports_nothing() {
    let policy = payments_policy();
    assert!(policy.imports().is_empty());
    let info = policy.info();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("payments", "1.0.0")
    );
    let specs: Vec<(&str, &str)> = info
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.default_value.as_str()))
        .collect();
    assert_eq!(
        specs,
        [
            ("max_attempts", "5"),
            ("cooldown_seconds", "30"),
            ("max_cooldown_seconds", "600")
        ]
    );
    let check = |pairs: &[(&str, &str)]| {
        engine()
            .validate_params(&policy, &params(pairs))
            .expect("evaluates")
    };
    assert_eq!(check(&[("max_attempts", "7")]), Ok(()));
    let refused = check(&[("retry_unknown", "true")]).unwrap_err();
    assert!(refused.contains("`retry_unknown`"), "{refused}");
    let refused = check(&[("cooldown_seconds", "900")]).unwrap_err();
    assert!(refused.contains("`max_cooldown_seconds`"), "{refused}");
}

#[test]
fn contract_table_only_network_errors_and_timeouts_retry_within_the_window() {
    let payments = payments_policy();
    let default = default_policy();
    let mut wrong = Vec::new();
    let mut max_fuel = 0;
    for case in contract_table() {
        let f = case_failure(&case);
        let ours = engine()
            .evaluate(&payments, &f, &vec![], NOON_MS)
            .expect("evaluates");
        let theirs = engine()
            .evaluate(&default, &f, &vec![], NOON_MS)
            .expect("evaluates");
        max_fuel = max_fuel.max(ours.fuel_used);
        let (c, d) = (&ours.classification, &ours.decision);
        let retried = matches!(case.failure_type.as_str(), "network_error" | "timeout");
        let ok = c.failure_type == theirs.classification.failure_type
            && c.retryable == (retried && case.retryable)
            && match d {
                Decision::RetryAt { at_ms } => {
                    c.retryable && (NOON_MS..NOON_MS + 30_000).contains(at_ms)
                }
                Decision::Hold { kind, .. } => {
                    !c.retryable
                        && *kind
                            == if c.failure_type == "unknown" {
                                HoldKind::UnknownFailure
                            } else {
                                HoldKind::NonRetryable
                            }
                }
            };
        if !ok {
            wrong.push(format!("{}: {c:?} {d:?}", case.file));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!("payments policy: at most {max_fuel} fuel per evaluation over the contract table");
    assert!(max_fuel < 2_000_000, "{max_fuel}");
}

#[test]
fn jitter_follows_the_hosts_seed() {
    let policy = payments_policy();
    let mut times = Vec::new();
    for job in 0..200 {
        let job_id = format!("payment-{job}");
        let mut f = failure("payments.tasks.charge_card", CONN_RESET);
        f.job_id = job_id.clone();
        f.attempts = 2;
        f.seed = derive_seed(&job_id, 2);
        let eval = engine()
            .evaluate(&policy, &f, &vec![], NOON_MS)
            .expect("evaluates");
        let Decision::RetryAt { at_ms } = eval.decision else {
            panic!("held: {:?}", eval.decision);
        };
        // Window for the third retry: min(600, 30 × 2²) = 120 s.
        assert!((NOON_MS..NOON_MS + 120_000).contains(&at_ms), "{at_ms}");
        // A replay gets the same time.
        let again = engine()
            .evaluate(&policy, &f, &vec![], NOON_MS)
            .expect("evaluates");
        assert_eq!(again.decision, eval.decision);
        times.push(at_ms);
    }
    times.sort_unstable();
    times.dedup();
    assert!(times.len() > 190, "jobs that failed together spread out");
    let early = times.iter().filter(|&&t| t < NOON_MS + 60_000).count();
    assert!(
        (60..=140).contains(&early),
        "{early} of 200 in the first half"
    );

    // After five retries: held.
    let mut f = failure("payments.tasks.charge_card", CONN_RESET);
    f.attempts = 5;
    let eval = engine()
        .evaluate(&policy, &f, &vec![], NOON_MS)
        .expect("evaluates");
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::MaxAttempts,
            ..
        }
    ));
}

const CONN_RESET: &str = "Traceback (most recent call last):\n  File \"/app/payments.py\", line 12, in charge_card\n    resp = session.post(url, json=body)\nConnectionResetError: [Errno 104] Connection reset by peer\n";
