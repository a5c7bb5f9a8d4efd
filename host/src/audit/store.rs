//! Where the audit trail lives: a local directory (`file:///path`, or `[audit] path`;
//! `files.rs`) or a prefix in an object store bucket (`s3://bucket/prefix`, `gs://…`,
//! `az://…`; `bucket.rs`). Both hold the same objects under the same names:
//!
//! ```text
//! date=2026-11-30/part-<first id>_<last id>.parquet   records of one stream id range
//! ```
//!
//! and both answer "which stream id ranges are durable" from those names alone, so the
//! writer's exactly-once argument is the same for both; what differs is how a file appears
//! whole (rename on disk, a conditional put in a bucket) and how compaction hides its inputs
//! (an atomic directory exchange on disk; in a bucket, readers skip a part whose range lies
//! inside another's). Every method blocks: call them off the async workers.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

#[cfg(feature = "object-store")]
use super::bucket::{Bucket, RemoteFile, RemoteRead};
use super::files::{LocalDir, Part, Written};
use super::schema::AuditRecord;

/// Where `[audit] url` (or `[audit] path`) points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory.
    Local(PathBuf),
    /// An object store URL (`s3://`, `gs://`, `az://`, `abfs://`, `abfss://`).
    Object(String),
}

/// Object store schemes (the store is built from the URL and the standard environment).
pub const OBJECT_SCHEMES: [&str; 6] = ["s3", "s3a", "gs", "az", "abfs", "abfss"];

impl StoreUrl {
    /// Reads `[audit] url`, or, when it is empty, `[audit] path`.
    pub fn parse(url: &str, path: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            if path.trim().is_empty() {
                return Err("[audit] url and [audit] path are both empty".into());
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "[audit] url {url:?}: a file URL needs an absolute path (file:///var/lib/retryguard/audit)"
                ));
            }
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "[audit] url {url:?} is not a URL: use file:///path or s3://bucket/prefix"
            ));
        };
        if !OBJECT_SCHEMES.contains(&scheme) {
            return Err(format!(
                "[audit] url {url:?}: the scheme {scheme}:// is not supported (file, s3, gs, az, abfs)"
            ));
        }
        if rest.split('/').next().is_none_or(str::is_empty) {
            return Err(format!("[audit] url {url:?} names no bucket"));
        }
        Ok(Self::Object(url.trim_end_matches('/').to_string()))
    }
}

/// The audit trail's store.
#[derive(Debug)]
pub enum AuditStore {
    Local(LocalDir),
    /// Boxed: a bucket carries its client and caches, a directory only its path.
    #[cfg(feature = "object-store")]
    Bucket(Box<Bucket>),
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AuditStore::Local($s) => $e,
            #[cfg(feature = "object-store")]
            AuditStore::Bucket($s) => $e,
        }
    };
}

impl AuditStore {
    /// A local directory, created if missing (tests, and `[audit] path`).
    pub fn local(root: impl Into<PathBuf>) -> io::Result<Self> {
        LocalDir::open(root).map(Self::Local)
    }

    /// Opens what `url` names. A bucket is checked by one request, so a wrong name or
    /// credentials fail here, at start-up, not at the first flush; `request_timeout` bounds
    /// each request to it.
    pub async fn open(url: &StoreUrl, request_timeout: std::time::Duration) -> io::Result<Self> {
        Self::open_with(url, request_timeout, &[]).await
    }

    /// [`AuditStore::open`] with object_store configuration keys over the environment
    /// (`aws_endpoint`, …: tests and benchmarks).
    pub async fn open_with(
        url: &StoreUrl,
        request_timeout: std::time::Duration,
        options: &[(&str, &str)],
    ) -> io::Result<Self> {
        match url {
            StoreUrl::Local(path) => Self::local(path),
            #[cfg(feature = "object-store")]
            StoreUrl::Object(url) => Bucket::open(url, request_timeout, options)
                .await
                .map(|b| Self::Bucket(Box::new(b))),
            #[cfg(not(feature = "object-store"))]
            StoreUrl::Object(url) => {
                let _ = (request_timeout, options);
                Err(io::Error::other(format!(
                    "{url}: this build has no object store support (feature object-store)"
                )))
            }
        }
    }

