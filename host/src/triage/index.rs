//! The failure index's writes: the reconciler's fenced scripts (`lua/*.lua`) and its lease.
//! Every write is one atomic script that re-checks the failed registry, so whatever the
//! reconciler read a moment ago, the index never counts a job the registry does not hold.
//!
//! The layout (keys in `crate::keyspace`, `TRIAGE_*`; docs/triage.md has the table):
//! per group a hash, its jobs per queue (ZSET, the registry's score), its newest ids, its
//! example failure and its failures per hour; the groups by count and by last failure; the
//! counts per queue × failure type; job id → group.

use std::sync::LazyLock;

use crate::redis_link::Link;

use crate::keyspace;
use crate::redis_error::RedisError;

/// The layout's version: a different one is a different key prefix, built afresh.
pub const INDEX_VERSION: u32 = 1;
/// Newest job ids kept per group.
pub const SAMPLE_SIZE: usize = 10;
/// Most bytes of a group's example traceback kept.
pub const EXAMPLE_TRACEBACK_BYTES: usize = 16 * 1024;
/// Most bytes of a group's example raw message kept.
pub const EXAMPLE_MESSAGE_BYTES: usize = 2 * 1024;

/// The scripts, each with its SHA computed once (`EVALSHA`, and `EVAL` after `NOSCRIPT`).
static ADD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("lua/forget.lua"),
        include_str!("lua/add.lua")
    ))
});
static FORGET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("lua/forget.lua"),
        include_str!("lua/forget_fenced.lua")
    ))
});
static RECLASSIFY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/reclassify.lua")));

/// A group as first seen: the cause and how the bound policy classified it.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub fingerprint: String,
    pub job_type: String,
    pub exc_type: String,
    pub failure_type: String,
    pub retryable: bool,
    pub message: String,
    pub top_frame: String,
    pub policy_digest: String,
    pub broken: bool,
    pub example_job_id: String,
    pub example_message: String,
    pub example_traceback: String,
}

/// A failed job to count in its group.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    /// The queue whose failed registry holds it.
    pub queue: String,
    /// Its score there (RQ: when the failure record expires), as read.
    pub score: f64,
    pub failed_at_ms: u64,
    pub fingerprint: String,
}

/// A job the index counts that the registry may no longer hold.
#[derive(Debug, Clone)]
pub struct Departed {
    pub fingerprint: String,
    pub id: String,
    pub queue: String,
}

/// What a fenced write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// Written; how many jobs it changed.
    Done(u64),
    /// The lease is someone else's: nothing was written.
    LeaseLost,
}

fn fenced(reply: i64) -> Fenced {
    u64::try_from(reply).map_or(Fenced::LeaseLost, Fenced::Done)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Adds `jobs` (creating the `groups` not there yet), fenced by `token`.
pub async fn add(
    conn: &mut Link,
    token: &str,
    now_ms: u64,
    groups: &[NewGroup],
    jobs: &[NewJob],
) -> Result<Fenced, RedisError> {
    let mut script = ADD.prepare_invoke();
    script
        .arg(token)
        .arg(now_ms)
        .arg(groups.len())
        .arg(jobs.len());
    for g in groups {
        script
            .arg(&g.fingerprint)
            .arg(&g.job_type)
            .arg(&g.exc_type)
            .arg(&g.failure_type)
            .arg(u8::from(g.retryable))
            .arg(&g.message)
            .arg(&g.top_frame)
            .arg(&g.policy_digest)
            .arg(u8::from(g.broken))
            .arg(&g.example_job_id)
            .arg(clip(&g.example_message, EXAMPLE_MESSAGE_BYTES))
            .arg(clip(&g.example_traceback, EXAMPLE_TRACEBACK_BYTES));
    }
    for j in jobs {
        script
            .arg(&j.id)
            .arg(&j.queue)
            .arg(score_arg(j.score))
            .arg(j.failed_at_ms)
            .arg(&j.fingerprint);
    }
    let reply: i64 = script.invoke_async(conn).await?;
    Ok(fenced(reply))
}

/// Takes out those of `departed` the registry really no longer holds (re-checked
/// atomically), fenced by `token`.
pub async fn forget(
    conn: &mut Link,
    token: &str,
    now_s: u64,
    departed: &[Departed],
) -> Result<Fenced, RedisError> {
    if departed.is_empty() {
        return Ok(Fenced::Done(0));
    }
    let mut script = FORGET.prepare_invoke();
    script.arg(token).arg(now_s);
    for d in departed {
        script.arg(&d.fingerprint).arg(&d.id).arg(&d.queue);
    }
    let reply: i64 = script.invoke_async(conn).await?;
    Ok(fenced(reply))
}

/// Gives a group a new classification, moving its counts, fenced by `token`.
pub async fn reclassify(
    conn: &mut Link,
    token: &str,
    fingerprint: &str,
    failure_type: &str,
    retryable: bool,
    policy_digest: &str,
    now_ms: u64,
) -> Result<Fenced, RedisError> {
    let reply: i64 = RECLASSIFY
        .arg(token)
        .arg(fingerprint)
        .arg(failure_type)
        .arg(u8::from(retryable))
        .arg(policy_digest)
        .arg(now_ms)
        .invoke_async(conn)
        .await?;
    Ok(fenced(reply))
}

/// A registry score as Redis writes it (`inf` for a failure that never expires).
pub fn score_arg(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{score}")
    }
}

/// Drops hourly counts older than 48 hours from the overall and each group's hours.
pub async fn trim_hours(
    conn: &mut Link,
    fingerprints: &[String],
    now_ms: u64,
) -> Result<(), RedisError> {
    let oldest = now_ms / 3_600_000 - 47;
    let mut keys = vec![keyspace::TRIAGE_HOURS.to_string()];
    keys.extend(
        fingerprints
            .iter()
            .map(|fp| keyspace::triage_group_hours(fp)),
    );
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HKEYS").arg(k);
        }
        let hours: Vec<Vec<String>> = pipe.query_async(conn).await?;
        let mut del = redis::pipe();
        let mut any = false;
        for (k, hs) in chunk.iter().zip(hours) {
            let old: Vec<&String> = hs
                .iter()
                .filter(|h| h.parse::<u64>().is_ok_and(|h| h < oldest))
                .collect();
            if !old.is_empty() {
                del.cmd("HDEL").arg(k).arg(old).ignore();
                any = true;
            }
        }
        if any {
            del.query_async::<()>(conn).await?;
        }
    }
    Ok(())
}

/// Deletes the whole index but its lease (a rebuild), in steps that never block Redis long.
pub async fn clear(conn: &mut Link) -> Result<u64, RedisError> {
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    let pattern = format!("{}*", keyspace::TRIAGE_PREFIX);
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let doomed: Vec<&String> = found
            .iter()
            .filter(|k| k.as_str() != keyspace::TRIAGE_LEASE)
            .collect();
        if !doomed.is_empty() {
            // UNLINK frees big values (the job map) off Redis's main thread.
            let n: u64 = redis::cmd("UNLINK").arg(&doomed).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn scores_are_written_as_redis_reads_them() {
        assert_eq!(score_arg(1_795_953_601.0), "1795953601");
        assert_eq!(score_arg(f64::INFINITY), "inf");
        assert_eq!(score_arg(-1.0), "-1");
        assert_eq!(fenced(-1), Fenced::LeaseLost);
        assert_eq!(fenced(3), Fenced::Done(3));
    }
}
