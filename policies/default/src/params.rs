//! Per-binding settings, and the policy's description of itself.
//!
//! A binding (job type → policy) carries params as key/value text. [`Params::parse`] is
//! strict: a typo is refused when the binding is written, not discovered when a job fails.

use core::fmt::Display;
use core::str::FromStr;
/// The contract's `param-spec` and `policy-info`, from the SDK.
pub use retryguard_policy_sdk::{ParamSpec, PolicyInfo};

/// The most retries a binding may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// The longest cooldown a binding may set: 30 days.
pub const MAX_COOLDOWN_LIMIT_SECONDS: u64 = 30 * 24 * 60 * 60;

/// The default policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Retries retryguard may make for one job (0 = never retry). Default 3.
    pub max_attempts: u32,
    /// Wait before the first retry, counted from the most recent failure. Default 60.
    pub cooldown_seconds: u64,
    /// Double the wait after each retry (60, 120, 240, …). Default true.
    pub exponential_backoff: bool,
    /// The longest wait backoff may reach. Default 3600.
    pub max_cooldown_seconds: u64,
    /// Retry `unknown` failures too (as if they were retryable). Default false: an unknown
    /// failure may have had side effects, so a person decides.
    pub retry_unknown: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            cooldown_seconds: 60,
            exponential_backoff: true,
            max_cooldown_seconds: 3600,
            retry_unknown: false,
        }
    }
}

/// Every parameter, with its default (kept equal to [`Params::default`] by a test).
pub static PARAM_SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "max_attempts",
        default_value: "3",
        description: "Retries retryguard may make for one job before holding it for manual \
                      intervention; 0 never retries. At most 1000.",
    },
    ParamSpec {
        name: "cooldown_seconds",
        default_value: "60",
        description: "Seconds to wait before the first retry, counted from the job's most \
                      recent failure (its ended_at). At most 2592000 (30 days).",
    },
    ParamSpec {
        name: "exponential_backoff",
        default_value: "true",
        description: "true doubles the wait after each retry (cooldown_seconds x 2^attempts); \
                      false waits cooldown_seconds every time.",
    },
    ParamSpec {
        name: "max_cooldown_seconds",
        default_value: "3600",
        description: "The longest wait backoff may reach; at least cooldown_seconds, at most \
                      2592000 (30 days).",
    },
    ParamSpec {
        name: "retry_unknown",
        default_value: "false",
        description: "true retries failures classified unknown (including jobs killed or \
                      stopped mid-run, whose side effects are unknown); false holds them for \
                      a person.",
    },
];

/// Describes the policy: name `default`, version `1.0.0`, and [`PARAM_SPECS`].
pub fn describe() -> PolicyInfo {
    PolicyInfo {
        name: "default",
        version: "1.0.0",
        description: "retryguard's built-in policy. Classifies a failure by its outermost Python \
                      exception (type, then message, then HTTP status) into network_error, \
                      timeout, rate_limit, database_lock or temporary_error (retryable), \
                      validation_error, logic_error, data_not_found, permission_error or \
                      configuration_error (not retryable), or unknown; a non-retryable match \
                      wins over a retryable one, and jobs killed, stopped or abandoned mid-run \
                      are unknown. Retryable failures are retried up to max_attempts times, \
                      each after a cooldown counted from the most recent failure, doubling \
                      from cooldown_seconds up to max_cooldown_seconds; everything else is \
                      held for a person.",
        params: PARAM_SPECS,
    }
}

