//! The failure index's reads: groups (filtered, searched, sorted, paged), one group, counts
//! and the index's own state. Each costs O(groups) or less, never O(failed jobs).

use std::collections::{BTreeMap, HashMap};

use crate::redis_link::Link;
use serde::Serialize;

use crate::keyspace;
use crate::queue::rq::{RqBackend, RqKeys};
use crate::queue::{QueueBackend, QueueCounts, QueueError};
use crate::redis_error::RedisError;
use crate::retry::filter::glob_match;

/// Most groups one query reads (in its sort order): past it the answer says `truncated`.
pub const MAX_GROUPS_READ: usize = 20_000;

/// One group of failures sharing a cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Group {
    /// The failure fingerprint (16 hex characters).
    pub fingerprint: String,
    pub job_type: String,
    /// The outermost exception's type (empty for broken jobs).
    pub exc_type: String,
    /// As the bound policy classified the group's first failure.
    pub failure_type: String,
    pub retryable: bool,
    /// Failed jobs in the group now.
    pub count: u64,
    /// The earliest and latest failure seen in the group (RFC 3339, UTC).
    pub first_seen: String,
    pub last_seen: String,
    /// The queues its failed jobs are on, with their counts.
    pub queues: BTreeMap<String, u64>,
    /// Its newest job ids (at most 10).
    pub sample_job_ids: Vec<String>,
    /// The exception message with its variable parts as placeholders.
    pub message: String,
    /// The innermost frame of the application's own code (`module.path:function`).
    pub top_frame: String,
    /// The policy that classified it.
    pub policy_digest: String,
    /// Jobs retryguard cannot read (a key of the wrong type, undecodable data).
    pub broken: bool,
}

/// Which groups, in which order.
#[derive(Debug, Clone, Default)]
pub struct GroupQuery {
    pub queue: Option<String>,
    /// A job-type glob (`*` matches any run of characters).
    pub job_type: Option<String>,
    pub failure_type: Option<String>,
    pub retryable: Option<bool>,
    /// Case-insensitive text in the job type, exception type, message or top frame.
    pub q: Option<String>,
    pub sort: GroupSort,
    pub limit: usize,
    /// After this position (from a previous page's `next_cursor`).
    pub after: Option<GroupCursor>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupSort {
    #[default]
    Count,
    LastSeen,
}

/// A position in a group listing: the sort key and the fingerprint (ties by fingerprint).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCursor {
    pub key: f64,
    pub fingerprint: String,
}

/// One page of groups.
#[derive(Debug, Clone, Default)]
pub struct GroupPage {
    pub groups: Vec<Group>,
    pub next_cursor: Option<GroupCursor>,
    /// Failed jobs the index counts, over every group.
    pub total_jobs: u64,
    /// More groups exist than one query reads ([`MAX_GROUPS_READ`]).
    pub truncated: bool,
}

/// The index's state, as the reconciler last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IndexState {
    pub version: u32,
    /// Whether a first full pass over every queue has completed.
    pub built: bool,
    /// When the last pass ended (epoch ms), and how long it took.
    pub last_pass_ms: Option<u64>,
    pub pass_duration_ms: Option<u64>,
    /// The reconciler instance holding the lease at that pass.
    pub holder: String,
}

/// The counts the index keeps: failed jobs per queue × failure type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub by_queue_and_type: BTreeMap<(String, String), u64>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.by_queue_and_type.values().sum()
    }

    /// Failure type → count, over every queue (adds up to the total).
    pub fn by_type(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((_, t), n) in &self.by_queue_and_type {
            *out.entry(t.clone()).or_default() += n;
        }
        out
    }

    /// Queue → count.
    pub fn by_queue(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((q, _), n) in &self.by_queue_and_type {
            *out.entry(q.clone()).or_default() += n;
        }
        out
    }
}

/// The counts per queue × failure type.
pub async fn counts(conn: &mut Link) -> Result<Counts, RedisError> {
    let raw: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(keyspace::TRIAGE_COUNTS)
        .query_async(conn)
        .await?;
    let mut by_queue_and_type = BTreeMap::new();
    for (k, n) in raw {
        if let (Some((q, t)), Ok(n)) = (k.split_once('\t'), u64::try_from(n))
            && n > 0
        {
            by_queue_and_type.insert((q.to_string(), t.to_string()), n);
        }
    }
    Ok(Counts { by_queue_and_type })
}

