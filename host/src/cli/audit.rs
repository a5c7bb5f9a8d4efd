//! `retryguard audit writer|query|stats`: the audit writer (and outcome tracker) on their
//! own, without the HTTP API — for a dedicated writer process and the crash tests — and the
//! audit trail and today's metrics, read through a running server's API (`--server`, its
//! roles apply) or, with `--direct`, straight from the audit directory and Redis.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::analytics::stats;
use crate::app::Background;
use crate::audit::AuditStore;
use crate::audit::query::{AuditQuery, query};
use crate::config::{Config, redact_url};
use serde_json::Value;

use super::jobs::http::encode;
use super::jobs::table::table;
use super::jobs::{Client, Reported};
use super::remote::Remote;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The config file (TOML), as for `serve`; RETRYGUARD_* variables override it. Read by
    /// `writer`, and by `query`/`stats` with `--direct`.
    #[arg(long, global = true, env = "RETRYGUARD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// `query`/`stats`: read the audit directory and Redis of the configuration directly
    /// (no server; no roles apply) instead of a server's API. Prints which it reads.
    #[arg(long, global = true)]
    direct: bool,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Move the audit outbox into parquet files until SIGTERM/Ctrl-C (then flush and stop).
    /// Takes part in the writer lease like `serve` does; also records retry outcomes.
    Writer,
    /// Audit records, newest first: the parquet files and what still waits in the outbox.
    Query(Box<QueryArgs>),
    /// Today's retry metrics (UTC): retries, blocks, non-retryable rate, success rate.
    /// `--json` prints the API's `retries` block of `GET /api/v1/jobs/stats`.
    Stats,
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
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let json = args.remote.json();
    if !args.direct && !matches!(args.command, AuditCommand::Writer) {
        let client = match args.remote.client() {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let result = match args.command {
            AuditCommand::Query(q) => query_api(&client, &q),
            _ => stats_api(&client),
        };
        return Ok(match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(Reported) => ExitCode::FAILURE,
        });
    }
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
        AuditCommand::Query(q) => runtime.block_on(query_direct(config, *q, json)),
        AuditCommand::Stats => runtime.block_on(stats_direct(config, json)),
    }
}

/// The audit store (a directory is never created here: a typo'd path is an error, not an
/// empty dir) and a Redis connection for the outbox.
async fn open(config: &Config) -> anyhow::Result<(Arc<AuditStore>, crate::redis_link::Link)> {
    let url = config.audit.store_url().map_err(|e| anyhow::anyhow!(e))?;
    if let crate::audit::StoreUrl::Local(path) = &url
        && !path.is_dir()
    {
        anyhow::bail!(
            "no audit directory at {} ([audit] path, or RETRYGUARD_AUDIT_DIR)",
            path.display()
        );
    }
    let dir = Arc::new(crate::app::background::open_store(&config.audit).await?);
    eprintln!(
        "reading the audit store {} and the outbox in Redis {} directly (--direct)",
        dir.describe(),
        redact_url(&config.redis.url)
    );
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

async fn query_direct(config: Config, args: QueryArgs, json: bool) -> anyhow::Result<ExitCode> {
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
    let records: Vec<_> = page
        .records
        .iter()
        .map(crate::api::retry_audit::record_json)
        .collect();
    print_page(
        &serde_json::json!({"records": records, "next_cursor": page.next_cursor}),
        json,
    );
    Ok(ExitCode::SUCCESS)
}

/// `GET /api/v1/jobs/retry-audit` with the flags as its query.
fn query_api(client: &Client, args: &QueryArgs) -> Result<(), Reported> {
    let mut query = vec![format!("limit={}", args.limit)];
    let pairs = [
        ("job_id", args.job_id.as_ref()),
        ("since", args.since.as_ref()),
        ("until", args.until.as_ref()),
        ("actor", args.actor.as_ref()),
        ("decision", args.decision.as_ref()),
        ("failure_type", args.failure_type.as_ref()),
        ("operation_id", args.operation_id.as_ref()),
        ("cursor", args.cursor.as_ref()),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            query.push(format!("{name}={}", encode(v)));
        }
    }
    if let Some(d) = args.dry_run {
        query.push(format!("dry_run={d}"));
    }
    let path = format!("/api/v1/jobs/retry-audit?{}", query.join("&"));
    let (_, page) = client.call("GET", &path)?;
    print_page(&page, client.json);
    Ok(())
}

