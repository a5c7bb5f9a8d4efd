//! An example policy for payment jobs, stricter than the default (see README.md).
//!
//! - [`classify()`] is the default policy's classification (`retryguard-policy-default`,
//!   linked as a library), post-processed: only `network_error` and `timeout` stay retryable;
//!   every other type the default calls retryable (`rate_limit`, `database_lock`,
//!   `temporary_error`, or a future one) is marked not retryable, and says why.
//! - [`decide()`] retries those two types at most `max_attempts` times (default 5), each after
//!   a delay drawn with **full jitter** from the failure's host-given `seed` ([`jitter_ms`]):
//!   uniform in `[0, min(max_cooldown_seconds, cooldown_seconds × 2^attempts))`, capped at 10
//!   minutes by default. No other randomness: the same failure always gets the same decision.
//! - [`Params`] are parsed as strictly as the default's; [`describe()`] documents them.
//! - [`PaymentsPolicy`] is all of it as the SDK's `Policy` (`retryguard-policy-sdk`), exported
//!   as the `retry-policy` component on `wasm32`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use core::fmt::Display;
use core::str::FromStr;

pub use retryguard_policy_default::params::{
    MAX_ATTEMPTS_LIMIT, MAX_COOLDOWN_LIMIT_SECONDS, ParamSpec, PolicyInfo,
};
pub use retryguard_policy_default::{
    Classification, Decision, FailureType, FailureView, HoldKind, bound_reason,
    truncate_on_char_boundary,
};

mod component;

pub use component::PaymentsPolicy;

/// The only failure types this policy retries.
pub const RETRIED_TYPES: [FailureType; 2] = [FailureType::NetworkError, FailureType::Timeout];

/// Whether this policy retries a failure of type `failure_type` (by its contract name).
pub fn is_retried_type(failure_type: &str) -> bool {
    RETRIED_TYPES.iter().any(|t| t.as_str() == failure_type)
}

/// The payments policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Retries retryguard may make for one job (0 = never retry). Default 5.
    pub max_attempts: u32,
    /// The jitter window before the first retry; it doubles after each retry. Default 30.
    pub cooldown_seconds: u64,
    /// The largest jitter window. Default 600 (10 minutes).
    pub max_cooldown_seconds: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            cooldown_seconds: 30,
            max_cooldown_seconds: 600,
        }
    }
}

/// Every parameter, with its default (kept equal to [`Params::default`] by a test).
pub static PARAM_SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "max_attempts",
        default_value: "5",
        description: "Retries retryguard may make for one job before holding it for manual \
                      intervention; 0 never retries. At most 1000.",
    },
    ParamSpec {
        name: "cooldown_seconds",
        default_value: "30",
        description: "The jitter window before the first retry, counted from the job's most \
                      recent failure: the delay is drawn uniformly from [0, cooldown_seconds x \
                      2^attempts) seconds, from the failure's seed. At most 2592000 (30 days).",
    },
    ParamSpec {
        name: "max_cooldown_seconds",
        default_value: "600",
        description: "The largest jitter window (the cap on cooldown_seconds x 2^attempts); \
                      at least cooldown_seconds, at most 2592000 (30 days).",
    },
];

/// Describes the policy: name `payments`, version `1.0.0`, and [`PARAM_SPECS`].
pub fn describe() -> PolicyInfo {
    PolicyInfo {
        name: "payments",
        version: "1.0.0",
        description: "A strict policy for payment jobs. Classifies failures exactly as the \
                      default policy does, but retries only network_error and timeout: \
                      rate_limit, database_lock, temporary_error and every other type are held \
                      as not retryable, unknown failures are held for a person. A retryable \
                      failure is retried up to max_attempts times, each after a delay drawn \
                      with full jitter from the failure's seed: uniform in [0, \
                      min(max_cooldown_seconds, cooldown_seconds x 2^attempts)) seconds after \
                      the most recent failure.",
        params: PARAM_SPECS,
    }
}

impl Params {
    /// Parses a binding's params over the defaults.
    ///
    /// Refuses, with a message naming the key: an unknown key, a key given twice, a number
    /// that is not plain decimal digits or is out of range (`max_attempts` ≤ 1000, the
    /// cooldowns ≤ 30 days), and `max_cooldown_seconds` below `cooldown_seconds`.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Params, String> {
        let mut p = Params::default();
        let mut seen = [false; 3];
        for (key, value) in pairs {
            let index = PARAM_SPECS
                .iter()
                .position(|spec| spec.name == key)
                .ok_or_else(|| {
                    format!(
                        "unknown param `{}`; known params: max_attempts, cooldown_seconds, \
                         max_cooldown_seconds",
                        truncate_on_char_boundary(key, 128)
                    )
                })?;
            if let Some(seen) = seen.get_mut(index) {
                if *seen {
                    return Err(format!("param `{key}` is given more than once"));
                }
                *seen = true;
            }
            match key {
                "max_attempts" => p.max_attempts = number(key, value, MAX_ATTEMPTS_LIMIT)?,
                "cooldown_seconds" => {
                    p.cooldown_seconds = number(key, value, MAX_COOLDOWN_LIMIT_SECONDS)?;
                }
                _ => p.max_cooldown_seconds = number(key, value, MAX_COOLDOWN_LIMIT_SECONDS)?,
            }
        }
        if p.max_cooldown_seconds < p.cooldown_seconds {
            return Err(format!(
                "param `max_cooldown_seconds` ({}) is less than `cooldown_seconds` ({}); set \
                 max_cooldown_seconds to at least cooldown_seconds",
                p.max_cooldown_seconds, p.cooldown_seconds
            ));
        }
        Ok(p)
    }
}

