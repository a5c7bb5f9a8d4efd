//! What the audit trail and the failed jobs say in aggregate, above the retry service: replay
//! of a candidate policy over current and recorded failures (`replay`), shadow experiments
//! (`experiments`) and retry statistics (`stats`). Read-only: nothing here changes a queue,
//! a binding or the audit trail.
//!
//! It sits above `retry`, `registry` and `audit` and reads them through their APIs; none of
//! them imports it.

pub mod experiments;
pub mod replay;
pub mod stats;

use std::sync::Arc;

use crate::audit::AuditReader;
use crate::audit::query::QueryError;
use crate::policy::PolicyEngine;
use crate::registry::{Bound, Registry};

/// The analyses over the audit trail, for one process (built by `crate::app`).
#[derive(Debug, Clone)]
pub struct Analytics {
    audit: AuditReader,
    engine: Arc<PolicyEngine>,
}

impl Analytics {
    pub fn new(audit: AuditReader, engine: Arc<PolicyEngine>) -> Self {
        Self { audit, engine }
    }

    /// Today's retry statistics (`None`: no audit directory is configured).
    pub async fn retry_stats(&self, now_ms: u64) -> Result<Option<stats::RetryStats>, QueryError> {
        let Some(dir) = self.audit.dir() else {
            return Ok(None);
        };
        stats::retry_stats(&mut self.audit.connection(), dir, now_ms)
            .await
            .map(Some)
    }

    /// Retries per hour over the last 24 hours, oldest first (`None`: no audit directory).
    pub async fn retries_by_hour(&self, now_ms: u64) -> Result<Option<Vec<u64>>, QueryError> {
        let Some(dir) = self.audit.dir() else {
            return Ok(None);
        };
        stats::retries_by_hour(&mut self.audit.connection(), dir, now_ms)
            .await
            .map(Some)
    }

    /// The shadow experiments since `since_ms` (`None`: no audit directory is configured).
    pub async fn experiments(
        &self,
        since_ms: u64,
    ) -> Result<Option<experiments::ExperimentReport>, QueryError> {
        let Some(dir) = self.audit.dir() else {
            return Ok(None);
        };
        experiments::report(&mut self.audit.connection(), dir, since_ms)
            .await
            .map(Some)
    }

    /// `candidate` replayed over the decisions recorded in `window` (see `replay`); "not
    /// configured" without an audit directory.
    pub async fn replay_recorded(
        &self,
        registry: &Registry,
        candidate: &Bound,
        window: &replay::RecordedWindow,
    ) -> Result<replay::RecordedReplay, replay::ReplayError> {
        let Some(dir) = self.audit.dir() else {
            return Ok(replay::RecordedReplay::not_configured(
                window.since_ms,
                window.until_ms,
            ));
        };
        replay::recorded(&self.engine, &self.audit, dir, registry, candidate, window).await
    }
}
