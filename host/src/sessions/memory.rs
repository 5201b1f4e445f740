//! The embedded, process-local store: same rules as Redis, one process only.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Bounds, Conversation, Owner, SessionStore, StoreError, now_ms};
use crate::llm::Message;

struct Entry {
    messages: VecDeque<(Message, usize)>,
    bytes: usize,
    updated_at: u64,
    expires_at: u64,
}

pub struct MemoryStore {
    bounds: Bounds,
    map: Mutex<HashMap<(Owner, String), Entry>>,
    writes: AtomicU64,
}

impl MemoryStore {
    pub fn new(bounds: Bounds) -> Self {
        MemoryStore {
            bounds,
            map: Mutex::new(HashMap::new()),
            writes: AtomicU64::new(0),
        }
    }

    fn sweep(map: &mut HashMap<(Owner, String), Entry>, now: u64) {
        map.retain(|_, e| e.expires_at > now);
    }
}

fn size_of(m: &Message) -> usize {
    serde_json::to_vec(m).map(|v| v.len()).unwrap_or(0)
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, owner: Owner, id: &str) -> Result<Option<Conversation>, StoreError> {
        let now = now_ms();
        let map = self.map.lock().expect("session map lock");
        Ok(map
            .get(&(owner, id.to_string()))
            .filter(|e| e.expires_at > now)
            .map(|e| Conversation {
                session_id: id.to_string(),
                messages: e.messages.iter().map(|(m, _)| m.clone()).collect(),
                updated_at: e.updated_at,
                expires_at: e.expires_at,
            }))
    }

    async fn append(&self, owner: Owner, id: &str, messages: &[Message]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut map = self.map.lock().expect("session map lock");
        // Occasional sweep keeps abandoned conversations from piling up.
        if self.writes.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            Self::sweep(&mut map, now);
        }
        let entry = map.entry((owner, id.to_string())).or_insert(Entry {
            messages: VecDeque::new(),
            bytes: 0,
            updated_at: now,
            expires_at: 0,
        });
        if entry.expires_at <= now {
            entry.messages.clear();
            entry.bytes = 0;
        }
        for m in messages {
            let n = size_of(m);
            entry.bytes += n;
            entry.messages.push_back((m.clone(), n));
        }
        while entry.messages.len() > self.bounds.max_messages
            || (entry.bytes > self.bounds.max_bytes && entry.messages.len() > 1)
        {
            if let Some((_, n)) = entry.messages.pop_front() {
                entry.bytes -= n;
            }
        }
        entry.updated_at = now;
        entry.expires_at = now + self.bounds.ttl_ms;
        Ok(())
    }

    async fn delete(&self, owner: Owner, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut map = self.map.lock().expect("session map lock");
        Ok(map
            .remove(&(owner, id.to_string()))
            .is_some_and(|e| e.expires_at > now))
    }

    async fn active(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut map = self.map.lock().expect("session map lock");
        Self::sweep(&mut map, now);
        Ok(map.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Owner = Owner {
        company_id: 1,
        user_id: 1,
    };
    const B: Owner = Owner {
        company_id: 1,
        user_id: 2,
    };

    fn user(s: &str) -> Message {
        Message::User { content: s.into() }
    }

    fn store(ttl_ms: u64, max_messages: usize, max_bytes: usize) -> MemoryStore {
        MemoryStore::new(Bounds {
            ttl_ms,
            max_messages,
            max_bytes,
        })
    }

    #[tokio::test]
    async fn owners_are_isolated() {
        let s = store(60_000, 10, 1 << 20);
        s.append(A, "s1", &[user("hello")]).await.unwrap();
        assert!(s.load(B, "s1").await.unwrap().is_none());
        assert!(!s.delete(B, "s1").await.unwrap());
        assert_eq!(
            s.load(A, "s1").await.unwrap().unwrap().messages,
            vec![user("hello")]
        );
    }

    #[tokio::test]
    async fn expires_and_trims() {
        let s = store(30, 3, 1 << 20);
        for i in 0..5 {
            s.append(A, "s", &[user(&i.to_string())]).await.unwrap();
        }
        let c = s.load(A, "s").await.unwrap().unwrap();
        assert_eq!(c.messages, vec![user("2"), user("3"), user("4")]);
        assert_eq!(s.active().await.unwrap(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert!(s.load(A, "s").await.unwrap().is_none());
        assert_eq!(s.active().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn byte_bound_drops_oldest() {
        let s = store(60_000, 100, 100);
        s.append(A, "s", &[user(&"a".repeat(60))]).await.unwrap();
        s.append(A, "s", &[user(&"b".repeat(60))]).await.unwrap();
        let c = s.load(A, "s").await.unwrap().unwrap();
        assert_eq!(c.messages, vec![user(&"b".repeat(60))]);
    }
}
