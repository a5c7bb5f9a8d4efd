//! `retryguard jobs failed|show|retry|retry-all|delete-all|stats|groups|rebuild-index`: the HTTP API
//! of a running `retryguard serve`, from the command line. Tables for people, `--json` for
//! scripts.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
mod groups;
pub(crate) mod http;

use super::remote::Remote;
use http::{Server, encode, truncate};

/// How often `retry-all` polls its operation.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
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
    Retry {
        /// The job id.
        id: String,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Retry every failed job the policy allows now, showing progress.
    RetryAll {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many jobs.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        retry: RetryArgs,
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
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only job types matching this glob (e.g. 'app.billing.*').
    #[arg(long)]
    job_type: Option<String>,
    /// Only this failure type (e.g. network_error).
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
    /// Jobs per page (1-1000; the server's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// The next page: the cursor a previous listing printed.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
struct RetryArgs {
    /// Say what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Retry even what the policy holds (needs --reason).
    #[arg(long)]
    force: bool,
    /// Why (written to the audit trail).
    #[arg(long)]
    reason: Option<String>,
    /// Also retry failures whose type is not retryable (retry_only_retryable=false).
    #[arg(long)]
    include_non_retryable: bool,
}

impl RetryArgs {
    fn push(&self, q: &mut Query) {
        q.flag("dry_run", self.dry_run);
        q.flag("force", self.force);
        if self.include_non_retryable {
            q.pair("retry_only_retryable", "false");
        }
        q.opt("reason", self.reason.as_deref());
    }
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
    let result = match &args.command {
        JobsCommand::Failed(a) => failed(&client, a),
        JobsCommand::Show { id } => show(&client, id),
        JobsCommand::Retry { id, retry } => retry_one(&client, id, retry),
        JobsCommand::RetryAll {
            filter,
            limit,
            retry,
        } => retry_all(&client, filter, *limit, retry),
        JobsCommand::DeleteAll(a) => delete::delete_all(&client, a),
        JobsCommand::Stats => stats(&client),
        JobsCommand::Groups(a) => groups::groups(&client, a),
        JobsCommand::RebuildIndex => groups::rebuild(&client),
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Reported) => ExitCode::FAILURE,
    })
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// Roughly the terminal's width: `COLUMNS`, else what `stty size` says of the terminal
/// stdout is, else 120.
fn width() -> usize {
    let sane = |c: usize| (40..=1000).contains(&c);
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| sane(*c))
    {
        return c;
    }
    if std::io::stdout().is_terminal()
        && let Some(c) = terminal_columns().filter(|c| sane(*c))
    {
        return c;
    }
    120
}

fn terminal_columns() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Prints rows as aligned columns; the last column takes what width is left.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], caps: &[usize]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| truncate(c, caps.get(i).copied().unwrap_or(usize::MAX)))
                .collect()
        })
        .collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let last = header.len().saturating_sub(1);
    let used: usize = widths.iter().take(last).map(|w| w + 2).sum();
    let last_width = width().saturating_sub(used).max(12);
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, c) in row.iter().enumerate() {
            if i == last {
                out.push_str(&truncate(c, last_width));
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out!("{}", out.trim_end());
    };
    line(&header.iter().map(|h| (*h).to_string()).collect::<Vec<_>>());
    for row in &cells {
        line(row);
    }
}

/// How long until an RFC 3339 time: `51s`, `3m`, `2h`.
fn wait_for(at: &str) -> String {
    let Some(at_ms) = crate::api::views::parse_rfc3339(at) else {
        return at.to_string();
    };
    let s = at_ms.saturating_sub(crate::clock::now_ms()).div_ceil(1000);
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m", s.div_ceil(60)),
        _ => format!("{}h", s.div_ceil(3600)),
    }
}

fn failed(client: &Client, a: &FailedArgs) -> Result<(), Reported> {
    let mut q = Query::default();
    a.filter.push(&mut q);
    q.opt(
        "retryable",
        a.retryable.map(|r| if r { "true" } else { "false" }),
    );
    q.opt("limit", a.limit.map(|l| l.to_string()).as_deref());
    q.opt("cursor", a.cursor.as_deref());
    let (_, json) = client.call("GET", &format!("/api/v1/jobs/failed{}", q.0))?;
    if client.json {
        client.print_json(&json);
        return Ok(());
    }
    let jobs = json["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
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
            "ACTION",
            "REASON",
        ],
        &rows,
        &[36, 16, 32, 20, 12],
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
        ("failed at", str_of(&j, "failed_at").to_string()),
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
    for (k, v) in fields {
        out!("{k:<13} {v}");
    }
    if let Some(tb) = j["traceback"].as_str() {
        out!();
        out!("{}", tb.trim_end());
    }
    Ok(())
}

