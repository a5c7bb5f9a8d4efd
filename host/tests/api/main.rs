//! Router tests of the HTTP API: `api::router` called with `oneshot` (no socket) against a
//! throwaway `redis-server` per test, holding RQ 2.x jobs written with raw Redis commands.
//!
//! Needs `redis-server` on PATH (scripts/test.sh installs it); never touches port 6379.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod audit;
mod auth;
mod cli_client;
mod cli_client_jobs;
mod cli_client_policies;
mod common;
mod conform;
mod delete;
mod errors;
mod guard;
mod health;
mod jobs;
mod openapi;
mod operations;
#[path = "../rq/support/pki.rs"]
mod pki;
mod policies;
#[path = "../rq/support/redis_server.rs"]
#[allow(dead_code, reason = "shared harness: not every helper is used here")]
mod redis_server;
mod registry_watch;
mod serve;
mod serve_tls;
mod shared_operations;
mod ui;
