//! The file side of a query: the listing of the partitions in range, and the two-pass read
//! of each file, pruned by name, row-group statistics and bloom filter (see `query.rs`).

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{PageIndexPolicy, RowGroupMetaData};
use parquet::file::statistics::Statistics;

use super::{Plan, retry_vanished};
use crate::audit::files::{Part, Written};
use crate::audit::schema::{self, AuditRecord, StreamId};
use crate::audit::store::{AuditStore, PartSource, as_io};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;
/// Memory the metadata cache may hold before it starts over.
const CACHE_BYTES: usize = 64 << 20;

/// Lists the files in range and collects up to `need` matches from them, newest first.
/// Returns the listed ranges too (for the outbox dedupe).
pub(super) fn search_files(
    dir: &AuditStore,
    plan: &Plan,
) -> io::Result<(Written, Vec<AuditRecord>)> {
    retry_vanished(|| {
        let mut parts = dir.parts_where(&|date| plan.date_in_range(date))?;
        let mut written = Written::default();
        for p in &parts {
            written.insert(p.first, p.last);
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.first));
        let mut found = Vec::new();
        for p in parts.iter().filter(|p| plan.part_in_range(p)) {
            let want = plan.need - found.len();
            found.extend(search_file(dir, p, plan, want)?);
            if found.len() >= plan.need {
                break;
            }
        }
        Ok((written, found))
    })
}

/// The newest `want` matches of one file.
fn search_file(
    dir: &AuditStore,
    part: &Part,
    plan: &Plan,
    want: usize,
) -> io::Result<Vec<AuditRecord>> {
    let file = dir.open_part(part)?;
    let info = file_info(&part.path, &file)?;
    let md = info.meta.metadata();
    let columns = info.meta.parquet_schema();
    let groups = row_groups(&info, &file, plan)?;
    if groups.is_empty() {
        return Ok(Vec::new());
    }

    // Pass 1: record ids and filtered columns; positions of the matches.
    let mut wanted: Vec<&str> = vec!["record_id"];
    wanted.extend(plan.eq.iter().map(|(c, _)| *c));
    if plan.dry_run.is_some() {
        wanted.push("dry_run_flag");
    }
    let mask = ProjectionMask::columns(columns, wanted);
    let reader =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, info.meta.clone())
            .with_row_groups(groups.clone())
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(as_io)?;
    let mut hits: Vec<(StreamId, usize)> = Vec::new();
    let mut offset = 0;
    for batch in reader {
        let batch = batch.map_err(as_io)?;
        let ids = strings(&batch, "record_id")?;
        let eqs = plan
            .eq
            .iter()
            .map(|(c, v)| Ok((strings(&batch, c)?, v.as_str())))
            .collect::<io::Result<Vec<_>>>()?;
        let dry_run = match plan.dry_run {
            Some(want) => Some((
                batch
                    .column_by_name("dry_run_flag")
                    .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                    .ok_or_else(|| io::Error::other("audit file without column dry_run_flag"))?,
                want,
            )),
            None => None,
        };
        for row in 0..batch.num_rows() {
            if !eqs
                .iter()
                .all(|(a, v)| a.is_valid(row) && a.value(row) == *v)
            {
                continue;
            }
            if let Some((flags, want)) = dry_run
                && (flags.is_valid(row) && flags.value(row)) != want
            {
                continue;
            }
            if let Some(id) = StreamId::parse(ids.value(row))
                && plan.in_range(id)
            {
                hits.push((id, offset + row));
            }
        }
        offset += batch.num_rows();
    }
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    hits.sort_unstable();
    let newest = &hits[hits.len().saturating_sub(want)..];
    let mut rows: Vec<usize> = newest.iter().map(|(_, row)| *row).collect();
    rows.sort_unstable();

    // Pass 2: every column of those rows only.
    let sizes: Vec<usize> = groups
        .iter()
        .map(|&g| usize::try_from(md.row_group(g).num_rows()).unwrap_or(0))
        .collect();
    let (groups, ranges, total) = select_rows(&groups, &sizes, &rows);
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, info.meta.clone())
        .with_row_groups(groups)
        .with_row_selection(selection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(as_io)?;
    let mut out = Vec::with_capacity(rows.len());
    for batch in reader {
        out.extend(schema::from_batch(&batch.map_err(as_io)?));
    }
    Ok(out)
}

