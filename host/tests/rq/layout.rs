//! What RQ 2.12 really stores for a failed job (docs/rq-layout.md), one failure family at a time,
//! checked with the crate's own decoders.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{JobHash, MakeFailed, Python, RedisServer, ResultEntry, connect, query};

/// RQ's default `failure_ttl`: one year.
const DEFAULT_FAILURE_TTL_S: u64 = 31_536_000;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Asserts the failed-job layout of `ids` on `queue` and returns the decoded exception texts.
fn assert_failed_layout(
    url: &str,
    queue: &str,
    ids: &[String],
    func: &str,
    status: &str,
) -> Vec<String> {
    let mut con = connect(url);
    let registry = format!("rq:failed:{queue}");
    let members: Vec<String> = query(&mut con, &["ZRANGE", &registry, "0", "-1"]);
    let mut sorted_ids = ids.to_vec();
    sorted_ids.sort();
    let mut sorted_members = members.clone();
    sorted_members.sort();
    assert_eq!(
        sorted_members, sorted_ids,
        "{registry} holds exactly the failed jobs"
    );
    let queued: i64 = query(&mut con, &["LLEN", &format!("rq:queue:{queue}")]);
    assert_eq!(queued, 0, "the worker drained rq:queue:{queue}");
    let queues: Vec<String> = query(&mut con, &["SMEMBERS", "rq:queues"]);
    assert!(
        queues.contains(&format!("rq:queue:{queue}")),
        "rq:queues holds full key names: {queues:?}"
    );

    let mut texts = Vec::new();
    for id in ids {
        let job = JobHash::read(&mut con, id);
        assert!(job.exists(), "rq:job:{id} exists");
        assert_eq!(job.text("status").as_deref(), Some(status), "{id}");
        assert_eq!(job.text("origin").as_deref(), Some(queue), "{id}");
        assert_eq!(
            job.job_type().as_deref(),
            Some(func),
            "{id}: data decodes to the function"
        );
        assert!(
            job.text("description").is_some_and(|d| d.starts_with(func)),
            "{id}"
        );
        assert!(
            job.bytes("exc_info").is_none(),
            "{id}: RQ 2.x writes no exc_info"
        );
        for field in ["created_at", "enqueued_at", "started_at"] {
            assert!(
                job.time_ms(field).is_some(),
                "{id}: {field} is an RQ timestamp"
            );
        }

        let entries = ResultEntry::all(&mut con, id);
        assert_eq!(entries.len(), 1, "{id}: one result entry per failed run");
        let newest = &entries[0];
        assert_eq!(
            newest.kind(),
            Some(2),
            "{id}: newest result entry is type=2 (failed)"
        );
        assert!(newest.text("worker_name").is_some_and(|w| !w.is_empty()));
        assert!(newest.text("execution_id").is_some_and(|w| !w.is_empty()));
        let text = newest
            .exc_text()
            .expect("a failed entry carries exc_string");

        let score: f64 = query(&mut con, &["ZSCORE", &registry, id]);
        if status == "failed" {
            let ended = job.time_ms("ended_at").expect("ended_at is set");
            assert!(job.time_ms("started_at").unwrap() <= ended);
            assert!(
                ended.abs_diff(newest.at_ms()) < 5_000,
                "{id}: the entry is written at ended_at"
            );
            let expiry_ms = (ended / 1000 + DEFAULT_FAILURE_TTL_S) * 1000;
            assert!(
                (score * 1000.0) as u64 >= expiry_ms.saturating_sub(5_000)
                    && (score * 1000.0) as u64 <= expiry_ms + 5_000,
                "{id}: score {score} is ended_at + one year"
            );
        }
        let job_ttl: i64 = query(&mut con, &["TTL", &format!("rq:job:{id}")]);
        assert!(
            job_ttl > (DEFAULT_FAILURE_TTL_S as i64) - 60,
            "{id}: the job hash expires with failure_ttl (ttl {job_ttl})"
        );
        let results_ttl: i64 = query(&mut con, &["TTL", &format!("rq:results:{id}")]);
        assert_eq!(
            results_ttl, -1,
            "{id}: with the default failure_ttl the results stream never expires"
        );
        texts.push(text);
    }
    texts
}

/// Makes 5 failed jobs of `jobs.<name>` with an in-process SimpleWorker and checks the layout
/// and that the stored traceback is this job's and ends with `last_line`.
fn family(name: &str, last_line: &str) {
    let server = RedisServer::start();
    let url = server.url();
    let func = format!("jobs.{name}");
    let ids = MakeFailed::new(name, 5, &func).run(Python::venv(), &url);
    for text in assert_failed_layout(&url, name, &ids, &func, "failed") {
        assert!(
            text.starts_with("Traceback (most recent call last):\n"),
            "{text}"
        );
        assert!(text.contains("/host/tests/rq/jobs.py\", line "), "{text}");
        assert!(
            text.contains(&format!(", in {name}\n")),
            "the job's own frame: {text}"
        );
        assert!(
            text.ends_with(&format!("\n{last_line}\n")),
            "{name}: expected the text to end with {last_line:?}, got:\n{text}"
        );
    }
}

macro_rules! families {
    ($($test:ident: $name:literal => $line:literal,)*) => {$(
        #[test]
        fn $test() {
            family($name, $line);
        }
    )*};
}

