//! `serve` over HTTPS (`[tls]`): a real `retryguard serve` with a certificate made by
//! `openssl`, reached by a rustls client that checks which certificate it was given. The
//! certificate is replaced on disk and the server hands out the new one without a restart; the
//! `[auth]` tokens reload when the config file changes and on SIGHUP; a client that never
//! finishes its handshake stalls nobody; a key of another certificate is refused at start.
//! The CLI reaches it with `--ca-file` (or `RETRYGUARD_CA_FILE`), and reads the audit trail
//! through its API with the token's role.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::api::auth::{Role, new_token};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::common::{RedisServer, retryguard, sigterm_and_wait, spawn_serve_with};
use crate::pki::Pki;

/// The DER of the first certificate of `name.pem`.
fn der(pki: &Pki, name: &str) -> CertificateDer<'static> {
    retryguard::tls::load_certs("test", &pki.file(&format!("{name}.pem"))).unwrap()[0].clone()
}

/// A rustls client trusting only the test CA.
fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    retryguard::tls::install_crypto_provider();
    let roots = retryguard::tls::root_store(Some(("ca", &pki.file("ca.pem")))).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session shows the certificate of the session it resumes: every connection
    // here makes a full handshake, so it sees the certificate the server presents now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One HTTPS GET: the certificate the server presented and the response's status code.
fn get(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    token: &str,
) -> (CertificateDer<'static>, u16) {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    // A server that closes without close_notify after `Connection: close` is fine here.
    let _ = tls.read_to_end(&mut response);
    let cert = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let head = String::from_utf8_lossy(&response);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (cert, status)
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config_text(pki: &Pki, tokens: &[&str]) -> String {
    let quoted: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[auth]\ntokens = [{}]\n\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        quoted.join(", "),
        pki.path("live.pem").display().to_string(),
        pki.path("live.key").display().to_string(),
    )
}

/// Writes `path` whole, then gives it back the modification time it had: a change the
/// reloader's poll cannot see (the size is kept by the caller), so only a SIGHUP applies it.
fn write_unseen(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(
        before.len(),
        text.len() as u64,
        "same size, or the poll sees it"
    );
    // Written beside it and renamed over it, so the poll never sees a new time.
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&next)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[test]
fn https_serve_swaps_its_certificate_and_tokens_without_a_restart() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    pki.server("first");
    pki.server("second");
    std::fs::copy(pki.path("first.pem"), pki.path("live.pem")).unwrap();
    std::fs::copy(pki.path("first.key"), pki.path("live.key")).unwrap();
    let (alice, alice_entry) = new_token("alice", Role::Admin).unwrap();
    let (bob, bob_entry) = new_token("bob", Role::Read).unwrap();
    let (bob2, bob2_entry) = new_token("bob", Role::Read).unwrap();
    let config_file = pki.path("retryguard.toml");
    std::fs::write(&config_file, config_text(&pki, &[&alice_entry, &bob_entry])).unwrap();
    let audit = tempfile::tempdir().unwrap();
    let (mut child, port, mut stdout) = spawn_serve_with(
        &redis,
        &[
            ("RETRYGUARD_CONFIG", config_file.as_os_str()),
            ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
        ],
    );
    // The banner names the scheme and the files.
    let mut banner = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut stdout, &mut banner).unwrap();
    }
    assert!(
        banner.contains("tls:") && banner.contains("live.pem"),
        "{banner}"
    );

    let client = client_config(&pki);
    let (cert, status) = get(&client, port, "/api/v1/jobs/stats", &bob);
    assert_eq!((cert, status), (der(&pki, "first"), 200));
    // Plain HTTP on the TLS port gets no answer, and the server goes on.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));

    // The certificate files change: new connections get the new certificate.
    std::fs::copy(pki.path("second.key"), pki.path("live.key")).unwrap();
    std::fs::copy(pki.path("second.pem"), pki.path("live.pem")).unwrap();
    eventually("the renewed certificate", Duration::from_secs(15), || {
        get(&client, port, "/healthz", &alice).0 == der(&pki, "second")
    });
    // A key that is not the certificate's: the reload fails and the certificate in use stays.
    std::fs::copy(pki.path("first.key"), pki.path("live.key")).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (cert, status) = get(&client, port, "/healthz", &alice);
    assert_eq!((cert, status), (der(&pki, "second"), 200));

    // The config file changes: bob's token is removed and refused from then on.
    std::fs::write(&config_file, config_text(&pki, &[&alice_entry])).unwrap();
    eventually("bob's token refused", Duration::from_secs(15), || {
        get(&client, port, "/api/v1/jobs/stats", &bob).1 == 401
    });
    assert_eq!(get(&client, port, "/api/v1/jobs/stats", &alice).1, 200);

    // A change the poll cannot see (same size and time) applies on SIGHUP: bob comes back
    // with a new token, and the process lives on.
    std::fs::write(&config_file, config_text(&pki, &[&alice_entry, &bob_entry])).unwrap();
    eventually("bob's old token back", Duration::from_secs(15), || {
        get(&client, port, "/api/v1/jobs/stats", &bob).1 == 200
    });
    write_unseen(
        &config_file,
        &config_text(&pki, &[&alice_entry, &bob2_entry]),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        get(&client, port, "/api/v1/jobs/stats", &bob).1,
        200,
        "the poll must not have seen the unseen write"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("the SIGHUP reload", Duration::from_secs(15), || {
        get(&client, port, "/api/v1/jobs/stats", &bob).1 == 401
    });
    assert_eq!(get(&client, port, "/api/v1/jobs/stats", &bob2).1, 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop serve"
    );
    sigterm_and_wait(&mut child, Duration::from_secs(20));
}

