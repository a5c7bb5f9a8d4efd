//! `retryguard audit writer|query|stats`: the audit writer (and outcome tracker) on their
//! own, without the HTTP API — for a dedicated writer process and the crash tests — and the
//! audit trail read straight from the audit directory and Redis (no server needed).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::analytics::stats;
use crate::app::Background;
use crate::audit::AuditDir;
use crate::audit::query::{AuditQuery, query};
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
    /// Audit records, newest first: the parquet files and what still waits in the outbox.
    Query(Box<QueryArgs>),
    /// Today's retry metrics (UTC): retries, blocks, non-retryable rate, success rate.
    Stats {
        /// Print JSON (as the API's `retries` block).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Only this job's records.
    #[arg(long)]
    job_id: Option<String>,
    /// From this time on (RFC 3339 or epoch ms).
    #[arg(long)]
    since: Option<String>,
    /// Before this time (RFC 3339 or epoch ms).
    #[arg(long)]
    until: Option<String>,
    /// Only this actor's records (`user_or_system`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this decision (`retried`, `blocked_cooldown`, `succeeded`, …).
    #[arg(long)]
    decision: Option<String>,
    /// Only this failure type.
    #[arg(long)]
    failure_type: Option<String>,
    /// Only this operation's records.
    #[arg(long)]
    operation_id: Option<String>,
    /// Only dry-run records (`true`) or only real ones (`false`).
    #[arg(long, value_name = "BOOL")]
    dry_run: Option<bool>,
    /// Records per page (1..=1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// The `next cursor` printed by the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Print JSON (as the API's `GET /api/v1/jobs/retry-audit`).
    #[arg(long)]
    json: bool,
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
        AuditCommand::Query(q) => runtime.block_on(query_cmd(config, *q)),
        AuditCommand::Stats { json } => runtime.block_on(stats_cmd(config, json)),
    }
}

/// The audit directory (never created here: a typo'd path is an error, not an empty dir)
/// and a Redis connection for the outbox.
async fn open(config: &Config) -> anyhow::Result<(Arc<AuditDir>, crate::redis_link::Link)> {
    let path = std::path::Path::new(&config.audit.path);
    if !path.is_dir() {
        anyhow::bail!(
            "no audit directory at {} ([audit] path, or RETRYGUARD_AUDIT_DIR)",
            path.display()
        );
    }
    let dir = Arc::new(AuditDir::open(path)?);
    let backend = crate::queue::rq::RqBackend::connect_with(&config.redis)
        .await
        .with_context(|| {
            format!(
                "cannot read the outbox at {}",
                redact_url(&config.redis.url)
            )
        })?;
    Ok((dir, backend.connection()))
}

fn time_arg(name: &str, value: Option<&String>) -> anyhow::Result<Option<u64>> {
    value
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .or_else(|| crate::api::views::parse_rfc3339(v))
                .with_context(|| format!("--{name} {v:?} is neither RFC 3339 nor epoch ms"))
        })
        .transpose()
}

async fn query_cmd(config: Config, args: QueryArgs) -> anyhow::Result<ExitCode> {
    if !(1..=1000).contains(&args.limit) {
        anyhow::bail!("--limit must be 1..=1000, not {}", args.limit);
    }
    let q = AuditQuery {
        since_ms: time_arg("since", args.since.as_ref())?,
        until_ms: time_arg("until", args.until.as_ref())?,
        job_id: args.job_id,
        actor: args.actor,
        decision: args.decision,
        failure_type: args.failure_type,
        operation_id: args.operation_id,
        dry_run: args.dry_run,
        limit: args.limit,
        cursor: args.cursor,
    };
    let (dir, mut conn) = open(&config).await?;
    let page = query(&mut conn, &dir, &q)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let records: Vec<_> = page
            .records
            .iter()
            .map(crate::api::retry_audit::record_json)
            .collect();
        let body = serde_json::json!({"records": records, "next_cursor": page.next_cursor});
        let _ = writeln!(out, "{body:#}");
        return Ok(ExitCode::SUCCESS);
    }
    let _ = writeln!(
        out,
        "{:<27} {:<22} {:<34} {:<14} {:<20} {:>3}  JOB TYPE",
        "TIME (UTC)", "DECISION", "JOB", "ACTOR", "FAILURE TYPE", "TRY"
    );
    for r in &page.records {
        let ms = u64::try_from(r.timestamp_us / 1000).unwrap_or(0);
        let dash = || "-".to_string();
        let _ = writeln!(
            out,
            "{:<27} {:<22} {:<34} {:<14} {:<20} {:>3}  {}",
            crate::clock::format_rfc3339(ms),
            r.decision,
            r.job_id.clone().unwrap_or_else(dash),
            r.user_or_system,
            r.failure_type.clone().unwrap_or_else(dash),
            r.attempt_number.map_or_else(dash, |a| a.to_string()),
            r.job_type.clone().unwrap_or_else(dash),
        );
    }
    match &page.next_cursor {
        Some(c) => {
            let _ = writeln!(
                out,
                "{} records; next page: --cursor {c}",
                page.records.len()
            );
        }
        None => {
            let _ = writeln!(out, "{} records; no more", page.records.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats_cmd(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let (dir, mut conn) = open(&config).await?;
    let now = crate::clock::now_ms();
    let s = stats::retry_stats(&mut conn, &dir, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{:#}", serde_json::to_value(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let _ = writeln!(out, "retries on {} (UTC)", s.date);
    let _ = writeln!(out, "  retries today          {}", s.retries_today);
    let _ = writeln!(out, "  blocked by cooldown    {}", s.blocked_cooldown);
    let _ = writeln!(out, "  blocked, max attempts  {}", s.blocked_max_attempts);
    let _ = writeln!(
        out,
        "  non-retryable rate     {}",
        rate(s.non_retryable_rate)
    );
    let _ = writeln!(
        out,
        "  retry success rate     {}",
        rate(s.retry_success_rate)
    );
    if !s.by_job_type.is_empty() {
        let _ = writeln!(
            out,
            "by job type: retried / succeeded / failed again / lost / success"
        );
        for g in &s.by_job_type {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>6} {:>6} {:>6} {:>7}",
                g.value.as_deref().unwrap_or("-"),
                g.retried,
                g.succeeded,
                g.failed_again,
                g.lost,
                rate(g.success_rate)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
