//! Today's retry metrics (`"retries"` of `GET /api/v1/jobs/stats`), from today's partition
//! and the records of today still in the outbox.
//!
//! "Today" is the UTC date of `now`. Dry runs are counted apart (`dry_run_decisions`) and in
//! no metric. The five key metrics:
//!
//! - `retries_today`: decisions `retried`;
//! - `blocked_cooldown`, `blocked_max_attempts`: decisions of those names;
//! - `non_retryable_rate`: `blocked_non_retryable` over every decision about a job (not an
//!   `operation_*` record, not an outcome record);
//! - `retry_success_rate`: `succeeded` over `succeeded + failed_again + lost`, the outcome
//!   records of retries (recorded when a retried job later finishes or fails again).
//!
//! The success rate is also grouped by `job_type`, `failure_type` and `policy_digest` (each
//! group from the columns of its `retried` and outcome records); a rate is `null` while
//! there is no outcome. Files are read through a projection of five columns and their
//! tallies cached by path (finished files never change), so only new files are read.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::redis_link::Link;
use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use serde::Serialize;

use crate::audit::AuditStore;
use crate::audit::files::{Part, Written};
use crate::audit::query::{self, DAY_MS, Direction, QueryError};
use crate::audit::schema::{self, AuditRecord, StreamId};
use crate::retry::Outcome;

/// The decisions of outcome records.
pub const OUTCOMES: [&str; 3] = ["succeeded", "failed_again", "lost"];
/// The columns the stats read.
const COLUMNS: [&str; 6] = [
    "timestamp",
    "decision",
    "dry_run_flag",
    "job_type",
    "failure_type",
    "policy_digest",
];
/// Most file tallies kept (they are small; a day has at most a few hundred files).
const CACHE_FILES: usize = 4096;

/// Today's retry metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetryStats {
    /// The UTC date counted (`YYYY-MM-DD`).
    pub date: String,
    pub retries_today: u64,
    pub blocked_cooldown: u64,
    pub blocked_max_attempts: u64,
    /// `null` before the first decision of the day.
    pub non_retryable_rate: Option<f64>,
    /// `null` before the first outcome of the day.
    pub retry_success_rate: Option<f64>,
    /// Every decision (not dry run), zeros included for the known ones.
    pub decisions: BTreeMap<String, u64>,
    /// Decisions of dry runs.
    pub dry_run_decisions: BTreeMap<String, u64>,
    pub by_job_type: Vec<GroupStats>,
    pub by_failure_type: Vec<GroupStats>,
    pub by_policy_digest: Vec<GroupStats>,
}

/// Retries and their outcomes in one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupStats {
    /// The group's value (`null`: records without one).
    pub value: Option<String>,
    pub retried: u64,
    pub succeeded: u64,
    pub failed_again: u64,
    pub lost: u64,
    /// `null` while there is no outcome.
    pub success_rate: Option<f64>,
}

/// Today's metrics: the outbox first, then today's files (the order `query` explains).
pub async fn retry_stats(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    now_ms: u64,
) -> Result<RetryStats, QueryError> {
    let date = schema::date_of_ms(now_ms);
    let start = schema::ms_of_date(&date).unwrap_or(0);
    let pending = outbox_records(conn, start, start + DAY_MS).await?;
    let (dir, day) = (Arc::clone(dir), date.clone());
    let (written, mut tally) = query::blocking(move || tally_files(&dir, &day)).await?;
    tally.add_outbox(&pending, &written);
    Ok(tally.finish(date))
}

const HOUR_MS: u64 = 3_600_000;

