//! retryguard: safe retries for failed background jobs.
//!
//! The judgement — why a job failed and whether and when it may be retried — lives in
//! sandboxed WebAssembly policies (`policy`); `queue` reads and requeues jobs in the queue's
//! own Redis; the command line is in `cli`.
//!
//! Feature `tls` (default) brings rustls: Redis over `rediss://`, `serve` over HTTPS, and the
//! CLI, whose HTTP client speaks https. The fuzz build turns it off, and with it `cli`.

pub mod analytics;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod brake;
#[cfg(feature = "tls")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod fingerprint;
pub mod guard;
pub mod keyspace;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod redis_error;
pub mod redis_link;
pub mod registry;
pub mod retry;
#[cfg(feature = "tls")]
pub mod tls;
pub mod triage;
pub mod ui;
