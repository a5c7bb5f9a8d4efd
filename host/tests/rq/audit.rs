//! The durable audit trail against real parts: `retryguard audit writer` processes killed
//! with SIGKILL mid retry-all, two writers sharing one Redis and one directory, files read
//! by pyarrow and DuckDB, outcomes of retries run by a real RQ worker, an unwritable audit
//! directory, and replay of recorded decisions.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::audit::files::read_all;
use retryguard::audit::query::{AuditQuery, query as audit_query};
use retryguard::audit::{AuditRecord, AuditStore};
use retryguard::clock::new_operation_id;
use retryguard::keyspace;
use retryguard::policy::{Decision, EngineConfig, HoldKind, PolicyEngine};
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::retry::tracker as outcomes;
use retryguard::retry::{JobFilter, Outcome, Progress, RetryOptions, RetryService, ServiceConfig};

use crate::support::{Python, RedisServer, connect, query};

pub(crate) async fn service(
    url: &str,
    params: &[(&str, &str)],
    batch: usize,
) -> RetryService<RqBackend> {
    let backend = RqBackend::connect(url, RedisTimeouts::default())
        .await
        .expect("connects");
    let conn = backend.connection();
    let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
    let policy = engine.load_builtin().expect("builtin");
    RetryService::new(
        backend,
        conn,
        engine,
        policy,
        params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ServiceConfig {
            batch_size: batch,
            ..ServiceConfig::default()
        },
    )
}

/// A writer process, killed when dropped (a failing test leaves none behind).
pub(crate) struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Writer {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `retryguard audit writer` over `url` writing into `dir`, with small batches and a short
/// lease so kills and take-overs happen quickly.
fn spawn_writer(url: &str, dir: &Path) -> Writer {
    let dir = dir.display().to_string();
    spawn_writer_with(url, &[("RETRYGUARD_AUDIT_DIR", dir)])
}

/// [`spawn_writer`] with the store named by `store` (the audit variables and any others).
pub(crate) fn spawn_writer_with(url: &str, store: &[(&str, String)]) -> Writer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retryguard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RETRYGUARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["audit", "writer"])
        .current_dir(std::env::temp_dir())
        .env("RETRYGUARD_REDIS_URL", url)
        .envs(store.iter().map(|(k, v)| (k, v)))
        .env("RETRYGUARD_AUDIT_FLUSH_INTERVAL_MS", "50")
        .env("RETRYGUARD_AUDIT_BATCH_SIZE", "150")
        .env("RETRYGUARD_AUDIT_LEASE_TTL_SECONDS", "3")
        .env("RETRYGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::env::var_os("RETRYGUARD_TEST_WRITER_LOGS")
                .map_or_else(Stdio::null, |_| Stdio::inherit()),
        )
        .spawn()
        .map(Writer)
        .expect("retryguard audit writer starts")
}

pub(crate) fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn sigterm(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sigkill(child);
    panic!("the writer did not stop on SIGTERM");
}

/// Waits until the outbox is empty (every record durable and acknowledged).
pub(crate) fn wait_drained(url: &str, timeout: Duration) {
    let mut con = connect(url);
    let deadline = Instant::now() + timeout;
    loop {
        let len: u64 = query(&mut con, &["XLEN", keyspace::AUDIT_OUTBOX]);
        if len == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox still holds {len} records"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record in the finished parquet files (never `.staging/`).
fn parquet_records(dir: &Path) -> Vec<AuditRecord> {
    let dir = AuditStore::local(dir).expect("audit dir");
    let mut all = Vec::new();
    for part in dir.parts().expect("lists") {
        assert!(
            part.path
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n.to_string_lossy().starts_with("date=")),
            "{part:?}"
        );
        let file = std::fs::File::open(&part.path).expect("a finished file opens");
        all.extend(read_all(file).expect("a finished file reads"));
    }
    all
}

/// Asserts each record id appears once and returns the records by decision.
pub(crate) fn by_decision(records: &[AuditRecord]) -> BTreeMap<String, usize> {
    let ids: HashSet<&str> = records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "a record was written twice");
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.decision.clone()).or_default() += 1;
    }
    counts
}

