//! Atlas backend stub for the local stack and load runs.
//!
//! `atlas-stub` serves until SIGINT/SIGTERM; `atlas-stub token <email> [ttl_secs]`
//! prints a token signed with the same secret (for curl and k6) and exits;
//! `atlas-stub secret` prints the secret (the host's `JWT_SECRET_KEY`).

use std::io::Write as _;

use anyhow::Context as _;
use atlas_stubs::atlas::{AtlasConfig, AtlasStub};
use atlas_stubs::token;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("STUB_JWT_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| token::DEFAULT_JWT_SECRET.to_owned());
    let key = token::decode_secret(&secret).context("STUB_JWT_SECRET")?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("token") => {
            let email = args
                .get(1)
                .context("usage: atlas-stub token <email> [ttl_secs]")?;
            let ttl = match args.get(2) {
                Some(t) => t.parse::<i64>().context("ttl_secs must be an integer")?,
                None => 3600,
            };
            println!("{}", token::mint_with_key(&key, email, ttl));
            return Ok(());
        }
        Some("secret") => {
            // The host's JWT_SECRET_KEY that matches this stub.
            println!("{secret}");
            return Ok(());
        }
        Some(other) => anyhow::bail!(
            "unknown argument {other:?}; usage: atlas-stub [token <email> [ttl_secs] | secret]"
        ),
        None => {}
    }

    atlas_stubs::init_tracing();
    let addr = atlas_stubs::bind_from_env("ATLAS_STUB_PORT", 8081)?;
    let config = AtlasConfig {
        jwt_secret_b64: secret,
        latency: atlas_stubs::latency_from_env()?,
    };
    let server = AtlasStub::try_new(config)?.serve(addr).await?;
    println!("atlas-stub listening on {}", server.base_url());
    std::io::stdout().flush()?;
    atlas_stubs::shutdown_signal().await;
    tracing::info!("atlas-stub shutting down");
    server.shutdown().await;
    Ok(())
}
