//! The delete of one failed job: its hash kept as an audit blob, then the `EVALSHA` of
//! `lua/delete.lua` (what RQ 2.12's `job.delete()` deletes, re-checked and audited in one
//! atomic step), and the parsing of its reply.

use std::collections::BTreeMap;

use base64::Engine as _;
use redis::Value;
use sha2::{Digest as _, Sha256};

use super::requeue::{is_noscript, is_wrongtype};
use super::{RqBackend, RqKeys, redis_error};
use crate::queue::{Delete, DeleteResult, QueueError};

/// The job hash as a JSON object of its fields, sorted by name: a value that is UTF-8 is a
/// string, any other (RQ's zlib-compressed `data`) is `{"base64": "…"}`.
pub fn hash_json(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut object = BTreeMap::new();
    for (k, v) in fields {
        let value = match std::str::from_utf8(v) {
            Ok(text) => serde_json::Value::String(text.to_string()),
            Err(_) => serde_json::json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(v)
            }),
        };
        object.insert(String::from_utf8_lossy(k).into_owned(), value);
    }
    serde_json::to_string(&object).unwrap_or_default()
}

impl RqBackend {
    /// Deletes each job of `batch` (`QueueBackend::delete`).
    pub(super) async fn delete_batch(
        &self,
        batch: &[Delete<'_>],
    ) -> Result<Vec<DeleteResult>, QueueError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        // The hashes, kept before the records that name them: as the job is now, which the
        // script then finds unchanged in what matters (status, newest result, created_at).
        let mut pipe = redis::pipe();
        for d in batch {
            pipe.cmd("HGETALL").arg(RqKeys::job(&d.job.id));
        }
        let hashes: Vec<redis::RedisResult<Value>> = pipe
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut digests: Vec<Option<String>> = Vec::with_capacity(batch.len());
        let mut stash = redis::pipe();
        let mut stashed = false;
        for (d, reply) in batch.iter().zip(hashes) {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = match reply {
                Ok(v) => redis::from_redis_value(v).unwrap_or_default(),
                // A key of another type: the script refuses the job, nothing to keep.
                Err(e) if is_wrongtype(&e) => Vec::new(),
                Err(e) => return Err(redis_error(e)),
            };
            if fields.is_empty() {
                digests.push(None);
                continue;
            }
            let json = hash_json(&fields);
            let sha = hex::encode(Sha256::digest(json.as_bytes()));
            stash
                .cmd("HSETNX")
                .arg(d.blobs_key)
                .arg(&sha)
                .arg(json)
                .ignore();
            stashed = true;
            digests.push(Some(sha));
        }
        if stashed {
            stash
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        let build = || {
            let mut pipe = redis::pipe();
            for (d, digest) in batch.iter().zip(&digests) {
                pipe.add_command(delete_command(self.delete.get_hash(), d, digest.as_deref()));
            }
            pipe
        };
        let mut replies: Vec<redis::RedisResult<Value>> = build()
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if replies.iter().any(is_noscript) {
            // Redis restarted or flushed its scripts: nothing ran (a NOSCRIPT runs nothing),
            // so load and send again.
            let mut load = self.conn.clone();
            self.delete
                .load_async(&mut load)
                .await
                .map_err(redis_error)?;
            replies = build()
                .ignore_errors()
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        if replies.len() != batch.len() {
            return Err(QueueError::Redis(format!(
                "{} replies to a pipeline of {} deletes",
                replies.len(),
                batch.len()
            )));
        }
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .map_err(redis_error)
                    .and_then(parse_delete_reply)
                    .unwrap_or_else(|e| DeleteResult::Unknown { why: e.to_string() })
            })
            .collect())
    }
}

fn delete_command(hash: &str, d: &Delete<'_>, job_blob: Option<&str>) -> redis::Cmd {
    let job = d.job;
    let mut cmd = redis::cmd("EVALSHA");
    let blob_pair = usize::from(job_blob.is_some()) * 2;
    cmd.arg(hash)
        .arg(8)
        .arg(RqKeys::failed(&job.queue))
        .arg(RqKeys::job(&job.id))
        .arg(RqKeys::results(&job.id))
        .arg(RqKeys::queue(&job.queue))
        .arg(RqKeys::dependents(&job.id))
        .arg(RqKeys::executions(&job.id))
        .arg(d.outbox_key)
        .arg(d.state_key)
        .arg(&job.id)
        .arg(&job.queue)
        .arg(&job.result_id)
        .arg(&job.created_at)
        .arg(if d.delete_dependents { "1" } else { "0" })
        .arg(d.reason)
        .arg(d.audit.len() * 2 + blob_pair);
    for (field, value) in d.audit {
        cmd.arg(*field).arg(value);
    }
    if let Some(sha) = job_blob {
        cmd.arg("job_blob_sha256").arg(sha);
    }
    for (field, value) in d.dependent_audit {
        cmd.arg(*field).arg(value);
    }
    cmd
}

fn parse_delete_reply(reply: Value) -> Result<DeleteResult, QueueError> {
    let parts: Vec<String> =
        redis::from_redis_value(reply).map_err(|e| QueueError::Redis(e.to_string()))?;
    let detail = parts.get(1).cloned().unwrap_or_default();
    match parts.first().map(String::as_str) {
        Some("deleted") => Ok(DeleteResult::Deleted {
            dependents: detail.parse().unwrap_or(0),
        }),
        Some("already_requeued") => Ok(DeleteResult::AlreadyRequeued),
        Some("stale_decision") => Ok(DeleteResult::Stale { why: detail }),
        Some("not_found") => Ok(DeleteResult::NotFound),
        other => Err(QueueError::Redis(format!(
            "unexpected reply from the delete script: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_kept_as_sorted_json_with_binary_values_in_base64() {
        let json = hash_json(&[
            (b"status".to_vec(), b"failed".to_vec()),
            (b"data".to_vec(), vec![0x78, 0x9c, 0xff]),
        ]);
        assert_eq!(json, r#"{"data":{"base64":"eJz/"},"status":"failed"}"#);
    }

    #[test]
    fn replies_are_parsed_and_odd_ones_refused() {
        let reply = |parts: &[&str]| {
            Value::Array(
                parts
                    .iter()
                    .map(|p| Value::BulkString(p.as_bytes().to_vec()))
                    .collect(),
            )
        };
        assert_eq!(
            parse_delete_reply(reply(&["deleted", "2"])).unwrap(),
            DeleteResult::Deleted { dependents: 2 }
        );
        assert_eq!(
            parse_delete_reply(reply(&["stale_decision", "status is queued"])).unwrap(),
            DeleteResult::Stale {
                why: "status is queued".into()
            }
        );
        assert!(parse_delete_reply(reply(&["retried", "1"])).is_err());
    }
}
