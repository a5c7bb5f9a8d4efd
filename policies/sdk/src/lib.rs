//! Write a retryguard retry policy in Rust.
//!
//! A policy is a WebAssembly component of the world `retry-policy` (`wit/policy.wit`). This
//! crate owns the contract's bindings and the glue around them, so a policy crate is only its
//! own logic over plain native types:
//!
//! - implement [`Policy`]: [`describe`](Policy::describe) itself,
//!   [`parse_params`](Policy::parse_params) (strictly: an unknown key is an error naming it),
//!   [`classify`](Policy::classify) a [`FailureView`] into a [`Classification`], and
//!   [`decide`](Policy::decide) a [`Decision`];
//! - call [`export_policy!`] once with the type: on `wasm32` it generates the component's four
//!   exports, natively it only checks that the type implements [`Policy`];
//! - test it natively, through the same code paths as the exports ([`exports`]).
//!
//! What the exports do around the policy's own functions: `validate-params` answers
//! [`Policy::parse_params`]'s error; `decide` parses the params first and holds
//! (`policy-says-no`, "invalid params for the NAME policy: …") when they are invalid; every
//! reason is cut to [`MAX_REASON_BYTES`] on a char boundary. Every evaluation runs in a fresh
//! instance that is thrown away afterwards, so the exports do not free their arguments (a
//! bump allocator's `dealloc` would only cost time).
//!
//! A minimal policy (`examples/minimal.rs`, which is also built as a component of its own):
//!
#![doc = concat!("```\n", include_str!("../examples/minimal.rs"), "```\n")]
//!
//! Its tests, `tests/minimal.rs`, call it natively through [`exports`].
//!
//! A policy crate is a `cdylib` (the component) and an `rlib` (its logic natively, for
//! tests), built with `cargo build --release --target wasm32-unknown-unknown`; the core
//! module is then wrapped into a component (`wasm-tools component new`, or `wit-component`
//! as `host/build.rs` does). See `docs/policies.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod exports;

#[cfg(target_arch = "wasm32")]
mod component;

/// What [`export_policy!`] expands to refers to: not part of the API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    pub use crate::component::{Component, bindings};
}

/// The most a human-readable reason may be, in bytes (the contract's limit).
pub const MAX_REASON_BYTES: usize = 1024;

/// Everything a policy looks at in one failed job: a borrowed, native view of the contract's
/// `failure` record.
///
/// Fields no policy here uses yet (job id, queue, attributes, …) are left out; build one with
/// struct-update syntax from [`FailureView::default`] when only a few matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureView<'a> {
    /// The job's type, for RQ the dotted function name (`app.tasks.charge_card`).
    pub job_type: &'a str,
    /// The queue's status for the job, lower case: `failed`, `stopped`, …
    pub job_status: &'a str,
    /// The outermost exception's type as Python printed it; empty when the host did not find
    /// one (the traceback may still hold it).
    pub exc_type: &'a str,
    /// The outermost exception's message (may be several lines, may be empty).
    pub exc_message: &'a str,
    /// The full failure text the queue recorded: a Python traceback, or RQ's own text when
    /// there was no Python exception.
    pub traceback: &'a str,
    /// When the job most recently failed (RQ: `ended_at`), epoch milliseconds UTC.
    pub failed_at_ms: u64,
    /// Retries retryguard has already made for this job (0 before the first).
    pub attempts: u32,
    /// Deterministic randomness from the host, derived from the job id and the attempt number:
    /// use it for jitter, never a clock or an RNG.
    pub seed: u64,
}

/// What [`Policy::classify`] makes of a failure: the contract's `classification` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The failure type: a well-known one (`network_error`, `timeout`, …, `unknown`) or the
    /// policy's own, lower-case ASCII letters, digits and `_`, at most 64 bytes.
    pub failure_type: &'static str,
    /// Whether a failure of this type can succeed on a later attempt.
    pub retryable: bool,
    /// One line saying why, at most [`MAX_REASON_BYTES`] (the exports cut a longer one).
    pub reason: String,
}

impl Classification {
    /// A classification, its reason cut to [`MAX_REASON_BYTES`].
    pub fn new(failure_type: &'static str, retryable: bool, reason: String) -> Self {
        Self {
            failure_type,
            retryable,
            reason: bound_reason(reason),
        }
    }

    /// Borrowed as [`Policy::decide`] receives it.
    pub fn view(&self) -> ClassificationView<'_> {
        ClassificationView {
            failure_type: self.failure_type,
            retryable: self.retryable,
            reason: &self.reason,
        }
    }
}

/// The classification [`Policy::decide`] is given: the host's copy of what `classify`
/// returned (possibly another policy's, e.g. replayed from the audit trail), so `decide` should
/// check the failure type itself rather than trust `retryable` alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassificationView<'a> {
    /// The failure type's name.
    pub failure_type: &'a str,
    /// Whether it was judged retryable.
    pub retryable: bool,
    /// The classification's reason.
    pub reason: &'a str,
}

