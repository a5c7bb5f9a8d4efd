//! Triage at scale: failures grouped by cause, counted the same at 1,000 or 1,000,000 jobs.
//!
//! - `index`: the failure index in Redis — its layout and its fenced, atomic writes.
//! - `reconciler`: keeps the index equal to RQ's failed registries, incrementally, one
//!   instance at a time under a lease.
//! - `read`: groups, one group, counts and the index's state, for the API and the CLI.
//!
//! What makes two failures "the same cause" is `crate::fingerprint` (a leaf: the retry
//! service's `group` filter uses it too). docs/triage.md has the design and the figures.

pub mod index;
pub mod read;
pub mod reconciler;

pub use reconciler::{Reconciler, ReconcilerConfig, ReconcilerStatus};
