//! `retryguard jobs delete-all`: `POST /api/v1/jobs/failed/delete-all`, then the operation
//! polled to its end.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value, json};

use super::retry::{finished, print_counts};
use super::{Client, FilterArgs, Reported, str_of};

/// Delete every failed job matching the filters, as RQ's `job.delete()` does, each audited
/// (run it with --dry-run first, then pass its count as --expected-count).
#[derive(Debug, Args)]
pub(super) struct DeleteAllArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// At most this many jobs.
    #[arg(long)]
    limit: Option<u64>,
    /// Count and record what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// The count of the dry run: if the filter now matches another count (± --max-difference),
    /// nothing is deleted.
    #[arg(long, value_name = "N")]
    expected_count: Option<u64>,
    /// How far the count may drift from --expected-count (default 0).
    #[arg(long, value_name = "N", requires = "expected_count")]
    max_difference: Option<u64>,
    /// Why (written to the audit trail; required unless --dry-run).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Also delete the jobs that depend on each deleted job.
    #[arg(long)]
    delete_dependents: bool,
}

impl DeleteAllArgs {
    /// The request body.
    fn body(&self) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                body.insert(key.to_string(), value);
            }
        };
        let f = &self.filter;
        put("queue", json!(f.queue));
        put("job_type", json!(f.job_type));
        put("failure_type", json!(f.failure_type));
        put("group", json!(f.group));
        put("q", json!(f.search));
        put("limit", json!(self.limit));
        put("dry_run", json!(self.dry_run));
        put("expected_count", json!(self.expected_count));
        put("max_difference", json!(self.max_difference));
        put("reason", json!(self.reason));
        put("delete_dependents", json!(self.delete_dependents));
        put("wait_seconds", json!(0));
        Value::Object(body)
    }
}

pub(super) fn delete_all(client: &Client, a: &DeleteAllArgs) -> Result<ExitCode, Reported> {
    if !a.dry_run && a.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        eprintln!(
            "error: reason_required: give --reason TEXT (why, written to the audit trail), or \
             --dry-run to count what would be deleted"
        );
        return Ok(ExitCode::from(2));
    }
    let body = a.body().to_string();
    let answer = client.call_with(
        "POST",
        "/api/v1/jobs/failed/delete-all",
        Some(("application/json", body.as_bytes())),
    )?;
    let summary = finished(client, answer, a.dry_run)?;
    if summary["state"].as_str() == Some("conflict") {
        let e = &summary["error"]["error"];
        eprintln!(
            "error: {}: {}",
            e["code"].as_str().unwrap_or("conflict"),
            e["message"].as_str().unwrap_or_default()
        );
        return Err(Reported);
    }
    if summary["total"].as_u64() == Some(0) {
        super::filters::warn_unknown(client, &a.filter);
    }
    if client.json {
        client.print_json(&summary);
        return Ok(ExitCode::SUCCESS);
    }
    let deleted = summary["counts"]["deleted"].as_u64().unwrap_or(0);
    let dry = summary["dry_run"].as_bool() == Some(true);
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "operation {}: {} {deleted} of {} jobs{}{}",
        str_of(&summary, "operation_id"),
        if dry { "would delete" } else { "deleted" },
        summary["total"].as_u64().unwrap_or(0),
        if dry {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        if summary["cancelled"].as_bool() == Some(true) {
            " (cancelled)"
        } else {
            ""
        },
    );
    print_counts(&summary["counts"], dry);
    if dry {
        let _ = writeln!(
            stdout,
            "to delete them: the same filters with --reason TEXT --expected-count {deleted}"
        );
    }
    Ok(ExitCode::SUCCESS)
}
