//! Conversations in Redis, shared by every instance.
//!
//! Keys (prefix `REDIS_KEY_PREFIX`, default `agents:`):
//! - `{prefix}conversation:{company}:{user}:{session}`: a list, one JSON
//!   message per element, oldest first;
//! - `{prefix}conversation:{company}:{user}:{session}:meta`: a hash with
//!   `bytes` (size of the list) and `updatedAt` (ms);
//! - `{prefix}active`: a sorted set of `{company}:{user}:{session}` scored by
//!   expiry time, so counting live conversations never scans keys. Every
//!   append drops the entries that have expired and gives the set the
//!   conversation TTL, so it stays bounded whether or not `/metrics` is
//!   scraped.
//!
//! A turn is appended by one Lua script: its messages go in together,
//! whatever other instances append at the same moment; expiry is refreshed
//! and old messages are trimmed in the same step.
//!
//! A chat's rate-limit count (`crate::ratelimit`) and its conversation load
//! share one round trip: a second script counts the request and reads the
//! conversation only when the count is within the limit, so a refused
//! request costs Redis no more than the count.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::redis_pool::{Pool, PoolError, Shared, connection};
use super::{Bounds, Conversation, Owner, SessionStore, StoreError, now_ms};
use crate::llm::Message;
use crate::telemetry::Metrics;

const APPEND: &str = r#"
local added = 0
for i = 6, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
  added = added + string.len(ARGV[i])
end
local bytes = tonumber(redis.call('HINCRBY', KEYS[2], 'bytes', added))
local n = tonumber(redis.call('LLEN', KEYS[1]))
local max_messages = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
while n > 1 and (n > max_messages or bytes > max_bytes) do
  local old = redis.call('LPOP', KEYS[1])
  bytes = tonumber(redis.call('HINCRBY', KEYS[2], 'bytes', -string.len(old)))
  n = n - 1
end
redis.call('HSET', KEYS[2], 'updatedAt', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + tonumber(ARGV[1]), ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return n
"#;

/// Counts one request in a fixed window (`KEYS[1]`, expiring after
/// `ARGV[1]` ms) and, if the count is at most `ARGV[2]`, reads the
/// conversation as `load` does (`KEYS[2]` and its `KEYS[3]` meta hash).
/// Always four elements: a refused request gets nils for the conversation.
/// The reads cannot fail the script once the count is taken (a script's
/// writes stay when it fails, and the caller would count again): keys that
/// hold something else give the PTTL `-3` instead.
const COUNT_LOAD: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return {n, false, false, -2} end
local items = redis.pcall('LRANGE', KEYS[2], 0, -1)
local updated = redis.pcall('HGET', KEYS[3], 'updatedAt')
if items.err or (type(updated) == 'table' and updated.err) then return {n, false, false, -3} end
return {n, items, updated, redis.call('PTTL', KEYS[2])}
"#;

/// A rate-limit count to take in the same round trip as a load
/// ([`RedisStore::count_and_load`]).
pub struct Count<'a> {
    /// The window's counter key, prefix included.
    pub key: &'a str,
    pub window_ms: u64,
    /// The highest count that is still allowed.
    pub max: u32,
}

pub struct RedisStore {
    pool: Pool,
    prefix: String,
    bounds: Bounds,
    timeout: Duration,
    append: redis::Script,
    count_load: redis::Script,
    metrics: Metrics,
}

impl RedisStore {
    pub fn new(
        pool: Pool,
        prefix: &str,
        bounds: Bounds,
        timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        RedisStore {
            pool,
            prefix: prefix.to_string(),
            bounds,
            timeout,
            append: redis::Script::new(APPEND),
            count_load: redis::Script::new(COUNT_LOAD),
            metrics,
        }
    }

