//! `retryguard jobs failed|show|retry|retry-all|delete-all|stats|groups|rebuild-index`: the HTTP API
//! of a running `retryguard serve`, from the command line. Tables for people, `--json` for
//! scripts.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

/// `println!` that ignores a closed stdout (`… | head`) instead of panicking.
macro_rules! out {
    () => {
        let _ = writeln!(std::io::stdout());
    };
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($arg)*);
    };
}

mod delete;
mod filters;
mod groups;
pub(crate) mod http;
mod retry;
pub(crate) mod table;

use super::remote::Remote;
use http::{Server, encode};
pub(crate) use table::table;
use table::{ago, pairs, truncate, wait_for};

// `retryguard jobs`: its description is the `Jobs` variant's in cli.rs.
#[derive(Debug, Args)]
#[command(after_help = retry::EXIT_CODES)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// List failed jobs with what the policy says about each.
    Failed(FailedArgs),
    /// Show one failed job, with its traceback.
    Show {
        /// The job id.
        id: String,
    },
    /// Retry one failed job (if the policy allows it now).
    ///
    /// Exit code 0 when it was retried (with --dry-run: would be), 3 when the policy or a
    /// brake holds it, 4 when it was not retried for another reason (see `retryguard jobs
    /// --help`).
    #[command(after_help = retry::EXIT_CODES)]
    Retry {
        /// The job id.
        id: String,
        #[command(flatten)]
        retry: retry::RetryArgs,
    },
    /// Retry every failed job the policy allows now, showing progress.
    ///
    /// Exit code 0 when at least one job was retried (with --dry-run: would be) or none
    /// matched, 3 when the policy or a brake held every one, 4 when none was retried for
    /// another reason.
    #[command(after_help = retry::EXIT_CODES)]
    RetryAll {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many jobs.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        retry: retry::RetryArgs,
    },
    DeleteAll(delete::DeleteAllArgs),
    /// Counts per queue and per failure type.
    Stats,
    /// Failed jobs grouped by cause (most jobs first), with filters and search.
    Groups(groups::GroupsArgs),
    /// Rebuild the failure index from the failed registries (role admin).
    RebuildIndex,
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only this queue (a queue no failed job is on is named in a warning, with the known
    /// ones).
    #[arg(long)]
    queue: Option<String>,
    /// Only job types matching this glob (e.g. 'app.billing.*').
    #[arg(long)]
    job_type: Option<String>,
    /// Only this failure type (e.g. network_error; an unknown one is named in a warning,
    /// with the failure types of the failed jobs).
    #[arg(long)]
    failure_type: Option<String>,
    /// Only jobs of this failure group (a fingerprint from `retryguard jobs groups`).
    #[arg(long, value_name = "FINGERPRINT")]
    group: Option<String>,
    /// Only jobs whose job type, exception or message holds this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
}

impl FilterArgs {
    fn push(&self, q: &mut Query) {
        q.opt("queue", self.queue.as_deref());
        q.opt("job_type", self.job_type.as_deref());
        q.opt("failure_type", self.failure_type.as_deref());
        q.opt("group", self.group.as_deref());
        q.opt("q", self.search.as_deref());
    }
}

#[derive(Debug, Args)]
struct FailedArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only jobs whose failure type is retryable (true) or not (false).
    #[arg(long)]
    retryable: Option<bool>,
    /// Only jobs that failed at or after this time: RFC 3339 (2026-11-29T12:00:00Z), a date
    /// (2026-11-29, UTC) or a duration ago (90s, 15m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = filters::parse_time)]
    failed_after: Option<String>,
    /// Only jobs that failed before this time (same forms as --failed-after).
    #[arg(long, value_name = "TIME", value_parser = filters::parse_time)]
    failed_before: Option<String>,
    /// Jobs per page (1-1000; the server's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// The next page: the cursor a previous listing printed.
    #[arg(long)]
    cursor: Option<String>,
}

/// A query string being built.
#[derive(Debug, Default)]
struct Query(String);

