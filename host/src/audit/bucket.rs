//! The audit trail in an object store bucket (`s3://bucket/prefix`; GCS and Azure through
//! the same crate), for instances on many hosts that share one Redis.
//!
//! ```text
//! PREFIX/date=2026-11-30/part-<first id>_<last id>.parquet   records (as in a directory)
//! PREFIX/_blobs/pack-<ms>-<writer>-<n>.parquet                 tracebacks, one object a flush
//! PREFIX/_manifest.json                                        the live parts, for readers
//! ```
//!
//! A store has no rename, so exactly-once rests on three rules instead:
//!
//! 1. **A part appears whole or not at all, once.** It is uploaded in one conditional put
//!    (`If-None-Match: *`, `PutMode::Create`). A second writer of the same range loses: its
//!    put fails, and it acknowledges that range only if the object there verifiably holds
//!    exactly the records it meant to write (a writer that crashed after its put and before
//!    its acknowledgement); anything else is an error that acknowledges nothing.
//! 2. **Acknowledged only once durable**: the writer acknowledges a batch in Redis after its
//!    parts' puts and the manifest's put have succeeded.
//! 3. **Readers de-duplicate by range.** Compaction writes the merged part first and deletes
//!    its inputs after; in between both exist, and a part whose range lies inside another
//!    part's is skipped. Outside readers get `_manifest.json`, which lists only live parts;
//!    docs/audit.md also gives a de-duplicating view by `record_id`.
//!
//! Queries read the manifest (one conditional GET, usually answered "not modified") after
//! the outbox, which keeps the query's "outbox first, files after" order: the manifest is
//! written before the acknowledgement that deletes entries from the outbox. Part bytes are
//! read by range through a block cache (`remote.rs`), so a query fetches the footer, the
//! bloom filters and the row groups it needs, not whole objects.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};

use super::files::{self, Part, Written};
use super::schema::{AuditRecord, StreamId};

mod blobs;
mod maintain;
mod remote;

pub use remote::{RemoteFile, RemoteRead};

const MANIFEST: &str = "_manifest.json";
const BLOBS: &str = "_blobs";

/// The audit trail in a bucket.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// Keys start with this (may be empty: the bucket's root).
    prefix: String,
    url: String,
    /// The live parts as this process last wrote or read them (first id → part).
    live: Mutex<BTreeMap<StreamId, ManifestPart>>,
    /// The manifest as last read, by ETag (readers).
    manifest: Mutex<Option<(String, Arc<Manifest>)>>,
    /// A put failed: the next publish lists the bucket again (a late put may have landed).
    relist: AtomicBool,
    /// Blob packs written by this process (names).
    packs: AtomicU64,
    /// Object sizes by key, from listings and manifests (a reader needs the size of a part
    /// it opens; asking for it would cost a request per part).
    sizes: Mutex<std::collections::HashMap<String, u64>>,
    token: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

/// `_manifest.json`: the live parts, for readers outside retryguard.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// 1.
    pub version: u32,
    /// When it was written (epoch ms).
    pub updated_ms: u64,
    /// Oldest first; none inside another's range.
    pub parts: Vec<ManifestPart>,
}

/// One live part in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestPart {
    /// The object's key in the bucket (with the prefix).
    pub key: String,
    pub date: String,
    pub first: String,
    pub last: String,
    pub size: u64,
}

impl ManifestPart {
    fn ids(&self) -> Option<(StreamId, StreamId)> {
        Some((StreamId::parse(&self.first)?, StreamId::parse(&self.last)?))
    }

    /// The part this entry names.
    pub fn part(&self) -> Option<Part> {
        let (first, last) = self.ids()?;
        Some(Part {
            date: self.date.clone(),
            first,
            last,
            path: self.key.clone().into(),
        })
    }
}

/// Request limits: a put must end well inside the writer's lease (it is renewed right
/// before each put), so a slow store fails a flush instead of outliving the lease. Set as
/// configuration keys, so the environment's other client settings (`AWS_ALLOW_HTTP`,
/// proxies) stay as `from_env` read them.
fn limits(request_timeout: Duration) -> [(ClientConfigKey, String); 2] {
    let connect = Duration::from_secs(5).min(request_timeout);
    [
        (
            ClientConfigKey::Timeout,
            format!("{}ms", request_timeout.as_millis()),
        ),
        (
            ClientConfigKey::ConnectTimeout,
            format!("{}ms", connect.as_millis()),
        ),
    ]
}

