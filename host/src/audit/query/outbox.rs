//! Walking the outbox stream: the records not yet in a file.

use crate::redis_link::Link;
use redis::Value;

use crate::audit::schema::StreamId;
use crate::audit::writer::{Entry, parse_entries};
use crate::redis_error::RedisError;

/// Entries per `XRANGE`/`XREVRANGE` call.
const OUTBOX_CHUNK: usize = 1000;

/// Which way `scan_outbox` walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    OldestFirst,
    NewestFirst,
}

/// Walks the outbox entries with ids in `[lo, hi)` in chunks, calling `visit` on each until
/// it returns false.
pub async fn scan_outbox(
    conn: &mut Link,
    lo: StreamId,
    hi: Option<StreamId>,
    direction: Direction,
    mut visit: impl FnMut(Entry) -> bool,
) -> Result<(), RedisError> {
    // Inclusive bounds, which every Redis version understands (`(` needs 6.2).
    let mut start = lo;
    let mut end = match hi {
        Some(hi) => match prev(hi) {
            Some(end) => end,
            None => return Ok(()),
        },
        None => StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        },
    };
    while start <= end {
        let mut cmd = match direction {
            Direction::OldestFirst => {
                let mut c = redis::cmd("XRANGE");
                c.arg(crate::keyspace::AUDIT_OUTBOX)
                    .arg(start.to_string())
                    .arg(end.to_string());
                c
            }
            Direction::NewestFirst => {
                let mut c = redis::cmd("XREVRANGE");
                c.arg(crate::keyspace::AUDIT_OUTBOX)
                    .arg(end.to_string())
                    .arg(start.to_string());
                c
            }
        };
        cmd.arg("COUNT").arg(OUTBOX_CHUNK);
        let reply: Value = cmd.query_async(conn).await.map_err(RedisError::from)?;
        let entries = parse_entries(reply);
        let full = entries.len() >= OUTBOX_CHUNK;
        let Some(last) = entries.last().and_then(|e| e.id) else {
            return Ok(());
        };
        for e in entries {
            if !visit(e) {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
        match direction {
            Direction::OldestFirst => start = last.next(),
            Direction::NewestFirst => match prev(last) {
                Some(p) => end = p,
                None => return Ok(()),
            },
        }
    }
    Ok(())
}

/// The id right before `id`, if any.
fn prev(id: StreamId) -> Option<StreamId> {
    match id.seq.checked_sub(1) {
        Some(seq) => Some(StreamId { ms: id.ms, seq }),
        None => id
            .ms
            .checked_sub(1)
            .map(|ms| StreamId { ms, seq: u64::MAX }),
    }
}
