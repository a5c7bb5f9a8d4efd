//! Queries over the audit trail (`GET /api/v1/jobs/retry-audit`): the parquet files and the
//! records still waiting in the outbox stream, merged, newest first, paged by record id.
//!
//! Every record is in exactly one of two places — a finished file or the outbox — except for
//! the moment between the writer's rename and its `XDEL`, when it is in both. So a query
//! reads the **outbox first** and lists the files **after**: an entry that moves in between
//! is then seen in the files (and maybe in the outbox too), never in neither; an outbox entry
//! whose id a listed file's name covers is dropped, the file copy is the one kept.
//!
//! Order and paging: records are ordered by record id (the stream id `<ms>-<seq>`, whose ms
//! is the record's timestamp); a page is the newest `limit` matches below the cursor, and the
//! cursor is the last record id returned. New records always get larger ids, so paging
//! returns each record exactly once.
//!
//! Pruning, cheapest first: partitions outside `[since, until)` by the date in their name;
//! files whose id range (in the name) is outside the range or after the cursor; row groups by
//! the min/max statistics of `timestamp` and of the filtered string columns, and, for a job
//! id, by the bloom filter on `job_id`. Files are walked newest first and disjoint, so the
//! walk stops once it has enough. A file is read in two passes: the record ids and filtered
//! columns of the surviving row groups, then every column of the matching rows only (a row
//! selection, which the page index turns into skipped pages). File metadata and bloom
//! filters are cached by path (`FileInfo`): a finished file never changes, a compaction
//! writes a new name.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::redis_link::Link;

use super::files::{Part, Written};
use super::schema::{self, AuditRecord, StreamId};
use super::store::AuditStore;
use super::writer::Entry;
use crate::redis_error::RedisError;

mod outbox;
mod scan;

pub use outbox::{Direction, scan_outbox};
pub use scan::scan_columns;
use scan::search_files;

/// Records a page returns when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most records one page returns.
pub const MAX_LIMIT: usize = 1000;
/// Longest cursor accepted (a stream id is at most 41 bytes).
const MAX_CURSOR_BYTES: usize = 64;
/// Milliseconds in a day (a partition).
pub const DAY_MS: u64 = 86_400_000;

/// A query: every filter is an exact match, all of them must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub job_id: Option<String>,
    /// Inclusive, epoch ms.
    pub since_ms: Option<u64>,
    /// Exclusive, epoch ms.
    pub until_ms: Option<u64>,
    /// `user_or_system`.
    pub actor: Option<String>,
    pub decision: Option<String>,
    pub failure_type: Option<String>,
    pub operation_id: Option<String>,
    /// Only dry-run records (`true`) or only real ones (`false`).
    pub dry_run: Option<bool>,
    /// 1..=`MAX_LIMIT` (larger is capped).
    pub limit: usize,
    /// The `next_cursor` of the previous page: its last record id.
    pub cursor: Option<String>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            job_id: None,
            since_ms: None,
            until_ms: None,
            actor: None,
            decision: None,
            failure_type: None,
            operation_id: None,
            dry_run: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// One page of records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryPage {
    pub records: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cursor is not one this API returned (pass next_cursor unchanged)")]
    InvalidCursor,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("audit files: {0}")]
    Io(#[from] io::Error),
}

/// Reads a cursor: a record id `<ms>-<seq>`.
pub fn parse_cursor(cursor: &str) -> Result<StreamId, QueryError> {
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(QueryError::InvalidCursor);
    }
    StreamId::parse(cursor).ok_or(QueryError::InvalidCursor)
}

/// The newest records matching `q`, from the outbox and the files.
pub async fn query(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    q: &AuditQuery,
) -> Result<QueryPage, QueryError> {
    let plan = Plan::new(q)?;
    if plan.is_empty() {
        return Ok(QueryPage::default());
    }
    // The outbox first, then the listing: see the module docs.
    let mut outbox = Vec::new();
    scan_outbox(conn, plan.lo, plan.hi, Direction::NewestFirst, |e| {
        if plan.entry_matches(&e) {
            outbox.push(e);
        }
        outbox.len() < plan.need
    })
    .await?;
    let (dir, p) = (Arc::clone(dir), plan.clone());
    let (written, files) = blocking(move || search_files(&dir, &p)).await?;
    Ok(plan.merge(outbox, &written, files))
}

