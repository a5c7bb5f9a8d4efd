//! The tour, as processes: `retryguard demo` writes failed RQ jobs into a test Redis,
//! `retryguard serve` runs on a free port over it, and `retryguard jobs …` talks to it.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Output};

use crate::common::{RedisServer, retryguard, spawn_serve};

/// `serve` on a free port, killed when dropped.
pub(crate) struct Serve {
    child: Child,
    pub(crate) url: String,
}

impl Serve {
    pub(crate) fn start(redis: &RedisServer) -> Self {
        let (child, port, mut stdout) = spawn_serve(redis);
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 && !line.contains("listening on") {
            line.clear();
        }
        assert!(line.contains("listening on"), "serve did not start");
        // Keep reading the banner so serve never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub(crate) fn jobs(&self, args: &[&str]) -> Output {
        retryguard()
            .arg("jobs")
            .args(args)
            .env("RETRYGUARD_SERVER", &self.url)
            .env("COLUMNS", "120")
            .output()
            .unwrap()
    }

    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.jobs(&all);
        assert!(
            out.status.success(),
            "jobs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "jobs {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `job type → failure type` of the fixtures `demo` uses, from `expected.tsv`.
fn expected_failure_types() -> BTreeMap<String, String> {
    let fixtures = [
        ("network_error", "01_requests_connection_refused.txt"),
        ("timeout", "09_requests_read_timeout.txt"),
        ("rate_limit", "14_requests_429.txt"),
        ("temporary_error", "17_requests_503.txt"),
        ("database_lock", "24_sqlite_database_locked.txt"),
        ("validation_error", "31_value_error.txt"),
        ("logic_error", "34_type_error.txt"),
        ("data_not_found", "40_key_error.txt"),
        ("permission_error", "45_requests_401.txt"),
        ("configuration_error", "51_module_not_found.txt"),
        ("unknown", "60_custom_unknown.txt"),
    ];
    let tsv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/contract/expected.tsv"
    ))
    .unwrap();
    fixtures
        .iter()
        .map(|(family, file)| {
            let row = tsv
                .lines()
                .find(|l| l.starts_with(&format!("{file}\t")))
                .unwrap_or_else(|| panic!("{file} is in expected.tsv"));
            let failure_type = row.split('\t').nth(2).unwrap().to_string();
            (format!("demo_jobs.{family}"), failure_type)
        })
        .collect()
}

#[test]
fn demo_then_jobs_commands_against_serve() {
    let redis = RedisServer::start();

    // The default local Redis's db 0 is refused without --yes (it fails before connecting).
    let out = retryguard()
        .args(["demo", "--redis-url", "redis://127.0.0.1:6379/0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));

    let out = retryguard()
        .args(["demo", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wrote 22 failed RQ jobs"), "{stdout}");
    assert!(stdout.contains("rq worker --burst"), "{stdout}");

    let serve = Serve::start(&redis);
    let expected = expected_failure_types();

    // Every job is listed, with the failure type of its fixture's row.
    let list = serve.json(&["failed", "--queue", "demo"]);
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 22, "{list}");
    for job in jobs {
        let job_type = job["job_type"].as_str().unwrap();
        assert_eq!(job["queue"], "demo");
        assert_eq!(
            job["failure_type"].as_str(),
            expected.get(job_type).map(String::as_str),
            "{job}"
        );
    }
    // Half just failed: retryable ones among them cool down; the others are due.
    let actions: Vec<&str> = jobs
        .iter()
        .filter(|j| j["retryable"] == true)
        .map(|j| j["decision"]["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"retry") && actions.contains(&"wait"),
        "{actions:?}"
    );
    let due = jobs
        .iter()
        .find(|j| j["decision"]["action"] == "retry")
        .unwrap();
    let id = due["id"].as_str().unwrap();

    let shown = serve.json(&["show", id]);
    assert_eq!(shown["id"], id);
    assert!(
        shown["traceback"]
            .as_str()
            .unwrap()
            .starts_with("Traceback (most recent call last):")
    );

    let outcome = serve.json(&["retry", id, "--dry-run"]);
    assert_eq!(outcome["job_id"], id);
    assert_eq!(outcome["outcome"], "retried");
    assert_eq!(outcome["dry_run"], true);

    let summary = serve.json(&["retry-all", "--dry-run"]);
    assert_eq!(summary["dry_run"], true);
    let total = summary["total"].as_u64().unwrap();
    let counted: u64 = summary["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!((total, counted), (22, 22), "{summary}");
    assert!(
        summary["counts"]["retried"].as_u64().unwrap() >= 1,
        "{summary}"
    );

    let stats = serve.json(&["stats"]);
    let by_type: u64 = stats["failed_by_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_type, 22, "{stats}");

    // The tables for people, and the API's errors.
    let out = serve.jobs(&["failed"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.starts_with("ID") && table.contains("FAILURE TYPE") && table.contains("REASON"),
        "{table}"
    );
    // Piped, nothing is cut (COLUMNS only applies to a terminal): every reason is whole, in
    // the REASON column, with the failed-at age and the attempts beside it.
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("  FAILED  ") && header.contains("  ATTEMPTS  "),
        "{header}"
    );
    let reason_at = header.find("REASON").unwrap();
    for job in jobs {
        let id = job["id"].as_str().unwrap();
        let reason = job["decision"]["reason"].as_str().unwrap();
        let line = table.lines().find(|l| l.starts_with(id)).unwrap();
        if job["decision"]["action"] == "wait" {
            // "… retry in N s" counts down between the two listings: its first words.
            let head: String = reason.chars().take_while(|c| !c.is_ascii_digit()).collect();
            assert!(line[reason_at..].starts_with(&head), "{table}");
        } else {
            assert_eq!(line.get(reason_at..), Some(reason), "{table}");
        }
    }
    let out = serve.jobs(&["stats"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("QUEUE"));

    let out = serve.jobs(&["show", "no-such-job"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found: "));
    // --force without --reason is bad usage, caught before any request, naming the flag.
    let out = serve.jobs(&["retry", id, "--force"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("force_requires_reason") && stderr.contains("--reason TEXT"),
        "{stderr}"
    );
    assert!(!stderr.contains("reason=…"), "{stderr}");
}

#[test]
fn jobs_says_when_the_server_cannot_be_reached_or_the_url_is_bad() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = retryguard()
        .args([
            "jobs",
            "failed",
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains("retryguard serve"),
        "{stderr}"
    );
    // https is spoken (serve_tls.rs has it reach a server); nothing listens here.
    let out = retryguard()
        .args([
            "jobs",
            "stats",
            "--server",
            &format!("https://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    let out = retryguard()
        .args(["jobs", "stats", "--server", "ftp://127.0.0.1:8000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an http:// or https:// URL"));
}
