//! The durable audit trail (`docs/audit.md`).
//!
//! Every decision and operator action enters the Redis stream `retryguard:audit:outbox` in
//! the same atomic step as the change it records (`retry::state`, `rq/lua/requeue.lua`).
//! The `writer` moves the outbox into hive-partitioned parquet files (`files`) under one
//! schema (`schema`); `health` tells whether that is keeping up.

#[cfg(feature = "object-store")]
pub mod bucket;
pub mod encoding;
pub mod files;
pub mod query;
pub mod record;
pub mod schema;
pub mod store;
pub mod writer;

pub use record::{FailureColumns, NewRecord, Verdict};
pub use schema::{AuditRecord, StreamId};
pub use store::{AuditStore, StoreUrl};
pub use writer::{AuditWriter, WriterConfig, WriterStatus};

use std::collections::HashMap;
use std::sync::Arc;

use crate::redis_link::Link;
use serde::Serialize;

/// Read access to the audit trail for one process: its health from Redis, and queries over
/// the outbox and the directory when one is configured. Built once by `crate::app`.
#[derive(Clone)]
pub struct AuditReader {
    conn: Link,
    dir: Option<Arc<AuditStore>>,
    max_lag_ms: u64,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader")
            .field("store", &self.dir.as_ref().map(|d| d.describe()))
            .field("max_lag_ms", &self.max_lag_ms)
            .finish_non_exhaustive()
    }
}

impl AuditReader {
    /// A reader over `conn`'s outbox and `dir` (`None`: queries answer "not configured");
    /// `max_lag_ms` is when the health says `degraded`.
    pub fn new(conn: Link, dir: Option<Arc<AuditStore>>, max_lag_ms: u64) -> Self {
        Self {
            conn,
            dir,
            max_lag_ms,
        }
    }

    /// The audit directory, when one is configured.
    pub fn dir(&self) -> Option<&Arc<AuditStore>> {
        self.dir.as_ref()
    }

    /// Whether the audit trail keeps up (see [`health`]).
    pub async fn health(&self) -> Result<AuditHealth, redis::RedisError> {
        health(&mut self.conn.clone(), self.max_lag_ms).await
    }

    /// A page of records (`None`: no audit directory is configured).
    pub async fn query(
        &self,
        q: &query::AuditQuery,
    ) -> Result<Option<query::QueryPage>, query::QueryError> {
        match &self.dir {
            Some(dir) => query::query(&mut self.conn.clone(), dir, q).await.map(Some),
            None => Ok(None),
        }
    }

    /// The traceback texts of `shas` (see [`tracebacks`]); empty without a directory.
    pub async fn tracebacks(
        &self,
        shas: Vec<String>,
    ) -> Result<HashMap<String, String>, query::QueryError> {
        match &self.dir {
            Some(dir) => tracebacks(&mut self.conn.clone(), dir, shas).await,
            None => Ok(HashMap::new()),
        }
    }

    /// The outbox connection, for the analyses over the trail (`crate::analytics`).
    pub(crate) fn connection(&self) -> Link {
        self.conn.clone()
    }
}

/// Whether the audit trail keeps up, as any instance sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditHealth {
    /// `ok`, or `degraded` with `reason`.
    pub status: &'static str,
    pub reason: Option<String>,
    /// Records in the outbox not yet in a parquet file.
    pub backlog: u64,
    /// Age of the oldest of them (ms).
    pub oldest_pending_ms: Option<u64>,
    /// The lease holder, if any.
    pub writer: Option<String>,
    pub last_flush_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Keeps every audit writer of an earlier version (one stream field per column) from taking
