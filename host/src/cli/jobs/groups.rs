//! `retryguard jobs groups` and `retryguard jobs rebuild-index`: the failure index
//! (`GET /api/v1/jobs/failed/groups`, `POST …/groups/rebuild`).

use std::io::Write as _;

use clap::Args;
use serde_json::Value;

use super::{Client, Query, Reported, ago, str_of, table};

#[derive(Debug, Args)]
pub(super) struct GroupsArgs {
    /// Only groups with failed jobs on this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only job types matching this glob (e.g. 'app.billing.*').
    #[arg(long)]
    job_type: Option<String>,
    /// Only this failure type (e.g. network_error).
    #[arg(long)]
    failure_type: Option<String>,
    /// Only retryable (true) or non-retryable (false) groups.
    #[arg(long)]
    retryable: Option<bool>,
    /// Only groups whose job type, exception, message or top frame holds this text.
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// `count` (most jobs first, the default) or `last_seen` (newest failure first).
    #[arg(long)]
    sort: Option<String>,
    /// Groups per page (1-500; the server's default is 50).
    #[arg(long)]
    limit: Option<u32>,
    /// The next page: the cursor a previous listing printed.
    #[arg(long)]
    cursor: Option<String>,
}

pub(super) fn groups(client: &Client, a: &GroupsArgs) -> Result<(), Reported> {
    let mut q = Query::default();
    q.opt("queue", a.queue.as_deref());
    q.opt("job_type", a.job_type.as_deref());
    q.opt("failure_type", a.failure_type.as_deref());
    q.opt(
        "retryable",
        a.retryable.map(|r| if r { "true" } else { "false" }),
    );
    q.opt("q", a.search.as_deref());
    q.opt("sort", a.sort.as_deref());
    q.opt("limit", a.limit.map(|l| l.to_string()).as_deref());
    q.opt("cursor", a.cursor.as_deref());
    let (_, json) = client.call("GET", &format!("/api/v1/jobs/failed/groups{}", q.0))?;
    if json["groups"].as_array().is_some_and(Vec::is_empty) && a.cursor.is_none() {
        super::filters::warn_unknown_values(client, a.queue.as_deref(), a.failure_type.as_deref());
    }
    if client.json {
        client.print_json(&json);
        return Ok(());
    }
    let groups = json["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let retryable = match g["retryable"].as_bool() {
                Some(true) => "yes",
                _ => "no",
            };
            let message = if g["broken"].as_bool() == Some(true) {
                format!("(broken) {}", str_of(g, "message"))
            } else {
                format!("{}: {}", str_of(g, "exc_type"), str_of(g, "message"))
            };
            vec![
                g["count"].as_u64().unwrap_or(0).to_string(),
                str_of(g, "fingerprint").to_string(),
                str_of(g, "job_type").to_string(),
                str_of(g, "failure_type").to_string(),
                retryable.to_string(),
                ago(str_of(g, "last_seen")),
                message,
            ]
        })
        .collect();
    table(
        &[
            "COUNT",
            "GROUP",
            "JOB TYPE",
            "FAILURE TYPE",
            "RETRYABLE",
            "LAST SEEN",
            "MESSAGE",
        ],
        &rows,
        &[10, 16, 32, 20, 9, 10],
    );
    let out = &mut std::io::stdout();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} groups shown; {} failed jobs in all",
        groups.len(),
        json["total_jobs"]
    );
    if json["index"]["built"].as_bool() != Some(true) {
        let _ = writeln!(
            out,
            "(the failure index is still being built: counts so far)"
        );
    }
    if let Some(cursor) = json["next_cursor"].as_str() {
        let _ = writeln!(out, "more: retryguard jobs groups --cursor {cursor}");
    }
    if let Some(first) = groups.first().and_then(|g| g["fingerprint"].as_str()) {
        let _ = writeln!(
            out,
            "a group's jobs: retryguard jobs failed --group {first}"
        );
    }
    Ok(())
}

pub(super) fn rebuild(client: &Client) -> Result<(), Reported> {
    let (_, json): (u16, Value) = client.call("POST", "/api/v1/jobs/failed/groups/rebuild")?;
    if client.json {
        client.print_json(&json);
        return Ok(());
    }
    let _ = writeln!(
        std::io::stdout(),
        "the failure index will be rebuilt from scratch at the reconciler's next pass; \
         `retryguard jobs stats` shows when it is complete again"
    );
    Ok(())
}