    /// Where it is, for logs and messages (no credentials: they come from the environment).
    pub fn describe(&self) -> String {
        match self {
            AuditStore::Local(d) => d.root().display().to_string(),
            #[cfg(feature = "object-store")]
            AuditStore::Bucket(b) => b.url().to_string(),
        }
    }

    /// The bucket, when the store is one.
    #[cfg(feature = "object-store")]
    pub fn bucket(&self) -> Option<&Bucket> {
        match self {
            AuditStore::Bucket(b) => Some(b),
            AuditStore::Local(_) => None,
        }
    }

    /// The directory, when the store is a local one.
    pub fn root(&self) -> Option<&std::path::Path> {
        match self {
            AuditStore::Local(d) => Some(d.root()),
            #[cfg(feature = "object-store")]
            AuditStore::Bucket(_) => None,
        }
    }

    /// The live parts whose date passes `keep`, oldest first (a bucket: from its manifest,
    /// compaction inputs skipped).
    pub fn parts_where(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<Part>> {
        each!(self, s => s.parts_where(keep))
    }

    /// Every live part, oldest first.
    pub fn parts(&self) -> io::Result<Vec<Part>> {
        self.parts_where(&|_| true)
    }

    /// The live parts of one date.
    pub fn parts_of(&self, date: &str) -> io::Result<Vec<Part>> {
        self.parts_where(&|d| d == date)
    }

    /// The dates that have parts, oldest first.
    pub fn dates(&self) -> io::Result<Vec<String>> {
        each!(self, s => s.dates())
    }

    /// Removes what a crashed writer left half-done (a directory's `.staging/`; a bucket
    /// has none: a put is whole or absent).
    pub fn clear_staging(&self) -> io::Result<()> {
        each!(self, s => s.clear_staging())
    }

    /// The ranges every part covers, read from the store itself (not a manifest): what the
    /// writer trusts when it takes the lease.
    pub fn written(&self) -> io::Result<Written> {
        each!(self, s => s.written())
    }

    /// Writes one part (records of one date, in stream order, every entry of their range).
    /// `lease_ok` runs right before the part becomes visible and may veto it. `Ok(None)`:
    /// vetoed, nothing visible.
    pub fn write_part(
        &self,
        date: &str,
        records: &[AuditRecord],
        lease_ok: &dyn Fn() -> bool,
    ) -> io::Result<Option<Part>> {
        each!(self, s => s.write_part(date, records, lease_ok))
    }

    /// Checks that the parts whose names cover `ids` hold those records, before the writer
    /// acknowledges them without writing (a directory: its files appear only by rename, so
    /// their names are trusted).
    pub fn verify_covered(&self, ids: &[super::schema::StreamId]) -> io::Result<()> {
        match self {
            AuditStore::Local(_) => {
                let _ = ids;
                Ok(())
            }
            #[cfg(feature = "object-store")]
            AuditStore::Bucket(b) => b.verify_covered(ids),
        }
    }

    /// Makes what was written visible to outside readers (a bucket's manifest); runs after
    /// a flush's parts and before its acknowledgement.
    pub fn publish(&self) -> io::Result<()> {
        match self {
            AuditStore::Local(_) => Ok(()),
            #[cfg(feature = "object-store")]
            AuditStore::Bucket(b) => b.publish(),
        }
    }

    /// Stores traceback texts by sha256 (a bucket: one object for all of them).
    pub fn put_blobs(&self, blobs: &[(String, Vec<u8>)]) -> io::Result<()> {
        each!(self, s => s.put_blobs(blobs))
    }

    /// A stored traceback text, if present.
    pub fn blob(&self, sha256: &str) -> io::Result<Option<String>> {
        each!(self, s => s.blob(sha256))
    }

    /// The parts of a date small enough to be merged by `compact`.
    pub fn small_parts_of(&self, date: &str) -> io::Result<Vec<Part>> {
        each!(self, s => s.small_parts_of(date))
    }

    /// Merges runs of small consecutive parts of a date; returns how many were merged.
    pub fn compact(&self, date: &str) -> io::Result<usize> {
        each!(self, s => s.compact(date))
    }

    /// Deletes the dates before `keep_from` (`YYYY-MM-DD`); returns them.
    pub fn expire_before(&self, keep_from: &str) -> io::Result<Vec<String>> {
        each!(self, s => s.expire_before(keep_from))
    }

    /// Bytes of every live part.
    pub fn size_bytes(&self) -> io::Result<u64> {
        each!(self, s => s.size_bytes())
    }

    /// A part's bytes, for the parquet reader.
    pub fn open_part(&self, part: &Part) -> io::Result<PartSource> {
        match self {
            AuditStore::Local(_) => File::open(&part.path).map(PartSource::File),
            #[cfg(feature = "object-store")]
            AuditStore::Bucket(b) => b.open_part(part).map(PartSource::Remote),
        }
    }
}

/// A parquet or arrow error as an `io::Error`, keeping `NotFound` from deep inside it (a
/// part deleted by a compaction under a reader), so the query lists again.
pub fn as_io<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::NotFound)
        {
            return io::Error::new(io::ErrorKind::NotFound, e.to_string());
        }
        cause = c.source();
    }
    io::Error::other(e)
}

