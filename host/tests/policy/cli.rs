//! The `retryguard policy` command line, run as a real process.

use std::path::Path;
use std::process::{Command, Output};

use retryguard::policy::Digest;
use retryguard::policy::builtin::DEFAULT_POLICY;
use serde_json::Value;

use crate::common::HOSTILE_POLICY;
use crate::contract::contract_table;

fn retryguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retryguard"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn eval_classifies_a_real_traceback_with_the_builtin_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    for case in contract_table().iter().filter(|c| c.job_status == "failed") {
        let file = write(dir.path(), &case.file, case.traceback.as_bytes());
        let out = retryguard(&["policy", "eval", "--traceback", &file, "--now-ms", "1000"]);
        assert!(out.status.success(), "{}: {out:?}", case.file);
        let v = json_stdout(&out);
        assert_eq!(v["policy"], Digest::of(DEFAULT_POLICY).to_string());
        assert_eq!(
            v["classification"]["failure_type"],
            case.failure_type.as_str(),
            "{}",
            case.file
        );
        assert_eq!(
            v["classification"]["retryable"], case.retryable,
            "{}",
            case.file
        );
        // Due at 61 s, asked at 1 s: cooling down, in the API's words.
        let action = if case.retryable { "wait" } else { "hold" };
        assert_eq!(v["decision"]["action"], action, "{}", case.file);
        if case.retryable {
            assert_eq!(v["decision"]["retry_at_ms"], 61_000, "{}", case.file);
        }
    }
}

