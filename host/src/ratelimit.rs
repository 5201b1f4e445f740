//! Per-user chat limits: `RATE_LIMIT_MAX` per `RATE_LIMIT_WINDOW_MS`, in
//! fixed windows. With Redis the count is shared by every instance (one
//! `INCR` per request), so N instances still allow the limit once; without
//! it each instance counts alone. A chat that continues a stored
//! conversation has its count taken in the same Redis round trip as the
//! conversation's load ([`RateLimiter::hit_and_load`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::sessions::{
    Conversation, Count, Owner, RedisPool as Pool, SessionStore, StoreError, now_ms,
    redis_connection,
};

/// The state of a key's window after counting one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

struct Shared {
    pool: Pool,
    prefix: String,
    timeout: Duration,
    /// The INCR script, hashed once (sent by hash, loaded on first use).
    incr: redis::Script,
}

pub struct RateLimiter {
    max: u32,
    window_ms: u64,
    /// Counts alone when there is no Redis, and while Redis cannot be asked.
    local: Cache<(String, u64), Arc<AtomicU32>>,
    shared: Option<Shared>,
}

const INCR: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

impl RateLimiter {
    pub fn local(max: u32, window: Duration) -> Self {
        RateLimiter {
            max,
            window_ms: window.as_millis().max(1) as u64,
            local: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window * 2)
                .build(),
            shared: None,
        }
    }

    /// Shares `pool` (whose waits are bounded) with the session store.
    pub fn redis(max: u32, window: Duration, pool: Pool, prefix: &str, timeout: Duration) -> Self {
        RateLimiter {
            shared: Some(Shared {
                pool,
                prefix: prefix.to_string(),
                timeout,
                incr: redis::Script::new(INCR),
            }),
            ..Self::local(max, window)
        }
    }

    /// Counts one request for `key`. If Redis cannot be asked in time the
    /// request is counted locally instead, so an outage neither blocks chat
    /// nor removes the limit.
    pub async fn hit(&self, key: &str) -> Decision {
        let (window, reset_ms) = self.window();
        let count = match &self.shared {
            None => self.local_count(key, window),
            Some(shared) => match self.shared_count(shared, key, window).await {
                Ok(n) => n,
                Err(reason) => {
                    tracing::warn!(%reason, "rate limit store unavailable; counting locally");
                    self.local_count(key, window)
                }
            },
        };
        self.decision(count, reset_ms)
    }

    /// Counts one request for `key` and, if it is allowed and `load` names a
    /// conversation, loads that from `store`. The load comes back only for
    /// an allowed request: a refused one costs no read of the conversation.
    ///
    /// When both the count and the store are in Redis (the host builds them
    /// on one pool), count and load are one round trip. If Redis fails
    /// there, the request is counted locally as in [`RateLimiter::hit`] and
    /// the load reports the failure.
    pub async fn hit_and_load(
        &self,
        key: &str,
        store: &dyn SessionStore,
        load: Option<(Owner, &str)>,
    ) -> (Decision, Option<Result<Option<Conversation>, StoreError>>) {
        if let (Some(shared), Some(redis), Some((owner, id))) = (&self.shared, store.redis(), load)
        {
            let (window, reset_ms) = self.window();
            let redis_key = Self::redis_key(shared, key, window);
            let count = Count {
                key: &redis_key,
                window_ms: self.window_ms,
                max: self.max,
            };
            return match redis.count_and_load(count, owner, id).await {
                Ok((n, loaded)) => (self.decision(n, reset_ms), loaded),
                Err(e) => {
                    tracing::warn!(reason = %e, "rate limit store unavailable; counting locally");
                    let d = self.decision(self.local_count(key, window), reset_ms);
                    (d, d.allowed.then_some(Err(e)))
                }
            };
        }
        let d = self.hit(key).await;
        let loaded = match load {
            Some((owner, id)) if d.allowed => Some(store.load(owner, id).await),
            _ => None,
        };
        (d, loaded)
    }

    /// The current window's number and the milliseconds until it ends.
    fn window(&self) -> (u64, u64) {
        let now = now_ms();
        let window = now / self.window_ms;
        (window, (window + 1) * self.window_ms - now)
    }

    fn decision(&self, count: u32, reset_ms: u64) -> Decision {
        Decision {
            allowed: count <= self.max,
            limit: self.max,
            remaining: self.max.saturating_sub(count),
            reset_secs: reset_ms.div_ceil(1000),
        }
    }

    fn redis_key(shared: &Shared, key: &str, window: u64) -> String {
        format!("{}ratelimit:{key}:{window}", shared.prefix)
    }

    async fn shared_count(&self, shared: &Shared, key: &str, window: u64) -> Result<u32, String> {
        let redis_key = Self::redis_key(shared, key, window);
        let ask = async {
            let mut c = redis_connection(&shared.pool)
                .await
                .map_err(|e| e.to_string())?;
            shared
                .incr
                .key(&redis_key)
                .arg(self.window_ms)
                .invoke_async::<u32>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(shared.timeout, ask)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    fn local_count(&self, key: &str, window: u64) -> u32 {
        let counter = self
            .local
            .get_with((key.to_string(), window), || Arc::new(AtomicU32::new(0)));
        counter.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_window_allows_exactly_max() {
        let l = RateLimiter::local(3, Duration::from_secs(60));
        let mut allowed = 0;
        for _ in 0..5 {
            if l.hit("u1").await.allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
        let d = l.hit("u1").await;
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(d.reset_secs >= 1 && d.reset_secs <= 60);
        assert!(l.hit("u2").await.allowed, "keys are separate");
    }

    #[tokio::test]
    async fn a_conversation_is_loaded_only_for_an_allowed_request() {
        use crate::llm::Message;
        use crate::sessions::{Bounds, MemoryStore};

        let store = MemoryStore::new(Bounds {
            ttl_ms: 60_000,
            max_messages: 10,
            max_bytes: 10_000,
        });
        let owner = Owner {
            company_id: 1,
            user_id: 2,
        };
        let said = Message::User {
            content: "the pump leaks".into(),
        };
        store
            .append(owner, "s-1", std::slice::from_ref(&said))
            .await
            .unwrap();
        let l = RateLimiter::local(2, Duration::from_secs(60));

        // A new conversation is counted and nothing is loaded.
        let (d, loaded) = l.hit_and_load("u1", &store, None).await;
        assert!(d.allowed);
        assert!(loaded.is_none());
        // A continued one is counted in the same window and loaded.
        let (d, loaded) = l.hit_and_load("u1", &store, Some((owner, "s-1"))).await;
        assert_eq!((d.allowed, d.remaining), (true, 0));
        let c = loaded.expect("loaded").unwrap().expect("stored");
        assert_eq!(c.messages.len(), 1);
        assert_eq!(
            serde_json::to_value(&c.messages[0]).unwrap(),
            serde_json::to_value(&said).unwrap()
        );
        // Over the limit: refused, and the conversation is not read.
        let (d, loaded) = l.hit_and_load("u1", &store, Some((owner, "s-1"))).await;
        assert!(!d.allowed);
        assert!(loaded.is_none());
    }
}
