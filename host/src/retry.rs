//! The retry service: list failed jobs with what their policy says, and retry them exactly
//! once.
//!
//! - `types`: what a retry is asked with and reports; its errors.
//! - `evaluate`: a job and its retry state judged by the bound policy (pure, no Redis).
//! - `requeue`: evaluated jobs back to their queue, atomically and exactly once.
//! - `service`: the entry point — list, get, retry one, retry all — over a queue backend.
//! - `records`: the audit records of its decisions; `state`: retryguard's per-job data in
//!   Redis; `tracker`: what became of each requeued job.

mod brakes;
pub mod delete;
pub mod evaluate;
pub mod filter;
pub mod outcome;
pub mod records;
pub mod requeue;
pub mod service;
mod snapshot;
pub mod state;
pub mod sweeper;
pub mod tracker;
pub mod types;

pub use evaluate::{ClassificationCache, Evaluated};
pub use filter::JobFilter;
pub use outcome::{JobOutcome, Outcome};
pub use service::RetryService;
pub use types::{
    DeleteOptions, JobView, Page, Progress, RetryError, RetryOptions, ServiceConfig,
    ShadowDecision, Summary,
};
