//! The durable audit trail (`docs/audit.md`).
//!
//! Every decision and operator action enters the Redis stream `retryguard:audit:outbox` in
//! the same atomic step as the change it records (`retry::state`, `rq/lua/requeue.lua`).
//! The `writer` moves the outbox into hive-partitioned parquet files (`files`) under one
//! schema (`schema`); `health` tells whether that is keeping up.

pub mod background;
pub mod files;
pub mod outcomes;
pub mod query;
pub mod schema;
pub mod stats;
pub mod writer;

pub use files::AuditDir;
pub use schema::{AuditRecord, StreamId};
pub use writer::{AuditWriter, WriterConfig, WriterStatus};

use redis::aio::ConnectionManager;
use serde::Serialize;

/// retryguard's audit keys in Redis.
#[derive(Debug, Clone, Copy)]
pub struct Keys;

impl Keys {
    /// The outbox stream.
    pub const OUTBOX: &'static str = "retryguard:audit:outbox";
    /// The writers' consumer group on the outbox.
    pub const GROUP: &'static str = "retryguard-audit";
    /// The writer lease (a string holding the holder's token).
    pub const LEASE: &'static str = "retryguard:audit:lease";
    /// Tracebacks waiting to be written to `_blobs/` (hash: sha256 → text).
    pub const BLOBS: &'static str = "retryguard:audit:blobs";
    /// The lease holder's last report (hash).
    pub const WRITER_STATUS: &'static str = "retryguard:audit:writer";
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

/// Reads the audit health from Redis: degraded when the writer reports an error, or when
/// the oldest record waiting is older than `max_lag_ms` (no writer, or a stuck one).
pub async fn health(
    conn: &mut ConnectionManager,
    max_lag_ms: u64,
) -> Result<AuditHealth, redis::RedisError> {
    let (backlog, oldest, writer, status): (
        u64,
        redis::Value,
        Option<String>,
        Vec<Option<String>>,
    ) = redis::pipe()
        .cmd("XLEN")
        .arg(Keys::OUTBOX)
        .cmd("XRANGE")
        .arg(Keys::OUTBOX)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("GET")
        .arg(Keys::LEASE)
        .cmd("HMGET")
        .arg(Keys::WRITER_STATUS)
        .arg("last_flush_ms")
        .arg("last_error")
        .query_async(conn)
        .await?;
    let now = crate::retry::service::now_ms();
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
