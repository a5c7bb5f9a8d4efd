//! Policy engine tests: the default policy's contract, the sandbox's limits against
//! misbehaving policies, concurrency, the deny-all WASI, and the `retryguard policy` CLI.
//!
//! One test binary (not one per file) so wasmtime is linked once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod artifacts;
mod cli;
mod common;
mod concurrency;
mod contract;
mod payments;
mod python;
mod sandbox;
mod wasi;
mod wat_policies;
