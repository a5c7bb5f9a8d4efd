//! Unit tests: params, the post-processed classification, full jitter and the holds.

use super::*;

const NOON: u64 = 1_795_953_600_000; // some day, 12:00:00 UTC
const S: u64 = 1000;

fn failure(exc_type: &'static str, attempts: u32, seed: u64) -> FailureView<'static> {
    FailureView {
        job_type: "payments.tasks.charge_card",
        job_status: "failed",
        exc_type,
        failed_at_ms: NOON,
        attempts,
        seed,
        ..FailureView::default()
    }
}

/// Classifies and decides, as the component does.
fn evaluate(f: &FailureView<'_>, p: &Params) -> (Classification, Decision) {
    let c = classify(f);
    let d = decide(f, c.failure_type, c.retryable, p, NOON);
    (c, d)
}

fn retry_at(d: &Decision) -> u64 {
    match d {
        Decision::RetryAt(t) => *t,
        Decision::Hold { kind, reason } => panic!("held: {kind:?} {reason}"),
    }
}

fn hold_kind(d: &Decision) -> HoldKind {
    match d {
        Decision::RetryAt(t) => panic!("retry at {t}"),
        Decision::Hold { kind, .. } => *kind,
    }
}

/// A small xorshift generator for seeds (the tests' own randomness, not the policy's).
fn seeds(n: usize) -> Vec<u64> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        })
        .collect()
}

#[test]
fn params_defaults_specs_and_describe() {
    assert_eq!(Params::parse([]), Ok(Params::default()));
    let d = Params::default();
    assert_eq!(
        (d.max_attempts, d.cooldown_seconds, d.max_cooldown_seconds),
        (5, 30, 600)
    );
    let pairs: Vec<_> = PARAM_SPECS
        .iter()
        .map(|s| (s.name, s.default_value))
        .collect();
    assert_eq!(Params::parse(pairs), Ok(Params::default()));
    let info = describe();
    assert_eq!((info.name, info.version), ("payments", "1.0.0"));
    assert_eq!(info.params.len(), 3);
    assert_eq!(
        Params::parse([
            ("max_attempts", "0"),
            ("cooldown_seconds", "5"),
            ("max_cooldown_seconds", "5"),
        ]),
        Ok(Params {
            max_attempts: 0,
            cooldown_seconds: 5,
            max_cooldown_seconds: 5,
        })
    );
}

#[test]
fn params_refusals_name_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("max_attempt", "3")], "`max_attempt`"),
        (&[("exponential_backoff", "true")], "`exponential_backoff`"),
        (&[("retry_unknown", "true")], "`retry_unknown`"),
        (
            &[("max_attempts", "3"), ("max_attempts", "4")],
            "`max_attempts`",
        ),
        (&[("max_attempts", "")], "`max_attempts`"),
        (&[("max_attempts", "-1")], "`max_attempts`"),
        (&[("max_attempts", "1001")], "`max_attempts`"),
        (&[("cooldown_seconds", "1e3")], "`cooldown_seconds`"),
        (&[("cooldown_seconds", "2592001")], "`cooldown_seconds`"),
        (
            &[("max_cooldown_seconds", "2592001")],
            "`max_cooldown_seconds`",
        ),
        // Over the default cap of 600 without raising it.
        (&[("cooldown_seconds", "601")], "`max_cooldown_seconds`"),
    ];
    for (pairs, key) in cases {
        match Params::parse(pairs.iter().copied()) {
            Ok(p) => panic!("{pairs:?} accepted as {p:?}"),
            Err(e) => assert!(e.contains(key), "{pairs:?}: {e}"),
        }
    }
    let long = "k".repeat(10_000);
    let e = Params::parse([(long.as_str(), "1")]).unwrap_err();
    assert!(e.len() < 400);
}

#[test]
fn only_network_errors_and_timeouts_are_retryable() {
    let p = Params::default();
    for (exc_type, failure_type) in [
        ("ConnectionRefusedError", "network_error"),
        ("requests.exceptions.ConnectionError", "network_error"),
        ("socket.gaierror", "network_error"),
        ("requests.exceptions.ReadTimeout", "timeout"),
        ("rq.timeouts.JobTimeoutException", "timeout"),
    ] {
        let (c, d) = evaluate(&failure(exc_type, 0, 1), &p);
        assert_eq!(c.failure_type, failure_type, "{exc_type}");
        assert!(c.retryable, "{exc_type}");
        let at = retry_at(&d);
        assert!((NOON..NOON + 30 * S).contains(&at), "{exc_type}: {at}");
    }
}

