//! The audit directory: hive-partitioned parquet files, written crash-safely.
//!
//! ```text
//! AUDIT_DIR/date=2026-11-30/part-<first id>_<last id>.parquet   records, one stream id range a file
//! AUDIT_DIR/_blobs/ab/ab12….txt                                  large texts (tracebacks) by sha256
//! AUDIT_DIR/.staging/                                            work in progress; never read
//! ```
//!
//! A file appears only complete: it is written under `.staging/`, fsynced, renamed into its
//! partition, and the partition directory fsynced. Its name carries the first and last
//! outbox stream ids it holds, and a file holds *every* outbox entry in that range (the
//! writer works through the stream in order), so "is entry X already durable?" is answered by
//! the file names alone. Readers glob `date=*/*.parquet`, which never matches `.staging/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;

use super::schema::{self, AuditRecord, StreamId};

const STAGING: &str = ".staging";

/// Files of this size or more are left as they are by compaction.
pub(super) const COMPACT_BELOW_BYTES: u64 = 32 << 20;
/// `_`-prefixed, so pyarrow's dataset discovery skips it (as it skips `.staging`).
const BLOBS: &str = "_blobs";

/// One finished parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub date: String,
    pub first: StreamId,
    pub last: StreamId,
    pub path: PathBuf,
}

impl Part {
    /// `part-<first>_<last>.parquet`.
    pub fn file_name(first: StreamId, last: StreamId) -> String {
        format!("part-{first}_{last}.parquet")
    }

    pub(super) fn parse(date: &str, path: PathBuf) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        let ids = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let (first, last) = ids.split_once('_')?;
        Some(Self {
            date: date.to_string(),
            first: StreamId::parse(first)?,
            last: StreamId::parse(last)?,
            path,
        })
    }
}

/// Which stream id ranges are durable, from the file names.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// first id → last id, of every finished file.
    ranges: BTreeMap<StreamId, StreamId>,
}

impl Written {
    pub fn insert(&mut self, first: StreamId, last: StreamId) {
        self.ranges.insert(first, last);
    }

    /// Whether entry `id` is inside a finished file.
    pub fn contains(&self, id: StreamId) -> bool {
        self.ranges
            .range(..=id)
            .next_back()
            .is_some_and(|(_, last)| id <= *last)
    }

    /// The newest durable id.
    pub fn newest(&self) -> Option<StreamId> {
        self.ranges.values().max().copied()
    }
}

/// The audit trail in a local directory (`file://`).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

