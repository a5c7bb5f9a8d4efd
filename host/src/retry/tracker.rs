//! Outcome tracking: what became of each job retryguard requeued.
//!
//! The requeue script adds the job to `retryguard:outcomes:watch` (score: when it was
//! requeued). The tracker looks at the watched jobs' RQ status and, once a job has finished
//! (`succeeded`), failed again (`failed_again`) or vanished (`lost`), records that outcome
//! with a script that removes the job from the watch set and appends the record in one step
//! — so with several instances tracking, each outcome is recorded once.

use std::time::Duration;

use crate::redis_link::Link;
use tokio::sync::watch;

use crate::audit::{NewRecord, Verdict};
use crate::brake;
use crate::clock::now_ms;
use crate::clock::parse_utc;
use crate::keyspace;
use crate::queue::rq::RqKeys;
use crate::registry::Table;

/// Jobs looked at per turn.
const BATCH: usize = 1000;

/// Records one outcome if the job is still watched for the same requeue.
/// KEYS[1] watch, KEYS[2] outbox; ARGV[1] job id, ARGV[2] the requeue's score as read,
/// ARGV[3] the encoded record (`NewRecord::encoded`).
const RECORD_LUA: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or score ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
return 1
"#;

/// What became of a requeued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    Succeeded,
    FailedAgain,
    Lost,
}

impl RetryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::FailedAgain => "failed_again",
            Self::Lost => "lost",
        }
    }
}

/// Decides a watched job's outcome from its RQ status, or `None` while it has none yet.
/// `job_created_at` is the job hash's, `state_created_at` the one retryguard requeued.
pub fn outcome_of(
    status: Option<&str>,
    job_created_at: Option<&str>,
    state_created_at: Option<&str>,
) -> Option<(RetryOutcome, &'static str)> {
    let Some(status) = status else {
        return Some((RetryOutcome::Lost, "the job hash is gone"));
    };
    if let (Some(job), Some(state)) = (job_created_at, state_created_at)
        && job != state
    {
        return Some((RetryOutcome::Lost, "the job id now belongs to another job"));
    }
    match status {
        "finished" => Some((RetryOutcome::Succeeded, "")),
        "failed" | "stopped" => Some((RetryOutcome::FailedAgain, "it failed again")),
        "canceled" => Some((RetryOutcome::Lost, "the job was canceled")),
        _ => None,
    }
}

/// Pages looked at per turn (so one turn stays bounded however large the backlog).
const MAX_PAGES: usize = 50;

/// Where the tracker finds the bindings (their breakers and budgets, which the outcomes feed).
pub type Tables = std::sync::Arc<dyn Fn() -> std::sync::Arc<Table> + Send + Sync>;

/// Looks at every watched job once (up to `MAX_PAGES` pages); returns the outcomes recorded.
pub async fn track_once(conn: &mut Link) -> Result<usize, redis::RedisError> {
    track_with(conn, None).await
}

/// [`track_once`], feeding each outcome to its binding's breaker and budget in `tables`.
pub async fn track_with(
    conn: &mut Link,
    tables: Option<&Tables>,
) -> Result<usize, redis::RedisError> {
    let table = tables.map(|t| t());
    let mut recorded = 0;
    let mut offset = 0;
    for _ in 0..MAX_PAGES {
        let (seen, n) = track_page(conn, offset, table.as_deref()).await?;
        recorded += n;
        if seen < BATCH {
            break;
        }
        // Recorded jobs left the set: the next page starts that much earlier.
        offset += seen - n;
    }
    Ok(recorded)
}

