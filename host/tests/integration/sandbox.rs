//! Sandbox limits, each obeyed and violated, plus loading rules. Runs the
//! `misbehave` test plugin (tests/plugins/misbehave) through the real runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use agent_host::backend::Backend;
use agent_host::config::PluginLimits;
use agent_host::plugins::{CallInfo, PluginHost, ToolResult};
use agent_host::telemetry::Metrics;
use atlas_stubs::atlas::{AtlasConfig, AtlasStub, SpawnedAtlas};
use serde_json::{Value, json};

fn limits() -> PluginLimits {
    PluginLimits {
        timeout: Duration::from_millis(500),
        fuel: 200_000_000,
        memory_bytes: 32 << 20,
        output_bytes: 64 * 1024,
    }
}

struct Sandbox {
    host: Arc<PluginHost>,
    atlas: SpawnedAtlas,
    dir: tempfile::TempDir,
    token: String,
    metrics: Metrics,
}

const MISBEHAVE_POLICY: &str = r#"
[[allow]]
method = "POST"
path = "/api/agent/tools/work-orders/{id}/details"
"#;

impl Sandbox {
    async fn new() -> Sandbox {
        let atlas = AtlasStub::spawn(AtlasConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            built("test-plugins", "misbehave"),
            dir.path().join("misbehave.wasm"),
        )
        .unwrap();
        std::fs::write(dir.path().join("misbehave.policy.toml"), MISBEHAVE_POLICY).unwrap();
        let metrics = Metrics::new();
        let backend =
            Backend::new(&atlas.base_url(), Duration::from_secs(5), metrics.clone()).unwrap();
        let host = Arc::new(
            PluginHost::new(dir.path().to_path_buf(), limits(), backend, metrics.clone()).unwrap(),
        );
        let report = host.reload().await;
        assert_eq!(report.loaded, vec!["misbehave"], "{report:?}");
        let token = atlas.token(ADMIN);
        Sandbox {
            host,
            atlas,
            dir,
            token,
            metrics,
        }
    }

    async fn call(&self, tool: &str, args: Value) -> ToolResult {
        let u = admin_user();
        let auth = format!("Bearer {}", self.token);
        let info = CallInfo {
            user: &u,
            authorization: &auth,
            session_id: "s-1",
            request_id: "req-1",
            agent_id: "default-agent",
            max_results: 10,
        };
        self.host.invoke(tool, &args.to_string(), &info).await
    }

    /// Rewrites the plugin's policy file with these `[limits]` and reloads.
    async fn limits(&self, limits: &str) {
        write_policy(
            self.dir.path(),
            "misbehave",
            &format!("{MISBEHAVE_POLICY}\n[limits]\n{limits}\n"),
        );
        assert_eq!(self.host.reload().await.loaded, vec!["misbehave"]);
    }

    fn failure(r: &ToolResult) -> &'static str {
        r.outcome
            .as_ref()
            .err()
            .map(|f| f.kind)
            .unwrap_or("success")
    }
}

fn write_policy(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.policy.toml")), text).unwrap();
}

