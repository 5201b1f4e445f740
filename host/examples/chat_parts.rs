//! What each part of a chat costs the host in CPU, measured one part at a
//! time with the host's own code, and what the network exchanges under a
//! chat cost at least, with bare clients.
//!
//! Starts `redis-server` and the two stubs (release binaries in
//! `target/release`) on free loopback ports, loads the plugins from
//! `target/plugins`, then runs each part for a few seconds from CONCURRENCY
//! tasks on the same kind of runtime as the host (tokio, one worker per
//! core; the host's allocator, mimalloc, tuned as the host tunes it) and
//! divides this process's CPU time (user + system, `getrusage`)
//! by the operations done. The stubs and Redis run in their own processes,
//! so their CPU is not counted.
//!
//! ```sh
//! cargo build --release -p agent-host -p atlas-stubs && cargo xtask plugins
//! cargo run --release -p agent-host --example chat_parts
//! ```
//!
//! Env: CONCURRENCY (default 10), SECS per part (default 5), ROUNDS (default 3:
//! every part is measured once per round, rounds interleaved; medians
//! printed), ONLY (measure only the parts whose name contains this text),
//! PLUGINS (the plugin folder, default `target/plugins`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_host::backend::Backend;
use agent_host::config::{Config, PluginLimits};
use agent_host::identity::User;
use agent_host::llm::{ChatModel, Message, ModelRequest, OpenAiModel};
use agent_host::plugins::{CallInfo, Hook, PluginHost, Verdict};
use agent_host::ratelimit::RateLimiter;
use agent_host::sessions::{Bounds, Owner, RedisStore, SessionStore, redis_pool};
use agent_host::telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// The tests' throwaway Redis; not every helper there is used here.
#[allow(dead_code)]
#[path = "../tests/common/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const PROMPT: &str = "Show me open work orders";
const ANSWER: &str = "Here are your open work orders: WO000101, WO000102 and WO000103.";

type Part = (
    &'static str,
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = f64>>>>,
);

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's user + system CPU time.
fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Runs `op` from `concurrency` tasks for `secs`; CPU microseconds per op.
async fn measure<F, Fut>(concurrency: u64, secs: u64, op: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    // Warm up every task's connections first.
    for _ in 0..concurrency * 2 {
        op().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op().await;
                    done.fetch_add(1, Ordering::Relaxed);
                    // A plugin call alone never waits, so give the timer
                    // (and the other tasks) a turn between operations.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let cpu = cpu_time() - cpu0;
    cpu.as_secs_f64() * 1e6 / done.load(Ordering::Relaxed) as f64
}

/// A plain HTTP/1.1 exchange on one kept-alive TCP connection, reading the
/// answer by its Content-Length: what an HTTP call costs below any client
/// library.
struct RawHttp {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RawHttp {
    async fn connect(port: u16, request: Vec<u8>) -> Self {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawHttp {
            stream,
            request,
            buf: Vec::with_capacity(64 << 10),
        }
    }

    async fn exchange(&mut self) {
        self.stream.write_all(&self.request).await.unwrap();
        self.buf.clear();
        loop {
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..head_end]).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if self.buf.len() >= head_end + 4 + len {
                return;
            }
        }
    }
}

/// A part to measure: `op` is one operation, run from many tasks at once.
fn part<F, Fut>(name: &'static str, concurrency: u64, secs: u64, op: F) -> Part
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (
        name,
        Box::new(move || Box::pin(measure(concurrency, secs, op.clone()))),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

// The host binary's allocator and settings, so that allocation costs here
// what it costs in the host.
#[global_allocator]
static GLOBAL: agent_host::alloc::Allocator = mimalloc::MiMalloc;

fn main() {
    agent_host::alloc::tune();
    // As in the host: the runtime runs on a thread started after `tune`,
    // whose mimalloc heap takes the tuned settings (the main thread's
    // predates them).
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(run());
    })
    .join()
    .expect("the measuring thread");
}