#[test]
fn eval_reads_a_failure_record_and_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let failure = serde_json::json!({
        "job_id": "abc", "job_type": "app.tasks.sync", "queue": "default",
        "exc_type": "requests.exceptions.ConnectionError",
        "exc_message": "HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded",
        "failed_at_ms": 1_000_000, "attempts": 2, "seed": 1
    });
    let file = write(dir.path(), "failure.json", failure.to_string().as_bytes());
    let out = retryguard(&[
        "policy",
        "eval",
        "--failure",
        &file,
        "--params",
        "cooldown_seconds=10",
        "--params",
        "max_attempts=5",
        "--now-ms",
        "1000000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v = json_stdout(&out);
    assert_eq!(v["classification"]["failure_type"], "network_error");
    assert_eq!(v["decision"]["action"], "wait");
    assert_eq!(v["decision"]["retry_at_ms"], 1_040_000);
    assert!(
        v["decision"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("40 s")
    );
}

#[test]
fn eval_refuses_bad_params_and_bad_input_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tb = write(dir.path(), "tb.txt", b"ValueError: x\n");
    let out = retryguard(&[
        "policy",
        "eval",
        "--traceback",
        &tb,
        "--params",
        "max_atempts=5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_atempts"),
        "{out:?}"
    );

    let bad = write(dir.path(), "bad.json", b"{\"job_id\": 5}");
    let out = retryguard(&["policy", "eval", "--failure", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid failure record"));

    let out = retryguard(&["policy", "eval"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn eval_turns_a_policy_error_into_a_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "hostile.wasm", HOSTILE_POLICY);
    let tb = write(dir.path(), "tb.txt", b"ValueError: x\n");
    let out = retryguard(&[
        "policy",
        "eval",
        "--policy",
        &policy,
        "--traceback",
        &tb,
        "--job-type",
        "hostile.loop",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_stdout(&out);
    assert_eq!(v["decision"]["action"], "hold");
    assert_eq!(v["decision"]["hold_kind"], "policy_error");
    assert_eq!(v["error"]["code"], "out_of_fuel");
}

#[test]
fn check_reports_a_valid_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "default.wasm", DEFAULT_POLICY);
    let out = retryguard(&["policy", "check", &file]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&Digest::of(DEFAULT_POLICY).to_string()),
        "{text}"
    );
    assert!(
        text.contains("retryguard:policy/retry-policy@0.1.0"),
        "{text}"
    );
    assert!(text.contains("imports: none"), "{text}");

    let out = retryguard(&["policy", "check", "--json", &file]);
    let v = json_stdout(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["size"], DEFAULT_POLICY.len());
    assert_eq!(v["imports"], serde_json::json!([]));
}

#[test]
fn check_rejects_invalid_policies_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = write(
        dir.path(),
        "core.wasm",
        &wat::parse_str("(module)").expect("wat"),
    );
    let out = retryguard(&["policy", "check", &core]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly component"));

    let missing = dir.path().join("missing.wasm");
    let out = retryguard(&["policy", "check", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn the_audit_help_names_every_subcommand_and_where_it_reads() {
    let top = retryguard(&["--help"]);
    let top = String::from_utf8_lossy(&top.stdout);
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("audit"))
        .unwrap_or_default();
    assert!(
        line.contains("query"),
        "`retryguard --help` on audit: {line}"
    );
    let out = retryguard(&["audit", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["writer", "query", "stats", "RETRYGUARD_"] {
        assert!(
            help.contains(word),
            "`retryguard audit --help` lacks {word}: {help}"
        );
    }
}

#[test]
fn eval_takes_param_and_still_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let failure = serde_json::json!({
        "job_id": "abc", "exc_type": "ConnectionRefusedError", "exc_message": "refused",
        "failed_at_ms": 1_000_000, "attempts": 2, "seed": 1
    });
    let file = write(dir.path(), "failure.json", failure.to_string().as_bytes());
    let eval = |flag: &str| {
        let out = retryguard(&[
            "policy",
            "eval",
            "--failure",
            &file,
            flag,
            "cooldown_seconds=10",
            "--now-ms",
            "1000000",
        ]);
        assert!(out.status.success(), "{flag}: {out:?}");
        json_stdout(&out)
    };
    let by_param = eval("--param");
    assert_eq!(by_param["decision"]["retry_at_ms"], 1_040_000);
    assert_eq!(
        by_param,
        eval("--params"),
        "--params is an alias of --param"
    );
    let help = retryguard(&["policy", "eval", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--param <KEY=VALUE>") && help.contains("[alias: --params]"),
        "{help}"
    );
}

#[test]
fn example_writes_components_that_check_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");

    // Listed with a description each.
    let out = retryguard(&["policy", "example"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l.starts_with("default ")), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("payments ") && l.contains("network_error")),
        "{list}"
    );

    for (name, bytes) in [
        ("default", DEFAULT_POLICY),
        ("payments", crate::common::PAYMENTS_POLICY),
    ] {
        let path = dir.path().join(format!("{name}.wasm"));
        let file = path.to_string_lossy().into_owned();
        let out = retryguard(&["policy", "example", name, "-o", &file]);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("policy check"));
        // The very component build.rs made, and a component `policy check` accepts.
        assert_eq!(std::fs::read(&path).expect("written"), bytes, "{name}");
        let out = retryguard(&["policy", "check", &file, "--json"]);
        assert!(out.status.success(), "{name}: {out:?}");
        let report = json_stdout(&out);
        assert_eq!(report["valid"], true);
        assert_eq!(report["digest"], Digest::of(bytes).to_string());

        // An existing file is kept without --force.
        let out = retryguard(&["policy", "example", name, "-o", &file]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
        std::fs::write(&path, b"old").expect("write");
        let out = retryguard(&["policy", "example", name, "-o", &file]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(std::fs::read(&path).expect("kept"), b"old");
        let out = retryguard(&["policy", "example", name, "-o", &file, "--force"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(&path).expect("written"), bytes);
    }

    // `-o -` to a pipe: the bytes on stdout, nothing else.
    let out = retryguard(&["policy", "example", "payments", "-o", "-"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, crate::common::PAYMENTS_POLICY);

    // An unknown name, or no -o: bad usage, saying what to do.
    let out = retryguard(&["policy", "example", "nope", "-o", "x.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default, payments"));
    let out = retryguard(&["policy", "example", "payments"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-o FILE"));
    assert!(!dir.path().join("x.wasm").exists());
}
