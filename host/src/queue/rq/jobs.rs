//! A failed job from its job hash (`HMGET`) and results stream (`XREVRANGE`) replies, and
//! the cache of what decoding them costs most.

use std::sync::Arc;

use redis::Value;

use super::decode::{exc_info, exc_string, job_type_from_data};
use super::requeue::is_wrongtype;
use super::{RqKeys, redis_error};
use crate::clock::parse_utc;
use crate::queue::{FailedJob, JobRef, QueueError};

/// The fields of a job hash `read_jobs` asks for, in the order `parse_job` reads them.
pub(super) const JOB_FIELDS: [&str; 9] = [
    "status",
    "origin",
    "data",
    "description",
    "created_at",
    "ended_at",
    "exc_info",
    "retries_left",
    "failure_ttl",
];

/// What a failed job's compressed fields decode to: the job's type (from the pickled `data`)
/// and its newest failure (from a results entry's `exc_string`), parsed.
#[derive(Debug)]
struct DecodedFailure {
    job_type: String,
    exc_type: String,
    exc_message: String,
    traceback: String,
}

impl DecodedFailure {
    fn bytes(&self) -> usize {
        self.job_type.len() + self.exc_type.len() + self.exc_message.len() + self.traceback.len()
    }
}

/// Decoded failures of jobs by (job id, `created_at`, newest results entry id, id of the entry
/// that held the failure). A results entry never changes once written and a job's `data` is
/// fixed at creation, so the same key always decodes to the same failure: listing the same
/// failed jobs again skips base64, two inflates and the traceback parser for each (they were
/// most of a listing's CPU time). Bounded by bytes; emptied when it would grow past them.
#[derive(Debug)]
pub(super) struct DecodeCache {
    inner: std::sync::Mutex<DecodeCacheInner>,
    /// The most decoded text kept (tracebacks are capped at 1 MiB each, so a byte budget,
    /// not a count, bounds the memory); 0 keeps nothing.
    max_bytes: usize,
}

impl Default for DecodeCache {
    fn default() -> Self {
        Self {
            inner: std::sync::Mutex::default(),
            max_bytes: Self::MAX_BYTES,
        }
    }
}

type DecodeKey = (String, String, String, String);

#[derive(Debug, Default)]
struct DecodeCacheInner {
    entries: std::collections::HashMap<DecodeKey, Arc<DecodedFailure>>,
    bytes: usize,
}

impl DecodeCache {
    /// The default budget: listings of the same pages skip decoding within it.
    const MAX_BYTES: usize = 24 << 20;

    /// A cache that keeps nothing (a reader that reads each job once).
    pub(super) fn none() -> Self {
        Self {
            inner: std::sync::Mutex::default(),
            max_bytes: 0,
        }
    }

    fn get(&self, key: &DecodeKey) -> Option<Arc<DecodedFailure>> {
        if self.max_bytes == 0 {
            return None;
        }
        self.inner.lock().ok()?.entries.get(key).cloned()
    }

    fn put(&self, key: DecodeKey, value: Arc<DecodedFailure>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let size = value.bytes() + key.0.len() + key.1.len() + key.2.len() + key.3.len();
        if inner.bytes + size > self.max_bytes {
            inner.entries.clear();
            inner.bytes = 0;
        }
        if size <= self.max_bytes && inner.entries.insert(key, value).is_none() {
            inner.bytes += size;
        }
    }
}

