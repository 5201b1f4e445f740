//! The `agent-host` binary: configuration, listener, signals. Everything else
//! lives in the library.

use std::net::SocketAddr;

use agent_host::config::Config;

#[global_allocator]
static GLOBAL: agent_host::alloc::Allocator = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            agent_host::plugins::compile::CHILD_FLAG,
        ))
    {
        // The plugin compiler the host runs as its own child process.
        return std::process::ExitCode::from(agent_host::plugins::compile::child_main());
    }
    agent_host::alloc::tune();
    // Read before the runtime is built: it sets the runtime's threads.
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-host: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    config.compiler_program = agent_host::plugins::compile::this_program();
    // Set explicitly, so tokio never reads (and panics on) its own
    // TOKIO_WORKER_THREADS. The default follows the CPUs this process may
    // use, a container's CPU limit included.
    let workers = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    // One thread gets tokio's current-thread scheduler: no work stealing or
    // cross-thread wake-ups to pay for. Against the multi-thread scheduler
    // with one worker it took about 7 % less CPU per chat under load
    // (loadtest/RESULTS.md).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-host: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // On a thread of its own rather than this one: mimalloc set up this
    // thread's heap before `alloc::tune` ran, and some options are copied
    // into a thread's heap when it is made.
    let server = std::thread::Builder::new()
        .name("agent-host".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::spawn(serve(config))
                    .await
                    .unwrap_or(std::process::ExitCode::FAILURE)
            })
        });
    match server.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("agent-host: cannot start the server thread: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> std::process::ExitCode {
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