/// Writer settings of the parquet files.
pub(super) fn writer_properties(rows: usize) -> WriterProperties {
    let sorting = vec![SortingColumn {
        column_idx: 1, // timestamp
        descending: false,
        nulls_first: false,
    }];
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_column_bloom_filter_enabled("job_id".into(), true)
        .set_column_bloom_filter_max_ndv("job_id".into(), rows.max(1) as u64)
        .set_column_bloom_filter_fpp("job_id".into(), 0.01)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

impl LocalDir {
    /// Opens (creating) the directory, and clears `.staging/` of anything a crash left.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = Self { root: root.into() };
        fs::create_dir_all(dir.root.join(STAGING))?;
        fs::create_dir_all(dir.root.join(BLOBS))?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes what a crashed writer or compaction left in `.staging/`: half-written files
    /// (never renamed, so never visible) and the inputs of a finished compaction.
    pub fn clear_staging(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join(STAGING))? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Every finished file, oldest first.
    pub fn parts(&self) -> io::Result<Vec<Part>> {
        self.parts_where(&|_| true)
    }

    /// The finished files of the partitions whose date passes `keep`, oldest first.
    pub fn parts_where(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<Part>> {
        let mut parts = Vec::new();
        for date in self.dates()? {
            if keep(&date) {
                parts.extend(self.parts_of(&date)?);
            }
        }
        parts.sort_by_key(|p| p.first);
        Ok(parts)
    }

    /// The partitions (`YYYY-MM-DD`), oldest first.
    pub fn dates(&self) -> io::Result<Vec<String>> {
        let mut dates = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(date) = name.to_str().and_then(|n| n.strip_prefix("date="))
                && schema::ms_of_date(date).is_some()
                && entry.file_type()?.is_dir()
            {
                dates.push(date.to_string());
            }
        }
        dates.sort();
        Ok(dates)
    }

    /// The finished files of one partition.
    pub fn parts_of(&self, date: &str) -> io::Result<Vec<Part>> {
        let dir = self.partition(date);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // A partition compacted or expired while we listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut parts = Vec::new();
        for entry in entries {
            if let Some(p) = Part::parse(date, entry?.path()) {
                parts.push(p);
            }
        }
        parts.sort_by_key(|p| p.first);
        Ok(parts)
    }

    /// The ranges every finished file covers.
    pub fn written(&self) -> io::Result<Written> {
        let mut w = Written::default();
        for p in self.parts()? {
            w.insert(p.first, p.last);
        }
        Ok(w)
    }

    fn partition(&self, date: &str) -> PathBuf {
        self.root.join(format!("date={date}"))
    }

    /// Writes `records` (all of one date, in stream order, the whole range `first..=last`)
    /// as one file: staging, fsync, rename, fsync of the partition. `before_rename` runs
    /// right before the file becomes visible and may veto it (the writer checks its lease).
    pub fn write_part(
        &self,
        date: &str,
        records: &[AuditRecord],
        before_rename: &dyn Fn() -> bool,
    ) -> io::Result<Option<Part>> {
        let Some((first, last)) = id_range(records)? else {
            return Ok(None);
        };
        let name = Part::file_name(first, last);
        let staged = self.root.join(STAGING).join(format!("{name}.tmp"));
        write_parquet(&staged, records)?;
        let partition = self.partition(date);
        if !partition.exists() {
            fs::create_dir_all(&partition)?;
            sync_dir(&self.root)?;
        }
        if !before_rename() {
            fs::remove_file(&staged)?;
            return Ok(None);
        }
        let path = partition.join(&name);
        fs::rename(&staged, &path)?;
        sync_dir(&partition)?;
        Ok(Some(Part {
            date: date.to_string(),
            first,
            last,
            path,
        }))
    }

    /// The files of a partition small enough to be merged by `compact`.
    pub fn small_parts_of(&self, date: &str) -> io::Result<Vec<Part>> {
        let mut small = Vec::new();
        for p in self.parts_of(date)? {
            if fs::metadata(&p.path)?.len() < COMPACT_BELOW_BYTES {
                small.push(p);
            }
        }
        Ok(small)
    }

    /// Merges runs of consecutive small files of one partition, crash-safely: the new
    /// partition (one file per run, plus hard links to the files left as they are) is built
    /// under `.staging/` and swapped with the live one in one atomic
    /// `renameat2(RENAME_EXCHANGE)`, so readers see either the inputs or the output, never
    /// both. Only consecutive files are merged, so the files' id ranges stay disjoint; files
    /// of `COMPACT_BELOW_BYTES` or more are not rewritten, so compacting a busy day costs at
    /// most that much I/O per run. Returns the number of files merged (0: nothing to do).
    pub fn compact(&self, date: &str) -> io::Result<usize> {
        let parts = self.parts_of(date)?;
        let small = self.small_parts_of(date)?;
        // Runs of consecutive small files (parts are sorted by first id).
        let mut runs: Vec<Vec<&Part>> = vec![Vec::new()];
        for p in &parts {
            if small.contains(p) {
                if let Some(run) = runs.last_mut() {
                    run.push(p);
                }
            } else {
                runs.push(Vec::new());
            }
        }
        runs.retain(|r| r.len() >= 2);
        if runs.is_empty() {
            return Ok(0);
        }
        let work = self.root.join(STAGING).join(format!("compact-{date}"));
        if work.exists() {
            fs::remove_dir_all(&work)?;
        }
        fs::create_dir(&work)?;
        let merged_parts: Vec<&Part> = runs.iter().flatten().copied().collect();
        for p in parts.iter().filter(|p| !merged_parts.contains(p)) {
            if let Some(name) = p.path.file_name() {
                fs::hard_link(&p.path, work.join(name))?;
            }
        }
        for run in &runs {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            let out = work.join(Part::file_name(first.first, last.last));
            let paths: Vec<&Path> = run.iter().map(|p| p.path.as_path()).collect();
            merge_files(&paths, &out)?;
        }
        // Files written to the partition after we listed it must not be swapped away.
        let now = self.parts_of(date)?;
        if now != parts {
            fs::remove_dir_all(&work)?;
            return Ok(0);
        }
        sync_dir(&work)?;
        exchange(&self.partition(date), &work)?;
        sync_dir(&self.root)?;
        sync_dir(&self.root.join(STAGING))?;
        fs::remove_dir_all(&work)?;
        Ok(merged_parts.len())
    }

    /// Deletes the partitions older than `keep_from` (`YYYY-MM-DD`); each disappears whole.
    pub fn expire_before(&self, keep_from: &str) -> io::Result<Vec<String>> {
        let mut expired = Vec::new();
        for date in self.dates()? {
            if date.as_str() >= keep_from {
                break;
            }
            let gone = self.root.join(STAGING).join(format!("expired-{date}"));
            fs::rename(self.partition(&date), &gone)?;
            sync_dir(&self.root)?;
            fs::remove_dir_all(&gone)?;
            expired.push(date);
        }
        Ok(expired)
    }

    fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            self.root
                .join(BLOBS)
                .join(&sha256[..2])
                .join(format!("{sha256}.txt"))
        })
    }

    /// Stores a text by its sha256 (once; a second store of the same text is a no-op).
    pub fn put_blob(&self, sha256: &str, text: &[u8]) -> io::Result<()> {
        let path = self
            .blob_path(sha256)
            .ok_or_else(|| io::Error::other("not a sha256"))?;
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        let staged = self.root.join(STAGING).join(format!("{sha256}.blob.tmp"));
        let mut f = File::create(&staged)?;
        f.write_all(text)?;
        f.sync_all()?;
        fs::rename(&staged, &path)?;
        sync_dir(&dir)
    }

    /// Stores texts by their sha256 (each once).
    pub fn put_blobs(&self, blobs: &[(String, Vec<u8>)]) -> io::Result<()> {
        blobs
            .iter()
            .try_for_each(|(sha, text)| self.put_blob(sha, text))
    }

    /// A stored text, if present.
    pub fn blob(&self, sha256: &str) -> io::Result<Option<String>> {
        let Some(path) = self.blob_path(sha256) else {
            return Ok(None);
        };
        match fs::read(path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes on disk of every finished file.
    pub fn size_bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for p in self.parts()? {
            total += fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
}

/// Writes one parquet file and fsyncs it.
fn write_parquet(path: &Path, records: &[AuditRecord]) -> io::Result<()> {
    let file = encode_into(File::create(path)?, records)?;
    file.sync_all()
}

/// `records` as one parquet file, in memory (an object store's put).
#[cfg_attr(not(feature = "object-store"), allow(dead_code))]
/// The stream ids of the first and the last of `records` (a part's range); `None` when
/// there are none.
pub(super) fn id_range(records: &[AuditRecord]) -> io::Result<Option<(StreamId, StreamId)>> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(None);
    };
    match (
        StreamId::parse(&first.record_id),
        StreamId::parse(&last.record_id),
    ) {
        (Some(first), Some(last)) => Ok(Some((first, last))),
        _ => Err(io::Error::other("a record without a stream id")),
    }
}