#[test]
fn non_network_failures_hold() {
    let p = Params::default();
    // Retryable for the default policy, not for payments: the type is kept, retryable false.
    for (exc_type, failure_type) in [
        ("TooManyRequests", "rate_limit"),
        ("psycopg2.errors.DeadlockDetected", "database_lock"),
        ("redis.exceptions.BusyLoadingError", "temporary_error"),
        ("billing.guard.GuardInProgress", "temporary_error"),
    ] {
        let (c, d) = evaluate(&failure(exc_type, 0, 1), &p);
        assert_eq!(c.failure_type, failure_type, "{exc_type}");
        assert!(!c.retryable, "{exc_type}");
        assert!(
            c.reason.starts_with(&format!(
                "{failure_type} is not retried by the payments policy"
            )),
            "{}",
            c.reason
        );
        assert!(c.reason.contains(exc_type.rsplit('.').next().unwrap_or("")));
        assert_eq!(hold_kind(&d), HoldKind::NonRetryable, "{exc_type}");
    }
    // Not retryable for either.
    for exc_type in ["ValueError", "KeyError", "TypeError", "PermissionError"] {
        let (c, d) = evaluate(&failure(exc_type, 0, 1), &p);
        assert!(!c.retryable, "{exc_type}");
        assert_eq!(hold_kind(&d), HoldKind::NonRetryable, "{exc_type}");
    }
    // Unknown, and a job that was interrupted: held for a person.
    for exc_type in ["billing.Quirk", "SystemExit"] {
        let (c, d) = evaluate(&failure(exc_type, 0, 1), &p);
        assert_eq!(c.failure_type, "unknown", "{exc_type}");
        assert_eq!(hold_kind(&d), HoldKind::UnknownFailure, "{exc_type}");
    }
    // decide() checks the type itself too: a classification from elsewhere claiming that
    // rate_limit or a custom type is retryable does not make it so.
    let f = failure("x", 0, 1);
    for failure_type in ["rate_limit", "temporary_error", "custom_thing"] {
        let d = decide(&f, failure_type, true, &p, NOON);
        assert_eq!(hold_kind(&d), HoldKind::NonRetryable, "{failure_type}");
    }
    assert_eq!(
        hold_kind(&decide(&f, "network_error", false, &p, NOON)),
        HoldKind::NonRetryable
    );
}

#[test]
fn window_doubles_up_to_the_cap() {
    let p = Params::default();
    let got: Vec<u64> = (0..=7).map(|a| window_ms(&p, a) / S).collect();
    assert_eq!(got, [30, 60, 120, 240, 480, 600, 600, 600]);
    for attempts in [63, 64, 65, u32::MAX] {
        assert_eq!(window_ms(&p, attempts), 600 * S);
    }
    let huge = Params {
        cooldown_seconds: u64::MAX,
        max_cooldown_seconds: u64::MAX,
        ..p
    };
    assert_eq!(window_ms(&huge, u32::MAX), u64::MAX);
    let zero = Params {
        cooldown_seconds: 0,
        ..p
    };
    assert_eq!(window_ms(&zero, 3), 0);
    assert_eq!(jitter_ms(&zero, 3, 12345), 0);
}

#[test]
fn jitter_stays_within_bounds() {
    let p = Params::default();
    let mut all = seeds(2_000);
    all.extend([0, 1, 2, 7, 42, u64::MAX, u64::MAX - 1]);
    for attempts in 0..8 {
        let window = window_ms(&p, attempts);
        for &seed in &all {
            let delay = jitter_ms(&p, attempts, seed);
            assert!(delay < window, "attempts {attempts}, seed {seed}: {delay}");
            assert!(delay < 600 * S, "never beyond the 10-minute cap");
        }
    }
    // Through decide: the retry time is within [failed_at, failed_at + window).
    for attempts in 0..5 {
        for &seed in &all[..200] {
            let at = retry_at(&decide(
                &failure("TimeoutError", attempts, seed),
                "timeout",
                true,
                &p,
                NOON,
            ));
            assert!((NOON..NOON + window_ms(&p, attempts)).contains(&at));
        }
    }
    // Saturating at the end of time.
    let f = FailureView {
        failed_at_ms: u64::MAX,
        ..failure("TimeoutError", 0, 9)
    };
    assert_eq!(retry_at(&decide(&f, "timeout", true, &p, 0)), u64::MAX);
}

