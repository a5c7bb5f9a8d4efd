//! Entry points for the fuzz targets (`fuzz/`, see `docs/fuzzing.md`): thin wrappers that
//! build the Redis replies the adapter's private parsers read, from plain bytes. Not an API:
//! hidden from the docs and used by nothing else.

use redis::Value;

use super::{FailedJob, JOB_FIELDS, JobRef};
use crate::queue::{QueueError, RequeueResult};

/// A results-stream entry: its id and its field/value pairs.
pub type Entry = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// The job ref every wrapper parses for.
pub fn job_ref() -> JobRef {
    JobRef {
        queue: "default".into(),
        id: "job-1".into(),
        score: 0.0,
    }
}

/// How many fields `HMGET` asks for: a well-formed hash reply has exactly this many.
pub const HASH_FIELDS: usize = JOB_FIELDS.len();

/// `parse_job` over a well-formed `HMGET` reply (`None` is a nil field) and `XREVRANGE`
/// reply, as the Redis client decodes them from RESP.
pub fn parse_job(hash: &[Option<Vec<u8>>], entries: &[Entry]) -> Option<FailedJob> {
    let hash = Value::Array(
        hash.iter()
            .map(|f| f.clone().map_or(Value::Nil, Value::BulkString))
            .collect(),
    );
    let results = Value::Array(
        entries
            .iter()
            .map(|(id, kv)| {
                let kv = kv
                    .iter()
                    .flat_map(|(k, v)| [Value::BulkString(k.clone()), Value::BulkString(v.clone())])
                    .collect();
                Value::Array(vec![Value::BulkString(id.clone()), Value::Array(kv)])
            })
            .collect(),
    );
    super::parse_job(&job_ref(), &hash, &results)
}

/// `parse_job` over two raw RESP replies (any shape a server could send); `None` when
/// either is not valid RESP.
pub fn parse_job_resp(hash: &[u8], results: &[u8]) -> Option<Option<FailedJob>> {
    let hash = redis::parse_redis_value(hash).ok()?;
    let results = redis::parse_redis_value(results).ok()?;
    Some(super::parse_job(&job_ref(), &hash, &results))
}

/// `parse_requeue_reply` over a raw RESP reply; `None` when it is not valid RESP.
pub fn parse_requeue_reply_resp(reply: &[u8]) -> Option<Result<RequeueResult, QueueError>> {
    let reply = redis::parse_redis_value(reply).ok()?;
    Some(super::parse_requeue_reply(reply))
}

/// `parse_requeue_reply` over an array of bulk strings, as the requeue script returns.
pub fn parse_requeue_reply(parts: &[Vec<u8>]) -> Result<RequeueResult, QueueError> {
    super::parse_requeue_reply(Value::Array(
        parts.iter().cloned().map(Value::BulkString).collect(),
    ))
}

/// The epoch milliseconds of a stream entry id.
pub fn stream_id_ms(id: &str) -> Option<u64> {
    super::stream_id_ms(id)
}
