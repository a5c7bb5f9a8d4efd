//! `cargo bench --bench audit`: the durable audit trail against the issue's targets (2 cores):
//! at least 200,000 records/s from the outbox to durable parquet, at most 50 ms per job-id
//! query over 1,000,000 records in 30 daily partitions, at most 80 bytes per record on disk.
//! Not run in CI: it needs `redis-server` on PATH (the test harness's throwaway server, no
//! persistence) and takes about 35 s on 2 cores (`--quick`: under 10 s). `cargo bench` builds
//! with the `bench` profile, which has the same settings as `release` and shares
//! `target/release` with it (see the workspace Cargo.toml), so wasmtime is not rebuilt.
//!
//! 1. Write throughput: N realistic records (default 200,000; `--records N`), made by
//!    `retry::records::job_record` as the retry service makes them, are `XADD`ed to the outbox with
//!    a pipelined client (not timed) and the tracebacks they name put in the blob hash; then
//!    one `AuditWriter` (`--batch B`, default 10,000) drains the outbox with `flush_now()`
//!    until it returns 0: `XREADGROUP`, parse, parquet + fsync + rename, `XACK` + `XDEL`, end
//!    to end. The split beside it, per record: redis-server's busy time during the drain
//!    (`INFO commandstats`); redis-rs decoding replies of the same size (an `XRANGE` read of
//!    the same entries, client time minus server time); `writer::parse_entries`;
//!    `AuditRecord::from_entry`; `AuditStore::write_part` on the same records and batches, in
//!    the bench dir and again on tmpfs (`/dev/shm`), whose difference is the fsyncs. The
//!    parts are timed apart, so "rest" (total minus the parts) is approximate. This runs
//!    twice on the same records: first with entries of the earlier format (one stream field
//!    per column, ~26), then of the current one (one field `r`, the record as JSON; the
//!    target of that step is 50,000 records/s), each with its outbox bytes per record (RESP
//!    in an `XRANGE` reply, and redis-server's `used_memory` growth).
//! 2. Query latency: 1,000,000 records (`--query-records N`) over 30 closed days written with
//!    `AuditStore::write_part` as 1,000-record files (what a 1 s flush under load makes), then
//!    every day compacted as the writer's maintenance does. `query()` for a job id that exists
//!    (the first call apart: cold metadata cache; then p50/p99 over `--queries` (200) other
//!    ids, each checked to return every record of its job), for a job id that does not
//!    exist, and for the newest 100 — before and after compaction. "Cold" is the process's
//!    parquet metadata cache; the OS page cache is warm (the files were just written).
//! 3. Bytes per record: `size_bytes()` / records, for the writer's files and for the query
//!    set before and after compaction.
//!
//! Arguments (after `--`): `--records N`, `--batch B`, `--query-records N`, `--days D`,
//! `--part-rows R`, `--queries Q`, `--dir PATH` (parent of the audit dirs; default the temp
//! dir), `--quick` (50,000 records, 200,000 query records, 50 queries). Exits 0 when a target
//! is missed (it reports), 1 when a correctness check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

#[path = "../tests/rq/support/redis_server.rs"]
#[allow(
    dead_code,
    reason = "the harness file has helpers this bench does not use"
)]
mod redis_server;

#[path = "audit/s3.rs"]
mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::audit::encoding::{self, RECORD_FIELD};
use retryguard::audit::files::read_all;
use retryguard::audit::query::{AuditQuery, query};
use retryguard::audit::schema;
use retryguard::audit::writer::parse_entries;
use retryguard::audit::{
    AuditRecord, AuditStore, AuditWriter, StreamId, WriterConfig, WriterStatus,
};
use retryguard::clock::now_ms;
use retryguard::policy::{Classification, FailureInput};
use retryguard::redis_link::Link;
use retryguard::retry::{JobOutcome, Outcome, RetryOptions};
use sha2::{Digest as _, Sha256};

use redis_server::RedisServer;

/// The issue's targets.
const WRITE_TARGET: f64 = 200_000.0;
/// The target of the step to one field per outbox entry (issue 18, "Writer throughput").
const STEP_WRITE_TARGET: f64 = 50_000.0;
const QUERY_TARGET_MS: f64 = 50.0;
const BYTES_TARGET: f64 = 80.0;
const DAY_MS: u64 = 86_400_000;
/// XADDs per pipeline round trip while filling the outbox.
const PIPELINE: usize = 2_000;

#[derive(Debug, Clone)]
struct Args {
    records: usize,
    batch: usize,
    query_records: usize,
    days: usize,
    part_rows: usize,
    queries: usize,
    dir: PathBuf,
}

impl Args {
    fn parse() -> Self {
        let mut a = Self {
            records: 200_000,
            batch: 10_000,
            query_records: 1_000_000,
            days: 30,
            part_rows: 1_000,
            queries: 200,
            dir: std::env::temp_dir(),
        };
        let mut quick = false;
        let mut set: Vec<&'static str> = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut number = |name: &'static str| -> usize {
                set.push(name);
                let v = it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
                v.replace('_', "")
                    .parse()
                    .unwrap_or_else(|e| panic!("{arg} {v:?}: {e}"))
            };
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => quick = true,
                "--records" => a.records = number("records"),
                "--batch" => a.batch = number("batch"),
                "--query-records" => a.query_records = number("query-records"),
                "--days" => a.days = number("days"),
                "--part-rows" => a.part_rows = number("part-rows"),
                "--queries" => a.queries = number("queries"),
                "--dir" => a.dir = PathBuf::from(it.next().expect("--dir needs a path")),
                other if other.starts_with("--") => panic!(
                    "unknown argument {other}; known: --records N --batch B --query-records N \
                     --days D --part-rows R --queries Q --dir PATH --quick"
                ),
                // A criterion-style filter: ignored.
                _ => {}
            }
        }
        if quick {
            if !set.contains(&"records") {
                a.records = 50_000;
            }
            if !set.contains(&"query-records") {
                a.query_records = 200_000;
            }
            if !set.contains(&"queries") {
                a.queries = 50;
            }
        }
        assert!(a.records > 0 && a.batch > 0 && a.part_rows > 0 && a.days > 0);
        assert!(a.query_records >= a.days, "at least one record a day");
        a.queries = a.queries.max(1);
        a
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let server = RedisServer::start();
    println!(
        "audit bench: {} cores, redis-server on port {}, audit dirs under {} ({})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        server.port(),
        args.dir.display(),
        fs_type(&args.dir)
    );
    let mut report = Report::default();
    runtime.block_on(async {
        let conn = manager(&server.url()).await;
        write_throughput(&args, &server, conn.clone(), &mut report).await;
        query_latency(&args, conn.clone(), &mut report).await;
        s3::bucket(&args, &server, conn, &mut report).await;
    });
    report.print(&args)
}

