//! The error of retryguard's own Redis data (state, audit outbox, registry, guard): the code
//! outside `queue/` reports Redis trouble with this type, not with the queue adapter's
//! `QueueError`.
//!
//! A leaf apart from `metrics` (every Redis error is counted).

/// Redis trouble, split by what a caller can conclude about a write in flight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Redis did not answer (down, timed out, connection dropped): the result of a write
    /// in flight is unknown.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Failed(String),
}

impl RedisError {
    /// Whether Redis did not answer (so a write in flight may or may not have happened).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<redis::RedisError> for RedisError {
    /// Connection trouble is `Unavailable`, anything else `Failed`; each is counted in
    /// `retryguard_redis_errors_total`.
    fn from(e: redis::RedisError) -> Self {
        crate::metrics::global().redis_error();
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            Self::Unavailable(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}