/// The merge step of `query` as a pure function: `entries` are outbox entries (any; they
/// are filtered here), `written` the ranges of the files listed after reading them, `files`
/// the matches found in those files.
pub fn merge(
    q: &AuditQuery,
    entries: Vec<Entry>,
    written: &Written,
    files: Vec<AuditRecord>,
) -> Result<QueryPage, QueryError> {
    let plan = Plan::new(q)?;
    Ok(plan.merge(entries, written, files))
}

/// A query made ready to run: id bounds and the string columns to match.
#[derive(Debug, Clone)]
struct Plan {
    /// Lowest id wanted (inclusive).
    lo: StreamId,
    /// Id bound (exclusive): the smaller of `until` and the cursor.
    hi: Option<StreamId>,
    /// (column, value) pairs that must match.
    eq: Vec<(&'static str, String)>,
    /// The `dry_run_flag` a record must have.
    dry_run: Option<bool>,
    job_id: Option<String>,
    limit: usize,
    /// Matches to collect from each source: one more than the limit, to know whether a
    /// next page exists.
    need: usize,
}

impl Plan {
    fn new(q: &AuditQuery) -> Result<Self, QueryError> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        if let (Some(since), Some(until)) = (q.since_ms, q.until_ms)
            && since > until
        {
            return Err(QueryError::Invalid("since must not be after until".into()));
        }
        let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
        let until = q.until_ms.map(|ms| StreamId { ms, seq: 0 });
        let hi = match (until, cursor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut eq = Vec::new();
        let columns = [
            ("job_id", &q.job_id),
            ("user_or_system", &q.actor),
            ("decision", &q.decision),
            ("failure_type", &q.failure_type),
            ("operation_id", &q.operation_id),
        ];
        for (column, value) in columns {
            if let Some(v) = value {
                eq.push((column, v.clone()));
            }
        }
        Ok(Self {
            lo: StreamId {
                ms: q.since_ms.unwrap_or(0),
                seq: 0,
            },
            hi,
            eq,
            dry_run: q.dry_run,
            job_id: q.job_id.clone(),
            limit,
            need: limit + 1,
        })
    }

    /// Whether no id can be in range.
    fn is_empty(&self) -> bool {
        self.hi.is_some_and(|hi| hi <= self.lo)
    }

    fn in_range(&self, id: StreamId) -> bool {
        id >= self.lo && self.hi.is_none_or(|hi| id < hi)
    }

    fn record_matches(&self, r: &AuditRecord) -> bool {
        self.dry_run.is_none_or(|d| r.dry_run_flag == d)
            && self
                .eq
                .iter()
                .all(|(column, v)| record_column(r, column) == Some(v.as_str()))
    }

    fn entry_matches(&self, e: &Entry) -> bool {
        match (e.id, &e.fields) {
            (Some(id), Some(fields)) if self.in_range(id) => {
                self.record_matches(&AuditRecord::from_entry(id, fields))
            }
            _ => false,
        }
    }

    /// Outbox entries not covered by a listed file, plus the file matches, deduplicated by
    /// id; the newest `limit`, and a cursor when more exist.
    fn merge(&self, entries: Vec<Entry>, written: &Written, files: Vec<AuditRecord>) -> QueryPage {
        let mut all: BTreeMap<StreamId, AuditRecord> = BTreeMap::new();
        for e in entries {
            let (Some(id), Some(fields)) = (e.id, e.fields) else {
                continue;
            };
            if !self.in_range(id) || written.contains(id) {
                continue;
            }
            let r = AuditRecord::from_entry(id, &fields);
            if self.record_matches(&r) {
                all.insert(id, r);
            }
        }
        for r in files {
            if let Some(id) = StreamId::parse(&r.record_id)
                && self.in_range(id)
                && self.record_matches(&r)
            {
                all.insert(id, r);
            }
        }
        let more = all.len() > self.limit;
        let records: Vec<AuditRecord> = all.into_values().rev().take(self.limit).collect();
        let next_cursor = more
            .then(|| records.last().map(|r| r.record_id.clone()))
            .flatten();
        QueryPage {
            records,
            next_cursor,
        }
    }

