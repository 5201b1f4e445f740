//! Records what conversations cost in Redis: 10,000 conversations of one
//! realistic turn each (prompt, tool call, tool result, answer), then a load
//! of each. Prints the median and p99 time per operation and the memory per
//! conversation.
//!
//! `cargo run --release -p agent-host --example redis_record` starts its own
//! `redis-server` on a free loopback port (or uses `REDIS_URL`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_host::llm::{Message, ToolCall};
use agent_host::sessions::{Bounds, Owner, RedisStore, SessionStore, redis_pool};
use agent_host::telemetry::Metrics;

const CONVERSATIONS: usize = 10_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut server = None;
    let url = match std::env::var("REDIS_URL") {
        Ok(u) => u,
        Err(_) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server on PATH");
            server = Some(child);
            let url = format!("redis://127.0.0.1:{port}/");
            while redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            url
        }
    };
    let store = RedisStore::new(
        redis_pool(&url, Duration::from_secs(2)).unwrap(),
        "record:",
        Bounds {
            ttl_ms: 900_000,
            max_messages: 200,
            max_bytes: 256 * 1024,
        },
        Duration::from_secs(2),
        Metrics::new(),
    );
    let tool_result = format!(
        r#"{{"type":"work_orders","total":9,"items":[{}]}}"#,
        (0..5)
            .map(|i| format!(r#"{{"id":{i},"code":"WO00010{i}","title":"Inspect boiler pressure valve","priority":"MEDIUM","status":"OPEN","dueDate":"2026-05-28T12:00:00Z","asset":"Boiler #2"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let turn = vec![
        Message::User {
            content: "Show me open work orders".into(),
        },
        Message::Assistant {
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "view_work_orders".into(),
                arguments: r#"{"limit":5}"#.into(),
            }],
        },
        Message::Tool {
            tool_call_id: "call_1".into(),
            name: "view_work_orders".into(),
            content: tool_result,
        },
        Message::Assistant {
            content: Some(
                "Here are your five most recently updated open work orders: ...".repeat(4),
            ),
            tool_calls: vec![],
        },
    ];
    let turn_bytes: usize = turn
        .iter()
        .map(|m| serde_json::to_vec(m).unwrap().len())
        .sum();
    let before = used_memory(&url);
    let mut appends = Vec::with_capacity(CONVERSATIONS);
    for i in 0..CONVERSATIONS {
        let owner = Owner {
            company_id: 1 + (i % 7) as i64,
            user_id: (i % 500) as i64,
        };
        let t = Instant::now();
        store
            .append(owner, &format!("conv-{i}"), &turn)
            .await
            .unwrap();
        appends.push(t.elapsed());
    }
    let after = used_memory(&url);
    let mut loads = Vec::with_capacity(CONVERSATIONS);
    for i in 0..CONVERSATIONS {
        let owner = Owner {
            company_id: 1 + (i % 7) as i64,
            user_id: (i % 500) as i64,
        };
        let t = Instant::now();
        let c = store
            .load(owner, &format!("conv-{i}"))
            .await
            .unwrap()
            .unwrap();
        loads.push(t.elapsed());
        assert_eq!(c.messages.len(), 4);
    }
    let active = store.active().await.unwrap();
    appends.sort();
    loads.sort();
    println!("conversations: {CONVERSATIONS} (active index reports {active})");
    println!("turn payload: {turn_bytes} bytes of JSON in 4 messages");
    println!(
        "append (one turn, Lua script): median {:?}, p99 {:?}",
        percentile(&appends, 0.5),
        percentile(&appends, 0.99)
    );
    println!(
        "load (LRANGE + HGET + PTTL pipeline): median {:?}, p99 {:?}",
        percentile(&loads, 0.5),
        percentile(&loads, 0.99)
    );
    println!(
        "redis used_memory: {before} -> {after} bytes, {} bytes per conversation",
        (after - before) / CONVERSATIONS as u64
    );
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
}
