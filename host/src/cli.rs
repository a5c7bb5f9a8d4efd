//! The `retryguard` command line: one file per subcommand under `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod auth;
mod brakes;
mod demo;
mod jobs;
mod policy;
mod remote;
mod serve;

/// Safe retries for failed background jobs, judged by sandboxed WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "retryguard", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and evaluate retry policies (WebAssembly components).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the HTTP API over the RQ Redis (config: ./retryguard.toml, RETRYGUARD_* env).
    Serve(serve::ServeArgs),
    /// Talk to a running `retryguard serve`: list, show, retry failed jobs, and counts.
    Jobs(jobs::JobsArgs),
    /// Make bearer tokens for `[auth] tokens`.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// The audit trail without a server: query its records, today's retry stats, or run a
    /// writer on its own (reads the Redis and audit directory of --config and RETRYGUARD_*).
    Audit(audit::AuditArgs),
    /// Write realistic failed RQ jobs into a Redis, to try retryguard without a deployment.
    Demo(demo::DemoArgs),
    /// The circuit breakers of a running `retryguard serve`: list them, or open, close or
    /// reset one by hand.
    Breakers(brakes::BreakersArgs),
    /// The auto-retry sweeper of a running `retryguard serve`.
    AutoRetry(brakes::AutoRetryArgs),
}

/// Parses the command line and runs it. Exit codes: 0 success, 1 failure (an invalid
/// policy, an unreadable file, ...), 2 bad usage.
pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => cmd.run(),
        Command::Serve(args) => serve::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Auth(cmd) => cmd.run(),
        Command::Breakers(args) => brakes::breakers(args),
        Command::AutoRetry(args) => brakes::auto_retry(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
