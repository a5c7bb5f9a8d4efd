//! The snapshots a retry-all or delete-all walks: a copy of each failed registry the filter
//! covers (or of the group's set on each queue), so a long walk never skips a job that moves
//! meanwhile.

use std::sync::atomic::Ordering;

use super::filter::JobFilter;
use super::service::RetryService;
use super::types::{Progress, RetryError};
use crate::keyspace;
use crate::queue::QueueBackend;

/// A snapshot: (queue, snapshot key, size).
pub(super) type Snapshot = (String, String, u64);

impl<B: QueueBackend> RetryService<B> {
    /// The queues a failure group has jobs on, from the failure index (`crate::triage`).
    pub(super) async fn group_queues(&self, fingerprint: &str) -> Result<Vec<String>, RetryError> {
        let mut conn = self.conn.clone();
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keyspace::triage_group(fingerprint))
            .query_async(&mut conn)
            .await
            .map_err(crate::redis_error::RedisError::from)?;
        let mut queues: Vec<String> = fields
            .into_iter()
            .filter_map(|(k, v)| {
                let q = k.strip_prefix("q:")?;
                (v.parse::<i64>().ok()? > 0).then(|| q.to_string())
            })
            .collect();
        queues.sort();
        Ok(queues)
    }

    /// Snapshots of the failed registry of each queue the filter covers (or, with
    /// `filter.group`, of the group's set on each queue), their sizes added to
    /// `progress.total`: what a retry-all or a delete-all walks.
    pub(super) async fn snapshots(
        &self,
        filter: &JobFilter,
        operation_id: &str,
        progress: &Progress,
    ) -> Result<Vec<Snapshot>, RetryError> {
        let mut queues = match &filter.group {
            Some(fp) => self.group_queues(fp).await?,
            None => self.listed_queues().await?,
        };
        if let Some(q) = &filter.queue {
            queues.retain(|name| name == q);
        }
        let ttl = self.config.snapshot_ttl_seconds;
        let mut snapshots = Vec::with_capacity(queues.len());
        for queue in queues {
            let key = keyspace::snapshot(operation_id, &queue);
            let size = match &filter.group {
                Some(fp) => {
                    let set = keyspace::triage_group_jobs(fp, &queue);
                    self.backend().snapshot_subset(&set, &key, ttl).await?
                }
                None => self.backend().snapshot(&queue, &key, ttl).await?,
            };
            progress.total.fetch_add(size, Ordering::Relaxed);
            snapshots.push((queue, key, size));
        }
        Ok(snapshots)
    }
}
