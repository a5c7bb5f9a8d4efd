//! The audit trail in a bucket against real parts: moto's S3 server (`support/s3.rs`),
//! `retryguard audit writer` processes killed with SIGKILL mid retry-all of real RQ
//! failures, a writer that loses the race for a range's object, the store stopped for 30 s,
//! and the bucket read by pyarrow as docs/audit.md tells outside readers to.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::audit::bucket::ManifestPart;
use retryguard::audit::files::read_all;
use retryguard::audit::query::{AuditQuery, query as audit_query};
use retryguard::audit::{AuditRecord, AuditStore, StoreUrl};
use retryguard::clock::new_operation_id;
use retryguard::keyspace;
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::retry::{JobFilter, Outcome, Progress, RetryOptions, RetryService};

use crate::audit::{Lcg, by_decision, service, sigkill, sigterm, spawn_writer_with, wait_drained};
use crate::support::{MotoServer, Python, RedisServer, Serve, connect, query};

const PREFIX: &str = "trail";

/// The variables of a writer or serve on `moto`'s bucket.
fn store_env(moto: &MotoServer) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.push(("RETRYGUARD_AUDIT_URL", moto.url(PREFIX)));
    env
}

/// The bucket, opened as retryguard opens it.
async fn open_bucket(moto: &MotoServer) -> Arc<AuditStore> {
    let options = moto.options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = StoreUrl::Object(moto.url(PREFIX));
    Arc::new(
        AuditStore::open_with(&url, Duration::from_secs(10), &options)
            .await
            .expect("the bucket opens"),
    )
}

/// Every record of every part object listed in the bucket (compaction inputs included),
/// and the records of the parts the manifest lists.
async fn bucket_records(store: &Arc<AuditStore>) -> (Vec<AuditRecord>, Vec<AuditRecord>) {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let bucket = store.bucket().expect("a bucket");
        let read = |parts: Vec<retryguard::audit::files::Part>| {
            let mut all = Vec::new();
            for p in parts {
                all.extend(read_all(store.open_part(&p).expect("opens")).expect("reads"));
            }
            all
        };
        let listed = bucket
            .list_parts()
            .expect("lists")
            .iter()
            .filter_map(ManifestPart::part)
            .collect();
        (read(listed), read(store.parts().expect("the manifest")))
    })
    .await
    .expect("reads the bucket")
}

fn assert_no_duplicate(records: &[AuditRecord]) {
    let mut seen = HashSet::new();
    for r in records {
        assert!(seen.insert(&r.record_id), "record {} twice", r.record_id);
    }
}

async fn retry_all_task(
    svc: &Arc<RetryService<RqBackend>>,
    operation: &str,
) -> tokio::task::JoinHandle<retryguard::retry::Summary> {
    let svc = Arc::clone(svc);
    let operation = operation.to_string();
    tokio::spawn(async move {
        svc.retry_all(
            &JobFilter::default(),
            &RetryOptions::new(),
            "s3-test",
            &operation,
            &Progress::default(),
        )
        .await
        .expect("retry-all")
    })
}

