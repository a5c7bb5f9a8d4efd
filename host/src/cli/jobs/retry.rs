//! `retryguard jobs retry ID` and `retryguard jobs retry-all`: the retry endpoints, their
//! operation polled to its end, and the exit codes that say whether anything was retried.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::http::encode;
use super::table::pairs;
use super::{Client, FilterArgs, Query, Reported, str_of};

/// How often `retry-all` and `delete-all` poll their operation.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often a progress line is printed when stderr is not a terminal (a log, a pipe).
const LOG_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Exit code: nothing was retried (or, with --dry-run, nothing would be) because the policy
/// or a brake held every job (`blocked_*`, `policy_error`).
pub(crate) const EXIT_BLOCKED: u8 = 3;
/// Exit code: nothing was retried for another reason: the job changed or is gone
/// (`stale_decision`, `already_requeued`, `not_found`) or Redis did not confirm (`unknown`).
pub(crate) const EXIT_NOT_RETRIED: u8 = 4;

/// Every exit code of `retryguard jobs`, for its `--help` (README.md's CLI section says the
/// same).
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success; for retry and retry-all: at least one job was retried (with --dry-run: would
     be), or no job matched
  1  failure: the server answered with an error, could not be reached, or the operation
     failed
  2  bad usage: a flag missing or malformed (e.g. --force without --reason), or a bad
     --server URL
  3  retry, retry-all: nothing was retried (with --dry-run: nothing would be) because the
     policy or a brake held every job (blocked_*, policy_error)
  4  retry, retry-all: nothing was retried for another reason: the job changed or is gone
     (stale_decision, already_requeued, not_found) or Redis did not confirm (unknown)";

#[derive(Debug, Args)]
pub(super) struct RetryArgs {
    /// Say what would happen; change nothing (the exit code says it too).
    #[arg(long)]
    dry_run: bool,
    /// Retry even what the policy holds (needs --reason).
    #[arg(long)]
    force: bool,
    /// Why (written to the audit trail; required with --force).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Also retry failures whose type is not retryable (retry_only_retryable=false).
    #[arg(long)]
    include_non_retryable: bool,
}

impl RetryArgs {
    /// The query, or exit code 2 after saying that --force needs --reason.
    fn push(&self, q: &mut Query) -> Result<(), ExitCode> {
        if self.force && self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            eprintln!(
                "error: force_requires_reason: --force needs --reason TEXT: why the policy is \
                 overridden (written to the audit trail)"
            );
            return Err(ExitCode::from(2));
        }
        q.flag("dry_run", self.dry_run);
        q.flag("force", self.force);
        if self.include_non_retryable {
            q.pair("retry_only_retryable", "false");
        }
        q.opt("reason", self.reason.as_deref());
        Ok(())
    }
}

/// The exit code of a retry from its outcome counts: 0 when something was retried (or
/// nothing matched), else [`EXIT_BLOCKED`] or [`EXIT_NOT_RETRIED`].
pub(crate) fn exit_code(counts: &Value) -> u8 {
    let Some(map) = counts.as_object() else {
        return 0;
    };
    let n = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
    let total: u64 = map.values().filter_map(Value::as_u64).sum();
    if total == 0 || n("retried") > 0 {
        return 0;
    }
    let blocked = map
        .iter()
        .any(|(k, v)| (k.starts_with("blocked_") || k == "policy_error") && v.as_u64() > Some(0));
    if blocked {
        EXIT_BLOCKED
    } else {
        EXIT_NOT_RETRIED
    }
}

/// An outcome in words: a dry run says what would happen.
fn outcome_words(outcome: &str, dry_run: bool) -> String {
    match (outcome, dry_run) {
        ("retried", true) => "would retry".to_string(),
        ("retried", false) => "retried".to_string(),
        (other, true) => format!("would not retry: {other}"),
        (other, false) => format!("not retried: {other}"),
    }
}

fn print_outcome(o: &Value) {
    let dry = o["dry_run"].as_bool() == Some(true);
    let fields = [
        ("job", str_of(o, "job_id").to_string()),
        ("outcome", outcome_words(str_of(o, "outcome"), dry)),
        ("reason", str_of(o, "reason").to_string()),
        (
            "failure type",
            o["failure_type"].as_str().unwrap_or("-").to_string(),
        ),
        ("attempt", o["attempt"].to_string()),
        (
            "retry at",
            o["retry_at"].as_str().unwrap_or("-").to_string(),
        ),
        (
            "dry run",
            if dry {
                "yes: nothing changed".to_string()
            } else {
                "no".to_string()
            },
        ),
        ("forced", o["forced"].to_string()),
    ];
    pairs(&fields, "");
}