/// The outbox's records with ids in `[from_ms, to_ms)`, oldest first.
async fn outbox_records(
    conn: &mut Link,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(StreamId, AuditRecord)>, QueryError> {
    let (lo, hi) = (
        StreamId {
            ms: from_ms,
            seq: 0,
        },
        StreamId { ms: to_ms, seq: 0 },
    );
    let mut pending = Vec::new();
    query::scan_outbox(conn, lo, Some(hi), Direction::OldestFirst, |e| {
        if let (Some(id), Some(fields)) = (e.id, e.fields) {
            pending.push((id, AuditRecord::from_owned_entry(id, fields)));
        }
        true
    })
    .await?;
    Ok(pending)
}

/// Retries (decisions `retried`, not dry runs) in each of the 24 hours up to `now_ms`'s,
/// oldest first: yesterday's and today's partitions (tallies cached per file) and the
/// outbox of those days.
pub async fn retries_by_hour(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    now_ms: u64,
) -> Result<Vec<u64>, QueryError> {
    let now_hour = now_ms / HOUR_MS;
    let since = (now_hour.saturating_sub(23)) * HOUR_MS;
    let pending = outbox_records(conn, since, (now_hour + 1) * HOUR_MS).await?;
    let days = [schema::date_of_ms(since), schema::date_of_ms(now_ms)];
    let dir = Arc::clone(dir);
    let (written, mut tally) = query::blocking(move || {
        query::retry_vanished(|| {
            let mut written = Written::default();
            let mut tally = Tally::default();
            for (i, day) in days.iter().enumerate() {
                if i > 0 && days[i - 1] == *day {
                    continue;
                }
                for p in &dir.parts_of(day)? {
                    written.insert(p.first, p.last);
                    tally.merge(file_tally(&dir, p)?.as_ref());
                }
            }
            Ok((written, tally))
        })
    })
    .await?;
    tally.add_outbox(&pending, &written);
    Ok((0..24)
        .map(|i| {
            let hour = now_hour.saturating_sub(23 - i);
            tally.retried_hours.get(&hour).copied().unwrap_or(0)
        })
        .collect())
}

/// Counts of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    retried: u64,
    succeeded: u64,
    failed_again: u64,
    lost: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.retried += o.retried;
        self.succeeded += o.succeeded;
        self.failed_again += o.failed_again;
        self.lost += o.lost;
    }
}

/// What a set of records adds up to; tallies of files and of the outbox are summed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    decisions: HashMap<String, u64>,
    dry_run: HashMap<String, u64>,
    /// By job type, failure type, policy digest.
    groups: [HashMap<Option<String>, Counts>; 3],
    /// Retries (`retried`, not dry run) per hour since the epoch.
    retried_hours: HashMap<u64, u64>,
}

impl Tally {
    fn add(&mut self, decision: &str, dry_run: bool, keys: [Option<&str>; 3], ms: u64) {
        let counts = if dry_run {
            &mut self.dry_run
        } else {
            &mut self.decisions
        };
        match counts.get_mut(decision) {
            Some(n) => *n += 1,
            None => {
                counts.insert(decision.to_string(), 1);
            }
        }
        if dry_run {
            return;
        }
        let bump = |c: &mut Counts| match decision {
            "retried" => c.retried += 1,
            "succeeded" => c.succeeded += 1,
            "failed_again" => c.failed_again += 1,
            "lost" => c.lost += 1,
            _ => {}
        };
        if decision == "retried" {
            *self.retried_hours.entry(ms / HOUR_MS).or_default() += 1;
        }
        if decision != "retried" && !OUTCOMES.contains(&decision) {
            return;
        }
        for (group, key) in self.groups.iter_mut().zip(keys) {
            bump(group.entry(key.map(str::to_string)).or_default());
        }
    }

    fn add_record(&mut self, r: &AuditRecord) {
        self.add(
            &r.decision,
            r.dry_run_flag,
            [
                r.job_type.as_deref(),
                r.failure_type.as_deref(),
                r.policy_digest.as_deref(),
            ],
            u64::try_from(r.timestamp_us / 1000).unwrap_or(0),
        );
    }

    /// The outbox entries no listed file covers.
    fn add_outbox(&mut self, pending: &[(StreamId, AuditRecord)], written: &Written) {
        for (id, r) in pending {
            if !written.contains(*id) {
                self.add_record(r);
            }
        }
    }

    fn merge(&mut self, o: &Tally) {
        for (d, n) in &o.decisions {
            *self.decisions.entry(d.clone()).or_default() += n;
        }
        for (d, n) in &o.dry_run {
            *self.dry_run.entry(d.clone()).or_default() += n;
        }
        for (mine, theirs) in self.groups.iter_mut().zip(&o.groups) {
            for (k, c) in theirs {
                mine.entry(k.clone()).or_default().add(c);
            }
        }
        for (h, n) in &o.retried_hours {
            *self.retried_hours.entry(*h).or_default() += n;
        }
    }