// --- 1. write throughput -----------------------------------------------------------------

async fn write_throughput(args: &Args, server: &RedisServer, conn: Link, report: &mut Report) {
    let n = args.records;
    println!("\n1. write throughput: {n} records, batch {}", args.batch);
    let mut sync = redis::Client::open(server.url())
        .expect("a client")
        .get_connection()
        .expect("connects");
    // The same records in each format (the same seed): the earlier format first.
    let mut passes = Vec::new();
    for format in [Format::Fields, Format::Encoded] {
        passes.push(drain_pass(args, &mut sync, conn.clone(), format, report).await);
    }
    let (earlier, current) = (&passes[0], &passes[1]);
    let records = &current.records;

    // The split, part 2: the file side alone, on the same records and batches (the records
    // are the same whatever the entries' format).
    let started = Instant::now();
    for chunk in records.chunks(args.batch) {
        std::hint::black_box(schema::to_batch(chunk).expect("to_batch"));
    }
    let to_batch_s = started.elapsed().as_secs_f64();
    let write_part = |root: &Path| -> f64 {
        let dir = AuditStore::local(root).expect("audit dir");
        let started = Instant::now();
        for chunk in records.chunks(args.batch) {
            for (date, run) in by_date(chunk) {
                dir.write_part(&date, run, &|| true)
                    .expect("write_part")
                    .expect("a part");
            }
        }
        started.elapsed().as_secs_f64()
    };
    let disk_root = scratch(&args.dir, "write-part");
    let disk_s = write_part(disk_root.path());
    drop(disk_root);
    let shm = Path::new("/dev/shm");
    let tmpfs_s = shm.is_dir().then(|| {
        let root = scratch(shm, "write-part");
        write_part(root.path())
    });
    let splits: Vec<Split> = passes
        .iter()
        .map(|p| Split {
            to_batch_s,
            disk_s,
            tmpfs_s,
            ..p.split
        })
        .collect();
    println!(
        "  split, µs per record (the same {n} records in each format, batches of {}):",
        args.batch
    );
    println!(
        "    {:<66} {:>16} {:>16}",
        "",
        format!("{} fields", earlier.fields_per_entry),
        format!("{} field", current.fields_per_entry),
    );
    for ((what, a), (_, b)) in splits[0].rows().into_iter().zip(splits[1].rows()) {
        println!(
            "    {what:<66} {:>7.2} µs {:>4.0} % {:>7.2} µs {:>4.0} %",
            a * 1e6 / n as f64,
            100.0 * a / splits[0].total_s,
            b * 1e6 / n as f64,
            100.0 * b / splits[1].total_s,
        );
    }
    report.check(
        (earlier.disk_bytes - current.disk_bytes).abs() <= 0.05 * current.disk_bytes,
        format!(
            "the same records take {:.1} bytes/record on disk from one format, {:.1} from the \
             other",
            earlier.disk_bytes, current.disk_bytes
        ),
    );
    report.write_rate = current.rate;
    report.write_bytes = current.disk_bytes;
    report.write_files = current.files;
    report.split = Some(splits[1]);
    report.split_fields = Some(splits[0]);
    report.formats = passes
        .iter()
        .map(|p| FormatFigures {
            format: p.format,
            fields_per_entry: p.fields_per_entry,
            rate: p.rate,
            resp_bytes: p.resp_bytes,
            memory_bytes: p.memory_bytes,
        })
        .collect();
}

/// One pass of section 1 in one entry format: fill the outbox, read it apart in timed parts,
/// then time the writer draining it.
struct Pass {
    format: Format,
    /// Records per second, outbox → durable parquet.
    rate: f64,
    fields_per_entry: usize,
    /// Bytes per record of the outbox: its entries in an `XRANGE` reply (RESP), and
    /// redis-server's `used_memory` growth while filling it.
    resp_bytes: f64,
    memory_bytes: f64,
    /// Bytes per record of the writer's files, and how many.
    disk_bytes: f64,
    files: usize,
    /// The Redis and decoding parts (the file side is measured once, apart).
    split: Split,
    /// The records as read (for the file side).
    records: Vec<AuditRecord>,
}