pub(super) fn retry_one(client: &Client, id: &str, r: &RetryArgs) -> Result<ExitCode, Reported> {
    let mut q = Query::default();
    if let Err(code) = r.push(&mut q) {
        return Ok(code);
    }
    let path = format!("/api/v1/jobs/failed/{}/retry{}", encode(id), q.0);
    let (_, o) = client.call("POST", &path)?;
    if client.json {
        client.print_json(&o);
    } else {
        print_outcome(&o);
    }
    let mut counts = serde_json::Map::new();
    counts.insert(str_of(&o, "outcome").to_string(), Value::from(1));
    Ok(ExitCode::from(exit_code(&Value::Object(counts))))
}

/// A count's name: in a dry run `retried` and `deleted` are what would happen.
fn count_name(key: &str, dry_run: bool) -> &str {
    match (key, dry_run) {
        ("retried", true) => "would retry",
        ("deleted", true) => "would delete",
        (k, _) => k,
    }
}

/// The non-zero counts, `retried` first: `retried=3 blocked_cooldown=2` (`would retry=3 …` in
/// a dry run).
fn counts_line(counts: &Value, dry_run: bool) -> String {
    let mut out = String::new();
    if let Some(map) = counts.as_object() {
        // `retried` first: the count a reader looks for.
        let first = map.get_key_value("retried");
        for (k, v) in first
            .into_iter()
            .chain(map.iter().filter(|(k, _)| *k != "retried"))
        {
            if v.as_u64().unwrap_or(0) > 0 {
                let sep = if out.is_empty() { "" } else { " " };
                let _ = write!(out, "{sep}{}={v}", count_name(k, dry_run));
            }
        }
    }
    if out.is_empty() { "none".into() } else { out }
}

/// The non-zero counts of a summary, one per line, aligned; in a dry run `retried` reads
/// `would retry`.
pub(super) fn print_counts(counts: &Value, dry_run: bool) {
    let items: Vec<(&str, &Value)> = counts
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
        .map(|(k, v)| (count_name(k, dry_run), v))
        .collect();
    pairs(&items, "  ");
}

pub(super) fn retry_all(
    client: &Client,
    filter: &FilterArgs,
    limit: Option<u64>,
    r: &RetryArgs,
) -> Result<ExitCode, Reported> {
    let mut q = Query::default();
    filter.push(&mut q);
    q.opt("limit", limit.map(|l| l.to_string()).as_deref());
    if let Err(code) = r.push(&mut q) {
        return Ok(code);
    }
    q.pair("wait_seconds", "0");
    let answer = client.call("POST", &format!("/api/v1/jobs/failed/retry-all{}", q.0))?;
    let summary = finished(client, answer, r.dry_run)?;
    let code = ExitCode::from(exit_code(&summary["counts"]));
    let total = summary["total"].as_u64().unwrap_or(0);
    if total == 0 {
        super::filters::warn_unknown(client, filter);
    }
    if client.json {
        client.print_json(&summary);
        return Ok(code);
    }
    let dry_run = summary["dry_run"].as_bool() == Some(true);
    let retried = summary["counts"]["retried"].as_u64().unwrap_or(0);
    let cancelled = if summary["cancelled"].as_bool() == Some(true) {
        " (cancelled)"
    } else {
        ""
    };
    let _ = writeln!(
        std::io::stdout(),
        "operation {}: {} {retried} of {total} jobs{}{cancelled}",
        str_of(&summary, "operation_id"),
        if dry_run { "would retry" } else { "retried" },
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
    );
    print_counts(&summary["counts"], dry_run);
    Ok(code)
}

/// The summary of an operation the server started (retry-all, delete-all): its answer when it
/// finished in time (`200`), else (`202`) what [`poll`] follows it to.
pub(super) fn finished(
    client: &Client,
    (status, answer): (u16, Value),
    dry_run: bool,
) -> Result<Value, Reported> {
    if status != 202 {
        return Ok(answer);
    }
    let Some(op_id) = answer["operation_id"].as_str() else {
        eprintln!("error: the server's 202 answer names no operation_id");
        return Err(Reported);
    };
    poll(client, op_id, dry_run)
}

