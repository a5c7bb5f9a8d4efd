//! The harness itself: throwaway Redis servers and the Python venv.

use crate::support::{Python, RedisServer, ResultEntry, connect, query, redis_get};

#[test]
fn redis_server_runs_on_its_own_port_and_dies_when_dropped() {
    let server = RedisServer::start();
    let port = server.port();
    assert_ne!(port, 6379, "never the shared Redis");
    assert!(server.ping());
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
    let persistence: Vec<String> = query(
        &mut connect(&server.url()),
        &["CONFIG", "GET", "appendonly"],
    );
    assert_eq!(persistence, ["appendonly", "no"]);
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is gone after drop"
    );
    assert!(!dir.exists(), "its temp dir is removed");
}

#[test]
fn stop_and_restart_keep_the_port_and_an_in_memory_server_forgets() {
    let mut server = RedisServer::start();
    let port = server.port();
    let _: () = query(&mut connect(&server.url()), &["SET", "k", "v"]);
    server.stop();
    assert!(!server.is_running());
    assert!(!server.ping());
    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert_eq!(redis_get(&server.url(), "k"), None, "nothing was saved");
}

#[test]
fn a_durable_server_keeps_every_acknowledged_write_across_a_kill() {
    let mut server = RedisServer::start_durable();
    let url = server.url();
    let mut con = connect(&url);
    for _ in 0..100 {
        let _: i64 = query(&mut con, &["INCR", "n"]);
    }
    drop(con);
    server.stop(); // SIGKILL: no shutdown save
    server.restart();
    assert_eq!(redis_get(&url, "n").as_deref(), Some("100"));
    assert!(server.dir().join("appendonlydir").is_dir());
}

#[test]
fn the_venv_has_the_pinned_rq() {
    let python = Python::venv();
    assert!(python.path().exists());
}

#[test]
fn make_failed_with_an_empty_arg_calls_the_job_with_no_argument() {
    let server = RedisServer::start();
    let url = server.url();
    let ids = Python::venv().make_failed(&url, "noarg", 1, "jobs.validation_error", "");
    let text = ResultEntry::newest(&mut connect(&url), &ids[0])
        .unwrap()
        .exc_text()
        .unwrap();
    assert!(
        text.ends_with("\nValueError: invalid literal for int() with base 10: '12.50 EUR'\n"),
        "{text}"
    );
}
