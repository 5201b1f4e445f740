//! The Atlas backend client: identity lookups, readiness, and the requests
//! plugins make through the `backend` host function.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::telemetry::Metrics;

/// Bytes of a backend answer the host accepts for a plugin.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
pub(crate) const MAX_SEGMENTS: usize = 16;
const MAX_SEGMENT_LEN: usize = 512;

/// Everything but the RFC 3986 unreserved characters is encoded, so a
/// segment can never contribute `/`, `?`, `#` or `%` of its own.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("segment {0} is empty, '.' or '..'")]
    DotOrEmpty(usize),
    #[error("the path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("segment {0} is longer than {MAX_SEGMENT_LEN} bytes")]
    TooLong(usize),
}

/// Joins raw segments into an absolute, percent-encoded path.
pub fn encode_path<S: AsRef<str>>(segments: &[S]) -> Result<String, PathError> {
    if segments.is_empty() {
        return Err(PathError::Empty);
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(PathError::TooManySegments);
    }
    let mut path = String::new();
    for (i, segment) in segments.iter().enumerate() {
        let s = segment.as_ref();
        if s.is_empty() || s == "." || s == ".." {
            return Err(PathError::DotOrEmpty(i));
        }
        if s.len() > MAX_SEGMENT_LEN {
            return Err(PathError::TooLong(i));
        }
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
    }
    Ok(path)
}

/// The backend's base URL, or what is wrong with it (without the value,
/// which may carry credentials): http or https, a host, no query or
/// fragment. A path is kept as a prefix of every call's path.
pub fn base_url(base: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(base).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment".into());
    }
    Ok(url)
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the backend did not answer in time")]
    Timeout,
    #[error("the backend could not be reached: {0}")]
    Unavailable(String),
    #[error("the backend answer was too large")]
    TooLarge,
}

/// Cheap to clone (one reference count): every plugin call's store holds
/// one.
#[derive(Clone)]
pub struct Backend(std::sync::Arc<Inner>);

struct Inner {
    /// Parsed once; a call's URL is this with its path appended.
    base_url: reqwest::Url,
    http: reqwest::Client,
    metrics: Metrics,
}

/// A `reqwest` client builder with what the host's outbound clients (the
/// backend's and the model's) share. reqwest's default retry policy clones
/// every request (headers, URI, body) in case it must replay it, but only
/// replays HTTP/2 refusals, and this build speaks HTTP/1.1 only (reqwest's
/// `http2` feature is off): the policy is switched off, and its clone with
/// it. Model calls are retried by async-openai (429, 5xx, failed connects).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().retry(reqwest::retry::never().max_retries_per_request(0))
}

impl Backend {
    pub fn new(base: &str, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let http = client_builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let base_url = base_url(base).map_err(|problem| anyhow::anyhow!("API_BASE {problem}"))?;
        Ok(Backend(std::sync::Arc::new(Inner {
            base_url,
            http,
            metrics,
        })))
    }

    /// The base URL with `path` (already encoded, from `encode_path` or a
    /// constant; no query) appended to its path: only the path is parsed,
    /// where a URL string would have its scheme and host parsed again per
    /// call.
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.0.base_url.clone();
        let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    /// Sends a request on the user's behalf. `path` is already encoded
    /// (see [`encode_path`]).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        authorization: &str,
        request_id: &str,
    ) -> Result<(u16, String), CallError> {
        let mut req = self
            .0
            .http
            .request(method, self.url(path))
            .headers(crate::telemetry::trace_headers())
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header("x-request-id", request_id)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let result = self.send_bounded(req).await;
        let mut code = itoa::Buffer::new();
        let label = match &result {
            Ok((status, _)) => code.format(*status),
            Err(CallError::Timeout) => "timeout",
            Err(CallError::Unavailable(_)) => "unavailable",
            Err(CallError::TooLarge) => "too_large",
        };
        self.0
            .metrics
            .backend_requests
            .with_label_values(&[label])
            .inc();
        result
    }

    async fn send_bounded(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), CallError> {
        let map = |e: reqwest::Error| {
            if e.is_timeout() {
                CallError::Timeout
            } else {
                CallError::Unavailable(e.without_url().to_string())
            }
        };
        let mut response = req.send().await.map_err(map)?;
        let status = response.status().as_u16();
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
        {
            return Err(CallError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(map)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(CallError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        // Valid UTF-8 (the usual case) is kept without a copy.
        let text = String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((status, text))
    }

    /// `GET /auth/me` with the caller's Authorization.
    pub async fn auth_me(
        &self,
        authorization: &str,
        request_id: &str,
    ) -> Result<(u16, Option<Value>), CallError> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                "/auth/me",
                None,
                authorization,
                request_id,
            )
            .await?;
        Ok((status, serde_json::from_str(&body).ok()))
    }

    /// `GET /actuator/health`: true when the backend answers 2xx.
    pub async fn healthy(&self, timeout: Duration) -> bool {
        let req = self
            .0
            .http
            .get(self.url("/actuator/health"))
            .timeout(timeout);
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_urls_append_the_encoded_path_to_the_base() {
        let url = |base: &str, path: &str| {
            Backend::new(base, Duration::from_secs(1), Metrics::new())
                .unwrap()
                .url(path)
                .to_string()
        };
        assert_eq!(
            url("http://api:8080", "/auth/me"),
            "http://api:8080/auth/me"
        );
        assert_eq!(
            url("http://api:8080/", "/auth/me"),
            "http://api:8080/auth/me"
        );
        assert_eq!(
            url("https://x.test/atlas/", "/api/a%2Fb/%3Fq%23f"),
            "https://x.test/atlas/api/a%2Fb/%3Fq%23f"
        );
        for bad in [
            "api:8080",
            "not a url",
            "http://x.test/?a=1",
            "http://x.test/#f",
            "mailto:a@b.test",
            "file:///srv/atlas",
        ] {
            let e = Backend::new(bad, Duration::from_secs(1), Metrics::new()).err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.to_string().starts_with("API_BASE")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn hostile_segments_stay_inside_one_segment() {
        let p = |id: &str| encode_path(&["api", "agent", "tools", "work-orders", id, "details"]);
        assert_eq!(
            p("WO000101").unwrap(),
            "/api/agent/tools/work-orders/WO000101/details"
        );
        assert_eq!(
            p("../../auth/me").unwrap(),
            "/api/agent/tools/work-orders/..%2F..%2Fauth%2Fme/details"
        );
        assert_eq!(
            p("1?x=1").unwrap(),
            "/api/agent/tools/work-orders/1%3Fx%3D1/details"
        );
        assert_eq!(
            p("1#").unwrap(),
            "/api/agent/tools/work-orders/1%23/details"
        );
        assert_eq!(
            p("%2e%2e/x").unwrap(),
            "/api/agent/tools/work-orders/%252e%252e%2Fx/details"
        );
        assert_eq!(p("..").unwrap_err(), PathError::DotOrEmpty(4));
        assert_eq!(p(".").unwrap_err(), PathError::DotOrEmpty(4));
        assert_eq!(p("").unwrap_err(), PathError::DotOrEmpty(4));
    }

    #[test]
    fn path_bounds() {
        let empty: [&str; 0] = [];
        assert_eq!(encode_path(&empty).unwrap_err(), PathError::Empty);
        assert_eq!(
            encode_path(&["a"; 17]).unwrap_err(),
            PathError::TooManySegments
        );
        let long = "x".repeat(600);
        assert_eq!(encode_path(&[long]).unwrap_err(), PathError::TooLong(0));
    }
}