/// The row groups of a file that may hold matches: statistics first, then (for a job id)
/// the bloom filter.
pub(super) fn row_groups(
    info: &FileInfo,
    file: &PartSource,
    plan: &Plan,
) -> io::Result<Vec<usize>> {
    let md = info.meta.metadata();
    let columns = info.meta.parquet_schema();
    let index = |name: &str| columns.columns().iter().position(|c| c.name() == name);
    let ts = index("timestamp");
    let eq_idx: Vec<(Option<usize>, &str)> = plan
        .eq
        .iter()
        .map(|(c, v)| (index(c), v.as_str()))
        .collect();
    let job_idx = index("job_id");
    let mut groups = Vec::new();
    for (i, rg) in md.row_groups().iter().enumerate() {
        if !stats_may_match(rg, ts, &eq_idx, plan) {
            continue;
        }
        if let (Some(job), Some(col)) = (&plan.job_id, job_idx)
            && let Some(bloom) = info.job_bloom(i, col, file)?
            && !bloom.check(job.as_str())
        {
            continue;
        }
        groups.push(i);
    }
    Ok(groups)
}

/// Turns row positions within the concatenation of `groups` (of `sizes` rows each; `rows`
/// sorted) into the groups that hold any of them, the row ranges within those groups'
/// concatenation, and its row count.
fn select_rows(
    groups: &[usize],
    sizes: &[usize],
    rows: &[usize],
) -> (Vec<usize>, Vec<Range<usize>>, usize) {
    let mut kept = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let (mut start, mut base) = (0, 0);
    let mut rows = rows.iter().peekable();
    for (&g, &size) in groups.iter().zip(sizes) {
        let end = start + size;
        let mut any = false;
        while let Some(&&row) = rows.peek() {
            if row >= end {
                break;
            }
            rows.next();
            any = true;
            let at = base + row - start;
            match ranges.last_mut() {
                Some(r) if r.end == at => r.end += 1,
                _ => ranges.push(at..at + 1),
            }
        }
        if any {
            kept.push(g);
            base += size;
        }
        start = end;
    }
    (kept, ranges, base)
}

/// Whether a row group's statistics allow a match: `timestamp` against the id range, each
/// filtered string column against its value. Missing statistics allow everything.
fn stats_may_match(
    rg: &RowGroupMetaData,
    ts: Option<usize>,
    eq: &[(Option<usize>, &str)],
    plan: &Plan,
) -> bool {
    let us = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000);
    if let Some(Statistics::Int64(s)) = ts.and_then(|i| rg.column(i).statistics()) {
        // Ids in range have ms in [lo.ms, hi.ms].
        if s.max_opt().is_some_and(|&max| max < us(plan.lo.ms))
            || s.min_opt()
                .is_some_and(|&min| plan.hi.is_some_and(|hi| min > us(hi.ms)))
        {
            return false;
        }
    }
    for (i, v) in eq {
        let Some(stats) = i.and_then(|i| rg.column(i).statistics()) else {
            continue;
        };
        // All nulls: nothing equals the value.
        if stats.null_count_opt() == u64::try_from(rg.num_rows()).ok() {
            return false;
        }
        // Truncated statistics stay bounds (min rounded down, max up).
        if stats.min_bytes_opt().is_some_and(|min| v.as_bytes() < min)
            || stats.max_bytes_opt().is_some_and(|max| v.as_bytes() > max)
        {
            return false;
        }
    }
    true
}