    /// Counts one request and, when the count is within `count.max`, loads
    /// the owner's conversation, in one round trip. The count comes back
    /// whenever Redis answered; the load only for an allowed request (an
    /// unreadable conversation is an error there, not a failed count).
    /// Timed and counted in the metrics as a `load`.
    #[allow(clippy::type_complexity)]
    pub async fn count_and_load(
        &self,
        count: Count<'_>,
        owner: Owner,
        id: &str,
    ) -> Result<(u32, Option<Result<Option<Conversation>, StoreError>>), StoreError> {
        let key = self.list_key(&Self::member(owner, id));
        self.timed("load", async {
            let mut c = self.conn().await?;
            let (n, items, updated, ttl): (u32, Option<Vec<String>>, Option<u64>, i64) = self
                .count_load
                .key(count.key)
                .key(&key)
                .key(format!("{key}:meta"))
                .arg(count.window_ms)
                .arg(count.max)
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?;
            if n > count.max {
                return Ok((n, None));
            }
            let loaded = match items {
                Some(items) => decode(id, &items, updated, ttl),
                // PTTL -3: the script found the keys holding another type.
                None => Err(StoreError::Corrupt(
                    "the conversation's keys hold another type of value".into(),
                )),
            };
            if loaded.is_err() {
                self.count_error("load");
            }
            Ok((n, Some(loaded)))
        })
        .await
    }

    fn member(owner: Owner, id: &str) -> String {
        format!("{}:{}:{}", owner.company_id, owner.user_id, id)
    }

    fn list_key(&self, member: &str) -> String {
        format!("{}conversation:{}", self.prefix, member)
    }

    fn index_key(&self) -> String {
        format!("{}active", self.prefix)
    }

    /// Runs one operation under the timeout, with metrics.
    async fn timed<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        self.metrics
            .session_store_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.count_error(op);
        }
        result
    }

    fn count_error(&self, op: &str) {
        self.metrics
            .session_store_errors
            .with_label_values(&[op])
            .inc();
    }

    async fn conn(&self) -> Result<Shared, StoreError> {
        connection(&self.pool).await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::Timeout,
            other => StoreError::Unavailable(other.to_string()),
        })
    }
}

/// A conversation from its list, its `updatedAt` and the list's PTTL; none
/// when the list is empty or has no expiry.
fn decode(
    id: &str,
    items: &[String],
    updated: Option<u64>,
    ttl: i64,
) -> Result<Option<Conversation>, StoreError> {
    if items.is_empty() || ttl < 0 {
        return Ok(None);
    }
    let messages = items
        .iter()
        .map(|s| serde_json::from_str::<Message>(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let now = now_ms();
    Ok(Some(Conversation {
        session_id: id.to_string(),
        messages,
        updated_at: updated.unwrap_or(now),
        expires_at: now + ttl as u64,
    }))
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn load(&self, owner: Owner, id: &str) -> Result<Option<Conversation>, StoreError> {
        let key = self.list_key(&Self::member(owner, id));
        self.timed("load", async {
            let mut c = self.conn().await?;
            let (items, updated, ttl): (Vec<String>, Option<u64>, i64) = redis::pipe()
                .lrange(&key, 0, -1)
                .hget(format!("{key}:meta"), "updatedAt")
                .pttl(&key)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            decode(id, &items, updated, ttl)
        })
        .await
    }

    fn redis(&self) -> Option<&RedisStore> {
        Some(self)
    }

    async fn append(&self, owner: Owner, id: &str, messages: &[Message]) -> Result<(), StoreError> {
        let member = Self::member(owner, id);
        let key = self.list_key(&member);
        let encoded = messages
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.timed("append", async {
            let mut c = self.conn().await?;
            let mut inv = self.append.prepare_invoke();
            inv.key(&key)
                .key(format!("{key}:meta"))
                .key(self.index_key())
                .arg(self.bounds.ttl_ms)
                .arg(self.bounds.max_messages)
                .arg(self.bounds.max_bytes)
                .arg(now_ms())
                .arg(&member);
            for m in &encoded {
                inv.arg(m);
            }
            let _: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, owner: Owner, id: &str) -> Result<bool, StoreError> {
        let member = Self::member(owner, id);
        let key = self.list_key(&member);
        self.timed("delete", async {
            let mut c = self.conn().await?;
            let (deleted, _): (i64, i64) = redis::pipe()
                .atomic()
                .del(&[key.clone(), format!("{key}:meta")])
                .zrem(self.index_key(), &member)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn active(&self) -> Result<u64, StoreError> {
        self.timed("active", async {
            let mut c = self.conn().await?;
            let (_, n): (i64, u64) = redis::pipe()
                .atomic()
                .zrembyscore(self.index_key(), "-inf", now_ms())
                .zcard(self.index_key())
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(n)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            let mut c = self.conn().await?;
            let _: String = c.ping().await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