pub(super) fn encode(records: &[AuditRecord]) -> io::Result<Vec<u8>> {
    encode_into(Vec::new(), records)
}

/// Writes `records` as one parquet file into `out`, and returns it.
fn encode_into<W: Write + Send>(out: W, records: &[AuditRecord]) -> io::Result<W> {
    let batch = schema::to_batch(records).map_err(io::Error::other)?;
    let mut writer = ArrowWriter::try_new(
        out,
        schema::schema(),
        Some(writer_properties(records.len())),
    )
    .map_err(io::Error::other)?;
    writer.write(&batch).map_err(io::Error::other)?;
    writer.into_inner().map_err(io::Error::other)
}

/// Writes the records of `inputs` (consecutive files, disjoint id ranges, in order) to one
/// file at `out`; if they are not in id order, merges them in memory, sorted.
fn merge_files(inputs: &[&Path], out: &Path) -> io::Result<()> {
    let sources = inputs
        .iter()
        .map(File::open)
        .collect::<io::Result<Vec<_>>>()?;
    if let Some(file) = merge_in_order(sources, File::create(out)?)? {
        return file.sync_all();
    }
    let mut records = Vec::new();
    for path in inputs {
        records.extend(read_all(File::open(path)?)?);
    }
    records.sort_by_key(|r| StreamId::parse(&r.record_id).unwrap_or_default());
    write_parquet(out, &records)
}