#[test]
fn the_same_seed_gives_the_same_delay() {
    let p = Params::default();
    for seed in seeds(100) {
        for attempts in 0..5 {
            let f = failure("ConnectionResetError", attempts, seed);
            assert_eq!(evaluate(&f, &p), evaluate(&f, &p));
            assert_eq!(jitter_ms(&p, attempts, seed), jitter_ms(&p, attempts, seed));
        }
    }
    // The formula, pinned: a replay in any language must get these.
    assert_eq!(mix(0), 0xE220_A839_7B1D_CDAF);
    assert_eq!(jitter_ms(&p, 0, 0), 0xE220_A839_7B1D_CDAF % 30_000);
    assert_eq!(jitter_ms(&p, 4, 7), mix(7) % 480_000);
}

#[test]
fn different_seeds_spread_over_the_window() {
    let p = Params::default();
    let all = seeds(10_000);
    for attempts in [0, 2, 5] {
        let window = window_ms(&p, attempts);
        let delays: Vec<u64> = all.iter().map(|&s| jitter_ms(&p, attempts, s)).collect();
        let mut distinct = delays.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // 10,000 uniform draws from the 30,000 ms of the smallest window give ~8,500
        // distinct values (birthday collisions); more for the larger windows.
        assert!(distinct.len() > 8_000, "{} distinct delays", distinct.len());
        // Ten equal slices of the window each get 10% ± 2% of the delays.
        let mut slices = [0usize; 10];
        for d in &delays {
            let slice = usize::try_from(d * 10 / window).unwrap_or(9);
            slices[slice.min(9)] += 1;
        }
        for (i, n) in slices.iter().enumerate() {
            assert!(
                (800..=1200).contains(n),
                "attempts {attempts}, slice {i}: {n}"
            );
        }
        // Consecutive seeds (a naive host's 0, 1, 2, …) spread as well.
        let consecutive: Vec<u64> = (0..1000).map(|s| jitter_ms(&p, attempts, s)).collect();
        let low = consecutive.iter().filter(|&&d| d < window / 2).count();
        assert!(
            (400..=600).contains(&low),
            "{low} of 1000 in the lower half"
        );
    }
}

#[test]
fn max_attempts_holds_after_five_retries() {
    let p = Params::default();
    for attempts in 0..5 {
        retry_at(&evaluate(&failure("ConnectionError", attempts, 3), &p).1);
    }
    match evaluate(&failure("ConnectionError", 5, 3), &p).1 {
        Decision::Hold { kind, reason } => {
            assert_eq!(kind, HoldKind::MaxAttempts);
            assert_eq!(
                reason,
                "max attempts reached (5 of 5 retries made): manual intervention needed"
            );
        }
        Decision::RetryAt(t) => panic!("retry at {t}"),
    }
    let never = Params {
        max_attempts: 0,
        ..p
    };
    match evaluate(&failure("ConnectionError", 0, 3), &never).1 {
        Decision::Hold { kind, reason } => {
            assert_eq!(kind, HoldKind::MaxAttempts);
            assert!(reason.contains("max_attempts=0"));
        }
        Decision::RetryAt(t) => panic!("retry at {t}"),
    }
}

#[test]
fn reasons_are_bounded() {
    let long = "x".repeat(10_000);
    match decide(&failure("x", 0, 0), &long, false, &Params::default(), NOON) {
        Decision::Hold { reason, .. } => assert!(reason.len() <= 1024),
        Decision::RetryAt(t) => panic!("retry at {t}"),
    }
    let message = format!("too many requests {}", "é".repeat(5_000));
    let f = FailureView {
        exc_message: &message,
        ..failure("RuntimeError", 0, 0)
    };
    let c = classify(&f);
    assert_eq!(c.failure_type, "rate_limit");
    assert!(c.reason.len() <= 1024);
}
