//! `retryguard policy upload|update|list|bindings|bind|unbind|history|rollback|promote|replay|retire`: the
//! policy registry of a running `retryguard serve`, over its HTTP API (`/api/v1/policies*`,
//! role `admin` to change anything).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::resolve::{self, Failed};
use crate::cli::jobs::http::encode;
use crate::cli::jobs::{Client, Reported, table};

/// Where the server is and how to talk to it (an `admin` token to change anything).
pub type ServerArgs = crate::cli::remote::Remote;

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Upload a policy component to the server's registry (validated there; prints its digest).
    Upload {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// What it is for, for people.
        #[arg(long, default_value = "")]
        description: String,
        /// Allow WASI imports (componentize-py/js policies): the deny-all WASI.
        #[arg(long)]
        allow_wasi: bool,
        /// CPU limit per evaluation (default: the server's `[policy] fuel`).
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-clock limit per evaluation, ms.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Memory cap per evaluation, bytes.
        #[arg(long)]
        memory_bytes: Option<u64>,
        /// Most instances per evaluation (a componentize-py policy needs about 14).
        #[arg(long)]
        instances: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Change a stored policy's name, description, WASI opt-in or limits (uploading the same
    /// bytes again never does): audited, and every instance reloads the policy with them.
    Update {
        /// The policy: its digest, a unique digest prefix (8+ hex characters) or its name
        /// (`retryguard policy list`).
        digest: String,
        /// A new name for people.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Run it with the deny-all WASI (`true`) or without (`false`).
        #[arg(long, value_name = "true|false")]
        allow_wasi: Option<bool>,
        /// CPU limit per evaluation.
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-clock limit per evaluation, ms.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Memory cap per evaluation, bytes.
        #[arg(long)]
        memory_bytes: Option<u64>,
        /// Most instances per evaluation (at most 32).
        #[arg(long)]
        instances: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the uploaded policies (the built-in default too) and where each is bound.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the bindings: pattern, policy, params, shadow.
    Bindings {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Bind a job-type pattern (`app.tasks.charge`, `payments.*`, `*`) to a policy.
    Bind {
        /// The job-type pattern: `app.tasks.charge`, `payments.*` or `*`.
        pattern: String,
        /// The policy: its digest, a unique digest prefix (8+ hex characters) or its name
        /// (`retryguard policy list`).
        #[arg(long)]
        policy: String,
        /// A param, `key=value` (repeat).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// A shadow policy evaluated beside it on every decision, never acted on (digest,
        /// prefix or name, like --policy).
        #[arg(long)]
        shadow: Option<String>,
        /// A param of the shadow policy, `key=value` (repeat).
        #[arg(long = "shadow-param", value_name = "KEY=VALUE")]
        shadow_params: Vec<String>,
        #[command(flatten)]
        brakes: super::bind::BrakeArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a pattern's binding (never `*`).
    Unbind {
        /// The job-type pattern: `app.tasks.charge`, `payments.*` or `*`.
        pattern: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A pattern's earlier states, newest first.
    History {
        /// The job-type pattern: `app.tasks.charge`, `payments.*` or `*`.
        pattern: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Restore a pattern's state before its last change.
    Rollback {
        /// The job-type pattern: `app.tasks.charge`, `payments.*` or `*`.
        pattern: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make a pattern's shadow policy (and its params) the active one, clearing the shadow.
    Promote {
        /// The job-type pattern: `app.tasks.charge`, `payments.*` or `*`.
        pattern: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What-if: evaluate an uploaded policy over the current failed jobs beside the bound
    /// policies, and over the policy decisions recorded in the audit trail (each at its
    /// recorded clock), and show how the decisions would differ. Changes nothing.
    Replay {
        /// The candidate policy: its digest, a unique digest prefix (8+ hex characters) or
        /// its name.
        digest: String,
        /// A param of the candidate, `key=value` (repeat).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only job types matching this glob (`payments.*`).
        #[arg(long)]
        job_type: Option<String>,
        /// What to replay over: the failed jobs now, the decisions in the audit trail, or both.
        #[arg(long, value_enum, default_value_t = ReplaySource::Both)]
        source: ReplaySource,
        /// Most current jobs evaluated (server default 10,000).
        #[arg(long)]
        max_jobs: Option<u64>,
        /// Recorded decisions of the last this many hours (1-720; server default 24).
        #[arg(long, conflicts_with_all = ["since_ms", "until_ms"])]
        hours: Option<u64>,
        /// Recorded decisions at or after this time (epoch ms).
        #[arg(long)]
        since_ms: Option<u64>,
        /// Recorded decisions before this time (epoch ms; default now).
        #[arg(long)]
        until_ms: Option<u64>,
        /// Most recorded decisions replayed (server default 10,000).
        #[arg(long)]
        max_records: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Retire a policy that nothing binds (its bytes stay for replays).
    Retire {
        /// The policy: its digest, a unique digest prefix (8+ hex characters) or its name.
        digest: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The shadow experiments: for each binding with a shadow policy, how often the shadow
    /// agreed with the acting policy over the decisions in the audit trail, how they differed,
    /// and the newest disagreements.
    Experiments {
        /// How far back to look, in hours (1-720; the server's default is 24).
        #[arg(long, value_name = "N")]
        hours: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// What `policy replay` evaluates the candidate over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplaySource {
    Current,
    Audit,
    Both,
}

impl ReplaySource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Audit => "audit",
            Self::Both => "both",
        }
    }
}

/// Largest file `upload` sends (the server's cap).
const MAX_UPLOAD_BYTES: u64 = crate::registry::MAX_UPLOAD_BYTES as u64;

fn params(pairs: &[String]) -> Result<BTreeMap<String, String>, Failed> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => {
                eprintln!("error: --param `{p}`: expected KEY=VALUE");
                Err(Failed::Usage)
            }
        })
        .collect()
}

macro_rules! out {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($arg)*);
    };
}

pub fn run(command: RegistryCommand) -> anyhow::Result<ExitCode> {
    let server = match &command {
        RegistryCommand::Upload { server, .. }
        | RegistryCommand::Update { server, .. }
        | RegistryCommand::List { server }
        | RegistryCommand::Bindings { server }
        | RegistryCommand::Bind { server, .. }
        | RegistryCommand::Unbind { server, .. }
        | RegistryCommand::History { server, .. }
        | RegistryCommand::Rollback { server, .. }
        | RegistryCommand::Promote { server, .. }
        | RegistryCommand::Retire { server, .. }
        | RegistryCommand::Experiments { server, .. }
        | RegistryCommand::Replay { server, .. } => server,
    };
    let client = match server.client() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    Ok(match dispatch(&client, &command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failed) => failed.exit_code(),
    })
}

fn dispatch(client: &Client, command: &RegistryCommand) -> Result<(), Failed> {
    match command {
        RegistryCommand::Upload {
            file,
            name,
            description,
            allow_wasi,
            fuel,
            deadline_ms,
            memory_bytes,
            instances,
            ..
        } => {
            let size = std::fs::metadata(file).map(|m| m.len()).map_err(|e| {
                eprintln!("error: {}: {e}", file.display());
                Reported
            })?;
            if size > MAX_UPLOAD_BYTES {
                eprintln!(
                    "error: {} is {size} bytes, over the {MAX_UPLOAD_BYTES}-byte upload cap",
                    file.display()
                );
                return Err(Failed::Reported);
            }
            let bytes = std::fs::read(file).map_err(|e| {
                eprintln!("error: {}: {e}", file.display());
                Reported
            })?;
            let mut query = format!("name={}&description={}", encode(name), encode(description));
            if *allow_wasi {
                query.push_str("&allow_wasi=true");
            }
            for (key, value) in [
                ("fuel", fuel),
                ("deadline_ms", deadline_ms),
                ("memory_bytes", memory_bytes),
                ("instances", instances),
            ] {
                if let Some(v) = value {
                    query.push_str(&format!("&{key}={v}"));
                }
            }
            let (_, json) = client.call_with(
                "POST",
                &format!("/api/v1/policies?{query}"),
                Some(("application/wasm", &bytes)),
            )?;
            if client.json {
                client.print_json(&json);
            } else if json["already_stored"] == true {
                out!(
                    "already stored: {} ({}, {} bytes, uploaded by {}); nothing changed",
                    str_of(&json, "digest"),
                    str_of(&json, "name"),
                    json["size"],
                    str_of(&json, "uploader")
                );
            } else {
                out!(
                    "uploaded {} ({}, {} bytes)",
                    str_of(&json, "digest"),
                    str_of(&json, "name"),
                    json["size"]
                );
                out!(
                    "bind it: retryguard policy bind 'PATTERN' --policy {}",
                    str_of(&json, "digest")
                );
            }
        }
        RegistryCommand::Update {
            digest,
            name,
            description,
            allow_wasi,
            fuel,
            deadline_ms,
            memory_bytes,
            instances,
            ..
        } => {
            let mut body = serde_json::Map::new();
            if let Some(n) = name {
                body.insert("name".into(), json!(n));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if let Some(w) = allow_wasi {
                body.insert("allow_wasi".into(), json!(w));
            }
            for (key, value) in [
                ("fuel", fuel),
                ("deadline_ms", deadline_ms),
                ("memory_bytes", memory_bytes),
                ("instances", instances),
            ] {
                if let Some(v) = value {
                    body.insert(key.into(), json!(v));
                }
            }
            if body.is_empty() {
                eprintln!(
                    "error: nothing to change: give --name, --description, --allow-wasi, \
                     --fuel, --deadline-ms, --memory-bytes or --instances"
                );
                return Err(Failed::Usage);
            }
            let digest = &resolve::digest(client, digest, "the policy")?;
            let body = Value::Object(body).to_string();
            let (_, json) = client.call_with(
                "PATCH",
                &format!("/api/v1/policies/{}", encode(digest)),
                Some(("application/json", body.as_bytes())),
            )?;
            if client.json {
                client.print_json(&json);
            } else {
                let changed: Vec<&str> = json["changed"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if changed.is_empty() {
                    out!("{digest}: already so, nothing changed");
                } else {
                    out!(
                        "{digest}: changed {} (revision {}); limits now {}",
                        changed.join(", "),
                        json["revision"],
                        json["policy"]["limits"]
                    );
                }
            }
        }
        RegistryCommand::List { .. } => {
            let (_, json) = client.call("GET", "/api/v1/policies")?;
            if client.json {
                client.print_json(&json);
            } else {
                let rows: Vec<Vec<String>> = json["policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(list_row)
                    .collect();
                table(
                    &["DIGEST", "NAME", "SIZE", "UPLOADED", "BOUND TO"],
                    &rows,
                    &[64, 32, 9, 20],
                );
            }
        }
        RegistryCommand::Bindings { .. } => {
            let (_, json) = client.call("GET", "/api/v1/policies/bindings")?;
            if client.json {
                client.print_json(&json);
            } else {
                out!(
                    "revision {} (this server: {})",
                    json["revision"],
                    json["live"]["revision"]
                );
                if let Some(e) = json["live"]["error"].as_str() {
                    out!("warning: {e}");
                }
                for b in json["bindings"].as_array().into_iter().flatten() {
                    let shadow = b["shadow"]["policy"]
                        .as_str()
                        .map(|s| format!("  shadow {s}"))
                        .unwrap_or_default();
                    out!(
                        "{:<32}  {}  {}{}",
                        str_of(b, "pattern"),
                        str_of(b, "policy"),
                        b["params"],
                        shadow
                    );
                }
            }
        }
        RegistryCommand::Bind {
            pattern,
            policy,
            params: p,
            shadow,
            shadow_params,
            brakes,
            ..
        } => {
            if shadow.is_none() && !shadow_params.is_empty() {
                eprintln!("error: --shadow-param needs --shadow");
                return Err(Failed::Usage);
            }
            let (p, shadow_params) = (params(p)?, params(shadow_params)?);
            let policy = resolve::digest(client, policy, "--policy")?;
            let mut body = json!({"policy": policy, "params": p});
            if let Some(s) = shadow {
                let s = resolve::digest(client, s, "--shadow")?;
                body["shadow"] = json!({"policy": s, "params": shadow_params});
            }
            brakes.add_to(&mut body)?;
            let body = body.to_string();
            let (_, json) = client.call_with(
                "PUT",
                &format!("/api/v1/policies/bindings/{}", encode(pattern)),
                Some(("application/json", body.as_bytes())),
            )?;
            changed(client, &json, &format!("bound {pattern}"));
        }
        RegistryCommand::Unbind { pattern, .. } => {
            let (_, json) = client.call(
                "DELETE",
                &format!("/api/v1/policies/bindings/{}", encode(pattern)),
            )?;
            changed(client, &json, &format!("unbound {pattern}"));
        }
        RegistryCommand::History { pattern, .. } => {
            let (_, json) = client.call(
                "GET",
                &format!("/api/v1/policies/bindings/{}/history", encode(pattern)),
            )?;
            if client.json {
                client.print_json(&json);
            } else {
                for (i, b) in json["history"].as_array().into_iter().flatten().enumerate() {
                    if b.is_null() {
                        out!("{i:>3}  (unbound)");
                    } else {
                        out!(
                            "{i:>3}  revision {}  {}  {}  by {}",
                            b["revision"],
                            str_of(b, "policy"),
                            b["params"],
                            str_of(b, "changed_by")
                        );
                    }
                }
            }
        }
        RegistryCommand::Rollback { pattern, .. } => {
            let (_, json) = client.call(
                "POST",
                &format!("/api/v1/policies/bindings/{}/rollback", encode(pattern)),
            )?;
            changed(client, &json, &format!("rolled back {pattern}"));
        }
        RegistryCommand::Promote { pattern, .. } => {
            let (_, json) = client.call(
                "POST",
                &format!("/api/v1/policies/bindings/{}/promote", encode(pattern)),
            )?;
            changed(client, &json, &format!("promoted the shadow of {pattern}"));
        }
        RegistryCommand::Replay {
            digest,
            params: p,
            queue,
            job_type,
            source,
            max_jobs,
            hours,
            since_ms,
            until_ms,
            max_records,
            ..
        } => {
            let digest = &resolve::digest(client, digest, "the policy")?;
            let mut body = json!({
                "params": params(p)?,
                "filter": {"queue": queue, "job_type": job_type},
                "source": source.as_str(),
            });
            if let Some(n) = max_jobs {
                body["max_jobs"] = json!(n);
            }
            let window = [
                ("hours", hours),
                ("since_ms", since_ms),
                ("until_ms", until_ms),
                ("max_records", max_records),
            ];
            if window.iter().any(|(_, v)| v.is_some()) {
                body["audit"] = window
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| ((*k).to_string(), json!(v))))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            let body = body.to_string();
            let (_, json) = client.call_with(
                "POST",
                &format!("/api/v1/policies/{}/replay", encode(digest)),
                Some(("application/json", body.as_bytes())),
            )?;
            if client.json {
                client.print_json(&json);
            } else {
                super::replay::print_replay(&json);
            }
        }
        RegistryCommand::Retire { digest, .. } => {
            let digest = &resolve::digest(client, digest, "the policy")?;
            let (_, json) =
                client.call("DELETE", &format!("/api/v1/policies/{}", encode(digest)))?;
            if client.json {
                client.print_json(&json);
            } else {
                out!("retired {digest} ({})", str_of(&json, "name"));
            }
        }
        RegistryCommand::Experiments { hours, .. } => super::experiments::run(client, *hours)?,
    }
    Ok(())
}

/// A row of `policy list`: digest, name, size, when uploaded, where bound.
fn list_row(p: &Value) -> Vec<String> {
    let names = |key: &str| -> Vec<&str> {
        p[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let (bound, shadow) = (names("bound_to"), names("shadow_for"));
    let mut where_ = bound.join(", ");
    if !shadow.is_empty() {
        if !where_.is_empty() {
            where_.push(' ');
        }
        where_.push_str(&format!("(shadow: {})", shadow.join(", ")));
    }
    if p["retired"] == true {
        where_ = "(retired)".into();
    }
    let uploaded = p["uploaded_at_ms"].as_u64().map_or_else(
        || "-".to_string(),
        |ms| {
            let t = crate::clock::format_rfc3339(ms);
            // To the second: `2026-11-29T12:00:00Z`.
            format!("{}Z", t.get(..19).unwrap_or(&t))
        },
    );
    vec![
        str_of(p, "digest").to_string(),
        str_of(p, "name").to_string(),
        p["size"].to_string(),
        uploaded,
        if where_.is_empty() {
            "-".into()
        } else {
            where_
        },
    ]
}

fn changed(client: &Client, json: &Value, what: &str) {
    if client.json {
        client.print_json(json);
        return;
    }
    let binding = &json["binding"];
    if binding.is_null() {
        out!("{what}: now unbound (revision {})", json["revision"]);
    } else {
        out!(
            "{what}: {} {} (revision {})",
            str_of(binding, "policy"),
            binding["params"],
            json["revision"]
        );
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}