/// Writes the records of `inputs` (consecutive files, disjoint id ranges, in order) to
/// `out`, batch by batch, so a compaction holds one batch in memory, not the whole run.
/// Each batch goes through `AuditRecord` and back, so files of an earlier schema come out in
/// the current one. Returns `None` if the records are not in id order (the caller then
/// merges in memory; `out` holds a partial file).
pub(super) fn merge_in_order<R, W>(inputs: Vec<R>, out: W) -> io::Result<Option<W>>
where
    R: ChunkReader + 'static,
    W: Write + Send,
{
    let mut readers = Vec::with_capacity(inputs.len());
    let mut rows = 0usize;
    for input in inputs {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(io::Error::other)?;
        rows += usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        readers.push(builder);
    }
    let mut writer = ArrowWriter::try_new(out, schema::schema(), Some(writer_properties(rows)))
        .map_err(io::Error::other)?;
    let mut last: Option<StreamId> = None;
    for builder in readers {
        let reader = builder
            .with_batch_size(8192)
            .build()
            .map_err(io::Error::other)?;
        for batch in reader {
            let records = schema::from_batch(&batch.map_err(io::Error::other)?);
            for r in &records {
                let id = StreamId::parse(&r.record_id).unwrap_or_default();
                if last.is_some_and(|l| id <= l) {
                    return Ok(None);
                }
                last = Some(id);
            }
            let batch = schema::to_batch(&records).map_err(io::Error::other)?;
            writer.write(&batch).map_err(io::Error::other)?;
        }
    }
    writer.into_inner().map(Some).map_err(io::Error::other)
}

/// Reads every record of a file (a `File`, or the bytes of an object).
pub fn read_all<R: ChunkReader + 'static>(source: R) -> io::Result<Vec<AuditRecord>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(source)
        .map_err(io::Error::other)?
        .with_batch_size(8192)
        .build()
        .map_err(io::Error::other)?;
    let mut out = Vec::new();
    for batch in reader {
        out.extend(schema::from_batch(&batch.map_err(io::Error::other)?));
    }
    Ok(out)
}

