//! The policy engine: one wasmtime `Engine` per process, each policy compiled once per
//! digest, and a fresh, limited store for every evaluation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::artifacts::{ArtifactCache, CacheCounts, Lookup};
use super::bindings::{self, RetryPolicy, RetryPolicyPre};
use super::builtin;
use super::digest::Digest;
use super::error::{EngineError, EvalError, LoadError};
use super::limits::{EngineConfig, PolicyLimits};
use super::sandbox::{EpochTicker, Slots, StoreState, eval_error};
use super::types::{Classification, Decision, FailureInput, Params, PolicyInfo, output_caps};
use super::wasi::{self, WasiInputs};

/// How a policy is to be loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The sandbox limits for every evaluation of this policy.
    pub limits: PolicyLimits,
    /// Allow a component that imports WASI (componentize-py, componentize-js); it then gets
    /// a deny-all WASI: no files, env, args or network, stdio discarded, the wall clock
    /// frozen at the evaluation's `now_ms`, randomness seeded from the failure's `seed`.
    /// Off by default. Such policies need far larger limits than a Rust one (see
    /// `docs/policy-engine.md`).
    pub allow_wasi: bool,
}

/// A loaded, validated policy, ready to evaluate. Cheap to share (`Arc`).
pub struct Policy {
    digest: Digest,
    size: usize,
    imports: Vec<String>,
    info: PolicyInfo,
    limits: PolicyLimits,
    /// Instantiated through the deny-all WASI linker (it imports WASI), not the empty one.
    wasi: bool,
    pre: RetryPolicyPre<StoreState>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("imports", &self.imports)
            .field("info", &self.info)
            .field("limits", &self.limits)
            .field("wasi", &self.wasi)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The sha256 of the component's bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// The component's imports (empty for a pure policy).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// Whether the policy imports WASI and so runs with the deny-all WASI (it was loaded
    /// with `allow_wasi`).
    pub fn uses_wasi(&self) -> bool {
        self.wasi
    }
    /// What the policy says about itself.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }
    /// The limits every evaluation runs under.
    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }
}

/// The result of one evaluation: classify, then decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub classification: Classification,
    pub decision: Decision,
    /// Fuel the whole evaluation used, instantiation included.
    pub fuel_used: u64,
}

/// The world this host speaks, for messages and listings.
pub const WORLD: &str = "retryguard:policy/retry-policy@0.1.0";