/// A string column of a batch.
fn strings<'a>(batch: &'a RecordBatch, name: &str) -> io::Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| io::Error::other(format!("audit file without a string column {name}")))
}

/// Reads `columns` of every row of one file, batch by batch (stats: a projection, with the
/// cached metadata).
pub fn scan_columns(
    dir: &AuditStore,
    part: &Part,
    columns: &[&str],
    mut f: impl FnMut(&RecordBatch) -> io::Result<()>,
) -> io::Result<()> {
    let file = dir.open_part(part)?;
    let info = file_info(&part.path, &file)?;
    let mask = ProjectionMask::columns(info.meta.parquet_schema(), columns.iter().copied());
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, info.meta.clone())
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(as_io)?;
    for batch in reader {
        f(&batch.map_err(as_io)?)?;
    }
    Ok(())
}

/// What is kept of a finished file between queries.
#[derive(Debug)]
pub(super) struct FileInfo {
    /// Footer, arrow schema and page index.
    pub(super) meta: ArrowReaderMetadata,
    /// The `job_id` bloom filter of each row group read so far (`None`: it has none).
    blooms: Mutex<HashMap<usize, Option<Arc<Sbbf>>>>,
}

impl FileInfo {
    fn job_bloom(
        &self,
        rg: usize,
        column: usize,
        file: &PartSource,
    ) -> io::Result<Option<Arc<Sbbf>>> {
        if let Some(b) = lock(&self.blooms).get(&rg) {
            return Ok(b.clone());
        }
        let chunk = self.meta.metadata().row_group(rg).column(column);
        let bloom = Sbbf::read_from_column_chunk(chunk, file)
            .map_err(as_io)?
            .map(Arc::new);
        let bytes = bloom.as_ref().map_or(0, |b| b.num_blocks() * 32);
        lock(&self.blooms).insert(rg, bloom.clone());
        lock(cache()).account(bytes);
        Ok(bloom)
    }
}

/// File metadata by path, bounded by memory: when full it starts over.
#[derive(Debug, Default)]
struct InfoCache {
    files: HashMap<PathBuf, Arc<FileInfo>>,
    bytes: usize,
}

impl InfoCache {
    fn account(&mut self, bytes: usize) {
        self.bytes += bytes;
        if self.bytes > CACHE_BYTES {
            // Entries in use stay alive through their `Arc`.
            self.files.clear();
            self.bytes = 0;
        }
    }
}

fn cache() -> &'static Mutex<InfoCache> {
    static CACHE: OnceLock<Mutex<InfoCache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// A lock that survives a panic elsewhere (the data are caches: always consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cached metadata of a file, loaded from `file` on a miss.
pub(super) fn file_info(path: &Path, file: &PartSource) -> io::Result<Arc<FileInfo>> {
    if let Some(info) = lock(cache()).files.get(path) {
        return Ok(Arc::clone(info));
    }
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let meta = ArrowReaderMetadata::load(file, options).map_err(as_io)?;
    let bytes = meta.metadata().memory_size();
    let info = Arc::new(FileInfo {
        meta,
        blooms: Mutex::default(),
    });
    let mut cache = lock(cache());
    cache.account(bytes);
    cache.files.insert(path.to_path_buf(), Arc::clone(&info));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_selected_across_row_groups() {
        // Groups 4, 7, 9 of 10, 5, 20 rows; rows 0, 1, 3 (group 4) and 15, 29 (group 9: its
        // rows 0 and 14, after the 10 rows kept of group 4).
        let (groups, ranges, total) = select_rows(&[4, 7, 9], &[10, 5, 20], &[0, 1, 3, 15, 29]);
        assert_eq!(groups, vec![4, 9]);
        assert_eq!(ranges, vec![0..2, 3..4, 10..11, 24..25]);
        assert_eq!(total, 30);
        let (groups, ranges, total) = select_rows(&[0, 1], &[3, 3], &[2, 3]);
        assert_eq!((groups, total), (vec![0, 1], 6));
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0], 2..4);
    }
}
