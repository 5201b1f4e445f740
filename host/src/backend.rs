//! The Atlas backend client: identity lookups, readiness, and the requests
//! plugins make through the `backend` host function.

use std::time::Duration;

use http::{HeaderValue, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::outbound::{self, Outbound, SendError};
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
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry a user or password (calls carry the user's Authorization)".into(),
        );
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
    /// The base URL without its trailing `/`, checked once; a call's URL is
    /// this with its encoded path appended.
    base: String,
    http: Outbound,
    timeout: Duration,
    metrics: Metrics,
}

impl Backend {
    pub fn new(base: &str, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let base = base_url(base).map_err(|problem| anyhow::anyhow!("API_BASE {problem}"))?;
        let http = Outbound::new(
            base.as_str(),
            timeout.min(Duration::from_secs(5)),
            Duration::from_secs(60),
        )?;
        Ok(Backend(std::sync::Arc::new(Inner {
            base: base.as_str().trim_end_matches('/').to_owned(),
            http,
            timeout,
            metrics,
        })))
    }

    /// The base URL with `path` (already encoded, from `encode_path` or a
    /// constant; no query) appended to its path.
    fn url(&self, path: &str) -> Result<http::Uri, CallError> {
        let mut url = String::with_capacity(self.0.base.len() + path.len());
        url.push_str(&self.0.base);
        url.push_str(path);
        http::Uri::try_from(url).map_err(|e| CallError::Unavailable(format!("bad path ({e})")))
    }

    /// Sends a request on the user's behalf. `path` is already encoded
    /// (see [`encode_path`]).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
        authorization: &str,
        request_id: &str,
    ) -> Result<(u16, String), CallError> {
        let result = match self.request(method, path, body, authorization, request_id) {
            Ok(request) => self.send_bounded(request).await,
            Err(e) => Err(e),
        };
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

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
        authorization: &str,
        request_id: &str,
    ) -> Result<http::Request<reqwest::Body>, CallError> {
        let value = |name: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                CallError::Unavailable(format!("the {name} value is not a valid header"))
            })
        };
        let mut headers = crate::telemetry::trace_headers();
        headers.insert(
            header::AUTHORIZATION,
            value("Authorization", authorization)?,
        );
        headers.insert("x-request-id", value("request id", request_id)?);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let body = match body {
            Some(body) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                reqwest::Body::from(body)
            }
            None => reqwest::Body::from(""),
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = self.url(path)?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    async fn send_bounded(
        &self,
        request: http::Request<reqwest::Body>,
    ) -> Result<(u16, String), CallError> {
        let response = outbound::send(&self.0.http, request, self.0.timeout, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                SendError::Timeout | SendError::ConnectTimeout => CallError::Timeout,
                SendError::TooLarge(_) => CallError::TooLarge,
                e @ (SendError::Connect(_) | SendError::Failed(_)) => {
                    // The plugin gets the kind, the log the cause.
                    tracing::warn!(cause = e.cause(), "backend call failed: {e}");
                    CallError::Unavailable(e.to_string())
                }
            })?;
        let status = response.status().as_u16();
        let body = response.into_body();
        // Valid UTF-8 (the usual case) is kept without a copy.
        let text = String::from_utf8(Vec::from(body))
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
                http::Method::GET,
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
        let Ok(uri) = self.url("/actuator/health") else {
            return false;
        };
        let request = http::Request::get(uri).body(reqwest::Body::from(""));
        match request {
            Ok(request) => matches!(
                outbound::send(&self.0.http, request, timeout, MAX_RESPONSE_BYTES).await,
                Ok(r) if r.status().is_success()
            ),
            Err(_) => false,
        }
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
                .unwrap()
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
            "http://user:secret@x.test/",
        ] {
            let e = Backend::new(bad, Duration::from_secs(1), Metrics::new()).err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.to_string().starts_with("API_BASE")),
                "{bad}: {e:?}"
            );
        }
    }

    /// Calls end in a status and body, or in the error that says why not,
    /// each counted under its label.
    #[tokio::test]
    async fn calls_are_bounded_and_counted() {
        use tokio::io::AsyncWriteExt;

        // Answers `/big` with more than the bound, in chunks without a
        // declared length, `/slow` never, and the rest with an echo of the
        // request line and headers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let Some(head) = outbound::read_head(&mut s).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&head).into_owned();
                    if head.starts_with("GET /big ") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await;
                        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
                        for _ in 0..5 {
                            if s.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    } else if head.starts_with("GET /slow ") {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    } else {
                        let answer = format!(
                            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n{head}",
                            head.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        let metrics = Metrics::new();
        let backend = Backend::new(
            &format!("http://{addr}/"),
            Duration::from_millis(300),
            metrics.clone(),
        )
        .unwrap();
        let call = |method, path: &'static str, body: Option<&str>| {
            let backend = backend.clone();
            let body = body.map(str::to_owned);
            async move { backend.call(method, path, body, "Bearer t", "req-1").await }
        };

        let (status, echo) = call(http::Method::POST, "/api/x%2Fy", Some("{}"))
            .await
            .unwrap();
        assert_eq!(status, 201);
        let echo = echo.to_ascii_lowercase();
        assert!(echo.starts_with("post /api/x%2fy http/1.1\r\n"), "{echo}");
        for header in [
            "authorization: bearer t",
            "x-request-id: req-1",
            "accept: application/json",
            "content-type: application/json",
            "content-length: 2",
            &format!("host: {addr}"),
        ] {
            assert!(
                echo.contains(&format!("\r\n{header}\r\n")),
                "{header}: {echo}"
            );
        }
        // Over the bound, read with time to spare (debug builds are slow).
        let patient = Backend::new(
            &format!("http://{addr}/"),
            Duration::from_secs(30),
            metrics.clone(),
        )
        .unwrap();
        assert!(matches!(
            patient
                .call(http::Method::GET, "/big", None, "Bearer t", "req-1")
                .await,
            Err(CallError::TooLarge)
        ));
        assert!(matches!(
            call(http::Method::GET, "/slow", None).await,
            Err(CallError::Timeout)
        ));
        let bad = backend
            .call(http::Method::GET, "/x", None, "Bearer \n", "req-1")
            .await;
        assert!(matches!(bad, Err(CallError::Unavailable(m)) if m.contains("Authorization")));
        // Nothing listening: the plugin is told the kind of failure, not
        // its system-level cause.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let down = Backend::new(
            &format!("http://{}", closed.local_addr().unwrap()),
            Duration::from_secs(5),
            metrics.clone(),
        )
        .unwrap();
        let refused = down
            .call(http::Method::GET, "/x", None, "Bearer t", "req-1")
            .await;
        assert!(
            matches!(&refused, Err(CallError::Unavailable(m)) if m == "could not connect"),
            "{refused:?}"
        );
        let count = |label| metrics.backend_requests.with_label_values(&[label]).get();
        assert_eq!(
            [
                count("201"),
                count("too_large"),
                count("timeout"),
                count("unavailable")
            ],
            [1, 1, 1, 2]
        );
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