/// A small deterministic generator for kill times (the seed is printed).
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_retry_all_lose_and_duplicate_no_record() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "crash", 2000, "jobs.count_and_fail", "runs");
    let audit = tempfile::tempdir().unwrap();
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let operation = new_operation_id();
    let retry_all = {
        let svc = Arc::clone(&svc);
        let operation = operation.clone();
        tokio::spawn(async move {
            svc.retry_all(
                &JobFilter::default(),
                &RetryOptions::new(),
                "crash-test",
                &operation,
                &Progress::default(),
            )
            .await
            .expect("retry-all")
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill schedule seed: {seed}");
    let mut rng = Lcg(seed);
    let mut writer = spawn_writer(&url, audit.path());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150 + rng.next(600))).await;
        sigkill(&mut writer);
        writer = spawn_writer(&url, audit.path());
    }
    let summary = retry_all.await.expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&2000));
    // One more kill after the retries, then a writer that is left to finish.
    tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
    sigkill(&mut writer);
    let mut writer = spawn_writer(&url, audit.path());
    wait_drained(&url, Duration::from_secs(60));
    sigterm(&mut writer);

    let records = parquet_records(audit.path());
    let counts = by_decision(&records);
    assert_eq!(counts.get("retried"), Some(&2000), "{counts:?}");
    assert_eq!(counts.get("operation_started"), Some(&1));
    assert_eq!(counts.get("operation_finished"), Some(&1));
    assert_eq!(records.len(), 2002, "{counts:?}");
    let retried: HashSet<&str> = records
        .iter()
        .filter(|r| r.decision == "retried")
        .filter_map(|r| r.job_id.as_deref())
        .collect();
    assert_eq!(retried, ids.iter().map(String::as_str).collect());
    assert!(records.iter().all(|r| {
        r.operation_id.as_deref() == Some(operation.as_str()) && r.user_or_system == "crash-test"
    }));
    // Nothing pending in the group either.
    let mut con = connect(&url);
    let pending: Vec<redis::Value> = query(
        &mut con,
        &["XPENDING", keyspace::AUDIT_OUTBOX, keyspace::AUDIT_GROUP],
    );
    assert_eq!(
        pending.first(),
        Some(&redis::Value::Int(0)),
        "pending: {pending:?}"
    );
    // The files are what analysts read: pyarrow and DuckDB agree.
    let report = read_with_python(python, &url, audit.path());
    assert_eq!(report["duckdb_count"], 2002);
    assert_eq!(report["pyarrow_rows"], 2002);
    assert_eq!(report["distinct_record_ids"], 2002);
    assert_eq!(report["by_decision"]["retried"], 2000);
    assert_eq!(report["rows_in_wrong_partition"], 0);
    let schema = report["schema"].as_object().expect("schema");
    for column in retryguard::audit::schema::COLUMNS {
        assert!(schema.contains_key(column), "pyarrow lacks {column}");
    }
    assert!(schema.contains_key("date"), "the hive partition column");
    assert_eq!(schema["timestamp"], "timestamp[us, tz=UTC]");
    // And retryguard's own query answers the same, paging with its cursor.
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let mut conn = backend.connection();
    let dir = Arc::new(AuditStore::local(audit.path()).unwrap());
    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let q = AuditQuery {
            limit: 1000,
            cursor,
            ..AuditQuery::default()
        };
        let page = audit_query(&mut conn, &dir, &q).await.expect("queries");
        for r in &page.records {
            assert!(
                seen.insert(r.record_id.clone()),
                "paged twice: {}",
                r.record_id
            );
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len() as u64, report["duckdb_count"].as_u64().unwrap());
}

