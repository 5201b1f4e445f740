//! The Redis connection pool shared by conversations and rate limits.
//!
//! It is deadpool with deadpool-redis's manager inside, plus one change:
//! handing out a connection does not cost a round trip. deadpool-redis
//! checks every connection with `UNWATCH` + `PING` each time it leaves the
//! pool, which doubled the Redis round trips of a chat (docs/performance.md).
//! Here a connection is checked that way only when it was last handed out
//! more than [`VERIFY_AFTER_IDLE`] ago, and a connection is dropped when it
//! comes back instead of reused if a command on it failed at the connection
//! level or was abandoned before its answer came (the caller's timeout fired:
//! the connection may be stuck). Connections are handed out last in, first
//! out, so under light traffic the same few stay busy and skip the check.

use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, QueueMode, RecycleError, RecycleResult};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// A connection last handed out longer ago than this is pinged before it is
/// handed out again.
pub const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(2);

pub type Pool = managed::Pool<Manager>;
pub type PoolError = managed::PoolError<RedisError>;

/// A multiplexed connection that remembers failing at the connection level.
pub struct Connection {
    inner: redis::aio::MultiplexedConnection,
    /// Set while a command is in flight and kept if it fails at the
    /// connection level; a command dropped mid-flight leaves it set.
    broken: bool,
}

impl Connection {
    fn note<T>(&mut self, result: &Result<T, RedisError>) {
        self.broken = match result {
            Ok(_) => false,
            Err(e) => e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_timeout(),
        };
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.broken = true;
            let result = self.inner.req_packed_command(cmd).await;
            self.note(&result);
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
            self.broken = true;
            let result = self.inner.req_packed_commands(cmd, offset, count).await;
            self.note(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

pub struct Manager {
    inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = RedisError;

    async fn create(&self) -> Result<Connection, RedisError> {
        Ok(Connection {
            inner: managed::Manager::create(&self.inner).await?,
            broken: false,
        })
    }

    async fn recycle(&self, conn: &mut Connection, metrics: &Metrics) -> RecycleResult<RedisError> {
        if conn.broken {
            return Err(RecycleError::message(
                "a command on the connection failed or was abandoned",
            ));
        }
        if metrics.last_used() < VERIFY_AFTER_IDLE {
            return Ok(());
        }
        managed::Manager::recycle(&self.inner, &mut conn.inner, metrics).await
    }
}

/// A pool whose every wait is bounded by `timeout`. Connections are made on
/// first use and remade after Redis comes back, so this succeeds while Redis
/// is down.
pub fn pool(url: &str, timeout: Duration) -> anyhow::Result<Pool> {
    let manager = Manager {
        inner: deadpool_redis::Manager::new(url)?,
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
