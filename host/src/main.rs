//! The `agent-host` binary: configuration, listener, signals. Everything else
//! lives in the library.

use std::net::{Ipv4Addr, SocketAddr};

use agent_host::config::Config;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("agent-host: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc gives threads that allocate at the same time their own arenas, up
/// to eight per core, and memory freed in one arena is not reused by another.
/// In the load runs that fragmentation was a fifth of the host's peak RSS;
/// one arena per core kept the peak at 100 concurrent chats 17 MB lower at
/// no CPU cost (loadtest/RESULTS.md). `MALLOC_ARENA_MAX`, when set, wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    // SAFETY: runs before any other thread exists; mallopt only sets a
    // malloc tunable and reports failure by its return value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores.min(64) as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn serve() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-host: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let otel = agent_host::telemetry::init_tracing(
        &config.log_level,
        config.log_json,
        config.otlp_endpoint.as_deref(),
    );
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match agent_host::run(listener, config, signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "agent host failed");
            std::process::ExitCode::FAILURE
        }
    };
    // The exporter blocks while it flushes; keep that off the async threads.
    let _ =
        tokio::task::spawn_blocking(move || agent_host::telemetry::shutdown_tracing(otel)).await;
    code
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