async fn drain_pass(
    args: &Args,
    sync: &mut redis::Connection,
    mut conn: Link,
    format: Format,
    report: &mut Report,
) -> Pass {
    let n = args.records;
    let started = Instant::now();
    let memory_before = used_memory(sync);
    fill_outbox_as(sync, n, 0x5eed_0001, format);
    let memory_bytes = (used_memory(sync) - memory_before) / n as f64;
    let xlen: usize = redis::cmd("XLEN")
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
        .query(sync)
        .expect("XLEN");
    println!(
        "  {}: outbox filled with {xlen} entries in {:.2} s (not timed), redis used_memory +{:.0} \
         MB ({memory_bytes:.0} bytes/record)",
        format.label(),
        started.elapsed().as_secs_f64(),
        memory_bytes * n as f64 / 1e6,
    );
    report.check(xlen == n, format!("XLEN {xlen} after {n} XADDs"));

    // The split, part 1: the read the writer does, without the consumer group, batch by
    // batch, timed in parts: the query (redis-server plus redis-rs decoding the reply into
    // `Value`s), `parse_entries` (`Value` → `Entry`), `AuditRecord::from_entry`, and freeing
    // the entries.
    reset_stats(sync);
    let (mut query_s, mut entries_s, mut parse_s, mut drop_s) = (0.0, 0.0, 0.0, 0.0);
    let (mut resp_bytes, mut fields_per_entry) = (0usize, 0usize);
    let mut records: Vec<AuditRecord> = Vec::with_capacity(n);
    let mut from = "-".to_string();
    loop {
        let t = Instant::now();
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(retryguard::keyspace::AUDIT_OUTBOX)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(args.batch)
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        query_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = parse_entries(reply);
        entries_s += t.elapsed().as_secs_f64();
        let Some(last) = got.last().and_then(|e| e.id) else {
            break;
        };
        resp_bytes += got.iter().map(resp_size).sum::<usize>();
        fields_per_entry = got
            .iter()
            .map(|e| e.fields.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0);
        let t = Instant::now();
        records.extend(got.iter().map(|e| {
            AuditRecord::from_entry(e.id.expect("an id"), e.fields.as_ref().expect("fields"))
        }));
        parse_s += t.elapsed().as_secs_f64();
        let full = got.len() >= args.batch;
        let t = Instant::now();
        drop(got);
        drop_s += t.elapsed().as_secs_f64();
        if !full {
            break;
        }
        from = last.next().to_string();
    }
    let xrange_server_s = command_stats(sync)
        .iter()
        .find(|(c, _, _)| c == "xrange")
        .map_or(0.0, |(_, _, usec)| *usec as f64 / 1e6);
    report.check(
        records.len() == n,
        format!("XRANGE read {} of {n}", records.len()),
    );
    report.check(
        records
            .iter()
            .all(|r| r.decision != "unknown" && r.job_id.is_some()),
        format!("{}: every record read has its decision", format.label()),
    );

    // The timed run: the writer drains the outbox.
    let root = scratch(&args.dir, "write");
    let dir = Arc::new(AuditStore::local(root.path()).expect("audit dir"));
    let config = WriterConfig {
        batch_size: args.batch,
        ..WriterConfig::default()
    };
    let status = Arc::new(WriterStatus::default());
    let mut writer = AuditWriter::new(conn.clone(), dir.clone(), config, status.clone());
    let mut flushes = Vec::new();
    reset_stats(sync);
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let written = writer.flush_now().await.expect("flush_now");
        if written == 0 {
            break;
        }
        flushes.push(t.elapsed());
    }
    let total_s = started.elapsed().as_secs_f64();
    let server = command_stats(sync);
    let rate = n as f64 / total_s;
    // Free its lease, as a writer's shutdown does, for the next pass's writer.
    redis::cmd("DEL")
        .arg(retryguard::keyspace::AUDIT_LEASE)
        .query::<()>(sync)
        .expect("DEL lease");
    let written = status
        .records_written
        .load(std::sync::atomic::Ordering::Relaxed);
    let xlen: usize = redis::cmd("XLEN")
        .arg(retryguard::keyspace::AUDIT_OUTBOX)
        .query(sync)
        .expect("XLEN");
    report.check(
        written == n as u64 && xlen == 0,
        format!("the writer wrote {written} of {n}, the outbox keeps {xlen}"),
    );
    let parts = dir.parts().expect("parts");
    let on_disk: usize = parts
        .iter()
        .map(|p| {
            read_all(std::fs::File::open(&p.path).expect("open"))
                .expect("read back")
                .len()
        })
        .sum();
    report.check(
        on_disk == n,
        format!("{on_disk} records in the files, {n} sent"),
    );
    let bytes = dir.size_bytes().expect("size");
    flushes.sort();
    println!(
        "  {}: writer drained {n} records in {total_s:.3} s = {rate:.0} records/s ({} \
         flushes, {} files; flush p50 {:.1} ms, max {:.1} ms)",
        format.label(),
        flushes.len(),
        parts.len(),
        ms(percentile(&flushes, 0.5)),
        ms(percentile(&flushes, 1.0)),
    );
    // Commands a script runs are counted too, and inside the script's own time.
    let nested = ["xack", "xdel"];
    let server_s = server
        .iter()
        .filter(|(c, _, _)| !nested.contains(&c.as_str()))
        .map(|(_, _, usec)| *usec as f64 / 1e6)
        .sum::<f64>();
    let shown: Vec<String> = server
        .iter()
        .filter(|(_, _, usec)| *usec * 100 >= (server_s * 1e6) as u64)
        .map(|(c, calls, usec)| format!("{c} {calls}× {:.2} µs/record", *usec as f64 / n as f64))
        .collect();
    println!(
        "    redis-server busy {server_s:.3} s of it ({:.1} µs/record): {}",
        server_s * 1e6 / n as f64,
        shown.join(", ")
    );
    Pass {
        format,
        rate,
        fields_per_entry,
        resp_bytes: resp_bytes as f64 / n as f64,
        memory_bytes,
        disk_bytes: bytes as f64 / n as f64,
        files: parts.len(),
        split: Split {
            server_s,
            decode_s: (query_s - xrange_server_s).max(0.0),
            entries_s,
            parse_s,
            drop_s,
            to_batch_s: 0.0,
            disk_s: 0.0,
            tmpfs_s: None,
            total_s,
        },
        records,
    }
}

/// How the bench writes outbox entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One field `r`, the record as a JSON object (what retryguard writes).
    Encoded,
    /// One stream field per column (what earlier versions wrote; still read).
    Fields,
}

impl Format {
    fn label(self) -> &'static str {
        match self {
            Self::Encoded => "one field `r` (JSON)",
            Self::Fields => "one field per column (earlier)",
        }
    }
}

/// `XADD`s `n` realistic records to the outbox (pipelined) and puts the tracebacks they name
/// in the blob hash, as the retry service does.
fn fill_outbox(sync: &mut redis::Connection, n: usize, seed: u64) {
    fill_outbox_as(sync, n, seed, Format::Encoded);
}

