//! `retryguard audit writer`: the audit writer (and outcome tracker) on their own, without
//! the HTTP API — for a dedicated writer process, and for the crash tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::background::Background;
use crate::config::{Config, redact_url};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The config file (TOML), as for `serve`; RETRYGUARD_* variables override it.
    #[arg(long, global = true, env = "RETRYGUARD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Move the audit outbox into parquet files until SIGTERM/Ctrl-C (then flush and stop).
    /// Takes part in the writer lease like `serve` does; also records retry outcomes.
    Writer,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        AuditCommand::Writer => runtime.block_on(writer(config)),
    }
}

async fn writer(mut config: Config) -> anyhow::Result<ExitCode> {
    super::serve::init_logging();
    config.audit.writer = true;
    let background = Background::start(&config).await.with_context(|| {
        format!(
            "cannot start the audit writer (redis {})",
            redact_url(&config.redis.url)
        )
    })?;
    println!(
        "retryguard audit writer: {} -> {}",
        redact_url(&config.redis.url),
        background.dir.root().display()
    );
    super::serve::shutdown_signal().await;
    background.stop().await;
    Ok(ExitCode::SUCCESS)
}
