//! `retryguard policy …` against a running server: policies named by name or digest prefix,
//! ambiguity listing the candidates, the shadow experiments, and the shipped examples
//! uploaded as they are written.

use std::process::Output;

use serde_json::Value;

use crate::cli_client::Serve;
use crate::common::{RedisServer, both, retryguard, text};

static HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_policy.wasm"));

fn policy(serve: &Serve, args: &[&str]) -> Output {
    retryguard()
        .arg("policy")
        .args(args)
        .env("RETRYGUARD_SERVER", &serve.url)
        .output()
        .unwrap()
}

fn policy_json(serve: &Serve, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = policy(serve, &all);
    assert!(out.status.success(), "policy {args:?}: {}", both(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)))
}

fn upload(serve: &Serve, file: &str, name: &str) -> String {
    let reply = policy_json(serve, &["upload", file, "--name", name]);
    reply["digest"].as_str().unwrap().to_string()
}

#[test]
fn policies_are_named_by_name_or_prefix_and_experiments_are_shown() {
    let redis = RedisServer::start();
    let out = retryguard()
        .args(["demo", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let serve = Serve::start(&redis);
    let dir = tempfile::tempdir().unwrap();

    // The shipped payments example, written and uploaded as it is; the hostile fixture under
    // the same name.
    let payments_file = dir.path().join("payments.wasm");
    let payments_file = payments_file.to_str().unwrap();
    let out = retryguard()
        .args(["policy", "example", "payments", "-o", payments_file])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let payments = upload(&serve, payments_file, "twin");
    let hostile_file = dir.path().join("hostile.wasm");
    std::fs::write(&hostile_file, HOSTILE).unwrap();
    let hostile = upload(&serve, hostile_file.to_str().unwrap(), "twin");

    // An ambiguous name: exit 2, the candidates listed (name, short digest, uploaded).
    let out = policy(&serve, &["bind", "demo_jobs.*", "--policy", "twin"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--policy \"twin\" is ambiguous: 2 policies match"),
        "{stderr}"
    );
    for digest in [&payments, &hostile] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&digest[..12]))
            .unwrap_or_else(|| panic!("{digest} is listed: {stderr}"));
        assert!(
            line.trim_start().starts_with("twin  ") && line.contains("uploaded 20"),
            "{line}"
        );
    }
    // Too short a prefix is bad usage; a name nobody has, or a prefix no digest has, fails.
    let out = policy(&serve, &["retire", &hostile[..6]]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("at least 8 hex characters"),
        "{}",
        both(&out)
    );
    let out = policy(&serve, &["retire", "no-such-policy"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("no policy has this name"),
        "{}",
        both(&out)
    );
    // A full digest goes to the server unchanged (which knows no such policy).
    let out = policy(&serve, &["retire", &"0".repeat(64)]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(text(&out.stderr).contains("not_found"), "{}", both(&out));

    // By prefix (8 characters) and by name (the built-in default's).
    let bound = policy_json(
        &serve,
        &[
            "bind",
            "demo_jobs.*",
            "--policy",
            "builtin-default",
            "--shadow",
            &payments[..8],
        ],
    );
    assert_eq!(
        bound["binding"]["shadow"]["policy"],
        payments.as_str(),
        "{bound}"
    );
    let builtin = bound["binding"]["policy"].as_str().unwrap().to_string();
    assert_eq!(builtin.len(), 64);

    // Decisions with a shadow verdict, then the experiment.
    let out = retryguard()
        .args(["jobs", "retry-all", "--dry-run", "--json"])
        .env("RETRYGUARD_SERVER", &serve.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let mut report = Value::Null;
    for _ in 0..50 {
        report = policy_json(&serve, &["experiments"]);
        if report["experiments"][0]["decisions"] == 22 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let e = &report["experiments"][0];
    assert_eq!(e["pattern"], "demo_jobs.*", "{report}");
    assert_eq!(e["shadow_digest"], payments.as_str(), "{report}");
    assert_eq!(e["decisions"], 22, "{report}");
    let out = policy(&serve, &["experiments", "--hours", "1"]);
    assert!(out.status.success(), "{}", both(&out));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("PATTERN") && header.contains("DISAGREEMENTS"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("demo_jobs.*"), "{table}");
    assert!(
        row.contains(&format!("builtin-default ({})", &builtin[..12]))
            && row.contains(&format!("twin ({})", &payments[..12])),
        "{table}"
    );
    let shadow_at = header.find("SHADOW").unwrap();
    assert!(row[shadow_at..].starts_with("twin ("), "aligned: {table}");
    let out = policy(&serve, &["experiments", "--hours", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));

    // Replay by a longer prefix: the server is asked about the full digest.
    let replay = policy_json(
        &serve,
        &[
            "replay",
            &payments[..20],
            "--source",
            "current",
            "--job-type",
            "demo_jobs.*",
        ],
    );
    assert_eq!(replay["candidate"], payments.as_str(), "{replay}");

    // Promote and unbind take a pattern.
    let promoted = policy_json(&serve, &["promote", "demo_jobs.*"]);
    assert_eq!(
        promoted["binding"]["policy"],
        payments.as_str(),
        "{promoted}"
    );
    let out = policy(&serve, &["unbind", "demo_jobs.*"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("unbound demo_jobs.*"),
        "{}",
        both(&out)
    );

    // Retire by prefix; the retired one then gives way to the live one of the same name.
    let out = policy(&serve, &["retire", &hostile[..10].to_uppercase()]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).contains(&format!("retired {hostile} (twin)")),
        "{}",
        both(&out)
    );
    let bound = policy_json(&serve, &["bind", "app.*", "--policy", "twin"]);
    assert_eq!(bound["binding"]["policy"], payments.as_str(), "{bound}");

    // `policy list`: aligned columns, names whole.
    let out = policy(&serve, &["list"]);
    let list = text(&out.stdout);
    let header = list.lines().next().unwrap();
    let name_at = header.find("NAME").unwrap();
    let uploaded_at = header.find("UPLOADED").unwrap();
    assert_eq!(name_at, 66, "{list}");
    for line in list.lines().skip(1) {
        assert!(
            line[name_at..].starts_with("twin ") || line[name_at..].starts_with("builtin-default "),
            "{list}"
        );
        assert!(line[uploaded_at..].starts_with("20"), "{list}");
    }
    assert!(
        list.contains("(retired)") && list.contains("app.*"),
        "{list}"
    );
}
