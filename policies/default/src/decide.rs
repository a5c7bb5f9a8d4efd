//! The decision: retry (and when), or hold for a person.

use crate::FailureView;
use crate::params::Params;
/// What the policy decides and why it holds: the contract's types, from the SDK.
pub use retryguard_policy_sdk::{Decision, HoldKind};

/// The wait before retry number `attempts + 1`, in milliseconds:
/// `cooldown_seconds × 2^attempts` with exponential backoff, else `cooldown_seconds`, capped at
/// `max_cooldown_seconds`. Saturating: never overflows, whatever the inputs.
pub fn cooldown_ms(p: &Params, attempts: u32) -> u64 {
    let seconds = if p.exponential_backoff {
        saturating_shl(p.cooldown_seconds, attempts)
    } else {
        p.cooldown_seconds
    };
    let seconds = seconds.min(p.max_cooldown_seconds);
    // `seconds.saturating_mul(1000)`, without the 128-bit multiplication that wasm32 makes of
    // an overflow-checked one.
    if seconds > u64::MAX / 1000 {
        u64::MAX
    } else {
        seconds * 1000
    }
}

/// `value × 2^shift`, saturating at `u64::MAX`.
fn saturating_shl(value: u64, shift: u32) -> u64 {
    if value == 0 {
        0
    } else if shift >= u64::BITS || value > u64::MAX >> shift {
        u64::MAX
    } else {
        value << shift
    }
}

/// Decides whether and when to retry a classified failure.
///
/// Holds, in this order: a non-retryable failure type → [`HoldKind::NonRetryable`]; `unknown`
/// unless `retry_unknown` → [`HoldKind::UnknownFailure`]; `attempts ≥ max_attempts` →
/// [`HoldKind::MaxAttempts`]. Otherwise retries at `failed_at_ms + cooldown_ms(attempts)`:
/// counted from the most recent failure, so a job that failed at 12:00:00 is retried at
/// 12:01:00, after failing again at once at 12:03:00, then 12:07:00, and then held.
///
/// `now_ms` does not move the time: a retry time at or before now means "retry now". No jitter
/// (the failure's seed is for policies that want it).
pub fn decide(
    f: &FailureView<'_>,
    failure_type: &str,
    retryable: bool,
    p: &Params,
    now_ms: u64,
) -> Decision {
    let _ = now_ms; // the host compares the retry time with now, not the policy
    let shown_type = crate::truncate_on_char_boundary(failure_type, 64);
    if failure_type == "unknown" {
        if !p.retry_unknown {
            return Decision::hold(
                HoldKind::UnknownFailure,
                "failure type unknown: why the job failed, or whether its side effects \
                 happened, is not known, and retry_unknown is false, so a person must decide"
                    .to_owned(),
            );
        }
    } else if !retryable {
        let reason = [
            "failure type ",
            shown_type,
            " is not retryable: a retry would fail the same way",
        ];
        return Decision::hold(HoldKind::NonRetryable, reason.concat());
    }
    if f.attempts >= p.max_attempts {
        let reason = if p.max_attempts == 0 {
            "retries are disabled (max_attempts=0): manual intervention needed".to_owned()
        } else {
            let mut reason = String::with_capacity(80);
            reason.push_str("max attempts reached (");
            push_decimal(&mut reason, f.attempts);
            reason.push_str(" of ");
            push_decimal(&mut reason, p.max_attempts);
            reason.push_str(" retries made): manual intervention needed");
            reason
        };
        return Decision::hold(HoldKind::MaxAttempts, reason);
    }
    Decision::RetryAt(f.failed_at_ms.saturating_add(cooldown_ms(p, f.attempts)))
}