/// Polls `GET /api/v1/operations/{id}` until it ends, showing progress on stderr (one line
/// redrawn on a terminal; a line every 10 s otherwise); returns its summary.
fn poll(client: &Client, op_id: &str, dry_run: bool) -> Result<Value, Reported> {
    let path = format!("/api/v1/operations/{}", encode(op_id));
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last_logged: Option<Instant> = None;
    let mut shown = 0usize;
    let mut stderr = std::io::stderr();
    // Ends the progress line (on a terminal) before anything else is printed.
    let end_line = |stderr: &mut std::io::Stderr, shown: usize| {
        if terminal && shown > 0 {
            let _ = writeln!(stderr);
        }
    };
    loop {
        let (_, op) = client.call("GET", &path)?;
        let running = matches!(op["state"].as_str(), Some("running") | None);
        let kind = op["kind"].as_str().unwrap_or("operation").replace('_', "-");
        let total = op["total"].as_u64().unwrap_or(0);
        let line = if running && total == 0 {
            // The jobs are not counted yet.
            format!(
                "{kind} {op_id}: finding the matching jobs  ({:.1} s)",
                started.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "{kind} {op_id}: {}/{total} processed  {}  ({:.1} s)",
                op["processed"].as_u64().unwrap_or(0),
                counts_line(&op["counts"], dry_run),
                started.elapsed().as_secs_f64()
            )
        };
        if terminal {
            let pad = shown.saturating_sub(line.chars().count());
            shown = line.chars().count();
            let _ = write!(stderr, "\r{line}{}", " ".repeat(pad));
            let _ = stderr.flush();
        } else if running && last_logged.is_none_or(|t| t.elapsed() >= LOG_PROGRESS_EVERY) {
            last_logged = Some(Instant::now());
            let _ = writeln!(stderr, "{line}");
        }
        match op["state"].as_str() {
            Some("running") | None => std::thread::sleep(POLL_EVERY),
            Some("failed") => {
                end_line(&mut stderr, shown);
                let e = &op["error"]["error"];
                eprintln!(
                    "error: the operation failed: {}: {}",
                    e["code"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or_default()
                );
                return Err(Reported);
            }
            Some("abandoned") => {
                end_line(&mut stderr, shown);
                eprintln!(
                    "error: the operation was abandoned: its instance {} stopped reporting (it died or lost Redis); what it requeued is in the audit trail",
                    op["instance"].as_str().unwrap_or("?")
                );
                return Err(Reported);
            }
            Some(_) => {
                end_line(&mut stderr, shown);
                return Ok(if op["summary"].is_object() {
                    op["summary"].clone()
                } else {
                    op
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_exit_code_says_whether_anything_was_retried() {
        assert_eq!(exit_code(&json!({"retried": 1, "blocked_cooldown": 5})), 0);
        assert_eq!(exit_code(&json!({})), 0);
        assert_eq!(exit_code(&json!({"retried": 0})), 0);
        assert_eq!(exit_code(&json!({"blocked_cooldown": 1})), EXIT_BLOCKED);
        assert_eq!(
            exit_code(&json!({"policy_error": 1, "not_found": 2})),
            EXIT_BLOCKED
        );
        assert_eq!(exit_code(&json!({"already_requeued": 1})), EXIT_NOT_RETRIED);
        assert_eq!(
            exit_code(&json!({"retried": 0, "unknown": 1})),
            EXIT_NOT_RETRIED
        );
    }

    #[test]
    fn a_dry_run_says_would() {
        assert_eq!(outcome_words("retried", true), "would retry");
        assert_eq!(outcome_words("retried", false), "retried");
        assert_eq!(
            outcome_words("blocked_cooldown", true),
            "would not retry: blocked_cooldown"
        );
        let counts = serde_json::json!({"retried": 2, "blocked_cooldown": 1, "deleted": 0});
        assert_eq!(
            counts_line(&counts, true),
            "would retry=2 blocked_cooldown=1"
        );
        assert_eq!(counts_line(&counts, false), "retried=2 blocked_cooldown=1");
    }
}
