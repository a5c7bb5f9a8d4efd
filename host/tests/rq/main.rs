//! Real-parts tests against RQ 2.12: a throwaway `redis-server` per test, real RQ workers
//! running the jobs of `jobs.py`, and assertions on exactly what RQ left in Redis.
//!
//! One test binary (not one per file) so the `redis` client is linked once. Needs the test
//! venv (`.venv-test/`, made by scripts/test.sh) and `redis-server` on PATH; never touches
//! the shared Redis on 6379.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod audit;
mod audit_format;
#[cfg(feature = "object-store")]
mod audit_s3;
mod auto_retry;
mod connectivity;
mod counting;
mod delete;
mod guard;
mod harness;
mod http;
mod layout;
mod requests;
mod retry;
mod support;
mod triage;
