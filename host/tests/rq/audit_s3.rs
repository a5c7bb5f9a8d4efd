//! The audit trail in a bucket against real parts: moto's S3 server (`support/s3.rs`) and
//! its conditional puts, `retryguard audit writer` processes killed with SIGKILL mid
//! retry-all of real RQ failures, a writer that finds a foreign object at its range's name,
//! the store stopped for 30 s, and the bucket read by pyarrow (`read_audit_s3.py`) and by
//! `GET /api/v1/jobs/retry-audit` of a `retryguard serve` pointed at it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, TimeUnit};
use retryguard::audit::bucket::ManifestPart;
use retryguard::audit::files::read_all;
use retryguard::audit::query::{AuditQuery, query as audit_query};
use retryguard::audit::schema::StreamId;
use retryguard::audit::{AuditRecord, AuditStore, StoreUrl};
use retryguard::clock::new_operation_id;
use retryguard::keyspace;
use retryguard::queue::rq::{RedisTimeouts, RqBackend};
use retryguard::retry::{JobFilter, Outcome, Progress, RetryOptions, RetryService, Summary};
use serde_json::Value;

use crate::audit::{Lcg, by_decision, service, sigkill, sigterm, spawn_writer_with, wait_drained};
use crate::support::{MotoServer, Python, RedisServer, Serve, connect, query};

/// The bucket and the prefix of every test's trail.
const BUCKET: &str = "retryguard-audit";
const PREFIX: &str = "trail";

/// The variables of a writer or serve whose trail is `moto`'s bucket.
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

/// What retryguard reads in the bucket: the records of every part object a listing finds
/// (compaction inputs included), and those of the parts the manifest names.
struct BucketRecords {
    listed: Vec<AuditRecord>,
    live: Vec<AuditRecord>,
}

async fn bucket_records(moto: &MotoServer) -> BucketRecords {
    let store = open_bucket(moto).await;
    tokio::task::spawn_blocking(move || {
        let bucket = store.bucket().expect("a bucket");
        let read = |parts: Vec<retryguard::audit::files::Part>| {
            let mut all = Vec::new();
            for p in parts {
                let source = store.open_part(&p).expect("a part opens");
                all.extend(read_all(source).unwrap_or_else(|e| panic!("{p:?} reads: {e}")));
            }
            all
        };
        let listing = bucket.list_parts().expect("lists");
        let listed = read(listing.iter().filter_map(ManifestPart::part).collect());
        let live = read(store.parts().expect("the manifest"));
        BucketRecords { listed, live }
    })
    .await
    .expect("reads the bucket")
}

/// Asserts no record id twice among `records` and returns the id set.
fn ids_once(records: &[AuditRecord], what: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for r in records {
        assert!(
            seen.insert(r.record_id.clone()),
            "{what}: record {} twice",
            r.record_id
        );
    }
    seen
}

/// `read_audit_s3.py`: pyarrow over the manifest's parts and over every listed part object.
/// Asserts what holds of any bucket: no record twice in any object, the manifest names no
/// part inside another, each part's records inside its name's range and date.
fn read_with_pyarrow(moto: &MotoServer) -> Value {
    let out = Python::venv()
        .command("redis://unused")
        .arg(crate::support::python::repo_root().join("host/tests/rq/read_audit_s3.py"))
        .args([moto.endpoint().as_str(), moto.bucket(), PREFIX])
        .args(["test", "test", "us-east-1"])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read_audit_s3.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let objects = &report["objects"];
    assert_eq!(
        objects["duplicate_count"], 0,
        "a record in two part objects: {objects}"
    );
    assert_eq!(report["manifest_version"], 1);
    assert_eq!(report["manifest_nested_parts"], serde_json::json!([]));
    assert_eq!(
        report["parts_with_records_outside_their_name"],
        serde_json::json!([])
    );
    assert_eq!(report["rows_in_wrong_partition"], 0);
    assert_eq!(report["rows"], report["distinct_record_ids"], "{report}");
    report
}