/// The index's state.
pub async fn state(conn: &mut Link) -> Result<IndexState, RedisError> {
    let meta: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keyspace::TRIAGE_META)
        .query_async(conn)
        .await?;
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok());
    Ok(IndexState {
        version: num("version")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        built: num("built_ms").is_some(),
        last_pass_ms: num("last_pass_ms"),
        pass_duration_ms: num("pass_duration_ms"),
        holder: meta.get("holder").cloned().unwrap_or_default(),
    })
}

/// Asks the reconciler holding the lease to rebuild the index from scratch.
pub async fn request_rebuild(conn: &mut Link, now_ms: u64) -> Result<(), RedisError> {
    redis::cmd("HSET")
        .arg(keyspace::TRIAGE_META)
        .arg("rebuild_requested_ms")
        .arg(now_ms)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

fn group_of(fingerprint: &str, fields: HashMap<String, String>, sample: Vec<String>) -> Group {
    let text = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let ms = |k: &str| {
        fields
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .map(crate::clock::format_rfc3339)
            .unwrap_or_default()
    };
    let queues = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("q:")?.to_string(), v.parse::<u64>().ok()?)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Group {
        fingerprint: fingerprint.to_string(),
        job_type: text("job_type"),
        exc_type: text("exc_type"),
        failure_type: text("failure_type"),
        retryable: text("retryable") == "1",
        count: fields
            .get("count")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        first_seen: ms("first_seen"),
        last_seen: ms("last_seen"),
        queues,
        sample_job_ids: sample,
        message: text("message"),
        top_frame: text("top_frame"),
        policy_digest: text("policy_digest"),
        broken: text("broken") == "1",
    }
}

impl GroupQuery {
    fn matches(&self, g: &Group) -> bool {
        if self
            .queue
            .as_ref()
            .is_some_and(|q| !g.queues.contains_key(q))
        {
            return false;
        }
        if self
            .job_type
            .as_deref()
            .is_some_and(|p| !glob_match(p, &g.job_type))
        {
            return false;
        }
        if self
            .failure_type
            .as_ref()
            .is_some_and(|t| *t != g.failure_type)
        {
            return false;
        }
        if self.retryable.is_some_and(|r| r != g.retryable) {
            return false;
        }
        if let Some(q) = &self.q {
            let q = q.to_lowercase();
            let hay = [&g.job_type, &g.exc_type, &g.message, &g.top_frame];
            if !hay.iter().any(|h| h.to_lowercase().contains(&q)) {
                return false;
            }
        }
        true
    }
}

/// Reads groups' hashes and samples, in the order given.
async fn read_groups(conn: &mut Link, fingerprints: &[String]) -> Result<Vec<Group>, RedisError> {
    let mut pipe = redis::pipe();
    for fp in fingerprints {
        pipe.cmd("HGETALL").arg(keyspace::triage_group(fp));
        pipe.cmd("LRANGE")
            .arg(keyspace::triage_group_sample(fp))
            .arg(0)
            .arg(-1);
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let mut out = Vec::with_capacity(fingerprints.len());
    for (fp, pair) in fingerprints.iter().zip(replies.chunks(2)) {
        let [fields, sample] = pair else { continue };
        let fields: HashMap<String, String> =
            redis::from_redis_value(fields.clone()).unwrap_or_default();
        if fields.is_empty() {
            continue;
        }
        let sample: Vec<String> = redis::from_redis_value(sample.clone()).unwrap_or_default();
        out.push(group_of(fp, fields, sample));
    }
    Ok(out)
}

/// One page of groups matching `query`.
pub async fn groups(conn: &mut Link, query: &GroupQuery) -> Result<GroupPage, RedisError> {
    let key = match query.sort {
        GroupSort::Count => keyspace::TRIAGE_GROUPS,
        GroupSort::LastSeen => keyspace::TRIAGE_GROUPS_LAST,
    };
    // Highest first; ties by fingerprint, ascending.
    let mut ordered: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(MAX_GROUPS_READ)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let truncated = ordered.len() > MAX_GROUPS_READ;
    ordered.truncate(MAX_GROUPS_READ);
    ordered.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if let Some(c) = &query.after {
        ordered
            .retain(|(fp, s)| *s < c.key || (*s == c.key && fp.as_str() > c.fingerprint.as_str()));
    }
    let counts = counts(conn).await?;
    let limit = query.limit.max(1);
    let mut page = Vec::new();
    let mut last: Option<GroupCursor> = None;
    let mut more = false;
    'chunks: for chunk in ordered.chunks(200) {
        let fps: Vec<String> = chunk.iter().map(|(fp, _)| fp.clone()).collect();
        for g in read_groups(conn, &fps).await? {
            if !query.matches(&g) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break 'chunks;
            }
            let key = chunk
                .iter()
                .find(|(fp, _)| *fp == g.fingerprint)
                .map_or(0.0, |(_, s)| *s);
            last = Some(GroupCursor {
                key,
                fingerprint: g.fingerprint.clone(),
            });
            page.push(g);
        }
    }
    Ok(GroupPage {
        groups: page,
        next_cursor: if more { last } else { None },
        total_jobs: counts.total(),
        truncated,
    })
}

