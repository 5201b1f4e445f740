//! Conversations in a real Redis: persistence, sharing, expiry, concurrency,
//! ownership, and outages.

use std::time::Duration;

use crate::common::redis_server::RedisServer;
use crate::common::*;
use redis::AsyncCommands;
use serde_json::Value;

fn with_redis(stack: &mut Stack, redis: &RedisServer) {
    stack
        .set("REDIS_URL", redis.url())
        .set("REDIS_KEY_PREFIX", "test:");
}

#[tokio::test]
async fn survives_a_restart_and_is_shared_by_instances() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let token = stack.token(ADMIN);

    let first = stack.start().await;
    let (s, b) = first
        .chat(&token, prompt_in("The chiller needs a new filter", "r-1"))
        .await;
    assert_eq!(s, 200, "{b}");
    first.stop().await;

    // A new process sees it, and so does a second instance alongside.
    let a = stack.start().await;
    let b = stack.start().await;
    let (_, ra) = a.chat(&token, prompt_in("#recall", "r-1")).await;
    assert!(answer(&ra).contains("chiller"), "{ra}");
    let (_, rb) = b.chat(&token, prompt_in("#recall", "r-1")).await;
    let text = answer(&rb);
    assert!(
        text.contains("chiller") && text.contains("#recall"),
        "instance b sees a's turn: {text}"
    );

    let mut c = redis.client().await;
    let key = "test:conversation:1:1:r-1";
    let len: usize = c.llen(key).await.unwrap();
    assert_eq!(len, 6);
    a.stop().await;
    b.stop().await;
}

fn store_ops(text: &str, op: &str) -> f64 {
    let prefix = format!("agents_session_store_duration_seconds_count{{op=\"{op}\"}}");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_new_conversation_is_not_looked_up_and_continues_with_its_history() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, b) = host
        .chat(&token, prompt("The compressor on line 3 rattles"))
        .await;
    assert_eq!(s, 200, "{b}");
    let session = b["sessionId"].as_str().unwrap().to_string();
    // The host minted the id: nothing to load, one append.
    let text = host.metrics_text().await;
    assert_eq!(store_ops(&text, "load"), 0.0, "{text}");
    assert_eq!(store_ops(&text, "append"), 1.0, "{text}");

    // The caller continues it with that id: loaded, and the model sees it.
    let (s, b) = host.chat(&token, prompt_in("#recall", &session)).await;
    assert_eq!(s, 200, "{b}");
    assert!(answer(&b).contains("compressor"), "{b}");
    let text = host.metrics_text().await;
    assert_eq!(store_ops(&text, "load"), 1.0, "{text}");
    assert_eq!(store_ops(&text, "append"), 2.0, "{text}");
    host.stop().await;
}

#[tokio::test]
async fn expiry_is_set_refreshed_and_enforced() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    stack.set("CONVERSATION_TTL_MS", "1500");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    host.chat(&token, prompt_in("hello", "ttl-1")).await;
    let mut c = redis.client().await;
    let key = "test:conversation:1:1:ttl-1";
    let ttl: i64 = c.pttl(key).await.unwrap();
    assert!(ttl > 0 && ttl <= 1500, "{ttl}");
    let meta_ttl: i64 = c.pttl(format!("{key}:meta")).await.unwrap();
    assert!(meta_ttl > 0 && meta_ttl <= 1500, "{meta_ttl}");

    tokio::time::sleep(Duration::from_millis(900)).await;
    host.chat(&token, prompt_in("again", "ttl-1")).await;
    let refreshed: i64 = c.pttl(key).await.unwrap();
    assert!(refreshed > 1000, "refreshed each turn: {refreshed}");

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let exists: bool = c.exists(key).await.unwrap();
    assert!(!exists, "Redis expired it");
    assert_eq!(host.get("/v1/sessions/ttl-1", Some(&token)).await.0, 404);
    host.stop().await;
}