/// Appends `n` in decimal (without `core::fmt`, which is slow in wasm).
fn push_decimal(out: &mut String, n: u32) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    out.push(char::from(b'0' + (n % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: u64 = 1_795_953_600_000; // some day, 12:00:00 UTC
    const MIN: u64 = 60_000;

    fn failure(attempts: u32, failed_at_ms: u64) -> FailureView<'static> {
        FailureView {
            job_status: "failed",
            failed_at_ms,
            attempts,
            ..FailureView::default()
        }
    }

    fn retry_at(d: Decision) -> u64 {
        match d {
            Decision::RetryAt(t) => t,
            Decision::Hold { kind, reason } => panic!("held: {kind:?} {reason}"),
        }
    }

    fn hold_kind(d: Decision) -> HoldKind {
        match d {
            Decision::RetryAt(t) => panic!("retry at {t}"),
            Decision::Hold { kind, .. } => kind,
        }
    }

    #[test]
    fn backoff_schedule_exponential() {
        let p = Params {
            max_cooldown_seconds: 1_000_000,
            ..Params::default()
        };
        let got: Vec<u64> = (0..=5).map(|a| cooldown_ms(&p, a) / 1000).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920]);
    }

    #[test]
    fn backoff_schedule_fixed() {
        let p = Params {
            exponential_backoff: false,
            ..Params::default()
        };
        let got: Vec<u64> = (0..=5).map(|a| cooldown_ms(&p, a) / 1000).collect();
        assert_eq!(got, [60; 6]);
    }

    #[test]
    fn backoff_is_capped_and_saturating() {
        let p = Params::default(); // cap 3600
        let got: Vec<u64> = (0..=8).map(|a| cooldown_ms(&p, a) / 1000).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        for attempts in [63, 64, 65, u32::MAX] {
            assert_eq!(cooldown_ms(&p, attempts), 3_600_000);
        }
        let huge = Params {
            cooldown_seconds: u64::MAX,
            max_cooldown_seconds: u64::MAX,
            ..Params::default()
        };
        assert_eq!(cooldown_ms(&huge, u32::MAX), u64::MAX);
        let f = FailureView {
            failed_at_ms: u64::MAX,
            ..failure(0, 0)
        };
        assert_eq!(retry_at(decide(&f, "timeout", true, &huge, 0)), u64::MAX);
    }

    #[test]
    fn design_example_from_the_most_recent_failure() {
        let p = Params::default();
        // Fails at 12:00:00 → attempt 1 at 12:01:00.
        assert_eq!(
            retry_at(decide(&failure(0, NOON), "network_error", true, &p, NOON)),
            NOON + MIN
        );
        // Attempt 1 fails at once (12:01:00) → attempt 2 at 12:03:00.
        let failed = NOON + MIN;
        assert_eq!(
            retry_at(decide(
                &failure(1, failed),
                "network_error",
                true,
                &p,
                failed
            )),
            NOON + 3 * MIN
        );
        // Attempt 2 fails at once (12:03:00) → attempt 3 at 12:07:00.
        let failed = NOON + 3 * MIN;
        assert_eq!(
            retry_at(decide(
                &failure(2, failed),
                "network_error",
                true,
                &p,
                failed
            )),
            NOON + 7 * MIN
        );
        // Attempt 3 fails → max attempts reached.
        let d = decide(
            &failure(3, NOON + 7 * MIN),
            "network_error",
            true,
            &p,
            NOON + 7 * MIN,
        );
        match d {
            Decision::Hold { kind, reason } => {
                assert_eq!(kind, HoldKind::MaxAttempts);
                assert!(reason.contains("manual intervention"), "{reason}");
            }
            Decision::RetryAt(t) => panic!("retry at {t}"),
        }
    }

    #[test]
    fn now_does_not_move_the_retry_time() {
        let p = Params::default();
        let late = NOON + 24 * 60 * MIN;
        assert_eq!(
            retry_at(decide(&failure(0, NOON), "timeout", true, &p, late)),
            NOON + MIN
        );
        assert_eq!(
            retry_at(decide(&failure(0, NOON), "timeout", true, &p, 0)),
            NOON + MIN
        );
    }

    #[test]
    fn max_attempts_zero_never_retries() {
        let p = Params {
            max_attempts: 0,
            ..Params::default()
        };
        let d = decide(&failure(0, NOON), "rate_limit", true, &p, NOON);
        match d {
            Decision::Hold { kind, reason } => {
                assert_eq!(kind, HoldKind::MaxAttempts);
                assert!(reason.contains("max_attempts=0"));
            }
            Decision::RetryAt(t) => panic!("retry at {t}"),
        }
    }

    #[test]
    fn hold_kinds_and_their_order() {
        let p = Params::default();
        // Non-retryable comes before max attempts.
        assert_eq!(
            hold_kind(decide(
                &failure(99, NOON),
                "validation_error",
                false,
                &p,
                NOON
            )),
            HoldKind::NonRetryable
        );
        // Unknown comes before max attempts.
        assert_eq!(
            hold_kind(decide(&failure(99, NOON), "unknown", false, &p, NOON)),
            HoldKind::UnknownFailure
        );
        // Unknown is held even if a classifier marked it retryable.
        assert_eq!(
            hold_kind(decide(&failure(0, NOON), "unknown", true, &p, NOON)),
            HoldKind::UnknownFailure
        );
        assert_eq!(
            hold_kind(decide(&failure(3, NOON), "timeout", true, &p, NOON)),
            HoldKind::MaxAttempts
        );
        // A failure type the default policy does not know: its retryable flag decides.
        assert_eq!(
            retry_at(decide(&failure(0, NOON), "custom_thing", true, &p, NOON)),
            NOON + MIN
        );
        assert_eq!(
            hold_kind(decide(&failure(0, NOON), "custom_thing", false, &p, NOON)),
            HoldKind::NonRetryable
        );
    }

    #[test]
    fn retry_unknown_retries_unknown_within_max_attempts() {
        let p = Params {
            retry_unknown: true,
            ..Params::default()
        };
        assert_eq!(
            retry_at(decide(&failure(0, NOON), "unknown", false, &p, NOON)),
            NOON + MIN
        );
        assert_eq!(
            hold_kind(decide(&failure(3, NOON), "unknown", false, &p, NOON)),
            HoldKind::MaxAttempts
        );
        // retry_unknown does not make a non-retryable type retryable.
        assert_eq!(
            hold_kind(decide(&failure(0, NOON), "logic_error", false, &p, NOON)),
            HoldKind::NonRetryable
        );
    }

    #[test]
    fn decimals_and_saturation() {
        for n in [0, 7, 10, 99, 1000, u32::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for value in [0, 1, 2, 60, u64::MAX >> 1, u64::MAX] {
            for shift in [0, 1, 31, 62, 63, 64, 65, u32::MAX] {
                let expected = 1u64
                    .checked_shl(shift)
                    .map_or(if value == 0 { 0 } else { u64::MAX }, |f| {
                        value.saturating_mul(f)
                    });
                assert_eq!(saturating_shl(value, shift), expected, "{value} << {shift}");
            }
        }
        let p = Params {
            cooldown_seconds: 0,
            ..Params::default()
        };
        assert_eq!(cooldown_ms(&p, 100), 0);
        let d = decide(
            &failure(7, NOON),
            "timeout",
            true,
            &Params {
                max_attempts: 12,
                ..Params::default()
            },
            NOON,
        );
        assert_eq!(retry_at(d), NOON + 3_600_000);
        let d = decide(
            &failure(12, NOON),
            "timeout",
            true,
            &Params {
                max_attempts: 12,
                ..Params::default()
            },
            NOON,
        );
        match d {
            Decision::Hold { reason, .. } => assert_eq!(
                reason,
                "max attempts reached (12 of 12 retries made): manual intervention needed"
            ),
            Decision::RetryAt(t) => panic!("retry at {t}"),
        }
    }

    #[test]
    fn reasons_are_bounded() {
        let long = "x".repeat(10_000);
        match decide(&failure(0, NOON), &long, false, &Params::default(), NOON) {
            Decision::Hold { reason, .. } => assert!(reason.len() <= crate::MAX_REASON_BYTES),
            Decision::RetryAt(t) => panic!("retry at {t}"),
        }
    }
}
