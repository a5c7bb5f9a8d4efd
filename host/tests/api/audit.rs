//! `GET /api/v1/jobs/retry-audit` over parquet files and the outbox stream, and the
//! `retries` metrics of `GET /api/v1/jobs/stats`.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use retryguard::api;
use retryguard::audit::schema::{date_of_ms, ms_of_date};
use retryguard::audit::{AuditRecord, AuditStore, StreamId};
use retryguard::keyspace;

use crate::common::{RedisServer, config, connect, now_ms, send, state_with};

/// The app with audit queries over `dir`.
async fn audit_app(redis: &RedisServer, dir: &AuditStore) -> Router {
    let state = state_with(config(redis)).await;
    let root = dir.root().expect("a local audit directory");
    api::router(state.with_audit_dir(Arc::new(AuditStore::local(root).unwrap())))
}

fn pairs(job: &str, decision: &str) -> Vec<(String, String)> {
    [
        ("job_id", job),
        ("decision", decision),
        ("user_or_system", "ops"),
        ("job_type", "app.tasks.charge"),
        ("failure_type", "network_error"),
        ("policy_digest", "sha256:aa"),
        ("dry_run_flag", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn record(ms: u64, job: &str, decision: &str) -> AuditRecord {
    AuditRecord::from_entry(StreamId { ms, seq: 0 }, &pairs(job, decision))
}

/// Appends entries to the outbox with the given ids (`<ms>-0`), as the requeue script does.
fn outbox(redis: &RedisServer, entries: &[(u64, &str, &str)]) {
    let mut con = connect(redis);
    for (ms, job, decision) in entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keyspace::AUDIT_OUTBOX).arg(format!("{ms}-0"));
        for (k, v) in pairs(job, decision) {
            cmd.arg(k).arg(v);
        }
        cmd.query::<String>(&mut con).unwrap();
    }
}

fn ids(reply: &serde_json::Value) -> Vec<String> {
    reply["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn without_an_audit_dir_the_endpoint_is_a_json_503() {
    let redis = RedisServer::start();
    let app = crate::common::app(&redis).await;
    let reply = send(&app, "GET", "/api/v1/jobs/retry-audit").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert_eq!(reply.code(), "audit_not_configured");
    // Bad input is still a 400 first.
    let reply = send(&app, "GET", "/api/v1/jobs/retry-audit?limit=0").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // And the stats answer without the audit metrics.
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["retries"], serde_json::Value::Null);
}

#[tokio::test]
async fn bad_parameters_are_json_400s() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = AuditStore::local(tmp.path()).unwrap();
    let app = audit_app(&redis, &dir).await;
    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("limit=ten", "invalid_query"),
        ("since=yesterday", "invalid_query"),
        ("until=2026-11-29T12:00:00", "invalid_query"),
        ("since=2000&until=1000", "invalid_query"),
        ("decision=Retried", "invalid_query"),
        ("failure_type=a%20b", "invalid_query"),
        ("job_id=a%0Ab", "invalid_query"),
        ("color=blue", "invalid_query"),
        ("cursor=abc", "invalid_cursor"),
        ("cursor=1-2-3", "invalid_cursor"),
    ] {
        let reply = send(&app, "GET", &format!("/api/v1/jobs/retry-audit?{query}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.json
        );
        assert_eq!(reply.code(), code, "{query}: {}", reply.json);
    }
    let reply = send(&app, "GET", "/api/v1/jobs/retry-audit").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(
        reply.json,
        serde_json::json!({"records": [], "next_cursor": null})
    );
}