/// `fill_outbox` with entries in `format`.
fn fill_outbox_as(sync: &mut redis::Connection, n: usize, seed: u64, format: Format) {
    let mut generator = Generator::new(seed);
    let mut blobs = redis::pipe();
    for f in &generator.families {
        blobs
            .cmd("HSET")
            .arg(retryguard::keyspace::AUDIT_BLOBS)
            .arg(&f.traceback_sha256)
            .arg(&f.traceback)
            .ignore();
    }
    blobs.query::<()>(sync).expect("HSET blobs");
    let mut left = n;
    while left > 0 {
        let chunk = left.min(PIPELINE);
        let mut pipe = redis::pipe();
        let now = now_ms();
        for _ in 0..chunk {
            let fields = generator.next_fields(now);
            let cmd = pipe
                .cmd("XADD")
                .arg(retryguard::keyspace::AUDIT_OUTBOX)
                .arg("*");
            match format {
                Format::Encoded => {
                    cmd.arg(RECORD_FIELD).arg(encoding::encode(&fields));
                }
                Format::Fields => {
                    for (k, v) in &fields {
                        cmd.arg(*k).arg(v);
                    }
                }
            }
            cmd.ignore();
        }
        pipe.query::<()>(sync).expect("XADD");
        left -= chunk;
    }
}

// --- 2. query latency --------------------------------------------------------------------

/// Writes `args.query_records` records over `args.days` closed days as `args.part_rows`-record
/// parts (what a 1 s flush under load makes), and returns job ids to look up with their
/// record counts. Blocking (a bucket's calls): run it with `block_in_place`.
fn write_query_set(args: &Args, dir: &AuditStore, report: &mut Report) -> Vec<(String, usize)> {
    let n = args.query_records;
    // Closed days: the last one ends at today's midnight (UTC).
    let today = now_ms() / DAY_MS * DAY_MS;
    let start = today - args.days as u64 * DAY_MS;
    let span = args.days as u64 * DAY_MS;
    let mut generator = Generator::new(0x5eed_0002);
    let mut sample: HashMap<String, usize> = HashMap::new();
    let every = (n / (args.queries * 4)).max(1);
    let started = Instant::now();
    let mut gen_s = 0.0;
    let mut buf: Vec<AuditRecord> = Vec::with_capacity(args.part_rows);
    let mut files = 0usize;
    let flush = |buf: &mut Vec<AuditRecord>, files: &mut usize| {
        if let Some(first) = buf.first() {
            dir.write_part(&first.date(), buf, &|| true)
                .expect("write_part")
                .expect("a part");
            *files += 1;
        }
        buf.clear();
    };
    for i in 0..n {
        let t = Instant::now();
        let ms = start + (i as u128 * span as u128 / n as u128) as u64;
        let fields = generator.next_fields(ms);
        let job = fields[0].1.clone();
        let record = AuditRecord::from_entry(
            StreamId { ms, seq: 0 },
            &fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>(),
        );
        gen_s += t.elapsed().as_secs_f64();
        if let Some(count) = sample.get_mut(&job) {
            *count += 1;
        } else if generator.last_new && i % every == 0 && sample.len() < args.queries * 4 {
            sample.insert(job, 1);
        }
        if buf
            .first()
            .is_some_and(|f| f.date() != record.date() || buf.len() >= args.part_rows)
        {
            flush(&mut buf, &mut files);
        }
        buf.push(record);
    }
    flush(&mut buf, &mut files);
    let build_s = started.elapsed().as_secs_f64();
    let dates = dir.dates().expect("dates");
    println!(
        "  wrote {n} records as {files} files in {} partitions in {build_s:.1} s ({gen_s:.1} s \
         of it generating records)",
        dates.len()
    );
    report.check(
        dates.len() == args.days,
        format!("{} partitions, {} days", dates.len(), args.days),
    );

    // Job ids: spread over the sample (which is spread over the days), some recurring.
    let mut ids: Vec<(String, usize)> = sample.into_iter().collect();
    ids.sort();
    let step = (ids.len() / (args.queries + 1)).max(1);
    let ids: Vec<(String, usize)> = ids
        .into_iter()
        .step_by(step)
        .take(args.queries + 1)
        .collect();
    let recurring = ids.iter().filter(|(_, c)| *c > 1).count();
    println!(
        "  {} job ids to look up ({recurring} with more than one record)",
        ids.len()
    );

    ids
}

async fn query_latency(args: &Args, mut conn: Link, report: &mut Report) {
    let n = args.query_records;
    println!(
        "\n2. query latency: {n} records over {} days, {}-record files, then compacted",
        args.days, args.part_rows
    );
    let root = scratch(&args.dir, "query");
    let dir = Arc::new(AuditStore::local(root.path()).expect("audit dir"));
    let ids = write_query_set(args, &dir, report);
    let dates = dir.dates().expect("dates");
    report.query_bytes_before = dir.size_bytes().expect("size") as f64 / n as f64;
    let before = run_queries(&mut conn, &dir, &ids, n, report).await;
    before.print("uncompacted");
    report.before = Some(before);

    let started = Instant::now();
    let mut merged = 0;
    for date in &dates {
        merged += dir.compact(date).expect("compact");
    }
    let parts = dir.parts().expect("parts");
    println!(
        "  compacted {merged} files into {} in {:.1} s",
        parts.len(),
        started.elapsed().as_secs_f64()
    );
    let bytes = dir.size_bytes().expect("size");
    report.query_bytes_after = bytes as f64 / n as f64;
    report.query_files_after = parts.len();
    let after = run_queries(&mut conn, &dir, &ids, n, report).await;
    after.print("compacted");
    report.after = Some(after);
}

#[derive(Debug, Clone)]
struct Latency {
    files: usize,
    cold: Duration,
    job: Vec<Duration>,
    missing: Vec<Duration>,
    newest_cold: Duration,
    newest: Vec<Duration>,
}

