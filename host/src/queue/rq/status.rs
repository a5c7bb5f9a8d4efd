//! What the queue's Redis says about itself, for `/readyz` and the start-up banner: whether
//! it answers, and the durability settings an exactly-once requeue relies on.

use serde::Serialize;

use super::{RqBackend, redis_error};
use crate::queue::QueueError;

/// What Redis says about itself. `None`: `CONFIG GET` was refused (managed Redis often
/// disables it) or the setting is unknown.
#[derive(Debug, Clone, Serialize)]
pub struct RedisStatus {
    pub ping_ms: u64,
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    pub maxmemory_policy: Option<String>,
}

impl RqBackend {
    /// PINGs Redis and reads its durability settings (each `None` if `CONFIG` is refused).
    pub async fn redis_status(&self) -> Result<RedisStatus, QueueError> {
        let mut conn = self.conn.clone();
        let started = std::time::Instant::now();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(redis_error)?;
        let ping_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut setting = async |name: &str| -> Result<Option<String>, QueueError> {
            match redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<Vec<String>>(&mut conn)
                .await
            {
                Ok(pair) => Ok(pair.get(1).cloned()),
                Err(e) => match redis_error(e) {
                    e @ QueueError::Unavailable(_) => Err(e),
                    _ => Ok(None),
                },
            }
        };
        Ok(RedisStatus {
            ping_ms,
            appendonly: setting("appendonly").await?,
            appendfsync: setting("appendfsync").await?,
            maxmemory_policy: setting("maxmemory-policy").await?,
        })
    }
}
