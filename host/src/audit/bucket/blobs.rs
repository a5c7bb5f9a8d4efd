//! Traceback texts in a bucket: one pack object per flush (one PUT per distinct traceback
//! would dominate a flush), found again by the `sha256` column's bloom filter.
//!
//! A pack is a parquet file of (`sha256`, `text`) sorted by sha256, with a bloom filter on
//! `sha256`. A lookup walks the packs newest first and opens only those whose filter may
//! hold the sha; the footers and filters are cached, so a lookup costs one ranged GET of
//! the pack that has it. A text may be in more than one pack (harmless: it is the same
//! text under the same sha256).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::properties::WriterProperties;

use super::{Bucket, RemoteFile, lock};
use crate::audit::store::as_io;

/// How long a listing of the packs is trusted before a miss lists again.
const LISTING_TTL: Duration = Duration::from_secs(2);

fn pack_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("sha256", DataType::Utf8, false),
        Field::new("text", DataType::Binary, false),
    ]))
}

/// A pack's footer and its sha256 bloom filters, per row group.
struct PackInfo {
    meta: ArrowReaderMetadata,
    blooms: Vec<Option<Sbbf>>,
}

#[derive(Default)]
struct PackCache {
    listed: Option<(Instant, Vec<(String, u64)>)>,
    packs: HashMap<String, Arc<PackInfo>>,
}

fn packs() -> &'static Mutex<PackCache> {
    static CACHE: OnceLock<Mutex<PackCache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

impl Bucket {
    /// Stores `blobs` as one pack object.
    pub fn put_blobs(&self, blobs: &[(String, Vec<u8>)]) -> io::Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&(String, Vec<u8>)> = blobs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let shas = StringArray::from_iter_values(sorted.iter().map(|(s, _)| s.as_str()));
        let texts = BinaryArray::from_iter_values(sorted.iter().map(|(_, t)| t.as_slice()));
        let batch = RecordBatch::try_new(pack_schema(), vec![Arc::new(shas), Arc::new(texts)])
            .map_err(io::Error::other)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_column_bloom_filter_enabled("sha256".into(), true)
            .set_column_bloom_filter_max_ndv("sha256".into(), sorted.len() as u64)
            .set_column_bloom_filter_fpp("sha256".into(), 0.01)
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), pack_schema(), Some(props))
            .map_err(io::Error::other)?;
        writer.write(&batch).map_err(io::Error::other)?;
        let body = writer.into_inner().map_err(io::Error::other)?;
        let key = self.key(&self.next_pack_name());
        self.put_new(key, Bytes::from(body))
    }

    /// The text stored under `sha256`, if any pack holds it.
    pub fn blob(&self, sha256: &str) -> io::Result<Option<String>> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Ok(None);
        }
        let listed = lock(packs()).listed.clone();
        let fresh = listed
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < LISTING_TTL);
        let listing = match listed {
            Some((_, l)) => l,
            None => self.relist_packs()?,
        };
        if let Some(text) = self.find(&listing, sha256)? {
            return Ok(Some(text));
        }
        if fresh {
            return Ok(None);
        }
        // A pack written since the listing: list again once.
        let listing = self.relist_packs()?;
        self.find(&listing, sha256)
    }

    fn relist_packs(&self) -> io::Result<Vec<(String, u64)>> {
        let listing = self.list_packs()?;
        lock(packs()).listed = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }

    fn find(&self, listing: &[(String, u64)], sha256: &str) -> io::Result<Option<String>> {
        for (key, size) in listing {
            let file = RemoteFile::new(Arc::clone(&self.store), key.clone(), *size);
            let info = match pack_info(key, &file) {
                Ok(info) => info,
                // Deleted since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let groups: Vec<usize> = info
                .blooms
                .iter()
                .enumerate()
                .filter(|(_, b)| b.as_ref().is_none_or(|b| b.check(&sha256)))
                .map(|(i, _)| i)
                .collect();
            if groups.is_empty() {
                continue;
            }
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, info.meta.clone())
                    .with_row_groups(groups)
                    .build()
                    .map_err(io::Error::other)?;
            for batch in reader {
                let batch = batch.map_err(io::Error::other)?;
                let (Some(shas), Some(texts)) = (
                    batch.column(0).as_any().downcast_ref::<StringArray>(),
                    batch.column(1).as_any().downcast_ref::<BinaryArray>(),
                ) else {
                    return Err(io::Error::other(format!("{key} is not a traceback pack")));
                };
                if let Some(row) = (0..shas.len()).find(|&i| shas.value(i) == sha256) {
                    return Ok(Some(String::from_utf8_lossy(texts.value(row)).into_owned()));
                }
            }
        }
        Ok(None)
    }
}

/// The cached footer and filters of a pack (a pack never changes under its name).
fn pack_info(key: &str, file: &RemoteFile) -> io::Result<Arc<PackInfo>> {
    if let Some(info) = lock(packs()).packs.get(key) {
        return Ok(Arc::clone(info));
    }
    let meta = ArrowReaderMetadata::load(file, ArrowReaderOptions::new()).map_err(as_io)?;
    let mut blooms = Vec::new();
    for rg in meta.metadata().row_groups() {
        blooms.push(Sbbf::read_from_column_chunk(rg.column(0), file).map_err(as_io)?);
    }
    let info = Arc::new(PackInfo { meta, blooms });
    let mut cache = lock(packs());
    if cache.packs.len() >= 10_000 {
        cache.packs.clear();
    }
    cache.packs.insert(key.to_string(), Arc::clone(&info));
    Ok(info)
}