/// A page of audit records (the API's JSON) as JSON or a table.
fn print_page(page: &Value, json: bool) {
    if json {
        let _ = writeln!(std::io::stdout(), "{page:#}");
        return;
    }
    // A cell: strings as they are, numbers as numbers, absent as `-`.
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let empty = Vec::new();
    let records = page["records"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let dry = r["dry_run_flag"].as_bool() == Some(true);
            let mut row: Vec<String> = ["timestamp", "decision"]
                .iter()
                .map(|k| cell(&r[*k]))
                .collect();
            row.push(if dry { "yes" } else { "" }.to_string());
            row.extend(
                [
                    "job_id",
                    "user_or_system",
                    "failure_type",
                    "attempt_number",
                    "job_type",
                ]
                .iter()
                .map(|k| cell(&r[*k])),
            );
            row
        })
        .collect();
    table(
        &[
            "TIME (UTC)",
            "DECISION",
            "DRY",
            "JOB",
            "ACTOR",
            "FAILURE TYPE",
            "TRY",
            "JOB TYPE",
        ],
        &rows,
        &[24, 22, 3, 36, 20, 20, 3],
    );
    let more = match page["next_cursor"].as_str() {
        Some(c) => format!("next page: --cursor {c}"),
        None => "no more".to_string(),
    };
    let _ = writeln!(std::io::stdout(), "{} records; {more}", records.len());
}

async fn stats_direct(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let (dir, mut conn) = open(&config).await?;
    let now = crate::clock::now_ms();
    let s = stats::retry_stats(&mut conn, &dir, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    print_stats(&serde_json::to_value(&s)?, json);
    Ok(ExitCode::SUCCESS)
}

/// The `retries` block of `GET /api/v1/jobs/stats`.
fn stats_api(client: &Client) -> Result<(), Reported> {
    let (_, stats) = client.call("GET", "/api/v1/jobs/stats")?;
    let retries = &stats["retries"];
    if retries.is_null() {
        eprintln!(
            "error: {} has no retry metrics now (its audit trail cannot be read: see its \
             /readyz)",
            client.server.shown()
        );
        return Err(Reported);
    }
    print_stats(retries, client.json);
    Ok(())
}

/// Today's retry metrics (`RetryStats` as JSON) as JSON or text.
fn print_stats(s: &Value, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{s:#}");
        return;
    }
    let rate = |r: &Value| {
        r.as_f64()
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
    };
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "retries on {} (UTC)",
        s["date"].as_str().unwrap_or("-")
    );
    let _ = writeln!(out, "  retries today          {}", n(&s["retries_today"]));
    let _ = writeln!(
        out,
        "  blocked by cooldown    {}",
        n(&s["blocked_cooldown"])
    );
    let _ = writeln!(
        out,
        "  blocked, max attempts  {}",
        n(&s["blocked_max_attempts"])
    );
    let _ = writeln!(
        out,
        "  non-retryable rate     {}",
        rate(&s["non_retryable_rate"])
    );
    let _ = writeln!(
        out,
        "  retry success rate     {}",
        rate(&s["retry_success_rate"])
    );
    let empty = Vec::new();
    let groups = s["by_job_type"].as_array().unwrap_or(&empty);
    if !groups.is_empty() {
        let _ = writeln!(
            out,
            "by job type: retried / succeeded / failed again / lost / success"
        );
        for g in groups {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>6} {:>6} {:>6} {:>7}",
                g["value"].as_str().unwrap_or("-"),
                n(&g["retried"]),
                n(&g["succeeded"]),
                n(&g["failed_again"]),
                n(&g["lost"]),
                rate(&g["success_rate"])
            );
        }
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
        background.dir.describe()
    );
    super::serve::shutdown_signal().await;
    background.stop().await;
    Ok(ExitCode::SUCCESS)
}
