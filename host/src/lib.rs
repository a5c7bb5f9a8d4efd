//! retryguard: safe retries for failed background jobs.
//!
//! The judgement — why a job failed and whether and when it may be retried — lives in
//! sandboxed WebAssembly policies (`policy`); `queue` reads and requeues jobs in the queue's
//! own Redis; the command line is in `cli`.

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod guard;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod retry;