impl Query {
    fn pair(&mut self, key: &str, value: &str) {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&encode(value));
    }
    fn opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.pair(key, v);
        }
    }
    fn flag(&mut self, key: &str, on: bool) {
        if on {
            self.pair(key, "true");
        }
    }
}

/// A failure already reported to the user: exit 1.
#[derive(Debug)]
pub(crate) struct Reported;

/// The client: a server and whether to print raw JSON.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) server: Server,
    pub(crate) json: bool,
}

impl Client {
    /// Calls the API; prints the error (`code: message`, or why there is no answer) on
    /// anything but a 2xx JSON answer.
    pub(crate) fn call(&self, method: &str, path: &str) -> Result<(u16, Value), Reported> {
        self.call_with(method, path, None)
    }

    /// [`Client::call`] with a request body (content type, bytes).
    pub(crate) fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Value), Reported> {
        let (status, body) = self.server.request_with(method, path, body).map_err(|e| {
            eprintln!("error: {e}");
            if matches!(e, http::HttpError::Unreachable { .. }) {
                eprintln!(
                    "  is `retryguard serve` running there? (--server URL, or RETRYGUARD_SERVER)"
                );
            }
            Reported
        })?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !(200..300).contains(&status) {
            match json.as_ref().map(|j| &j["error"]) {
                Some(e) if e.is_object() => eprintln!(
                    "error: {}: {}",
                    e["code"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or_default()
                ),
                _ => eprintln!(
                    "error: HTTP {status} from {}: {}",
                    self.server.shown(),
                    truncate(String::from_utf8_lossy(&body).trim(), 200)
                ),
            }
            return Err(Reported);
        }
        let json = json.ok_or_else(|| {
            eprintln!(
                "error: the answer of {} is not JSON: {}",
                self.server.shown(),
                truncate(String::from_utf8_lossy(&body).trim(), 200)
            );
            Reported
        })?;
        Ok((status, json))
    }

    pub(crate) fn print_json(&self, json: &Value) {
        out!(
            "{}",
            serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string())
        );
    }
}

pub fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = match args.remote.client() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let done = |r: Result<(), Reported>| r.map(|()| ExitCode::SUCCESS);
    let result = match &args.command {
        JobsCommand::Failed(a) => done(failed(&client, a)),
        JobsCommand::Show { id } => done(show(&client, id)),
        JobsCommand::Retry { id, retry } => retry::retry_one(&client, id, retry),
        JobsCommand::RetryAll {
            filter,
            limit,
            retry,
        } => retry::retry_all(&client, filter, *limit, retry),
        JobsCommand::DeleteAll(a) => delete::delete_all(&client, a),
        JobsCommand::Stats => done(stats(&client)),
        JobsCommand::Groups(a) => done(groups::groups(&client, a)),
        JobsCommand::RebuildIndex => done(groups::rebuild(&client)),
    };
    Ok(result.unwrap_or(ExitCode::FAILURE))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