/// A plain decimal number (digits only: no sign, space or underscore) at most `max`.
fn number<T>(key: &str, value: &str, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    let shown = truncate_on_char_boundary(value, 64);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "param `{key}` must be a whole number of digits, got {shown:?}"
        ));
    }
    match value.parse::<T>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "param `{key}` must be at most {max}, got {shown:?}"
        )),
    }
}

/// Classifies as the default policy does, then keeps only `network_error` and `timeout`
/// retryable. A type the default calls retryable but this policy does not retry keeps its
/// name (so listings and metrics still say `rate_limit`, …) with `retryable: false`.
pub fn classify(f: &FailureView<'_>) -> Classification {
    let c = retryguard_policy_default::classify(f);
    if !c.retryable || is_retried_type(c.failure_type) {
        return c;
    }
    let reason = [
        c.failure_type,
        " is not retried by the payments policy (only network_error and timeout are): ",
        &c.reason,
    ];
    Classification {
        failure_type: c.failure_type,
        retryable: false,
        reason: bound_reason(reason.concat()),
    }
}

/// The upper end of the jitter window before retry number `attempts + 1`, in milliseconds:
/// `min(max_cooldown_seconds, cooldown_seconds × 2^attempts) × 1000`. Saturating: never
/// overflows, whatever the inputs.
pub fn window_ms(p: &Params, attempts: u32) -> u64 {
    let doubled = if p.cooldown_seconds == 0 {
        0
    } else if attempts >= u64::BITS || p.cooldown_seconds > u64::MAX >> attempts {
        u64::MAX
    } else {
        p.cooldown_seconds << attempts
    };
    doubled.min(p.max_cooldown_seconds).saturating_mul(1000)
}

/// SplitMix64's output function: spreads any seed (even 0, 1, 2, …) over all 64 bits.
pub const fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Full jitter: the delay before retry number `attempts + 1`, in milliseconds,
/// `mix(seed) mod window_ms(attempts)` (0 for an empty window) — uniform in
/// `[0, window_ms)`, the modulo's bias being under `window / 2^64` (< 2·10⁻¹⁰ for a 30-day
/// window). The seed is the host's (derived from the job id and the attempt number), so a
/// replay of the same failure gets the same delay, and jobs that failed together spread out.
pub fn jitter_ms(p: &Params, attempts: u32, seed: u64) -> u64 {
    match window_ms(p, attempts) {
        0 => 0,
        window => mix(seed) % window,
    }
}

/// Decides whether and when to retry a classified failure.
///
/// Holds, in this order: `unknown` → [`HoldKind::UnknownFailure`]; any type but
/// `network_error` and `timeout`, or one marked not retryable → [`HoldKind::NonRetryable`];
/// `attempts ≥ max_attempts` → [`HoldKind::MaxAttempts`]. Otherwise retries at
/// `failed_at_ms + jitter_ms(attempts, seed)`. `now_ms` does not move the time: a retry time
/// at or before now means "retry now".
pub fn decide(
    f: &FailureView<'_>,
    failure_type: &str,
    retryable: bool,
    p: &Params,
    now_ms: u64,
) -> Decision {
    let _ = now_ms; // the host compares the retry time with now, not the policy
    let hold = |kind, reason: String| Decision::Hold {
        kind,
        reason: bound_reason(reason),
    };
    if failure_type == FailureType::Unknown.as_str() {
        return hold(
            HoldKind::UnknownFailure,
            "failure type unknown: why the payment job failed, or whether its side effects \
             happened, is not known, so a person must decide"
                .to_owned(),
        );
    }
    if !retryable || !is_retried_type(failure_type) {
        let shown = truncate_on_char_boundary(failure_type, 64);
        return hold(
            HoldKind::NonRetryable,
            format!(
                "failure type {shown} is not retried by the payments policy: only \
                 network_error and timeout are"
            ),
        );
    }
    if f.attempts >= p.max_attempts {
        let reason = if p.max_attempts == 0 {
            "retries are disabled (max_attempts=0): manual intervention needed".to_owned()
        } else {
            format!(
                "max attempts reached ({} of {} retries made): manual intervention needed",
                f.attempts, p.max_attempts
            )
        };
        return hold(HoldKind::MaxAttempts, reason);
    }
    Decision::RetryAt(
        f.failed_at_ms
            .saturating_add(jitter_ms(p, f.attempts, f.seed)),
    )
}

#[cfg(test)]
mod tests;
