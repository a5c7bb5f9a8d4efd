//! The contract table (`host/tests/fixtures/contract/`) through the payments policy: the same
//! failure types as the default policy, but only `network_error` and `timeout` retried, each
//! within its jitter window.

use retryguard_policy_default::traceback::parse_outermost;
use retryguard_policy_payments::{Decision, FailureView, HoldKind, Params, classify, decide};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../host/tests/fixtures/contract")
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn contract_table_through_the_payments_policy() -> Result<(), String> {
    let table = read(&fixtures().join("expected.tsv"))?;
    let mut failures = Vec::new();
    let mut rows = 0;
    let (mut retried, mut held) = (0, 0);
    for (seed, line) in table.lines().skip(1).filter(|l| !l.is_empty()).enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, _exc_type, failure_type, retryable, job_status] = cols[..] else {
            return Err(format!("expected.tsv: not 5 columns: {line:?}"));
        };
        rows += 1;
        let text = read(&fixtures().join(file))?;
        let parsed = parse_outermost(&text);
        let view = FailureView {
            job_type: "payments.tasks.charge_card",
            job_status,
            exc_type: parsed.as_ref().map_or("", |p| p.exc_type),
            exc_message: parsed.as_ref().map_or("", |p| p.message.as_str()),
            traceback: &text,
            failed_at_ms: 1_000,
            attempts: 0,
            seed: seed as u64,
        };
        let c = classify(&view);
        // The default's failure type, always; its retryability only for the two types.
        let want_retryable =
            retryable == "true" && matches!(failure_type, "network_error" | "timeout");
        if c.failure_type != failure_type || c.retryable != want_retryable {
            failures.push(format!(
                "{file}: got {} retryable={} ({}), want {failure_type} retryable={want_retryable}",
                c.failure_type, c.retryable, c.reason
            ));
        }
        let d = decide(
            &view,
            c.failure_type,
            c.retryable,
            &Params::default(),
            1_000,
        );
        let ok = match (&d, want_retryable, failure_type) {
            (Decision::RetryAt(at), true, _) => (1_000..31_000).contains(at),
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
        match d {
            Decision::RetryAt(_) => retried += 1,
            Decision::Hold { .. } => held += 1,
        }
        if !ok {
            failures.push(format!("{file}: decision {d:?} for {c:?}"));
        }
    }
    assert!(rows >= 45, "only {rows} rows");
    assert!(
        retried > 5 && held > retried,
        "{retried} retried, {held} held"
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
