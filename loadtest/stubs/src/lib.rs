//! Stub upstreams for the agent host: an Atlas CMMS backend and an
//! OpenAI-compatible chat model. Both run in-process for integration tests
//! (bound to `127.0.0.1:0`) or as the `atlas-stub` / `openai-stub` binaries for
//! the local stack and load runs.

pub mod atlas;
pub mod openai;
pub mod record;
pub mod token;

mod server;
mod time;

use std::time::Duration;

/// Reads `STUB_LATENCY_MS` (shared by both binaries); absent means no latency.
pub fn latency_from_env() -> anyhow::Result<Duration> {
    match std::env::var("STUB_LATENCY_MS") {
        Ok(v) if !v.trim().is_empty() => {
            let ms: u64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("STUB_LATENCY_MS must be a number, got {v:?}"))?;
            Ok(Duration::from_millis(ms))
        }
        _ => Ok(Duration::ZERO),
    }
}

/// Resolves the bind address of a binary: `STUB_BIND` wins (either a full
/// `ip:port` or just an ip combined with the port), else `127.0.0.1:<port>`
/// where the port comes from `port_var` or `default_port`.
pub fn bind_from_env(port_var: &str, default_port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let port = match std::env::var(port_var) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("{port_var} must be a port number, got {v:?}"))?,
        _ => default_port,
    };
    match std::env::var("STUB_BIND") {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            if let Ok(addr) = v.parse::<std::net::SocketAddr>() {
                return Ok(addr);
            }
            let ip: std::net::IpAddr = v
                .parse()
                .map_err(|_| anyhow::anyhow!("STUB_BIND must be an ip or ip:port, got {v:?}"))?;
            Ok(std::net::SocketAddr::new(ip, port))
        }
        _ => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    }
}

/// Installs a stderr tracing subscriber honouring `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless, so the error is ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; log files stay plain.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
