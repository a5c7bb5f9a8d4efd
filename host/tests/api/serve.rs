//! The `retryguard serve` binary: `--check-config`, start-up errors, and a real socket with
//! graceful shutdown on SIGTERM.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::common::{RedisServer, retryguard, spawn_serve};

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