fn print_outcome(o: &Value) {
    let fields = [
        ("job", str_of(o, "job_id").to_string()),
        ("outcome", str_of(o, "outcome").to_string()),
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
        ("dry run", o["dry_run"].to_string()),
        ("forced", o["forced"].to_string()),
    ];
    for (k, v) in fields {
        out!("{k:<13} {v}");
    }
}

fn retry_one(client: &Client, id: &str, r: &RetryArgs) -> Result<(), Reported> {
    let mut q = Query::default();
    r.push(&mut q);
    let path = format!("/api/v1/jobs/failed/{}/retry{}", encode(id), q.0);
    let (_, o) = client.call("POST", &path)?;
    if client.json {
        client.print_json(&o);
    } else {
        print_outcome(&o);
    }
    Ok(())
}

/// The non-zero counts, `retried=3 blocked_cooldown=2`.
fn counts_line(counts: &Value) -> String {
    let mut out = String::new();
    if let Some(map) = counts.as_object() {
        for (k, v) in map {
            if v.as_u64().unwrap_or(0) > 0 {
                let _ = write!(out, "{}{k}={v}", if out.is_empty() { "" } else { " " });
            }
        }
    }
    if out.is_empty() { "none".into() } else { out }
}

fn retry_all(
    client: &Client,
    filter: &FilterArgs,
    limit: Option<u64>,
    r: &RetryArgs,
) -> Result<(), Reported> {
    let mut q = Query::default();
    filter.push(&mut q);
    q.opt("limit", limit.map(|l| l.to_string()).as_deref());
    r.push(&mut q);
    q.pair("wait_seconds", "0");
    let (status, first) = client.call("POST", &format!("/api/v1/jobs/failed/retry-all{}", q.0))?;
    let summary = if status == 202 {
        let Some(op_id) = first["operation_id"].as_str() else {
            eprintln!("error: the server's 202 answer names no operation_id");
            return Err(Reported);
        };
        poll(client, op_id)?
    } else {
        first
    };
    if client.json {
        client.print_json(&summary);
        return Ok(());
    }
    let total = summary["total"].as_u64().unwrap_or(0);
    let dry = if summary["dry_run"].as_bool() == Some(true) {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let cancelled = if summary["cancelled"].as_bool() == Some(true) {
        " (cancelled)"
    } else {
        ""
    };
    out!(
        "operation {}: {total} jobs{dry}{cancelled}",
        str_of(&summary, "operation_id")
    );
    if let Some(map) = summary["counts"].as_object() {
        for (k, v) in map {
            if v.as_u64().unwrap_or(0) > 0 {
                out!("  {k:<20} {v}");
            }
        }
    }
    Ok(())
}

/// Polls `GET /api/v1/operations/{id}` until it ends, showing progress on one stderr line;
/// returns its summary.
fn poll(client: &Client, op_id: &str) -> Result<Value, Reported> {
    let path = format!("/api/v1/operations/{}", encode(op_id));
    let started = Instant::now();
    let mut shown = 0usize;
    let mut stderr = std::io::stderr();
    loop {
        let (_, op) = client.call("GET", &path)?;
        let line = format!(
            "{} {op_id}: {}/{} processed  {}  ({:.1} s)",
            op["kind"].as_str().unwrap_or("operation").replace('_', "-"),
            op["processed"].as_u64().unwrap_or(0),
            op["total"].as_u64().unwrap_or(0),
            counts_line(&op["counts"]),
            started.elapsed().as_secs_f64()
        );
        let pad = shown.saturating_sub(line.chars().count());
        shown = line.chars().count();
        let _ = write!(stderr, "\r{line}{}", " ".repeat(pad));
        let _ = stderr.flush();
        match op["state"].as_str() {
            Some("running") | None => std::thread::sleep(POLL_EVERY),
            Some("failed") => {
                let _ = writeln!(stderr);
                let e = &op["error"]["error"];
                eprintln!(
                    "error: the operation failed: {}: {}",
                    e["code"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or_default()
                );
                return Err(Reported);
            }
            Some("abandoned") => {
                let _ = writeln!(stderr);
                eprintln!(
                    "error: the operation was abandoned: its instance {} stopped reporting (it died or lost Redis); what it requeued is in the audit trail",
                    op["instance"].as_str().unwrap_or("?")
                );
                return Err(Reported);
            }
            Some(_) => {
                let _ = writeln!(stderr);
                return Ok(if op["summary"].is_object() {
                    op["summary"].clone()
                } else {
                    op
                });
            }
        }
    }
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
        for (k, v) in map {
            out!("  {k:<22} {}", n(v));
        }
    }
    out!("audit outbox length: {}", n(&s["audit_outbox_length"]));
    Ok(())
}
