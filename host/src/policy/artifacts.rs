//! The on-disk cache of compiled policies, so a restart does not compile every bound policy
//! again (a Rust policy takes ~100 ms to compile, a componentize-py one 20–30 s).
//!
//! Loading a compiled artifact runs its machine code: wasmtime's `Component::deserialize`
//! is `unsafe` because it trusts its input. So the cache is only ever written by this
//! process, and guarded against everything else that could put bytes there:
//! - the directory is created `0700`; one owned by another user, or writable by group or
//!   others, is refused (the cache is then off, with a warning) — nobody but retryguard's own
//!   user may plant a file in it;
//! - a file is named by the policy's sha256 **and** the engine's compatibility hash (wasmtime
//!   version, target, compiler settings), so another wasmtime or another configuration never
//!   reads it; files of other compatibility hashes are deleted when the cache opens;
//! - each file carries a header — magic, the policy digest, the sha256 of the artifact —
//!   checked before deserializing, so a torn or corrupted file (a crash mid-write, a disk
//!   error) is recompiled, never run; wasmtime checks its own header as well;
//! - files are written to a temporary name, fsynced and renamed: a reader sees a whole file
//!   or none.
//!
//! Any cache failure only costs a compile: `get` answers `None`, `put` logs and moves on.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::digest::Digest;

/// First bytes of every cache file (and its format version).
const MAGIC: &[u8; 8] = b"RGCWASM1";
/// Magic, policy digest, sha256 of the artifact.
const HEADER_LEN: usize = 8 + 32 + 32;
/// Cache files end in this; anything else in the directory is left alone.
const SUFFIX: &str = ".cwasm";

/// What `get` found, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
    /// A file was there but unusable (torn, corrupt, incompatible): it was removed.
    Rejected,
}

/// A directory of compiled policies for one engine configuration.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: part of every file name.
    compat: String,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
}

/// Hit, miss and rejected counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub rejected: u64,
}

impl ArtifactCache {
    /// Opens (creating it `0700` if missing) the cache in `dir` for `engine`. Refuses a
    /// directory another user owns or that group or others may write to; deletes the files
    /// of other engine configurations and leftovers of interrupted writes.
    pub fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        match fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            Err(e) => return Err(e),
        }
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "{} may be written by group or others (mode {:o}): compiled code is loaded \
                 from it, so only retryguard's user may write there (chmod 700)",
                dir.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let me = own_uid(dir)?;
        if meta.uid() != me {
            return Err(io::Error::other(format!(
                "{} is owned by uid {}, not by this process's user (uid {me}): compiled code \
                 is loaded from it, so it must be retryguard's own",
                dir.display(),
                meta.uid()
            )));
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            compat: compatibility_hash(engine),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        };
        cache.prune();
        Ok(cache)
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!("{digest}-{}{SUFFIX}", self.compat))
    }

    /// The compiled policy `digest`, if this process wrote it earlier and it is intact.
    pub fn get(&self, engine: &Engine, digest: Digest) -> (Option<Component>, Lookup) {
        let path = self.path(digest);
        let lookup = match read_checked(&path, digest) {
            Ok(None) => Lookup::Miss,
            Ok(Some(artifact)) => match deserialize(engine, &artifact) {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return (Some(component), Lookup::Hit);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                        "a cached compiled policy did not load; compiling it again");
                    Lookup::Rejected
                }
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "a cached compiled policy is unusable; compiling it again");
                Lookup::Rejected
            }
        };
        if lookup == Lookup::Rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = fs::remove_file(&path);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        (None, lookup)
    }

    /// Stores the compiled `component` of policy `digest` (whole or not at all).
    pub fn put(&self, digest: Digest, component: &Component) {
        if let Err(e) = self.write(digest, component) {
            tracing::warn!(dir = %self.dir.display(), %digest, error = %e,
                "could not cache a compiled policy; the next start compiles it again");
        }
    }

    fn write(&self, digest: Digest, component: &Component) -> io::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(digest.as_bytes());
        header.extend_from_slice(&Sha256::digest(&artifact));
        let path = self.path(digest);
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&artifact)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Deletes files of other engine configurations and interrupted writes.
    fn prune(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let keep = format!("-{}{SUFFIX}", self.compat);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = (name.ends_with(SUFFIX) && !name.ends_with(&keep))
                || (name.starts_with('.') && name.ends_with(".tmp"));
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Reads a cache file and checks its header: `Ok(None)` when there is none.
fn read_checked(path: &Path, digest: Digest) -> io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(io::Error::other("not a retryguard cache file, or torn"));
    }
    if &bytes[8..40] != digest.as_bytes() {
        return Err(io::Error::other("holds another policy"));
    }
    let artifact = bytes.split_off(HEADER_LEN);
    if Sha256::digest(&artifact).as_slice() != &bytes[40..72] {
        return Err(io::Error::other(
            "the artifact's checksum does not match (corrupt)",
        ));
    }
    Ok(Some(artifact))
}

/// Loads compiled code written by [`ArtifactCache::put`] of this process or an earlier run
/// of it. The one other `unsafe` of the host.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `Component::serialize` of a
    // compatible engine, untampered. They do: the file is in a directory only this user can
    // write (checked at open), was written whole by `put` (temp file + rename), and its
    // sha256 was just checked against the header `put` wrote; wasmtime itself checks the
    // engine version and configuration before using it.
    unsafe { Component::deserialize(engine, artifact) }
}

/// The uid files created by this process get (std has no `geteuid`): the owner of a file
/// made for the purpose in `dir`.
fn own_uid(dir: &Path) -> io::Result<u32> {
    let probe = dir.join(format!(".uid-probe.{}.tmp", std::process::id()));
    let made = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|f| f.metadata());
    let _ = fs::remove_file(&probe);
    Ok(made?.uid())
}

/// The engine's compatibility hash as hex (sha256 over what wasmtime hashes, first 16 bytes).
fn compatibility_hash(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}
