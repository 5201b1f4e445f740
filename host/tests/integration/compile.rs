//! Plugins compiled in a child process (`agent-host --compile-plugin`, what
//! the binary does by default): the plugins work as when compiled inline, and
//! a compiler that fails, crashes, hangs or cannot start refuses the plugin
//! with a message while the version already loaded keeps serving.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use agent_host::backend::Backend;
use agent_host::config::PluginLimits;
use agent_host::plugins::compile::{COMPILE_TIMEOUT, Compiler};
use agent_host::plugins::{CallInfo, PluginHost, ToolResult};
use agent_host::telemetry::Metrics;
use atlas_stubs::atlas::{AtlasConfig, AtlasStub, SpawnedAtlas};

/// `program --compile-plugin` as the compiler, with the host's time limit.
fn child(program: PathBuf) -> Compiler {
    Compiler::Process {
        program,
        timeout: COMPILE_TIMEOUT,
    }
}

fn this_host() -> Compiler {
    child(PathBuf::from(env!("CARGO_BIN_EXE_agent-host")))
}

fn limits() -> PluginLimits {
    PluginLimits {
        timeout: Duration::from_secs(5),
        fuel: 500_000_000,
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
    }
}

struct Fixture {
    atlas: SpawnedAtlas,
    dir: tempfile::TempDir,
    metrics: Metrics,
}

impl Fixture {
    async fn new() -> Fixture {
        let atlas = AtlasStub::spawn(AtlasConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), &["work-orders", "tool-access"]);
        Fixture {
            atlas,
            dir,
            metrics: Metrics::new(),
        }
    }

    fn host(&self, compiler: Compiler) -> PluginHost {
        let backend = Backend::new(
            &self.atlas.base_url(),
            Duration::from_secs(5),
            self.metrics.clone(),
        )
        .unwrap();
        PluginHost::new(
            self.dir.path().to_path_buf(),
            limits(),
            backend,
            self.metrics.clone(),
        )
        .unwrap()
        .with_compiler(compiler)
    }

    async fn list_work_orders(&self, host: &PluginHost) -> ToolResult {
        let user = admin_user();
        let auth = format!("Bearer {}", self.atlas.token(ADMIN));
        let info = CallInfo {
            user: &user,
            authorization: &auth,
            session_id: "s-1",
            request_id: "req-1",
            agent_id: "default-agent",
            max_results: 10,
        };
        host.invoke("view_work_orders", r#"{"limit": 5}"#, &info)
            .await
    }
}

fn content(r: &ToolResult) -> &str {
    match &r.outcome {
        Ok(ok) => &ok.content,
        Err(e) => panic!("tool failed: {} {}", e.kind, e.message),
    }
}

/// A stand-in compiler program: a shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn plugins_compiled_in_a_child_process_answer_as_inline_ones() {
    let f = Fixture::new().await;
    let inline = f.host(Compiler::Inline);
    let child = f.host(this_host());
    let a = inline.reload().await;
    let b = child.reload().await;
    assert_eq!(a.loaded, vec!["tool-access", "work-orders"], "{a:?}");
    assert_eq!(b.loaded, a.loaded, "{b:?}");
    assert!(b.refused.is_empty(), "{b:?}");
    assert!(child.has_policies());
    let from_inline = f.list_work_orders(&inline).await;
    let from_child = f.list_work_orders(&child).await;
    assert!(
        content(&from_child).contains("WO"),
        "{}",
        content(&from_child)
    );
    assert_eq!(content(&from_child), content(&from_inline));
}

#[tokio::test]
async fn a_component_the_child_refuses_is_refused_and_the_old_version_serves() {
    let f = Fixture::new().await;
    let host = f.host(this_host());
    assert_eq!(
        host.reload().await.loaded,
        vec!["tool-access", "work-orders"]
    );
    std::fs::write(f.dir.path().join("work-orders.wasm"), b"not wasm at all").unwrap();
    let report = host.reload().await;
    let refusal = &report.refused["work-orders"];
    assert!(
        refusal.starts_with("not a valid Wasm component:"),
        "{refusal}"
    );
    assert!(report.loaded.is_empty(), "{report:?}");
    assert!(content(&f.list_work_orders(&host).await).contains("WO"));
}

#[tokio::test]
async fn a_compiler_that_fails_crashes_hangs_or_is_missing_refuses_with_a_message() {
    let f = Fixture::new().await;
    let bin = tempfile::tempdir().unwrap();
    let pids = bin.path().join("hung-pids");
    let cases: Vec<(Compiler, &str)> = vec![
        (
            child(bin.path().join("no-such-compiler")),
            "cannot start the plugin compiler",
        ),
        (
            // Succeeds with nothing: the artefact is checked, not trusted.
            child(script(bin.path(), "empty", "/bin/cat >/dev/null; exit 0")),
            "the plugin compiler's output could not be loaded",
        ),
        (
            child(script(bin.path(), "garbage", "exec /bin/cat")),
            "the plugin compiler's output could not be loaded",
        ),
        (
            child(script(
                bin.path(),
                "fails",
                "echo 'out of disk' >&2; exit 1",
            )),
            "the plugin compiler stopped (exit status 1): out of disk",
        ),
        (
            child(script(bin.path(), "crashes", "kill -KILL $$")),
            "the plugin compiler stopped (killed by signal 9)",
        ),
        (
            Compiler::Process {
                program: script(
                    bin.path(),
                    "hangs",
                    &format!("echo $$ >> {}; exec /bin/sleep 30", pids.display()),
                ),
                timeout: Duration::from_millis(300),
            },
            "compiling took longer than 300ms",
        ),
    ];
    for (compiler, expected) in cases {
        let host = Arc::new(f.host(compiler));
        let started = Instant::now();
        let mut report = host.reload().await;
        // A script just written can be briefly held open by a process another
        // test forks at that moment (ETXTBSY): try again.
        for _ in 0..5 {
            if !report
                .refused
                .values()
                .any(|r| r.contains("Text file busy"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            report = host.reload().await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{expected}: took {:?}",
            started.elapsed()
        );
        assert!(report.loaded.is_empty(), "{expected}: {report:?}");
        for name in ["work-orders", "tool-access"] {
            let refusal = &report.refused[name];
            assert!(refusal.starts_with(expected), "{name}: {refusal}");
        }
        // The policy cannot load, so chats are refused rather than unchecked.
        assert_eq!(host.missing_policies(), vec!["tool-access"]);
    }
    // The compilers that hung were killed, not left running.
    let hung: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(hung.len(), 2, "one per plugin: {hung:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in hung {
        // Gone, or a zombie waiting for tokio to reap it.
        while let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        {
            assert!(
                Instant::now() < deadline,
                "compiler {pid} still runs: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_host_binary_compiles_in_a_child_and_serves_chats() {
    let stack = Stack::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &stack.env {
        cmd.env(k, v);
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .env("WORKER_THREADS", "1")
        // Read by wasmtime in the host but not in the compiler process, whose
        // environment is cleared; the engine settings must still agree.
        .env("WASMTIME_BACKTRACE_DETAILS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "host did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(format!("{base}/v1/chat"))
        .bearer_auth(stack.token(ADMIN))
        .json(&serde_json::json!({"prompt": "show me open work orders"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["toolCalls"][0]["toolName"], "view_work_orders",
        "{body}"
    );
    let log = std::fs::read_to_string(log.path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("\"plugins loaded\""))
        .unwrap_or_else(|| panic!("no 'plugins loaded' line in:\n{log}"));
    assert!(line.contains("\"compiler\":\"process\""), "{line}");
}