fn read_with_python(python: &Python, url: &str, dir: &Path) -> serde_json::Value {
    let out = python
        .command(url)
        .arg(crate::support::python::repo_root().join("host/tests/rq/read_audit.py"))
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read_audit.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_share_the_work_one_at_a_time_and_take_over_a_killed_one() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "pair", 600, "jobs.count_and_fail", "runs");
    let audit = tempfile::tempdir().unwrap();
    let mut a = spawn_writer(&url, audit.path());
    let mut b = spawn_writer(&url, audit.path());
    let svc = service(&url, &[("cooldown_seconds", "0")], 50).await;
    let mut con = connect(&url);
    // Watch the lease while the first half is retried: one holder at a time.
    let mut holders = HashSet::new();
    for _ in 0..3 {
        let filter = JobFilter {
            limit: Some(100),
            ..JobFilter::default()
        };
        svc.retry_all(
            &filter,
            &RetryOptions::new(),
            "t",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
        let holder: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE]);
        holders.extend(holder);
    }
    assert_eq!(
        holders.len(),
        1,
        "one lease holder while both live: {holders:?}"
    );
    let holder = holders.into_iter().next().unwrap_or_default();
    // Kill the holder (its pid is in the token), then retry the rest.
    let (killed, survivor) = if holder.contains(&format!("-{}-", a.id())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    sigkill(killed);
    svc.retry_all(
        &JobFilter::default(),
        &RetryOptions::new(),
        "t",
        &new_operation_id(),
        &Progress::default(),
    )
    .await
    .unwrap();
    wait_drained(&url, Duration::from_secs(30));
    let new_holder: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE]);
    assert!(
        new_holder.as_deref().is_some_and(|h| h != holder),
        "the survivor took the lease: {new_holder:?}"
    );
    sigterm(survivor);
    let records = parquet_records(audit.path());
    let counts = by_decision(&records);
    assert_eq!(counts.get("retried"), Some(&600), "{counts:?}");
    assert_eq!(counts.get("operation_started"), Some(&4));
    assert_eq!(counts.get("operation_finished"), Some(&4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_dir_keeps_records_in_redis_and_reports_degraded() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    python.make_failed(&url, "full", 30, "jobs.count_and_fail", "runs");
    let audit = tempfile::tempdir().unwrap();
    let mut writer = spawn_writer(&url, audit.path());
    // Wait until the writer holds the lease, then make its staging area unusable (a file
    // where the directory was: every write fails, as on a full or read-only disk).
    let mut con = connect(&url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while query::<Option<String>>(&mut con, &["GET", keyspace::AUDIT_LEASE]).is_none() {
        assert!(Instant::now() < deadline, "no writer took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let staging = audit.path().join(".staging");
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, b"in the way").unwrap();
    let svc = service(&url, &[("cooldown_seconds", "0")], 50).await;
    let summary = svc
        .retry_all(
            &JobFilter::default(),
            &RetryOptions::new(),
            "t",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .unwrap();
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&30));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let mut conn = backend.connection();
    let health = retryguard::audit::health(&mut conn, 30_000).await.unwrap();
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(health.last_error.is_some(), "{health:?}");
    assert_eq!(health.backlog, 32, "every record waits in the outbox");
    let partitions = std::fs::read_dir(audit.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("date="))
        })
        .count();
    assert_eq!(partitions, 0, "nothing was written");
    // The disk comes back: everything is written, once.
    std::fs::remove_file(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    wait_drained(&url, Duration::from_secs(30));
    let health = retryguard::audit::health(&mut conn, 30_000).await.unwrap();
    assert_eq!(health.status, "ok", "{health:?}");
    sigterm(&mut writer);
    let counts = by_decision(&parquet_records(audit.path()));
    assert_eq!(counts.get("retried"), Some(&30), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_of_retries_run_by_a_real_worker_are_recorded_once() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let good = python.make_failed(&url, "outcome", 1, "jobs.fail_once", "runs");
    let bad = python.make_failed(&url, "outcome", 1, "jobs.count_and_fail", "runs");
    let svc = service(&url, &[("cooldown_seconds", "0")], 50).await;
    for id in good.iter().chain(&bad) {
        let o = svc.retry(id, &RetryOptions::new(), "t").await.unwrap();
        assert_eq!(o.outcome, Outcome::Retried, "{}", o.reason);
    }
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let mut conn = backend.connection();
    // Still queued: no outcome yet.
    assert_eq!(outcomes::track_once(&mut conn).await.unwrap(), 0);
    python.run_worker_burst(&url, &["outcome"]);
    assert_eq!(outcomes::track_once(&mut conn).await.unwrap(), 2);
    assert_eq!(outcomes::track_once(&mut conn).await.unwrap(), 0, "once");
    let mut con = connect(&url);
    let entries: Vec<(String, Vec<(String, String)>)> =
        query(&mut con, &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"]);
    let outcome_of = |id: &str| -> Vec<BTreeMap<String, String>> {
        entries
            .iter()
            .map(|(_, f)| {
                retryguard::audit::encoding::pairs(f)
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(|f| {
                f.get("job_id").map(String::as_str) == Some(id)
                    && ["succeeded", "failed_again", "lost"]
                        .contains(&f.get("decision").map(String::as_str).unwrap_or(""))
            })
            .collect()
    };
    let g = outcome_of(&good[0]);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["decision"], "succeeded");
    assert_eq!(g[0]["success"], "true");
    assert_eq!(g[0]["failure_type"], "network_error");
    assert_eq!(g[0]["job_type"], "jobs.fail_once");
    assert!(g[0]["time_to_outcome_ms"].parse::<u64>().is_ok());
    let b = outcome_of(&bad[0]);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["decision"], "failed_again");
    assert_eq!(b[0]["attempt_number"], "1");
    // The stats read the same records: one success out of two retries.
    let empty = tempfile::tempdir().unwrap();
    let dir = Arc::new(AuditStore::local(empty.path()).unwrap());
    let now = retryguard::clock::now_ms();
    let stats = retryguard::analytics::stats::retry_stats(&mut conn, &dir, now)
        .await
        .unwrap();
    assert_eq!(stats.retries_today, 2, "{stats:?}");
    assert_eq!(stats.retry_success_rate, Some(0.5), "{stats:?}");
    let by_type: BTreeMap<_, _> = stats
        .by_job_type
        .iter()
        .map(|g| (g.value.clone().unwrap_or_default(), g.success_rate))
        .collect();
    assert_eq!(by_type.get("jobs.fail_once"), Some(&Some(1.0)), "{stats:?}");
    assert_eq!(
        by_type.get("jobs.count_and_fail"),
        Some(&Some(0.0)),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_has_one_record_and_replays_to_the_same_decision() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let net = python.make_failed(&url, "each", 3, "jobs.count_and_fail", "runs");
    let bad = python.make_failed(&url, "each", 1, "jobs.validation_error", "");
    let audit = tempfile::tempdir().unwrap();
    let opts = RetryOptions::new();
    // Cooldown 60 s: blocked; then no cooldown, max 1: retried; after it fails again,
    // blocked by max attempts; non-retryable; not found; a dry run; a forced retry.
    let cooling = service(&url, &[], 50).await;
    let svc = service(
        &url,
        &[("cooldown_seconds", "0"), ("max_attempts", "1")],
        50,
    )
    .await;
    let mut outcomes = vec![cooling.retry(&net[0], &opts, "ops").await.unwrap()];
    outcomes.push(svc.retry(&net[0], &opts, "ops").await.unwrap());
    python.run_worker_burst(&url, &["each"]);
    outcomes.push(svc.retry(&net[0], &opts, "ops").await.unwrap());
    outcomes.push(svc.retry(&bad[0], &opts, "ops").await.unwrap());
    outcomes.push(svc.retry("no-such-job", &opts, "ops").await.unwrap());
    let dry = RetryOptions {
        dry_run: true,
        ..RetryOptions::new()
    };
    outcomes.push(svc.retry(&net[1], &dry, "ops").await.unwrap());
    let force = RetryOptions {
        force: true,
        reason: Some("ticket OPS-7".into()),
        ..RetryOptions::new()
    };
    outcomes.push(svc.retry(&net[0], &force, "ops").await.unwrap());
    let kinds: Vec<Outcome> = outcomes.iter().map(|o| o.outcome).collect();
    assert_eq!(
        kinds,
        [
            Outcome::BlockedCooldown,
            Outcome::Retried,
            Outcome::BlockedMaxAttempts,
            Outcome::BlockedNonRetryable,
            Outcome::NotFound,
            Outcome::Retried,
            Outcome::Retried,
        ]
    );
    let mut writer = spawn_writer(&url, audit.path());
    wait_drained(&url, Duration::from_secs(30));
    sigterm(&mut writer);
    let records = parquet_records(audit.path());
    assert_eq!(records.len(), outcomes.len(), "{records:#?}");
    for (o, r) in outcomes.iter().zip(&records) {
        assert_eq!(r.job_id.as_deref(), Some(o.job_id.as_str()));
        assert_eq!(r.decision, o.outcome.as_str());
        assert_eq!(r.user_or_system, "ops");
        assert_eq!(r.dry_run_flag, o.dry_run);
        assert_eq!(r.forced, o.forced);
        assert_eq!(r.success, Some(o.outcome == Outcome::Retried));
        assert_eq!(r.attempt_number, Some(o.attempt as i32));
    }
    assert_eq!(records[6].retry_reason.as_deref(), Some("ticket OPS-7"));

    // Replay: the record alone (plus the traceback it names) gives the same decision.
    let dir = AuditStore::local(audit.path()).unwrap();
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let policy = engine.load_builtin().unwrap();
    let mut replayed = 0;
    for r in records.iter().filter(|r| !r.forced && r.seed.is_some()) {
        let sha = r.traceback_sha256.as_deref().expect("a traceback digest");
        let traceback = dir.blob(sha).unwrap().expect("the traceback was stored");
        let input = r.failure_input(traceback).expect("a failure input");
        assert_eq!(
            r.policy_digest.as_deref(),
            Some(policy.digest().to_string().as_str())
        );
        let now = u64::try_from(r.now_ms.expect("now")).unwrap();
        let eval = engine
            .evaluate(&policy, &input, &r.params_pairs(), now)
            .expect("evaluates");
        assert_eq!(
            Some(eval.classification.failure_type.as_str()),
            r.failure_type.as_deref()
        );
        let decision = match eval.decision {
            Decision::RetryAt { at_ms } if at_ms <= now => "retried",
            Decision::RetryAt { .. } => "blocked_cooldown",
            Decision::Hold {
                kind: HoldKind::MaxAttempts,
                ..
            } => "blocked_max_attempts",
            Decision::Hold {
                kind: HoldKind::NonRetryable,
                ..
            } => "blocked_non_retryable",
            Decision::Hold { .. } => "other",
        };
        assert_eq!(decision, r.decision, "{r:?}");
        replayed += 1;
    }
    assert_eq!(replayed, 5, "every policy decision replays");

    // The CLI reads the same trail without a server (`--direct`), and says what it reads.
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_retryguard"))
            .args(args)
            .current_dir(std::env::temp_dir())
            .env_remove("RETRYGUARD_CONFIG")
            .env("RETRYGUARD_REDIS_URL", &url)
            .env("RETRYGUARD_AUDIT_DIR", audit.path())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&url) && stderr.contains(&audit.path().display().to_string()),
            "names the Redis and the directory it reads: {stderr}"
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let page = cli(&["audit", "query", "--direct", "--job-id", &net[0], "--json"]);
    let decisions: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "retried",
            "blocked_max_attempts",
            "retried",
            "blocked_cooldown"
        ],
        "newest first"
    );
    let stats = cli(&["audit", "stats", "--direct", "--json"]);
    assert_eq!(stats["retries_today"], 2, "{stats}");
    assert_eq!(stats["blocked_cooldown"], 1);
    assert_eq!(stats["blocked_max_attempts"], 1);
}