/// The bytes of one part: a local file, or an object read by ranges through a block cache.
#[derive(Debug)]
pub enum PartSource {
    File(File),
    #[cfg(feature = "object-store")]
    Remote(RemoteFile),
}

impl PartSource {
    /// A second handle on the same bytes.
    pub fn try_clone(&self) -> io::Result<Self> {
        match self {
            PartSource::File(f) => f.try_clone().map(PartSource::File),
            #[cfg(feature = "object-store")]
            PartSource::Remote(r) => Ok(PartSource::Remote(r.clone())),
        }
    }
}

impl Length for PartSource {
    fn len(&self) -> u64 {
        match self {
            PartSource::File(f) => Length::len(f),
            #[cfg(feature = "object-store")]
            PartSource::Remote(r) => Length::len(r),
        }
    }
}

/// A reader from an offset of a [`PartSource`].
#[derive(Debug)]
pub enum PartRead {
    File(<File as ChunkReader>::T),
    #[cfg(feature = "object-store")]
    Remote(RemoteRead),
}

impl Read for PartRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PartRead::File(f) => f.read(buf),
            #[cfg(feature = "object-store")]
            PartRead::Remote(r) => r.read(buf),
        }
    }
}

impl ChunkReader for PartSource {
    type T = PartRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            PartSource::File(f) => f.get_read(start).map(PartRead::File),
            #[cfg(feature = "object-store")]
            PartSource::Remote(r) => r.get_read(start).map(PartRead::Remote),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            PartSource::File(f) => f.get_bytes(start, length),
            #[cfg(feature = "object-store")]
            PartSource::Remote(r) => r.get_bytes(start, length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_clear_refusals() {
        let local = |p: &str| Ok(StoreUrl::Local(PathBuf::from(p)));
        assert_eq!(StoreUrl::parse("", "./audit"), local("./audit"));
        assert_eq!(StoreUrl::parse("file:///var/a", "./audit"), local("/var/a"));
        assert_eq!(
            StoreUrl::parse("s3://bucket/pre/fix/", ""),
            Ok(StoreUrl::Object("s3://bucket/pre/fix".into()))
        );
        for (bad, says) in [
            ("file://rel/dir", "absolute path"),
            ("http://x/y", "not supported"),
            ("s3:///prefix", "names no bucket"),
            ("bucket/prefix", "not a URL"),
        ] {
            let err = StoreUrl::parse(bad, "").unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(StoreUrl::parse("", " ").is_err());
    }
}