#[test]
fn a_client_that_never_finishes_its_handshake_stalls_nobody() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    pki.server("live");
    let (alice, alice_entry) = new_token("alice", Role::Read).unwrap();
    let config_file = pki.path("retryguard.toml");
    std::fs::write(&config_file, config_text(&pki, &[&alice_entry])).unwrap();
    let audit = tempfile::tempdir().unwrap();
    let (mut child, port, _stdout) = spawn_serve_with(
        &redis,
        &[
            ("RETRYGUARD_CONFIG", config_file.as_os_str()),
            ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
        ],
    );
    // Ten connections that send nothing (and one that sends half a ClientHello).
    let mut silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    silent[0]
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .unwrap();
    let client = client_config(&pki);
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(&client, port, "/api/v1/jobs/stats", &alice).1, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served beside the silent clients, not after their 10 s handshake limit: {:?}",
        started.elapsed()
    );
    drop(silent);
    sigterm_and_wait(&mut child, Duration::from_secs(20));
}

#[test]
fn check_config_refuses_a_key_that_is_not_the_certificates() {
    let pki = Pki::new();
    pki.server("one");
    pki.server("two");
    let check = |cert: &str, key: &str| {
        retryguard()
            .args(["serve", "--check-config"])
            .env("RETRYGUARD_TLS_CERT_FILE", pki.path(cert))
            .env("RETRYGUARD_TLS_KEY_FILE", pki.path(key))
            // An unused port: the comparison with Redis is a note, never a failure.
            .env("RETRYGUARD_REDIS_URL", "redis://127.0.0.1:1/0")
            .output()
            .unwrap()
    };
    let out = check("one.pem", "one.key");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("(https)"), "{stdout}");

    let out = check("one.pem", "two.key");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );
    let out = check("one.pem", "missing.key");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("missing.key"),
        "{stderr}"
    );
    let out = retryguard()
        .args(["serve", "--check-config"])
        .env("RETRYGUARD_TLS_CERT_FILE", pki.path("one.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key_file is not"));
}

