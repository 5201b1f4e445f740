//! What operators rely on: metrics, health, request ids, CORS, rate limits,
//! load shedding and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::redis_server::RedisServer;
use crate::common::*;
use serde_json::json;

fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_after_a_chat_and_pass_promtool() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let before = host.metrics_text().await;
    assert_eq!(metric_value(&before, "agents_chat_requests_total"), 0.0);
    let (s, _) = host
        .chat(&stack.token(ADMIN), prompt("Show me open work orders"))
        .await;
    assert_eq!(s, 200);
    host.chat_full(None, prompt("no token")).await;
    let text = host.metrics_text().await;
    for name in [
        "agents_chat_requests_total{agent_id=\"default-agent\",status=\"success\"} 1",
        "agents_chat_requests_total{agent_id=\"default-agent\",status=\"error_auth\"} 1",
        "agents_tool_executions_total{status=\"success\",tool_name=\"view_work_orders\"} 1",
        "agents_openai_api_calls_total{model=\"gpt-4o-mini\",status=\"success\"} 2",
        "agents_backend_requests_total{status=\"200\"}",
        "agents_plugin_invocations_total{outcome=\"success\",plugin=\"work-orders\"",
        "agents_openai_tokens_total{kind=\"prompt\",model=\"gpt-4o-mini\"}",
        "agents_chat_request_duration_seconds_bucket{agent_id=\"default-agent\",status=\"success\",le=\"0.5\"}",
        "agents_host_overhead_seconds_count 1",
        "agents_plugin_invocation_duration_seconds_count",
        "agents_active_conversations 1",
        "agents_plugins_loaded 4",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name}\n{text}");
    }
    assert!(!text.contains(ADMIN), "no user identifiers in labels");

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (.ci/run installs Debian's prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_backend() {
    let mut stack = Stack::new().await;
    let host = stack.start().await;
    let (s, b) = host.get("/health/ready", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["checks"]["backend"], "ok");
    assert_eq!(host.get("/health/live", None).await.0, 200);

    stack.atlas.stop().await;
    let (s, b) = host.get("/health/ready", None).await;
    assert_eq!(s, 503);
    assert_eq!(b["checks"]["backend"], "error");
    assert_eq!(
        host.get("/health/live", None).await.0,
        200,
        "liveness has no dependencies"
    );

    stack.atlas.restart().await.unwrap();
    assert_eq!(host.get("/health/ready", None).await.0, 200);
    stack.atlas.set_healthy(false);
    assert_eq!(host.get("/health/ready", None).await.0, 503);
    host.stop().await;
}