    /// Whether a partition (`[start, start + 1 day)`) can hold ids in range.
    fn date_in_range(&self, date: &str) -> bool {
        let Some(start) = schema::ms_of_date(date) else {
            return false;
        };
        // An id below `hi` has ms <= hi.ms.
        start + DAY_MS > self.lo.ms && self.hi.is_none_or(|hi| start <= hi.ms)
    }

    /// Whether a file's id range meets the range.
    fn part_in_range(&self, p: &Part) -> bool {
        p.last >= self.lo && self.hi.is_none_or(|hi| p.first < hi)
    }
}

/// A string column of a record, by its parquet name (the columns a query filters on).
fn record_column<'a>(r: &'a AuditRecord, column: &str) -> Option<&'a str> {
    match column {
        "job_id" => r.job_id.as_deref(),
        "user_or_system" => Some(&r.user_or_system),
        "decision" => Some(&r.decision),
        "failure_type" => r.failure_type.as_deref(),
        "operation_id" => r.operation_id.as_deref(),
        _ => None,
    }
}

/// Runs file IO off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
        .map_err(QueryError::from)
}

/// Runs `f`, and once more if a file vanished under it: a compaction swapped the partition
/// between the listing and the open, and a new listing finds its output.
pub fn retry_vanished<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match f() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => f(),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::scan::{file_info, row_groups};
    use super::*;

    /// One record per (ms, seq), with a job id and decision.
    fn record(ms: u64, seq: u64, job: &str, decision: &str) -> AuditRecord {
        AuditRecord::from_entry(StreamId { ms, seq }, &fields(job, decision))
    }

    fn fields(job: &str, decision: &str) -> Vec<(String, String)> {
        vec![
            ("job_id".into(), job.into()),
            ("decision".into(), decision.into()),
            ("user_or_system".into(), "ops".into()),
            ("failure_type".into(), "network_error".into()),
        ]
    }

    fn entry(ms: u64, seq: u64, job: &str, decision: &str) -> Entry {
        let id = StreamId { ms, seq };
        Entry {
            raw_id: id.to_string(),
            id: Some(id),
            fields: Some(fields(job, decision)),
        }
    }

    fn day(date: &str) -> u64 {
        schema::ms_of_date(date).unwrap()
    }

    /// Writes one file per run of records of one date (records in id order).
    fn write(dir: &AuditStore, records: &[AuditRecord]) {
        let mut runs: Vec<(String, Vec<AuditRecord>)> = Vec::new();
        for r in records {
            match runs.last_mut() {
                Some((d, run)) if *d == r.date() => run.push(r.clone()),
                _ => runs.push((r.date(), vec![r.clone()])),
            }
        }
        for (date, run) in runs {
            dir.write_part(&date, &run, &|| true).unwrap().unwrap();
        }
    }

    /// Runs the file side of a query (no Redis): the listing and the walk, then the merge
    /// with `outbox`.
    fn run(dir: &AuditStore, q: &AuditQuery, outbox: Vec<Entry>) -> QueryPage {
        let plan = Plan::new(q).unwrap();
        if plan.is_empty() {
            return QueryPage::default();
        }
        let (written, files) = search_files(dir, &plan).unwrap();
        merge(q, outbox, &written, files).unwrap()
    }

    /// Every page of a query, following cursors.
    fn all_pages(dir: &AuditStore, q: &AuditQuery, outbox: &[Entry]) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut q = q.clone();
        loop {
            let page = run(dir, &q, outbox.to_vec());
            assert!(page.records.len() <= q.limit);
            out.extend(page.records);
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return out,
            }
        }
    }

    fn ids(records: &[AuditRecord]) -> Vec<StreamId> {
        records
            .iter()
            .map(|r| StreamId::parse(&r.record_id).unwrap())
            .collect()
    }

    /// 30 daily partitions of 2026-11, each with records every 3 hours starting 22:30 the
    /// evening before (so runs cross midnight and one day's file starts at 01:30), several
    /// files a day, job `j<k % 7>`.
    fn thirty_days(dir: &AuditStore) -> Vec<AuditRecord> {
        let start = day("2026-11-01") - 90 * 60_000;
        let mut all = Vec::new();
        for i in 0..240u64 {
            let ms = start + i * 3 * 3600 * 1000;
            let decision = if i % 5 == 0 {
                "blocked_cooldown"
            } else {
                "retried"
            };
            all.push(record(ms, 0, &format!("j{}", i % 7), decision));
            all.push(record(ms, 1, &format!("j{}", (i + 3) % 7), "retried"));
        }
        // Several files per day: split every run of 4 records.
        for chunk in all.chunks(4) {
            write(dir, chunk);
        }
        all
    }

    #[test]
    fn paging_returns_every_record_once_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let all = thirty_days(&dir);
        assert!(dir.dates().unwrap().len() >= 30);
        for limit in [1, 7, 100, 1000] {
            let q = AuditQuery {
                limit,
                ..AuditQuery::default()
            };
            let got = all_pages(&dir, &q, &[]);
            let mut want = ids(&all);
            want.reverse();
            assert_eq!(ids(&got), want, "limit {limit}");
        }
        // Whole records come back.
        let page = run(&dir, &AuditQuery::default(), vec![]);
        assert_eq!(page.records[0], *all.last().unwrap());
    }

    #[test]
    fn the_dry_run_filter_pages_files_and_outbox_alike() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        // Every third record a dry run, in files and in the outbox (not yet written).
        let dry = |i: u64| i.is_multiple_of(3);
        let mut all = Vec::new();
        let mut outbox = Vec::new();
        for i in 0..60u64 {
            let id = StreamId {
                ms: day("2026-11-05") + i * 60_000,
                seq: 0,
            };
            let mut f = fields(&format!("j{i}"), "retried");
            f.push(("dry_run_flag".into(), dry(i).to_string()));
            if i < 45 {
                all.push(AuditRecord::from_entry(id, &f));
            } else {
                outbox.push(Entry {
                    raw_id: id.to_string(),
                    id: Some(id),
                    fields: Some(f),
                });
            }
        }
        for chunk in all.chunks(10) {
            write(&dir, chunk);
        }
        for (flag, count) in [(true, 20), (false, 40)] {
            let q = AuditQuery {
                dry_run: Some(flag),
                limit: 7,
                ..AuditQuery::default()
            };
            let got = all_pages(&dir, &q, &outbox);
            assert_eq!(got.len(), count, "dry_run {flag}");
            assert!(got.iter().all(|r| r.dry_run_flag == flag));
            let mut sorted = ids(&got);
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), count, "each once");
        }
    }

    #[test]
    fn time_ranges_cross_midnight_and_prune_partitions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let all = thirty_days(&dir);
        // 2026-11-10 22:00 .. 2026-11-12 02:00 (exclusive).
        let since = day("2026-11-10") + 22 * 3600 * 1000;
        let until = day("2026-11-12") + 2 * 3600 * 1000;
        let q = AuditQuery {
            since_ms: Some(since),
            until_ms: Some(until),
            limit: 3,
            ..AuditQuery::default()
        };
        let got = all_pages(&dir, &q, &[]);
        let mut want: Vec<StreamId> = ids(&all)
            .into_iter()
            .filter(|id| id.ms >= since && id.ms < until)
            .collect();
        want.reverse();
        assert!(want.len() > 10);
        assert_eq!(ids(&got), want);
        // `until` is exclusive, `since` inclusive: exactly at a record's ms.
        let at = StreamId::parse(&all[10].record_id).unwrap().ms;
        let q = AuditQuery {
            since_ms: Some(at),
            until_ms: Some(at + 1),
            ..AuditQuery::default()
        };
        assert_eq!(run(&dir, &q, vec![]).records.len(), 2);
        let q = AuditQuery {
            until_ms: Some(at),
            since_ms: Some(at),
            ..AuditQuery::default()
        };
        assert!(run(&dir, &q, vec![]).records.is_empty());
        // A range with no partition at all.
        let q = AuditQuery {
            since_ms: Some(day("2027-01-01")),
            ..AuditQuery::default()
        };
        assert_eq!(run(&dir, &q, vec![]), QueryPage::default());
    }

    #[test]
    fn job_and_column_filters_find_records_across_partitions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let all = thirty_days(&dir);
        let q = AuditQuery {
            job_id: Some("j3".into()),
            limit: 5,
            ..AuditQuery::default()
        };
        let got = all_pages(&dir, &q, &[]);
        let mut want: Vec<StreamId> = ids(&all
            .iter()
            .filter(|r| r.job_id.as_deref() == Some("j3"))
            .cloned()
            .collect::<Vec<_>>());
        want.reverse();
        assert_eq!(ids(&got), want);
        let dates: std::collections::BTreeSet<String> = got.iter().map(|r| r.date()).collect();
        assert!(dates.len() >= 28, "{dates:?}");

        let q = AuditQuery {
            job_id: Some("j3".into()),
            decision: Some("blocked_cooldown".into()),
            actor: Some("ops".into()),
            failure_type: Some("network_error".into()),
            limit: 1000,
            ..AuditQuery::default()
        };
        let got = run(&dir, &q, vec![]).records;
        let want = all
            .iter()
            .filter(|r| r.job_id.as_deref() == Some("j3") && r.decision == "blocked_cooldown")
            .count();
        assert_eq!(got.len(), want);
        assert!(got.iter().all(|r| r.decision == "blocked_cooldown"));

        for q in [
            AuditQuery {
                job_id: Some("nobody".into()),
                ..AuditQuery::default()
            },
            AuditQuery {
                actor: Some("someone else".into()),
                ..AuditQuery::default()
            },
            AuditQuery {
                operation_id: Some("op1".into()),
                ..AuditQuery::default()
            },
        ] {
            assert_eq!(run(&dir, &q, vec![]), QueryPage::default(), "{q:?}");
        }
    }

    #[test]
    fn outbox_entries_merge_with_files_once_each() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let t = day("2026-11-30") + 1000;
        // Files hold 0..10; the outbox holds 8..15: 8 and 9 are written but not yet
        // deleted, and 10..15 wait (one of them across midnight, in tomorrow's partition).
        let files: Vec<AuditRecord> = (0..10).map(|i| record(t + i, 0, "j", "retried")).collect();
        write(&dir, &files);
        let mut outbox: Vec<Entry> = (8..15).map(|i| entry(t + i, 0, "j", "retried")).collect();
        outbox.push(entry(day("2026-12-01") + 5, 0, "j", "retried"));
        // An entry deleted while pending has no fields: skipped.
        outbox.push(Entry {
            raw_id: format!("{}-1", t + 14),
            id: Some(StreamId { ms: t + 14, seq: 1 }),
            fields: None,
        });
        for limit in [1, 3, 4, 100] {
            let q = AuditQuery {
                limit,
                ..AuditQuery::default()
            };
            let got = all_pages(&dir, &q, &outbox);
            let mut want: Vec<StreamId> = (0..15).map(|i| StreamId { ms: t + i, seq: 0 }).collect();
            want.push(StreamId {
                ms: day("2026-12-01") + 5,
                seq: 0,
            });
            want.reverse();
            assert_eq!(ids(&got), want, "limit {limit}");
        }
        // Filters apply to outbox entries the same way.
        outbox.push(entry(t + 20, 0, "other", "blocked_cooldown"));
        let q = AuditQuery {
            job_id: Some("other".into()),
            ..AuditQuery::default()
        };
        let page = run(&dir, &q, outbox.clone());
        assert_eq!(ids(&page.records), vec![StreamId { ms: t + 20, seq: 0 }]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn cursors_are_validated() {
        for bad in ["", "x", "1-", "-1", "1-2-3", &"1".repeat(70)] {
            let q = AuditQuery {
                cursor: Some(bad.into()),
                ..AuditQuery::default()
            };
            assert!(
                matches!(Plan::new(&q), Err(QueryError::InvalidCursor)),
                "{bad}"
            );
        }
        let q = AuditQuery {
            since_ms: Some(2),
            until_ms: Some(1),
            ..AuditQuery::default()
        };
        assert!(matches!(Plan::new(&q), Err(QueryError::Invalid(_))));
        assert_eq!(parse_cursor("17-3").unwrap(), StreamId { ms: 17, seq: 3 });
    }

    #[test]
    fn a_compacted_partition_reads_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let all = thirty_days(&dir);
        let q = AuditQuery {
            job_id: Some("j5".into()),
            limit: 4,
            ..AuditQuery::default()
        };
        let before = all_pages(&dir, &q, &[]);
        // Warm the cache with the old file names, then compact every day.
        for date in dir.dates().unwrap() {
            dir.compact(&date).unwrap();
        }
        let after = all_pages(&dir, &q, &[]);
        assert_eq!(before, after);
        assert!(!after.is_empty());
        assert_eq!(
            all_pages(&dir, &AuditQuery::default(), &[]).len(),
            all.len()
        );
    }

    /// Writes `records` (of one date) as one file of row groups of 50 rows and pages of 8
    /// rows, so pruning, bloom filters and row selections work across groups and pages.
    fn write_small_groups(dir: &AuditStore, records: &[AuditRecord]) {
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::{EnabledStatistics, WriterProperties};
        let (first, last) = (records.first().unwrap(), records.last().unwrap());
        let name = Part::file_name(
            StreamId::parse(&first.record_id).unwrap(),
            StreamId::parse(&last.record_id).unwrap(),
        );
        let partition = dir.root().unwrap().join(format!("date={}", first.date()));
        std::fs::create_dir_all(&partition).unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_column_bloom_filter_enabled("job_id".into(), true)
            .set_max_row_group_row_count(Some(50))
            .set_data_page_row_count_limit(8)
            .set_write_batch_size(8)
            .build();
        let file = File::create(partition.join(name)).unwrap();
        let mut w = ArrowWriter::try_new(file, schema::schema(), Some(props)).unwrap();
        w.write(&schema::to_batch(records).unwrap()).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn row_groups_and_pages_are_pruned_and_selected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let t = day("2026-11-20");
        // 3 days of 500 records each, jobs j0..j60, one decision in 9 a cooldown.
        let mut all = Vec::new();
        for d in 0..3 {
            let records: Vec<AuditRecord> = (0..500u64)
                .map(|i| {
                    let n = d * 500 + i;
                    let decision = if n % 9 == 0 {
                        "blocked_cooldown"
                    } else {
                        "retried"
                    };
                    record(
                        t + d * DAY_MS + i * 1000,
                        0,
                        &format!("j{}", n % 61),
                        decision,
                    )
                })
                .collect();
            write_small_groups(&dir, &records);
            all.extend(records);
        }
        // Pruning: statistics by time range and column value, the bloom filter by job id.
        let path = &dir.parts().unwrap()[1].path;
        let file = crate::audit::store::PartSource::File(File::open(path).unwrap());
        let info = file_info(path, &file).unwrap();
        assert_eq!(info.meta.metadata().num_row_groups(), 10);
        let groups = |q: AuditQuery| row_groups(&info, &file, &Plan::new(&q).unwrap()).unwrap();
        assert_eq!(groups(AuditQuery::default()).len(), 10);
        let narrow = AuditQuery {
            since_ms: Some(t + DAY_MS + 120_000),
            until_ms: Some(t + DAY_MS + 130_000),
            ..AuditQuery::default()
        };
        assert_eq!(groups(narrow), vec![2]);
        let absent = AuditQuery {
            job_id: Some("j999".into()),
            ..AuditQuery::default()
        };
        assert!(groups(absent).len() <= 1);
        let beyond = AuditQuery {
            decision: Some("zzz".into()),
            ..AuditQuery::default()
        };
        assert!(groups(beyond).is_empty());
        let cases = [
            AuditQuery::default(),
            AuditQuery {
                job_id: Some("j17".into()),
                ..AuditQuery::default()
            },
            AuditQuery {
                job_id: Some("j17".into()),
                decision: Some("blocked_cooldown".into()),
                ..AuditQuery::default()
            },
            AuditQuery {
                since_ms: Some(t + DAY_MS + 123_000),
                until_ms: Some(t + DAY_MS + 321_000),
                ..AuditQuery::default()
            },
        ];
        for q in cases {
            for limit in [3, 1000] {
                let q = AuditQuery { limit, ..q.clone() };
                let plan = Plan::new(&q).unwrap();
                let mut want: Vec<StreamId> = ids(&all
                    .iter()
                    .filter(|r| {
                        plan.record_matches(r)
                            && plan.in_range(StreamId::parse(&r.record_id).unwrap())
                    })
                    .cloned()
                    .collect::<Vec<_>>());
                want.reverse();
                let got = all_pages(&dir, &q, &[]);
                assert_eq!(ids(&got), want, "{q:?}");
                // Whole records.
                for r in &got {
                    let id = StreamId::parse(&r.record_id).unwrap();
                    let original = all.iter().find(|o| o.record_id == r.record_id).unwrap();
                    assert_eq!(r, original, "{id}");
                }
            }
        }
    }

    #[test]
    fn a_vanished_file_is_retried_once_after_a_new_listing() {
        let gone = || io::Error::from(io::ErrorKind::NotFound);
        let mut calls = 0;
        let r = retry_vanished(|| {
            calls += 1;
            if calls == 1 { Err(gone()) } else { Ok(calls) }
        });
        assert_eq!(r.unwrap(), 2);
        let mut calls = 0;
        let r: io::Result<()> = retry_vanished(|| {
            calls += 1;
            Err(gone())
        });
        assert!(r.is_err());
        assert_eq!(calls, 2);
        // Other errors are not retried.
        let mut calls = 0;
        let r: io::Result<()> = retry_vanished(|| {
            calls += 1;
            Err(io::Error::other("disk"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    /// The target: a job-id query over 1,000,000 records in 30 daily partitions in ≤ 50 ms
    /// (warm cache). Slow to set up (writes ~1M records): run with `--ignored`.
    #[test]
    #[ignore = "writes a million records; run by hand with --ignored --nocapture"]
    fn job_id_query_over_a_million_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuditStore::local(tmp.path()).unwrap();
        let start = day("2026-11-01");
        let per_day = 1_000_000 / 30 + 1;
        let step = DAY_MS / per_day as u64;
        let setup = std::time::Instant::now();
        for d in 0..30u64 {
            let records: Vec<AuditRecord> = (0..per_day as u64)
                .map(|i| {
                    let n = d * per_day as u64 + i;
                    // Each job three times, ten days apart.
                    let job = format!("job-{:08}", n % 333_333);
                    let mut r = record(start + d * DAY_MS + i * step, 0, &job, "retried");
                    r.job_type = Some("app.tasks.charge".into());
                    r.queue = Some("default".into());
                    r.policy_digest = Some(format!("sha256:{}", "ab".repeat(32)));
                    r.params = Some("{\"max_attempts\":\"3\"}".into());
                    r.exc_type = Some("ConnectionError".into());
                    r.exc_message = Some(format!("connection refused by host {}", n % 97));
                    r.traceback_sha256 = Some(format!("{:064x}", n % 1013));
                    r.error_message = Some("retry allowed: network_error".into());
                    r.seed = Some(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    r.now_ms = Some(i64::try_from(start).unwrap());
                    r
                })
                .collect();
            write(&dir, &records);
        }
        eprintln!("setup {:?}", setup.elapsed());
        let q = AuditQuery {
            job_id: Some("job-00123456".into()),

            ..AuditQuery::default()
        };
        for round in 0..5 {
            let t = std::time::Instant::now();
            let page = run(&dir, &q, vec![]);
            let took = t.elapsed();
            eprintln!("round {round}: {took:?}, {} records", page.records.len());
            assert_eq!(page.records.len(), 3);
            if round > 0 {
                assert!(took.as_millis() <= 50, "{took:?}");
            }
        }
        let t = std::time::Instant::now();
        let page = run(&dir, &AuditQuery::default(), vec![]);
        eprintln!("newest 100: {:?}", t.elapsed());
        assert_eq!(page.records.len(), 100);
    }
}
