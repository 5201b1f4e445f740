//! Operators change the plugin folder while the host serves.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Writes beside the target, then renames into place, as deploy tools do.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn misbehave_policy(version: u32) -> String {
    format!("[config]\nversion = {version}\n")
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn tool_names(host: &Host) -> Vec<String> {
    host.state
        .agent
        .plugins
        .tool_defs()
        .defs()
        .iter()
        .map(|d| d.name.clone())
        .collect()
}

async fn watched_stack() -> Stack {
    let mut stack = Stack::with_plugins(&[]).await;
    std::fs::copy(
        built("test-plugins", "misbehave"),
        stack.plugin_dir.path().join("misbehave.wasm"),
    )
    .unwrap();
    std::fs::write(
        stack.plugin_dir.path().join("misbehave.policy.toml"),
        misbehave_policy(1),
    )
    .unwrap();
    stack
        .set("PLUGIN_WATCH", "true")
        .set("ADMIN_TOKEN", "admin-secret-for-tests");
    stack
}

/// The version the echo tool reports, read from the model stub's final answer.
fn echoed_version(body: &Value) -> Option<u64> {
    let text = body["messages"][0]["content"].as_str()?;
    let at = text
        .find("\\\"version\\\":")
        .map(|i| i + 12)
        .or_else(|| text.find("\"version\":").map(|i| i + 10))?;
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_under_load_fails_no_request() {
    let stack = watched_stack().await;
    let host = std::sync::Arc::new(stack.start().await);
    let token = stack.token(ADMIN);
    let run_for = Duration::from_secs(20);
    let started = Instant::now();
    let workers = (0..50).map(|_| {
        let host = host.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed, mut saw_v2_after) = (0u32, Vec::new(), false);
            while started.elapsed() < run_for {
                let (s, body) = host.chat(&token, prompt("#call echo {}")).await;
                match (s, echoed_version(&body)) {
                    (200, Some(v)) => {
                        ok += 1;
                        if v == 2 {
                            saw_v2_after = true;
                        }
                    }
                    _ => failed.push(format!("{s}: {body}")),
                }
            }
            (ok, failed, saw_v2_after)
        })
    });
    let workers: Vec<_> = workers.collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let dir = stack.plugin_dir.path();
    let wasm = std::fs::read(built("test-plugins", "misbehave")).unwrap();
    replace(
        &dir.join("misbehave.policy.toml"),
        misbehave_policy(2).as_bytes(),
    );
    replace(&dir.join("misbehave.wasm"), &wasm);
    let mut total = 0;
    let mut v2 = 0;
    for w in workers {
        let (ok, failed, saw_v2) = w.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} failed, e.g. {}",
            failed.len(),
            failed[0]
        );
        total += ok;
        v2 += u32::from(saw_v2);
    }
    assert!(total > 100, "{total} chats");
    assert_eq!(v2, 50, "every worker reached the new version");
    let (_, last) = host.chat(&token, prompt("#call echo {}")).await;
    assert_eq!(echoed_version(&last), Some(2));
}

#[tokio::test]
async fn a_truncated_file_is_refused_and_the_old_version_keeps_serving() {
    let stack = watched_stack().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let wasm = std::fs::read(built("test-plugins", "misbehave")).unwrap();
    std::fs::write(
        stack.plugin_dir.path().join("misbehave.wasm"),
        &wasm[..wasm.len() / 2],
    )
    .unwrap();
    let admin = |host: &Host| {
        host.http
            .get(host.url("/admin/plugins"))
            .bearer_auth("admin-secret-for-tests")
            .send()
    };
    wait_for("the refusal", async || {
        let v: Value = admin(&host).await.unwrap().json().await.unwrap();
        v["plugins"][0]["lastError"].is_object()
    })
    .await;
    let v: Value = admin(&host).await.unwrap().json().await.unwrap();
    let p = &v["plugins"][0];
    assert_eq!(p["name"], "misbehave");
    assert_eq!(p["state"], "live", "{v}");
    assert!(
        p["lastError"]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid Wasm component"),
        "{v}"
    );
    let (s, body) = host.chat(&token, prompt("#call echo {}")).await;
    assert_eq!(s, 200);
    assert_eq!(echoed_version(&body), Some(1));
    let metrics = host.metrics_text().await;
    assert!(
        metrics.contains("agents_plugin_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );

    // Writing the whole file completes the update.
    replace(&stack.plugin_dir.path().join("misbehave.wasm"), &wasm);
    wait_for("the repaired plugin", async || {
        let v: Value = admin(&host).await.unwrap().json().await.unwrap();
        v["plugins"][0]["lastError"].is_null()
    })
    .await;
    // Admin API needs the token.
    assert_eq!(
        host.http
            .get(host.url("/admin/plugins"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        host.http
            .get(host.url("/admin/plugins"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn added_and_removed_files_change_the_tools_offered() {
    let stack = watched_stack().await;
    let host = stack.start().await;
    assert!(!tool_names(&host).contains(&"view_assets".to_string()));
    install(stack.plugin_dir.path(), &["assets"]);
    wait_for("assets to load", async || {
        tool_names(&host).contains(&"view_assets".to_string())
    })
    .await;
    let (s, b) = host.chat(&stack.token(ADMIN), prompt("list assets")).await;
    assert_eq!(s, 200);
    assert_eq!(b["toolCalls"][0]["toolName"], "view_assets", "{b}");
    let offered = stack.openai.requests().last().unwrap().json().unwrap();
    assert!(offered["tools"].to_string().contains("view_assets"));

    std::fs::remove_file(stack.plugin_dir.path().join("assets.wasm")).unwrap();
    wait_for("assets to unload", async || {
        !tool_names(&host).contains(&"view_assets".to_string())
    })
    .await;
    assert!(tool_names(&host).contains(&"echo".to_string()));
}

#[tokio::test]
async fn kubernetes_configmap_symlink_swap_reloads() {
    let mut stack = Stack::with_plugins(&[]).await;
    let dir = stack.plugin_dir.path().to_path_buf();
    let wasm = std::fs::read(built("test-plugins", "misbehave")).unwrap();
    // The layout the kubelet writes: a timestamped folder, `..data` pointing at
    // it, and each key a symlink through `..data`.
    let v1 = dir.join("..2026_11_28_00_00_00.000000001");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("misbehave.wasm"), &wasm).unwrap();
    std::fs::write(v1.join("misbehave.policy.toml"), misbehave_policy(1)).unwrap();
    std::os::unix::fs::symlink(v1.file_name().unwrap(), dir.join("..data")).unwrap();
    for f in ["misbehave.wasm", "misbehave.policy.toml"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
    }
    stack.set("PLUGIN_WATCH", "true");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    assert_eq!(
        echoed_version(&host.chat(&token, prompt("#call echo {}")).await.1),
        Some(1)
    );

    let v2 = dir.join("..2026_11_28_00_05_00.000000002");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("misbehave.wasm"), &wasm).unwrap();
    std::fs::write(v2.join("misbehave.policy.toml"), misbehave_policy(2)).unwrap();
    std::os::unix::fs::symlink(v2.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    let mut last = None;
    for _ in 0..100 {
        last = echoed_version(&host.chat(&token, prompt("#call echo {}")).await.1);
        if last == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some(2));
}
