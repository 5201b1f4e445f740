//! Conversations: a `SessionStore` trait with an in-memory store (the
//! embedded default) and a Redis store (`REDIS_URL`).
//!
//! A conversation is owned by one user of one company: the owner is part of
//! the key, so a session id sent by someone else names a different (empty)
//! conversation and can neither read nor erase the owner's.

mod memory;
mod redis_pool;
mod redis_store;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::llm::Message;

pub use memory::MemoryStore;
pub use redis_pool::{Pool as RedisPool, connection as redis_connection, pool as redis_pool};
pub use redis_store::{Count, RedisStore};

/// The user a conversation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub company_id: i64,
    pub user_id: i64,
}

/// A stored conversation.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub session_id: String,
    pub messages: Vec<Message>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store timed out")]
    Timeout,
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("stored conversation is unreadable: {0}")]
    Corrupt(String),
}

/// Bounds on what one conversation may hold.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub ttl_ms: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// The owner's conversation with this id, if it exists and has not expired.
    async fn load(&self, owner: Owner, id: &str) -> Result<Option<Conversation>, StoreError>;

    /// Appends one turn's messages atomically (they stay together, in order,
    /// whatever else appends concurrently), refreshes the expiry, and trims the
    /// oldest messages beyond the bounds.
    async fn append(&self, owner: Owner, id: &str, messages: &[Message]) -> Result<(), StoreError>;

    /// Erases the owner's conversation; false when there was none.
    async fn delete(&self, owner: Owner, id: &str) -> Result<bool, StoreError>;

    /// How many conversations have not expired.
    async fn active(&self) -> Result<u64, StoreError>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The Redis store behind this one, if it is one: the rate limiter then
    /// takes a chat's count in the same round trip as its load
    /// ([`RedisStore::count_and_load`]).
    fn redis(&self) -> Option<&RedisStore> {
        None
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The part of a history that may be sent to the model: the newest
/// `max` messages, starting at a user message so no tool result is cut off
/// from the call that asked for it.
pub fn model_window(messages: &[Message], max: usize) -> &[Message] {
    let start = messages.len().saturating_sub(max);
    let window = &messages[start..];
    match window
        .iter()
        .position(|m| matches!(m, Message::User { .. }))
    {
        Some(first_user) => &window[first_user..],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Message {
        Message::User { content: s.into() }
    }
    fn answer(s: &str) -> Message {
        Message::Assistant {
            content: Some(s.into()),
            tool_calls: vec![],
        }
    }
    fn tool(id: &str) -> Message {
        Message::Tool {
            tool_call_id: id.into(),
            name: "t".into(),
            content: "{}".into(),
        }
    }

    #[test]
    fn window_starts_at_a_user_message() {
        let h = vec![
            user("a"),
            answer("b"),
            tool("1"),
            answer("c"),
            user("d"),
            answer("e"),
        ];
        assert_eq!(model_window(&h, 10), &h[..]);
        assert_eq!(model_window(&h, 4), &h[4..]);
        assert_eq!(model_window(&h, 2), &h[4..]);
        assert!(model_window(&h, 1).is_empty());
    }
}