async fn run() {
    let concurrency = env_num("CONCURRENCY", 10);
    let secs = env_num("SECS", 5);
    let rounds = env_num("ROUNDS", 3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release");
    let plugin_dir: PathBuf = std::env::var_os("PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/plugins"));
    for b in ["atlas-stub", "openai-stub"] {
        assert!(
            bin.join(b).exists(),
            "run `cargo build --release -p atlas-stubs` first"
        );
    }
    assert!(
        plugin_dir.join("work-orders.wasm").exists(),
        "run `cargo xtask plugins` first"
    );
    let redis = RedisServer::start();
    let (atlas_port, model_port) = (free_port(), free_port());
    let spawn = |cmd: &mut Command| cmd.stdout(Stdio::null()).spawn().unwrap();
    let _children = Children(vec![
        spawn(
            Command::new(bin.join("atlas-stub"))
                .env("STUB_BIND", "127.0.0.1")
                .env("ATLAS_STUB_PORT", atlas_port.to_string())
                .env("RUST_LOG", "warn"),
        ),
        spawn(
            Command::new(bin.join("openai-stub"))
                .env("STUB_BIND", "127.0.0.1")
                .env("OPENAI_STUB_PORT", model_port.to_string())
                .env("RUST_LOG", "warn"),
        ),
    ]);
    for p in [atlas_port, model_port] {
        wait_port(p);
    }
    let atlas = format!("http://127.0.0.1:{atlas_port}");
    let model_base = format!("http://127.0.0.1:{model_port}/v1");
    let redis_url = redis.url();
    let token = atlas_stubs::token::mint(
        atlas_stubs::token::DEFAULT_JWT_SECRET,
        atlas_stubs::atlas::TECHNICIAN,
        3600,
    );
    let authorization: &'static str = format!("Bearer {token}").leak();

    // The host's parts, configured as the load runner configures the host.
    let metrics = Metrics::new();
    let config = {
        let vars: std::collections::HashMap<String, String> = [
            ("OPENAI_API_KEY", "stub-key"),
            ("OPENAI_BASE_URL", model_base.as_str()),
            ("API_BASE", atlas.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_source(&vars).expect("config")
    };
    let backend = Backend::new(&atlas, Duration::from_secs(5), metrics.clone()).unwrap();
    let limits = PluginLimits {
        timeout: Duration::from_secs(5),
        fuel: 500_000_000,
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
    };
    let plugins =
        Arc::new(PluginHost::new(plugin_dir, limits, backend.clone(), metrics.clone()).unwrap());
    let report = plugins.reload().await;
    assert!(report.refused.is_empty(), "{report:?}");
    let model = Arc::new(OpenAiModel::new(&config, "stub-key", metrics.clone()).unwrap());
    let pool = redis_pool(&redis_url, Duration::from_secs(2)).unwrap();
    let store = Arc::new(RedisStore::new(
        pool.clone(),
        "parts:",
        Bounds {
            ttl_ms: 900_000,
            max_messages: 200,
            max_bytes: 256 * 1024,
        },
        Duration::from_secs(2),
        metrics.clone(),
    ));
    let limiter = Arc::new(RateLimiter::redis(
        1_000_000_000,
        Duration::from_secs(60),
        pool.clone(),
        "parts:",
        Duration::from_secs(2),
    ));
    let user: &'static User = Box::leak(Box::new(User {
        id: 2,
        email: atlas_stubs::atlas::TECHNICIAN.into(),
        full_name: "Tom Tech".into(),
        first_name: "Tom".into(),
        role_code: "TECHNICIAN".into(),
        role_name: "Technician".into(),
        company_id: 1,
    }));
    let info = move || CallInfo {
        user,
        authorization,
        session_id: "parts",
        request_id: "parts",
        agent_id: "default-agent",
        max_results: 10,
    };

    // One real chat's steps, done once, give the inputs of every part.
    let tools = plugins.tool_defs();
    let system = "You are the Atlas maintenance copilot. ".repeat(20);
    let mut messages = vec![Message::User {
        content: PROMPT.into(),
    }];
    let first = model
        .complete(ModelRequest {
            system: &system,
            messages: &messages,
            tools: &tools,
            request_id: "parts",
        })
        .await
        .expect("model stub answers");
    let call = first.tool_calls.first().expect("the stub asks for a tool");
    assert_eq!(call.name, "view_work_orders");
    let result = plugins.invoke(&call.name, &call.arguments, &info()).await;
    let content = result.outcome.expect("tool call succeeds").content;
    messages.push(Message::Assistant {
        content: None,
        tool_calls: first.tool_calls.clone(),
    });
    messages.push(Message::Tool {
        tool_call_id: call.id.clone(),
        name: call.name.clone(),
        content: content.clone(),
    });
    let (tool, arguments) = (call.name.clone(), call.arguments.clone());
    let first_messages: Arc<Vec<Message>> = Arc::new(messages[..1].to_vec());
    let second_messages: Arc<Vec<Message>> = Arc::new(messages.clone());
    let turn: Arc<Vec<Message>> = Arc::new({
        let mut t = messages.clone();
        t.push(Message::Assistant {
            content: Some("There are five open work orders.".into()),
            tool_calls: vec![],
        });
        t
    });

    // Bare request bodies of the same size as the host's two model calls.
    let model_body = |msgs: &[Message]| -> Vec<u8> {
        let tool_json: Vec<_> = tools
            .defs()
            .iter()
            .map(|t| {
                serde_json::json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        let mut wire = vec![serde_json::json!({"role": "system", "content": system})];
        for m in msgs {
            wire.push(match m {
                Message::User { content } => serde_json::json!({"role": "user", "content": content}),
                Message::Assistant { tool_calls, .. } => serde_json::json!({
                    "role": "assistant",
                    "tool_calls": tool_calls.iter().map(|c| serde_json::json!({
                        "id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})).collect::<Vec<_>>()}),
                Message::Tool { tool_call_id, content, .. } => serde_json::json!({
                    "role": "tool", "tool_call_id": tool_call_id, "content": content}),
            });
        }
        serde_json::to_vec(&serde_json::json!({
            "model": config.openai_model, "messages": wire, "tools": tool_json}))
        .unwrap()
    };
    // What the plugin sends for the stub's tool call (work-orders' search).
    let backend_body: Arc<str> =
        Arc::from(r#"{"limit":10,"statuses":["OPEN","IN_PROGRESS","ON_HOLD"]}"#);
    let bodies = Arc::new([model_body(&messages[..1]), model_body(&messages)]);
    let raw_request = |body: &[u8]| -> Vec<u8> {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{model_port}\r\n\
             authorization: Bearer stub-key\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let raw_requests = Arc::new([raw_request(&bodies[0]), raw_request(&bodies[1])]);

    // The two model requests' bodies through a bare reqwest client, the
    // reply read but not parsed.
    let reqwest_pair = |bare: reqwest::Client| {
        let (bodies, url) = (bodies.clone(), format!("{model_base}/chat/completions"));
        move || {
            let (bare, bodies, url) = (bare.clone(), bodies.clone(), url.clone());
            async move {
                for b in bodies.iter() {
                    let r = bare
                        .post(&url)
                        .header("authorization", "Bearer stub-key")
                        .header("content-type", "application/json")
                        .body(b.clone())
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                }
            }
        }
    };

    let parts: Vec<Part> = vec![
        part(
            "model call pair, host client (async-openai)",
            concurrency,
            secs,
            {
                let (model, tools, system) = (model.clone(), tools.clone(), system.clone());
                let (m1, m2) = (first_messages.clone(), second_messages.clone());
                move || {
                    let (model, tools, system) = (model.clone(), tools.clone(), system.clone());
                    let (m1, m2) = (m1.clone(), m2.clone());
                    async move {
                        for m in [&m1, &m2] {
                            let r = model
                                .complete(ModelRequest {
                                    system: &system,
                                    messages: m,
                                    tools: &tools,
                                    request_id: "parts",
                                })
                                .await;
                            assert!(r.is_ok());
                        }
                    }
                }
            },
        ),
        part(
            "model call pair, bare reqwest (same bodies, no parsing)",
            concurrency,
            secs,
            reqwest_pair(reqwest::Client::new()),
        ),
        part(
            "model call pair, bare reqwest, retry policy off",
            concurrency,
            secs,
            reqwest_pair(
                reqwest::Client::builder()
                    .retry(reqwest::retry::never().max_retries_per_request(0))
                    .build()
                    .unwrap(),
            ),
        ),
        part(
            "model call pair, hyper-util client (same bodies, no parsing)",
            concurrency,
            secs,
            {
                let bodies = bodies.clone();
                let uri: axum::http::Uri =
                    format!("{model_base}/chat/completions").parse().unwrap();
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Full<axum::body::Bytes>>();
                move || {
                    let (client, bodies, uri) = (client.clone(), bodies.clone(), uri.clone());
                    async move {
                        for b in bodies.iter() {
                            let req = axum::http::Request::post(uri.clone())
                                .header("authorization", "Bearer stub-key")
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(axum::body::Bytes::from(
                                    b.clone(),
                                )))
                                .unwrap();
                            let r = client.request(req).await.unwrap();
                            assert!(r.status().is_success());
                            http_body_util::BodyExt::collect(r.into_body())
                                .await
                                .unwrap();
                        }
                    }
                }
            },
        ),
        part(
            "model call pair, raw HTTP/1.1 on a kept-alive socket",
            concurrency,
            secs,
            {
                // One pair of connections per task, as a client pool keeps them.
                let conns: Arc<Vec<tokio::sync::Mutex<Option<[RawHttp; 2]>>>> = Arc::new(
                    (0..concurrency)
                        .map(|_| tokio::sync::Mutex::new(None))
                        .collect(),
                );
                let next = Arc::new(AtomicU64::new(0));
                let raw = raw_requests.clone();
                move || {
                    let (raw, conns, next) = (raw.clone(), conns.clone(), next.clone());
                    async move {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize % conns.len();
                        let mut slot = conns[i].lock().await;
                        if slot.is_none() {
                            *slot = Some([
                                RawHttp::connect(model_port, raw[0].clone()).await,
                                RawHttp::connect(model_port, raw[1].clone()).await,
                            ]);
                        }
                        for c in slot.as_mut().unwrap().iter_mut() {
                            c.exchange().await;
                        }
                    }
                }
            },
        ),
        part(
            "view_work_orders plugin call, with its backend request",
            concurrency,
            secs,
            {
                let (plugins, tool, arguments) = (plugins.clone(), tool.clone(), arguments.clone());
                move || {
                    let (plugins, tool, arguments) =
                        (plugins.clone(), tool.clone(), arguments.clone());
                    async move {
                        let r = plugins.invoke(&tool, &arguments, &info()).await;
                        assert!(r.outcome.is_ok());
                    }
                }
            },
        ),
        part(
            "that backend request alone, host client",
            concurrency,
            secs,
            {
                let (backend, body) = (backend.clone(), backend_body.clone());
                move || {
                    let (backend, body) = (backend.clone(), body.clone());
                    async move {
                        let r = backend
                            .call(
                                reqwest::Method::POST,
                                "/api/agent/tools/work-orders/search",
                                Some(body.to_string()),
                                authorization,
                                "parts",
                            )
                            .await;
                        assert!(matches!(r, Ok((200, _))), "{:?}", r.map(|r| r.0));
                    }
                }
            },
        ),
        part(
            "three policy checks (request, tool call, answer)",
            concurrency,
            secs,
            {
                let (plugins, tool, arguments) = (plugins.clone(), tool.clone(), arguments.clone());
                move || {
                    let (plugins, tool, arguments) =
                        (plugins.clone(), tool.clone(), arguments.clone());
                    async move {
                        let info = info();
                        for hook in [
                            Hook::Request {
                                prompt: PROMPT,
                                metadata: "{}",
                            },
                            Hook::ToolCall {
                                tool: &tool,
                                arguments: &arguments,
                            },
                            Hook::Answer { answer: ANSWER },
                        ] {
                            let v = plugins.check(hook, &info).await;
                            assert_eq!(v, Verdict::Allow);
                        }
                    }
                }
            },
        ),
        part(
            "Redis: rate-limit count, load, append (host code)",
            concurrency,
            secs,
            {
                let (store, limiter, turn) = (store.clone(), limiter.clone(), turn.clone());
                let n = Arc::new(AtomicU64::new(0));
                move || {
                    let (store, limiter, turn) = (store.clone(), limiter.clone(), turn.clone());
                    let id = format!("s{}", n.fetch_add(1, Ordering::Relaxed));
                    async move {
                        let owner = Owner {
                            company_id: 1,
                            user_id: 2,
                        };
                        assert!(limiter.hit("user:1:2").await.allowed);
                        assert!(store.load(owner, &id).await.unwrap().is_none());
                        store.append(owner, &id, &turn).await.unwrap();
                    }
                }
            },
        ),
        part("Redis: three PINGs through the pool", concurrency, secs, {
            let pool = pool.clone();
            move || {
                let pool = pool.clone();
                async move {
                    for _ in 0..3 {
                        let mut c = agent_host::sessions::redis_connection(&pool).await.unwrap();
                        let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
                    }
                }
            }
        }),
    ];

    // ONLY=<text>: measure only the parts whose name contains it.
    let only = std::env::var("ONLY").unwrap_or_default();
    let parts: Vec<Part> = parts
        .into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect();
    println!(
        "CPU per operation, {concurrency} concurrent tasks, {secs} s per part, {rounds} rounds (median, then each round)"
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
    for _ in 0..rounds {
        for (i, (name, run)) in parts.iter().enumerate() {
            eprintln!("measuring: {name}");
            let started = Instant::now();
            let us = run().await;
            assert!(started.elapsed() >= Duration::from_secs(secs));
            results[i].push(us);
        }
    }
    for ((name, _), r) in parts.iter().zip(results) {
        let each: Vec<String> = r.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "{:>8.1} µs  {name}  ({})",
            median(r.clone()),
            each.join(", ")
        );
    }
}
