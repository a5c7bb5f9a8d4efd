//! `retryguard policy check FILE.wasm`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::{LimitArgs, engine, read_capped};
use crate::policy::WORLD;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy component (.wasm).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let engine = engine()?;
    // A file over the size cap is refused before it is read (exit code 1, like any
    // invalid policy).
    let bytes = read_capped(&args.file, engine.config().max_policy_bytes as u64)?;
    let policy = match engine.load(&bytes, &args.limits.load_options()) {
        Ok(policy) => policy,
        Err(e) => {
            if args.json {
                println!("{}", json!({"valid": false, "error": e.to_string()}));
            } else {
                eprintln!("invalid policy {}: {e}", args.file.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let info = policy.info();
    if args.json {
        let report = json!({
            "valid": true,
            "world": WORLD,
            "digest": policy.digest(),
            "size": policy.size(),
            "imports": policy.imports(),
            "info": info,
            "limits": policy.limits(),
        });
        println!("{report}");
    } else {
        println!("valid policy {}", args.file.display());
        println!("  world:   {WORLD}");
        println!("  digest:  {}", policy.digest());
        println!("  size:    {} bytes", policy.size());
        let imports = if policy.imports().is_empty() {
            "none".to_string()
        } else {
            policy.imports().join(", ")
        };
        println!("  imports: {imports}");
        println!("  name:    {} {}", info.name, info.version);
        for p in &info.params {
            println!(
                "  param:   {}={}  {}",
                p.name, p.default_value, p.description
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
