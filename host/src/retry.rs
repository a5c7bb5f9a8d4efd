//! The retry service: list failed jobs with what their policy says, and retry them
//! exactly once. `service` is the entry point; `state` holds retryguard's own Redis data.

pub mod audit;
pub mod filter;
pub mod outcome;
pub mod replay;
pub mod service;
pub mod state;

pub use filter::JobFilter;
pub use outcome::{JobOutcome, Outcome};
pub use service::{
    JobView, Page, Progress, RetryError, RetryOptions, RetryService, ServiceConfig, Summary,
};
