//! The deny-all WASI that policies loaded with `allow_wasi` get (componentize-py and
//! componentize-js components import WASI even when they use none of it).
//!
//! It keeps such a policy as pure as one that imports nothing: no preopened directories, no
//! environment, no arguments, no network (every socket address and name lookup is denied),
//! stdin empty, stdout and stderr discarded; the wall clock is frozen at the evaluation's
//! `now_ms`, the monotonic clock starts at zero and only moves when the guest sleeps (a
//! sleep returns at once and advances it by the time slept), and every random source is
//! seeded from the failure's `seed`. The same input therefore gives the same output, as the
//! contract requires, and no WASI call can block the host thread.
//!
//! The WASI context is built lazily, on the guest's first WASI call, so a pure policy (which
//! runs on the empty linker and never makes one) pays nothing for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::p2::pipe::SinkOutputStream;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::sandbox::StoreState;

/// The `wasi:clocks/monotonic-clock` version wasmtime-wasi 48 links: its two `subscribe-*`
/// functions are replaced under this exact name (a guest importing any `0.2.x` resolves
/// to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Most WASI resources (streams, pollables, sockets, ...) one evaluation may hold at once:
/// host memory that the guest's memory cap does not cover.
const MAX_RESOURCES: usize = 4096;

/// Largest single `get-random-bytes` request, for the same reason.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// What a WASI context is built from: the evaluation's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WasiInputs {
    /// The wall clock's only reading, epoch milliseconds.
    pub(crate) now_ms: u64,
    /// Seeds every random source.
    pub(crate) seed: u64,
}

/// The WASI state of one store: the inputs, and the context once the guest first uses it.
pub(crate) struct WasiSlot {
    inputs: WasiInputs,
    live: Option<Box<LiveWasi>>,
}

struct LiveWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    /// The monotonic clock's reading in nanoseconds, shared with the clock the context holds.
    monotonic: Arc<AtomicU64>,
}

impl std::fmt::Debug for WasiSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiSlot")
            .field("inputs", &self.inputs)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl WasiSlot {
    /// Costs nothing until the guest makes a WASI call.
    pub(crate) fn new(inputs: WasiInputs) -> Self {
        Self { inputs, live: None }
    }

    fn live(&mut self) -> &mut LiveWasi {
        let inputs = self.inputs;
        self.live
            .get_or_insert_with(|| Box::new(LiveWasi::new(inputs)))
    }
}

impl LiveWasi {
    fn new(inputs: WasiInputs) -> Self {
        // One generator seeded from the failure's seed feeds every random source, so they
        // differ from one another yet all follow from the seed.
        let mut seeder = StdRng::seed_from_u64(inputs.seed);
        let secure = StdRng::from_rng(&mut seeder);
        let insecure = StdRng::from_rng(&mut seeder);
        let insecure_seed: u128 = seeder.random();
        let monotonic = Arc::new(AtomicU64::new(0));

        let mut builder = WasiCtx::builder();
        builder
            // No preopens, env, args or cwd: the builder starts without them.
            .stdin(std::io::empty())
            .stdout(SinkOutputStream)
            .stderr(SinkOutputStream)
            .wall_clock(FrozenWallClock(Duration::from_millis(inputs.now_ms)))
            .monotonic_clock(VirtualMonotonicClock(Arc::clone(&monotonic)))
            .secure_random(secure)
            .insecure_random(insecure)
            .insecure_random_seed(insecure_seed)
            .max_random_size(MAX_RANDOM_BYTES)
            // Denied already by default; said here so that no default can change it.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            ctx: builder.build(),
            table,
            monotonic,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let live = self.wasi.live();
        WasiCtxView {
            ctx: &mut live.ctx,
            table: &mut live.table,
        }
    }
}

/// The wall clock: always the evaluation's `now_ms`.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// The monotonic clock: nanoseconds since the evaluation started, moved only by sleeps.
struct VirtualMonotonicClock(Arc<AtomicU64>);

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A timer that is ready at once and, when it is, moves the monotonic clock to its deadline:
/// a sleep costs no host time, and the guest still sees the time it slept pass.
struct VirtualTimer {
    clock: Arc<AtomicU64>,
    deadline: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for VirtualTimer {
    async fn ready(&mut self) {
        self.clock.fetch_max(self.deadline, Ordering::Relaxed);
    }
}

fn virtual_timer(
    mut store: StoreContextMut<'_, StoreState>,
    deadline: impl FnOnce(u64) -> u64,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let live = store.data_mut().wasi.live();
    let clock = Arc::clone(&live.monotonic);
    let deadline = deadline(clock.load(Ordering::Relaxed));
    let timer = live.table.push(VirtualTimer { clock, deadline })?;
    Ok((subscribe(&mut live.table, timer)?,))
}

/// The linker for WASI policies: wasmtime-wasi's synchronous p2 interfaces (`wasi:cli`,
/// `wasi:clocks`, `wasi:filesystem`, `wasi:io`, `wasi:random`, `wasi:sockets`), with the
/// monotonic clock's timers replaced by virtual ones: wasmtime-wasi's would block the host
/// thread for as long as the guest asks, out of reach of the epoch deadline.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |store, (duration,): (u64,)| {
        virtual_timer(store, |now| now.saturating_add(duration))
    })?;
    clock.func_wrap("subscribe-instant", |store, (instant,): (u64,)| {
        virtual_timer(store, |_| instant)
    })?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The exit code if `err` is the guest calling `wasi:cli/exit`.
pub(crate) fn exit_code(err: &wasmtime::Error) -> Option<i32> {
    err.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0)
}
