//! `retryguard policy example [NAME -o FILE]`: the example policy components that ship
//! inside the binary, written to a file ready for `policy check` and `policy upload`.
//!
//! They are the components `build.rs` already makes from `policies/` (wrapped with
//! `wit-component`): the default policy is the one the engine runs built in
//! ([`DEFAULT_POLICY`]), the payments one is included here from the same `OUT_DIR`.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::policy::Digest;
use crate::policy::builtin::DEFAULT_POLICY;

/// The payments example (policies/payments), as built and wrapped by `build.rs`.
static PAYMENTS_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/payments_policy.wasm"));

/// One example component.
#[derive(Debug, Clone, Copy)]
struct Example {
    name: &'static str,
    description: &'static str,
    bytes: &'static [u8],
}

fn examples() -> [Example; 2] {
    [
        Example {
            name: "default",
            description: "the built-in default policy (policies/default): classifies Python \
                          failures, retries the transient ones with exponential backoff",
            bytes: DEFAULT_POLICY,
        },
        Example {
            name: "payments",
            description: "stricter, for payment jobs (policies/payments): retries only \
                          network_error and timeout, at most max_attempts times, with full \
                          jitter",
            bytes: PAYMENTS_POLICY,
        },
    ]
}

#[derive(Debug, Args)]
pub struct ExampleArgs {
    /// The example to write (`default`, `payments`); without one, the examples are listed.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Where to write the component (`.wasm`); `-` writes it to stdout, which must not be a
    /// terminal.
    #[arg(short, long, value_name = "FILE", requires = "name")]
    output: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long, requires = "output")]
    force: bool,
}

pub fn run(args: ExampleArgs) -> anyhow::Result<ExitCode> {
    let Some(name) = &args.name else {
        list();
        return Ok(ExitCode::SUCCESS);
    };
    let Some(example) = examples().into_iter().find(|e| e.name == name) else {
        eprintln!(
            "error: no example policy is named {name:?}; the examples: {}",
            names()
        );
        return Ok(ExitCode::from(2));
    };
    let Some(output) = &args.output else {
        eprintln!(
            "error: give -o FILE to write the {name} example (e.g. -o {name}.wasm), or -o - to \
             write it to a pipe"
        );
        return Ok(ExitCode::from(2));
    };
    if output.as_os_str() == "-" {
        let mut stdout = std::io::stdout().lock();
        if stdout.is_terminal() {
            eprintln!(
                "error: stdout is a terminal: a component is binary; redirect it \
                 (`> {name}.wasm`) or give -o FILE"
            );
            return Ok(ExitCode::from(2));
        }
        if let Err(e) = stdout
            .write_all(example.bytes)
            .and_then(|()| stdout.flush())
        {
            eprintln!("error: cannot write to stdout: {e}");
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Err(e) = write_file(output, example.bytes, args.force) {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let shown = output.display();
    println!(
        "wrote the {name} example to {shown} ({} bytes, sha256 {})",
        example.bytes.len(),
        Digest::of(example.bytes)
    );
    println!("  check it:  retryguard policy check {shown}");
    println!("  upload it: retryguard policy upload {shown} --name {name}");
    Ok(ExitCode::SUCCESS)
}

/// The examples' names, comma-separated.
fn names() -> String {
    examples().map(|e| e.name).join(", ")
}

fn list() {
    let all = examples();
    let w = all.iter().map(|e| e.name.len()).max().unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    for e in all {
        let _ = writeln!(
            stdout,
            "{:<w$}  {:>6} bytes  {}",
            e.name,
            e.bytes.len(),
            e.description
        );
    }
    let _ = writeln!(stdout);
    let _ = writeln!(
        stdout,
        "write one: retryguard policy example NAME -o NAME.wasm"
    );
}

/// Writes `bytes` to `path`: refused when it exists, unless `force`.
fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: add --force to overwrite it, or choose another -o FILE",
                path.display()
            )
        } else {
            format!("cannot write {}: {e}", path.display())
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_are_components_with_distinct_names() {
        let all = examples();
        for e in &all {
            // A component's preamble (a core module's version is 1).
            assert_eq!(
                e.bytes.get(..8),
                Some(b"\0asm\x0d\0\x01\0".as_slice()),
                "{}",
                e.name
            );
        }
        assert_ne!(all[0].bytes, all[1].bytes);
        assert_eq!(names(), "default, payments");
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wasm");
        write_file(&path, b"one", false).unwrap();
        let e = write_file(&path, b"two", false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_file(&path, b"2", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"2");
    }
}