/// Compiles and runs policies. One per process; share it behind an `Arc`.
pub struct PolicyEngine {
    engine: Engine,
    /// Provides nothing: pure policies import nothing.
    linker: Linker<StoreState>,
    /// The deny-all WASI, for policies loaded with `allow_wasi` that import it.
    wasi_linker: Linker<StoreState>,
    config: EngineConfig,
    slots: Slots,
    compiled: Mutex<HashMap<Digest, Component>>,
    /// Compiled policies on disk, across restarts (`with_artifact_cache`).
    artifacts: Option<ArtifactCache>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Starts an engine: pooling allocator sized by `config`, fuel and epoch interruption
    /// on, and the epoch ticker running.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        /// Linear memory kept resident per pool slot.
        const KEEP_RESIDENT_BYTES: usize = 128 << 10;
        if config.max_concurrent_evaluations == 0 || config.epoch_tick_ms == 0 {
            return Err(EngineError(
                "max_concurrent_evaluations and epoch_tick_ms must be at least 1".into(),
            ));
        }
        let slots = config.max_concurrent_evaluations;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            // A componentize-py component holds 14 core instances (a Rust one 1-3): room
            // for every slot to run one, so WASI policies wait for a slot, not fail busy.
            .total_core_instances(slots.saturating_mul(16))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(2))
            .max_core_instances_per_component(
                u32::try_from(PolicyLimits::MAX_INSTANCES).unwrap_or(u32::MAX),
            )
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .max_memory_size(config.max_memory_bytes)
            // Keep the first pages a policy touches resident between evaluations: a fresh
            // instance then costs no madvise/mprotect round trip to the kernel for them. Every
            // slot keeps its own, so this times `total_memories` bounds what stays resident
            // after a burst of concurrent evaluations (1 MiB here once kept 128 MiB of a
            // `serve` resident; docs/triage.md).
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 << 10)
            // Every call is synchronous, so no async fiber stacks: without this the pool
            // would reserve 1000 of them (2 GiB) because wasmtime-wasi needs the `async`
            // feature compiled in.
            .total_stacks(0);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .parallel_compilation(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| EngineError(format!("{e:#}")))?;
        let wasi_linker = wasi::linker(&engine)
            .map_err(|e| EngineError(format!("could not link the deny-all WASI: {e:#}")))?;
        let ticker =
            EpochTicker::start(engine.clone(), Duration::from_millis(config.epoch_tick_ms))
                .map_err(|e| EngineError(format!("could not start the epoch ticker: {e}")))?;
        Ok(Self {
            linker: Linker::new(&engine),
            wasi_linker,
            engine,
            slots: Slots::new(slots),
            config,
            compiled: Mutex::new(HashMap::new()),
            artifacts: None,
            _ticker: ticker,
        })
    }

    /// Keeps compiled policies in `dir` (created `0700` if missing), so a restart loads
    /// them instead of compiling them again. Refused, the engine staying without a cache,
    /// when `dir` cannot be made, is owned by another user or may be written by group or
    /// others (`policy/artifacts.rs`). Call before the first `load`.
    pub fn set_artifact_cache(&mut self, dir: &std::path::Path) -> Result<(), EngineError> {
        let cache = ArtifactCache::open(dir, &self.engine).map_err(|e| {
            EngineError(format!(
                "the compiled-policy cache {} is not usable: {e}",
                dir.display()
            ))
        })?;
        self.artifacts = Some(cache);
        Ok(())
    }

    /// Hits, misses and rejected files of the compiled-policy cache (`None`: no cache).
    pub fn artifact_cache_counts(&self) -> Option<CacheCounts> {
        self.artifacts.as_ref().map(ArtifactCache::counts)
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads the built-in default policy with default limits.
    pub fn load_builtin(&self) -> Result<Arc<Policy>, LoadError> {
        self.load(builtin::DEFAULT_POLICY, &LoadOptions::default())
    }

    /// Validates and compiles a policy (once per digest), then smoke-evaluates it.
    ///
    /// Refuses, each with its own error: bytes over the size cap, anything that is not a
    /// component, a component that does not compile, WASI imports unless allowed, any
    /// other import (and any WASI interface the deny-all WASI does not provide, such as
    /// `wasi:http`), exports that do not match the world, and a policy whose smoke
    /// evaluation fails. A policy with WASI imports, when allowed, is linked to the
    /// deny-all WASI; one without is linked to nothing, whatever `allow_wasi` says.
    pub fn load(&self, bytes: &[u8], options: &LoadOptions) -> Result<Arc<Policy>, LoadError> {
        if bytes.len() > self.config.max_policy_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                cap: self.config.max_policy_bytes,
            });
        }
        check_component_header(bytes)?;
        options.limits.validate(&self.config)?;
        let digest = Digest::of(bytes);
        let (component, fresh) = self.compile(digest, bytes)?;

        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let (wasi, other): (Vec<_>, Vec<_>) = imports
            .iter()
            .cloned()
            .partition(|name| name.starts_with("wasi:"));
        if !other.is_empty() {
            return Err(LoadError::UnsupportedImports(other));
        }
        let uses_wasi = !wasi.is_empty();
        if uses_wasi && !options.allow_wasi {
            return Err(LoadError::WasiNotAllowed(wasi));
        }
        let linker = if uses_wasi {
            &self.wasi_linker
        } else {
            &self.linker
        };

        // Fails, naming the import, for a WASI interface the deny-all WASI does not provide
        // (wasi:http, a 0.3 interface, ...) or one whose types do not match.
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnsupportedImports(vec![format!("{e:#}")]))?;
        let pre = RetryPolicyPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;

        let mut policy = Policy {
            digest,
            size: bytes.len(),
            imports,
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                params: Vec::new(),
            },
            limits: options.limits,
            wasi: uses_wasi,
            pre,
        };
        policy.info = self.smoke_test(&policy)?;
        // Only a policy that passed every check is kept on disk: nothing an upload that was
        // refused compiled to stays behind.
        if fresh && let Some(cache) = &self.artifacts {
            cache.put(digest, &component);
        }
        Ok(Arc::new(policy))
    }

    /// The compiled component of `bytes`: from memory, else from the on-disk cache, else
    /// compiled now (`true`: compiled now, not yet on disk).
    fn compile(&self, digest: Digest, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        let cached = self
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        if let Some(component) = cached {
            return Ok((component, false));
        }
        let from_disk = self.artifacts.as_ref().and_then(|cache| {
            let (found, lookup) = cache.get(&self.engine, digest);
            crate::metrics::global().policy_artifact(match lookup {
                Lookup::Hit => "hit",
                Lookup::Miss => "miss",
                Lookup::Rejected => "rejected",
            });
            found
        });
        let fresh = from_disk.is_none();
        let component = match from_disk {
            Some(c) => c,
            // Compile outside the lock: it takes milliseconds to seconds.
            None => Component::new(&self.engine, bytes)
                .map_err(|e| LoadError::Compile(format!("{e:#}")))?,
        };
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest, component.clone());
        Ok((component, fresh))
    }

    /// Exercises every export once over built-in sample failures.
    fn smoke_test(&self, policy: &Policy) -> Result<PolicyInfo, LoadError> {
        let smoke = |case, source| LoadError::SmokeFailed { case, source };
        let info = self.describe(policy).map_err(|e| smoke("describe", e))?;
        match self.validate_params(policy, &Params::new()) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(smoke(
                    "validate-params",
                    EvalError::MalformedOutput(format!("refused empty params: {message}")),
                ));
            }
            Err(e) => return Err(smoke("validate-params", e)),
        }
        for (case, failure) in builtin::smoke_failures() {
            let now = failure.failed_at_ms;
            self.evaluate(policy, &failure, &Params::new(), now)
                .map_err(|e| smoke(case, e))?;
        }
        Ok(info)
    }

    /// Runs `f` against a fresh instance of `policy` in a fresh, limited store. `wasi` is
    /// what the deny-all WASI's clock and randomness follow, for a policy that uses WASI.
    fn with_instance<T>(
        &self,
        policy: &Policy,
        wasi: WasiInputs,
        f: impl FnOnce(&mut Store<StoreState>, &RetryPolicy) -> wasmtime::Result<T>,
    ) -> Result<(T, u64), EvalError> {
        let _slot = self.slots.acquire();
        let limits = &policy.limits;
        let mut store = Store::new(&self.engine, StoreState::new(limits, wasi));
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| EvalError::Instantiate(format!("{e:#}")))?;
        let ticks = limits.deadline_ms.div_ceil(self.config.epoch_tick_ms) + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let instance = match policy.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                return Err(match eval_error(&e, store.data(), limits) {
                    EvalError::MalformedOutput(msg) => instantiate_error(msg),
                    other => other,
                });
            }
        };
        let value = f(&mut store, &instance).map_err(|e| eval_error(&e, store.data(), limits))?;
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        Ok((value, fuel_used))
    }

    /// Asks the policy to describe itself. (A WASI policy sees time 0 and seed 0.)
    pub fn describe(&self, policy: &Policy) -> Result<PolicyInfo, EvalError> {
        let (info, _) = self.with_instance(policy, WasiInputs::default(), |store, p| {
            p.call_describe(store)
        })?;
        check_len("name", &info.name, 128)?;
        check_len("version", &info.version, 64)?;
        check_len("description", &info.description, 4096)?;
        if info.params.len() > 256 {
            return Err(EvalError::MalformedOutput("more than 256 params".into()));
        }
        for p in &info.params {
            check_len("param name", &p.name, 128)?;
            check_len("param default", &p.default_value, 1024)?;
            check_len("param description", &p.description, 4096)?;
        }
        Ok(info.into())
    }

    /// Asks the policy whether `params` are valid for it: `Ok(Err(message))` is a refusal.
    /// (A WASI policy sees time 0 and seed 0.)
    pub fn validate_params(
        &self,
        policy: &Policy,
        params: &Params,
    ) -> Result<Result<(), String>, EvalError> {
        let (verdict, _) = self.with_instance(policy, WasiInputs::default(), |store, p| {
            p.call_validate_params(store, params)
        })?;
        if let Err(message) = &verdict {
            check_len(
                "validate-params message",
                message,
                output_caps::REASON_BYTES,
            )?;
        }
        Ok(verdict)
    }

    /// Classifies `failure` and decides on it, in one fresh instance. A WASI policy's clock
    /// reads `now_ms` and its randomness follows `failure.seed`.
    ///
    /// Blocking: call it from a thread that may block (e.g. tokio's `spawn_blocking`),
    /// never from inside an async task. (wasmtime-wasi's synchronous bindings enter a tokio
    /// runtime of their own for some WASI calls, which panics inside a running one.)
    pub fn evaluate(
        &self,
        policy: &Policy,
        failure: &FailureInput,
        params: &Params,
        now_ms: u64,
    ) -> Result<Evaluation, EvalError> {
        self.evaluate_with(policy, failure, params, now_ms, None)
    }

    /// Like `evaluate`, but with a classification this policy already made for the same
    /// failure (a cache hit): only `decide` runs.
    pub fn evaluate_with(
        &self,
        policy: &Policy,
        failure: &FailureInput,
        params: &Params,
        now_ms: u64,
        known: Option<&Classification>,
    ) -> Result<Evaluation, EvalError> {
        let started = std::time::Instant::now();
        let result = self.evaluate_inner(policy, failure, params, now_ms, known);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        crate::metrics::global().evaluation(
            &policy.digest().to_string(),
            outcome,
            started.elapsed(),
        );
        result
    }

    fn evaluate_inner(
        &self,
        policy: &Policy,
        failure: &FailureInput,
        params: &Params,
        now_ms: u64,
        known: Option<&Classification>,
    ) -> Result<Evaluation, EvalError> {
        let input = bindings::Failure::from(failure);
        let wasi = WasiInputs {
            now_ms,
            seed: failure.seed,
        };
        let known = known.map(bindings::Classification::from);
        let ((classification, decision), fuel_used) =
            self.with_instance(policy, wasi, |store, p| {
                let c = match known {
                    Some(c) => c,
                    None => p.call_classify(&mut *store, &input, params)?,
                };
                let d = p.call_decide(&mut *store, &input, &c, params, now_ms)?;
                Ok((c, d))
            })?;
        let classification = check_classification(classification)?;
        let decision = check_decision(decision)?;
        Ok(Evaluation {
            classification,
            decision,
            fuel_used,
        })
    }
}