families! {
    network_error_leaves_the_real_layout: "network_error" => "ConnectionRefusedError: [Errno 111] Connection refused",
    timeout_leaves_the_real_layout: "timeout" => "TimeoutError: timed out",
    rate_limit_leaves_the_real_layout: "rate_limit" => "urllib.error.HTTPError: HTTP Error 429: Too Many Requests",
    temporary_error_leaves_the_real_layout: "temporary_error" => "urllib.error.HTTPError: HTTP Error 503: Service Unavailable",
    database_lock_leaves_the_real_layout: "database_lock" => "sqlite3.OperationalError: database is locked",
    validation_error_leaves_the_real_layout: "validation_error" => "ValueError: invalid literal for int() with base 10: '12.50 EUR'",
    logic_error_leaves_the_real_layout: "logic_error" => "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'",
    data_not_found_leaves_the_real_layout: "data_not_found" => "KeyError: 'order_id'",
    permission_error_leaves_the_real_layout: "permission_error" => "PermissionError: [Errno 13] Permission denied: '/srv/exports/ledger.csv'",
    configuration_error_leaves_the_real_layout: "configuration_error" => "ModuleNotFoundError: No module named 'app'",
    custom_unknown_leaves_the_real_layout: "custom_unknown" => "billing.errors.GatewayQuirk: gateway returned result code XJ-7 for order 7",
}

#[test]
fn a_killed_work_horse_leaves_no_traceback() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = MakeFailed::new("killed", 5, "jobs.killed_by_signal_9")
        .fork()
        .run(Python::venv(), &url);
    for text in assert_failed_layout(&url, "killed", &ids, "jobs.killed_by_signal_9", "failed") {
        assert_eq!(
            text,
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); "
        );
    }
}

#[test]
fn a_stopped_job_is_in_the_failed_registry_with_status_stopped_and_no_end_time() {
    let server = RedisServer::start();
    let url = server.url();
    let before = now_ms();
    let ids = MakeFailed::new("stopped", 2, "jobs.stopped_by_user")
        .fork()
        .expect("stopped")
        .run(Python::venv(), &url);
    for text in assert_failed_layout(&url, "stopped", &ids, "jobs.stopped_by_user", "stopped") {
        assert_eq!(text, "Job stopped by user, work-horse terminated.");
    }
    let mut con = connect(&url);
    for id in &ids {
        let job = JobHash::read(&mut con, id);
        // RQ 2.12 clears ended_at (and worker_name, last_heartbeat) for a stopped job and
        // writes a type=2 entry, not type=3 (STOPPED, unused), with no execution_ended_at: the
        // entry's stream id is the only record of when it stopped.
        assert_eq!(job.text("ended_at").as_deref(), Some(""));
        assert_eq!(job.time_ms("ended_at"), None);
        let entry = ResultEntry::newest(&mut con, id).unwrap();
        assert!(entry.text("execution_ended_at").is_none());
        assert!(entry.text("execution_started_at").is_some());
        assert!(entry.at_ms() >= before.saturating_sub(1_000) && entry.at_ms() <= now_ms() + 1_000);
    }
}

#[test]
fn failure_ttl_sets_the_registry_score_and_both_key_ttls() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = MakeFailed::new("ttl", 2, "jobs.validation_error")
        .failure_ttl(600)
        .run(Python::venv(), &url);
    let mut con = connect(&url);
    for id in &ids {
        let ended_s = JobHash::read(&mut con, id).time_ms("ended_at").unwrap() / 1000;
        let score: f64 = query(&mut con, &["ZSCORE", "rq:failed:ttl", id]);
        assert!(
            (score as u64).abs_diff(ended_s + 600) <= 5,
            "score {score} = ended_at + 600"
        );
        for key in [format!("rq:job:{id}"), format!("rq:results:{id}")] {
            let ttl: i64 = query(&mut con, &["TTL", &key]);
            assert!(
                (590..=600).contains(&ttl),
                "{key} expires with failure_ttl: {ttl}"
            );
        }
    }
}

#[test]
fn rqs_own_retry_keeps_only_the_final_failure_in_the_results_stream() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = MakeFailed::new("rq-retry", 3, "jobs.count_and_fail")
        .arg("runs")
        .rq_retry(2)
        .run(Python::venv(), &url);
    let texts = assert_failed_layout(&url, "rq-retry", &ids, "jobs.count_and_fail", "failed");
    assert!(
        texts
            .iter()
            .all(|t| t.ends_with("ConnectionRefusedError: [Errno 111] Connection refused\n"))
    );
    let mut con = connect(&url);
    let runs: i64 = query(&mut con, &["GET", "runs"]);
    assert_eq!(runs, 9, "3 jobs x (1 run + 2 RQ retries)");
    for id in &ids {
        let job = JobHash::read(&mut con, id);
        assert_eq!(job.text("retries_left").as_deref(), Some("0"));
        assert_eq!(
            job.text("number_of_retries"),
            None,
            "only job-returned Retry counts runs"
        );
    }
}

#[test]
fn a_job_that_returns_retry_ends_failed_with_no_exception_text() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = MakeFailed::new("returned-retry", 2, "jobs.return_retry")
        .arg("runs")
        .run(Python::venv(), &url);
    let mut con = connect(&url);
    let members: Vec<String> = query(&mut con, &["ZRANGE", "rq:failed:returned-retry", "0", "-1"]);
    assert_eq!(members.len(), 2);
    for id in &ids {
        let job = JobHash::read(&mut con, id);
        assert_eq!(job.text("status").as_deref(), Some("failed"));
        assert_eq!(job.text("number_of_retries").as_deref(), Some("1"));
        let entries = ResultEntry::all(&mut con, id);
        let kinds: Vec<Option<u8>> = entries.iter().map(ResultEntry::kind).collect();
        // Newest first: 5 = max retries exceeded, then 4 = retried. No type=2 entry at all.
        assert_eq!(kinds, [Some(5), Some(4)], "{id}");
        assert!(
            entries.iter().all(|e| e.exc_text().is_none()),
            "{id}: no exc_string"
        );
        assert!(entries[0].text("return_value").is_some());
    }
}