#[tokio::test]
async fn concurrent_turns_over_two_instances_lose_nothing() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let token = stack.token(ADMIN);
    let a = stack.start().await;
    let b = stack.start().await;
    let turns = (0..20).map(|i| {
        let host = if i % 2 == 0 { &a } else { &b };
        let token = token.clone();
        async move {
            host.chat(&token, prompt_in(&format!("turn number {i}"), "busy"))
                .await
        }
    });
    for (s, body) in futures::future::join_all(turns).await {
        assert_eq!(s, 200, "{body}");
    }
    let (s, conv) = a.get("/v1/sessions/busy", Some(&token)).await;
    assert_eq!(s, 200);
    let msgs = conv["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 40, "{conv}");
    for i in 0..20 {
        let p = format!("turn number {i}");
        let at: Vec<usize> = msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| m["content"] == Value::String(p.clone()))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(at.len(), 1, "prompt {i} stored once");
        let next = &msgs[at[0] + 1];
        assert_eq!(next["role"], "assistant");
        assert_eq!(
            next["content"],
            Value::String(format!("You said: {p}")),
            "answer follows its prompt"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn other_users_cannot_use_the_id() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let host = stack.start().await;
    let alice = stack.token(ADMIN);
    let mallory = stack.token(OTHER_ADMIN);
    host.chat(&alice, prompt_in("private notes", "mine")).await;
    assert_eq!(host.get("/v1/sessions/mine", Some(&mallory)).await.0, 404);
    let del = host
        .http
        .delete(host.url("/v1/sessions/mine"))
        .bearer_auth(&mallory)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    let (_, b) = host.chat(&mallory, prompt_in("#recall", "mine")).await;
    assert_eq!(answer(&b), "Earlier you said: nothing");
    let (s, conv) = host.get("/v1/sessions/mine", Some(&alice)).await;
    assert_eq!(s, 200);
    assert_eq!(conv["messages"][0]["content"], "private notes");
    // Erasing is the owner's right.
    let del = host
        .http
        .delete(host.url("/v1/sessions/mine"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(host.get("/v1/sessions/mine", Some(&alice)).await.0, 404);
    host.stop().await;
}

#[tokio::test]
async fn active_count_uses_the_expiry_index() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    stack.set("CONVERSATION_TTL_MS", "1000");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    for i in 0..3 {
        host.chat(&token, prompt_in("hi", &format!("c{i}"))).await;
    }
    let metrics = host.metrics_text().await;
    assert!(
        metrics.contains("agents_active_conversations 3"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = host.metrics_text().await;
    assert!(
        metrics.contains("agents_active_conversations 0"),
        "expired ones drop out"
    );
    host.stop().await;
}

#[tokio::test]
async fn the_expiry_index_stays_bounded_without_metrics_scrapes() {
    // Entries used to leave the index only when `/metrics` was scraped, and
    // the index had no TTL: without a scraper it grew for ever.
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    stack.set("CONVERSATION_TTL_MS", "800");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    for i in 0..3 {
        host.chat(&token, prompt_in("hi", &format!("old{i}"))).await;
    }
    let mut c = redis.client().await;
    let index = "test:active";
    assert_eq!(c.zcard::<_, u64>(index).await.unwrap(), 3);
    let ttl: i64 = c.pttl(index).await.unwrap();
    assert!(
        ttl > 0 && ttl <= 800,
        "the index has the conversation TTL: {ttl}"
    );

    tokio::time::sleep(Duration::from_millis(900)).await;
    host.chat(&token, prompt_in("hi", "new")).await;
    let members: Vec<String> = c.zrange(index, 0, -1).await.unwrap();
    assert_eq!(
        members,
        ["1:1:new"],
        "the append dropped the expired entries"
    );

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        !c.exists::<_, bool>(index).await.unwrap(),
        "the idle index expires"
    );
    host.stop().await;
}

#[tokio::test]
async fn redis_outage_degrades_then_history_resumes() {
    let mut redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    stack.set("REDIS_TIMEOUT_MS", "300");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, h, _) = host
        .chat_full(Some(&token), prompt_in("before", "o-1"))
        .await;
    assert_eq!(s, 200);
    assert!(h.get("x-agent-degraded").is_none());

    redis.stop();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (s, h, b) = host
            .chat_full(Some(&token), prompt_in("during", "o-1"))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            h.get("x-agent-degraded").unwrap(),
            "session-store-unavailable"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded wait: {:?}",
            started.elapsed()
        );
    }
    let (s, _) = host.get("/health/ready", None).await;
    assert_eq!(s, 503);

    redis.restart();
    // The pool reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        let (s, h, _) = host
            .chat_full(Some(&token), prompt_in("after", "o-2"))
            .await;
        if s == 200 && h.get("x-agent-degraded").is_none() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "history is stored again once Redis is back");
    let (_, b) = host.chat(&token, prompt_in("#recall", "o-2")).await;
    assert!(answer(&b).contains("after"), "{b}");
    host.stop().await;
}