/// the lease again: such a writer would read a one-field entry (`encoding`) as an empty
/// record and acknowledge it, losing the record. Sets the earlier lease key to a marker with
/// no expiry; an earlier writer holding it fails its next renewal, which it makes before it
/// writes a part, and its `SET NX` never succeeds again. Every connection that may add
/// records makes this call before its first record (`RqBackend::connect_with`), and this
/// version's writers repeat it as they take and renew their own lease, in case the key was
/// deleted. Idempotent. docs/audit.md, "Upgrading from one field per column".
pub async fn fence_earlier_writers(
    conn: &mut impl redis::aio::ConnectionLike,
) -> Result<(), redis::RedisError> {
    fence_cmd().query_async(conn).await
}

/// The `SET` of [`fence_earlier_writers`], for a pipeline.
pub(crate) fn fence_cmd() -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(crate::keyspace::AUDIT_LEASE_V1)
        .arg(crate::keyspace::AUDIT_FENCE);
    cmd
}

/// Reads the audit health from Redis: degraded when the writer reports an error, or when
/// the oldest record waiting is older than `max_lag_ms` (no writer, or a stuck one).
pub async fn health(conn: &mut Link, max_lag_ms: u64) -> Result<AuditHealth, redis::RedisError> {
    let (backlog, oldest, writer, status): (
        u64,
        redis::Value,
        Option<String>,
        Vec<Option<String>>,
    ) = redis::pipe()
        .cmd("XLEN")
        .arg(crate::keyspace::AUDIT_OUTBOX)
        .cmd("XRANGE")
        .arg(crate::keyspace::AUDIT_OUTBOX)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("GET")
        .arg(crate::keyspace::AUDIT_LEASE)
        .cmd("HMGET")
        .arg(crate::keyspace::AUDIT_WRITER_STATUS)
        .arg("last_flush_ms")
        .arg("last_error")
        .query_async(conn)
        .await?;
    let now = crate::clock::now_ms();
    let oldest_pending_ms = writer::parse_entries(oldest)
        .first()
        .and_then(|e| e.id)
        .map(|id| now.saturating_sub(id.ms));
    let last_flush_ms = status
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok());
    let last_error = status.get(1).cloned().flatten().filter(|e| !e.is_empty());
    let reason = if let Some(e) = &last_error {
        Some(format!("the audit writer cannot write: {e}"))
    } else if oldest_pending_ms.is_some_and(|age| age > max_lag_ms) {
        Some(match &writer {
            None => "no audit writer holds the lease; records wait in the outbox".to_string(),
            Some(_) => "the audit writer is behind; records wait in the outbox".to_string(),
        })
    } else {
        None
    };
    Ok(AuditHealth {
        status: if reason.is_some() { "degraded" } else { "ok" },
        reason,
        backlog,
        oldest_pending_ms,
        writer,
        last_flush_ms,
        last_error,
    })
}

/// The traceback texts of `shas` (the records' `traceback_sha256`), from Redis (not yet
/// moved by the writer) or the audit directory's `_blobs/`; a sha found in neither is absent
/// from the map.
pub async fn tracebacks(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    shas: Vec<String>,
) -> Result<HashMap<String, String>, query::QueryError> {
    let mut found = HashMap::new();
    if shas.is_empty() {
        return Ok(found);
    }
    // Redis first: the writer stores a text in the directory before deleting it here, so a
    // text missed here is in the directory when it is looked for there.
    let texts: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(crate::keyspace::AUDIT_BLOBS)
        .arg(&shas)
        .query_async(conn)
        .await
        .map_err(|e| query::QueryError::from(crate::redis_error::RedisError::from(e)))?;
    let mut missing = Vec::new();
    for (sha, text) in shas.into_iter().zip(texts) {
        match text {
            Some(t) => {
                found.insert(sha, String::from_utf8_lossy(&t).into_owned());
            }
            None => missing.push(sha),
        }
    }
    let dir = Arc::clone(dir);
    let from_files = query::blocking(move || {
        missing
            .into_iter()
            .filter_map(|sha| dir.blob(&sha).transpose().map(|t| t.map(|t| (sha, t))))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await?;
    found.extend(from_files);
    Ok(found)
}
