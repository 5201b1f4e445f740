//! Test setup: the stub upstreams, the plugins built by `cargo xtask`, and
//! the real host on 127.0.0.1 port 0.
#![allow(dead_code, unused_imports)]

pub mod redis_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_host::AppState;
use agent_host::config::Config;
use atlas_stubs::atlas::{AtlasConfig, AtlasStub, SpawnedAtlas};
use atlas_stubs::openai::{OpenAiConfig, OpenAiStub, SpawnedOpenAi};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use atlas_stubs::atlas::{ADMIN, NO_COMPANY, OTHER_ADMIN, TECHNICIAN, VIEWER};
pub use atlas_stubs::token::DEFAULT_JWT_SECRET;

/// The repository's `target/` folder.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A folder built by `cargo xtask plugins` / `test-plugins`.
pub fn built(kind: &str, name: &str) -> PathBuf {
    let p = target_dir().join(kind).join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask plugins` and `cargo xtask test-plugins` first (the README's test command does)",
        p.display()
    );
    p
}

/// Copies shipped plugins (with their policy files) into `dir`.
pub fn install(dir: &Path, names: &[&str]) {
    for name in names {
        let wasm = built("plugins", name);
        std::fs::copy(&wasm, dir.join(format!("{name}.wasm"))).unwrap();
        let policy = wasm.with_extension("policy.toml");
        if policy.exists() {
            std::fs::copy(&policy, dir.join(format!("{name}.policy.toml"))).unwrap();
        }
    }
}

/// The stub's company-1 administrator as the host knows a caller, for tests
/// that call plugins without the HTTP layer.
pub fn admin_user() -> agent_host::identity::User {
    agent_host::identity::User {
        id: 1,
        email: ADMIN.into(),
        full_name: "Alice Admin".into(),
        first_name: "Alice".into(),
        role_code: "ADMIN".into(),
        role_name: "Administrator".into(),
        company_id: 1,
    }
}

pub const TOOL_PLUGINS: [&str; 4] = ["work-orders", "assets", "drafts", "user-context"];

pub struct Stack {
    pub atlas: SpawnedAtlas,
    pub openai: SpawnedOpenAi,
    pub plugin_dir: tempfile::TempDir,
    pub env: HashMap<&'static str, String>,
}

impl Stack {
    /// Stubs and a plugin folder holding the four tool plugins.
    pub async fn new() -> Stack {
        Self::with_plugins(&TOOL_PLUGINS).await
    }

    pub async fn with_plugins(plugins: &[&str]) -> Stack {
        let atlas = AtlasStub::spawn(AtlasConfig::default()).await.unwrap();
        let openai = OpenAiStub::spawn(OpenAiConfig::default()).await.unwrap();
        let plugin_dir = tempfile::tempdir().unwrap();
        install(plugin_dir.path(), plugins);
        let mut env = HashMap::new();
        env.insert("API_BASE", atlas.base_url());
        env.insert("OPENAI_BASE_URL", openai.base_url());
        env.insert("OPENAI_API_KEY", "test-key".into());
        env.insert("OPENAI_MAX_RETRIES", "2".into());
        env.insert("JWT_SECRET_KEY", DEFAULT_JWT_SECRET.into());
        env.insert("PLUGIN_DIR", plugin_dir.path().display().to_string());
        env.insert("PLUGIN_WATCH", "false".into());
        env.insert("FLOOD_GUARD_PER_SECOND", "0".into());
        env.insert("RATE_LIMIT_MAX", "1000000".into());
        Stack {
            atlas,
            openai,
            plugin_dir,
            env,
        }
    }

    pub fn set(&mut self, k: &'static str, v: impl Into<String>) -> &mut Self {
        self.env.insert(k, v.into());
        self
    }

    pub fn unset(&mut self, k: &'static str) -> &mut Self {
        self.env.remove(k);
        self
    }

    pub fn token(&self, email: &str) -> String {
        self.atlas.token(email)
    }

    pub fn config(&self) -> Config {
        Config::from_source(&self.env).expect("test config")
    }

    pub async fn start(&self) -> Host {
        Host::start(self.config()).await
    }

    /// Backend requests other than identity lookups.
    pub fn tool_requests(&self) -> Vec<atlas_stubs::record::RecordedRequest> {
        self.atlas
            .requests()
            .into_iter()
            .filter(|r| r.path_only() != "/auth/me")
            .collect()
    }
}

pub struct Host {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Host {
    pub async fn start(config: Config) -> Host {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = agent_host::build(config).await.expect("host builds");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent_host::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        let host = Host {
            addr,
            state,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        };
        // Serving (and watching) once this answers.
        while host
            .http
            .get(host.url("/health/live"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        host
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST /v1/chat with a bearer token; returns status, headers and JSON body.
    pub async fn chat(&self, token: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self.chat_full(Some(token), body).await;
        (status, body)
    }

    pub async fn chat_full(
        &self,
        token: Option<&str>,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(self.url("/v1/chat")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body for {status}: {text}"));
        (status, headers, json)
    }

    /// The `/metrics` exposition as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// The one assistant message of a success body.
pub fn answer(body: &Value) -> &str {
    assert_eq!(body["status"], "success", "{body}");
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1, "{body}");
    assert_eq!(msgs[0]["role"], "assistant");
    msgs[0]["content"].as_str().unwrap()
}

pub fn prompt(p: &str) -> Value {
    json!({ "prompt": p })
}

pub fn prompt_in(p: &str, session: &str) -> Value {
    json!({ "prompt": p, "metadata": { "sessionId": session } })
}