/// `calls` of one command in `INFO commandstats`.
async fn command_calls(c: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The names of the commands Redis receives from its clients while `during`
/// runs, in order, as `MONITOR` reports them: commands that scripts run
/// inside Redis are left out, and so are the pool's health-check pings.
async fn client_commands<F: std::future::Future>(
    redis: &RedisServer,
    during: F,
) -> (F::Output, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut monitor = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    monitor.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(monitor).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
    let out = during.await;
    // A marker from another client: every command before it has been shown.
    let mut c = redis.client().await;
    let _: String = redis::cmd("ECHO")
        .arg("monitor-end")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("\"monitor-end\"") {
            break;
        }
        // `+<time> [<db> <client>] "name" "arg" ...`; scripts show as `lua`.
        let (source, command) = line.split_once("] ").expect(&line);
        if source.ends_with(" lua") {
            continue;
        }
        let name = command.split('"').nth(1).unwrap().to_ascii_lowercase();
        if name != "ping" {
            names.push(name);
        }
    }
    (out, names)
}

/// A stack on `redis` that allows each user `max` chats an hour. Windows
/// are aligned to the clock: an hour makes it unlikely that one ends during
/// a test.
async fn limited_stack(redis: &RedisServer, max: u32) -> Stack {
    let mut stack = Stack::new().await;
    with_redis(&mut stack, redis);
    stack
        .set("RATE_LIMIT_MAX", max.to_string())
        .set("RATE_LIMIT_WINDOW_MS", "3600000");
    stack
}

#[tokio::test]
async fn a_continued_chat_counts_and_loads_in_one_round_trip() {
    let redis = RedisServer::start();
    let stack = limited_stack(&redis, 4).await;
    let a = stack.start().await;
    let b = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, body) = a
        .chat(&token, prompt_in("The boiler pressure drops", "rl-1"))
        .await;
    assert_eq!(s, 200, "{body}");

    // The next turn, on the other instance: one script counts the request
    // and reads the conversation, one appends the turn.
    let ((s, body), commands) =
        client_commands(&redis, b.chat(&token, prompt_in("#recall", "rl-1"))).await;
    assert_eq!(s, 200, "{body}");
    assert!(answer(&body).contains("boiler"), "{body}");
    assert_eq!(commands, ["evalsha", "evalsha"]);

    // New and continued conversations count in the same window: four in all.
    assert_eq!(a.chat(&token, prompt("hello")).await.0, 200);
    assert_eq!(b.chat(&token, prompt_in("#recall", "rl-1")).await.0, 200);
    let mut c = redis.client().await;
    let reads = command_calls(&mut c, "lrange").await;
    assert!(reads >= 2, "the continued turns read the list: {reads}");
    for host in [&a, &b] {
        let (s, h, body) = host
            .chat_full(Some(&token), prompt_in("#recall", "rl-1"))
            .await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(h["ratelimit-remaining"], "0");
    }
    // The refused turns did not read the conversation.
    assert_eq!(command_calls(&mut c, "lrange").await, reads);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_conversation_key_of_another_type_degrades_the_turn_and_counts_it_once() {
    let mut redis = RedisServer::start();
    let stack = limited_stack(&redis, 1).await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let mut c = redis.client().await;
    let _: () = c
        .set("test:conversation:1:1:odd", "not a list")
        .await
        .unwrap();

    let (s, h, body) = host
        .chat_full(Some(&token), prompt_in("hello", "odd"))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["x-agent-degraded"], "session-store-unavailable");
    let keys: Vec<String> = c.keys("test:ratelimit:*").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let count: u32 = c.get(&keys[0]).await.unwrap();
    assert_eq!(count, 1);
    let text = host.metrics_text().await;
    assert!(
        text.contains("agents_session_store_errors_total{op=\"load\"} 1"),
        "{text}"
    );

    // The script took the count and answered: the request was not counted
    // locally as well. So when Redis goes away and the host counts alone,
    // this user's one chat of the window is still there to take.
    drop(c);
    redis.stop();
    let (s, _, body) = host.chat_full(Some(&token), prompt("hello")).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = host.chat_full(Some(&token), prompt("hello")).await;
    assert_eq!(s, 429, "{body}");
    host.stop().await;
}

