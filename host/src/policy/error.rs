//! Errors of the policy engine. Every way a policy can misbehave has its own variant, so a
//! caller (and a test) can tell them apart without reading text; none of them is a panic.

use std::time::Duration;

/// Why a policy could not be loaded. Each is the uploader's problem (an HTTP 4xx later),
/// except `Engine`, which is the host's.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy is {size} bytes, over the {cap}-byte size cap")]
    TooLarge { size: usize, cap: usize },
    #[error(
        "not a WebAssembly component: {0} (a core module must be wrapped into a component, e.g. with `wasm-tools component new`)"
    )]
    NotAComponent(&'static str),
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "the component imports WASI ({}) and WASI is not allowed for this policy; Rust policies built for wasm32-unknown-unknown need none",
        .0.join(", ")
    )]
    WasiNotAllowed(Vec<String>),
    #[error("the component imports what the host does not provide: {}", .0.join(", "))]
    UnsupportedImports(Vec<String>),
    #[error("the component does not implement world retryguard:policy/retry-policy@0.1.0: {0}")]
    WrongWorld(String),
    #[error("the policy failed its smoke evaluation ({case}): {source}")]
    SmokeFailed {
        case: &'static str,
        #[source]
        source: EvalError,
    },
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
}

/// Why one evaluation of a policy failed. The caller turns every one of these into a hold:
/// a broken policy must never cause a retry.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("policy ran out of fuel (limit {limit} units)")]
    OutOfFuel { limit: u64 },
    #[error("policy exceeded its {deadline:?} deadline")]
    Deadline { deadline: Duration },
    #[error("policy exceeded its memory cap of {cap} bytes")]
    MemoryCap { cap: usize },
    #[error("policy overflowed its call stack")]
    StackOverflow,
    #[error("policy trapped: {0}")]
    Trap(String),
    #[error("policy returned malformed output: {0}")]
    MalformedOutput(String),
    #[error("policy could not be instantiated: {0}")]
    Instantiate(String),
    #[error("the engine has no free instance slot ({0}); retry later")]
    Busy(String),
}

impl EvalError {
    /// A short stable code for metrics and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::Deadline { .. } => "deadline",
            Self::MemoryCap { .. } => "memory_cap",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
            Self::MalformedOutput(_) => "malformed_output",
            Self::Instantiate(_) => "instantiate",
            Self::Busy(_) => "busy",
        }
    }
}

/// The engine itself could not start (bad configuration, no virtual memory for the pool).
#[derive(Debug, thiserror::Error)]
#[error("could not start the policy engine: {0}")]
pub struct EngineError(pub String);
