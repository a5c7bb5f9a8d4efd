//! `retryguard policy …`: check and evaluate policy components locally, and manage the policy
//! registry of a running server.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::policy::{EngineConfig, LoadOptions, PolicyEngine, PolicyLimits};

mod bind;
mod check;
mod eval;
mod example;
mod experiments;
mod registry;
mod replay;
mod resolve;

/// Largest file the CLI reads as a failure or traceback.
const MAX_INPUT_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load, validate and smoke-evaluate a policy component; print what it is.
    ///
    /// Exit code 0 when the policy is valid, 1 with the reason when it is not.
    Check(check::CheckArgs),
    /// Classify one failure and decide on it; print one JSON object.
    Eval(eval::EvalArgs),
    /// The example policy components shipped inside this binary: list them, or write one to
    /// a file (`retryguard policy example payments -o payments.wasm`), ready for `policy
    /// check` and `policy upload`.
    ///
    /// Exit code 0 written (or listed), 1 when the file cannot be written (it exists without
    /// --force, ...), 2 an unknown name, no -o, or -o - to a terminal.
    Example(example::ExampleArgs),
    /// The policy registry of a running server: upload, list, bind, unbind, rollback, …
    /// Wherever a command takes a policy, it may be named by its digest, a unique digest
    /// prefix (8+ hex characters) or its name; an ambiguous one exits 2, listing the
    /// candidates.
    #[command(flatten)]
    Registry(registry::RegistryCommand),
}

impl PolicyCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Check(args) => check::run(args),
            Self::Eval(args) => eval::run(args),
            Self::Example(args) => example::run(args),
            Self::Registry(command) => registry::run(command),
        }
    }
}

/// Sandbox settings for a policy given on the command line.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// CPU limit per evaluation, in fuel units (about one per wasm instruction).
    #[arg(long, default_value_t = PolicyLimits::default().fuel)]
    fuel: u64,
    /// Wall-clock deadline per evaluation, in milliseconds.
    #[arg(long, default_value_t = PolicyLimits::default().deadline_ms)]
    deadline_ms: u64,
    /// Linear memory cap per evaluation, in bytes.
    #[arg(long, default_value_t = PolicyLimits::default().memory_bytes)]
    memory_bytes: usize,
    /// Allow a component that imports WASI (e.g. built with componentize-py).
    #[arg(long)]
    allow_wasi: bool,
}

impl LimitArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            limits: PolicyLimits {
                fuel: self.fuel,
                deadline_ms: self.deadline_ms,
                memory_bytes: self.memory_bytes,
                ..PolicyLimits::default()
            },
            allow_wasi: self.allow_wasi,
        }
    }
}

fn engine() -> anyhow::Result<PolicyEngine> {
    // The CLI evaluates one thing at a time: a small pool starts faster.
    let config = EngineConfig {
        max_concurrent_evaluations: 4,
        ..EngineConfig::default()
    };
    Ok(PolicyEngine::new(config)?)
}

/// Reads a file, refusing one larger than `max` bytes.
fn read_capped(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= max,
        "{} is {len} bytes, over the {max}-byte limit",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
