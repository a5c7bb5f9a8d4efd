//! The default policy's contract, through the compiled component: real Python tracebacks
//! to failure types, the backoff schedule, hold kinds and params validation.

use std::path::PathBuf;

use retryguard::policy::{Decision, Evaluation, FailureInput, HoldKind};

use crate::common::*;

/// One row of `tests/fixtures/contract/expected.tsv`.
pub struct Case {
    pub file: String,
    pub exc_type: String,
    pub failure_type: String,
    pub retryable: bool,
    pub job_status: String,
    pub traceback: String,
}

pub fn contract_table() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contract");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    table
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "expected.tsv row {line:?}");
            let traceback = std::fs::read_to_string(dir.join(cols[0])).expect("fixture file");
            Case {
                file: cols[0].to_string(),
                exc_type: cols[1].to_string(),
                failure_type: cols[2].to_string(),
                retryable: cols[3] == "true",
                job_status: cols[4].to_string(),
                traceback,
            }
        })
        .collect()
}

pub fn case_failure(case: &Case) -> FailureInput {
    let mut f = failure("app.tasks.contract", &case.traceback);
    f.job_status = case.job_status.clone();
    f
}

#[test]
fn every_real_traceback_is_classified_as_the_table_says() {
    let cases = contract_table();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let policy = default_policy();
    let mut wrong = Vec::new();
    for case in &cases {
        let f = case_failure(case);
        assert_eq!(
            f.exc_type, case.exc_type,
            "{}: parsed exception type",
            case.file
        );
        let eval = engine()
            .evaluate(&policy, &f, &vec![], NOON_MS)
            .expect("the default policy never fails");
        let c = &eval.classification;
        if c.failure_type != case.failure_type || c.retryable != case.retryable {
            wrong.push(format!(
                "{}: got {} (retryable {}), want {} ({}); reason: {}",
                case.file, c.failure_type, c.retryable, case.failure_type, case.retryable, c.reason
            ));
        }
        assert!(!c.reason.is_empty(), "{}: a reason is given", case.file);
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

const CONN_REFUSED: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 4, in pay\n    sock.connect(addr)\nConnectionRefusedError: [Errno 111] Connection refused\n";
const VALUE_ERROR: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 4, in pay\n    raise ValueError('amount must be positive')\nValueError: amount must be positive\n";
const KILLED: &str = "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ";

fn decide(f: &FailureInput, pairs: &[(&str, &str)], now: u64) -> Evaluation {
    engine()
        .evaluate(&default_policy(), f, &params(pairs), now)
        .expect("evaluates")
}

fn retry_failure(attempts: u32) -> FailureInput {
    let mut f = failure("app.tasks.pay", CONN_REFUSED);
    f.attempts = attempts;
    f
}

const S: u64 = 1000;

#[test]
fn backoff_doubles_from_the_last_failure_up_to_max_attempts() {
    let expected = [Some(60), Some(120), Some(240), None, None, None];
    for (attempts, want) in expected.iter().enumerate() {
        let eval = decide(&retry_failure(attempts as u32), &[], NOON_MS);
        match want {
            Some(secs) => assert_eq!(
                eval.decision,
                Decision::RetryAt {
                    at_ms: NOON_MS + secs * S
                },
                "attempts {attempts}"
            ),
            None => assert!(
                matches!(
                    &eval.decision,
                    Decision::Hold {
                        kind: HoldKind::MaxAttempts,
                        ..
                    }
                ),
                "attempts {attempts}: {:?}",
                eval.decision
            ),
        }
    }
}

#[test]
fn backoff_without_exponential_is_flat_and_custom_params_apply() {
    for attempts in 0..5 {
        let eval = decide(
            &retry_failure(attempts),
            &[("exponential_backoff", "false"), ("max_attempts", "5")],
            NOON_MS,
        );
        assert_eq!(
            eval.decision,
            Decision::RetryAt {
                at_ms: NOON_MS + 60 * S
            },
            "attempts {attempts}"
        );
    }
    // cooldown 10 s doubling, capped at 50 s, 6 attempts.
    let custom = [
        ("cooldown_seconds", "10"),
        ("max_cooldown_seconds", "50"),
        ("max_attempts", "6"),
    ];
    let expected = [10, 20, 40, 50, 50, 50];
    for (attempts, secs) in expected.iter().enumerate() {
        let eval = decide(&retry_failure(attempts as u32), &custom, NOON_MS);
        assert_eq!(
            eval.decision,
            Decision::RetryAt {
                at_ms: NOON_MS + secs * S
            },
            "attempts {attempts}"
        );
    }
    let eval = decide(&retry_failure(6), &custom, NOON_MS);
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::MaxAttempts,
            ..
        }
    ));
}