impl Params {
    /// Parses a binding's params over the defaults.
    ///
    /// Refuses, with a message naming the key: an unknown key, a key given twice, a number
    /// that is not plain decimal digits or is out of range (`max_attempts` ≤ 1000, cooldowns ≤
    /// 30 days), a bool other than `true`/`false`, and `max_cooldown_seconds` below
    /// `cooldown_seconds`.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Params, String> {
        let mut p = Params::default();
        let mut seen = [false; 5];
        for (key, value) in pairs {
            let index = PARAM_SPECS
                .iter()
                .position(|spec| spec.name == key)
                .ok_or_else(|| {
                    format!(
                        "unknown param `{}`; known params: max_attempts, cooldown_seconds, \
                         exponential_backoff, max_cooldown_seconds, retry_unknown",
                        crate::truncate_on_char_boundary(key, 128)
                    )
                })?;
            if let Some(seen) = seen.get_mut(index) {
                if *seen {
                    return Err(format!("param `{key}` is given more than once"));
                }
                *seen = true;
            }
            match key {
                "max_attempts" => {
                    p.max_attempts = number(key, value, MAX_ATTEMPTS_LIMIT)?;
                }
                "cooldown_seconds" => {
                    p.cooldown_seconds = number(key, value, MAX_COOLDOWN_LIMIT_SECONDS)?;
                }
                "max_cooldown_seconds" => {
                    p.max_cooldown_seconds = number(key, value, MAX_COOLDOWN_LIMIT_SECONDS)?;
                }
                "exponential_backoff" => p.exponential_backoff = boolean(key, value)?,
                _ => p.retry_unknown = boolean(key, value)?,
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
    let shown = crate::truncate_on_char_boundary(value, 64);
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

/// `true` or `false`, exactly.
fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "param `{key}` must be true or false, got {:?}",
            crate::truncate_on_char_boundary(value, 64)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(pairs: &[(&str, &str)]) -> String {
        match Params::parse(pairs.iter().copied()) {
            Ok(p) => panic!("{pairs:?} accepted as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(Params::parse([]), Ok(Params::default()));
        let d = Params::default();
        assert_eq!(
            (d.max_attempts, d.cooldown_seconds, d.exponential_backoff),
            (3, 60, true)
        );
        assert_eq!((d.max_cooldown_seconds, d.retry_unknown), (3600, false));
    }

    #[test]
    fn specs_match_defaults_and_parse() {
        let pairs: Vec<_> = PARAM_SPECS
            .iter()
            .map(|s| (s.name, s.default_value))
            .collect();
        assert_eq!(Params::parse(pairs), Ok(Params::default()));
        let info = describe();
        assert_eq!((info.name, info.version), ("default", "1.0.0"));
        assert_eq!(info.params.len(), 5);
    }

    #[test]
    fn all_keys_parse() {
        let p = Params::parse([
            ("retry_unknown", "true"),
            ("max_attempts", "0"),
            ("cooldown_seconds", "5"),
            ("exponential_backoff", "false"),
            ("max_cooldown_seconds", "5"),
        ]);
        assert_eq!(
            p,
            Ok(Params {
                max_attempts: 0,
                cooldown_seconds: 5,
                exponential_backoff: false,
                max_cooldown_seconds: 5,
                retry_unknown: true,
            })
        );
        let p = Params::parse([
            ("max_attempts", "1000"),
            ("max_cooldown_seconds", "2592000"),
        ]);
        assert!(p.is_ok());
    }

    #[test]
    fn refusals_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("max_attempt", "3")], "`max_attempt`"),
            (&[("Max_Attempts", "3")], "`Max_Attempts`"),
            (
                &[("max_attempts", "3"), ("max_attempts", "4")],
                "`max_attempts`",
            ),
            (&[("max_attempts", "")], "`max_attempts`"),
            (&[("max_attempts", "-1")], "`max_attempts`"),
            (&[("max_attempts", "+3")], "`max_attempts`"),
            (&[("max_attempts", " 3")], "`max_attempts`"),
            (&[("max_attempts", "3.0")], "`max_attempts`"),
            (&[("max_attempts", "1001")], "`max_attempts`"),
            (
                &[("max_attempts", "99999999999999999999999")],
                "`max_attempts`",
            ),
            (&[("cooldown_seconds", "1e3")], "`cooldown_seconds`"),
            (&[("cooldown_seconds", "2592001")], "`cooldown_seconds`"),
            (
                &[("max_cooldown_seconds", "2592001")],
                "`max_cooldown_seconds`",
            ),
            (&[("exponential_backoff", "True")], "`exponential_backoff`"),
            (&[("exponential_backoff", "1")], "`exponential_backoff`"),
            (&[("retry_unknown", "yes")], "`retry_unknown`"),
            (&[("retry_unknown", "")], "`retry_unknown`"),
            (
                &[("cooldown_seconds", "120"), ("max_cooldown_seconds", "60")],
                "`max_cooldown_seconds`",
            ),
            // Over the default cap of 3600 without raising it.
            (&[("cooldown_seconds", "7200")], "`max_cooldown_seconds`"),
        ];
        for (pairs, key) in cases {
            let e = refused(pairs);
            assert!(e.contains(key), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn long_garbage_is_quoted_briefly() {
        let key = "k".repeat(10_000);
        let e = refused(&[(&key, "1")]);
        assert!(e.len() < 400);
        let value = "é".repeat(10_000);
        let e = refused(&[("max_attempts", &value)]);
        assert!(e.len() < 400);
    }
}