/// One page of the watch set, from rank `offset`: (jobs looked at, outcomes recorded).
async fn track_page(
    conn: &mut Link,
    offset: usize,
    table: Option<&Table>,
) -> Result<(usize, usize), redis::RedisError> {
    let watched: Vec<(String, String)> = redis::cmd("ZRANGE")
        .arg(keyspace::OUTCOMES_WATCH)
        .arg(offset)
        .arg(offset + BATCH - 1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    if watched.is_empty() {
        return Ok((0, 0));
    }
    let mut pipe = redis::pipe();
    for (id, _) in &watched {
        pipe.cmd("HMGET")
            .arg(RqKeys::job(id))
            .arg(&["status", "created_at", "ended_at"]);
        pipe.cmd("HMGET").arg(keyspace::job_state(id)).arg(&[
            "created_at",
            "attempts",
            "policy_digest",
            "job_type",
            "queue",
            "failure_type",
            "last_operation",
            "retry_reason",
        ]);
    }
    let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
    let now = now_ms();
    let script = redis::Script::new(RECORD_LUA);
    let mut record_pipe = redis::pipe();
    let mut decided = 0;
    let mut kinds: Vec<&'static str> = Vec::new();
    // (job id, job type, failure type, succeeded) of each outcome, for the brakes.
    let mut fed: Vec<(&str, Option<String>, Option<String>, bool)> = Vec::new();
    for ((id, score), pair) in watched.iter().zip(rows.chunks(2)) {
        let (Some(job), Some(state)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let get = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten();
        let Some((outcome, why)) = outcome_of(
            get(job, 0).as_deref(),
            get(job, 1).as_deref(),
            get(state, 0).as_deref(),
        ) else {
            continue;
        };
        let requeued_ms = score.parse::<f64>().map(|s| s as u64).unwrap_or(now);
        let ended_ms = get(job, 2)
            .and_then(|t| parse_utc(&t))
            .filter(|t| *t >= requeued_ms)
            .unwrap_or(now);
        let from_state = |i: usize| get(state, i).filter(|v| !v.is_empty());
        let record = NewRecord {
            actor: "retryguard".into(),
            verdict: Some(Verdict {
                decision: outcome.as_str().into(),
                success: Some(outcome == RetryOutcome::Succeeded),
                error_message: (!why.is_empty()).then(|| why.to_string()),
                attempt_number: from_state(1).and_then(|a| a.parse().ok()),
            }),
            job_id: Some(id.clone()),
            policy_digest: from_state(2),
            job_type: from_state(3),
            queue: from_state(4),
            failure_type: from_state(5),
            operation_id: from_state(6),
            retry_reason: from_state(7),
            time_to_outcome_ms: Some(ended_ms.saturating_sub(requeued_ms)),
            now_ms: Some(now),
            ..NewRecord::default()
        };
        let mut invocation = script.key(keyspace::OUTCOMES_WATCH);
        invocation
            .key(keyspace::AUDIT_OUTBOX)
            .arg(id)
            .arg(score)
            .arg(record.encoded());
        record_pipe.invoke_script(&invocation);
        decided += 1;
        kinds.push(outcome.as_str());
        // A lost job tells nothing of its dependency: no breaker or budget hears of it.
        let job_type = from_state(3).filter(|_| outcome != RetryOutcome::Lost);
        fed.push((
            id.as_str(),
            job_type,
            from_state(5),
            outcome == RetryOutcome::Succeeded,
        ));
    }
    if decided == 0 {
        return Ok((watched.len(), 0));
    }
    // The pipeline sends EVALSHA: make sure Redis has the script (it may have restarted).
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RECORD_LUA)
        .query_async::<String>(conn)
        .await?;
    let recorded: Vec<i64> = record_pipe.query_async(conn).await?;
    for (kind, r) in kinds.iter().zip(&recorded) {
        if *r == 1 {
            crate::metrics::global().retry_result(kind, 1);
        }
    }
    if let Some(table) = table {
        // Only the outcomes this instance recorded (each outcome is recorded once).
        let fed: Vec<_> = fed
            .into_iter()
            .zip(&recorded)
            .filter(|(_, r)| **r == 1)
            .map(|(f, _)| f)
            .collect();
        if let Err(e) = feed_brakes(conn, table, &fed, now).await {
            // The outcome is recorded; a breaker that misses it judges on the others.
            tracing::warn!(error = %e, "could not feed retry outcomes to the circuit breakers");
        }
    }
    Ok((watched.len(), recorded.iter().filter(|r| **r == 1).count()))
}

/// Feeds recorded outcomes to their bindings' breakers (succeeded and failed again) and
/// budgets (succeeded).
async fn feed_brakes(
    conn: &mut Link,
    table: &Table,
    fed: &[(&str, Option<String>, Option<String>, bool)],
    now: u64,
) -> Result<(), crate::redis_error::RedisError> {
    let mut outcomes = Vec::new();
    let mut successes: std::collections::BTreeMap<&str, u64> = Default::default();
    for (id, job_type, failure_type, succeeded) in fed {
        let Some(job_type) = job_type else { continue };
        let binding = table.resolve(job_type);
        if let (Some(config), Some(ft)) = (binding.brakes.breaker, failure_type) {
            outcomes.push(brake::state::Outcome {
                key: brake::breaker_key(&binding.pattern, ft),
                pattern: &binding.pattern,
                failure_type: ft,
                config,
                succeeded: *succeeded,
                job_id: id,
            });
        }
        if binding.brakes.budget.is_some() && *succeeded {
            *successes.entry(binding.pattern.as_str()).or_default() += 1;
        }
    }
    let transitions = brake::state::record_outcomes(conn, &outcomes, now).await?;
    super::brakes::meter(&transitions);
    let successes: Vec<(&str, u64)> = successes.into_iter().collect();
    brake::state::count_successes(conn, &successes, now).await
}

/// Tracks outcomes every `interval` until `shutdown`, feeding the brakes of `tables`.
pub async fn run(
    mut conn: Link,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    tables: Option<Tables>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = track_with(&mut conn, tables.as_ref()).await {
            tracing::warn!(error = %e, "outcome tracking failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_rq_status() {
        let o = |s, j, st| outcome_of(s, j, st).map(|(o, _)| o);
        assert_eq!(
            o(Some("finished"), Some("a"), Some("a")),
            Some(RetryOutcome::Succeeded)
        );
        assert_eq!(
            o(Some("failed"), Some("a"), Some("a")),
            Some(RetryOutcome::FailedAgain)
        );
        assert_eq!(
            o(Some("stopped"), None, None),
            Some(RetryOutcome::FailedAgain)
        );
        assert_eq!(o(None, None, Some("a")), Some(RetryOutcome::Lost));
        assert_eq!(
            o(Some("queued"), Some("b"), Some("a")),
            Some(RetryOutcome::Lost)
        );
        assert_eq!(o(Some("queued"), Some("a"), Some("a")), None);
        assert_eq!(o(Some("started"), Some("a"), Some("a")), None);
    }
}
