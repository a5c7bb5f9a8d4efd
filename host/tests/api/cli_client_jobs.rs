//! `retryguard jobs …` as a newcomer meets it: exit codes, time filters, warnings for
//! unknown filter values, dry-run wording, whole columns in a pipe.

use crate::cli_client::Serve;
use crate::common::{
    NETWORK_TB, RawJob, RedisServer, VALIDATION_TB, both, connect, now_ms, text, write_failed,
};

const LONG_JOB_TYPE: &str = "app.billing.reconciliation.tasks.reconcile_every_ledger_entry_now";

/// Three failed jobs on queue `default`: a network failure 2 h ago (due), one just now
/// (cooling down), and a validation failure 2 h ago (held: not retryable).
fn jobs(redis: &RedisServer) {
    let now = now_ms();
    write_failed(
        &mut connect(redis),
        &[
            RawJob {
                func: LONG_JOB_TYPE,
                ..RawJob::new("due-1", NETWORK_TB, now - 2 * 3_600_000)
            },
            RawJob::new("cooling-1", NETWORK_TB, now - 1_000),
            RawJob::new("held-1", VALIDATION_TB, now - 2 * 3_600_000),
        ],
    );
}

fn ids(serve: &Serve, args: &[&str]) -> Vec<String> {
    let mut all = vec!["failed"];
    all.extend_from_slice(args);
    let list = serve.json(&all);
    let mut ids: Vec<String> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn jobs_filters_by_failure_time_and_warns_of_unknown_values() {
    let redis = RedisServer::start();
    jobs(&redis);
    let serve = Serve::start(&redis);

    assert_eq!(ids(&serve, &["--failed-after", "1h"]), ["cooling-1"]);
    assert_eq!(ids(&serve, &["--failed-before", "1h"]), ["due-1", "held-1"]);
    let an_hour_ago = retryguard::clock::format_rfc3339(now_ms() - 3_600_000);
    assert_eq!(
        ids(&serve, &["--failed-after", &an_hour_ago]),
        ["cooling-1"]
    );
    assert!(ids(&serve, &["--failed-before", "2000-01-01"]).is_empty());
    let out = serve.jobs(&["failed", "--failed-after", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains("RFC 3339"), "{}", both(&out));

    // An unknown queue or failure type lists nothing, and says so, naming the known ones.
    let out = serve.jobs(&["failed", "--queue", "defualt"]);
    assert!(out.status.success(), "{}", both(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: no queue is named \"defualt\"")
            && stderr.contains("the known queues: default"),
        "{stderr}"
    );
    let out = serve.jobs(&["failed", "--failure-type", "network_eror", "--json"]);
    assert!(out.status.success(), "{}", both(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("\"network_eror\"")
            && stderr.contains("network_error")
            && stderr.contains("validation_error"),
        "{stderr}"
    );
    let out = serve.jobs(&["groups", "--queue", "nope"]);
    assert!(
        text(&out.stderr).contains("no queue is named \"nope\""),
        "{}",
        both(&out)
    );
    let out = serve.jobs(&["retry-all", "--dry-run", "--queue", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing matched: {}",
        both(&out)
    );
    assert!(
        text(&out.stderr).contains("no queue is named \"nope\""),
        "{}",
        both(&out)
    );
    // Known values, or a filter that matches jobs, warn of nothing.
    for args in [
        &["failed", "--queue", "default"][..],
        &["failed", "--failure-type", "validation_error"],
        &[
            "failed",
            "--queue",
            "default",
            "--failure-type",
            "validation_error",
        ],
    ] {
        let out = serve.jobs(args);
        assert!(out.status.success(), "{}", both(&out));
        assert!(
            !text(&out.stderr).contains("warning"),
            "{args:?}: {}",
            both(&out)
        );
    }

    // Piped, the table cuts nothing: the long job type is whole, with its age and attempts.
    let out = serve.jobs(&["failed"]);
    let table = text(&out.stdout);
    let line = table.lines().find(|l| l.starts_with("due-1")).unwrap();
    assert!(line.contains(LONG_JOB_TYPE), "{table}");
    let header = table.lines().next().unwrap();
    let failed_at = header.find("FAILED ").unwrap();
    assert!(line[failed_at..].starts_with("2h ago"), "{table}");
    let attempts_at = header.find("ATTEMPTS").unwrap();
    assert!(line[attempts_at..].starts_with('0'), "{table}");
}

#[test]
fn jobs_retry_exit_codes_and_dry_run_wording() {
    let redis = RedisServer::start();
    jobs(&redis);
    let serve = Serve::start(&redis);

    // The exit codes are documented in --help.
    for args in [
        &["--help"][..],
        &["retry", "--help"],
        &["retry-all", "--help"],
    ] {
        let out = serve.jobs(args);
        let help = text(&out.stdout);
        assert!(
            help.contains("Exit codes:")
                && help.contains("3  retry, retry-all: nothing was retried")
                && help.contains("4  retry, retry-all: nothing was retried for another reason"),
            "{args:?}: {help}"
        );
    }

    // A dry run says "would", in every output path, and its exit code what would happen.
    let out = serve.jobs(&["retry", "due-1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("would retry"), "{stdout}");
    assert!(!stdout.contains("retried"), "{stdout}");
    let out = serve.jobs(&["retry", "cooling-1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("would not retry: blocked_cooldown"),
        "{}",
        both(&out)
    );
    let out = serve.jobs(&["retry-all", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("would retry 1 of 3 jobs (dry run: nothing changed)"),
        "{stdout}"
    );
    assert!(!stdout.contains("retried"), "{stdout}");
    assert!(
        !text(&out.stderr).contains('\r'),
        "no \\r progress in a pipe"
    );
    let out = serve.jobs(&[
        "retry-all",
        "--dry-run",
        "--failure-type",
        "validation_error",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("would retry 0 of 1 jobs"), "{stdout}");
    assert!(stdout.contains("blocked_non_retryable  1"), "{stdout}");
    let out = serve.jobs(&[
        "delete-all",
        "--dry-run",
        "--failure-type",
        "validation_error",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("would delete 1 of 1 jobs"), "{stdout}");
    assert!(!stdout.contains("deleted"), "{stdout}");
    let out = serve.jobs(&["delete-all", "--failure-type", "validation_error"]);
    assert_eq!(out.status.code(), Some(2), "no --reason: {}", both(&out));
    assert!(
        text(&out.stderr).contains("--reason TEXT"),
        "{}",
        both(&out)
    );
    assert_eq!(
        ids(&serve, &[]),
        ["cooling-1", "due-1", "held-1"],
        "nothing changed"
    );

    // For real: held → 3; retried → 0; retried again (gone from the registry) → not 0.
    let out = serve.jobs(&["retry", "held-1"]);
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("not retried: blocked_non_retryable"),
        "{}",
        both(&out)
    );
    let out = serve.jobs(&[
        "retry-all",
        "--queue",
        "default",
        "--failure-type",
        "validation_error",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));
    let out = serve.jobs(&["retry", "due-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(text(&out.stdout).contains("retried"), "{}", both(&out));
    let out = serve.jobs(&["retry", "due-1"]);
    assert!(
        matches!(out.status.code(), Some(1 | 4)),
        "a job no longer failed: {}",
        both(&out)
    );
    assert_eq!(ids(&serve, &[]), ["cooling-1", "held-1"]);
}

#[test]
fn demo_writes_through_a_stalled_redis_with_neutral_paths_and_scales() {
    let redis = RedisServer::start();
    // Writes wait 2 s, as on a busy Redis: the redis crate's default 500 ms response timeout
    // made `demo` report "timed out" although the jobs were written.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query(&mut connect(&redis))
        .unwrap();
    let out = crate::common::retryguard()
        .args(["demo", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("wrote 22 failed RQ jobs"),
        "{}",
        both(&out)
    );
    let n: u64 = redis::cmd("ZCARD")
        .arg("rq:failed:demo")
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(n, 22);

    // The tracebacks name neutral paths, never the build machine's.
    let serve = Serve::start(&redis);
    let list = serve.json(&["failed", "--job-type", "demo_jobs.network_error"]);
    let id = list["jobs"][0]["id"].as_str().unwrap().to_string();
    let shown = serve.json(&["show", &id]);
    let tb = shown["traceback"].as_str().unwrap();
    assert!(
        tb.contains("File \"/app/demo_jobs.py\", line ") && tb.contains(", in network_error\n"),
        "{tb}"
    );
    for bad in ["/work/", "/root/", "/tmp/", "generate.py"] {
        assert!(!tb.contains(bad), "{bad}: {tb}");
    }
    assert_eq!(shown["failure_type"], "network_error");
    drop(serve);

    // Past the old cap of 1,000 per family, or a total; out of range is bad usage.
    let other = RedisServer::start();
    let out = crate::common::retryguard()
        .args(["demo", "--redis-url", &other.url(), "--total", "3000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("wrote 3000 failed RQ jobs"), "{stdout}");
    // Summed up per family, not 3,000 lines.
    assert!(stdout.lines().count() < 40, "{stdout}");
    assert!(stdout.contains("demo_jobs.unknown"), "{stdout}");
    let mut con = connect(&other);
    let n: u64 = redis::cmd("ZCARD")
        .arg("rq:failed:demo")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3000);
    let streams: Vec<String> = redis::cmd("KEYS")
        .arg("rq:results:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(streams.len(), 3000);
    let out = crate::common::retryguard()
        .args([
            "demo",
            "--redis-url",
            &other.url(),
            "--count-per-family",
            "1001",
            "--queue",
            "q2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("wrote 11011 failed RQ jobs"),
        "{}",
        both(&out)
    );
    for args in [
        &["--count-per-family", "100001"][..],
        &["--total", "0"],
        &["--total", "1000001"],
        &["--total", "5", "--count-per-family", "2"],
    ] {
        let out = crate::common::retryguard()
            .args(["demo", "--redis-url", &other.url()])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", both(&out));
    }
}