fn failed(client: &Client, a: &FailedArgs) -> Result<(), Reported> {
    let mut q = Query::default();
    a.filter.push(&mut q);
    q.opt(
        "retryable",
        a.retryable.map(|r| if r { "true" } else { "false" }),
    );
    q.opt("failed_after", a.failed_after.as_deref());
    q.opt("failed_before", a.failed_before.as_deref());
    q.opt("limit", a.limit.map(|l| l.to_string()).as_deref());
    q.opt("cursor", a.cursor.as_deref());
    let (_, json) = client.call("GET", &format!("/api/v1/jobs/failed{}", q.0))?;
    let jobs = json["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if jobs.is_empty() && a.cursor.is_none() {
        filters::warn_unknown(client, &a.filter);
    }
    if client.json {
        client.print_json(&json);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let d = &j["decision"];
            let mut action = str_of(d, "action").to_string();
            if action == "wait"
                && let Some(at) = d["retry_at"].as_str()
            {
                action = format!("wait {}", wait_for(at));
            }
            vec![
                str_of(j, "id").to_string(),
                str_of(j, "queue").to_string(),
                str_of(j, "job_type").to_string(),
                j["failure_type"]
                    .as_str()
                    .unwrap_or("(policy error)")
                    .to_string(),
                ago(str_of(j, "failed_at")),
                j["attempts"]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                action,
                str_of(d, "reason").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "QUEUE",
            "JOB TYPE",
            "FAILURE TYPE",
            "FAILED",
            "ATTEMPTS",
            "ACTION",
            "REASON",
        ],
        &rows,
        &[36, 16, 32, 20, 10, 8, 12],
    );
    let due = jobs
        .iter()
        .filter(|j| j["is_retryable"].as_bool() == Some(true))
        .count();
    out!();
    out!("{} failed jobs shown, {due} can be retried now", jobs.len());
    if json["scan_limited"].as_bool() == Some(true) {
        out!(
            "(stopped after reading {} jobs: narrow with --group or --queue, or go on)",
            json["scanned"]
        );
    }
    if let Some(cursor) = json["next_cursor"].as_str() {
        out!("more: retryguard jobs failed --cursor {cursor}");
    }
    Ok(())
}

fn show(client: &Client, id: &str) -> Result<(), Reported> {
    let (_, j) = client.call("GET", &format!("/api/v1/jobs/failed/{}", encode(id)))?;
    if client.json {
        client.print_json(&j);
        return Ok(());
    }
    let d = &j["decision"];
    let fields = [
        ("id", str_of(&j, "id").to_string()),
        ("queue", str_of(&j, "queue").to_string()),
        ("job type", str_of(&j, "job_type").to_string()),
        ("status", str_of(&j, "status").to_string()),
        (
            "failed at",
            format!(
                "{} ({})",
                str_of(&j, "failed_at"),
                ago(str_of(&j, "failed_at"))
            ),
        ),
        (
            "exception",
            format!("{}: {}", str_of(&j, "exc_type"), str_of(&j, "exc_message")),
        ),
        (
            "failure type",
            j["failure_type"]
                .as_str()
                .unwrap_or("(policy error)")
                .to_string(),
        ),
        ("retryable", j["retryable"].to_string()),
        ("attempts", j["attempts"].to_string()),
        ("action", str_of(d, "action").to_string()),
        (
            "retry at",
            d["retry_at"].as_str().unwrap_or("-").to_string(),
        ),
        ("reason", str_of(d, "reason").to_string()),
        ("policy", str_of(&j, "policy_digest").to_string()),
    ];
    pairs(&fields, "");
    if let Some(tb) = j["traceback"].as_str() {
        out!();
        out!("{}", tb.trim_end());
    }
    Ok(())
}

fn stats(client: &Client) -> Result<(), Reported> {
    let (_, s) = client.call("GET", "/api/v1/jobs/stats")?;
    if client.json {
        client.print_json(&s);
        return Ok(());
    }
    let n = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    let queues = s["queues"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                str_of(q, "queue").to_string(),
                n(&q["queued"]),
                n(&q["started"]),
                n(&q["failed"]),
                n(&q["finished"]),
                n(&q["deferred"]),
                n(&q["scheduled"]),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "QUEUED",
            "STARTED",
            "FAILED",
            "FINISHED",
            "DEFERRED",
            "SCHEDULED",
        ],
        &rows,
        &[40],
    );
    out!();
    let complete = if s["failed_by_type_complete"].as_bool() == Some(false) {
        " (the failure index is still being built: counts so far)".to_string()
    } else {
        String::new()
    };
    out!("failed jobs by failure type{complete}:");
    if let Some(map) = s["failed_by_type"].as_object() {
        if map.is_empty() {
            out!("  none");
        }
        let items: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, n(v))).collect();
        pairs(&items, "  ");
    }
    out!("audit outbox length: {}", n(&s["audit_outbox_length"]));
    Ok(())
}
