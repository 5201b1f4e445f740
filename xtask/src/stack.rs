//! `cargo xtask test` and `cargo xtask local`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{build_dir, cargo};

/// Builds the plugins the tests load, then runs every test of the workspace.
pub fn test(root: &Path, extra: &[String]) -> Result<()> {
    build_dir(root, "plugins", &root.join("target/plugins"))?;
    build_dir(root, "tests/plugins", &root.join("target/test-plugins"))?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["test", "--workspace"])
        .args(extra);
    // Every test host maps its plugin pool's address space up front: 1,000
    // memory slots of 4 GiB, about 4 TiB of the 128 TiB a process has. The
    // host's integration tests share one binary, and libtest runs one test
    // per CPU, so a machine of some 30 CPUs could run out. At most 8 at once
    // unless RUST_TEST_THREADS says otherwise.
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        cmd.env("RUST_TEST_THREADS", cpus.min(8).to_string());
    }
    let status = cmd.status().context("running cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

/// Kills the child when dropped, so nothing outlives the stack.
struct Guard(&'static str, Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

/// A variable's value; blank counts as unset, as in the host.
fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_or(name: &str, default: &str) -> String {
    env_opt(name).unwrap_or_else(|| default.to_string())
}

fn wait_http(url: &str, child: &mut Guard) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (host, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .map(|(h, p)| (h.to_string(), format!("/{p}")))
        .unwrap_or((url.trim_start_matches("http://").to_string(), "/".into()));
    while Instant::now() < deadline {
        if let Some(status) = child.1.try_wait()? {
            bail!("{} exited early ({status})", child.0);
        }
        if let Ok(mut s) = std::net::TcpStream::connect(&host) {
            use std::io::{Read, Write};
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
            let mut buf = [0u8; 16];
            if s.read(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not answer on {url}", child.0)
}

/// Builds and starts a working stack on 127.0.0.1: the host on embedded
/// defaults (in-memory conversations), the shipped plugins, and stub
/// upstreams for whatever is not configured (Atlas unless `API_BASE`, the
/// model unless `OPENAI_API_KEY`).
pub fn local(root: &Path) -> Result<()> {
    build_dir(root, "plugins", &root.join("target/plugins"))?;
    let status = cargo()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "agent-host",
            "-p",
            "atlas-stubs",
        ])
        .status()?;
    if !status.success() {
        bail!("build failed");
    }
    let bin = root.join("target/release");
    let real_atlas = env_opt("API_BASE").is_some();
    let real_model = env_opt("OPENAI_API_KEY").is_some();
    let port = env_or("PORT", "4005");
    let admin_token = env_opt("ADMIN_TOKEN").unwrap_or_else(random_token);
    let mut children = Vec::new();
    let mut host = Command::new(bin.join("agent-host"));
    host.current_dir(root)
        .env("PORT", &port)
        .env("BIND_ADDRESS", env_or("BIND_ADDRESS", "127.0.0.1"))
        .env("LOG_FORMAT", env_or("LOG_FORMAT", "pretty"))
        .env("PLUGIN_DIR", env_or("PLUGIN_DIR", "target/plugins"))
        .env("ADMIN_TOKEN", &admin_token);
    // The stub's signing secret only with the stub: a real Atlas signs with
    // its own (`JWT_SECRET_KEY` from the environment, when given).
    let stub_jwt_secret = if real_atlas {
        None
    } else {
        Some(env_opt("JWT_SECRET_KEY").map_or_else(|| stub_secret(&bin), Ok)?)
    };
    if let Some(secret) = &stub_jwt_secret {
        host.env("JWT_SECRET_KEY", secret);
        let atlas_port = env_or("ATLAS_STUB_PORT", "8081");
        let mut g = Guard(
            "atlas-stub",
            Command::new(bin.join("atlas-stub"))
                .env("ATLAS_STUB_PORT", &atlas_port)
                .env("STUB_JWT_SECRET", secret)
                .stdout(Stdio::null())
                .spawn()?,
        );
        let base = format!("http://127.0.0.1:{atlas_port}");
        wait_http(&format!("{base}/actuator/health"), &mut g)?;
        host.env("API_BASE", base);
        children.push(g);
    }
    if !real_model {
        let model_port = env_or("OPENAI_STUB_PORT", "8082");
        let mut g = Guard(
            "openai-stub",
            Command::new(bin.join("openai-stub"))
                .env("OPENAI_STUB_PORT", &model_port)
                .stdout(Stdio::null())
                .spawn()?,
        );
        let base = format!("http://127.0.0.1:{model_port}/v1");
        wait_http(&format!("{base}/models"), &mut g)?;
        host.env("OPENAI_BASE_URL", base)
            .env("OPENAI_API_KEY", "local-stub");
        children.push(g);
    }
    let mut h = Guard("agent-host", host.spawn()?);
    wait_http(&format!("http://127.0.0.1:{port}/health/live"), &mut h)?;
    println!("\nAtlas Agent Host is up on http://127.0.0.1:{port}  (Ctrl-C stops everything)");
    if let Some(secret) = &stub_jwt_secret {
        let token = String::from_utf8(
            Command::new(bin.join("atlas-stub"))
                .args(["token", "admin@acme.test"])
                .env("STUB_JWT_SECRET", secret)
                .output()?
                .stdout,
        )?;
        println!(
            "\nTry it:\n  TOKEN={}\n  curl -s http://127.0.0.1:{port}/v1/chat -H \"Authorization: Bearer $TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"prompt\":\"Show me open work orders\"}}'\n",
            token.trim()
        );
        println!(
            "Stub users: admin@acme.test, tech@acme.test, viewer@acme.test (company 1), admin@globex.test (company 2)"
        );
    }
    println!(
        "Admin API: curl -s http://127.0.0.1:{port}/admin/plugins -H 'Authorization: Bearer {admin_token}'\n"
    );
    let status = h.1.wait()?;
    drop(children);
    if !status.success() {
        bail!("agent-host exited with {status}");
    }
    Ok(())
}

/// The stubs' default secret, so the host verifies their tokens locally.
fn stub_secret(bin: &Path) -> Result<String> {
    let out = Command::new(bin.join("atlas-stub"))
        .arg("secret")
        .output()
        .context("running atlas-stub")?;
    if !out.status.success() {
        bail!("atlas-stub secret failed");
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A fresh admin token for one local run (printed with the admin API line):
/// 128 bits from std's randomly keyed SipHash.
fn random_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    (0..2)
        .map(|_| {
            format!(
                "{:016x}",
                RandomState::new().hash_one(std::time::SystemTime::now())
            )
        })
        .collect()
}