/// One group with its example traceback and its failures per hour over the last 24 hours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: Group,
    /// The job whose failure the example is.
    pub example_job_id: String,
    /// Its raw exception message and traceback (capped at 16 KiB).
    pub example_message: String,
    pub sample_traceback: String,
    /// Failures per hour, oldest first: 24 entries, the last one the current hour.
    pub hourly: Vec<HourCount>,
}

/// Failures in one hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HourCount {
    /// The hour's start (RFC 3339, UTC).
    pub hour: String,
    pub count: u64,
}

/// One group, or `None` when the index does not know it.
pub async fn group(
    conn: &mut Link,
    fingerprint: &str,
    now_ms: u64,
) -> Result<Option<GroupDetail>, RedisError> {
    let Some(group) = read_groups(conn, &[fingerprint.to_string()]).await?.pop() else {
        return Ok(None);
    };
    let (example, hours): (HashMap<String, String>, HashMap<u64, u64>) = redis::pipe()
        .cmd("HGETALL")
        .arg(keyspace::triage_group_example(fingerprint))
        .cmd("HGETALL")
        .arg(keyspace::triage_group_hours(fingerprint))
        .query_async(conn)
        .await?;
    Ok(Some(GroupDetail {
        group,
        example_job_id: example.get("job_id").cloned().unwrap_or_default(),
        example_message: example.get("message").cloned().unwrap_or_default(),
        sample_traceback: example.get("traceback").cloned().unwrap_or_default(),
        hourly: last_24_hours(&hours, now_ms),
    }))
}

/// Failures per hour of each of `fingerprints` for the last 24 hours (oldest first): one
/// pipelined read of their hour hashes (a page's sparklines).
pub async fn groups_hourly(
    conn: &mut Link,
    fingerprints: &[String],
    now_ms: u64,
) -> Result<Vec<Vec<u64>>, RedisError> {
    if fingerprints.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for fp in fingerprints {
        pipe.cmd("HGETALL").arg(keyspace::triage_group_hours(fp));
    }
    let all: Vec<HashMap<u64, u64>> = pipe.query_async(conn).await?;
    Ok(all
        .iter()
        .map(|hours| {
            last_24_hours(hours, now_ms)
                .into_iter()
                .map(|h| h.count)
                .collect()
        })
        .collect())
}

/// Failures per hour, over every group, for the last 24 hours.
pub async fn hourly(conn: &mut Link, now_ms: u64) -> Result<Vec<HourCount>, RedisError> {
    let hours: HashMap<u64, u64> = redis::cmd("HGETALL")
        .arg(keyspace::TRIAGE_HOURS)
        .query_async(conn)
        .await?;
    Ok(last_24_hours(&hours, now_ms))
}

