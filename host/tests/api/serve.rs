//! The `retryguard serve` binary: `--check-config`, start-up errors, and a real socket with
//! graceful shutdown on SIGTERM.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::common::{RedisServer, retryguard, sigterm_and_wait, spawn_serve, spawn_serve_with};

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[retry]\nmax_attempts = 5\n[server]\nlisten = \"127.0.0.1:8123\"\n",
    )
    .unwrap();
    let out = retryguard()
        .args(["serve", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:8123"));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[retry]\nmax_attempt = 5\n").unwrap();
    let out = retryguard()
        .args(["serve", "--check-config", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_attempt"));

    // A value the policy refuses (over its 1000-attempt cap).
    let out = retryguard()
        .args(["serve", "--check-config"])
        .env("RETRYGUARD_RETRY_MAX_ATTEMPTS", "100000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[retry]") && stderr.contains("max_attempts"),
        "{stderr}"
    );

    let out = retryguard()
        .args(["serve", "--check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn serve_says_which_redis_it_cannot_reach() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let out = retryguard()
        .arg("serve")
        .env("RETRYGUARD_REDIS_URL", &url)
        .env("RETRYGUARD_REDIS_CONNECT_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("check that Redis is running"),
        "{stderr}"
    );
}

#[test]
fn serve_answers_on_its_socket_and_stops_cleanly_on_sigterm() {
    let redis = RedisServer::start();
    let (mut child, port, mut stdout) = spawn_serve(&redis);
    let mut banner = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("warning: appendonly") {
            break;
        }
    }
    assert!(
        banner.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{banner}"
    );
    assert!(banner.contains(&redis.url()), "{banner}");
    assert!(banner.contains("warning: appendonly"), "{banner}");

    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-request-id"), "{response}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("serve did not stop within 10 s of SIGTERM");
}

/// One request over a fresh connection; the status and the JSON body.
fn http(port: u16, method: &str, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Bodies are small: one chunk at most when chunked.
    let body = match body.find('{') {
        Some(start) => &body[start..=body.rfind('}').unwrap_or(start)],
        None => "null",
    };
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn a_retry_through_the_api_is_in_the_audit_at_once_and_in_parquet_after_sigterm() {
    let redis = RedisServer::start();
    let now = retryguard::clock::now_ms();
    crate::common::write_failed(
        &mut crate::common::connect(&redis),
        &[crate::common::RawJob::new(
            "paid-1",
            crate::common::NETWORK_TB,
            now - 3_600_000,
        )],
    );
    let audit = tempfile::tempdir().unwrap();
    // A flush interval far longer than the test: only the shutdown flush can write the file.
    let (mut child, port, _stdout) = spawn_serve_with(
        &redis,
        &[
            ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
            ("RETRYGUARD_AUDIT_FLUSH_INTERVAL_MS", "30000".as_ref()),
            ("RETRYGUARD_AUDIT_LEASE_TTL_SECONDS", "120".as_ref()),
        ],
    );
    let (status, body) = http(port, "POST", "/api/v1/jobs/failed/paid-1/retry");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "retried", "{body}");
    let (status, body) = http(port, "GET", "/api/v1/jobs/retry-audit?job_id=paid-1");
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{body}");
    assert_eq!(records[0]["decision"], "retried");
    assert_eq!(records[0]["user_or_system"], "local");

    sigterm_and_wait(&mut child, Duration::from_secs(30));
    let dir = retryguard::audit::AuditStore::local(audit.path()).unwrap();
    let parts = dir.parts().unwrap();
    assert_eq!(parts.len(), 1, "{parts:?}");
    let written =
        retryguard::audit::files::read_all(std::fs::File::open(&parts[0].path).unwrap()).unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].job_id.as_deref(), Some("paid-1"));
    assert_eq!(written[0].record_id, records[0]["record_id"]);
    let outbox: u64 = redis::cmd("XLEN")
        .arg("retryguard:audit:outbox")
        .query(&mut crate::common::connect(&redis))
        .unwrap();
    assert_eq!(outbox, 0, "acknowledged and trimmed");
}