impl Latency {
    fn print(&self, label: &str) {
        println!(
            "  {label:<11} ({} files): job id cold {:.1} ms, then p50 {:.2} / p99 {:.2} / max \
             {:.2} ms over {}; missing id p50 {:.2} ms; newest 100 cold {:.1} ms, p50 {:.2} / \
             p99 {:.2} ms",
            self.files,
            ms(self.cold),
            ms(percentile(&self.job, 0.5)),
            ms(percentile(&self.job, 0.99)),
            ms(percentile(&self.job, 1.0)),
            self.job.len(),
            ms(percentile(&self.missing, 0.5)),
            ms(self.newest_cold),
            ms(percentile(&self.newest, 0.5)),
            ms(percentile(&self.newest, 0.99)),
        );
    }
}

async fn run_queries(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    ids: &[(String, usize)],
    total: usize,
    report: &mut Report,
) -> Latency {
    let files = tokio::task::block_in_place(|| dir.parts())
        .expect("parts")
        .len();
    let by_job = |job: &str| AuditQuery {
        job_id: Some(job.to_string()),
        ..AuditQuery::default()
    };
    let mut timed = async |q: &AuditQuery| {
        let t = Instant::now();
        let page = query(conn, dir, q).await.expect("query");
        (t.elapsed(), page)
    };
    let mut checks = Vec::new();
    let mut job = Vec::with_capacity(ids.len());
    let mut cold = Duration::ZERO;
    for (i, (id, count)) in ids.iter().enumerate() {
        let (d, page) = timed(&by_job(id)).await;
        if i == 0 {
            cold = d;
        } else {
            job.push(d);
        }
        let ok = page.records.len() == *count
            && page
                .records
                .iter()
                .all(|r| r.job_id.as_deref() == Some(id.as_str()));
        checks.push((
            ok,
            format!(
                "job {id}: {} records returned, {count} written",
                page.records.len()
            ),
        ));
    }
    let mut missing = Vec::new();
    for i in 0..ids.len().min(50) {
        let (d, page) = timed(&by_job(&format!("{i:032x}"))).await;
        missing.push(d);
        checks.push((
            page.records.is_empty(),
            format!("a missing job id returned {}", page.records.len()),
        ));
    }
    let newest_q = AuditQuery::default();
    let mut newest = Vec::new();
    let mut newest_cold = Duration::ZERO;
    for i in 0..51 {
        let (d, page) = timed(&newest_q).await;
        if i == 0 {
            newest_cold = d;
        } else {
            newest.push(d);
        }
        let ordered = page
            .records
            .windows(2)
            .all(|w| StreamId::parse(&w[0].record_id) > StreamId::parse(&w[1].record_id));
        checks.push((
            page.records.len() == 100 && ordered && page.next_cursor.is_some(),
            format!(
                "newest 100 of {total}: {} records, ordered {ordered}",
                page.records.len()
            ),
        ));
    }
    for (ok, what) in checks {
        report.check(ok, what);
    }
    job.sort();
    missing.sort();
    newest.sort();
    Latency {
        files,
        cold,
        job,
        missing,
        newest_cold,
        newest,
    }
}

// --- the summary -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Split {
    /// redis-server busy during the drain (commandstats).
    server_s: f64,
    /// redis-rs decoding a reply of the same size into `Value`s (client `XRANGE` time − the
    /// server's).
    decode_s: f64,
    entries_s: f64,
    parse_s: f64,
    /// Freeing the decoded entries (their strings).
    drop_s: f64,
    to_batch_s: f64,
    disk_s: f64,
    tmpfs_s: Option<f64>,
    total_s: f64,
}

impl Split {
    fn rest(&self) -> f64 {
        self.total_s
            - self.server_s
            - self.decode_s
            - self.entries_s
            - self.parse_s
            - self.drop_s
            - self.disk_s
    }

    /// The parts of the writer's drain, each measured apart on the same records.
    fn rows(&self) -> Vec<(&'static str, f64)> {
        let mut rows = vec![
            (
                "redis-server: XREADGROUP, ack script (XACK+XDEL), status",
                self.server_s,
            ),
            (
                "redis-rs: RESP reply → Value (XRANGE client − server time)",
                self.decode_s,
            ),
            (
                "writer::parse_entries: Value → Entry (clones every Value)",
                self.entries_s,
            ),
            ("AuditRecord::from_entry", self.parse_s),
            ("freeing the decoded entries (Strings)", self.drop_s),
            (
                "AuditStore::write_part: to_batch+parquet+zstd+fsync+rename",
                self.disk_s,
            ),
            ("  of which schema::to_batch", self.to_batch_s),
        ];
        if let Some(t) = self.tmpfs_s {
            rows.push((
                "  of which fsyncs + renames (disk − tmpfs run)",
                self.disk_s - t,
            ));
        }
        rows.push((
            "rest: round trips, drops, scheduling (total − the above)",
            self.rest(),
        ));
        rows.push((
            "total: AuditWriter::flush_now until it returns 0",
            self.total_s,
        ));
        rows
    }
}

/// Section 1's figures of one entry format.
#[derive(Debug, Clone, Copy)]
struct FormatFigures {
    format: Format,
    fields_per_entry: usize,
    rate: f64,
    resp_bytes: f64,
    memory_bytes: f64,
}

