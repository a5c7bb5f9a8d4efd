//! Runs the contract table (`host/tests/fixtures/contract/`): real RQ failure texts and what
//! the default policy must make of them. The host runs the same table through the compiled
//! component.

use retryguard_policy_default::traceback::parse_outermost;
use retryguard_policy_default::{Decision, FailureView, HoldKind, Params, classify, decide};
use std::path::PathBuf;

/// One row of `expected.tsv`.
#[derive(Debug)]
struct Row {
    file: String,
    exc_type: String,
    failure_type: String,
    retryable: bool,
    job_status: String,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../host/tests/fixtures/contract")
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn rows() -> Result<Vec<Row>, String> {
    let table = read(&fixtures().join("expected.tsv"))?;
    let mut lines = table.lines();
    if lines.next() != Some("file\texc_type\tfailure_type\tretryable\tjob_status") {
        return Err("expected.tsv: unexpected header".into());
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [file, exc_type, failure_type, retryable, job_status] = cols[..] else {
                return Err(format!("expected.tsv: not 5 columns: {line:?}"));
            };
            Ok(Row {
                file: file.into(),
                exc_type: exc_type.into(),
                failure_type: failure_type.into(),
                retryable: match retryable {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("expected.tsv: retryable {other:?}")),
                },
                job_status: job_status.into(),
            })
        })
        .collect()
}

#[test]
fn contract_table() -> Result<(), String> {
    let rows = rows()?;
    assert!(rows.len() >= 45, "only {} rows", rows.len());
    assert!(rows.iter().any(|r| r.job_status == "stopped"));
    let mut failures = Vec::new();
    for row in &rows {
        let text = read(&fixtures().join(&row.file))?;

        // 1. The parser finds the outermost exception (or, rightly, none).
        let parsed = parse_outermost(&text);
        let parsed_type = parsed.as_ref().map_or("", |p| p.exc_type);
        if parsed_type != row.exc_type {
            failures.push(format!(
                "{}: parsed type {parsed_type:?}, expected {:?}",
                row.file, row.exc_type
            ));
        }

        // 2. Classification gives the same answer whether the host passes the parsed type and
        //    message or leaves the policy to parse the traceback.
        let message = parsed.as_ref().map_or("", |p| p.message.as_str());
        let from_traceback = FailureView {
            job_type: "app.tasks.job",
            job_status: &row.job_status,
            traceback: &text,
            failed_at_ms: 1_000,
            ..FailureView::default()
        };
        let from_fields = FailureView {
            exc_type: parsed_type,
            exc_message: message,
            ..from_traceback
        };
        for (how, view) in [("traceback", &from_traceback), ("fields", &from_fields)] {
            let c = classify(view);
            if c.failure_type != row.failure_type || c.retryable != row.retryable {
                failures.push(format!(
                    "{} (via {how}): got {} retryable={} ({}), expected {} retryable={}",
                    row.file,
                    c.failure_type,
                    c.retryable,
                    c.reason,
                    row.failure_type,
                    row.retryable
                ));
            }
            if c.reason.is_empty() || c.reason.len() > 1024 {
                failures.push(format!("{}: bad reason {:?}", row.file, c.reason));
            }
            if row.exc_type.is_empty()
                && !c
                    .reason
                    .contains("may have partly run and its side effects are unknown")
            {
                failures.push(format!(
                    "{}: an RQ failure without a traceback must say its side effects are \
                     unknown: {}",
                    row.file, c.reason
                ));
            }

            // 3. With default params, the decision follows from the classification.
            let d = decide(view, c.failure_type, c.retryable, &Params::default(), 1_000);
            let ok = match (&d, c.retryable, c.failure_type) {
                (Decision::RetryAt(at), true, _) => *at == 61_000,
                (
                    Decision::Hold {
                        kind: HoldKind::UnknownFailure,
                        ..
                    },
                    false,
                    "unknown",
                ) => true,
                (
                    Decision::Hold {
                        kind: HoldKind::NonRetryable,
                        ..
                    },
                    false,
                    ft,
                ) => ft != "unknown",
                _ => false,
            };
            if !ok {
                failures.push(format!("{}: decision {d:?} for {c:?}", row.file));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} contract rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        ))
    }
}

#[test]
fn every_fixture_file_is_in_the_table() -> Result<(), String> {
    let listed: Vec<String> = rows()?.into_iter().map(|r| r.file).collect();
    let dir = fixtures();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".txt") && name != "requirements.txt" {
            assert!(
                listed.iter().any(|f| *f == *name),
                "{name} is not in expected.tsv"
            );
        }
    }
    Ok(())
}
