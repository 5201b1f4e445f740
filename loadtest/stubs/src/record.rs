//! Request recording shared by both stubs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

/// One request as the stub received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as sent (still percent-encoded), so tests can
    /// see what a client really put on the wire.
    pub path: String,
    /// Lower-case names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl RecordedRequest {
    /// A header by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Largest body the stubs buffer; bigger ones are recorded empty and refused.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// Requests a stub keeps: the latest this many. A load run sends hundreds of
/// thousands, and keeping them all grew the model stub past 700 MB in a
/// 20-second run; tests look at a few.
pub const RECORD_MAX: usize = 10_000;

#[derive(Clone, Default)]
pub(crate) struct RequestLog(Arc<Mutex<VecDeque<RecordedRequest>>>);

impl RequestLog {
    pub(crate) fn push(&self, r: RecordedRequest) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == RECORD_MAX {
            log.pop_front();
        }
        log.push_back(r);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Buffers the request, records it, and hands back its parts and body.
/// `None` body means the body was too large (or broken) to read.
pub(crate) async fn capture(log: &RequestLog, req: Request) -> (Parts, Option<Bytes>) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.ok();
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let body = bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    tracing::debug!(method = %parts.method, path = %path, "stub request");
    log.push(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path,
        headers,
        body,
    });
    (parts, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> RecordedRequest {
        RecordedRequest {
            method: "GET".into(),
            path: format!("/{n}"),
            headers: BTreeMap::new(),
            body: String::new(),
        }
    }

    #[test]
    fn the_log_keeps_the_latest_requests_only() {
        let log = RequestLog::default();
        for n in 0..RECORD_MAX + 5 {
            log.push(request(n));
        }
        assert_eq!(log.len(), RECORD_MAX);
        let all = log.all();
        assert_eq!(all[0].path, "/5", "the oldest five were dropped");
        assert_eq!(all[RECORD_MAX - 1].path, format!("/{}", RECORD_MAX + 4));
    }
}