    /// Adds a batch of the projected columns.
    fn add_batch(&mut self, batch: &RecordBatch) -> io::Result<()> {
        let strings = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| io::Error::other(format!("audit file without column {name}")))
        };
        let decision = strings("decision")?;
        let dry_run = batch
            .column_by_name("dry_run_flag")
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
            .ok_or_else(|| io::Error::other("audit file without column dry_run_flag"))?;
        let time = batch
            .column_by_name("timestamp")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| io::Error::other("audit file without column timestamp"))?;
        let keys = [
            strings("job_type")?,
            strings("failure_type")?,
            strings("policy_digest")?,
        ];
        for i in 0..batch.num_rows() {
            self.add(
                decision.value(i),
                dry_run.is_valid(i) && dry_run.value(i),
                keys.map(|a| a.is_valid(i).then(|| a.value(i))),
                u64::try_from(time.value(i) / 1000).unwrap_or(0),
            );
        }
        Ok(())
    }

    fn finish(self, date: String) -> RetryStats {
        let n = |d: &str| self.decisions.get(d).copied().unwrap_or(0);
        let about_jobs: u64 = self
            .decisions
            .iter()
            .filter(|(d, _)| !d.starts_with("operation_") && !OUTCOMES.contains(&d.as_str()))
            .map(|(_, n)| n)
            .sum();
        let (succeeded, failed_again, lost) = (n("succeeded"), n("failed_again"), n("lost"));
        let mut decisions: BTreeMap<String, u64> = Outcome::ALL
            .iter()
            .map(|o| o.as_str())
            .chain(OUTCOMES)
            .map(|d| (d.to_string(), 0))
            .collect();
        decisions.extend(self.decisions.iter().map(|(d, n)| (d.clone(), *n)));
        let [by_job_type, by_failure_type, by_policy_digest] = self.groups.map(groups);
        RetryStats {
            date,
            retries_today: n("retried"),
            blocked_cooldown: n("blocked_cooldown"),
            blocked_max_attempts: n("blocked_max_attempts"),
            non_retryable_rate: ratio(n("blocked_non_retryable"), about_jobs),
            retry_success_rate: ratio(succeeded, succeeded + failed_again + lost),
            decisions,
            dry_run_decisions: self.dry_run.into_iter().collect(),
            by_job_type,
            by_failure_type,
            by_policy_digest,
        }
    }
}

fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Groups in value order (`null` first).
fn groups(map: HashMap<Option<String>, Counts>) -> Vec<GroupStats> {
    let sorted: BTreeMap<Option<String>, Counts> = map.into_iter().collect();
    sorted
        .into_iter()
        .map(|(value, c)| GroupStats {
            value,
            retried: c.retried,
            succeeded: c.succeeded,
            failed_again: c.failed_again,
            lost: c.lost,
            success_rate: ratio(c.succeeded, c.succeeded + c.failed_again + c.lost),
        })
        .collect()
}

/// Sums the files of one partition (cached per file), and their ranges.
fn tally_files(dir: &AuditStore, date: &str) -> io::Result<(Written, Tally)> {
    query::retry_vanished(|| {
        let parts = dir.parts_of(date)?;
        let mut written = Written::default();
        let mut tally = Tally::default();
        for p in &parts {
            written.insert(p.first, p.last);
            tally.merge(file_tally(dir, p)?.as_ref());
        }
        Ok((written, tally))
    })
}