/// A component starts with `\0asm`, then version 0x0d and layer 1; a core module has
/// version 1, layer 0.
fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotAComponent("no WebAssembly header"));
    }
    match bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err(LoadError::NotAComponent(
            "this is a core WebAssembly module",
        )),
        _ => Err(LoadError::NotAComponent("unknown WebAssembly layer")),
    }
}

fn instantiate_error(message: String) -> EvalError {
    if message.contains("pooling allocator") || message.contains("maximum concurrent") {
        EvalError::Busy(message)
    } else {
        EvalError::Instantiate(message)
    }
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), EvalError> {
    if value.len() > max {
        return Err(EvalError::MalformedOutput(format!(
            "{what} is {} bytes, over the {max}-byte cap",
            value.len()
        )));
    }
    Ok(())
}

fn check_classification(c: bindings::Classification) -> Result<Classification, EvalError> {
    let t = &c.failure_type;
    let well_formed = !t.is_empty()
        && t.len() <= output_caps::FAILURE_TYPE_BYTES
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        let shown: String = t.chars().take(80).collect();
        return Err(EvalError::MalformedOutput(format!(
            "failure type {shown:?} is not 1-{} bytes of [a-z0-9_]",
            output_caps::FAILURE_TYPE_BYTES
        )));
    }
    check_len("reason", &c.reason, output_caps::REASON_BYTES)?;
    Ok(Classification {
        failure_type: c.failure_type,
        retryable: c.retryable,
        reason: c.reason,
    })
}

fn check_decision(d: bindings::Decision) -> Result<Decision, EvalError> {
    Ok(match d {
        bindings::Decision::RetryAtMs(at_ms) => Decision::RetryAt { at_ms },
        bindings::Decision::Hold(hold) => {
            check_len("hold reason", &hold.reason, output_caps::REASON_BYTES)?;
            Decision::Hold {
                kind: hold.kind.into(),
                reason: hold.reason,
            }
        }
    })
}
