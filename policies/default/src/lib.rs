//! retryguard's built-in default retry policy.
//!
//! The logic is plain Rust, usable natively (the host links this crate as an rlib to parse
//! Python tracebacks and to benchmark native against wasm) and, on `wasm32`, exported as a
//! `retry-policy` component (see `wit/policy.wit`):
//!
//! - [`traceback`] finds the outermost exception in a Python traceback as RQ records it;
//! - [`classify()`] turns a failure into a failure type (`network_error`, `validation_error`, …)
//!   with static, case-insensitive pattern tables ([`rules`]);
//! - [`decide()`] turns a classified failure into "retry at" or "hold", with exponential backoff;
//! - [`Params`] are the per-binding settings, [`describe`] documents them.
//!
//! Every evaluation runs in a fresh wasm instance, so nothing here is built lazily: all tables
//! are `static`, and the indexes over them are computed by the compiler (`index.rs`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod decide;
mod index;
pub mod params;
pub mod rules;
pub mod traceback;

// The component's exports and its allocator: off for a crate that links this one as a library
// (feature `component`, on by default); such a crate may keep the allocator (`bump-alloc`).
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
mod alloc;
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component;

pub use classify::{Classification, FailureType, classify};
pub use decide::{Decision, HoldKind, cooldown_ms, decide};
pub use params::{ParamSpec, Params, PolicyInfo, describe};

/// The most a human-readable reason may be, in bytes (the contract's limit).
pub const MAX_REASON_BYTES: usize = 1024;

/// Everything the policy looks at in one failed job: a borrowed, native view of the contract's
/// `failure` record.
///
/// Fields the default policy does not use (job id, queue, attributes, …) are left out; build
/// one with struct-update syntax from [`FailureView::default`] when only a few matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureView<'a> {
    /// The job's type, for RQ the dotted function name (`app.tasks.charge_card`).
    pub job_type: &'a str,
    /// The queue's status for the job, lower case: `failed`, `stopped`, …
    pub job_status: &'a str,
    /// The outermost exception's type as Python printed it; empty when unknown, in which case
    /// [`classify()`] parses `traceback` itself.
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
    /// Deterministic randomness from the host (unused by the default policy: no jitter).
    pub seed: u64,
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
}