fn retry(request_timeout: Duration) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: request_timeout,
    }
}

/// Splits `scheme://bucket/prefix` into the store URL and the prefix.
fn split_url(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("s3", url));
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (
        format!("{scheme}://{bucket}"),
        prefix.trim_matches('/').to_string(),
    )
}

/// Runs an object store call from a blocking thread.
fn block_on<F: Future>(f: F) -> io::Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("no async runtime for the object store: {e}")))?;
    Ok(handle.block_on(f))
}

/// An object store error as an `io::Error` (a vanished object is `NotFound`, so a query
/// that raced a compaction lists again).
fn io_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parts none of whose ranges lies inside another's (compaction inputs whose deletion
/// has not happened yet are dropped), oldest first.
fn live_only(mut parts: Vec<ManifestPart>) -> Vec<ManifestPart> {
    parts.sort_by_key(|p| {
        p.ids()
            .map(|(first, last)| (first, std::cmp::Reverse(last)))
    });
    let mut out: Vec<ManifestPart> = Vec::with_capacity(parts.len());
    let mut reach: Option<StreamId> = None;
    for p in parts {
        let Some((_, last)) = p.ids() else { continue };
        // Sorted by first id, widest first: a part is inside an earlier one exactly when
        // its last id is within the furthest reach so far.
        if reach.is_some_and(|r| last <= r) {
            continue;
        }
        reach = Some(last);
        out.push(p);
    }
    out
}

