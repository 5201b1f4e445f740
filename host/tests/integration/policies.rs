//! Validation policies, each decision kind end to end through the real host.

use crate::common::*;
use serde_json::json;

const POLICIES: [&str; 3] = ["request-validation", "tool-access", "answer-guard"];

async fn stack_with_policies() -> Stack {
    let stack = Stack::new().await;
    install(stack.plugin_dir.path(), &POLICIES);
    stack
}

fn set_policy_config(stack: &Stack, name: &str, extra: &str) {
    let path = stack.plugin_dir.path().join(format!("{name}.policy.toml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn request_denied_by_policy_is_422_with_the_policy_name() {
    let stack = stack_with_policies().await;
    // Tighter than the host's own 10,000-character limit.
    let path = stack
        .plugin_dir
        .path()
        .join("request-validation.policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = regex_free_replace(&text, "max_prompt_chars", "max_prompt_chars = 40");
    std::fs::write(&path, text).unwrap();
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, b) = host
        .chat(
            &token,
            prompt(&"a fairly long prompt that goes on and on ".repeat(3)),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["status"], "error");
    assert_eq!(b["policy"], "request-validation");
    assert!(!b["message"].as_str().unwrap().is_empty());
    assert!(
        stack.openai.requests().is_empty(),
        "denied before the model"
    );
    assert_eq!(host.chat(&token, prompt("short")).await.0, 200);
}

/// Replaces the line that sets `key` (or appends to `[config]`).
fn regex_free_replace(text: &str, key: &str, line: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut done = false;
    for l in text.lines() {
        if l.trim_start().starts_with(key) {
            out.push(line.to_string());
            done = true;
        } else {
            out.push(l.to_string());
        }
    }
    let mut s = out.join("\n");
    if !done {
        if !s.contains("[config]") {
            s.push_str("\n[config]");
        }
        s.push('\n');
        s.push_str(line);
    }
    s.push('\n');
    s
}

#[tokio::test]
async fn tool_call_denied_by_policy_is_reported_and_not_run() {
    let stack = stack_with_policies().await;
    let host = stack.start().await;
    let p = "#call create_work_order_immediately {\"title\": \"Fix the door\"}";
    let (s, b) = host.chat(&stack.token(TECHNICIAN), prompt(p)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["toolCalls"][0]["toolName"],
        "create_work_order_immediately"
    );
    // The contract's status, the finer outcome beside it.
    assert_eq!(b["toolCalls"][0]["status"], "error", "{b}");
    assert_eq!(b["toolCalls"][0]["outcome"], "denied", "{b}");
    assert!(
        b["toolCalls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refused by policy tool-access"),
        "{b}"
    );
    assert!(answer(&b).contains("refused by policy tool-access"), "{b}");
    assert!(
        stack.tool_requests().is_empty(),
        "nothing reached the backend"
    );
    // An admin may.
    let (_, b) = host.chat(&stack.token(ADMIN), prompt(p)).await;
    assert_eq!(b["toolCalls"][0]["status"], "success", "{b}");
    assert!(b["toolCalls"][0].get("outcome").is_none(), "{b}");
    assert_eq!(
        stack.tool_requests()[0].path,
        "/api/agent/tools/work-orders/create"
    );
}

#[tokio::test]
async fn require_approval_turns_the_call_into_a_draft() {
    let stack = stack_with_policies().await;
    set_policy_config(&stack, "tool-access", "");
    let path = stack.plugin_dir.path().join("tool-access.policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        regex_free_replace(
            &text,
            "approval_tools",
            "approval_tools = [\"update_work_order\"]",
        ),
    )
    .unwrap();
    let host = stack.start().await;
    let p = "#call update_work_order {\"workOrderId\": \"WO000101\", \"title\": \"Replace belt and rollers\"}";
    let (s, b) = host.chat(&stack.token(ADMIN), prompt(p)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["toolCalls"][0]["status"], "error", "{b}");
    assert_eq!(b["toolCalls"][0]["outcome"], "approval_required", "{b}");
    assert!(
        b["toolCalls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("requires the user's approval"),
        "{b}"
    );
    let drafts = b["drafts"].as_array().unwrap();
    assert_eq!(drafts.len(), 1, "{b}");
    assert_eq!(drafts[0]["operationType"], "update_work_order");
    assert_eq!(drafts[0]["payload"]["workOrderId"], "WO000101");
    assert_eq!(drafts[0]["agentSessionId"], b["sessionId"]);
    assert!(stack.tool_requests().is_empty(), "not executed");
}

#[tokio::test]
async fn each_policy_runs_only_on_the_hooks_it_declares() {
    let mut stack = stack_with_policies().await;
    stack.set("ADMIN_TOKEN", "admin-secret-for-tests");
    let host = stack.start().await;
    let (s, b) = host
        .chat(&stack.token(ADMIN), prompt("Show me open work orders"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!b["toolCalls"].as_array().unwrap().is_empty(), "{b}");

    let listing: serde_json::Value = host
        .http
        .get(host.url("/admin/plugins"))
        .bearer_auth("admin-secret-for-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hooks_of = |name: &str| {
        listing["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["hooks"].clone())
            .unwrap_or_else(|| panic!("{name} missing from {listing}"))
    };
    assert_eq!(hooks_of("request-validation"), json!(["request"]));
    assert_eq!(hooks_of("tool-access"), json!(["tool_call"]));
    assert_eq!(hooks_of("answer-guard"), json!(["answer"]));

    // One chat with one tool call: each policy ran once, on its own hook.
    let metrics = host.metrics_text().await;
    let ran: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("agents_policy_decisions_total{"))
        .collect();
    let expected = [
        ("request-validation", "request"),
        ("tool-access", "tool_call"),
        ("answer-guard", "answer"),
    ];
    assert_eq!(ran.len(), 3, "{ran:#?}");
    for (policy, hook) in expected {
        assert!(
            ran.iter()
                .any(|l| l.contains(&format!("policy=\"{policy}\""))
                    && l.contains(&format!("hook=\"{hook}\""))
                    && l.ends_with(" 1")),
            "{policy} on {hook}: {ran:#?}"
        );
    }
}

#[tokio::test]
async fn answer_rewrite_masks_secrets() {
    let stack = stack_with_policies().await;
    let host = stack.start().await;
    let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz012345";
    let card = "4111 1111 1111 1111";
    let (s, b) = host
        .chat(
            &stack.token(ADMIN),
            prompt(&format!("my key is {secret} and card {card}")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let text = answer(&b);
    assert!(!text.contains(secret) && !text.contains(card), "{text}");
    assert!(text.contains("You said: my key is"), "{text}");
}

#[tokio::test]
async fn an_unloadable_policy_refuses_chats_instead_of_skipping_checks() {
    let stack = stack_with_policies().await;
    // A truncated upload: the policy file says it is a policy, the Wasm is bad.
    let wasm = stack.plugin_dir.path().join("request-validation.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, &bytes[..bytes.len() / 2]).unwrap();
    let host = stack.start().await;

    let (s, b) = host.chat(&stack.token(ADMIN), prompt("hello")).await;
    assert_eq!(s, 503, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("request-validation") && message.contains("not loaded"),
        "{b}"
    );
    assert!(
        stack.openai.requests().is_empty(),
        "nothing reached the model"
    );
    let (s, b) = host.get("/health/ready", None).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(
        b["checks"]["missingPolicies"],
        json!(["request-validation"])
    );

    // Fixed in place and reloaded: chats run, checked, again.
    std::fs::write(&wasm, &bytes).unwrap();
    let reloaded = host.state.agent.plugins.reload().await;
    assert_eq!(reloaded.loaded, vec!["request-validation".to_string()]);
    assert_eq!(host.chat(&stack.token(ADMIN), prompt("hello")).await.0, 200);
    assert_eq!(host.get("/health/ready", None).await.0, 200);
}

#[tokio::test]
async fn a_failing_policy_fails_closed() {
    let stack = stack_with_policies().await;
    let path = stack
        .plugin_dir
        .path()
        .join("request-validation.policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Too little fuel to run at all.
    let text = if text.contains("[limits]") {
        text.replace("[limits]", "[limits]\nfuel = 1")
    } else {
        format!("[limits]\nfuel = 1\n{text}")
    };
    std::fs::write(&path, text).unwrap();
    let host = stack.start().await;
    let (s, b) = host.chat(&stack.token(ADMIN), prompt("hello")).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["policy"], "request-validation");
    assert!(
        b["message"].as_str().unwrap().contains("could not run"),
        "{b}"
    );
}

/// The value of `metric`'s series for `plugin` in a `/metrics` text; the
/// series must be there.
fn plugin_series(text: &str, metric: &str, plugin: &str) -> f64 {
    let series = format!("{metric}{{plugin=\"{plugin}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} series for {plugin}\n{text}"))
}

#[tokio::test]
async fn the_fuel_of_policy_and_tool_calls_is_counted() {
    let stack = stack_with_policies().await;
    let host = stack.start().await;
    let fuel =
        |text: &str, plugin: &str| plugin_series(text, "agents_plugin_fuel_consumed_total", plugin);
    let before = host.metrics_text().await;
    let (s, b) = host
        .chat(&stack.token(ADMIN), prompt("Show me open work orders"))
        .await;
    assert_eq!(s, 200, "{b}");
    let after = host.metrics_text().await;
    // One chat: a call to each policy's hook and one tool call, each counted.
    for plugin in [
        "request-validation",
        "tool-access",
        "answer-guard",
        "work-orders",
    ] {
        let used = fuel(&after, plugin) - fuel(&before, plugin);
        assert!(used > 1000.0, "{plugin}: {used}");
    }
    // A plugin that was not called counts nothing.
    assert_eq!(fuel(&after, "assets"), 0.0);
    // None of those calls grew its plugin's memory: the SDK's allocator
    // starts in the heap a WASI-free plugin's module starts with
    // (`--initial-heap` in .cargo/config.toml). Rust's own allocator on
    // that target grows the memory at every fresh instance's first
    // allocation, a page mapping the host then undoes after the call.
    for plugin in [
        "request-validation",
        "tool-access",
        "answer-guard",
        "work-orders",
    ] {
        let grown = plugin_series(&after, "agents_plugin_memory_grown_total", plugin);
        assert_eq!(grown, 0.0, "{plugin}");
    }
    host.stop().await;
}

#[test]
fn the_shipped_plugins_import_no_wasi() {
    // `cargo xtask plugins` builds them for wasm32-unknown-unknown: each
    // fresh instance then wires up only the plugin's own interfaces,
    // without the 13 WASI ones Rust's standard library imports on
    // wasm32-wasip2 (the misbehave test plugin, built for that target,
    // shows those still load).
    let engine = wasmtime::Engine::default();
    // Every crate under plugins/, so a plugin added later is checked too.
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut plugins: Vec<String> = std::fs::read_dir(crates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    plugins.sort();
    assert!(plugins.len() >= 7, "{plugins:?}");
    for plugin in &plugins {
        let component =
            wasmtime::component::Component::from_file(&engine, built("plugins", plugin)).unwrap();
        let imports: Vec<String> = component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        assert!(!imports.is_empty(), "{plugin}");
        assert!(
            imports.iter().all(|i| i.starts_with("atlas:agent/")),
            "{plugin}: {imports:?}"
        );
    }
}
