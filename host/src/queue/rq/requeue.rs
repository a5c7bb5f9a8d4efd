//! The requeue of one job: the `EVALSHA` of `lua/requeue.lua` and the parsing of its reply
//! (and of the errors Redis answers a pipeline of them with).

use redis::{RedisError, Value};

use super::{RqKeys, redis_error};
use crate::queue::{QueueError, Requeue, RequeueResult};

pub(super) fn requeue_command(hash: &str, r: &Requeue<'_>) -> redis::Cmd {
    let job = r.job;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(hash)
        .arg(9)
        .arg(RqKeys::failed(&job.queue))
        .arg(RqKeys::job(&job.id))
        .arg(RqKeys::results(&job.id))
        .arg(RqKeys::queue(&job.queue))
        .arg(RqKeys::QUEUES)
        .arg(RqKeys::dependents(&job.id))
        .arg(r.state_key)
        .arg(r.outbox_key)
        .arg(r.watch_key)
        .arg(&job.id)
        .arg(&job.queue)
        .arg(&job.result_id)
        .arg(crate::clock::format_rfc3339(r.now_ms))
        .arg(r.operation_id)
        .arg(if r.at_front { "1" } else { "0" })
        .arg(r.state_ttl_seconds.max(1))
        .arg(r.now_ms)
        .arg(&job.created_at)
        .arg(r.first_failed_ms)
        .arg(r.policy_digest)
        .arg(r.reason);
    for (field, value) in r.audit {
        cmd.arg(*field).arg(value);
    }
    cmd
}

/// Whether Redis refused a command because its key holds another type.
pub(super) fn is_wrongtype(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

pub(super) fn is_noscript(reply: &redis::RedisResult<Value>) -> bool {
    matches!(reply, Err(e) if e.code() == Some("NOSCRIPT"))
}

/// Each reply of a requeue pipeline parsed on its own: an error reply (or one that makes no
/// sense) is that job's `Unknown`, never the whole batch's.
pub(super) fn requeue_results(replies: Vec<redis::RedisResult<Value>>) -> Vec<RequeueResult> {
    replies
        .into_iter()
        .map(|reply| {
            reply
                .map_err(redis_error)
                .and_then(parse_requeue_reply)
                .unwrap_or_else(|e| RequeueResult::Unknown { why: e.to_string() })
        })
        .collect()
}

pub(super) fn parse_requeue_reply(reply: Value) -> Result<RequeueResult, QueueError> {
    let parts: Vec<String> =
        redis::from_redis_value(reply).map_err(|e| QueueError::Redis(e.to_string()))?;
    let detail = parts.get(1).cloned().unwrap_or_default();
    match parts.first().map(String::as_str) {
        Some("retried") => Ok(RequeueResult::Retried {
            attempts: detail.parse().unwrap_or(0),
        }),
        Some("already_requeued") => Ok(RequeueResult::AlreadyRequeued),
        Some("stale_decision") => Ok(RequeueResult::Stale { why: detail }),
        Some("not_found") => Ok(RequeueResult::NotFound),
        other => Err(QueueError::Redis(format!(
            "unexpected reply from the requeue script: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> redis::RedisResult<Value> {
        Ok(Value::Array(
            parts
                .iter()
                .map(|p| Value::BulkString(p.as_bytes().to_vec()))
                .collect(),
        ))
    }

    #[test]
    fn one_bad_requeue_reply_is_that_jobs_unknown_only() {
        let error: redis::RedisResult<Value> = Err(RedisError::from(std::io::Error::other(
            "OOM command not allowed when used memory > 'maxmemory'",
        )));
        let results = requeue_results(vec![
            reply(&["retried", "2"]),
            error,
            reply(&["\u{fffd}garbage"]),
            reply(&["stale_decision", "status is \\xff"]),
            reply(&["already_requeued"]),
        ]);
        assert_eq!(results[0], RequeueResult::Retried { attempts: 2 });
        assert!(
            matches!(&results[1], RequeueResult::Unknown { why } if why.contains("OOM")),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(&results[2], RequeueResult::Unknown { .. }),
            "{:?}",
            results[2]
        );
        assert_eq!(
            results[3],
            RequeueResult::Stale {
                why: "status is \\xff".into()
            }
        );
        assert_eq!(results[4], RequeueResult::AlreadyRequeued);
    }
}