/// The bytes of a bulk-string reply; `None` for nil or anything else.
pub(super) fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The id and flat field/value list of each entry of an `XREVRANGE` reply, borrowed.
fn stream_entries(results: &Value) -> Vec<(&[u8], &[Value])> {
    let Value::Array(entries) = results else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(pair) => match pair.as_slice() {
                [id, Value::Array(kv)] => Some((bulk(id)?, kv.as_slice())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A job from its `HMGET` and `XREVRANGE` replies, either of which may be an error. A job
/// key or results key of the wrong type (`WRONGTYPE`) makes the job [`broken`]; any other
/// error is Redis's.
pub(super) fn job_from_replies(
    r: &JobRef,
    hash: &redis::RedisResult<Value>,
    results: &redis::RedisResult<Value>,
    cache: &DecodeCache,
) -> Result<Option<FailedJob>, QueueError> {
    match (hash, results) {
        (Ok(hash), Ok(results)) => Ok(parse_job_with(r, hash, results, Some(cache))),
        // Nothing of the job can be read: its status is what the failed registry it was
        // found in says (and so a job in no failed registry is `not_found` to a retry,
        // never `already_requeued`).
        (Err(e), _) if is_wrongtype(e) => Ok(Some(broken(
            r,
            None,
            &format!("{} is not a hash", RqKeys::job(&r.id)),
        ))),
        // The hash is readable, the results stream is not: the job's own fields still say
        // what it is (its type picks the policy), its failure is unknown. A hash that is
        // gone is a job that is gone.
        (Ok(hash), Err(e)) if is_wrongtype(e) => Ok(parse_job(r, hash, &Value::Nil).map(|job| {
            broken(
                r,
                Some(job),
                &format!("{} is not a stream", RqKeys::results(&r.id)),
            )
        })),
        (Err(e), _) | (_, Err(e)) => Err(redis_error(e.clone())),
    }
}

/// A failed job retryguard cannot read because one of its keys holds the wrong type: like a
/// failure whose `exc_string` is undecodable, its failure text says why, in parentheses (not
/// a Python exception, so the default policy holds it as `unknown`). Its results entry id is
/// empty, so no decode or classification cache keeps it, and the requeue script refuses it
/// (it checks every key's type first) whatever the decision, forced or not.
fn broken(r: &JobRef, readable: Option<FailedJob>, why: &str) -> FailedJob {
    let mut job = readable.unwrap_or_else(|| FailedJob {
        id: r.id.clone(),
        queue: r.queue.clone(),
        job_type: String::new(),
        status: "failed".to_string(),
        created_at: String::new(),
        failed_at_ms: None,
        exc_type: String::new(),
        exc_message: String::new(),
        traceback: String::new(),
        result_id: String::new(),
        retries_left: None,
        failure_ttl_seconds: None,
    });
    job.exc_type.clear();
    job.exc_message.clear();
    job.result_id.clear();
    job.traceback = format!("(unreadable job: {why}; retryguard never requeues it)");
    job
}

/// Builds a `FailedJob` from the job hash fields (`JOB_FIELDS` order) and the newest
/// results-stream entries. `None` when the hash is gone.
pub(super) fn parse_job(r: &JobRef, hash: &Value, results: &Value) -> Option<FailedJob> {
    parse_job_with(r, hash, results, None)
}

/// [`parse_job`], reusing and filling `cache` for what has to be decompressed.
fn parse_job_with(
    r: &JobRef,
    hash: &Value,
    results: &Value,
    cache: Option<&DecodeCache>,
) -> Option<FailedJob> {
    let Value::Array(fields) = hash else {
        return None;
    };
    let field = |i: usize| fields.get(i).and_then(bulk);
    let text = |i: usize| {
        field(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    // HMGET of a missing hash gives all nils: the job is gone.
    let status = String::from_utf8_lossy(field(0)?).into_owned();
    let origin = text(1);
    let created_at = text(4);

    let entries = stream_entries(results);
    let result_id = entries
        .first()
        .map(|(id, _)| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_default();
    // The newest entry that recorded a failure, and its `exc_string`.
    let failure_entry = entries.iter().find_map(|(id, kv)| {
        kv.chunks_exact(2)
            .find(|pair| bulk(&pair[0]) == Some(b"exc_string".as_slice()))
            .map(|pair| (*id, bulk(&pair[1]).unwrap_or_default()))
    });
    // Without a results entry (RQ 1.x layout) the failure is in the hash: not cached.
    let key = failure_entry
        .filter(|_| !result_id.is_empty())
        .map(|(id, _)| {
            (
                r.id.clone(),
                created_at.clone(),
                result_id.clone(),
                String::from_utf8_lossy(id).into_owned(),
            )
        });
    let cached = cache.zip(key.as_ref()).and_then(|(c, k)| c.get(k));
    let decoded = match cached {
        Some(d) => d,
        None => {
            let job_type = field(2)
                .and_then(job_type_from_data)
                .unwrap_or_else(|| text(3));
            let traceback = match failure_entry {
                Some((_, v)) => {
                    exc_string(v).unwrap_or_else(|e| format!("(undecodable exc_string: {e})"))
                }
                None => field(6).and_then(|b| exc_info(b).ok()).unwrap_or_default(),
            };
            let (exc_type, exc_message) =
                match retryguard_policy_default::traceback::parse_outermost(&traceback) {
                    Some(p) => (p.exc_type.to_string(), p.message),
                    None => (String::new(), String::new()),
                };
            let d = Arc::new(DecodedFailure {
                job_type,
                exc_type,
                exc_message,
                traceback,
            });
            if let (Some(c), Some(k)) = (cache, key) {
                c.put(k, Arc::clone(&d));
            }
            d
        }
    };
    Some(FailedJob {
        id: r.id.clone(),
        queue: if origin.is_empty() {
            r.queue.clone()
        } else {
            origin
        },
        job_type: decoded.job_type.clone(),
        status,
        created_at,
        // A stopped job has no `ended_at`: its newest results entry's id (epoch ms) is
        // then the only record of when it ended.
        failed_at_ms: parse_utc(&text(5)).or_else(|| stream_id_ms(&result_id)),
        exc_type: decoded.exc_type.clone(),
        exc_message: decoded.exc_message.clone(),
        traceback: decoded.traceback.clone(),
        result_id,
        retries_left: text(7).parse().ok(),
        failure_ttl_seconds: text(8).parse().ok(),
    })
}

/// The epoch milliseconds of a stream entry id (`<ms>-<seq>`).
pub(super) fn stream_id_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}
