//! Compaction, retention and the clean-up of shadowed parts in a bucket. Every step
//! keeps rule 3 of `bucket.rs`: an output is put before the manifest names it, and inputs
//! are deleted only after the manifest stopped naming them.

use std::io;
use std::sync::Arc;

use futures_util::StreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt as _, PutPayload};

use super::{Bucket, ManifestPart, block_on, io_err, lock};
use crate::audit::files;
use crate::audit::files::Part;
use crate::audit::schema::StreamId;

impl Bucket {
    /// Deletes the parts that lie inside a live part (compaction inputs left by a crash, a
    /// late put of a retried flush); failures only leave them for next time.
    pub(super) fn delete_shadowed(&self, all: &[ManifestPart], live: &[ManifestPart]) {
        let keep: std::collections::HashSet<&str> = live.iter().map(|p| p.key.as_str()).collect();
        let gone: Vec<ObjPath> = all
            .iter()
            .filter(|p| !keep.contains(p.key.as_str()))
            .map(|p| ObjPath::from(p.key.as_str()))
            .collect();
        if let Err(e) = self.delete_all(gone) {
            tracing::warn!(error = %e, "audit: could not delete shadowed parts");
        }
    }

    /// Deletes objects in batches (S3 `DeleteObjects`).
    pub(super) fn delete_all(&self, keys: Vec<ObjPath>) -> io::Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        let store = Arc::clone(&self.store);
        block_on(async move {
            let input = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
            let mut results = store.delete_stream(input);
            let mut n = 0;
            while let Some(r) = results.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => n += 1,
                    Err(e) => return Err(io_err(e)),
                }
            }
            Ok(n)
        })?
    }

    pub fn small_parts_of(&self, date: &str) -> io::Result<Vec<Part>> {
        let manifest = self.live_parts()?;
        Ok(manifest
            .parts
            .iter()
            .filter(|p| p.date == date && p.size < files::COMPACT_BELOW_BYTES)
            .filter_map(ManifestPart::part)
            .collect())
    }

    /// Merges runs of consecutive small parts: each run's output is put first, the
    /// manifest then names it instead of its inputs, and the inputs are deleted last.
    pub fn compact(&self, date: &str) -> io::Result<usize> {
        let parts: Vec<ManifestPart> = lock(&self.live)
            .values()
            .filter(|p| p.date == date)
            .cloned()
            .collect();
        let mut runs: Vec<Vec<ManifestPart>> = vec![Vec::new()];
        for p in parts {
            if p.size < files::COMPACT_BELOW_BYTES {
                if let Some(run) = runs.last_mut() {
                    run.push(p);
                }
            } else {
                runs.push(Vec::new());
            }
        }
        runs.retain(|r| r.len() >= 2);
        let mut merged = 0;
        for run in runs {
            merged += self.merge_run(date, &run)?;
        }
        Ok(merged)
    }

    fn merge_run(&self, date: &str, run: &[ManifestPart]) -> io::Result<usize> {
        let (Some(first), Some(last)) = (
            run.first().and_then(ManifestPart::ids),
            run.last().and_then(ManifestPart::ids),
        ) else {
            return Ok(0);
        };
        let mut inputs = Vec::with_capacity(run.len());
        for p in run {
            let store = Arc::clone(&self.store);
            let key = ObjPath::from(p.key.as_str());
            inputs.push(
                block_on(async move { store.get(&key).await?.bytes().await })?.map_err(io_err)?,
            );
        }
        let body = match files::merge_in_order(inputs.clone(), Vec::new())? {
            Some(body) => body,
            None => {
                let mut records = Vec::new();
                for bytes in inputs {
                    records.extend(files::read_all(bytes)?);
                }
                records.sort_by_key(|r| StreamId::parse(&r.record_id).unwrap_or_default());
                files::encode(&records)?
            }
        };
        let size = body.len() as u64;
        let key = self.part_key(date, first.0, last.1);
        match self.put_create(&key, PutPayload::from(body))? {
            // Already there: an earlier compaction of the same run crashed after its put.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(io_err(e)),
        }
        {
            let mut live = lock(&self.live);
            for p in run {
                if let Some((f, _)) = p.ids() {
                    live.remove(&f);
                }
            }
            live.insert(
                first.0,
                ManifestPart {
                    key: key.to_string(),
                    date: date.to_string(),
                    first: first.0.to_string(),
                    last: last.1.to_string(),
                    size,
                },
            );
        }
        self.publish()?;
        self.delete_all(run.iter().map(|p| ObjPath::from(p.key.as_str())).collect())?;
        Ok(run.len())
    }

    /// Deletes whole dates: out of the manifest first, then every object under them
    /// (listed and deleted in batches: S3 has no prefix delete).
    pub fn expire_before(&self, keep_from: &str) -> io::Result<Vec<String>> {
        let all = self.list_parts()?;
        let mut expired: Vec<String> = all
            .iter()
            .filter(|p| p.date.as_str() < keep_from)
            .map(|p| p.date.clone())
            .collect();
        expired.sort();
        expired.dedup();
        if expired.is_empty() {
            return Ok(expired);
        }
        lock(&self.live).retain(|_, p| p.date.as_str() >= keep_from);
        self.publish()?;
        let gone = all
            .iter()
            .filter(|p| p.date.as_str() < keep_from)
            .map(|p| ObjPath::from(p.key.as_str()))
            .collect();
        self.delete_all(gone)?;
        Ok(expired)
    }
}