#[tokio::test]
async fn records_of_files_and_outbox_page_newest_first_once_each() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = AuditStore::local(tmp.path()).unwrap();
    // Two days of files around midnight, then the outbox: 23:59:58 … 00:00:03.
    let midnight = ms_of_date("2026-11-30").unwrap();
    let day1: Vec<AuditRecord> = (0..2)
        .map(|i| record(midnight - 2000 + i * 1000, &format!("j{i}"), "retried"))
        .collect();
    let day2: Vec<AuditRecord> = (0..3)
        .map(|i| record(midnight + i * 1000, &format!("j{i}"), "blocked_cooldown"))
        .collect();
    dir.write_part("2026-11-29", &day1, &|| true).unwrap();
    dir.write_part("2026-11-30", &day2, &|| true).unwrap();
    // The outbox still holds the last file record (written, not yet deleted) and two more.
    outbox(
        &redis,
        &[
            (midnight + 2000, "j2", "blocked_cooldown"),
            (midnight + 3000, "j0", "retried"),
            (midnight + 4000, "j1", "retried"),
        ],
    );
    let app = audit_app(&redis, &dir).await;

    let mut got = Vec::new();
    let mut uri = "/api/v1/jobs/retry-audit?limit=2".to_string();
    loop {
        let reply = send(&app, "GET", &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert!(ids(&reply.json).len() <= 2);
        got.extend(ids(&reply.json));
        match reply.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/jobs/retry-audit?limit=2&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = [4000, 3000, 2000, 1000, 0, -1000, -2000]
        .iter()
        .map(|d: &i64| format!("{}-0", midnight.checked_add_signed(*d).unwrap()))
        .collect();
    assert_eq!(got, want);

    // Whole records, with an RFC 3339 timestamp.
    let reply = send(&app, "GET", "/api/v1/jobs/retry-audit?limit=1").await;
    let r = &reply.json["records"][0];
    assert_eq!(r["timestamp"], "2026-11-30T00:00:04.000000Z");
    assert_eq!(r["job_id"], "j1");
    assert_eq!(r["decision"], "retried");
    assert_eq!(r["user_or_system"], "ops");
    assert_eq!(r["dry_run_flag"], false);
    assert_eq!(r["operation_id"], serde_json::Value::Null);

    // Filters: job id across both days and the outbox; decision; actor; time ranges in
    // epoch ms and RFC 3339 (since inclusive, until exclusive).
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("job_id=j1".into(), vec![4000, 1000, -1000]),
        ("decision=retried".into(), vec![4000, 3000, -1000, -2000]),
        ("decision=retried&job_id=j0".into(), vec![3000, -2000]),
        ("actor=ops&limit=1".into(), vec![4000]),
        ("actor=nobody".into(), vec![]),
        (
            format!("since={}&until={}", midnight - 1000, midnight + 2000),
            vec![1000, 0, -1000],
        ),
        (
            "since=2026-11-29T23:59:59Z&until=2026-11-30T00:00:01%2B00:00".into(),
            vec![0, -1000],
        ),
        ("since=2026-12-01T00:00:00Z".into(), vec![]),
    ];
    for (query, want) in cases {
        let reply = send(&app, "GET", &format!("/api/v1/jobs/retry-audit?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.json);
        let want: Vec<String> = want
            .iter()
            .map(|d| format!("{}-0", midnight.checked_add_signed(*d).unwrap()))
            .collect();
        assert_eq!(ids(&reply.json), want, "{query}");
    }
}

#[tokio::test]
async fn stats_carry_todays_retry_metrics() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = AuditStore::local(tmp.path()).unwrap();
    let today = date_of_ms(now_ms());
    let start = ms_of_date(&today).unwrap();
    // In a file: two retries and a cooldown; in the outbox: a non-retryable block and the
    // outcomes of both retries.
    let files = vec![
        record(start + 1, "a", "retried"),
        record(start + 2, "b", "retried"),
        record(start + 3, "c", "blocked_cooldown"),
    ];
    dir.write_part(&today, &files, &|| true).unwrap();
    // Yesterday's records are not counted.
    outbox(
        &redis,
        &[
            (start - 5, "z", "retried"),
            (start + 4, "d", "blocked_non_retryable"),
            (start + 5, "a", "succeeded"),
            (start + 6, "b", "failed_again"),
        ],
    );
    let app = audit_app(&redis, &dir).await;
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let r = &reply.json["retries"];
    assert_eq!(r["date"], today.as_str());
    assert_eq!(r["retries_today"], 2, "{r}");
    assert_eq!(r["blocked_cooldown"], 1);
    assert_eq!(r["blocked_max_attempts"], 0);
    assert_eq!(r["non_retryable_rate"], 0.25);
    assert_eq!(r["retry_success_rate"], 0.5);
    assert_eq!(r["decisions"]["succeeded"], 1);
    let by_type = &r["by_job_type"][0];
    assert_eq!(by_type["value"], "app.tasks.charge");
    assert_eq!(by_type["retried"], 2);
    assert_eq!(by_type["success_rate"], 0.5);
    assert_eq!(r["by_policy_digest"][0]["value"], "sha256:aa");
}

#[tokio::test]
async fn a_long_outbox_is_read_in_chunks() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = AuditStore::local(tmp.path()).unwrap();
    // 2,500 entries of today (no writer), job `x` every 100th.
    let start = ms_of_date(&date_of_ms(now_ms())).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..2500u64 {
        let job = if i % 100 == 0 { "x" } else { "y" };
        pipe.cmd("XADD")
            .arg(keyspace::AUDIT_OUTBOX)
            .arg(format!("{}-{i}", start + 1))
            .arg("job_id")
            .arg(job)
            .arg("decision")
            .arg("retried")
            .arg("user_or_system")
            .arg("ops")
            .ignore();
    }
    pipe.query::<()>(&mut connect(&redis)).unwrap();
    let app = audit_app(&redis, &dir).await;
    let mut got = Vec::new();
    let mut uri = "/api/v1/jobs/retry-audit?job_id=x&limit=10".to_string();
    loop {
        let reply = send(&app, "GET", &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        got.extend(ids(&reply.json));
        match reply.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/jobs/retry-audit?job_id=x&limit=10&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..25)
        .rev()
        .map(|k| format!("{}-{}", start + 1, k * 100))
        .collect();
    assert_eq!(got, want);
    let reply = send(&app, "GET", "/api/v1/jobs/stats").await;
    assert_eq!(
        reply.json["retries"]["retries_today"], 2500,
        "{}",
        reply.json
    );
}
