//! OpenAI-compatible model stub for the local stack and load runs; serves
//! until SIGINT/SIGTERM.

use std::io::Write as _;

use anyhow::Context as _;
use atlas_stubs::openai::{OpenAiConfig, OpenAiStub};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        anyhow::bail!("unexpected argument {arg:?}; openai-stub is configured by environment");
    }
    atlas_stubs::init_tracing();
    let addr = atlas_stubs::bind_from_env("OPENAI_STUB_PORT", 8082)?;
    let fail_every = match std::env::var("STUB_FAIL_EVERY") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<u32>()
                .context("STUB_FAIL_EVERY must be a positive integer")?,
        )
        .filter(|n| *n > 0),
        _ => None,
    };
    let api_key = std::env::var("STUB_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let config = OpenAiConfig {
        latency: atlas_stubs::latency_from_env()?,
        api_key,
        fail_every,
    };
    let server = OpenAiStub::new(config).serve(addr).await?;
    println!("openai-stub listening on {}", server.base_url());
    std::io::stdout().flush()?;
    atlas_stubs::shutdown_signal().await;
    tracing::info!("openai-stub shutting down");
    server.shutdown().await;
    Ok(())
}
