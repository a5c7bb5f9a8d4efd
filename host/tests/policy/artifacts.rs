//! The on-disk cache of compiled policies: a second engine (a restart) loads what the first
//! compiled; a torn, corrupted, foreign or stale file is never run, only compiled again; a
//! refused policy leaves nothing behind; a directory others may write to is refused.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use retryguard::policy::{
    CacheCounts, Digest, EngineConfig, LoadError, LoadOptions, PolicyEngine, PolicyLimits, builtin,
};

use crate::common::{HOSTILE_POLICY, NOON_MS, failure};

/// A small engine (a restart of the process, as far as the cache can tell).
fn engine_with_cache(dir: &Path) -> PolicyEngine {
    let mut engine = PolicyEngine::new(EngineConfig {
        max_concurrent_evaluations: 2,
        ..EngineConfig::default()
    })
    .expect("engine starts");
    engine.set_artifact_cache(dir).expect("the cache opens");
    engine
}

fn counts(engine: &PolicyEngine) -> CacheCounts {
    engine.artifact_cache_counts().expect("a cache is set")
}

/// The cache files in `dir` (not the temporary ones).
fn cached_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

/// What the policy decides for a network error: the same whether compiled or cached.
fn verdict(engine: &PolicyEngine, bytes: &[u8]) -> String {
    let policy = engine.load(bytes, &LoadOptions::default()).unwrap();
    let f = failure(
        "app.tasks.charge",
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nConnectionError: refused\n",
    );
    format!(
        "{:?}",
        engine.evaluate(&policy, &f, &Vec::new(), NOON_MS).unwrap()
    )
}

#[test]
fn a_restart_loads_compiled_policies_from_disk_instead_of_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let first = engine_with_cache(dir.path());
    let compiled = verdict(&first, builtin::DEFAULT_POLICY);
    assert_eq!(
        counts(&first),
        CacheCounts {
            hits: 0,
            misses: 1,
            rejected: 0
        }
    );
    let files = cached_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let digest = Digest::of(builtin::DEFAULT_POLICY).to_string();
    assert!(name.starts_with(&format!("{digest}-")), "{name}");
    let mode = fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only this user reads or writes compiled code");
    let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o022, 0);

    // The restart: a new engine finds it and evaluates the same way.
    let second = engine_with_cache(dir.path());
    assert_eq!(verdict(&second, builtin::DEFAULT_POLICY), compiled);
    assert_eq!(
        counts(&second),
        CacheCounts {
            hits: 1,
            misses: 0,
            rejected: 0
        }
    );
    // Loaded again in the same process: from memory, the disk is not asked.
    verdict(&second, builtin::DEFAULT_POLICY);
    assert_eq!(counts(&second).hits, 1);
}

#[test]
fn torn_corrupt_and_foreign_files_are_compiled_again_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let expected = verdict(&engine_with_cache(dir.path()), builtin::DEFAULT_POLICY);
    let file = cached_files(dir.path()).remove(0);
    let good = fs::read(&file).unwrap();

    let hostile_dir = tempfile::tempdir().unwrap();
    verdict(&engine_with_cache(hostile_dir.path()), HOSTILE_POLICY);
    let other_policy = fs::read(cached_files(hostile_dir.path()).remove(0)).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("torn (a crash mid-write)", good[..good.len() / 3].to_vec()),
        ("a flipped bit in the machine code", flipped),
        ("shorter than its header", good[..10].to_vec()),
        ("not a cache file", wrong_magic),
        ("another policy's artifact under this name", other_policy),
        ("empty", Vec::new()),
    ];
    for (case, bytes) in cases {
        fs::write(&file, &bytes).unwrap();
        let engine = engine_with_cache(dir.path());
        assert_eq!(
            verdict(&engine, builtin::DEFAULT_POLICY),
            expected,
            "{case}: compiled again, same verdict"
        );
        assert_eq!(
            counts(&engine),
            CacheCounts {
                hits: 0,
                misses: 0,
                rejected: 1
            },
            "{case}"
        );
        assert_eq!(fs::read(&file).unwrap(), good, "{case}: rewritten whole");
    }
}

#[test]
fn files_of_other_engine_versions_and_interrupted_writes_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    verdict(&engine_with_cache(dir.path()), builtin::DEFAULT_POLICY);
    let current = cached_files(dir.path()).remove(0);
    let digest = Digest::of(builtin::DEFAULT_POLICY);
    let stale = dir
        .path()
        .join(format!("{digest}-00000000000000000000000000000000.cwasm"));
    let leftover = dir.path().join(format!(".{digest}.12345.tmp"));
    let unrelated = dir.path().join("README.txt");
    for p in [&stale, &leftover, &unrelated] {
        fs::write(p, b"x").unwrap();
    }
    let engine = engine_with_cache(dir.path());
    assert!(!stale.exists() && !leftover.exists());
    assert!(current.exists() && unrelated.exists(), "only its own files");
    verdict(&engine, builtin::DEFAULT_POLICY);
    assert_eq!(counts(&engine).hits, 1);
}

#[test]
fn a_refused_policy_leaves_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_cache(dir.path());
    // Compiles, then fails its smoke evaluation: out of fuel at once.
    let starved = LoadOptions {
        limits: PolicyLimits {
            fuel: 1,
            ..PolicyLimits::default()
        },
        allow_wasi: false,
    };
    let err = engine.load(HOSTILE_POLICY, &starved).unwrap_err();
    assert!(matches!(err, LoadError::SmokeFailed { .. }), "{err}");
    assert!(cached_files(dir.path()).is_empty());
    // Not a component at all.
    assert!(
        engine
            .load(b"\0asm garbage", &LoadOptions::default())
            .is_err()
    );
    assert!(cached_files(dir.path()).is_empty());
}

#[test]
fn a_directory_others_may_write_to_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let open = parent.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let mut engine = PolicyEngine::new(EngineConfig {
        max_concurrent_evaluations: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let err = engine.set_artifact_cache(&open).unwrap_err().to_string();
    assert!(err.contains("group or others"), "{err}");
    assert!(
        engine.artifact_cache_counts().is_none(),
        "no cache after a refusal"
    );

    let file = parent.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let err = engine.set_artifact_cache(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");

    // A missing directory is made, private.
    let fresh = parent.path().join("made/here");
    engine.set_artifact_cache(&fresh).unwrap();
    let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
