//! The `agent-host` binary: configuration, listener, signals. Everything else
//! lives in the library.

use std::net::SocketAddr;

use agent_host::config::Config;

fn main() -> std::process::ExitCode {
    agent_host::alloc::limit_malloc_arenas();
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
    let addr = SocketAddr::from((config.bind_address, config.port));
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
