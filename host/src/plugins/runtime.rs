//! The sandbox: one engine, a fresh limited store per call, and the host
//! functions a plugin may import.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config as EngineConfig, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, BackendError, Level, Method, Response};
use super::manifest::Manifest;
use crate::backend::{Backend, CallError, encode_path};
use crate::config::{PluginLimits, PluginProfiler};

/// One epoch tick; deadlines are counted in these.
pub const TICK: Duration = Duration::from_millis(10);
/// Upper bound on any plugin's memory, whatever its policy file says.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;
/// Linear memory kept mapped in an idle pool slot where the kernel can tell
/// which pages a call dirtied (`PAGEMAP_SCAN`, Linux 6.7+): only those are reset.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// Without `PAGEMAP_SCAN` the kept part is reset with `memset` whole, so keep
/// less: 512 KiB measured as fast as 1 MiB with the scan in the invocation
/// benchmark (docs/performance.md).
const KEEP_RESIDENT_BYTES_NO_SCAN: usize = 512 << 10;
/// Warm idle slots, per shard of the pool, beyond which new instances reuse
/// warm slots rather than cold ones. wasmtime splits a pool of 128 slots or
/// more (and this budget) into one shard per CPU, up to 16, and a thread
/// allocates from its own shard. A shard needs a warm slot for each plugin
/// that a chat runs in turn (four with the shipped set: a tool and three
/// policies), or the plugins take each other's slots and an instantiation
/// maps its plugin's memory image again (an mmap with a TLB shootdown, then
/// copy-on-write faults): with 4 slots in all, three policies called in turn
/// cost five to seven times as much (docs/performance.md).
const WARM_SLOTS_PER_SHARD: u32 = 4;

/// Builds the engine and starts the epoch ticker. The ticker thread ends
/// when the engine is dropped. With `PluginProfiler::PerfMap` the engine
/// writes `/tmp/perf-<pid>.map` (perf's format for JIT code), naming each
/// plugin function as it is loaded. The setting changes no machine code, so
/// plugins compiled by the compiler process (which never profiles) load
/// either way.
pub fn engine(profiler: PluginProfiler) -> anyhow::Result<Engine> {
    let mut cfg = engine_config(true);
    if profiler == PluginProfiler::PerfMap {
        cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&cfg)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
    Ok(engine)
}

/// An engine with the host's settings and no epoch ticker, for the plugin
/// compiler process (`compile::Compiler::Process`).
pub fn compiler_engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&engine_config(false))?)
}

/// The engine settings, one place for the host and its compiler process (a
/// precompiled component only loads into an engine configured the same
/// way, which wasmtime checks). `log` reports the pool's settings.
fn engine_config(log: bool) -> EngineConfig {
    let mut cfg = EngineConfig::new();
    cfg.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Set, not left to WASMTIME_BACKTRACE_DETAILS: the compiler process
        // runs without the host's environment, and an artefact compiled
        // with another value of this setting would not load.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    let scan = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
    let keep = if scan {
        KEEP_RESIDENT_BYTES
    } else {
        KEEP_RESIDENT_BYTES_NO_SCAN
    };
    if log {
        tracing::info!(
            pagemap_scan = scan,
            keep_resident_bytes = keep,
            "plugin memory pool"
        );
    }
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(2000)
        .total_memories(1000)
        .total_tables(2000)
        .max_memory_size(MAX_MEMORY_BYTES)
        // Between calls a slot keeps the first part of its linear memory
        // mapped and only the pages a call dirtied are reset (found with the
        // PAGEMAP_SCAN ioctl where the kernel has it, 6.7+), instead of
        // madvise + page faults on every call, whose TLB shootdowns dominated
        // the host's CPU under load. Plugins are linked with a 256 KiB stack
        // (.cargo/config.toml) so stack, data and a small heap fit in that
        // first MiB.
        .linear_memory_keep_resident(keep)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto)
        // A new instance takes a slot its plugin used last (most recently
        // used first), and once this many idle slots are warm it reuses warm
        // slots of other plugins rather than touching cold ones: the set of
        // slots ever used, and so the resident memory, follows the peak
        // number of concurrent calls (plus these warm slots) rather than the
        // pool size.
        .max_unused_warm_slots(WARM_SLOTS_PER_SHARD * pool_shards());
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    cfg
}

/// The number of shards wasmtime's pool uses: one per CPU, at most 16 (for
/// pools of 128 slots or more, as this one is).
fn pool_shards() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16) as u32)
}

/// Memory cap that remembers it was hit, so the failure can be named, and
/// whether the call grew its memory past the size it started with.
pub struct Limiter {
    max_memory: usize,
    pub memory_exceeded: bool,
    pub memory_grew: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory || maximum.is_some_and(|m| desired > m) {
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.max_memory);
        }
        // Creating a memory is a growth from 0 (at instantiation), not
        // counted; a memory declared with 0 pages that grows later is not
        // counted either (Rust modules start with their stack and data).
        self.memory_grew |= current > 0 && desired > current;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What a backend call needs that the plugin must never see.