/// fsync of a directory, so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomically swaps two directories (Linux `renameat2(RENAME_EXCHANGE)`). The one
/// `unsafe` block of the host: std has no atomic exchange, and without it a compaction
/// could not make its output visible and its inputs invisible in one step.
#[allow(unsafe_code)]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ms: u64, seq: u64, job: &str) -> AuditRecord {
        AuditRecord::from_entry(
            StreamId { ms, seq },
            &[
                ("job_id".into(), job.into()),
                ("decision".into(), "retried".into()),
                ("user_or_system".into(), "t".into()),
            ],
        )
    }

    #[test]
    fn written_ranges_answer_membership() {
        let mut w = Written::default();
        let id = |ms, seq| StreamId { ms, seq };
        w.insert(id(10, 0), id(20, 3));
        w.insert(id(30, 0), id(30, 0));
        assert!(w.contains(id(10, 0)));
        assert!(w.contains(id(20, 3)));
        assert!(!w.contains(id(20, 4)));
        assert!(w.contains(id(30, 0)));
        assert!(!w.contains(id(9, 9)));
        assert_eq!(w.newest(), Some(id(30, 0)));
    }

    #[test]
    fn parts_are_written_listed_compacted_and_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDir::open(tmp.path()).unwrap();
        let day = schema::ms_of_date("2026-11-30").unwrap();
        let a: Vec<_> = (0..3)
            .map(|i| record(day + i, 0, &format!("a{i}")))
            .collect();
        let b: Vec<_> = (3..5)
            .map(|i| record(day + i, 0, &format!("b{i}")))
            .collect();
        dir.write_part("2026-11-30", &a, &|| true).unwrap().unwrap();
        dir.write_part("2026-11-30", &b, &|| true).unwrap().unwrap();
        assert!(
            dir.write_part("2026-11-30", &a, &|| false)
                .unwrap()
                .is_none()
        );
        assert_eq!(dir.parts().unwrap().len(), 2);
        assert!(dir.written().unwrap().contains(StreamId {
            ms: day + 4,
            seq: 0
        }));
        assert_eq!(dir.compact("2026-11-30").unwrap(), 2);
        let parts = dir.parts().unwrap();
        assert_eq!(parts.len(), 1);
        let all = read_all(File::open(&parts[0].path).unwrap()).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].job_id.as_deref(), Some("a0"));
        assert_eq!(fs::read_dir(tmp.path().join(STAGING)).unwrap().count(), 0);
        assert_eq!(dir.expire_before("2026-12-01").unwrap(), vec!["2026-11-30"]);
        assert!(dir.parts().unwrap().is_empty());
    }

    #[test]
    fn a_compaction_streams_many_batches_and_keeps_every_record_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDir::open(tmp.path()).unwrap();
        let day = schema::ms_of_date("2026-11-29").unwrap();
        // Three files of 5,000 records: the merge crosses batches of 8,192 rows.
        let all: Vec<AuditRecord> = (0..15_000)
            .map(|i| record(day + i / 3, i % 3, &format!("j{i}")))
            .collect();
        for chunk in all.chunks(5000) {
            dir.write_part("2026-11-29", chunk, &|| true)
                .unwrap()
                .unwrap();
        }
        assert_eq!(dir.compact("2026-11-29").unwrap(), 3);
        let parts = dir.parts().unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(read_all(File::open(&parts[0].path).unwrap()).unwrap(), all);
    }

    #[test]
    fn records_out_of_id_order_are_merged_in_memory_instead() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, out) = (
            tmp.path().join("a.parquet"),
            tmp.path().join("b.parquet"),
            tmp.path().join("out.parquet"),
        );
        write_parquet(&a, &[record(5, 0, "late")]).unwrap();
        write_parquet(&b, &[record(1, 0, "early")]).unwrap();
        let open = |p: &Path| File::open(p).unwrap();
        assert!(
            merge_in_order(vec![open(&a), open(&b)], Vec::new())
                .unwrap()
                .is_none()
        );
        let merged = merge_in_order(vec![open(&b), open(&a)], Vec::new())
            .unwrap()
            .unwrap();
        let ids = |records: Vec<AuditRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.job_id.unwrap()).collect()
        };
        assert_eq!(
            ids(read_all(bytes::Bytes::from(merged)).unwrap()),
            ["early", "late"]
        );
        // Out of order on disk: the fallback merges in memory.
        merge_files(&[&a, &b], &out).unwrap();
        assert_eq!(ids(read_all(open(&out)).unwrap()), ["early", "late"]);
    }

    #[test]
    fn blobs_are_stored_once_by_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDir::open(tmp.path()).unwrap();
        let sha = "ab".repeat(32);
        dir.put_blob(&sha, b"Traceback").unwrap();
        dir.put_blob(&sha, b"Traceback").unwrap();
        assert_eq!(dir.blob(&sha).unwrap().as_deref(), Some("Traceback"));
        assert_eq!(dir.blob(&"cd".repeat(32)).unwrap(), None);
        assert!(dir.put_blob("../../etc/passwd", b"x").is_err());
    }
}