#[test]
fn sigterm_during_a_retry_all_leaves_every_requeued_job_with_its_audit_record() {
    let redis = RedisServer::start();
    let ended = retryguard::clock::now_ms() - 3_600_000;
    let ids: Vec<String> = (0..6000).map(|i| format!("term-{i}")).collect();
    let jobs: Vec<crate::common::RawJob<'_>> = ids
        .iter()
        .map(|id| crate::common::RawJob::new(id, crate::common::NETWORK_TB, ended))
        .collect();
    crate::common::write_failed(&mut crate::common::connect(&redis), &jobs);
    let audit = tempfile::tempdir().unwrap();
    let (mut child, port, _stdout) = spawn_serve_with(
        &redis,
        &[
            ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
            // Answer 202 at once: the retry-all runs on as an operation.
            ("RETRYGUARD_SERVER_RETRY_ALL_WAIT_SECONDS", "0".as_ref()),
        ],
    );
    let (status, body) = http(port, "POST", "/api/v1/jobs/failed/retry-all");
    assert_eq!(status, 202, "{body}");
    // SIGTERM once the operation has requeued some jobs, while it is still running.
    let url = body["status_url"].as_str().unwrap().to_string();
    for _ in 0..2000 {
        let (_, op) = http(port, "GET", &url);
        if op["processed"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(60));

    let mut con = crate::common::connect(&redis);
    let requeued: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:default")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert!(!requeued.is_empty(), "the retry-all had started");
    let outbox: u64 = redis::cmd("XLEN")
        .arg("retryguard:audit:outbox")
        .query(&mut con)
        .unwrap();
    assert_eq!(outbox, 0, "the shutdown flushed the outbox");
    let dir = retryguard::audit::AuditStore::local(audit.path()).unwrap();
    let mut retried = std::collections::BTreeSet::new();
    let mut decisions = std::collections::BTreeMap::<String, usize>::new();
    for part in dir.parts().unwrap() {
        for r in
            retryguard::audit::files::read_all(std::fs::File::open(&part.path).unwrap()).unwrap()
        {
            *decisions.entry(r.decision.clone()).or_default() += 1;
            if r.decision == "retried" {
                assert!(retried.insert(r.job_id.unwrap()), "one record per requeue");
            }
        }
    }
    let requeued: std::collections::BTreeSet<String> = requeued.into_iter().collect();
    assert_eq!(retried, requeued, "{decisions:?}");
    assert_eq!(decisions.get("operation_started"), Some(&1));
    assert_eq!(decisions.get("operation_finished"), Some(&1));
}

/// `GET path`'s body as text.
fn http_text(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_restart_loads_compiled_policies_from_the_cache_dir_and_a_shared_dir_is_refused() {
    let redis = RedisServer::start();
    let audit = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let env = [
        ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
        ("RETRYGUARD_POLICY_CACHE_DIR", cache.path().as_os_str()),
    ];
    let lookups = |port| -> Vec<String> {
        http_text(port, "/metrics")
            .lines()
            .filter(|l| l.starts_with("retryguard_policy_artifact_cache_total{"))
            .map(str::to_string)
            .collect()
    };

    // First start: the built-in policy is compiled and kept.
    let (mut child, port, _stdout) = spawn_serve_with(&redis, &env);
    assert_eq!(
        lookups(port),
        ["retryguard_policy_artifact_cache_total{result=\"miss\"} 1"]
    );
    sigterm_and_wait(&mut child, Duration::from_secs(30));
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        retryguard::policy::builtin::DEFAULT_POLICY,
    ));
    assert!(
        files.len() == 1 && files[0].starts_with(&digest) && files[0].ends_with(".cwasm"),
        "{files:?}"
    );

    // The restart loads it instead of compiling.
    let (mut child, port, _stdout) = spawn_serve_with(&redis, &env);
    assert_eq!(
        lookups(port),
        ["retryguard_policy_artifact_cache_total{result=\"hit\"} 1"]
    );
    sigterm_and_wait(&mut child, Duration::from_secs(30));

    // A directory anyone may write to is not used: serve starts, compiles, warns.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (mut child, port, _stdout) = spawn_serve_with(&redis, &env);
    assert_eq!(lookups(port), Vec::<String>::new());
    let (status, _) = http(port, "GET", "/healthz");
    assert_eq!(status, 200);
    sigterm_and_wait(&mut child, Duration::from_secs(30));
}
