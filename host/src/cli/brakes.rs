//! `retryguard breakers [open|close|reset KEY --reason TEXT]` and `retryguard auto-retry
//! status`: the circuit breakers and the auto-retry sweeper of a running `retryguard serve`
//! (docs/auto-retry.md), over its HTTP API. Tables for people, `--json` for scripts.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::jobs::http::encode;
use super::jobs::{Client, Reported, table};
use super::remote::Remote;

/// `retryguard breakers`.
#[derive(Debug, Args)]
pub struct BreakersArgs {
    #[command(subcommand)]
    command: Option<BreakerCommand>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum BreakerCommand {
    /// Open a breaker by hand: every retry of its key is held until it is closed by hand
    /// (role admin).
    Open(Change),
    /// Close a breaker: retries go again, its window starts empty (role admin).
    Close(Change),
    /// Forget a breaker altogether (role admin).
    Reset(Change),
}

#[derive(Debug, Args)]
struct Change {
    /// The breaker: `<pattern>|<failure type>`, e.g. 'payments.*|network_error'.
    key: String,
    /// Why (written to the audit trail; required).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

/// `retryguard auto-retry`.
#[derive(Debug, Args)]
pub struct AutoRetryArgs {
    #[command(subcommand)]
    command: AutoRetryCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum AutoRetryCommand {
    /// The sweeper: leader, jobs due, next due time, lag.
    Status,
}

fn exit(result: Result<(), Reported>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Reported) => ExitCode::FAILURE,
    }
}

pub fn breakers(args: BreakersArgs) -> anyhow::Result<ExitCode> {
    let client = match args.remote.client() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    Ok(exit(match &args.command {
        None => list(&client),
        Some(BreakerCommand::Open(c)) => change(&client, "open", c),
        Some(BreakerCommand::Close(c)) => change(&client, "close", c),
        Some(BreakerCommand::Reset(c)) => change(&client, "reset", c),
    }))
}

pub fn auto_retry(args: AutoRetryArgs) -> anyhow::Result<ExitCode> {
    let client = match args.remote.client() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    Ok(exit(match args.command {
        AutoRetryCommand::Status => status(&client),
    }))
}

/// Seconds from now until `at_ms` (negative: ago), as `in 12 s` / `3 s ago`.
fn relative(at_ms: u64) -> String {
    let now = crate::clock::now_ms();
    if at_ms >= now {
        format!("in {} s", (at_ms - now).div_ceil(1000))
    } else {
        format!("{} s ago", (now - at_ms) / 1000)
    }
}

fn list(client: &Client) -> Result<(), Reported> {
    let (_, body) = client.call("GET", "/api/v1/breakers")?;
    if client.json {
        client.print_json(&body);
        return Ok(());
    }
    let empty = Vec::new();
    let breakers = body["breakers"].as_array().unwrap_or(&empty);
    if breakers.is_empty() {
        let _ = writeln!(
            std::io::stdout(),
            "no breakers yet (a binding with \"breaker\" gets one per failure type once its \
             retries have outcomes)"
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = breakers
        .iter()
        .map(|b| {
            let opened = b["opened_at_ms"].as_u64().map_or("-".into(), relative);
            let probes = match b["state"].as_str() {
                Some("open") => match (b["half_open_at_ms"].as_u64(), b["manual"].as_str()) {
                    (_, Some(why)) => format!("opened by hand: {why}"),
                    (Some(at), None) => format!("probes {}", relative(at)),
                    (None, None) => "-".into(),
                },
                Some("half_open") => format!("{} probes left", b["probes_left"]),
                _ => "-".into(),
            };
            vec![
                b["key"].as_str().unwrap_or("-").to_string(),
                b["state"].as_str().unwrap_or("-").to_string(),
                format!("{:.0} %", b["failure_rate"].as_f64().unwrap_or(0.0) * 100.0),
                b["outcomes"].to_string(),
                opened,
                probes,
            ]
        })
        .collect();
    table(
        &["BREAKER", "STATE", "FAILED", "OUTCOMES", "OPENED", "NEXT"],
        &rows,
        &[60, 9, 7, 8, 12, 60],
    );
    Ok(())
}

fn change(client: &Client, op: &str, c: &Change) -> Result<(), Reported> {
    let body = json!({ "reason": c.reason }).to_string();
    let (_, reply) = client.call_with(
        "POST",
        &format!("/api/v1/breakers/{}/{op}", encode(&c.key)),
        Some(("application/json", body.as_bytes())),
    )?;
    if client.json {
        client.print_json(&reply);
    } else {
        let _ = writeln!(
            std::io::stdout(),
            "{}: {}",
            reply["key"].as_str().unwrap_or(&c.key),
            reply["state"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

fn status(client: &Client) -> Result<(), Reported> {
    let (_, s) = client.call("GET", "/api/v1/auto-retry")?;
    if client.json {
        client.print_json(&s);
        return Ok(());
    }
    let opt = |v: &Value| -> String {
        if v.is_null() {
            "-".into()
        } else {
            v.to_string()
        }
    };
    let mut out = std::io::stdout();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<22} {v}");
    };
    line(
        "enabled here",
        format!(
            "{}{}",
            s["enabled"],
            if s["any_binding_opted_in"] == true {
                ""
            } else {
                " (no binding has \"auto_retry\": nothing is retried automatically)"
            }
        ),
    );
    line(
        "leader",
        format!(
            "{}{}",
            s["leader"].as_str().unwrap_or("none"),
            if s["this_instance_leads"] == true {
                " (this instance)"
            } else {
                ""
            }
        ),
    );
    line(
        "jobs due",
        format!("{} ({} due now)", s["due"], s["due_now"]),
    );
    line(
        "next due",
        s["next_due_ms"].as_u64().map_or("-".into(), relative),
    );
    line("parked", s["parked"].to_string());
    line(
        "lag p50 / p99",
        format!("{} / {} ms", opt(&s["lag_p50_ms"]), opt(&s["lag_p99_ms"])),
    );
    line(
        "looked at / requeued",
        format!("{} / {}", s["looked_at"], s["requeued"]),
    );
    if let Some(e) = s["last_error"].as_str() {
        line("last error", e.to_string());
    }
    Ok(())
}