#[test]
fn the_cap_applies_to_the_default_schedule() {
    let eval = decide(&retry_failure(9), &[("max_attempts", "20")], NOON_MS);
    assert_eq!(
        eval.decision,
        Decision::RetryAt {
            at_ms: NOON_MS + 3600 * S
        }
    );
}

/// The README's default policy: fail 12:00:00 → attempt 1 at 12:01:00 → fails again at once → attempt 2 at
/// 12:03:00 → attempt 3 at 12:07:00 → max attempts reached.
#[test]
fn cooldown_counts_from_the_most_recent_failure() {
    let mut f = retry_failure(0);
    let mut expected_attempt_times = Vec::new();
    for _ in 0..3 {
        let eval = decide(&f, &[], f.failed_at_ms);
        let Decision::RetryAt { at_ms } = eval.decision else {
            panic!("expected a retry, got {:?}", eval.decision)
        };
        expected_attempt_times.push((at_ms - NOON_MS) / S);
        // The retry runs at once and fails again at once.
        f.attempts += 1;
        f.last_attempt_at_ms = Some(at_ms);
        f.failed_at_ms = at_ms;
    }
    assert_eq!(expected_attempt_times, [60, 180, 420]);
    let eval = decide(&f, &[], f.failed_at_ms);
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::MaxAttempts,
            ..
        }
    ));

    // A job that waited in a backlog and failed again long after its retry still cools down.
    let mut late = retry_failure(1);
    late.last_attempt_at_ms = Some(NOON_MS - 600 * S);
    let eval = decide(&late, &[], NOON_MS);
    assert_eq!(
        eval.decision,
        Decision::RetryAt {
            at_ms: NOON_MS + 120 * S
        }
    );
}

#[test]
fn zero_max_attempts_never_retries() {
    let eval = decide(&retry_failure(0), &[("max_attempts", "0")], NOON_MS);
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::MaxAttempts,
            ..
        }
    ));
}

#[test]
fn non_retryable_and_unknown_failures_are_held() {
    let eval = decide(&failure("app.tasks.pay", VALUE_ERROR), &[], NOON_MS);
    assert!(!eval.classification.retryable);
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::NonRetryable,
            ..
        }
    ));

    let killed = failure("app.tasks.pay", KILLED);
    let eval = decide(&killed, &[], NOON_MS);
    assert_eq!(eval.classification.failure_type, "unknown");
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::UnknownFailure,
            ..
        }
    ));

    // retry_unknown lets an unknown failure through, with the usual cooldown…
    let eval = decide(&killed, &[("retry_unknown", "true")], NOON_MS);
    assert_eq!(
        eval.decision,
        Decision::RetryAt {
            at_ms: NOON_MS + 60 * S
        }
    );
    // …but never a non-retryable one.
    let eval = decide(
        &failure("app.tasks.pay", VALUE_ERROR),
        &[("retry_unknown", "true")],
        NOON_MS,
    );
    assert!(matches!(
        eval.decision,
        Decision::Hold {
            kind: HoldKind::NonRetryable,
            ..
        }
    ));
}

#[test]
fn validate_params_refuses_typos_and_nonsense() {
    let policy = default_policy();
    let check = |pairs: &[(&str, &str)]| {
        engine()
            .validate_params(&policy, &params(pairs))
            .expect("validate-params runs")
    };
    assert_eq!(check(&[]), Ok(()));
    assert_eq!(
        check(&[("max_attempts", "5"), ("cooldown_seconds", "30")]),
        Ok(())
    );
    for (pairs, names) in [
        (&[("max_attempt", "5")][..], "max_attempt"),
        (&[("max_attempts", "five")][..], "max_attempts"),
        (&[("max_attempts", "-1")][..], "max_attempts"),
        (&[("exponential_backoff", "yes")][..], "exponential_backoff"),
        (
            &[("cooldown_seconds", "100"), ("max_cooldown_seconds", "10")][..],
            "max_cooldown_seconds",
        ),
        (
            &[("max_attempts", "1"), ("max_attempts", "2")][..],
            "max_attempts",
        ),
    ] {
        let verdict = check(pairs);
        assert!(
            matches!(&verdict, Err(msg) if msg.contains(names)),
            "{pairs:?}: {verdict:?}"
        );
    }
}

#[test]
fn describe_lists_every_param() {
    let info = default_policy().info().clone();
    assert_eq!(info.name, "default");
    let names: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "max_attempts",
        "cooldown_seconds",
        "exponential_backoff",
        "max_cooldown_seconds",
        "retry_unknown",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn the_default_policy_imports_nothing_and_is_small() {
    let policy = default_policy();
    assert!(policy.imports().is_empty(), "{:?}", policy.imports());
    assert!(policy.size() < 200_000, "{} bytes", policy.size());
}