#[tokio::test]
async fn busy_connections_are_not_pinged_and_idle_ones_are() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let mut c = redis.client().await;

    assert_eq!(host.chat(&token, prompt_in("warm up", "p-0")).await.0, 200);
    let pings = command_calls(&mut c, "ping").await;
    let scripts = command_calls(&mut c, "evalsha").await;
    for i in 1..=10 {
        let (s, b) = host
            .chat(&token, prompt_in("hello", &format!("p-{i}")))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // Ten appends (and rate-limit counts) ran, and no connection was pinged
    // on its way out of the pool.
    assert!(command_calls(&mut c, "evalsha").await >= scripts + 10);
    assert_eq!(command_calls(&mut c, "ping").await, pings);

    // A connection idle for longer than the pool's bound is checked first.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(host.chat(&token, prompt_in("again", "p-11")).await.0, 200);
    assert!(command_calls(&mut c, "ping").await > pings);
    host.stop().await;
}

/// `total_connections_received` from `INFO stats`.
async fn connections_received(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn concurrent_chats_share_one_connection() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    assert_eq!(host.chat(&token, prompt_in("warm up", "s-0")).await.0, 200);
    let mut c = redis.client().await;
    let before = connections_received(&mut c).await;
    let scripts = command_calls(&mut c, "evalsha").await;

    // Twenty chats at once: each counts its rate limit, loads and appends,
    // all over the connection the warm-up chat opened.
    let chats = (1..=20).map(|i| {
        let (host, token) = (&host, token.clone());
        async move {
            host.chat(&token, prompt_in("hello", &format!("s-{i}")))
                .await
        }
    });
    for (s, b) in futures::future::join_all(chats).await {
        assert_eq!(s, 200, "{b}");
    }
    assert!(command_calls(&mut c, "evalsha").await >= scripts + 40);
    assert_eq!(
        connections_received(&mut c).await,
        before,
        "no connection was opened for the concurrent chats"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_connection_left_waiting_by_a_timeout_is_not_reused() {
    let redis = RedisServer::start();
    let mut stack = Stack::new().await;
    with_redis(&mut stack, &redis);
    stack.set("REDIS_TIMEOUT_MS", "300");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    assert_eq!(host.chat(&token, prompt_in("hello", "w-1")).await.0, 200);
    let mut c = redis.client().await;
    let before = connections_received(&mut c).await;

    // Redis stops answering: the host's commands time out and are abandoned
    // with their answers still owed on the connection.
    redis.pause();
    let _ = host.chat(&token, prompt_in("stalled", "w-2")).await;
    redis.resume();

    // That connection is not handed out again: the host opens a new one.
    assert_eq!(host.chat(&token, prompt_in("after", "w-3")).await.0, 200);
    assert!(connections_received(&mut c).await > before);
    host.stop().await;
}

/// A command given up on quickly (its chat was cancelled) leaves the shared
/// connection in service; one left waiting for the Redis timeout retires it.
#[tokio::test]
async fn only_a_command_left_waiting_retires_the_shared_connection() {
    use agent_host::sessions::{RedisPool, redis_connection, redis_pool};
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(400);
    let pool = redis_pool(&redis.url(), timeout).unwrap();
    async fn ping(pool: &RedisPool, within: Duration) -> bool {
        let mut c = redis_connection(pool).await.unwrap();
        let ping = redis::cmd("PING");
        let asked = ping.query_async::<String>(&mut c);
        tokio::time::timeout(within, asked).await.is_ok()
    }
    assert!(ping(&pool, timeout).await);
    let mut probe = redis.client().await;
    let before = connections_received(&mut probe).await;

    redis.pause();
    assert!(!ping(&pool, Duration::from_millis(20)).await);
    redis.resume();
    assert!(ping(&pool, timeout).await);
    assert_eq!(connections_received(&mut probe).await, before);

    redis.pause();
    assert!(!ping(&pool, timeout).await);
    redis.resume();
    assert!(ping(&pool, timeout).await);
    assert_eq!(connections_received(&mut probe).await, before + 1);
}

/// A command waits for its answer as long as `REDIS_TIMEOUT_MS` allows,
/// not the 500 ms that redis-rs gives a command unless told otherwise.
#[tokio::test]
async fn a_slow_answer_within_the_redis_timeout_is_awaited() {
    use agent_host::sessions::{redis_connection, redis_pool};
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(3);
    let pool = redis_pool(&redis.url(), timeout).unwrap();
    let mut c = redis_connection(&pool).await.unwrap();
    let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();

    // Redis answers after about 1.2 s.
    redis.pause();
    let started = std::time::Instant::now();
    let ping = redis::cmd("PING");
    let (answer, ()) = tokio::join!(
        tokio::time::timeout(timeout, ping.query_async::<String>(&mut c)),
        async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            redis.resume();
        }
    );
    assert_eq!(answer.expect("within the timeout").unwrap(), "PONG");
    assert!(started.elapsed() >= Duration::from_millis(1200));
}