fn file_tally(dir: &AuditStore, part: &Part) -> io::Result<Arc<Tally>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Tally>>>> = OnceLock::new();
    let path = part.path.as_path();
    let cache = CACHE.get_or_init(Mutex::default);
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(t) = lock().get(path) {
        return Ok(Arc::clone(t));
    }
    let mut tally = Tally::default();
    query::scan_columns(dir, part, &COLUMNS, |batch| tally.add_batch(batch))?;
    let tally = Arc::new(tally);
    let mut cache = lock();
    if cache.len() >= CACHE_FILES {
        cache.clear();
    }
    cache.insert(path.to_path_buf(), Arc::clone(&tally));
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ms: u64, seq: u64, pairs: &[(&str, &str)]) -> AuditRecord {
        let fields: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuditRecord::from_entry(StreamId { ms, seq }, &fields)
    }

    fn decision(ms: u64, d: &str, job_type: &str, failure: &str, dry: bool) -> AuditRecord {
        record(
            ms,
            0,
            &[
                ("decision", d),
                ("job_type", job_type),
                ("failure_type", failure),
                ("policy_digest", "sha256:aa"),
                ("dry_run_flag", if dry { "true" } else { "false" }),
            ],
        )
    }

    /// Today: 4 retried (one dry run), 1 cooldown, 1 max attempts, 2 non-retryable, an
    /// operation's two records, and outcomes 2 succeeded, 1 failed again, 1 lost.
    fn today(t: u64) -> Vec<AuditRecord> {
        vec![
            decision(t, "retried", "charge", "network_error", false),
            decision(t + 1, "retried", "charge", "network_error", false),
            decision(t + 2, "retried", "email", "timeout", false),
            decision(t + 3, "retried", "email", "timeout", true),
            decision(t + 4, "blocked_cooldown", "charge", "network_error", false),
            decision(
                t + 5,
                "blocked_max_attempts",
                "charge",
                "network_error",
                false,
            ),
            decision(
                t + 6,
                "blocked_non_retryable",
                "charge",
                "validation_error",
                false,
            ),
            decision(
                t + 7,
                "blocked_non_retryable",
                "charge",
                "validation_error",
                false,
            ),
            record(t + 8, 0, &[("decision", "operation_started")]),
            record(t + 9, 0, &[("decision", "operation_finished")]),
            decision(t + 10, "succeeded", "charge", "network_error", false),
            decision(t + 11, "succeeded", "email", "timeout", false),
            decision(t + 12, "failed_again", "charge", "network_error", false),
            record(t + 13, 0, &[("decision", "lost")]),
        ]
    }

    fn check(s: &RetryStats) {
        assert_eq!(s.retries_today, 3);
        assert_eq!(s.blocked_cooldown, 1);
        assert_eq!(s.blocked_max_attempts, 1);
        // 2 non-retryable of 7 decisions about jobs.
        assert_eq!(s.non_retryable_rate, Some(2.0 / 7.0));
        assert_eq!(s.retry_success_rate, Some(0.5));
        assert_eq!(s.decisions["retried"], 3);
        assert_eq!(s.decisions["stale_decision"], 0);
        assert_eq!(s.decisions["operation_started"], 1);
        assert_eq!(s.dry_run_decisions["retried"], 1);
        let charge = s
            .by_job_type
            .iter()
            .find(|g| g.value.as_deref() == Some("charge"))
            .unwrap();
        assert_eq!(
            (charge.retried, charge.succeeded, charge.failed_again),
            (2, 1, 1)
        );
        assert_eq!(charge.success_rate, Some(0.5));
        let none = s.by_job_type.iter().find(|g| g.value.is_none()).unwrap();
        assert_eq!((none.lost, none.success_rate), (1, Some(0.0)));
        let timeout = s
            .by_failure_type
            .iter()
            .find(|g| g.value.as_deref() == Some("timeout"))
            .unwrap();
        assert_eq!((timeout.retried, timeout.succeeded), (1, 1));
        assert_eq!(timeout.success_rate, Some(1.0));
        assert_eq!(s.by_policy_digest[0].value, None);
        assert_eq!(s.by_policy_digest[1].value.as_deref(), Some("sha256:aa"));
    }

    #[test]
    fn metrics_of_today_from_files_and_outbox() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let t = schema::ms_of_date("2026-11-30").unwrap() + 3_600_000;
        let records = today(t);
        // Yesterday's records are not counted.
        let yesterday = vec![decision(
            t - DAY_MS,
            "retried",
            "charge",
            "network_error",
            false,
        )];
        dir.write_part("2026-11-29", &yesterday, &|| true).unwrap();
        // Files hold the first 10; the outbox holds 8.. (8 and 9 both places).
        dir.write_part("2026-11-30", &records[..5], &|| true)
            .unwrap();
        dir.write_part("2026-11-30", &records[5..10], &|| true)
            .unwrap();
        let pending: Vec<(StreamId, AuditRecord)> = records[8..]
            .iter()
            .map(|r| (StreamId::parse(&r.record_id).unwrap(), r.clone()))
            .collect();
        for _ in 0..2 {
            // The second round reads the cached file tallies.
            let (written, mut tally) = tally_files(&dir, "2026-11-30").unwrap();
            tally.add_outbox(&pending, &written);
            let s = tally.finish("2026-11-30".into());
            check(&s);
        }
        // A compaction changes nothing.
        dir.compact("2026-11-30").unwrap();
        let (written, mut tally) = tally_files(&dir, "2026-11-30").unwrap();
        tally.add_outbox(&pending, &written);
        check(&tally.finish("2026-11-30".into()));
    }

    #[test]
    fn an_empty_day_has_no_rates() {
        let s = Tally::default().finish("2026-11-30".into());
        assert_eq!(s.retries_today, 0);
        assert_eq!(s.non_retryable_rate, None);
        assert_eq!(s.retry_success_rate, None);
        assert!(s.by_job_type.is_empty());
        assert_eq!(s.decisions["retried"], 0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["retry_success_rate"], serde_json::Value::Null);
    }
}