/// Why a policy refuses to retry (the contract's `hold-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldKind {
    /// The job has used every attempt the policy allows.
    MaxAttempts,
    /// The failure will not succeed on retry.
    NonRetryable,
    /// Nobody knows why the job failed, or whether its side effects happened.
    UnknownFailure,
    /// Any other reason to say no (e.g. the binding's params are invalid).
    PolicySaysNo,
}

/// What a policy decides (the contract's `decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Retry at this time, epoch milliseconds UTC; at or before "now" means now.
    RetryAt(u64),
    /// Do not retry: a person needs to look.
    Hold {
        /// Why, for the host.
        kind: HoldKind,
        /// Why, for a person (at most [`MAX_REASON_BYTES`]).
        reason: String,
    },
}

impl Decision {
    /// A hold, its reason cut to [`MAX_REASON_BYTES`].
    pub fn hold(kind: HoldKind, reason: String) -> Self {
        Self::Hold {
            kind,
            reason: bound_reason(reason),
        }
    }
}

/// One parameter a policy understands (the contract's `param-spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// The key, e.g. `max_attempts`.
    pub name: &'static str,
    /// The value used when a binding does not set it.
    pub default_value: &'static str,
    /// What it does.
    pub description: &'static str,
}

/// What a policy says about itself (the contract's `policy-info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyInfo {
    /// A short name, e.g. `default`; also names the policy in the "invalid params" hold.
    pub name: &'static str,
    /// The policy's own version, e.g. `1.0.0`.
    pub version: &'static str,
    /// One paragraph on what it does.
    pub description: &'static str,
    /// Every parameter it accepts, with its default.
    pub params: &'static [ParamSpec],
}

/// A retry policy over native types: what [`export_policy!`] turns into the component's
/// exports.
///
/// Every function must be pure: the same input gives the same output (no clock: use `now_ms`;
/// no randomness: use [`FailureView::seed`]; no I/O). Each call runs in a fresh instance, so
/// nothing survives between calls: keep tables in `static`s, not built lazily.
pub trait Policy {
    /// The binding's params, parsed.
    type Params;

    /// The policy's name, version, description and params (the export `describe`).
    fn describe() -> PolicyInfo;

    /// Parses a binding's params (`key`/`value` pairs; keys are unique, order is not
    /// significant). Refuse unknown keys and malformed values with a message naming the key:
    /// it is what `validate-params` answers when a binding is written.
    fn parse_params(params: &[(String, String)]) -> Result<Self::Params, String>;

    /// Classifies a failure. Must not fail: a failure the policy does not recognise is
    /// `unknown`. The params are given unparsed (they were validated when the binding was
    /// written); most policies classify without them.
    fn classify(failure: &FailureView<'_>, params: &[(String, String)]) -> Classification;

    /// Decides whether and when to retry a classified failure, given the current time
    /// (epoch milliseconds UTC). Count cooldowns from [`FailureView::failed_at_ms`], not from
    /// `now_ms`: a retry time at or before `now_ms` means "retry now".
    fn decide(
        failure: &FailureView<'_>,
        classification: &ClassificationView<'_>,
        params: &Self::Params,
        now_ms: u64,
    ) -> Decision;
}

/// Exports a [`Policy`] as the `retry-policy` component: call it once, at the top level of
/// the policy's `cdylib` crate, with the type implementing [`Policy`].
///
/// On `wasm32` it generates the four exports (`describe`, `validate-params`, `classify`,
/// `decide`) and the component-type section `wit-component` reads; on other targets it only
/// checks that the type implements [`Policy`], so the crate's native build and tests are
/// unaffected. The glue is [`exports`]'s functions plus the conversion of the contract's types.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: fn() = || {
            fn implements_policy<P: $crate::Policy>() {}
            implements_policy::<$policy>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __RetryguardPolicyComponent = $crate::__private::Component<$policy>;
            $crate::__private::bindings::export!(
                __RetryguardPolicyComponent with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Cuts `s` to at most `max` bytes, on a char boundary.
pub fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts an owned reason to [`MAX_REASON_BYTES`], on a char boundary.
pub fn bound_reason(mut reason: String) -> String {
    let len = truncate_on_char_boundary(&reason, MAX_REASON_BYTES).len();
    reason.truncate(len);
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_on_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_on_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_on_char_boundary("abc", 10), "abc");
        assert_eq!(truncate_on_char_boundary("", 0), "");
        let long = "é".repeat(1000);
        let bounded = bound_reason(long);
        assert!(bounded.len() <= MAX_REASON_BYTES);
        assert_eq!(bounded.len(), 1024);
        let odd = format!("a{}", "é".repeat(1000));
        assert_eq!(bound_reason(odd).len(), 1023);
    }

    #[test]
    fn constructors_bound_the_reason() {
        let long = "x".repeat(5000);
        assert_eq!(
            Classification::new("timeout", true, long.clone())
                .reason
                .len(),
            MAX_REASON_BYTES
        );
        match Decision::hold(HoldKind::MaxAttempts, long) {
            Decision::Hold { kind, reason } => {
                assert_eq!(kind, HoldKind::MaxAttempts);
                assert_eq!(reason.len(), MAX_REASON_BYTES);
            }
            Decision::RetryAt(t) => panic!("retry at {t}"),
        }
    }
}
