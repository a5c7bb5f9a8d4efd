//! Parts read by range: a parquet `ChunkReader` over ranged GETs, through a block cache
//! shared by the process.
//!
//! The parquet reader asks for many small ranges (the footer, each page header, each
//! page); one GET each would cost a round trip per page. Reads are served from 1 MiB blocks
//! instead: the missing blocks of a request are fetched in one ranged GET per run of
//! consecutive blocks and kept (objects never change under a name, so a block never goes
//! stale). The cache is bounded by memory and starts over when full.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::file::reader::{ChunkReader, Length};

use super::{block_on, io_err};

/// Bytes of one cached block.
const BLOCK: u64 = 1 << 20;
/// Memory the block cache may hold before it starts over.
const CACHE_BYTES: usize = 128 << 20;

/// One object, read by range.
#[derive(Clone)]
pub struct RemoteFile {
    store: Arc<dyn ObjectStore>,
    key: Arc<str>,
    size: u64,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish()
    }
}

/// (key, size, block index): a name with another size is another object.
type BlockKey = (Arc<str>, u64, u64);

#[derive(Default)]
struct BlockCache {
    blocks: HashMap<BlockKey, Bytes>,
    bytes: usize,
}

fn cache() -> MutexGuard<'static, BlockCache> {
    static CACHE: OnceLock<Mutex<BlockCache>> = OnceLock::new();
    CACHE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RemoteFile {
    pub fn new(store: Arc<dyn ObjectStore>, key: String, size: u64) -> Self {
        Self {
            store,
            key: key.into(),
            size,
        }
    }

    /// A reader from `start`.
    pub fn reader_at(&self, start: u64) -> RemoteRead {
        RemoteRead {
            file: self.clone(),
            pos: start,
        }
    }

    /// `length` bytes from `start`.
    pub fn bytes(&self, start: u64, length: usize) -> io::Result<Bytes> {
        let end = start + length as u64;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: bytes {start}..{end} of {}", self.key, self.size),
            ));
        }
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (b0, b1) = (start / BLOCK, (end - 1) / BLOCK);
        let blocks = self.blocks(b0, b1)?;
        if let [only] = blocks.as_slice() {
            let from = (start - b0 * BLOCK) as usize;
            return Ok(only.slice(from..from + length));
        }
        let mut out = BytesMut::with_capacity(length);
        for (i, block) in blocks.iter().enumerate() {
            let at = (b0 + i as u64) * BLOCK;
            let from = start.saturating_sub(at) as usize;
            let to = ((end - at) as usize).min(block.len());
            out.extend_from_slice(&block[from..to]);
        }
        Ok(out.freeze())
    }

    /// Blocks `b0..=b1`, fetching the missing ones (one GET per run of them).
    fn blocks(&self, b0: u64, b1: u64) -> io::Result<Vec<Bytes>> {
        let key = |i| (Arc::clone(&self.key), self.size, i);
        let mut have: Vec<Option<Bytes>> = {
            let cache = cache();
            (b0..=b1)
                .map(|i| cache.blocks.get(&key(i)).cloned())
                .collect()
        };
        let mut i = 0;
        while i < have.len() {
            if have[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < have.len() && have[j + 1].is_none() {
                j += 1;
            }
            let (from, to) = (
                (b0 + i as u64) * BLOCK,
                ((b0 + j as u64 + 1) * BLOCK).min(self.size),
            );
            let store = Arc::clone(&self.store);
            let path = ObjPath::from(&*self.key);
            let got =
                block_on(async move { store.get_range(&path, from..to).await })?.map_err(io_err)?;
            let mut cache = cache();
            for (k, slot) in have.iter_mut().enumerate().take(j + 1).skip(i) {
                let at = ((k - i) as u64 * BLOCK) as usize;
                let block = got.slice(at.min(got.len())..(at + BLOCK as usize).min(got.len()));
                cache.bytes += block.len();
                cache.blocks.insert(key(b0 + k as u64), block.clone());
                *slot = Some(block);
            }
            if cache.bytes > CACHE_BYTES {
                cache.blocks.clear();
                cache.bytes = 0;
            }
            i = j + 1;
        }
        Ok(have.into_iter().flatten().collect())
    }
}

impl Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for RemoteFile {
    type T = RemoteRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.reader_at(start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.bytes(start, length)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// A `Read` over a [`RemoteFile`] from an offset.
#[derive(Debug)]
pub struct RemoteRead {
    file: RemoteFile,
    pos: u64,
}

impl Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.file.size || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / BLOCK;
        let block = self.file.blocks(index, index)?.pop().unwrap_or_default();
        let from = (self.pos - index * BLOCK) as usize;
        let n = buf.len().min(block.len().saturating_sub(from));
        buf[..n].copy_from_slice(&block[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}
