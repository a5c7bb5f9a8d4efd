//! Policies: sandboxed WebAssembly components that classify failures and decide retries.
//!
//! `engine` compiles and runs them under the limits of `limits`; `types` is the host's view
//! of the contract in `wit/`; `wasi` is the deny-all WASI of policies loaded with `allow_wasi`;
//! `artifacts` keeps compiled policies on disk across restarts.
//! Nothing outside this module sees a wasmtime type.

mod artifacts;
mod bindings;
pub mod builtin;
mod digest;
mod engine;
mod error;
mod limits;
mod sandbox;
pub mod types;
mod wasi;

pub use artifacts::CacheCounts;
pub use digest::Digest;
pub use engine::{Evaluation, LoadOptions, Policy, PolicyEngine, WORLD};
pub use error::{EngineError, EvalError, LoadError};
pub use limits::{EngineConfig, PolicyLimits};
pub use types::{Classification, Decision, FailureInput, HoldKind, Params, PolicyInfo};
