//! `retryguard policy eval`: classify one failure and decide on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use super::{LimitArgs, MAX_INPUT_FILE_BYTES, engine, read_capped};
use crate::clock::now_ms;
use crate::policy::types::derive_seed;
use crate::policy::{Decision, FailureInput};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["failure", "traceback"])))]
pub struct EvalArgs {
    /// The policy component; the built-in default policy when omitted.
    #[arg(long, value_name = "FILE.wasm")]
    policy: Option<PathBuf>,
    /// A failure record as JSON, fields in snake_case (`job_id`, `job_type`, `queue`,
    /// `job_status`, `exc_type`, `exc_message`, `traceback`, `failed_at_ms`,
    /// `first_failed_at_ms`, `attempts`, `last_attempt_at_ms`, `queue_retries_left`, `seed`,
    /// `attributes`); missing fields are empty. An empty `exc_type` is filled by parsing
    /// `traceback`.
    #[arg(long, value_name = "FAILURE.json")]
    failure: Option<PathBuf>,
    /// A raw Python traceback as RQ records it; the exception type and message are parsed
    /// from it (the outermost exception of a chain), and the job failed at `--now-ms`.
    #[arg(long, value_name = "FILE")]
    traceback: Option<PathBuf>,
    /// With --traceback: the job's type (its function name).
    #[arg(long, default_value = "unknown", requires = "traceback")]
    job_type: String,
    /// With --traceback: retries already made for this job.
    #[arg(long, default_value_t = 0, requires = "traceback")]
    attempts: u32,
    /// A policy parameter, e.g. `--param max_attempts=5` (repeat).
    #[arg(
        long = "param",
        visible_alias = "params",
        value_name = "KEY=VALUE",
        value_parser = parse_param
    )]
    params: Vec<(String, String)>,
    /// The current time in epoch milliseconds (default: now).
    #[arg(long)]
    now_ms: Option<u64>,
    #[command(flatten)]
    limits: LimitArgs,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let now_ms = args.now_ms.unwrap_or_else(now_ms);
    let failure = read_failure(&args, now_ms)?;

    let engine = engine()?;
    let policy = match &args.policy {
        Some(path) => {
            let bytes = read_capped(path, engine.config().max_policy_bytes as u64)?;
            engine
                .load(&bytes, &args.limits.load_options())
                .with_context(|| format!("cannot load {}", path.display()))?
        }
        None => engine.load_builtin()?,
    };
    if let Err(message) = engine.validate_params(&policy, &args.params)? {
        anyhow::bail!("the policy refused the params: {message}");
    }

    let (output, code) = match engine.evaluate(&policy, &failure, &args.params, now_ms) {
        Ok(eval) => {
            let decision = decision_json(&eval.decision, now_ms);
            let out = json!({
                "policy": policy.digest(),
                "classification": eval.classification,
                "decision": decision,
                "fuel_used": eval.fuel_used,
            });
            (out, ExitCode::SUCCESS)
        }
        // A broken policy never means "retry": the decision is a hold, and the exit code 1.
        Err(e) => {
            let out = json!({
                "policy": policy.digest(),
                "classification": null,
                "decision": {
                    "action": "hold",
                    "retry_at_ms": null,
                    "hold_kind": "policy_error",
                    "reason": format!("policy error: {e}"),
                },
                "error": {"code": e.code(), "message": e.to_string()},
            });
            (out, ExitCode::FAILURE)
        }
    };
    println!("{output}");
    Ok(code)
}

fn read_failure(args: &EvalArgs, now_ms: u64) -> anyhow::Result<FailureInput> {
    let mut failure = if let Some(path) = &args.failure {
        let bytes = read_capped(path, MAX_INPUT_FILE_BYTES)?;
        serde_json::from_slice::<FailureInput>(&bytes)
            .with_context(|| format!("{} is not a valid failure record", path.display()))?
    } else if let Some(path) = &args.traceback {
        let bytes = read_capped(path, MAX_INPUT_FILE_BYTES)?;
        let traceback = String::from_utf8_lossy(&bytes).into_owned();
        let job_id = "cli".to_string();
        FailureInput {
            seed: derive_seed(&job_id, args.attempts),
            job_id,
            job_type: args.job_type.clone(),
            queue: "default".into(),
            job_status: "failed".into(),
            traceback,
            failed_at_ms: now_ms,
            first_failed_at_ms: now_ms,
            attempts: args.attempts,
            ..FailureInput::default()
        }
    } else {
        anyhow::bail!("give --failure or --traceback");
    };
    failure.fill_exception_from_traceback();
    Ok(failure)
}

fn decision_json(decision: &Decision, now_ms: u64) -> Value {
    match decision {
        // The API's vocabulary (`decision.action` of a failed job): `retry` when due now,
        // `wait` while cooling down, `hold`.
        Decision::RetryAt { at_ms } => {
            let (action, reason) = if *at_ms <= now_ms {
                ("retry", "retry now".to_string())
            } else {
                (
                    "wait",
                    format!(
                        "cooling down: retry in {} s",
                        (at_ms - now_ms).div_ceil(1000)
                    ),
                )
            };
            json!({"action": action, "retry_at_ms": at_ms, "hold_kind": null, "reason": reason})
        }
        Decision::Hold { kind, reason } => {
            json!({"action": "hold", "retry_at_ms": null, "hold_kind": kind, "reason": reason})
        }
    }
}
