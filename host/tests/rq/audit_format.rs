//! The outbox entry's two formats (docs/audit.md, "The outbox entry"): entries of the earlier
//! format (one stream field per column) left in the outbox by an earlier version, followed by
//! entries of one field `r` from Rust and from a script's `cjson`, are queried and written
//! as the same records.

use std::sync::Arc;

use retryguard::audit::encoding::RECORD_FIELD;
use retryguard::audit::files::read_all;
use retryguard::audit::query::{AuditQuery, query as audit_query};
use retryguard::audit::{
    AuditRecord, AuditStore, AuditWriter, FailureColumns, NewRecord, StreamId, Verdict,
    WriterConfig, WriterStatus,
};
use retryguard::keyspace;
use retryguard::queue::rq::{RedisTimeouts, RqBackend};

use crate::support::{RedisServer, connect, query};

/// Text a JSON encoder must escape, or may (cjson writes `/` as `\/`).
const AWKWARD: &str = "quote \" backslash \\ slash / tab \t newline \n é ✓ \u{1} \u{7f}";

fn record(i: u32) -> NewRecord {
    NewRecord {
        actor: "ops/alice".into(),
        verdict: Some(Verdict {
            decision: ["retried", "blocked_cooldown", "deleted"][i as usize % 3].into(),
            success: Some(i.is_multiple_of(2)),
            error_message: Some(format!("{AWKWARD} {i}")),
            attempt_number: Some(i),
        }),
        job_id: Some(format!("job/{}", i % 2)),
        job_type: Some("app.tasks.charge".into()),
        queue: Some("default".into()),
        retry_reason: (i == 1).then(|| "forced: \"why\"".into()),
        failure_type: Some("network_error".into()),
        retryable: Some(true),
        operation_id: Some(format!("op-{i}")),
        policy_digest: Some("ab".repeat(32)),
        shadow: (i == 2).then(|| ("cd".repeat(32), r#"{"action":"hold"}"#.into())),
        dry_run: i == 3,
        forced: i == 1,
        params: Some(r#"{"cooldown_seconds":"60"}"#.into()),
        failure: Some(FailureColumns {
            seed: u64::MAX - u64::from(i),
            job_status: "failed".into(),
            exc_type: "ConnectionError".into(),
            exc_message: AWKWARD.into(),
            traceback_sha256: "ef".repeat(32),
            failed_at_ms: 1_000 + u64::from(i),
            first_failed_at_ms: 900,
            prior_attempts: i,
            last_attempt_at_ms: (i > 0).then_some(950),
            queue_retries_left: (i == 4).then_some(2),
            attributes: Some(r#"[["tenant","acme"]]"#.into()),
        }),
        filter: (i == 4).then(|| r#"{"queue":"default"}"#.into()),
        counts: (i == 4).then(|| r#"{"retried":3}"#.into()),
        cancelled: None,
        time_to_outcome_ms: (i == 2).then_some(1_234),
        now_ms: Some(1_795_953_601_234 + u64::from(i)),
        job_blob_sha256: (i == 2).then(|| "12".repeat(32)),
    }
}

/// A record as the scripts write one: a Lua table of strings through `cjson.encode`.
const SCRIPT_RECORD: &str = r#"
redis.call('XADD', KEYS[1], '*', 'r', cjson.encode({decision = ARGV[1], job_id = ARGV[2],
  error_message = ARGV[3], user_or_system = 'lua', attempt_number = tostring(2),
  dry_run_flag = 'false', forced = 'false', filter = cjson.encode({pattern = 'a/*'})}))
return 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_of_both_formats_is_queried_and_written_as_the_same_records() {
    let server = RedisServer::start();
    let url = server.url();
    let mut con = connect(&url);
    let records: Vec<NewRecord> = (0..5).map(record).collect();
    // What an earlier version left: one stream field per column. Then the current format.
    for r in &records {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keyspace::AUDIT_OUTBOX).arg("*");
        for (k, v) in r.fields() {
            cmd.arg(k).arg(v);
        }
        cmd.query::<String>(&mut con).unwrap();
    }
    for r in &records {
        redis::cmd("XADD")
            .arg(keyspace::AUDIT_OUTBOX)
            .arg("*")
            .arg(RECORD_FIELD)
            .arg(r.encoded())
            .query::<String>(&mut con)
            .unwrap();
    }
    // Two script records, the second with a byte that is not UTF-8 (a value a script copies
    // from a job's data): it becomes U+FFFD, and the rest of the record is kept.
    for (job, message) in [(&b"job/0"[..], AWKWARD.as_bytes()), (b"dep\xff", b"ok")] {
        redis::cmd("EVAL")
            .arg(SCRIPT_RECORD)
            .arg(1)
            .arg(keyspace::AUDIT_OUTBOX)
            .arg("retried")
            .arg(job)
            .arg(message)
            .query::<i64>(&mut con)
            .unwrap();
    }
    let ids: Vec<StreamId> = query::<Vec<(String, redis::Value)>>(
        &mut con,
        &["XRANGE", keyspace::AUDIT_OUTBOX, "-", "+"],
    )
    .iter()
    .map(|(id, _)| StreamId::parse(id).unwrap())
    .collect();
    assert_eq!(ids.len(), 12);
    let old: Vec<Vec<(String, String)>> = records
        .iter()
        .map(|r| {
            r.fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .collect();
    let mut want: Vec<AuditRecord> = Vec::new();
    for (i, id) in ids[..10].iter().enumerate() {
        want.push(AuditRecord::from_entry(*id, &old[i % 5]));
    }

    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(AuditStore::local(tmp.path()).unwrap());
    // The query reads both formats from the outbox.
    let q = AuditQuery {
        job_id: Some("job/0".into()),
        ..AuditQuery::default()
    };
    let before = audit_query(&mut backend.connection(), &dir, &q)
        .await
        .unwrap();
    let ids_of = |records: &[AuditRecord]| -> Vec<String> {
        records.iter().map(|r| r.record_id.clone()).collect()
    };
    assert_eq!(
        ids_of(&before.records),
        [10, 9, 7, 5, 4, 2, 0].map(|i| ids[i].to_string()),
    );
    for r in &before.records[1..] {
        let i = ids
            .iter()
            .position(|id| id.to_string() == r.record_id)
            .unwrap();
        assert_eq!(*r, want[i]);
    }

    // The writer, in batches that mix the formats.
    let status = Arc::new(WriterStatus::default());
    let config = WriterConfig {
        batch_size: 4,
        ..WriterConfig::default()
    };
    let mut writer = AuditWriter::new(backend.connection(), dir.clone(), config, status);
    while writer.flush_now().await.unwrap() > 0 {}
    let left: u64 = query(&mut con, &["XLEN", keyspace::AUDIT_OUTBOX]);
    assert_eq!(left, 0);
    let mut written = Vec::new();
    for part in dir.parts().unwrap() {
        written.extend(read_all(std::fs::File::open(&part.path).unwrap()).unwrap());
    }
    written.sort_by_key(|r| StreamId::parse(&r.record_id));
    assert_eq!(written.len(), 12);
    assert_eq!(written[..10], want[..]);
    for i in 0..5 {
        // The same record, whatever its format.
        assert_eq!(
            AuditRecord {
                record_id: written[i + 5].record_id.clone(),
                timestamp_us: written[i + 5].timestamp_us,
                ..written[i].clone()
            },
            written[i + 5]
        );
    }
    let script = &written[10];
    assert_eq!(script.decision, "retried");
    assert_eq!(script.job_id.as_deref(), Some("job/0"));
    assert_eq!(script.user_or_system, "lua");
    assert_eq!(script.error_message.as_deref(), Some(AWKWARD));
    assert_eq!(script.attempt_number, Some(2));
    assert_eq!(script.filter.as_deref(), Some(r#"{"pattern":"a\/*"}"#));
    assert!(!script.dry_run_flag && !script.forced);
    assert_eq!(written[11].job_id.as_deref(), Some("dep\u{fffd}"));
    assert_eq!(written[11].error_message.as_deref(), Some("ok"));
    // The query answers the same from the files.
    let after = audit_query(&mut backend.connection(), &dir, &q)
        .await
        .unwrap();
    assert_eq!(after.records, before.records);
}

/// The lease script of the writers before the one-field entry, as they run it.
const EARLIER_RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_writer_loses_its_lease_before_any_one_field_entry_exists() {
    let server = RedisServer::start();
    let url = server.url();
    let mut con = connect(&url);
    // An earlier writer holds its lease, and another waits for it.
    let taken: Option<String> = query(
        &mut con,
        &[
            "SET",
            keyspace::AUDIT_LEASE_V1,
            "earlier-1",
            "NX",
            "PX",
            "15000",
        ],
    );
    assert_eq!(taken.as_deref(), Some("OK"));
    let earlier_renews = |con: &mut redis::Connection| -> i64 {
        redis::Script::new(EARLIER_RENEW_LUA)
            .key(keyspace::AUDIT_LEASE_V1)
            .arg("earlier-1")
            .arg(15_000)
            .invoke(con)
            .unwrap()
    };
    assert_eq!(earlier_renews(&mut con), 1);

    // This version connects: before it can add a record, the earlier lease is fenced.
    let backend = RqBackend::connect(&url, RedisTimeouts::default())
        .await
        .unwrap();
    let fence: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE_V1]);
    assert_eq!(fence.as_deref(), Some(keyspace::AUDIT_FENCE));
    let ttl: i64 = query(&mut con, &["PTTL", keyspace::AUDIT_LEASE_V1]);
    assert_eq!(ttl, -1, "the fence never expires");
    // The holder's renewal (made before it writes each part) fails; the waiting writer's
    // take fails, now and after any wait.
    assert_eq!(earlier_renews(&mut con), 0);
    let taken: Option<String> = query(
        &mut con,
        &[
            "SET",
            keyspace::AUDIT_LEASE_V1,
            "earlier-2",
            "NX",
            "PX",
            "15000",
        ],
    );
    assert_eq!(taken, None);

    // This version's writer takes its own lease and writes an entry of the new format.
    redis::cmd("XADD")
        .arg(keyspace::AUDIT_OUTBOX)
        .arg("*")
        .arg(RECORD_FIELD)
        .arg(record(0).encoded())
        .query::<String>(&mut con)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(AuditStore::local(tmp.path()).unwrap());
    let status = Arc::new(WriterStatus::default());
    let mut writer = AuditWriter::new(
        backend.connection(),
        dir.clone(),
        WriterConfig::default(),
        status,
    );
    // The fence deleted (by hand, or an eviction): the writer sets it again as it takes
    // its lease, and as it renews it before writing.
    let _: i64 = query(&mut con, &["DEL", keyspace::AUDIT_LEASE_V1]);
    assert_eq!(writer.flush_now().await.unwrap(), 1);
    let holder: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE]);
    assert!(
        holder.is_some(),
        "the writer holds {}",
        keyspace::AUDIT_LEASE
    );
    let fence: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE_V1]);
    assert_eq!(fence.as_deref(), Some(keyspace::AUDIT_FENCE));
    let _: i64 = query(&mut con, &["DEL", keyspace::AUDIT_LEASE_V1]);
    redis::cmd("XADD")
        .arg(keyspace::AUDIT_OUTBOX)
        .arg("*")
        .arg(RECORD_FIELD)
        .arg(record(1).encoded())
        .query::<String>(&mut con)
        .unwrap();
    assert_eq!(writer.flush_now().await.unwrap(), 1);
    let fence: Option<String> = query(&mut con, &["GET", keyspace::AUDIT_LEASE_V1]);
    assert_eq!(fence.as_deref(), Some(keyspace::AUDIT_FENCE));
    let mut written = Vec::new();
    for part in dir.parts().unwrap() {
        written.extend(read_all(std::fs::File::open(&part.path).unwrap()).unwrap());
    }
    let jobs: Vec<_> = written.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(jobs, [Some("job/0".into()), Some("job/1".into())]);
}
