//! What every evaluation's store holds and how guest failures become typed errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder, Trap};

use super::error::EvalError;
use super::limits::PolicyLimits;
use super::wasi::{self, WasiInputs, WasiSlot};

/// The data of one evaluation's store: its resource limiter, and the deny-all WASI a policy
/// loaded with `allow_wasi` may call (built on its first call, so free for a pure policy).
#[derive(Debug)]
pub(crate) struct StoreState {
    pub(crate) limiter: Limiter,
    pub(crate) wasi: WasiSlot,
}

impl StoreState {
    /// `wasi` is what the evaluation's WASI, if the policy uses any, is built from.
    pub(crate) fn new(limits: &PolicyLimits, wasi: WasiInputs) -> Self {
        let inner = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(limits.instances)
            .memories(limits.instances)
            .tables(limits.tables)
            .table_elements(limits.table_elements)
            .trap_on_grow_failure(true)
            .build();
        Self {
            limiter: Limiter {
                inner,
                memory_denied: false,
            },
            wasi: WasiSlot::new(wasi),
        }
    }
}

/// wasmtime's `StoreLimits`, remembering whether it refused a memory growth, so that the
/// resulting trap is reported as the memory cap and not as a generic trap.
#[derive(Debug)]
pub(crate) struct Limiter {
    inner: StoreLimits,
    memory_denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let verdict = self.inner.memory_growing(current, desired, maximum);
        if !matches!(verdict, Ok(true)) {
            self.memory_denied = true;
        }
        verdict
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Turns a wasmtime error from instantiating or calling a policy into a typed error.
pub(crate) fn eval_error(
    err: &wasmtime::Error,
    state: &StoreState,
    limits: &PolicyLimits,
) -> EvalError {
    if state.limiter.memory_denied {
        return EvalError::MemoryCap {
            cap: limits.memory_bytes,
        };
    }
    if let Some(code) = wasi::exit_code(err) {
        return EvalError::Trap(format!("policy called wasi:cli/exit (status {code})"));
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EvalError::OutOfFuel { limit: limits.fuel },
        Some(Trap::Interrupt) => EvalError::Deadline {
            deadline: limits.deadline(),
        },
        Some(Trap::StackOverflow) => EvalError::StackOverflow,
        Some(trap) => EvalError::Trap(trap.to_string()),
        // Not a trap: the guest's output could not be lifted (invalid UTF-8, a bad enum
        // discriminant, an out-of-bounds pointer, ...).
        None => EvalError::MalformedOutput(format!("{err:#}")),
    }
}

/// Bounds how many evaluations run at once, so the instance pool is never exhausted:
/// a caller past the limit waits for a slot instead of failing.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

impl Slots {
    pub(crate) fn new(count: u32) -> Self {
        Self {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        SlotGuard(self)
    }
}

/// Gives its slot back when dropped.
#[derive(Debug)]
pub(crate) struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// A background thread that advances the engine's epoch every tick: the clock behind
/// every evaluation's wall-clock deadline. Stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("retryguard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            // The thread only sleeps and ticks; it cannot panic.
            let _ = handle.join();
        }
    }
}