#[tokio::test]
async fn deadline_obeyed_and_violated() {
    let s = Sandbox::new().await;
    // Fuel far beyond what 500 ms can burn isolates the deadline.
    s.limits("fuel = 10000000000000").await;
    let r = s.call("echo", json!({"hello": "world"})).await;
    let out = r.outcome.as_ref().unwrap();
    let echoed: Value = serde_json::from_str(&out.content).unwrap();
    assert!(echoed.to_string().contains("world"), "{echoed}");

    let fuel = s.metrics.plugin_fuel.with_label_values(&["misbehave"]);
    let before = fuel.get();
    let started = Instant::now();
    let r = s.call("spin", json!({})).await;
    assert_eq!(Sandbox::failure(&r), "timeout");
    // A call stopped by its deadline is counted too, though short: compiled
    // code keeps a function's running count in a register and stores it at
    // calls and returns, so a loop without calls is counted up to its entry.
    assert!(fuel.get() > before, "{}", fuel.get() - before);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cpu_obeyed_and_violated() {
    let s = Sandbox::new().await;
    // A raised deadline isolates the fuel limit.
    s.limits("timeout_ms = 20000\nfuel = 5000000").await;
    let fuel = s.metrics.plugin_fuel.with_label_values(&["misbehave"]);
    let r = s.call("burn", json!({"iterations": 1000})).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    // The fuel a call consumed is counted, and it follows the work done.
    let small = fuel.get();
    assert!(small > 1000 && small < 5_000_000, "{small}");
    let r = s.call("burn", json!({"iterations": 100_000})).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let large = fuel.get() - small;
    // Seven operations an iteration (three shifts, three xors, an add); ask
    // for five.
    assert!(large > small && large >= 500_000, "{small} then {large}");
    let before = fuel.get();
    let r = s.call("burn", json!({"iterations": 100_000_000u64})).await;
    assert_eq!(Sandbox::failure(&r), "cpu");
    // A call stopped for CPU consumed its whole allowance.
    assert_eq!(fuel.get() - before, 5_000_000);
}

#[tokio::test]
async fn memory_obeyed_and_violated() {
    let s = Sandbox::new().await;
    let grown = s
        .metrics
        .plugin_memory_grown
        .with_label_values(&["misbehave"]);
    // A call within the memory the module starts with is not counted as
    // growing it (instantiation creates the memory, which is no growth);
    // one that allocates megabytes is, and one refused by the memory
    // limit is not.
    let r = s.call("echo", json!({"hello": "world"})).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(grown.get(), 0);
    let r = s.call("hog", json!({"mib": 8})).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(grown.get(), 1);
    let r = s.call("hog", json!({"mib": 200})).await;
    assert_eq!(Sandbox::failure(&r), "out-of-memory");
    assert_eq!(grown.get(), 1);
    // The next call gets a fresh instance and works.
    assert!(s.call("hog", json!({"mib": 1})).await.outcome.is_ok());
}

#[tokio::test]
async fn output_size_obeyed_and_violated() {
    let s = Sandbox::new().await;
    assert!(
        s.call("flood", json!({"bytes": 1000}))
            .await
            .outcome
            .is_ok()
    );
    let r = s.call("flood", json!({"bytes": 200_000})).await;
    assert_eq!(Sandbox::failure(&r), "output-too-large");
}

#[tokio::test]
async fn traps_and_invalid_output_are_named() {
    let s = Sandbox::new().await;
    assert_eq!(Sandbox::failure(&s.call("crash", json!({})).await), "trap");
    assert_eq!(
        Sandbox::failure(&s.call("garbage", json!({})).await),
        "invalid-output"
    );
    assert_eq!(
        Sandbox::failure(&s.call("nope", json!({})).await),
        "unknown-tool"
    );
}

#[tokio::test]
async fn wasi_shows_a_guest_nothing_of_the_host() {
    let s = Sandbox::new().await;
    // A call that makes no WASI call first, then one that does: the context
    // the second call gets is the sandbox's, whenever it is built.
    assert_eq!(
        Sandbox::failure(&s.call("flood", json!({"bytes": 4})).await),
        "success"
    );
    let r = s.call("peek", json!({})).await;
    let out = r.outcome.as_ref().expect("peek succeeds");
    let seen: Value = serde_json::from_str(&out.content).unwrap();
    assert_eq!(seen["env"], json!([]), "{seen}");
    assert_eq!(seen["args"], json!([]), "{seen}");
    let root = seen["root"].as_str().unwrap();
    assert!(root.starts_with("refused"), "{seen}");
    assert_eq!(
        seen["stdout"], true,
        "output is accepted and discarded: {seen}"
    );
    // And again in a fresh instance after a panic, whose message went to stderr.
    assert_eq!(Sandbox::failure(&s.call("crash", json!({})).await), "trap");
    let again = s.call("peek", json!({})).await;
    assert_eq!(
        again.outcome.as_ref().map(|o| o.content.clone()).ok(),
        Some(out.content.clone())
    );
}

#[tokio::test]
async fn a_runaway_call_does_not_hold_up_others() {
    // One thread (`#[tokio::test]`), so the quick call can only run while the
    // spinning guest gives the thread back, which it must do at every epoch
    // tick; otherwise the quick call would wait out the spin's 2 s timeout.
    let s = Sandbox::new().await;
    s.limits("fuel = 10000000000000\ntimeout_ms = 2000").await;
    let started = Instant::now();
    let spin = async {
        let r = s.call("spin", json!({})).await;
        (r, started.elapsed())
    };
    let quick = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = s.call("echo", json!({})).await;
        (r, started.elapsed())
    };
    let ((spun, spun_for), (quick, quick_done)) = tokio::join!(spin, quick);
    assert_eq!(Sandbox::failure(&spun), "timeout");
    assert!(spun_for >= Duration::from_millis(1900), "{spun_for:?}");
    assert!(quick.outcome.is_ok());
    assert!(quick_done < Duration::from_millis(1000), "{quick_done:?}");
}