/// `retryguard ARGS` against the HTTPS `serve` at `port`, with `env`.
fn cli(port: u16, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    retryguard()
        .args(args)
        .env("RETRYGUARD_SERVER", format!("https://127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn the_cli_reaches_https_serve_with_a_private_ca_and_reads_the_audit_through_the_api() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    pki.server("live");
    let ca = pki.path("ca.pem").display().to_string();
    let (admin, admin_entry) = new_token("ops", Role::Admin).unwrap();
    let (reader, reader_entry) = new_token("viewer", Role::Read).unwrap();
    let config_file = pki.path("retryguard.toml");
    std::fs::write(
        &config_file,
        config_text(&pki, &[&admin_entry, &reader_entry]),
    )
    .unwrap();
    let demo = retryguard()
        .args([
            "demo",
            "--redis-url",
            &redis.url(),
            "--count-per-family",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let audit = tempfile::tempdir().unwrap();
    let (mut child, port, _stdout) = spawn_serve_with(
        &redis,
        &[
            ("RETRYGUARD_CONFIG", config_file.as_os_str()),
            ("RETRYGUARD_AUDIT_DIR", audit.path().as_os_str()),
        ],
    );
    let text = |out: &std::process::Output| {
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The private CA, by flag and by variable.
    let out = cli(
        port,
        &["jobs", "stats", "--ca-file", &ca],
        &[("RETRYGUARD_TOKEN", &reader)],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.starts_with("QUEUE"),
        "{stdout}{stderr}"
    );
    let out = cli(
        port,
        &["jobs", "failed", "--json"],
        &[("RETRYGUARD_TOKEN", &reader), ("RETRYGUARD_CA_FILE", &ca)],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = listing["jobs"][0]["id"].as_str().unwrap().to_string();
    // Without it, the system roots do not know the CA: a clear error, exit 1.
    let out = cli(port, &["jobs", "stats"], &[("RETRYGUARD_TOKEN", &reader)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("TLS") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A CA file that holds no certificate is bad usage, before any request.
    let out = cli(
        port,
        &[
            "jobs",
            "stats",
            "--ca-file",
            &pki.path("leaf.ext").display().to_string(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(text(&out).1.contains("--ca-file"), "{}", text(&out).1);
    // The Python client's old variable name still works, with a warning.
    let out = retryguard()
        .args(["jobs", "stats"])
        .env("RETRYGUARD_URL", format!("https://127.0.0.1:{port}"))
        .env("RETRYGUARD_CA_FILE", &ca)
        .env("RETRYGUARD_TOKEN", &reader)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.starts_with("QUEUE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("RETRYGUARD_URL is the old name of RETRYGUARD_SERVER"),
        "{stderr}"
    );

    // A dry run leaves a dry-run audit record; `audit query` reads it through the API.
    let ops = [
        ("RETRYGUARD_TOKEN", admin.as_str()),
        ("RETRYGUARD_CA_FILE", &ca),
    ];
    let out = cli(port, &["jobs", "retry", &id, "--dry-run"], &ops);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out).1);
    let view = [
        ("RETRYGUARD_TOKEN", reader.as_str()),
        ("RETRYGUARD_CA_FILE", &ca),
    ];
    let out = cli(port, &["audit", "query", "--job-id", &id, "--json"], &view);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let page: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let records = page["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{page}");
    assert!(
        records
            .iter()
            .all(|r| r["job_id"] == id.as_str() && r["dry_run_flag"] == true)
    );
    assert!(
        records.iter().all(|r| r["user_or_system"] == "ops"),
        "{page}"
    );
    let out = cli(
        port,
        &[
            "audit",
            "query",
            "--job-id",
            &id,
            "--dry-run",
            "false",
            "--json",
        ],
        &view,
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        page["records"],
        serde_json::json!([]),
        "no real retry was made"
    );
    // The table has a DRY column, and says `yes` for a dry run.
    let out = cli(port, &["audit", "query", "--job-id", &id], &view);
    let (stdout, _) = text(&out);
    let header = stdout.lines().next().unwrap();
    assert!(
        header.contains("  DRY  ") && header.contains("DECISION"),
        "{stdout}"
    );
    let dry_at = header.find("DRY").unwrap();
    let row = stdout.lines().find(|l| l.contains(&id)).unwrap();
    assert_eq!(&row[dry_at..dry_at + 3], "yes", "{stdout}");
    // The roles apply: no token, 401.
    let out = cli(port, &["audit", "query"], &[("RETRYGUARD_CA_FILE", &ca)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("unauthorized"), "{}", text(&out).1);
    let out = cli(port, &["audit", "stats"], &view);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.starts_with("retries on "),
        "{stderr}"
    );

    sigterm_and_wait(&mut child, Duration::from_secs(20));
}