#[derive(Debug, Default)]
struct Report {
    write_rate: f64,
    write_bytes: f64,
    write_files: usize,
    split: Option<Split>,
    /// The same split for entries of one field per column (the earlier format).
    split_fields: Option<Split>,
    /// Section 1 per entry format: the earlier one, then the current one.
    formats: Vec<FormatFigures>,
    before: Option<Latency>,
    after: Option<Latency>,
    query_bytes_before: f64,
    query_bytes_after: f64,
    query_files_after: usize,
    bucket: Option<s3::BucketFigures>,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            eprintln!("CORRECTNESS FAILURE: {what}");
            self.failures.push(what);
        }
    }

    fn print(&self, args: &Args) -> ExitCode {
        println!(
            "\nsummary ({} cores; {} records written, batch {}; {} query records, {} days)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.records,
            args.batch,
            args.query_records,
            args.days
        );
        println!(
            "  {:<52} {:>14} {:>12}  verdict",
            "measure", "measured", "target"
        );
        let row = |what: &str, got: String, target: String, ok: Option<bool>| {
            let verdict = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            println!("  {what:<52} {got:>14} {target:>12}  {verdict}");
        };
        row(
            "write: outbox -> durable parquet (records/s)",
            format!("{:.0}", self.write_rate),
            format!(">= {WRITE_TARGET:.0}"),
            Some(self.write_rate >= WRITE_TARGET),
        );
        row(
            "  the one-field step's target (issue 18)",
            format!("{:.0}", self.write_rate),
            format!(">= {STEP_WRITE_TARGET:.0}"),
            Some(self.write_rate >= STEP_WRITE_TARGET),
        );
        for (label, split) in [("one field", self.split), ("per column", self.split_fields)] {
            let Some(s) = split else { continue };
            let us = |secs: f64| secs * 1e6 / args.records as f64;
            println!(
                "    µs/record, {label:<10}: redis-server {:.1} | redis-rs decode {:.1} | \
                 parse_entries {:.1} | from_entry {:.1} | free {:.1} | write_part {:.1} (fsync \
                 {:.1}) | rest {:.1} | total {:.1}",
                us(s.server_s),
                us(s.decode_s),
                us(s.entries_s),
                us(s.parse_s),
                us(s.drop_s),
                us(s.disk_s),
                s.tmpfs_s.map_or(f64::NAN, |t| us(s.disk_s - t)),
                us(s.rest()),
                us(s.total_s)
            );
        }
        for f in self.formats.iter().filter(|f| f.format == Format::Fields) {
            row(
                &format!(
                    "write, the earlier format ({} fields/entry)",
                    f.fields_per_entry
                ),
                format!("{:.0}", f.rate),
                String::new(),
                None,
            );
        }
        for f in &self.formats {
            row(
                &format!(
                    "outbox bytes/record, {}: RESP / redis",
                    match f.format {
                        Format::Encoded => "one field",
                        Format::Fields => "per column",
                    }
                ),
                format!("{:.0} / {:.0}", f.resp_bytes, f.memory_bytes),
                String::new(),
                None,
            );
        }
        for (label, lat) in [("compacted", &self.after), ("uncompacted", &self.before)] {
            let Some(l) = lat else { continue };
            let p99 = ms(percentile(&l.job, 0.99));
            let target = (label == "compacted").then_some(p99 <= QUERY_TARGET_MS);
            row(
                &format!("query job id, {label} ({} files): p50 / p99 ms", l.files),
                format!("{:.2} / {:.2}", ms(percentile(&l.job, 0.5)), p99),
                format!("<= {QUERY_TARGET_MS:.0}"),
                target,
            );
            row(
                &format!("  job id, first call (cold metadata), {label}"),
                format!("{:.1} ms", ms(l.cold)),
                String::new(),
                None,
            );
            row(
                &format!("  newest 100, {label}: p50 / p99 ms"),
                format!(
                    "{:.2} / {:.2}",
                    ms(percentile(&l.newest, 0.5)),
                    ms(percentile(&l.newest, 0.99))
                ),
                String::new(),
                None,
            );
        }
        row(
            &format!(
                "bytes/record, query set compacted ({} files)",
                self.query_files_after
            ),
            format!("{:.1}", self.query_bytes_after),
            format!("<= {BYTES_TARGET:.0}"),
            Some(self.query_bytes_after <= BYTES_TARGET),
        );
        row(
            &format!("bytes/record, query set in {}-record files", args.part_rows),
            format!("{:.1}", self.query_bytes_before),
            format!("<= {BYTES_TARGET:.0}"),
            Some(self.query_bytes_before <= BYTES_TARGET),
        );
        row(
            &format!("bytes/record, the writer's {} files", self.write_files),
            format!("{:.1}", self.write_bytes),
            format!("<= {BYTES_TARGET:.0}"),
            Some(self.write_bytes <= BYTES_TARGET),
        );
        if let Some(b) = &self.bucket {
            row(
                "bucket write: outbox -> S3 parts (records/s)",
                format!("{:.0}", b.write_rate),
                String::new(),
                None,
            );
            row(
                &format!("bucket query job id ({} parts): p50 / p99 ms", b.files),
                format!("{:.2} / {:.2}", b.job_p50_ms, b.job_p99_ms),
                "<= 100".to_string(),
                Some(b.job_p99_ms <= 100.0),
            );
            row(
                "bytes/record: bucket writer / query set compacted",
                format!("{:.1} / {:.1}", b.write_bytes, b.query_bytes),
                String::new(),
                None,
            );
        }
        if self.failures.is_empty() {
            println!("  correctness: every check passed");
            ExitCode::SUCCESS
        } else {
            println!("  correctness: {} checks FAILED", self.failures.len());
            ExitCode::FAILURE
        }
    }
}

// --- realistic records ---------------------------------------------------------------------

/// One kind of failure: where it happens and how it reads. Each has its own traceback (about
/// 50 distinct tracebacks in all, like a real deployment's handful of failing call sites).
#[derive(Debug, Clone)]
struct Family {
    job_type: String,
    queue: &'static str,
    exc_type: &'static str,
    /// `{n}` is replaced by a per-record number (an id, a port…), `{h}` by a host number.
    message: &'static str,
    failure_type: &'static str,
    retryable: bool,
    reason: String,
    traceback: String,
    traceback_sha256: String,
}