impl Bucket {
    /// Builds the store from `url` and the standard environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`) and lists the prefix once, so bad names or credentials fail now.
    /// `options` are object_store configuration keys (`aws_endpoint`, `aws_allow_http`, …)
    /// applied over the environment (tests and benchmarks; `serve` passes none).
    pub async fn open(
        url: &str,
        request_timeout: Duration,
        options: &[(&str, &str)],
    ) -> io::Result<Self> {
        // reqwest's TLS takes the process's provider (ring); a library user may not have
        // installed one.
        crate::tls::install_crypto_provider();
        let (store_url, prefix) = split_url(url);
        let scheme = store_url.split("://").next().unwrap_or("");
        // The same steps for every provider; only the builder and its key type differ.
        macro_rules! build {
            ($builder:ty, $client_key:path) => {{
                let mut b = <$builder>::from_env().with_url(&store_url);
                for (k, v) in limits(request_timeout) {
                    b = b.with_config($client_key(k), v);
                }
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(io_err)?, *v);
                }
                Arc::new(
                    b.with_retry(retry(request_timeout))
                        .build()
                        .map_err(io_err)?,
                )
            }};
        }
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => build!(
                object_store::aws::AmazonS3Builder,
                object_store::aws::AmazonS3ConfigKey::Client
            ),
            "gs" => build!(
                object_store::gcp::GoogleCloudStorageBuilder,
                object_store::gcp::GoogleConfigKey::Client
            ),
            // az://container, abfs[s]://container@account…: the builder reads the container
            // (and account) from the scheme and host, never the path.
            _ => build!(
                object_store::azure::MicrosoftAzureBuilder,
                object_store::azure::AzureConfigKey::Client
            ),
        };
        let bucket = Self {
            store,
            prefix,
            url: url.to_string(),
            live: Mutex::default(),
            manifest: Mutex::default(),
            relist: AtomicBool::new(false),
            packs: AtomicU64::new(0),
            sizes: Mutex::default(),
            token: format!("{}-{}", std::process::id(), crate::clock::now_ms()),
        };
        // A listing, not a HEAD: a HEAD of a missing bucket is a plain 404.
        let probe = (!bucket.prefix.is_empty()).then(|| ObjPath::from(bucket.prefix.as_str()));
        bucket
            .store
            .list_with_delimiter(probe.as_ref())
            .await
            .map_err(|e| io::Error::other(format!("cannot list {url}: {e}")))?;
        Ok(bucket)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key under the prefix.
    fn key(&self, rest: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rest)
        } else {
            ObjPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// The key of a part.
    fn part_key(&self, date: &str, first: StreamId, last: StreamId) -> ObjPath {
        self.key(&format!("date={date}/{}", Part::file_name(first, last)))
    }

    /// Every part object in the bucket (compaction inputs included), by listing it.
    pub fn list_parts(&self) -> io::Result<Vec<ManifestPart>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()));
        let store = Arc::clone(&self.store);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        block_on(async move {
            let mut listing = store.list(prefix.as_ref());
            let mut parts = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io_err)?;
                let key = meta.location.to_string();
                let Some(rest) = key.strip_prefix(&strip) else {
                    continue;
                };
                let Some((dir, name)) = rest.split_once('/') else {
                    continue;
                };
                let Some(date) = dir.strip_prefix("date=") else {
                    continue;
                };
                if let Some(p) = Part::parse(date, name.into()) {
                    parts.push(ManifestPart {
                        key: key.clone(),
                        date: date.to_string(),
                        first: p.first.to_string(),
                        last: p.last.to_string(),
                        size: meta.size,
                    });
                }
            }
            Ok(parts)
        })?
    }

    /// The live parts, from the manifest (read again only when it changed); without a
    /// manifest, from a listing.
    fn live_parts(&self) -> io::Result<Arc<Manifest>> {
        let key = self.key(MANIFEST);
        let cached = lock(&self.manifest).clone();
        let options = object_store::GetOptions {
            if_none_match: cached.as_ref().map(|(etag, _)| etag.clone()),
            ..Default::default()
        };
        let store = Arc::clone(&self.store);
        let got = block_on(async move {
            let r = store.get_opts(&key, options).await?;
            let etag = r.meta.e_tag.clone();
            Ok::<_, object_store::Error>((etag, r.bytes().await?))
        })?;
        match got {
            Ok((etag, bytes)) => {
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::other(format!("{}/{MANIFEST} is not a manifest: {e}", self.url))
                })?;
                let manifest = Arc::new(manifest);
                if let Some(etag) = etag {
                    *lock(&self.manifest) = Some((etag, Arc::clone(&manifest)));
                }
                Ok(manifest)
            }
            Err(object_store::Error::NotModified { .. }) => match cached {
                Some((_, m)) => Ok(m),
                None => Err(io::Error::other("not modified, but nothing cached")),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(Arc::new(Manifest {
                version: 1,
                updated_ms: 0,
                parts: live_only(self.list_parts()?),
            })),
            Err(e) => Err(io_err(e)),
        }
    }

    pub fn parts_where(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<Part>> {
        let manifest = self.live_parts()?;
        self.note_sizes(&manifest.parts);
        let mut parts: Vec<Part> = manifest
            .parts
            .iter()
            .filter(|p| keep(&p.date))
            .filter_map(ManifestPart::part)
            .collect();
        parts.sort_by_key(|p| p.first);
        Ok(parts)
    }

    pub fn dates(&self) -> io::Result<Vec<String>> {
        let mut dates: Vec<String> = self
            .live_parts()?
            .parts
            .iter()
            .map(|p| p.date.clone())
            .collect();
        dates.sort();
        dates.dedup();
        Ok(dates)
    }

    /// Lists the bucket: the durable ranges (every part, inputs of an unfinished
    /// compaction too), and this process's view of the live parts for the manifest.
    pub fn written(&self) -> io::Result<Written> {
        let all = self.list_parts()?;
        self.note_sizes(&all);
        let mut w = Written::default();
        for p in &all {
            if let Some((first, last)) = p.ids() {
                w.insert(first, last);
            }
        }
        self.set_live(live_only(all));
        Ok(w)
    }

    fn set_live(&self, parts: Vec<ManifestPart>) {
        let mut live = lock(&self.live);
        live.clear();
        for p in parts {
            if let Some((first, _)) = p.ids() {
                live.insert(first, p);
            }
        }
    }

    /// Nothing to clear: a bucket has no staging area (a put is all or nothing).
    pub fn clear_staging(&self) -> io::Result<()> {
        Ok(())
    }

    pub fn write_part(
        &self,
        date: &str,
        records: &[AuditRecord],
        lease_ok: &dyn Fn() -> bool,
    ) -> io::Result<Option<Part>> {
        let Some((first, last)) = files::id_range(records)? else {
            return Ok(None);
        };
        let body = files::encode(records)?;
        let size = body.len() as u64;
        let key = self.part_key(date, first, last);
        if !lease_ok() {
            return Ok(None);
        }
        match self.put_create(&key, PutPayload::from(body))? {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.verify_existing(&key, records)?;
                tracing::info!(%key, "audit: the part was already written (a retried flush)");
            }
            Err(e) => {
                // A put that timed out may still land: list again before the next publish.
                self.relist.store(true, Ordering::Relaxed);
                return Err(io::Error::other(format!("cannot put {key}: {e}")));
            }
        }
        let part = ManifestPart {
            key: key.to_string(),
            date: date.to_string(),
            first: first.to_string(),
            last: last.to_string(),
            size,
        };
        lock(&self.live).insert(first, part.clone());
        self.note_sizes([&part]);
        part.part()
            .map(Some)
            .ok_or_else(|| io::Error::other("unreadable part ids"))
    }

    /// A put lost to an existing object: fine only if that object holds exactly these
    /// records (an earlier attempt of this flush landed); otherwise nothing is acknowledged.
    fn verify_existing(&self, key: &ObjPath, records: &[AuditRecord]) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let get_key = key.clone();
        let bytes =
            block_on(async move { store.get(&get_key).await?.bytes().await })?.map_err(io_err)?;
        let theirs = files::read_all(bytes).map_err(|e| {
            io::Error::other(format!(
                "{key} already exists and is not an audit part ({e}); another writer? nothing was acknowledged"
            ))
        })?;
        let same = theirs.len() == records.len()
            && theirs
                .iter()
                .zip(records)
                .all(|(a, b)| a.record_id == b.record_id);
        if same {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{key} already exists with other records ({} records); another writer? nothing was acknowledged",
                theirs.len()
            )))
        }
    }

    /// Checks that each of `ids` is in a part whose name covers it (an object put under a
    /// part's name by anyone but a writer is not trusted with acknowledgements).
    pub fn verify_covered(&self, ids: &[StreamId]) -> io::Result<()> {
        let parts = self.list_parts()?;
        self.note_sizes(&parts);
        let mut held: std::collections::HashMap<String, std::collections::HashSet<String>> =
            std::collections::HashMap::new();
        for &id in ids {
            let mut found = false;
            let mut last_key = String::new();
            let covering = parts
                .iter()
                .filter_map(|p| Some((p, p.part()?)))
                .filter(|(_, part)| part.first <= id && id <= part.last);
            for (p, part) in covering {
                if !held.contains_key(&p.key) {
                    let source = self.open_part(&part)?;
                    let records = files::read_all(source).map_err(|e| {
                        io::Error::other(format!(
                            "{} already exists and is not an audit part ({e}); another writer? nothing was acknowledged",
                            p.key
                        ))
                    })?;
                    held.insert(
                        p.key.clone(),
                        records.into_iter().map(|r| r.record_id).collect(),
                    );
                }
                found |= held
                    .get(&p.key)
                    .is_some_and(|h| h.contains(&id.to_string()));
                last_key.clone_from(&p.key);
            }
            if !found {
                return Err(io::Error::other(format!(
                    "{last_key} already exists and does not hold record {id}; another writer? nothing was acknowledged"
                )));
            }
        }
        Ok(())
    }

    /// Writes the manifest of the live parts (after listing again if a put failed since
    /// the last one: a put that timed out may have landed).
    pub fn publish(&self) -> io::Result<()> {
        if self.relist.swap(false, Ordering::Relaxed) {
            let all = self.list_parts()?;
            let live = live_only(all.clone());
            self.delete_shadowed(&all, &live);
            self.set_live(live);
        }
        let manifest = Manifest {
            version: 1,
            updated_ms: crate::clock::now_ms(),
            parts: live_only(lock(&self.live).values().cloned().collect()),
        };
        let body = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let store = Arc::clone(&self.store);
        let key = self.key(MANIFEST);
        block_on(async move { store.put(&key, PutPayload::from(body)).await })?.map_err(|e| {
            self.relist.store(true, Ordering::Relaxed);
            io::Error::other(format!("cannot put the manifest: {e}"))
        })?;
        Ok(())
    }

    pub fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.live_parts()?.parts.iter().map(|p| p.size).sum())
    }

    /// A part's bytes, read by range (its size from the listing or manifest it came from).
    pub fn open_part(&self, part: &Part) -> io::Result<RemoteFile> {
        let key = part.path.to_string_lossy().into_owned();
        let known = lock(&self.sizes).get(&key).copied();
        let size = match known {
            Some(s) => s,
            None => {
                let store = Arc::clone(&self.store);
                let path = ObjPath::from(key.as_str());
                block_on(async move { store.head(&path).await })?
                    .map_err(io_err)?
                    .size
            }
        };
        Ok(RemoteFile::new(Arc::clone(&self.store), key, size))
    }

    /// Remembers the sizes of `parts`.
    fn note_sizes<'a>(&self, parts: impl IntoIterator<Item = &'a ManifestPart>) {
        let mut sizes = lock(&self.sizes);
        if sizes.len() > 100_000 {
            sizes.clear();
        }
        for p in parts {
            sizes.insert(p.key.clone(), p.size);
        }
    }

    /// The object holding `bytes` under `key`, created once.
    fn put_new(&self, key: ObjPath, bytes: Bytes) -> io::Result<()> {
        self.put_create(&key, PutPayload::from(bytes))?
            .map_err(io_err)
    }

    /// Puts `payload` under `key` only if no object is there (`If-None-Match: *`). The
    /// outer error: no runtime to run it on; the inner one is the store's answer,
    /// `AlreadyExists` when an object is there.
    fn put_create(
        &self,
        key: &ObjPath,
        payload: PutPayload,
    ) -> io::Result<object_store::Result<()>> {
        let store = Arc::clone(&self.store);
        let key = key.clone();
        block_on(async move {
            store
                .put_opts(&key, payload, PutOptions::from(PutMode::Create))
                .await
                .map(|_| ())
        })
    }

    fn next_pack_name(&self) -> String {
        let n = self.packs.fetch_add(1, Ordering::Relaxed);
        format!(
            "{BLOBS}/pack-{}-{}-{n}.parquet",
            crate::clock::now_ms(),
            self.token
        )
    }

    /// For the blob side: every pack object (name, size), newest first.
    fn list_packs(&self) -> io::Result<Vec<(String, u64)>> {
        let prefix = self.key(BLOBS);
        let store = Arc::clone(&self.store);
        let mut packs = block_on(async move {
            let mut listing = store.list(Some(&prefix));
            let mut packs = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io_err)?;
                packs.push((meta.location.to_string(), meta.size));
            }
            Ok::<_, io::Error>(packs)
        })??;
        packs.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(first: &str, last: &str) -> ManifestPart {
        ManifestPart {
            key: format!("p/{first}_{last}"),
            date: "2026-12-05".into(),
            first: first.into(),
            last: last.into(),
            size: 1,
        }
    }

    #[test]
    fn parts_inside_another_are_skipped() {
        let parts = vec![
            mp("10-0", "20-0"),
            mp("1-0", "5-0"),
            mp("10-0", "12-0"),
            mp("13-0", "20-0"),
            mp("21-0", "30-0"),
            mp("1-0", "1-0"),
        ];
        let live: Vec<(String, String)> = live_only(parts)
            .into_iter()
            .map(|p| (p.first, p.last))
            .collect();
        assert_eq!(
            live,
            [("1-0", "5-0"), ("10-0", "20-0"), ("21-0", "30-0")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(
            split_url("s3://b/audit/prod"),
            ("s3://b".to_string(), "audit/prod".to_string())
        );
        assert_eq!(split_url("s3://b"), ("s3://b".to_string(), String::new()));
    }
}
