//! The audit writer: moves records from the Redis outbox stream into durable parquet files.
//!
//! One writer at a time holds the lease `retryguard:audit:v2:lease`; every instance runs the
//! loop and the others wait. The outbox is read through the consumer group
//! `retryguard-audit`, so entries a writer read but never acknowledged stay pending; a new
//! lease holder claims them (`XAUTOCLAIM`). The order of one flush:
//!
//! 1. tracebacks waiting in `retryguard:audit:blobs` are written to `_blobs/` (fsynced);
//! 2. entries already inside a finished file (by the stream ids in its name) are only
//!    acknowledged: the crash came after the rename and before the acknowledgement;
//! 3. the rest become one file per UTC date, each written to `.staging/`, fsynced, renamed
//!    into `date=…/` and the directory fsynced;
//! 4. only then are the entries acknowledged and deleted from the stream, by a script that
//!    first checks the lease is still ours.
//!
//! A failure at any step acknowledges nothing: the entries stay in Redis and are written
//! by the next attempt (or the next lease holder). Exactly one copy follows from the file
//! names; see `files.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::redis_link::Link;
use redis::Value;
use tokio::sync::watch;

use super::files::Written;
use super::schema::{self, AuditRecord};
use super::store::AuditStore;

mod entries;
mod lease;

pub use entries::{Entry, parse_entries, parse_xread};

/// Settings of the writer (config section `[audit]`).
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// A batch is written when it is this old…
    pub flush_interval: Duration,
    /// …or this large.
    pub batch_size: usize,
    /// How long the lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Partitions older than this many days are deleted (0: keep everything).
    pub retention_days: u32,
    /// A partition with this many small files is compacted (closed days: 2).
    pub compact_min_files: usize,
    /// How often compaction and retention run.
    pub maintenance_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            batch_size: 10_000,
            lease_ttl: Duration::from_secs(15),
            retention_days: 0,
            compact_min_files: 16,
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

/// What the writer of this process is doing, for `/readyz`, stats and metrics.
#[derive(Debug, Default)]
pub struct WriterStatus {
    pub holds_lease: AtomicBool,
    pub records_written: AtomicU64,
    pub files_written: AtomicU64,
    pub last_flush_ms: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl WriterStatus {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e;
        }
    }
}

/// Errors of one flush; none of them acknowledges anything.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("audit store: {0}")]
    Io(#[from] std::io::Error),
    #[error("the audit lease was lost")]
    LeaseLost,
}

/// Acknowledges and deletes entries, only while the lease is ours.
/// KEYS[1] lease, KEYS[2] outbox; ARGV[1] our token, ARGV[2] group, ARGV[3..] ids.
const ACK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[2], ARGV[2], unpack(ids))
return redis.call('XDEL', KEYS[2], unpack(ids))
"#;

/// Longest single blocking read of the outbox.
const MAX_BLOCK: Duration = Duration::from_millis(250);

/// Ids per acknowledgement call.
const ACK_CHUNK: usize = 1000;

/// Traceback bytes stored in one `put_blobs` call at most.
const BLOB_PACK_BYTES: usize = 8 << 20;

/// The writer of one process.
pub struct AuditWriter {
    conn: Link,
    dir: Arc<AuditStore>,
    config: WriterConfig,
    /// Our consumer name and lease token.
    token: String,
    status: Arc<WriterStatus>,
    /// Until when our lease is certainly valid (renewal time + ttl − margin).
    lease_until: Option<Instant>,
    last_renew: Instant,
    written: Written,
    last_maintenance: Instant,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// A writer over its own connection (it blocks on `XREADGROUP`, which would stall
    /// other users of a shared one).
    pub fn new(
        conn: Link,
        dir: Arc<AuditStore>,
        config: WriterConfig,
        status: Arc<WriterStatus>,
    ) -> Self {
        let token = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        Self {
            conn,
            dir,
            config,
            token,
            status,
            lease_until: None,
            last_renew: Instant::now(),
            written: Written::default(),
            last_maintenance: Instant::now(),
        }
    }