/// (exc_type, message, failure_type, retryable)
const KINDS: &[(&str, &str, &str, bool)] = &[
    (
        "redis.exceptions.ConnectionError",
        "Error 111 connecting to cache-{h}.internal:6379. Connection refused.",
        "network_error",
        true,
    ),
    (
        "requests.exceptions.ConnectTimeout",
        "HTTPSConnectionPool(host='api.payments.example.com', port=443): Max retries exceeded \
         with url: /v1/charges/ch_{n} (Caused by ConnectTimeoutError('Connection to \
         api.payments.example.com timed out. (connect timeout=10)'))",
        "timeout",
        true,
    ),
    (
        "requests.exceptions.HTTPError",
        "429 Client Error: Too Many Requests for url: https://api.crm.example.com/v2/contacts/{n}",
        "rate_limit",
        true,
    ),
    (
        "requests.exceptions.HTTPError",
        "503 Server Error: Service Unavailable for url: https://api.shipping.example.com/labels",
        "temporary_error",
        true,
    ),
    (
        "psycopg2.errors.DeadlockDetected",
        "deadlock detected\nDETAIL:  Process {n} waits for ShareLock on transaction 8812; \
         blocked by process 4411.",
        "database_lock",
        true,
    ),
    (
        "rq.timeouts.JobTimeoutException",
        "Task exceeded maximum timeout value (180 seconds)",
        "timeout",
        true,
    ),
    (
        "ValueError",
        "invalid email address for customer {n}",
        "validation_error",
        false,
    ),
    (
        "app.models.DoesNotExist",
        "Order matching query does not exist (id={n})",
        "data_not_found",
        false,
    ),
    ("KeyError", "'billing_address'", "logic_error", false),
    (
        "socket.gaierror",
        "[Errno -3] Temporary failure in name resolution",
        "network_error",
        true,
    ),
];

const JOB_TYPES: &[(&str, &str)] = &[
    ("app.tasks.billing.charge_card", "billing"),
    ("app.tasks.email.send_receipt", "email"),
    ("app.tasks.crm.sync_contact", "default"),
    ("app.tasks.shipping.create_label", "shipping"),
    ("app.tasks.reports.build_daily", "low"),
];

const ACTORS: &[&str] = &["retryguard", "ops-bot", "local", "alice", "scheduler"];

/// A job that failed and may fail again.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    family: usize,
    attempts: u32,
    first_failed_ms: u64,
    n: u64,
    h: u64,
}

/// Makes the outbox fields of realistic records through `retry::records::job_record` (the
/// producer the retry service uses), mostly `retried` decisions of retry-all operations, a
/// third of them a later attempt of a job seen shortly before.
#[derive(Debug)]
struct Generator {
    rng: u64,
    families: Vec<Family>,
    recent: Vec<Job>,
    next_recent: usize,
    digest: String,
    params: String,
    operation: String,
    operation_left: usize,
    actor: &'static str,
    /// Whether the last record was its job's first.
    last_new: bool,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut families = Vec::new();
        for (k, (exc_type, message, failure_type, retryable)) in KINDS.iter().enumerate() {
            for (j, (job_type, queue)) in JOB_TYPES.iter().enumerate() {
                let module = job_type.rsplit_once('.').map_or(*job_type, |(m, _)| m);
                let function = job_type.rsplit('.').next().unwrap_or("run");
                let traceback = format!(
                    "Traceback (most recent call last):\n  File \"/app/.venv/lib/python3.12/\
                     site-packages/rq/worker.py\", line 1431, in perform_job\n    rv = \
                     job.perform()\n  File \"/app/.venv/lib/python3.12/site-packages/rq/job.py\
                     \", line 1280, in perform\n    self._result = self._execute()\n  File \
                     \"/app/{}.py\", line {}, in {function}\n    result = client.call(payload)\n  \
                     File \"/app/app/clients/base.py\", line {}, in call\n    raise \
                     {exc_type}(msg)\n{exc_type}: {}\n",
                    module.replace('.', "/"),
                    40 + 7 * j,
                    100 + 13 * k,
                    message.replace("{n}", "...").replace("{h}", "1"),
                );
                let traceback_sha256 = hex::encode(Sha256::digest(traceback.as_bytes()));
                let reason = if *retryable {
                    format!("type {exc_type} matches {failure_type}")
                } else {
                    format!(
                        "failure type {failure_type} is not retryable: a retry would fail the \
                         same way"
                    )
                };
                families.push(Family {
                    job_type: (*job_type).to_string(),
                    queue,
                    exc_type,
                    message,
                    failure_type,
                    retryable: *retryable,
                    reason,
                    traceback,
                    traceback_sha256,
                });
            }
        }
        let mut g = Self {
            rng: seed,
            families,
            recent: Vec::with_capacity(2_000),
            next_recent: 0,
            digest: String::new(),
            params: r#"{"cooldown_seconds":"60","max_attempts":"5"}"#.to_string(),
            operation: String::new(),
            operation_left: 0,
            actor: ACTORS[0],
            last_new: false,
        };
        g.digest = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            g.u64(),
            g.u64(),
            g.u64(),
            g.u64()
        );
        g
    }

    /// splitmix64.
    fn u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n.max(1)
    }

    /// The outbox fields of the next record, decided at `now` (epoch ms); `job_id` first.
    fn next_fields(&mut self, now: u64) -> Vec<(&'static str, String)> {
        if self.operation_left == 0 {
            // A retry-all covers a few hundred jobs; now and then a policy update.
            self.operation = format!("op-{now:013x}-{:016x}", self.u64());
            self.operation_left = 50 + self.below(500) as usize;
            self.actor = ACTORS[self.below(ACTORS.len() as u64) as usize];
            if self.below(20) == 0 {
                self.digest = format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    self.u64(),
                    self.u64(),
                    self.u64(),
                    self.u64()
                );
            }
        }
        self.operation_left -= 1;
        let again = !self.recent.is_empty() && self.below(3) == 0;
        self.last_new = !again;
        let mut job = if again {
            let i = self.below(self.recent.len() as u64) as usize;
            let mut job = self.recent[i].clone();
            job.attempts += 1;
            self.recent[i] = job.clone();
            job
        } else {
            let family = self.families_pick();
            let job = Job {
                id: format!(
                    "{:016x}{:016x}",
                    self.u64(),
                    self.u64() & !0xf000_0000_0000_0000 | 0x4000_0000_0000_0000
                ),
                family,
                attempts: 0,
                first_failed_ms: now.saturating_sub(self.below(3_600_000)),
                n: 10_000 + self.below(900_000),
                h: 1 + self.below(6),
            };
            if self.recent.len() < 2_000 {
                self.recent.push(job.clone());
            } else {
                self.recent[self.next_recent] = job.clone();
                self.next_recent = (self.next_recent + 1) % 2_000;
            }
            job
        };
        job.first_failed_ms = job.first_failed_ms.min(now);
        let failed_at = now
            .saturating_sub(self.below(600_000))
            .max(job.first_failed_ms);
        let cooling = self.below(8) == 0;
        let seed = self.u64();
        let f = &self.families[job.family];
        let outcome = if !f.retryable {
            Outcome::BlockedNonRetryable
        } else if job.attempts >= 5 {
            Outcome::BlockedMaxAttempts
        } else if cooling {
            Outcome::BlockedCooldown
        } else {
            Outcome::Retried
        };
        let reason = match outcome {
            Outcome::BlockedMaxAttempts => format!(
                "max attempts reached ({} of 5 retries made): manual intervention needed",
                job.attempts
            ),
            Outcome::BlockedCooldown => format!(
                "cooldown: retry at {}",
                retryguard::clock::format_rfc3339(failed_at + (60_000 << job.attempts.min(6)))
            ),
            _ => f.reason.clone(),
        };
        let o = JobOutcome {
            job_id: job.id.clone(),
            queue: f.queue.to_string(),
            job_type: f.job_type.clone(),
            outcome,
            reason,
            classification: Some(Classification {
                failure_type: f.failure_type.to_string(),
                retryable: f.retryable,
                reason: f.reason.clone(),
            }),
            attempt: job.attempts + u32::from(outcome == Outcome::Retried),
            policy_digest: self.digest.clone(),
            retry_at_ms: None,
            dry_run: false,
            forced: false,
        };
        let input = FailureInput {
            job_id: job.id.clone(),
            job_type: f.job_type.clone(),
            queue: f.queue.to_string(),
            job_status: "failed".into(),
            exc_type: f.exc_type.to_string(),
            exc_message: f
                .message
                .replace("{n}", &job.n.to_string())
                .replace("{h}", &job.h.to_string()),
            traceback: f.traceback.clone(),
            failed_at_ms: failed_at,
            first_failed_at_ms: job.first_failed_ms,
            attempts: job.attempts,
            last_attempt_at_ms: (job.attempts > 0).then(|| failed_at.saturating_sub(30_000)),
            queue_retries_left: None,
            seed,
            attributes: Vec::new(),
        };
        let options = RetryOptions::new();
        let cx = retryguard::retry::records::Context {
            actor: self.actor,
            options: &options,
            operation_id: &self.operation,
            now_ms: now,
        };
        let fields =
            retryguard::retry::records::job_record(&o, cx, Some((&input, &self.params)), None)
                .fields();
        debug_assert_eq!(fields[0].0, "job_id");
        fields
    }

    /// Families weighted like a real mix: network and rate limits most.
    fn families_pick(&mut self) -> usize {
        const WEIGHTS: [u64; 10] = [25, 15, 15, 10, 5, 8, 6, 6, 4, 6];
        let total: u64 = WEIGHTS.iter().sum();
        let mut x = self.below(total);
        let mut kind = 0;
        for (i, w) in WEIGHTS.iter().enumerate() {
            if x < *w {
                kind = i;
                break;
            }
            x -= w;
        }
        kind * JOB_TYPES.len() + self.below(JOB_TYPES.len() as u64) as usize
    }
}