fn last_24_hours(hours: &HashMap<u64, u64>, now_ms: u64) -> Vec<HourCount> {
    let now_hour = now_ms / 3_600_000;
    (0..24)
        .rev()
        .map(|ago| {
            let h = now_hour.saturating_sub(ago);
            HourCount {
                hour: crate::clock::format_rfc3339(h * 3_600_000),
                count: hours.get(&h).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// The queues a group has failed jobs on (the sources of its listing and its retry-all).
pub async fn group_queues(conn: &mut Link, fingerprint: &str) -> Result<Vec<String>, RedisError> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keyspace::triage_group(fingerprint))
        .query_async(conn)
        .await?;
    let mut queues: Vec<String> = fields
        .into_iter()
        .filter_map(|(k, v)| {
            let q = k.strip_prefix("q:")?;
            (v.parse::<i64>().ok()? > 0).then(|| q.to_string())
        })
        .collect();
    queues.sort();
    Ok(queues)
}

/// The queues with failed jobs: those the index knows and those `rq:queues` names. Before
/// any reconciler has run, the keyspace is scanned for failed registries instead.
pub async fn queues(backend: &RqBackend) -> Result<Vec<String>, QueueError> {
    let mut conn = backend.connection();
    let (known, registered): (Vec<String>, Vec<String>) = redis::pipe()
        .cmd("SMEMBERS")
        .arg(keyspace::TRIAGE_QUEUES)
        .cmd("SMEMBERS")
        .arg(RqKeys::QUEUES)
        .query_async(&mut conn)
        .await
        .map_err(|e| QueueError::from(RedisError::from(e)))?;
    if known.is_empty() {
        return backend.failed_queues().await;
    }
    let mut queues: Vec<String> = known
        .into_iter()
        .chain(registered.iter().filter_map(|k| RqKeys::queue_name(k)))
        .collect();
    queues.sort();
    queues.dedup();
    Ok(queues)
}

/// Counts of failed jobs, from the index: no job is read or classified.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Jobs per queue and registry (RQ's own counts).
    pub queues: Vec<QueueCounts>,
    /// The index's counts per queue × failure type.
    pub counts: Counts,
    pub index: IndexState,
    /// Records in the audit outbox, not yet in parquet.
    pub outbox_len: u64,
}

/// The counts `GET /api/v1/jobs/stats` and `/metrics` answer with: O(queues × failure
/// types), whatever the number of failed jobs.
pub async fn stats(backend: &RqBackend) -> Result<Stats, QueueError> {
    let queues = queues(backend).await?;
    let queue_counts = backend.counts(&queues).await?;
    let mut conn = backend.connection();
    let counts = counts(&mut conn).await?;
    let index = state(&mut conn).await?;
    let outbox_len = crate::retry::state::outbox_len(&mut conn).await?;
    Ok(Stats {
        queues: queue_counts,
        counts,
        index,
        outbox_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_24_hours_end_with_the_current_one() {
        let now = 100 * 3_600_000 + 5;
        let hours = HashMap::from([(100, 3), (77, 1), (76, 9)]);
        let h = last_24_hours(&hours, now);
        assert_eq!(h.len(), 24);
        assert_eq!(h[23].count, 3);
        assert_eq!(h[0].count, 1);
        assert_eq!(h.iter().map(|c| c.count).sum::<u64>(), 4);
    }

    #[test]
    fn counts_add_up_by_type_and_by_queue() {
        let c = Counts {
            by_queue_and_type: BTreeMap::from([
                (("a".into(), "timeout".into()), 2),
                (("b".into(), "timeout".into()), 3),
                (("b".into(), "validation".into()), 5),
            ]),
        };
        assert_eq!(c.total(), 10);
        assert_eq!(c.by_type()["timeout"], 5);
        assert_eq!(c.by_queue()["b"], 8);
    }

    #[test]
    fn queries_match_the_group_text_case_insensitively() {
        let g = Group {
            job_type: "app.billing.charge".into(),
            exc_type: "PaymentDeclined".into(),
            message: "card <int> declined".into(),
            queues: BTreeMap::from([("default".into(), 3)]),
            failure_type: "declined".into(),
            ..Group::default()
        };
        let q = |text: &str| GroupQuery {
            q: Some(text.into()),
            ..GroupQuery::default()
        };
        assert!(q("DECLINED").matches(&g));
        assert!(q("billing").matches(&g));
        assert!(!q("timeout").matches(&g));
        let by_queue = GroupQuery {
            queue: Some("other".into()),
            ..GroupQuery::default()
        };
        assert!(!by_queue.matches(&g));
        let by_glob = GroupQuery {
            job_type: Some("app.*".into()),
            failure_type: Some("declined".into()),
            ..GroupQuery::default()
        };
        assert!(by_glob.matches(&g));
    }
}
