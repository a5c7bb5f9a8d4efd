//! A request does exactly what it says, against a real `retryguard serve` over real RQ
//! failures: a body on a route that reads none, or a request a web page of another site (or a
//! DNS-rebinding name) made a browser send, is refused before anything is done, and the
//! queue is counted before and after to prove nothing was requeued.

use crate::support::{Python, RedisServer, Serve, connect, query};

/// Request headers as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// (jobs waiting in the queue, jobs in its failed registry).
fn counts(con: &mut redis::Connection, queue: &str) -> (u64, u64) {
    (
        query(con, &["LLEN", &format!("rq:queue:{queue}")]),
        query(con, &["ZCARD", &format!("rq:failed:{queue}")]),
    )
}

#[test]
fn a_body_on_a_route_that_reads_none_is_refused_and_nothing_is_requeued() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "bodies", 20, "jobs.network_error", "");
    let serve = Serve::start(&url);
    let mut con = connect(&url);
    assert_eq!(counts(&mut con, "bodies"), (0, 20));

    let json = ("content-type", "application/json");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let host = ("host", "localhost");
    let retry_one = format!("/api/v1/jobs/failed/{}/retry", ids[0]);
    let cases: Vec<(&str, Headers<'_>, &[u8])> = vec![
        (
            "/api/v1/jobs/failed/retry-all",
            vec![host, json],
            br#"{"dry_run":true,"job_type":"demo_jobs.timeout"}"#,
        ),
        (
            "/api/v1/jobs/failed/retry-all",
            vec![host, form],
            b"dry_run=true",
        ),
        (
            "/api/v1/jobs/failed/retry-all",
            vec![host, json, ("transfer-encoding", "chunked")],
            br#"{"dry_run":true}"#,
        ),
        ("/api/v1/jobs/failed/retry-all", vec![host], b"dry_run=true"),
        (&retry_one, vec![host, json], br#"{"dry_run":true}"#),
        (&retry_one, vec![host, form], b"dry_run=true"),
    ];
    for (path, headers, body) in &cases {
        let (status, reply) = serve.send("POST", path, headers, Some(body));
        assert_eq!(status, 400, "{path} {headers:?}: {reply}");
        assert_eq!(reply["error"]["code"], "unexpected_body", "{reply}");
        assert_eq!(counts(&mut con, "bodies"), (0, 20), "{path} {headers:?}");
    }

    // A misspelt parameter is named even when the body is refused too.
    let (status, reply) = serve.send(
        "POST",
        "/api/v1/jobs/failed/retry-all?dryrun=true",
        &[host, json],
        Some(br#"{"dry_run":true}"#),
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_query", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dryrun"),
        "{reply}"
    );
    assert_eq!(counts(&mut con, "bodies"), (0, 20));

    // The same request with its options in the query does what it says: a dry run, nothing
    // requeued; then a real one requeues all 20.
    let (status, reply) = serve.http("POST", "/api/v1/jobs/failed/retry-all?dry_run=true");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(counts(&mut con, "bodies"), (0, 20), "{reply}");
    let (status, reply) = serve.http("POST", "/api/v1/jobs/failed/retry-all");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["counts"]["retried"], 20, "{reply}");
    assert_eq!(counts(&mut con, "bodies"), (20, 0));
}

#[test]
fn cross_site_and_rebinding_requests_are_refused_and_nothing_is_requeued() {
    let server = RedisServer::start();
    let url = server.url();
    let python = Python::venv();
    let ids = python.make_failed(&url, "xsite", 5, "jobs.network_error", "");
    let serve = Serve::start(&url);
    let mut con = connect(&url);
    let own = format!("127.0.0.1:{}", serve.port);
    let own_origin = format!("http://{own}");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let force = "/api/v1/jobs/failed/retry-all?force=true&reason=x";

    // What a page on another site can make the operator's browser send: a simple form POST
    // (no preflight), with Origin, or with only Sec-Fetch-Site.
    let attacks: Vec<(&str, Headers<'_>, &str)> = vec![
        (
            force,
            vec![("host", &own), ("origin", "http://evil.example"), form],
            "cross_site",
        ),
        (
            force,
            vec![("host", &own), ("origin", "null"), form],
            "cross_site",
        ),
        (
            force,
            vec![("host", &own), ("origin", "http://127.0.0.1:3000")],
            "cross_site",
        ),
        (
            force,
            vec![("host", &own), ("sec-fetch-site", "cross-site")],
            "cross_site",
        ),
        (
            force,
            vec![("host", &own), ("sec-fetch-site", "same-site")],
            "cross_site",
        ),
        // A DNS-rebinding name that resolves to 127.0.0.1: same origin as far as the
        // browser knows, but not a name this server answers to.
        (
            force,
            vec![
                ("host", "rebind.evil.example:80"),
                ("origin", "http://rebind.evil.example:80"),
            ],
            "host_not_allowed",
        ),
    ];
    for (path, headers, code) in &attacks {
        let (status, reply) = serve.send("POST", path, headers, None);
        assert_eq!(status, 403, "{headers:?}: {reply}");
        assert_eq!(reply["error"]["code"], *code, "{reply}");
        assert_eq!(counts(&mut con, "xsite"), (0, 5), "{headers:?}");
    }
    // Reading through a rebinding name is refused too.
    let (status, reply) = serve.send(
        "GET",
        &format!("/api/v1/jobs/failed/{}", ids[0]),
        &[("host", "rebind.evil.example")],
        None,
    );
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"]["code"], "host_not_allowed");

    // The server's own origin, and a tool that sends neither header, go through.
    let (status, reply) = serve.send(
        "POST",
        &format!("/api/v1/jobs/failed/{}/retry", ids[0]),
        &[
            ("host", &own),
            ("origin", &own_origin),
            ("sec-fetch-site", "same-origin"),
        ],
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outcome"], "retried", "{reply}");
    assert_eq!(counts(&mut con, "xsite"), (1, 4));
    let (status, reply) = serve.send(
        "POST",
        "/api/v1/jobs/failed/retry-all",
        &[("host", &own)],
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["counts"]["retried"], 4, "{reply}");
    assert_eq!(counts(&mut con, "xsite"), (5, 0));
}