// --- helpers -------------------------------------------------------------------------------

/// Bytes of one entry in an `XRANGE` reply (RESP2 bulk strings).
fn resp_size(e: &retryguard::audit::writer::Entry) -> usize {
    let bulk = |len: usize| 1 + len.to_string().len() + 2 + len + 2;
    let fields = e.fields.as_deref().unwrap_or_default();
    // `*2` [id, `*2n` [k, v, …]]
    4 + bulk(e.raw_id.len())
        + 1
        + (2 * fields.len()).to_string().len()
        + 2
        + fields
            .iter()
            .map(|(k, v)| bulk(k.len()) + bulk(v.len()))
            .sum::<usize>()
}

/// redis-server's `used_memory`, in bytes.
fn used_memory(con: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(con)
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn reset_stats(con: &mut redis::Connection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(con)
        .expect("CONFIG RESETSTAT");
}

/// (command, calls, usec) from `INFO commandstats`, largest usec first.
fn command_stats(con: &mut redis::Connection) -> Vec<(String, u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO commandstats");
    let mut out: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_string(), field("calls")?, field("usec")?))
        })
        .filter(|(name, _, _)| !matches!(name.as_str(), "info" | "config|resetstat" | "config"))
        .collect();
    out.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    out
}

async fn manager(url: &str) -> Link {
    let config = retryguard::config::RedisConfig {
        url: url.to_owned(),
        connect_timeout_ms: 5_000,
        response_timeout_ms: 60_000,
        ..Default::default()
    };
    Link::connect(&config, Duration::ZERO)
        .await
        .expect("connects")
}

/// Runs of one UTC date, in order.
fn by_date(records: &[AuditRecord]) -> Vec<(String, &[AuditRecord])> {
    let mut out: Vec<(String, &[AuditRecord])> = Vec::new();
    let mut start = 0;
    for i in 1..=records.len() {
        if i == records.len() || records[i].date() != records[start].date() {
            out.push((records[start].date(), &records[start..i]));
            start = i;
        }
    }
    out
}

fn scratch(parent: &Path, name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("retryguard-audit-bench-{name}-"))
        .tempdir_in(parent)
        .expect("a scratch dir")
}

/// The file system type of `path` (from /proc/mounts: the longest mount point above it).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at)
                .then(|| (at.len(), format!("{ty} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown fs".into(), |(_, t)| t)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
