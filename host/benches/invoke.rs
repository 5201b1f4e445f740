//! One tool invocation through the real runtime: a fresh instance from the
//! pre-instantiated component, the call, and JSON in and out; and one policy
//! check the same way (a chat runs one per policy on its hook).
//!
//! Needs `cargo xtask plugins` first. Run: `cargo bench -p agent-host --bench invoke`.

use std::path::Path;
use std::time::Duration;

use agent_host::backend::Backend;
use agent_host::config::PluginLimits;
use agent_host::identity::User;
use agent_host::plugins::{CallInfo, Hook, PluginHost, Verdict};
use agent_host::telemetry::Metrics;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let dir = tempfile::tempdir().unwrap();
    for name in ["user-context", "drafts", "answer-guard"] {
        let src = plugins.join(format!("{name}.wasm"));
        assert!(src.exists(), "run `cargo xtask plugins` first");
        std::fs::copy(&src, dir.path().join(format!("{name}.wasm"))).unwrap();
        // A policy needs its policy file (its `[policy]` table) to load.
        let policy = src.with_extension("policy.toml");
        if policy.exists() {
            std::fs::copy(&policy, dir.path().join(format!("{name}.policy.toml"))).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Metrics::new();
    let backend = Backend::new(
        "http://127.0.0.1:9",
        Duration::from_secs(1),
        metrics.clone(),
    )
    .unwrap();
    let limits = PluginLimits {
        timeout: Duration::from_secs(5),
        fuel: 500_000_000,
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
    };
    let host = rt.block_on(async {
        let host = PluginHost::new(dir.path().to_path_buf(), limits, backend, metrics).unwrap();
        let report = host.reload().await;
        assert_eq!(report.loaded.len(), 3, "{report:?}");
        host
    });
    let user = User {
        id: 7,
        email: "tech@acme.test".into(),
        full_name: "Terry Tech".into(),
        first_name: "Terry".into(),
        role_code: "TECHNICIAN".into(),
        role_name: "Technician".into(),
        company_id: 1,
    };
    let info = CallInfo {
        user: &user,
        authorization: "Bearer x",
        session_id: "bench",
        request_id: "bench",
        agent_id: "default-agent",
        max_results: 10,
    };
    let mut group = c.benchmark_group("tool_invocation");
    group.bench_function("get_user_context", |b| {
        b.iter(|| {
            let r = rt.block_on(host.invoke("get_user_context", "{}", &info));
            assert!(r.outcome.is_ok());
        })
    });
    let args = r#"{"title":"  replace   the conveyor belt ","description":"belt is worn"}"#;
    group.bench_function("prepare_work_order_creation_draft", |b| {
        b.iter(|| {
            let r = rt.block_on(host.invoke("prepare_work_order_creation_draft", args, &info));
            assert!(r.outcome.is_ok());
        })
    });
    group.finish();

    // The shipped answer guard on a typical answer with nothing to mask.
    let answer = "You have 3 open work orders: WO000101 Replace the conveyor belt \
                  (HIGH, due 2026-12-01), WO000102 Inspect the boiler (MEDIUM) and \
                  WO000107 Oil the press (LOW). Shall I prepare a completion draft?";
    let mut group = c.benchmark_group("policy_check");
    group.bench_function("answer_guard", |b| {
        b.iter(|| {
            let v = rt.block_on(host.check(Hook::Answer { answer }, &info));
            assert!(matches!(v, Verdict::Allow), "{v:?}");
        })
    });
    group.finish();

    // What checking a tool's output costs the host (`check_output`): the
    // content only has to be JSON, so it is skipped through rather than
    // parsed into a tree. A work order listing as the work-orders tool
    // returns it, about 1 KB.
    let items: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            serde_json::json!({
                "id": 101 + i, "code": format!("WO{:06}", 101 + i),
                "title": format!("Replace the worn drive belt on conveyor line {i}"),
                "priority": "HIGH", "status": "OPEN", "dueDate": "2026-12-01T08:00:00Z",
                "asset": format!("Conveyor {i}"),
            })
        })
        .collect();
    let listing =
        serde_json::json!({"type": "work_orders", "total": 12, "items": items}).to_string();
    let mut group = c.benchmark_group("tool_output_check");
    group.bench_function("parse_into_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(&listing).unwrap())
    });
    group.bench_function("skip_with_ignored_any", |b| {
        b.iter(|| serde_json::from_str::<serde::de::IgnoredAny>(&listing).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
