//! The idempotency guard inside real RQ workers: job code (`guard_jobs.py`) uses the Python
//! client (`clients/python/retryguard_guard.py`) against a real `retryguard serve`, and the
//! ledger in Redis counts the charges.

use std::process::{Command, Output, Stdio};

use crate::support::{Python, RedisServer, Serve, connect, query};

/// Enqueues `func(arg)` on `queue` `count` times with RQ's own API; the job ids.
fn enqueue(
    python: &Python,
    redis_url: &str,
    queue: &str,
    func: &str,
    arg: &str,
    count: usize,
) -> Vec<String> {
    let script = "import json, sys, redis\nfrom rq import Queue\n\
        q = Queue(sys.argv[1], connection=redis.Redis.from_url(sys.argv[2]))\n\
        print(json.dumps([q.enqueue(sys.argv[3], sys.argv[4]).id for _ in range(int(sys.argv[5]))]))\n";
    let out = python
        .command(redis_url)
        .args([
            "-c",
            script,
            queue,
            redis_url,
            func,
            arg,
            &count.to_string(),
        ])
        .output()
        .unwrap();
    check(&out, "enqueue");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A forking `rq worker --burst` on `queue`, with the guard client pointed at `serve`.
fn worker(python: &Python, redis_url: &str, serve: &Serve, queue: &str) -> Command {
    let mut cmd = python.command(redis_url);
    cmd.env("RETRYGUARD_SERVER", serve.url()).args([
        "-m",
        "rq.cli",
        "worker",
        "--burst",
        "--url",
        redis_url,
        "--logging_level",
        "WARNING",
        queue,
    ]);
    cmd
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn status(con: &mut redis::Connection, id: &str) -> String {
    query(con, &["HGET", &format!("rq:job:{id}"), "status"])
}

#[test]
fn a_job_retried_after_its_charge_replays_the_result_instead_of_charging_again() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let serve = Serve::start(&url);
    let mut con = connect(&url);

    let ids = enqueue(
        python,
        &url,
        "pay",
        "guard_jobs.charge_then_fail",
        "order-7",
        1,
    );
    let id = &ids[0];
    check(
        &worker(python, &url, &serve, "pay").output().unwrap(),
        "worker",
    );
    assert_eq!(status(&mut con, id), "failed", "it fails after the charge");
    let ledger: Vec<String> = query(&mut con, &["LRANGE", "order-7:ledger", "0", "-1"]);
    assert_eq!(ledger, ids);

    // retryguard retries it (TimeoutError: retryable), and a worker runs it again.
    let (code, body) = serve.http("POST", &format!("/api/v1/jobs/failed/{id}/retry"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"], "retried", "{body}");
    check(
        &worker(python, &url, &serve, "pay").output().unwrap(),
        "worker",
    );

    assert_eq!(
        status(&mut con, id),
        "finished",
        "the retry returned the cached result"
    );
    let ledger: Vec<String> = query(&mut con, &["LRANGE", "order-7:ledger", "0", "-1"]);
    assert_eq!(ledger, ids, "still exactly one charge");
    let replayed: Vec<String> = query(&mut con, &["LRANGE", "order-7:replayed", "0", "-1"]);
    assert_eq!(
        replayed,
        [format!(
            "{id} {{\"charged\": \"order-7\", \"receipt\": \"rcpt-{id}\"}}"
        )]
    );
    let (code, body) = serve.http("GET", "/api/v1/idempotency/charge%3Aorder-7");
    assert_eq!(code, 200);
    assert_eq!(body["state"], "completed", "{body}");
    assert_eq!(body["result"]["receipt"], format!("rcpt-{id}"));
}

#[test]
fn two_workers_racing_on_one_key_charge_once() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let serve = Serve::start(&url);
    let mut con = connect(&url);

    let ids = enqueue(
        python,
        &url,
        "race",
        "guard_jobs.charge_slowly",
        "order-9",
        2,
    );
    let a = worker(python, &url, &serve, "race")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = worker(python, &url, &serve, "race")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    check(&a, "worker a");
    check(&b, "worker b");

    let ledger: Vec<String> = query(&mut con, &["LRANGE", "order-9:ledger", "0", "-1"]);
    assert_eq!(ledger.len(), 1, "exactly one charge: {ledger:?}");
    let charger = ledger[0].clone();
    let other = ids.iter().find(|id| **id != charger).unwrap().clone();
    assert_eq!(status(&mut con, &charger), "finished");

    // The other run either found the key held (GuardInProgress: a retryable failure) or,
    // if one worker ran both jobs, got the stored result.
    match status(&mut con, &other).as_str() {
        "failed" => {
            println!("the racing run failed with GuardInProgress, as expected");
            let (code, job) = serve.http("GET", &format!("/api/v1/jobs/failed/{other}"));
            assert_eq!(code, 200, "{job}");
            assert!(
                job["exc_type"]
                    .as_str()
                    .unwrap()
                    .ends_with("GuardInProgress"),
                "{job}"
            );
            assert_eq!(
                job["retryable"], true,
                "the default policy retries it: {job}"
            );
            // Retried, it replays the stored result.
            let (code, body) = serve.http("POST", &format!("/api/v1/jobs/failed/{other}/retry"));
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["outcome"], "retried", "{body}");
            check(
                &worker(python, &url, &serve, "race").output().unwrap(),
                "worker",
            );
            assert_eq!(status(&mut con, &other), "finished");
        }
        "finished" => println!("one worker ran both jobs: the second replayed the result"),
        s => panic!("unexpected status {s} of {other}"),
    }
    let replayed: Vec<String> = query(&mut con, &["LRANGE", "order-9:replayed", "0", "-1"]);
    assert_eq!(
        replayed,
        [format!(
            "{other} {{\"charged\": \"order-9\", \"receipt\": \"rcpt-{charger}\"}}"
        )]
    );
    let ledger: Vec<String> = query(&mut con, &["LRANGE", "order-9:ledger", "0", "-1"]);
    assert_eq!(ledger, [charger], "still exactly one charge");
}