#[tokio::test]
async fn backend_grants_obeyed_and_violated() {
    let s = Sandbox::new().await;
    let fetch = |path: Value| json!({"method": "post", "path": path, "body": "{}"});
    let r = s
        .call(
            "fetch",
            fetch(json!([
                "api",
                "agent",
                "tools",
                "work-orders",
                "WO000101",
                "details"
            ])),
        )
        .await;
    let out: Value = serde_json::from_str(&r.outcome.as_ref().unwrap().content).unwrap();
    assert_eq!(out["status"], 200, "{out}");
    let seen = s.atlas.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/api/agent/tools/work-orders/WO000101/details");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", s.token).as_str())
    );
    assert_eq!(last.header("x-request-id"), Some("req-1"));

    s.atlas.clear_requests();
    for path in [
        json!(["auth", "me"]),
        json!(["api", "agent", "tools", "work-orders", "search"]),
        json!(["api", "agent", "tools", "work-orders", "1", "update"]),
        json!(["api", "agent", "tools", "work-orders", "..", "details"]),
    ] {
        let r = s.call("fetch", fetch(path.clone())).await;
        let text = match &r.outcome {
            Ok(o) => o.content.clone(),
            Err(f) => f.message.clone(),
        };
        assert!(
            text.contains("not-granted")
                || text.contains("not granted")
                || text.contains("invalid-path")
                || text.contains("invalid path"),
            "{path}: {text}"
        );
    }
    assert!(
        s.atlas.requests().is_empty(),
        "nothing ungranted reached the backend: {:?}",
        s.atlas.requests()
    );
}

#[tokio::test]
async fn hostile_ids_stay_inside_the_granted_path() {
    let s = Sandbox::new().await;
    for id in ["../../auth/me", "1?x=1", "1#", "%2e%2e/x", "1/../../x"] {
        s.call("fetch", json!({"method": "post", "path": ["api", "agent", "tools", "work-orders", id, "details"], "body": "{}"})).await;
    }
    let seen = s.atlas.requests();
    assert_eq!(seen.len(), 5);
    for r in seen {
        let p = r.path.as_str();
        assert!(
            p.starts_with("/api/agent/tools/work-orders/") && p.ends_with("/details"),
            "{p}"
        );
        let middle = &p["/api/agent/tools/work-orders/".len()..p.len() - "/details".len()];
        assert!(
            !middle.contains('/') && !middle.contains('?') && !middle.contains('#'),
            "{p}"
        );
    }
}