#[derive(Clone)]
pub struct Delegation {
    pub authorization: String,
    pub request_id: String,
}

/// Per-call store data.
pub struct State {
    /// Built the first time the guest calls a WASI function: most calls
    /// make none, and a context costs a few allocations to build and drop.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub limiter: Limiter,
    plugin: Arc<str>,
    manifest: Arc<Manifest>,
    backend: Backend,
    delegation: Option<Delegation>,
    pub backend_time: Duration,
    pub denied: Arc<AtomicBool>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(sandbox_wasi),
            table: &mut self.table,
        }
    }
}

/// The WASI a plugin sees: no files, sockets, env or args; stdin empty,
/// stdout and stderr discarded.
fn sandbox_wasi() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// A fresh store: no files, sockets, env or args; fuel, epoch deadline and
/// memory cap from the plugin's limits.
pub fn store(
    engine: &Engine,
    plugin: Arc<str>,
    manifest: Arc<Manifest>,
    backend: Backend,
    delegation: Option<Delegation>,
) -> anyhow::Result<Store<State>> {
    let limits: &PluginLimits = &manifest.limits;
    let max_memory = limits.memory_bytes.min(MAX_MEMORY_BYTES);
    let fuel = limits.fuel;
    let ticks = (limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
    let mut store = Store::new(
        engine,
        State {
            wasi: None,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory,
                memory_exceeded: false,
                memory_grew: false,
            },
            plugin,
            manifest,
            backend,
            delegation,
            backend_time: Duration::ZERO,
            denied: Arc::new(AtomicBool::new(false)),
        },
    );
    store.limiter(|s| &mut s.limiter);
    store.set_fuel(fuel)?;
    // At every epoch tick a running guest hands its thread back to the
    // runtime for a moment, so a plugin that computes for long holds up the
    // other requests and the health probes on that worker for one tick at a
    // time. After `ticks` ticks of running it is stopped with a timeout trap;
    // ticks spent waiting (on the backend, or to be scheduled again) are not
    // counted here, and the callers' tokio timers bound the wall-clock time.
    let mut left = ticks;
    store.epoch_deadline_callback(move |_| {
        left = left.saturating_sub(1);
        Ok(if left == 0 {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    store.set_epoch_deadline(1);
    Ok(store)
}

pub fn tool_linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::tool::ToolPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )?;
    Ok(linker)
}

pub fn policy_linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::policy::PolicyPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )?;
    Ok(linker)
}

/// Why a call into a plugin failed, named for the model, metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Timeout,
    Cpu,
    OutOfMemory,
    Trap,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Timeout => "timeout",
            Fault::Cpu => "cpu",
            Fault::OutOfMemory => "out-of-memory",
            Fault::Trap => "trap",
        }
    }
}

/// Names the failure of a call that returned an error (not a timeout of
/// the whole call, which the caller sees itself).
pub fn classify(err: &wasmtime::Error, state: &State) -> Fault {
    if state.limiter.memory_exceeded {
        return Fault::OutOfMemory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout,
        Some(Trap::OutOfFuel) => Fault::Cpu,
        _ => Fault::Trap,
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

impl bindings::tool::atlas::agent::types::Host for State {}

impl bindings::tool::atlas::agent::log::Host for State {
    async fn log(&mut self, level: Level, message: String) {
        // Bounded so a plugin cannot flood the log with one call.
        let message: String = message.chars().take(2000).collect();
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl bindings::tool::atlas::agent::backend::Host for State {
    async fn request(
        &mut self,
        method: Method,
        path: Vec<String>,
        body: Option<String>,
    ) -> Result<Response, BackendError> {
        let method_str = method_name(method);
        let path = encode_path(&path).map_err(|e| BackendError::InvalidPath(e.to_string()))?;
        if !self.manifest.allows(method_str, &path) {
            self.denied.store(true, Ordering::Relaxed);
            tracing::warn!(plugin = &*self.plugin, method = method_str, path = %path, "backend path not granted");
            return Err(BackendError::NotGranted(format!(
                "{method_str} {path} is not granted to plugin {}",
                self.plugin
            )));
        }
        let Some(delegation) = self.delegation.clone() else {
            return Err(BackendError::NotGranted(
                "no backend access outside a tool call".into(),
            ));
        };
        let m = http::Method::from_bytes(method_str.as_bytes()).expect("known method");
        let started = Instant::now();
        let result = self
            .backend
            .call(
                m,
                &path,
                body,
                &delegation.authorization,
                &delegation.request_id,
            )
            .await;
        self.backend_time += started.elapsed();
        match result {
            Ok((status, body)) => Ok(Response { status, body }),
            Err(CallError::Timeout) => Err(BackendError::Timeout),
            Err(CallError::TooLarge) => Err(BackendError::TooLarge),
            Err(CallError::Unavailable(e)) => Err(BackendError::Unavailable(e)),
        }
    }
}
