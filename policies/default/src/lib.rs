//! retryguard's built-in default retry policy.
//!
//! The logic is plain Rust, usable natively (the host links this crate as an rlib to parse
//! Python tracebacks and to benchmark native against wasm) and, on `wasm32`, exported as a
//! `retry-policy` component (see `wit/policy.wit`) through the guest SDK
//! (`retryguard-policy-sdk`, policies/sdk), whose native types ([`FailureView`],
//! [`Classification`], [`Decision`], …) this crate re-exports:
//!
//! - [`traceback`] finds the outermost exception in a Python traceback as RQ records it;
//! - [`classify()`] turns a failure into a failure type (`network_error`, `validation_error`, …)
//!   with static, case-insensitive pattern tables ([`rules`]);
//! - [`decide()`] turns a classified failure into "retry at" or "hold", with exponential backoff;
//! - [`Params`] are the per-binding settings, [`describe`] documents them;
//! - [`DefaultPolicy`] is all of it as the SDK's `Policy`, exported on `wasm32`.
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

// The allocator: off for a crate that links this one as a library (feature `component`, on
// by default), unless it keeps it (`bump-alloc`). `component.rs` is the policy as the SDK's
// `Policy`, exported under the same feature.
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
mod alloc;
mod component;

pub use classify::{Classification, classify};
pub use component::DefaultPolicy;
pub use decide::{Decision, HoldKind, cooldown_ms, decide};
pub use params::{ParamSpec, Params, PolicyInfo, describe};
pub use rules::FailureType;
// The contract's native types and the reason bounds, shared with every policy (policies/sdk).
pub use retryguard_policy_sdk::{
    FailureView, MAX_REASON_BYTES, bound_reason, truncate_on_char_boundary,
};