fn xlen(url: &str) -> u64 {
    query(&mut connect(url), &["XLEN", keyspace::AUDIT_OUTBOX])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_writers_killed_mid_retry_all_lose_and_duplicate_no_record() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let moto = MotoServer::start("audit");
    let env = store_env(&moto);
    let ids = python.make_failed(&url, "s3crash", 2000, "jobs.count_and_fail", "runs");
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let operation = new_operation_id();
    let retry_all = retry_all_task(&svc, &operation).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill schedule seed: {seed}");
    let mut rng = Lcg(seed);
    let mut writer = spawn_writer_with(&url, &env);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150 + rng.next(600))).await;
        sigkill(&mut writer);
        writer = spawn_writer_with(&url, &env);
    }
    let summary = retry_all.await.expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&2000));
    tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
    sigkill(&mut writer);
    let mut writer = spawn_writer_with(&url, &env);
    wait_drained(&url, Duration::from_secs(60));
    sigterm(&mut writer);

    let store = open_bucket(&moto).await;
    let (listed, live) = bucket_records(&store).await;
    // No record twice in the bucket at all (not only after de-duplication by range).
    assert_no_duplicate(&listed);
    let counts = by_decision(&listed);
    assert_eq!(counts.get("retried"), Some(&2000), "{counts:?}");
    assert_eq!(listed.len(), 2002, "{counts:?}");
    assert_eq!(live.len(), 2002, "the manifest names every part");
    let retried: HashSet<&str> = listed
        .iter()
        .filter(|r| r.decision == "retried")
        .filter_map(|r| r.job_id.as_deref())
        .collect();
    assert_eq!(retried, ids.iter().map(String::as_str).collect());
    let pending: Vec<redis::Value> = query(
        &mut connect(&url),
        &["XPENDING", keyspace::AUDIT_OUTBOX, keyspace::AUDIT_GROUP],
    );
    assert_eq!(pending.first(), Some(&redis::Value::Int(0)), "{pending:?}");

    // Outside readers: pyarrow over the manifest's parts.
    let out = python
        .command(&url)
        .arg(crate::support::python::repo_root().join("host/tests/rq/read_audit_s3.py"))
        .args([moto.endpoint().as_str(), "audit", PREFIX])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read_audit_s3.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["rows"], 2002, "{report}");
    assert_eq!(report["distinct_record_ids"], 2002);
    assert_eq!(report["by_decision"]["retried"], 2000);
    assert_eq!(report["rows_in_wrong_partition"], 0);
    let schema = report["schema"].as_object().expect("schema");
    for column in retryguard::audit::schema::COLUMNS {
        assert!(schema.contains_key(column), "pyarrow lacks {column}");
    }
    assert!(schema.contains_key("date"), "the hive partition column");

    // retryguard's own query over the bucket: a job's record, by job id.
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let q = AuditQuery {
        job_id: Some(ids[7].clone()),
        ..AuditQuery::default()
    };
    let page = audit_query(&mut backend.connection(), &store, &q)
        .await
        .expect("queries the bucket");
    assert_eq!(page.records.len(), 1, "{:?}", page.records);
    assert_eq!(page.records[0].decision, "retried");
    // And its traceback-free records page through the whole trail once.
    let all = audit_query(
        &mut backend.connection(),
        &store,
        &AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        },
    )
    .await
    .expect("queries");
    assert_eq!(all.records.len(), 1000);
    assert!(all.next_cursor.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_loses_the_put_race_acknowledges_nothing_it_did_not_write() {
    let server = RedisServer::start();
    let url = server.url();
    let moto = MotoServer::start("audit");
    Python::venv().make_failed(&url, "race", 40, "jobs.count_and_fail", "runs");
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let summary = retry_all_task(&svc, &new_operation_id())
        .await
        .await
        .expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&40));
    // No writer has run: the outbox holds the whole range. Another writer "wins" it first.
    let entries: Vec<redis::Value> = query(
        &mut connect(&url),
        &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"],
    );
    let id = |v: &redis::Value| -> String {
        let redis::Value::Array(pair) = v else {
            panic!("an entry: {v:?}")
        };
        redis::from_redis_value(pair[0].clone()).unwrap()
    };
    let (first, last) = (id(&entries[0]), id(&entries[entries.len() - 1]));
    let n = entries.len() as u64;
    assert_eq!(n, 42);
    let date = |id: &str| {
        retryguard::audit::schema::date_of_ms(id.split('-').next().unwrap().parse().unwrap())
    };
    assert_eq!(
        date(&first),
        date(&last),
        "the test ran across midnight UTC"
    );
    let key = format!("{PREFIX}/date={}/part-{first}_{last}.parquet", date(&first));
    moto.boto(&format!(
        "s3.put_object(Bucket='audit', Key={key:?}, Body=b'another writer was here')"
    ));
    let mut writer = spawn_writer_with(&url, &store_env(&moto));
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let e: Option<String> = query(
            &mut connect(&url),
            &["HGET", keyspace::AUDIT_WRITER_STATUS, "last_error"],
        );
        match e {
            Some(e) if !e.is_empty() => break e,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the writer reported no error");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("already exists"), "{error}");
    // A few more attempts: still nothing acknowledged, and the object is theirs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(xlen(&url), n, "nothing was acknowledged");
    let body = moto.boto(&format!(
        "print(s3.get_object(Bucket='audit', Key={key:?})['Body'].read().decode())"
    ));
    assert_eq!(body.trim(), "another writer was here");
    // The other object goes: the range is written once, by this writer, and drained.
    moto.boto(&format!("s3.delete_object(Bucket='audit', Key={key:?})"));
    wait_drained(&url, Duration::from_secs(30));
    sigterm(&mut writer);
    let (listed, live) = bucket_records(&open_bucket(&moto).await).await;
    assert_no_duplicate(&listed);
    assert_eq!(listed.len() as u64, n);
    assert_eq!(live.len() as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_for_30_s_acknowledges_nothing_then_everything_lands_once() {
    let server = RedisServer::start();
    let url = server.url();
    let moto = MotoServer::start("audit");
    let env = store_env(&moto);
    Python::venv().make_failed(&url, "down", 300, "jobs.count_and_fail", "runs");
    let mut writer = spawn_writer_with(&url, &env);
    let mut serve_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serve_env.extend([
        ("RETRYGUARD_AUDIT_WRITER", "false"),
        ("RETRYGUARD_AUDIT_MAX_LAG_SECONDS", "2"),
    ]);
    let serve = Serve::start_with(&url, &serve_env);
    let audit_status = || {
        let (status, body) = serve.http("GET", "/readyz");
        assert_eq!(status, 200, "{body}");
        body["audit"]["status"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(audit_status(), "ok");

    moto.stop();
    let stopped = Instant::now();
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let summary = retry_all_task(&svc, &new_operation_id())
        .await
        .await
        .expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&300));
    let mut degraded = false;
    while stopped.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            xlen(&url),
            302,
            "nothing is acknowledged while the store is down"
        );
        degraded |= audit_status() == "degraded";
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(degraded, "/readyz never said the audit was degraded");
    moto.cont();
    wait_drained(&url, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while audit_status() != "ok" {
        assert!(Instant::now() < deadline, "the audit stayed degraded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&mut writer);
    let (listed, live) = bucket_records(&open_bucket(&moto).await).await;
    assert_no_duplicate(&listed);
    let counts = by_decision(&listed);
    assert_eq!(counts.get("retried"), Some(&300), "{counts:?}");
    assert_eq!(listed.len(), 302);
    assert_eq!(live.len(), 302);
}