#[tokio::test]
async fn request_ids_round_trip_and_reach_the_backend_and_model() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .bearer_auth(stack.token(ADMIN))
        .header("x-request-id", "trace-abc-123")
        .json(&prompt("Show me open work orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
    for r in stack.atlas.requests() {
        assert_eq!(
            r.header("x-request-id"),
            Some("trace-abc-123"),
            "{}",
            r.path
        );
    }
    for r in stack.openai.requests() {
        assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    }
    // Generated when absent or unusable.
    let resp = host
        .http
        .get(host.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    host.stop().await;
}

#[tokio::test]
async fn cors_allows_listed_origins_only_and_preflight_needs_no_auth() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let pre = host
        .http
        .request(reqwest::Method::OPTIONS, host.url("/v1/chat"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("x-request-id"),
        "{headers}"
    );

    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .header("origin", "http://localhost:8080")
        .bearer_auth(stack.token(ADMIN))
        .json(&prompt("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:8080"
    );

    let evil = host
        .http
        .request(reqwest::Method::OPTIONS, host.url("/v1/chat"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .header("origin", "https://evil.example")
        .bearer_auth(stack.token(ADMIN))
        .json(&prompt("hi"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    host.stop().await;
}

#[tokio::test]
async fn rate_limit_is_shared_by_instances_through_redis() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    stack
        .set("REDIS_URL", redis.url())
        .set("RATE_LIMIT_MAX", "5")
        // Windows are aligned to the clock: an hour makes it unlikely that
        // one ends during the test.
        .set("RATE_LIMIT_WINDOW_MS", "3600000");
    let a = stack.start().await;
    let b = stack.start().await;
    let token = stack.token(ADMIN);
    let mut ok = 0;
    let mut limited = None;
    for i in 0..12 {
        let host = if i % 2 == 0 { &a } else { &b };
        let (s, h, body) = host.chat_full(Some(&token), prompt("hello")).await;
        match s {
            200 => ok += 1,
            429 => limited = Some((h, body)),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 5, "exactly RATE_LIMIT_MAX between the two instances");
    let (h, body) = limited.unwrap();
    assert_eq!(body["message"], "Too many requests, please try again later");
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert!(h.contains_key("ratelimit-reset"));
    // Another user has their own budget; health is exempt.
    assert_eq!(
        a.chat(&stack.token(TECHNICIAN), prompt("hello")).await.0,
        200
    );
    for _ in 0..20 {
        assert_eq!(a.get("/health", None).await.0, 200);
    }
    let m = a.metrics_text().await;
    assert!(
        m.contains("agents_rate_limited_total{scope=\"user\"}"),
        "{m}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn flood_guard_limits_one_address() {
    let mut stack = Stack::new().await;
    stack.set("FLOOD_GUARD_PER_SECOND", "2");
    let host = stack.start().await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(host.chat_full(None, prompt("x")).await.0);
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(host.get("/health", None).await.0, 200);
    host.stop().await;
}

#[tokio::test]
async fn excess_concurrency_is_shed_at_once() {
    let mut stack = Stack::new().await;
    stack.set("MAX_CONCURRENT_REQUESTS", "2");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let slow = (0..6).map(|_| host.chat(&token, prompt("#sleep 800\nhello")));
    let started = Instant::now();
    let results = futures::future::join_all(slow).await;
    let shed = results.iter().filter(|(s, _)| *s == 503).count();
    let done = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(shed >= 1 && done >= 2, "{results:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Shed chats never reach the handler, and are counted all the same.
    let text = host.metrics_text().await;
    let counted = metric_value(
        &text,
        "agents_chat_requests_total{agent_id=\"default-agent\",status=\"error_unavailable\"}",
    );
    assert_eq!(counted, shed as f64, "{text}");
    host.stop().await;
}

#[tokio::test]
async fn one_concurrency_limit_covers_every_v1_route() {
    let mut stack = Stack::new().await;
    stack.set("MAX_CONCURRENT_REQUESTS", "1");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let slow = host.chat(&token, prompt("#sleep 1500\nhello"));
    let other = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        host.get("/v1/sessions/none-such", Some(&token)).await
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(slow, other);
    assert_eq!(s1, 200, "{b1}");
    // The chat holds the one slot, so the sessions route is shed too.
    assert_eq!(s2, 503, "{b2}");
    assert_eq!(b2["status"], "error");
    // Once the chat is done the route answers as usual.
    assert_eq!(
        host.get("/v1/sessions/none-such", Some(&token)).await.0,
        404
    );
    host.stop().await;
}

#[tokio::test]
async fn timed_out_chats_answer_504_and_show_in_the_chat_metrics() {
    let mut stack = Stack::new().await;
    stack.set("REQUEST_TIMEOUT_MS", "300");
    let host = stack.start().await;
    let (s, b) = host
        .chat(&stack.token(ADMIN), prompt("#sleep 2000\nhello"))
        .await;
    assert_eq!(s, 504, "{b}");
    assert_eq!(b["status"], "error");
    let text = host.metrics_text().await;
    for (line, want) in [
        (
            "agents_chat_requests_total{agent_id=\"default-agent\",status=\"error_timeout\"}",
            1.0,
        ),
        (
            "agents_chat_request_duration_seconds_count{agent_id=\"default-agent\",status=\"error_timeout\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&text, line), want, "{line}\n{text}");
    }
    host.stop().await;
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405_that_says_what_is_allowed() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/v1/chat", "POST"),
        (reqwest::Method::PUT, "/v1/sessions/abc", "GET"),
        (reqwest::Method::POST, "/health/live", "GET"),
    ] {
        let resp = host
            .http
            .request(method.clone(), host.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(allow.contains(allowed), "{method} {path}: allow {allow:?}");
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(b["status"], "error", "{method} {path}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    host.stop().await;
}

#[tokio::test]
async fn a_session_id_that_does_not_decode_gets_the_json_400_after_the_token() {
    // `%FF` is not UTF-8 once decoded: axum's own rejection was plain text
    // and came before the token was looked at.
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = host
            .http
            .request(method.clone(), host.url("/v1/sessions/%FF"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} without a token");
        let resp = host
            .http
            .request(method.clone(), host.url("/v1/sessions/%FF"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method}");
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(b["status"], "error", "{method}: {b}");
        assert_eq!(b["errors"][0]["field"], "sessionId", "{method}: {b}");
    }
    host.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request thread runs tokio's current-thread scheduler, more run the
/// multi-thread one: both serve, drain and exit the same way.
#[tokio::test]
async fn sigterm_drains_in_flight_chats_and_exits_zero_on_one_thread() {
    drains_in_flight_chats_and_exits_zero("1").await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_chats_and_exits_zero_on_two_threads() {
    drains_in_flight_chats_and_exits_zero("2").await;
}

/// The host binary with only the stack's environment (and `PATH`),
/// listening on `port`, its output discarded.
fn host_command(stack: &Stack, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &stack.env {
        cmd.env(k, v);
    }
    cmd.env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Waits up to 30 s for the host started as `child` to answer
/// `/health/live` on `port`; fails at once if it exits first.
async fn wait_live(http: &reqwest::Client, port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/health/live"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200, "something else holds port {port}");
            return;
        }
        let exited = child.try_wait().unwrap();
        assert!(exited.is_none(), "the host exited: {exited:?}");
        assert!(Instant::now() < deadline, "host did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drains_in_flight_chats_and_exits_zero(workers: &str) {
    let stack = Stack::new().await;
    let port = free_port();
    let mut child = host_command(&stack, port)
        .env("SHUTDOWN_GRACE_MS", "10000")
        .env("WORKER_THREADS", workers)
        .env("LOG_FORMAT", "pretty")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_live(&http, port, &mut child).await;
    let token = stack.token(ADMIN);
    let slow = {
        let http = http.clone();
        let url = format!("{base}/v1/chat");
        let token = token.clone();
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"prompt": "#sleep 2000\nslow one"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New work is refused while the slow chat finishes.
    let fresh = reqwest::Client::new();
    match fresh
        .post(format!("{base}/v1/chat"))
        .bearer_auth(&token)
        .json(&prompt("new"))
        .send()
        .await
    {
        Err(_) => {}
        Ok(r) => assert_eq!(r.status(), 503),
    }
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("slow one"));
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// `PLUGIN_PROFILER=perfmap`: the host writes perf's map of JIT code,
/// naming the functions of the plugins it compiled in its child process
/// (which never profiles), and still serves; by default it writes none.
#[tokio::test]
async fn a_perf_map_names_plugin_code_only_when_asked() {
    let stack = Stack::with_plugins(&["work-orders"]).await;
    let http = reqwest::Client::new();
    for profiler in ["none", "perfmap"] {
        let port = free_port();
        let mut host = KillOnDrop(
            host_command(&stack, port)
                .env("PLUGIN_PROFILER", profiler)
                .spawn()
                .unwrap(),
        );
        wait_live(&http, port, &mut host.0).await;
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", host.0.id()));
        let r = http
            .post(format!("http://127.0.0.1:{port}/v1/chat"))
            .bearer_auth(stack.token(ADMIN))
            .json(&prompt("Show me open work orders"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{profiler}");
        let text = std::fs::read_to_string(&map).unwrap_or_default();
        let _ = std::fs::remove_file(&map);
        let guest_functions = text.lines().filter(|l| l.contains("wasm[")).count();
        if profiler == "none" {
            assert_eq!(text, "", "a map was written without being asked for");
        } else {
            // perf's format: start address and size in hex, then the name.
            assert!(
                guest_functions > 100,
                "{guest_functions} plugin functions in:\n{text}"
            );
            let first = text.lines().find(|l| l.contains("wasm[")).unwrap();
            let mut fields = first.splitn(3, ' ');
            for hex in [fields.next(), fields.next()] {
                let hex = hex.unwrap();
                let digits = hex.strip_prefix("0x").unwrap_or(hex);
                assert!(u64::from_str_radix(digits, 16).is_ok(), "{first}");
            }
        }
    }
}

/// Ends the child process when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain-HTTP forward proxy: logs the request line each connection
/// starts with (absolute form, as clients speak to a proxy), then relays
/// the connection to the authority it names.
async fn forward_proxy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or_default().to_owned();
                log.lock().unwrap().push(line.clone());
                let Some(authority) = line
                    .split(' ')
                    .nth(1)
                    .and_then(|t| t.strip_prefix("http://"))
                    .and_then(|t| t.split('/').next())
                else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(authority).await else {
                    return;
                };
                if upstream.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

/// `HTTP_PROXY` in the host's environment sends the backend and model
/// requests through that proxy: the readiness probe and the model calls
/// reach it, and nothing else of the host's does. (The relay logs the first
/// request of each connection; the identity lookup and the tool's request
/// ride the backend client's kept-alive connection.)
#[tokio::test]
async fn proxy_variables_send_backend_and_model_calls_through_the_proxy() {
    let stack = Stack::new().await;
    let (proxy, seen) = forward_proxy().await;
    let port = free_port();
    let mut host = KillOnDrop(
        host_command(&stack, port)
            .env("HTTP_PROXY", format!("http://{proxy}"))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_live(&http, port, &mut host.0).await;
    let ready: serde_json::Value = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["backend"], "ok", "{ready}");
    let chat = http
        .post(format!("{base}/v1/chat"))
        .bearer_auth(stack.token(ADMIN))
        .json(&prompt("Show me open work orders"))
        .send()
        .await
        .unwrap();
    let status = chat.status();
    assert_eq!(status, 200, "{}", chat.text().await.unwrap_or_default());
    assert!(
        !stack.tool_requests().is_empty(),
        "the tool reached the backend"
    );

    let api = stack.env["API_BASE"].trim_end_matches('/').to_owned();
    let model = stack.env["OPENAI_BASE_URL"]
        .trim_end_matches('/')
        .to_owned();
    let seen = seen.lock().unwrap().clone();
    for expected in [
        format!("GET {api}/actuator/health HTTP/1.1"),
        format!("POST {model}/chat/completions HTTP/1.1"),
    ] {
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
    // Every connection the host opened went to the proxy in absolute form.
    assert!(
        seen.iter()
            .all(|l| l.contains(&format!(" {api}/")) || l.contains(&format!(" {model}/"))),
        "{seen:?}"
    );
}
