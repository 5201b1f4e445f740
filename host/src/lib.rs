//! Atlas Agent Host: a tool-calling assistant in front of the Atlas CMMS
//! backend, whose tools and validation policies are sandboxed Wasm components.
//!
//! - `config`: the typed configuration, read through a seam
//! - `http`: routes, CORS, limits, the chat contract
//! - `error`: the boundary error type and its HTTP mapping
//! - `identity`: JWT check, `/auth/me` lookup and cache, roles and tenant
//! - `agent`: the tool-calling loop
//! - `llm`: the model trait and its OpenAI implementation
//! - `plugins`: the Wasm runtime, registry, hot reload and policies
//! - `sessions`: conversations in memory or Redis
//! - `ratelimit`: per-user limits, shared through Redis
//! - `backend`: the Atlas HTTP client
//! - `outbound`: the HTTP/1.1 and TLS client under the backend and model calls
//! - `telemetry`: logs and metrics
//! - `alloc`: the mimalloc allocator the binary installs, and its settings

pub mod agent;
pub mod alloc;
pub mod backend;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod llm;
pub mod outbound;
pub mod plugins;
pub mod ratelimit;
pub mod sessions;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::backend::Backend;
use crate::config::{Config, PluginCompile};
use crate::identity::Identity;
use crate::llm::{ChatModel, OpenAiModel};
use crate::plugins::PluginHost;
use crate::plugins::compile::Compiler;
use crate::ratelimit::RateLimiter;
use crate::sessions::{Bounds, MemoryStore, RedisStore, SessionStore, redis_pool};
use crate::telemetry::Metrics;

/// Shared by every request.
pub struct AppState {
    pub config: Config,
    pub agent: Agent,
    pub identity: Identity,
    pub backend: Backend,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// Set on shutdown: readiness fails and new chats get 503.
    pub draining: AtomicBool,
}

/// A cloneable "shutting down" signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Builds everything the server needs from the configuration.
pub async fn build(config: Config) -> anyhow::Result<Arc<AppState>> {
    let metrics = Metrics::new();
    let backend = Backend::new(&config.api_base, config.backend_timeout, metrics.clone())?;
    let bounds = Bounds {
        ttl_ms: config.conversation_ttl.as_millis() as u64,
        max_messages: config.conversation_max_messages,
        max_bytes: config.conversation_max_bytes,
    };
    // One pool serves conversations and rate limits.
    let (sessions, limiter): (Arc<dyn SessionStore>, RateLimiter) = match &config.redis_url {
        Some(url) => {
            let pool = redis_pool(url, config.redis_timeout)?;
            (
                Arc::new(RedisStore::new(
                    pool.clone(),
                    &config.redis_key_prefix,
                    bounds,
                    config.redis_timeout,
                    metrics.clone(),
                )),
                RateLimiter::redis(
                    config.rate_limit_max,
                    config.rate_limit_window,
                    pool,
                    &config.redis_key_prefix,
                    config.redis_timeout,
                ),
            )
        }
        None => (
            Arc::new(MemoryStore::new(bounds)),
            RateLimiter::local(config.rate_limit_max, config.rate_limit_window),
        ),
    };
    let model: Option<Arc<dyn ChatModel>> = match &config.openai_api_key {
        Some(key) => Some(Arc::new(OpenAiModel::new(&config, key, metrics.clone())?)),
        None => None,
    };
    let compiler = match (&config.plugin_compile, &config.compiler_program) {
        (PluginCompile::Process, Some(program)) => Compiler::Process {
            program: program.clone(),
            timeout: plugins::compile::COMPILE_TIMEOUT,
        },
        _ => Compiler::Inline,
    };
    let compiler_kind = compiler.describe();
    let plugins = Arc::new(
        PluginHost::with_profiler(
            config.plugin_dir.clone(),
            config.plugin_limits.clone(),
            backend.clone(),
            metrics.clone(),
            config.plugin_profiler,
        )?
        .with_compiler(compiler),
    );
    let report = plugins.reload().await;
    tracing::info!(
        dir = %config.plugin_dir.display(),
        compiler = compiler_kind,
        profiler = ?config.plugin_profiler,
        loaded = ?report.loaded,
        refused = ?report.refused,
        "plugins loaded"
    );
    Ok(Arc::new(AppState {
        identity: Identity::new(&config, backend.clone()),
        agent: Agent {
            model,
            plugins,
            sessions,
            metrics: metrics.clone(),
            max_turns: config.max_turns,
            max_history_messages: config.max_history_messages,
            max_tool_results: config.max_tool_results,
            tool_result_max_bytes: config.tool_result_max_bytes,
        },
        backend,
        limiter,
        metrics,
        draining: AtomicBool::new(false),
        config,
    }))
}

/// Serves until `shutdown` resolves, then drains: readiness fails at once,
/// the listener closes, and in-flight requests get `SHUTDOWN_GRACE_MS` to finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = build(config).await?;
    serve(listener, state, shutdown).await
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    let _watcher = if state.config.plugin_watch {
        match plugins::watch::spawn(state.agent.plugins.clone(), Shutdown(rx.clone())) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %state.config.plugin_dir.display(), "cannot watch the plugin folder; use POST /admin/plugins/reload");
                None
            }
        }
    } else {
        None
    };
    let app = http::router(state.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "agent host listening");
    let draining_state = state.clone();
    let mut drained = Shutdown(rx);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        draining_state.draining.store(true, Ordering::SeqCst);
        draining_state.metrics.ready.set(0);
        let _ = tx.send(true);
    });
    let grace = state.config.shutdown_grace;
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        _ = async { drained.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; closing remaining connections");
        }
    }
    tracing::info!("agent host stopped");
    Ok(())
}