    pub fn status(&self) -> Arc<WriterStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` turns true, then flushes what the outbox holds (up to
    /// `drain_timeout`) and releases the lease.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let step = tokio::select! {
                r = self.step() => r,
                _ = shutdown.changed() => continue,
            };
            match step {
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    if !self.holds_lease() {
                        // Another instance writes; check again in a while.
                        let wait = (self.config.lease_ttl / 3).min(Duration::from_secs(2));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                Err(e) => {
                    self.report_error(&e).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let deadline = Instant::now() + drain_timeout;
        while self.holds_lease() && Instant::now() < deadline {
            match self.flush_now().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.report_error(&e).await;
                    break;
                }
            }
        }
        self.release().await;
    }

    async fn report_error(&mut self, e: &WriteError) {
        tracing::error!(error = %e, "audit writer: nothing was acknowledged; will retry");
        self.status.set_error(Some(e.to_string()));
        let _ = self.publish_status(Some(&e.to_string())).await;
        if matches!(e, WriteError::LeaseLost) {
            self.lease_until = None;
        }
    }

    /// One turn of the loop: take or keep the lease, then write one batch (waiting up to
    /// the flush interval for it to fill). Returns the records written.
    pub async fn step(&mut self) -> Result<usize, WriteError> {
        if !self.ensure_lease().await? {
            return Ok(0);
        }
        let entries = self.read_batch(true).await?;
        let n = self.write(entries).await?;
        self.maintain().await;
        Ok(n)
    }

    /// Writes whatever the outbox holds now, without waiting (shutdown, tests). Returns
    /// the records written; 0 when the outbox had nothing left (or the lease is not ours).
    pub async fn flush_now(&mut self) -> Result<usize, WriteError> {
        if !self.ensure_lease().await? {
            return Ok(0);
        }
        let entries = self.read_batch(false).await?;
        let empty = entries.is_empty();
        let n = self.write(entries).await?;
        Ok(if empty { 0 } else { n.max(1) })
    }

    /// Reads one batch: our pending entries first (claimed or left by a failed flush),
    /// else new ones, waiting up to the flush interval for the batch to fill when `wait`.
    async fn read_batch(&mut self, wait: bool) -> Result<Vec<Entry>, WriteError> {
        let pending = self.read_group("0", self.config.batch_size, None).await?;
        if !pending.is_empty() {
            return Ok(pending);
        }
        let mut batch = Vec::new();
        let started = Instant::now();
        loop {
            let left = self.config.flush_interval.saturating_sub(started.elapsed());
            // Short blocks: a cancelled read (shutdown) still occupies the connection
            // until its block ends, and the final flush waits behind it.
            let block = (wait && !left.is_zero()).then_some(left.min(MAX_BLOCK));
            let want = self.config.batch_size - batch.len();
            let got = self.read_group(">", want, block).await?;
            let empty = got.is_empty();
            batch.extend(got);
            if batch.len() >= self.config.batch_size || !wait || left.is_zero() {
                break;
            }
            if empty && block.is_some() {
                // Blocked for the rest of the interval and nothing came.
                if batch.is_empty() {
                    break;
                }
                continue;
            }
            // Renewal must not wait for a long fill.
            if self.last_renew.elapsed() >= self.config.lease_ttl / 3 {
                break;
            }
        }
        Ok(batch)
    }

    async fn read_group(
        &mut self,
        from: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, WriteError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(crate::keyspace::AUDIT_GROUP)
            .arg(&self.token)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS")
            .arg(crate::keyspace::AUDIT_OUTBOX)
            .arg(from);
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        Ok(parse_xread(reply))
    }

    /// Writes one batch durably and acknowledges it (see the module docs for the order).
    async fn write(&mut self, entries: Vec<Entry>) -> Result<usize, WriteError> {
        if entries.is_empty() {
            return Ok(0);
        }
        self.drain_blobs().await?;
        let mut ack: Vec<String> = Vec::with_capacity(entries.len());
        let mut fresh: Vec<AuditRecord> = Vec::with_capacity(entries.len());
        let mut covered = Vec::new();
        for e in entries {
            match (e.id, e.fields) {
                (Some(id), Some(fields)) if !self.written.contains(id) => {
                    fresh.push(AuditRecord::from_owned_entry(id, fields));
                }
                // Already durable (a crash before the acknowledgement)…
                (Some(id), Some(_)) => covered.push(id),
                // …or deleted.
                _ => {}
            }
            ack.push(e.raw_id);
        }
        if !covered.is_empty() {
            // A bucket checks that the parts named so hold them (anyone with write access
            // could have put an object under such a name); a directory trusts its renames.
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || dir.verify_covered(&covered))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        let runs = split_by_date(fresh);
        let mut written = 0;
        for (date, records) in runs {
            // A put must end inside the lease: renew it first (a bucket's requests time out
            // well before the lease would).
            if !self.renew_lease().await? {
                return Err(WriteError::LeaseLost);
            }
            let dir = self.dir.clone();
            let valid_until = self.lease_until;
            let n = records.len();
            let part = tokio::task::spawn_blocking(move || {
                let lease_ok = move || valid_until.is_some_and(|t| Instant::now() < t);
                dir.write_part(&date, &records, &lease_ok)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            let Some(part) = part else {
                return Err(WriteError::LeaseLost);
            };
            self.written.insert(part.first, part.last);
            self.status.files_written.fetch_add(1, Ordering::Relaxed);
            written += n;
        }
        // Outside readers see the new parts (a bucket's manifest) before the outbox forgets
        // them: a query reads the outbox first and the manifest after.
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.publish())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        for chunk in ack.chunks(ACK_CHUNK) {
            let acked: i64 = redis::Script::new(ACK_LUA)
                .key(crate::keyspace::AUDIT_LEASE)
                .key(crate::keyspace::AUDIT_OUTBOX)
                .arg(&self.token)
                .arg(crate::keyspace::AUDIT_GROUP)
                .arg(chunk)
                .invoke_async(&mut self.conn)
                .await?;
            if acked < 0 {
                // The files stay; the next lease holder finds them by name and only acks.
                return Err(WriteError::LeaseLost);
            }
        }
        self.status
            .records_written
            .fetch_add(written as u64, Ordering::Relaxed);
        crate::metrics::global().audit_written(written as u64);
        self.status
            .last_flush_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        if self.status.last_error().is_some() {
            tracing::info!("audit writer: recovered");
        }
        self.status.set_error(None);
        self.publish_status(None).await?;
        Ok(written)
    }

    /// Moves tracebacks from Redis into the store (before any record that names them): all
    /// of them in one `put_blobs` (one object in a bucket), up to `BLOB_PACK_BYTES` a call.
    async fn drain_blobs(&mut self) -> Result<(), WriteError> {
        let mut cursor: u64 = 0;
        let mut pack: Vec<(String, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        loop {
            let (next, pairs): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(crate::keyspace::AUDIT_BLOBS)
                .arg(cursor)
                .arg("COUNT")
                .arg(200)
                .query_async(&mut self.conn)
                .await?;
            bytes += pairs.iter().map(|(_, t)| t.len()).sum::<usize>();
            pack.extend(pairs);
            if next == 0 || bytes >= BLOB_PACK_BYTES {
                self.store_blobs(std::mem::take(&mut pack)).await?;
                bytes = 0;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Stores texts durably, then deletes them from Redis.
    async fn store_blobs(&mut self, pack: Vec<(String, Vec<u8>)>) -> Result<(), WriteError> {
        if pack.is_empty() {
            return Ok(());
        }
        let shas: Vec<String> = pack.iter().map(|(s, _)| s.clone()).collect();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.put_blobs(&pack))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        redis::cmd("HDEL")
            .arg(crate::keyspace::AUDIT_BLOBS)
            .arg(&shas)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Shares this writer's state with every instance (`/readyz`, stats).
    async fn publish_status(&mut self, error: Option<&str>) -> Result<(), WriteError> {
        let ttl = (self.config.lease_ttl.as_secs() * 4).max(10);
        redis::pipe()
            .cmd("HSET")
            .arg(crate::keyspace::AUDIT_WRITER_STATUS)
            .arg("writer")
            .arg(&self.token)
            .arg("updated_ms")
            .arg(crate::clock::now_ms())
            .arg("last_flush_ms")
            .arg(self.status.last_flush_ms.load(Ordering::Relaxed))
            .arg("last_error")
            .arg(error.unwrap_or(""))
            .ignore()
            .cmd("EXPIRE")
            .arg(crate::keyspace::AUDIT_WRITER_STATUS)
            .arg(ttl)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Compaction and retention, at most once per maintenance interval; failures are
    /// logged (they never put a record at risk).
    async fn maintain(&mut self) {
        if self.last_maintenance.elapsed() < self.config.maintenance_interval {
            return;
        }
        self.last_maintenance = Instant::now();
        let dir = self.dir.clone();
        let config = self.config.clone();
        let valid_until = self.lease_until;
        let result =
            tokio::task::spawn_blocking(move || maintain(&dir, &config, valid_until)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit maintenance failed"),
            Err(e) => tracing::warn!(error = %e, "audit maintenance panicked"),
        }
        let dir = self.dir.clone();
        if let Ok(Ok(w)) = tokio::task::spawn_blocking(move || dir.written()).await {
            self.written = w;
        }
    }
}

/// Compacts partitions with many small files (closed days: any two) and deletes expired
/// partitions.
fn maintain(
    dir: &AuditStore,
    config: &WriterConfig,
    valid_until: Option<Instant>,
) -> std::io::Result<()> {
    let today = schema::date_of_ms(crate::clock::now_ms());
    for date in dir.dates()? {
        if valid_until.is_none_or(|t| Instant::now() >= t) {
            return Ok(());
        }
        let small = dir.small_parts_of(&date)?.len();
        let threshold = if date < today {
            2
        } else {
            config.compact_min_files
        };
        if small >= threshold {
            // One partition failing (e.g. a filesystem without RENAME_EXCHANGE) must not
            // stop the others, nor retention.
            match dir.compact(&date) {
                Ok(0) => {}
                Ok(merged) => tracing::info!(%date, files = merged, "audit: compacted a partition"),
                Err(e) => tracing::warn!(%date, error = %e, "audit: compaction failed"),
            }
        }
    }
    if config.retention_days > 0 {
        let keep_from_ms =
            crate::clock::now_ms().saturating_sub(u64::from(config.retention_days) * 86_400_000);
        for date in dir.expire_before(&schema::date_of_ms(keep_from_ms))? {
            tracing::info!(%date, "audit: deleted an expired partition");
        }
    }
    Ok(())
}

/// Splits records (in stream order) into runs of one UTC date each.
fn split_by_date(records: Vec<AuditRecord>) -> Vec<(String, Vec<AuditRecord>)> {
    let mut runs: Vec<(String, Vec<AuditRecord>)> = Vec::new();
    for r in records {
        let date = r.date();
        match runs.last_mut() {
            Some((d, run)) if *d == date => run.push(r),
            _ => runs.push((date, vec![r])),
        }
    }
    runs
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}