#[tokio::test]
async fn corrupt_and_incompatible_files_are_refused_and_others_load() {
    let s = Sandbox::new().await;
    std::fs::write(s.dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0garbage").unwrap();
    std::fs::write(s.dir.path().join("text.wasm"), b"hello").unwrap();
    let report = s.host.reload().await;
    assert!(report.refused.contains_key("broken"), "{report:?}");
    assert!(report.refused.contains_key("text"), "{report:?}");
    assert!(
        report.refused["broken"].contains("not a valid Wasm component"),
        "{report:?}"
    );
    assert!(
        s.call("echo", json!({})).await.outcome.is_ok(),
        "misbehave still serves"
    );
    let admin = s.host.describe_all().to_string();
    assert!(admin.contains("\"refused\""), "{admin}");
}

#[tokio::test]
async fn duplicate_tool_names_are_refused() {
    let s = Sandbox::new().await;
    std::fs::copy(
        built("test-plugins", "misbehave"),
        s.dir.path().join("copycat.wasm"),
    )
    .unwrap();
    let report = s.host.reload().await;
    let err = report.refused.get("copycat").expect("copycat refused");
    assert!(err.contains("already offered by plugin misbehave"), "{err}");
    assert!(s.call("echo", json!({})).await.outcome.is_ok());
}

#[tokio::test]
async fn an_update_that_takes_another_live_plugins_tool_is_refused_and_both_keep_serving() {
    let s = Sandbox::new().await;
    // "alpha" sorts before "misbehave": it is live with its own tool first.
    let alpha = s.dir.path().join("alpha.wasm");
    std::fs::copy(built("plugins", "user-context"), &alpha).unwrap();
    let report = s.host.reload().await;
    assert_eq!(report.loaded, vec!["alpha"], "{report:?}");
    // Its new version offers misbehave's tools.
    std::fs::copy(built("test-plugins", "misbehave"), &alpha).unwrap();
    let report = s.host.reload().await;
    let err = report.refused.get("alpha").expect("alpha refused");
    assert!(err.contains("already offered by plugin misbehave"), "{err}");
    assert!(report.unloaded.is_empty(), "{report:?}");
    // misbehave, unchanged, keeps its tools; alpha's old version serves on.
    assert!(s.call("echo", json!({})).await.outcome.is_ok());
    assert!(s.host.tool_kind("get_user_context").is_some());
}

#[tokio::test]
async fn an_unreadable_file_is_refused_not_taken_for_a_deletion() {
    let s = Sandbox::new().await;
    // The policy file exists but cannot be read (a directory here; a
    // permission error elsewhere): refused, the live version stays, and it
    // does not reload with no grants.
    let policy = s.dir.path().join("misbehave.policy.toml");
    std::fs::remove_file(&policy).unwrap();
    std::fs::create_dir(&policy).unwrap();
    let report = s.host.reload().await;
    let err = report.refused.get("misbehave").expect("refused");
    assert!(err.contains("cannot read misbehave.policy.toml"), "{err}");
    assert!(
        report.unloaded.is_empty() && report.loaded.is_empty(),
        "{report:?}"
    );
    assert!(s.call("echo", json!({})).await.outcome.is_ok());
    std::fs::remove_dir(&policy).unwrap();
    std::fs::write(&policy, MISBEHAVE_POLICY).unwrap();

    // The same for the component: a link that cannot be followed.
    let wasm = s.dir.path().join("misbehave.wasm");
    std::fs::remove_file(&wasm).unwrap();
    std::os::unix::fs::symlink("misbehave.wasm", &wasm).unwrap();
    let report = s.host.reload().await;
    let err = report.refused.get("misbehave").expect("refused");
    assert!(err.contains("cannot read misbehave.wasm"), "{err}");
    assert!(report.unloaded.is_empty(), "{report:?}");
    assert!(s.call("echo", json!({})).await.outcome.is_ok());

    // Really gone: unloaded.
    std::fs::remove_file(&wasm).unwrap();
    let report = s.host.reload().await;
    assert_eq!(report.unloaded, vec!["misbehave"], "{report:?}");
}

#[tokio::test]
async fn a_policy_without_a_policy_table_is_refused() {
    let s = Sandbox::new().await;
    std::fs::copy(
        built("plugins", "answer-guard"),
        s.dir.path().join("guard.wasm"),
    )
    .unwrap();
    write_policy(s.dir.path(), "guard", "[config]\nblocked = []\n");
    let report = s.host.reload().await;
    let err = report.refused.get("guard").expect("refused");
    assert!(err.contains("[policy] table"), "{err}");
    write_policy(s.dir.path(), "guard", "[policy]\norder = 5\n");
    let report = s.host.reload().await;
    assert_eq!(report.loaded, vec!["guard"], "{report:?}");
}

#[tokio::test]
async fn bad_policy_file_is_refused_with_its_reason() {
    let s = Sandbox::new().await;
    write_policy(
        s.dir.path(),
        "misbehave",
        "[[allow]]\nmethod = \"TELEPORT\"\npath = \"/x\"\n",
    );
    let report = s.host.reload().await;
    assert!(
        report.refused["misbehave"].contains("unknown method"),
        "{report:?}"
    );
    // The previous version keeps serving.
    assert!(s.call("echo", json!({})).await.outcome.is_ok());
    let _ = &s.metrics;
}