/// The pyarrow name of an arrow type (docs/audit.md's type table).
fn pyarrow_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => format!("timestamp[us, tz={tz}]"),
        other => panic!("no pyarrow name for {other:?}: add it here and to docs/audit.md"),
    }
}

/// The schema pyarrow read is the documented one: every column of `schema.rs` (which
/// docs/audit.md lists) with its type, plus the hive `date` column, and nothing else.
fn assert_documented_schema(report: &Value) {
    let read: BTreeMap<String, String> = report["schema"]
        .as_object()
        .expect("a schema")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let schema = retryguard::audit::schema::schema();
    let mut expected: BTreeMap<String, String> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), pyarrow_type(f.data_type())))
        .collect();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, retryguard::audit::schema::COLUMNS);
    let date = read.get("date").cloned();
    assert!(date.is_some(), "the hive partition column: {read:?}");
    expected.insert("date".into(), date.unwrap_or_default());
    assert_eq!(read, expected);
}

/// The record ids pyarrow read through the manifest.
fn report_ids(report: &Value) -> BTreeSet<String> {
    report["record_ids"]
        .as_array()
        .expect("record ids")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn retry_all_task(
    svc: &Arc<RetryService<RqBackend>>,
    filter: JobFilter,
) -> tokio::task::JoinHandle<Summary> {
    let svc = Arc::clone(svc);
    tokio::spawn(async move {
        svc.retry_all(
            &filter,
            &RetryOptions::new(),
            "s3-test",
            &new_operation_id(),
            &Progress::default(),
        )
        .await
        .expect("retry-all")
    })
}

fn xlen(url: &str) -> u64 {
    query(&mut connect(url), &["XLEN", keyspace::AUDIT_OUTBOX])
}

/// XPENDING's summary: (count, smallest id, greatest id).
fn xpending(url: &str) -> (u64, Option<String>, Option<String>) {
    let reply: Vec<redis::Value> = query(
        &mut connect(url),
        &["XPENDING", keyspace::AUDIT_OUTBOX, keyspace::AUDIT_GROUP],
    );
    let text = |v: Option<&redis::Value>| -> Option<String> {
        v.and_then(|v| redis::from_redis_value::<Option<String>>(v.clone()).ok())
            .flatten()
    };
    let count = reply
        .first()
        .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
        .unwrap_or(0);
    (count, text(reply.get(1)), text(reply.get(2)))
}

/// The outbox's entry ids, oldest first.
fn outbox_ids(url: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = query(
        &mut connect(url),
        &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"],
    );
    entries.into_iter().map(|(id, _)| id).collect()
}

/// The writer status's `last_error` (empty: none).
fn writer_error(url: &str) -> String {
    let e: Option<String> = query(
        &mut connect(url),
        &["HGET", keyspace::AUDIT_WRITER_STATUS, "last_error"],
    );
    e.unwrap_or_default()
}

/// `/readyz`'s top-level status and its `audit` block.
fn readyz(serve: &Serve) -> (String, Value) {
    let (status, body) = serve.http("GET", "/readyz");
    assert_eq!(status, 200, "a degraded audit keeps /readyz a 200: {body}");
    (
        body["status"].as_str().unwrap_or_default().to_string(),
        body["audit"].clone(),
    )
}

/// An object's ETag and body (hex), by boto3; `None` when there is no such object.
fn object(moto: &MotoServer, key: &str) -> Option<(String, String)> {
    let out = moto.boto(&format!(
        "try:\n    o = s3.get_object(Bucket=bucket, Key={key:?})\n\
         except s3.exceptions.NoSuchKey:\n    print('null'); sys.exit(0)\n\
         print(json.dumps([o['ETag'], o['Body'].read().hex()]))"
    ));
    let v: Option<(String, String)> = serde_json::from_str(out.trim()).expect("JSON");
    v
}

/// The keys under `PREFIX/date=` (part objects and anything else put there).
fn date_keys(moto: &MotoServer) -> Vec<String> {
    let out = moto.boto(&format!(
        "keys = []\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='{PREFIX}/date='):\n    \
             keys += [o['Key'] for o in page.get('Contents', [])]\n\
         print(json.dumps(sorted(keys)))"
    ));
    serde_json::from_str(out.trim()).expect("JSON")
}

/// `key` is the only object under `PREFIX/date=`, and still holds `object_was` (ETag and bytes).
fn assert_only_object(moto: &MotoServer, key: &str, object_was: &(String, String)) {
    assert_eq!(
        object(moto, key).as_ref(),
        Some(object_was),
        "same ETag and bytes"
    );
    assert_eq!(date_keys(moto), [key], "no other part was put");
}

/// The harness itself: moto answers a second `If-None-Match: *` put of a key with 412 and
/// keeps the first object, and SIGSTOP/SIGCONT make it stop and resume answering.
#[test]
fn moto_refuses_a_second_conditional_put_and_stops_on_sigstop() {
    let moto = MotoServer::start(BUCKET);
    let out = moto.boto(
        "first = s3.put_object(Bucket=bucket, Key='k', Body=b'first', IfNoneMatch='*')\n\
         try:\n    \
             s3.put_object(Bucket=bucket, Key='k', Body=b'second', IfNoneMatch='*')\n    \
             second = [200, 'accepted']\n\
         except s3.exceptions.ClientError as e:\n    \
             second = [e.response['ResponseMetadata']['HTTPStatusCode'], e.response['Error']['Code']]\n\
         body = s3.get_object(Bucket=bucket, Key='k')['Body'].read().decode()\n\
         print(json.dumps({'first': first['ResponseMetadata']['HTTPStatusCode'], \
         'second': second, 'body': body}))",
    );
    let got: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        got,
        serde_json::json!({"first": 200, "second": [412, "PreconditionFailed"], "body": "first"}),
        "moto must honour If-None-Match: * on PutObject (the writer's conditional puts)"
    );
    // Stopped, it accepts connections but answers nothing; continued, it answers again.
    let ask = || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", moto.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.write_all(b"GET /moto-api/data.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok()
    };
    moto.stop();
    assert!(!ask(), "a stopped moto answered");
    moto.cont();
    assert!(ask(), "moto did not answer after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_writers_killed_mid_retry_all_lose_and_duplicate_no_record() {
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let moto = MotoServer::start(BUCKET);
    let env = store_env(&moto);
    let ids = python.make_failed(&url, "s3crash", 2000, "jobs.count_and_fail", "runs");
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let retry_all = retry_all_task(&svc, JobFilter::default());
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
    let requeued = summary.counts.get(&Outcome::Retried).copied();
    assert_eq!(requeued, Some(2000), "{summary:?}");
    // One more kill after the retries, then a writer that is left to finish.
    tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
    sigkill(&mut writer);
    let mut writer = spawn_writer_with(&url, &env);
    wait_drained(&url, Duration::from_secs(60));
    sigterm(&mut writer);
    let (pending, _, _) = xpending(&url);
    assert_eq!(pending, 0, "nothing left pending in the group");

    // Every part object in the bucket, not only the manifest's: no record twice.
    let bucket = bucket_records(&moto).await;
    let listed = ids_once(&bucket.listed, "the listed part objects");
    let counts = by_decision(&bucket.listed);
    assert_eq!(
        counts.get("retried").map(|&n| n as u64),
        requeued,
        "one record per requeue: {counts:?}"
    );
    assert_eq!(counts.get("operation_started"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("operation_finished"), Some(&1), "{counts:?}");
    assert_eq!(bucket.listed.len(), 2002, "{counts:?}");
    let retried: HashSet<&str> = bucket
        .listed
        .iter()
        .filter(|r| r.decision == "retried")
        .filter_map(|r| r.job_id.as_deref())
        .collect();
    assert_eq!(retried, ids.iter().map(String::as_str).collect());
    // The manifest names parts covering every record.
    assert_eq!(ids_once(&bucket.live, "the manifest's parts"), listed);

    // The same, read by pyarrow without retryguard.
    let report = read_with_pyarrow(&moto);
    assert_eq!(report["objects"]["rows"], 2002, "{}", report["objects"]);
    assert_eq!(report["objects"]["not_in_manifest"], serde_json::json!([]));
    assert_eq!(report["rows"], 2002);
    assert_eq!(report["by_decision"]["retried"], 2000);
    assert_eq!(report_ids(&report), listed);

    // retryguard's own query pages through the bucket, each record once.
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let store = open_bucket(&moto).await;
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    loop {
        let q = AuditQuery {
            limit: 1000,
            cursor,
            ..AuditQuery::default()
        };
        let page = audit_query(&mut backend.connection(), &store, &q)
            .await
            .expect("queries the bucket");
        for r in &page.records {
            assert!(seen.insert(r.record_id.clone()), "paged twice: {r:?}");
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, listed);
    println!(
        "{} part objects, {} in the manifest; {:?}",
        report["objects"]["parts"],
        report["manifest_parts"],
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_at_a_ranges_name_acknowledges_nothing() {
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let moto = MotoServer::start(BUCKET);
    Python::venv().make_failed(&url, "race", 40, "jobs.count_and_fail", "runs");
    // No writer runs: the outbox fills with the whole range (the spawned writers' batch
    // size, 150, takes it in one batch).
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 100).await);
    let summary = retry_all_task(&svc, JobFilter::default())
        .await
        .expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&40));
    let ids = outbox_ids(&url);
    let n = ids.len() as u64;
    assert_eq!(n, 42, "40 retries, the operation's start and end");
    let (first, last) = (ids[0].clone(), ids[ids.len() - 1].clone());
    let date = |id: &str| {
        retryguard::audit::schema::date_of_ms(id.split('-').next().unwrap().parse().unwrap())
    };
    assert_eq!(
        date(&first),
        date(&last),
        "the test ran across midnight UTC"
    );
    let name = format!("part-{first}_{last}.parquet");
    let key = format!("{PREFIX}/date={}/{name}", date(&first));
    // Another party "wins" the range: junk at exactly the name the writer will put.
    moto.boto(&format!(
        "s3.put_object(Bucket=bucket, Key={key:?}, Body=b'another writer was here')"
    ));
    let junk = object(&moto, &key).expect("the junk object");
    let mut writer = spawn_writer_with(&url, &store_env(&moto));
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let e = writer_error(&url);
        if !e.is_empty() {
            break e;
        }
        assert!(Instant::now() < deadline, "the writer reported no error");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the writer's error: {error}");
    assert!(
        error.contains("already exists") && error.contains(&name),
        "the error names the object in the way: {error}"
    );
    // A few more attempts: still nothing acknowledged, the object is untouched, nothing
    // else was put, and the audit says degraded with the error.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(xlen(&url), n, "nothing was acknowledged");
    assert_eq!(outbox_ids(&url), ids, "nothing was deleted");
    let (pending, lo, hi) = xpending(&url);
    assert!(pending <= n, "more pending ({pending}) than entries ({n})");
    assert_eq!(
        (pending, lo.as_deref(), hi.as_deref()),
        (n, Some(first.as_str()), Some(last.as_str())),
        "the writer holds the whole range, read and not acknowledged"
    );
    assert_only_object(&moto, &key, &junk);
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let health = retryguard::audit::health(&mut backend.connection(), 30_000)
        .await
        .unwrap();
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&name)),
        "{health:?}"
    );
    assert_eq!(health.backlog, n);

    // An impostor that is a real audit part, but without the range's last record: not
    // exactly the range's ids, so still nothing is acknowledged.
    let entries: Vec<(String, Vec<(String, String)>)> = query(
        &mut connect(&url),
        &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"],
    );
    let records: Vec<AuditRecord> = entries
        .iter()
        .map(|(id, fields)| AuditRecord::from_entry(StreamId::parse(id).unwrap(), fields))
        .collect();
    let local = tempfile::tempdir().unwrap();
    let part = AuditStore::local(local.path())
        .unwrap()
        .write_part(&date(&first), &records[..records.len() - 1], &|| true)
        .unwrap()
        .expect("a local part");
    moto.boto(&format!(
        "s3.put_object(Bucket=bucket, Key={key:?}, Body=open({:?}, 'rb').read())",
        part.path.display().to_string()
    ));
    let impostor = object(&moto, &key).expect("the impostor");
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let e = writer_error(&url);
        if e != error && !e.is_empty() {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not try again: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the writer's error: {error}");
    assert!(
        error.contains(&name) && error.contains("nothing was acknowledged"),
        "{error}"
    );
    assert_eq!(outbox_ids(&url), ids, "nothing was acknowledged");
    assert_eq!(xpending(&url).0, n);
    assert_only_object(&moto, &key, &impostor);

    // The impostor goes: the writer writes the range once, under that name, and drains.
    moto.boto(&format!("s3.delete_object(Bucket=bucket, Key={key:?})"));
    let deleted = Instant::now();
    wait_drained(&url, Duration::from_secs(30));
    println!(
        "drained {:?} after the impostor was deleted",
        deleted.elapsed()
    );
    let health = retryguard::audit::health(&mut backend.connection(), 30_000)
        .await
        .unwrap();
    assert_eq!(health.status, "ok", "{health:?}");
    sigterm(&mut writer);
    assert_eq!(
        date_keys(&moto),
        std::slice::from_ref(&key),
        "one part, the range's"
    );
    let written = object(&moto, &key).expect("the range's part");
    assert_ne!(written.0, junk.0, "the writer's own object now");
    assert_ne!(written.0, impostor.0);
    let bucket = bucket_records(&moto).await;
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids_once(&bucket.listed, "the listed parts"), expected);
    assert_eq!(ids_once(&bucket.live, "the manifest's parts"), expected);
    println!("{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_for_30_s_acknowledges_nothing_then_everything_lands_once() {
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let moto = MotoServer::start(BUCKET);
    let env = store_env(&moto);
    Python::venv().make_failed(&url, "down", 300, "jobs.count_and_fail", "runs");
    let mut writer = spawn_writer_with(&url, &env);
    let mut serve_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serve_env.extend([
        ("RETRYGUARD_AUDIT_WRITER", "false"),
        ("RETRYGUARD_AUDIT_MAX_LAG_SECONDS", "2"),
    ]);
    let serve = Serve::start_with(&url, &serve_env);
    assert_eq!(readyz(&serve).0, "ready");

    moto.stop();
    let stopped = Instant::now();
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 50).await);
    let retry_all = retry_all_task(&svc, JobFilter::default());
    // While the retry-all produces records and after: the outbox never shrinks.
    let mut len = 0;
    let mut degraded = None;
    while !retry_all.is_finished() || stopped.elapsed() < Duration::from_secs(30) {
        let now = xlen(&url);
        assert!(
            now >= len,
            "the outbox shrank from {len} to {now}: acknowledged while down"
        );
        len = now;
        let (status, audit) = readyz(&serve);
        if status == "degraded" && degraded.is_none() {
            assert_eq!(audit["status"], "degraded", "{audit}");
            println!("degraded after {:?}: {audit}", stopped.elapsed());
            degraded = Some(audit);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = retry_all.await.expect("task");
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&300));
    assert_eq!(xlen(&url), 302, "every record still in the outbox");
    assert!(
        degraded.is_some(),
        "/readyz never said the audit was degraded"
    );
    let (status, audit) = readyz(&serve);
    assert_eq!(
        (status.as_str(), &audit["status"]),
        ("degraded", &Value::from("degraded"))
    );

    moto.cont();
    let resumed = Instant::now();
    wait_drained(&url, Duration::from_secs(60));
    println!("drained {:?} after SIGCONT", resumed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, audit) = readyz(&serve);
        if status == "ready" && audit["status"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed degraded: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&mut writer);
    let bucket = bucket_records(&moto).await;
    let listed = ids_once(&bucket.listed, "the listed part objects");
    let counts = by_decision(&bucket.listed);
    assert_eq!(counts.get("retried"), Some(&300), "{counts:?}");
    assert_eq!(bucket.listed.len(), 302, "{counts:?}");
    assert_eq!(ids_once(&bucket.live, "the manifest's parts"), listed);
    let report = read_with_pyarrow(&moto);
    assert_eq!(report["objects"]["rows"], 302, "{}", report["objects"]);
    assert_eq!(report_ids(&report), listed);
    println!("{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_the_api_read_the_bucket_and_the_outbox() {
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let moto = MotoServer::start(BUCKET);
    let env = store_env(&moto);
    let a = python.make_failed(&url, "readers_a", 20, "jobs.count_and_fail", "runs");
    let b = python.make_failed(&url, "readers_b", 10, "jobs.count_and_fail", "runs");
    let svc = Arc::new(service(&url, &[("cooldown_seconds", "0")], 5).await);
    let queue = |q: &str| JobFilter {
        queue: Some(q.into()),
        ..JobFilter::default()
    };
    // Into the bucket: a dry run of b[0], the retry-all of queue a.
    let mut writer = spawn_writer_with(&url, &env);
    let dry = RetryOptions {
        dry_run: true,
        ..RetryOptions::new()
    };
    let o = svc.retry(&b[0], &dry, "s3-test").await.unwrap();
    assert_eq!((o.outcome, o.dry_run), (Outcome::Retried, true));
    let summary = retry_all_task(&svc, queue("readers_a")).await.unwrap();
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&20));
    wait_drained(&url, Duration::from_secs(30));
    sigterm(&mut writer);
    // Only in the outbox: the retry-all of queue b (no writer runs now).
    let summary = retry_all_task(&svc, queue("readers_b")).await.unwrap();
    assert_eq!(summary.counts.get(&Outcome::Retried), Some(&10));
    assert_eq!(xlen(&url), 12);

    // pyarrow: the manifest's parts, the documented schema, the records retryguard wrote.
    let bucket = bucket_records(&moto).await;
    let written = ids_once(&bucket.live, "the manifest's parts");
    assert_eq!(
        written.len(),
        23,
        "20 retries, a dry run, an operation's start and end"
    );
    let report = read_with_pyarrow(&moto);
    assert_documented_schema(&report);
    assert_eq!(report_ids(&report), written);
    assert_eq!(report["rows"], 23);
    assert_eq!(report["by_decision"]["retried"], 21, "{report}");
    assert_eq!(report["by_decision"]["operation_started"], 1);
    assert!(report["manifest_parts"].as_u64().unwrap() >= 1);

    // The API of a serve on the bucket answers from the bucket and the outbox.
    let mut serve_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serve_env.push(("RETRYGUARD_AUDIT_WRITER", "false"));
    let serve = Serve::start_with(&url, &serve_env);
    let of_job = |job: &str| -> Vec<Value> {
        let (status, page) = serve.http("GET", &format!("/api/v1/jobs/retry-audit?job_id={job}"));
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["next_cursor"], Value::Null, "{page}");
        page["records"].as_array().unwrap().clone()
    };
    let in_bucket = of_job(&a[3]);
    assert_eq!(in_bucket.len(), 1, "{in_bucket:?}");
    assert_eq!(in_bucket[0]["decision"], "retried");
    assert_eq!(in_bucket[0]["dry_run_flag"], false);
    assert!(written.contains(in_bucket[0]["record_id"].as_str().unwrap()));
    let in_outbox = of_job(&b[5]);
    assert_eq!(in_outbox.len(), 1, "{in_outbox:?}");
    assert!(!written.contains(in_outbox[0]["record_id"].as_str().unwrap()));
    let both = of_job(&b[0]);
    let flags: Vec<(&Value, &Value)> = both
        .iter()
        .map(|r| (&r["decision"], &r["dry_run_flag"]))
        .collect();
    assert_eq!(
        flags,
        [
            (&Value::from("retried"), &Value::from(false)),
            (&Value::from("retried"), &Value::from(true))
        ],
        "newest first: the outbox's retry, then the bucket's dry run: {both:?}"
    );
    // Every record once, bucket and outbox together.
    let (status, page) = serve.http("GET", "/api/v1/jobs/retry-audit?limit=1000");
    assert_eq!(status, 200, "{page}");
    let all: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 35, "{page}");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 35);
    println!("{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_bucket_each_find_the_others_records() {
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let moto = MotoServer::start(BUCKET);
    let jobs = python.make_failed(&url, "hosts", 3, "jobs.count_and_fail", "runs");
    // Two instances, each with an audit directory of its own (`Serve` gives each one), one
    // bucket; both take part in the writer lease.
    let mut env = store_env(&moto);
    env.push(("RETRYGUARD_AUDIT_LEASE_TTL_SECONDS", "6".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut serves = [Serve::start_with(&url, &env), Serve::start_with(&url, &env)];
    let retry = |serve: &Serve, job: &str| {
        let (status, body) = serve.http("POST", &format!("/api/v1/jobs/failed/{job}/retry"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "retried", "{body}");
    };
    let records_of = |serve: &Serve, job: &str| -> Vec<String> {
        let (status, page) = serve.http("GET", &format!("/api/v1/jobs/retry-audit?job_id={job}"));
        assert_eq!(status, 200, "{page}");
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["decision"], "retried", "{r}");
                r["record_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    retry(&serves[0], &jobs[0]);
    retry(&serves[1], &jobs[1]);
    wait_drained(&url, Duration::from_secs(30));
    let in_bucket = ids_once(&bucket_records(&moto).await.live, "the manifest's parts");
    for job in &jobs[..2] {
        let seen: Vec<Vec<String>> = serves.iter().map(|s| records_of(s, job)).collect();
        assert_eq!(seen[0].len(), 1, "{job}: {seen:?}");
        assert_eq!(
            seen[0], seen[1],
            "{job}: both instances see the same record"
        );
        assert!(
            in_bucket.contains(&seen[0][0]),
            "{job}: read from the bucket"
        );
    }

    // The lease holder dies: the other instance takes over the writing, and its records
    // join the same trail.
    let mut con = connect(&url);
    let holder: String = query(&mut con, &["GET", keyspace::AUDIT_LEASE]);
    let dead = serves
        .iter()
        .position(|s| holder.contains(&format!("-{}-", s.pid())))
        .unwrap_or_else(|| panic!("{holder} is one of the two instances"));
    serves[dead].kill();
    let alive = &serves[1 - dead];
    retry(alive, &jobs[2]);
    wait_drained(&url, Duration::from_secs(30));
    let in_bucket = ids_once(&bucket_records(&moto).await.live, "the manifest's parts");
    assert_eq!(in_bucket.len(), 3, "three retries, one record each");
    for job in &jobs {
        let seen = records_of(alive, job);
        assert_eq!(seen.len(), 1, "{job}: {seen:?}");
        assert!(in_bucket.contains(&seen[0]), "{job}: read from the bucket");
    }
    println!("{:?}", started.elapsed());
}
