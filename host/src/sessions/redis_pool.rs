//! The Redis connection pool shared by conversations and rate limits.
//!
//! It is deadpool with deadpool-redis's manager inside, plus two changes.
//!
//! Connections are shared: [`connection`] takes one from the pool, keeps a
//! clone of its multiplexed connection and puts it straight back, so every
//! caller of the moment sends on the same connection. redis-rs queues the
//! commands of concurrent callers and writes them out together, and reads
//! their answers together: under load one `writev` and one `read` carry many
//! chats' commands instead of one each (docs/performance.md). Callers that
//! come while a connection is being made or checked (at start, after a
//! failure, after an idle spell) make connections of their own; those stay in
//! the pool, behind the busy one, up to its 64.
//!
//! Handing out a connection does not cost a round trip. deadpool-redis
//! checks every connection with `UNWATCH` + `PING` each time it leaves the
//! pool, which doubled the Redis round trips of a chat. Here a connection is
//! checked that way only when it was last handed out more than
//! [`VERIFY_AFTER_IDLE`] ago, and a connection is dropped from the pool
//! instead of handed out again if a command on it failed at the connection
//! level or was given up after waiting at least half the Redis timeout for
//! its answer (the caller's timeout fired: the connection may be stuck). A
//! command dropped sooner (its chat was cancelled, say) leaves the shared
//! connection alone. Connections are handed out last in, first out, so the
//! same one stays busy and skips the check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, QueueMode, RecycleError, RecycleResult};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// A connection last handed out longer ago than this is pinged before it is
/// handed out again.
pub const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(2);

pub type Pool = managed::Pool<Manager>;
pub type PoolError = managed::PoolError<RedisError>;

/// A pooled connection: the handle [`connection`] hands out clones of.
pub struct Connection {
    shared: Shared,
}

/// A connection handed out by [`connection`]: a clone of a pooled
/// multiplexed connection, used by many callers at once.
#[derive(Clone)]
pub struct Shared {
    inner: redis::aio::MultiplexedConnection,
    /// Set, and kept, once a command on the connection fails at the
    /// connection level or is given up on after waiting `stalled`. Shared
    /// by every handle on the connection and read when it leaves the pool.
    broken: Arc<AtomicBool>,
    stalled: Duration,
}

/// A connection from the pool that many callers may use at once. The pool
/// keeps it and hands it to the next caller too.
pub async fn connection(pool: &Pool) -> Result<Shared, PoolError> {
    Ok(pool.get().await?.shared.clone())
}

/// Marks the connection broken if the command it watches fails at the
/// connection level, or is dropped after waiting `stalled` or longer.
struct InFlight<'a> {
    broken: &'a AtomicBool,
    stalled: Duration,
    started: Instant,
    done: bool,
}

impl<'a> InFlight<'a> {
    fn watch(broken: &'a AtomicBool, stalled: Duration) -> Self {
        InFlight {
            broken,
            stalled,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish<T>(mut self, result: &Result<T, RedisError>) {
        self.done = true;
        if let Err(e) = result
            && (e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_timeout())
        {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done && self.started.elapsed() >= self.stalled {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let watch = InFlight::watch(&self.broken, self.stalled);
            let result = self.inner.send_packed_command(cmd).await;
            watch.finish(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let watch = InFlight::watch(&self.broken, self.stalled);
            let result = self.inner.send_packed_commands(cmd, offset, count).await;
            watch.finish(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

pub struct Manager {
    inner: deadpool_redis::Manager,
    /// How long a command may wait for its answer before giving up on it
    /// marks its connection as stuck.
    stalled: Duration,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = RedisError;

    // Connecting and checking an idle connection are boxed: both are rare,
    // and their futures (about 6.7 KB for connecting) would otherwise be part
    // of every `Pool::get` future, and of every future that awaits one, and
    // be copied each time one of those is moved (boxed, spawned, wrapped in
    // a timeout). With them boxed a `get` future is a few hundred bytes.
    async fn create(&self) -> Result<Connection, RedisError> {
        let inner = Box::pin(managed::Manager::create(&self.inner)).await?;
        Ok(Connection {
            shared: Shared {
                inner,
                broken: Arc::new(AtomicBool::new(false)),
                stalled: self.stalled,
            },
        })
    }

    async fn recycle(&self, conn: &mut Connection, metrics: &Metrics) -> RecycleResult<RedisError> {
        if conn.shared.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message(
                "a command on the connection failed or was left waiting",
            ));
        }
        if metrics.last_used() < VERIFY_AFTER_IDLE {
            return Ok(());
        }
        Box::pin(managed::Manager::recycle(
            &self.inner,
            &mut conn.shared.inner,
            metrics,
        ))
        .await
    }
}

/// A pool whose every wait is bounded by `timeout`. Connections are made on
/// first use and remade after Redis comes back, so this succeeds while Redis
/// is down. A command given up on after half of `timeout` or more marks its
/// connection as stuck (the callers' own timeouts are `timeout`, and start
/// a moment before the command does).
pub fn pool(url: &str, timeout: Duration) -> anyhow::Result<Pool> {
    // redis-rs bounds each command by 500 ms and each connect by 1 s of its
    // own unless told otherwise. Every caller here bounds its whole wait by
    // `timeout` already, so a command has no second limit (which would cut
    // it short whenever `REDIS_TIMEOUT_MS` is above 500, and arm a second
    // timer per command), and a connect has this one.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(timeout));
    let manager = Manager {
        inner: deadpool_redis::Manager::new_with_config(url, config)?,
        stalled: timeout / 2,
    };
    Ok(Pool::builder(manager)
        .max_size(64)
        .queue_mode(QueueMode::Lifo)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}
