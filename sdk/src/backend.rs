//! Raw calls to the Atlas backend through the host.
//!
//! The host joins the path segments onto `API_BASE` (percent-encoding each
//! one, so a segment can never add `/`, `?` or climb with `..`), adds the
//! user's `Authorization`, and refuses methods and paths the operator did not
//! grant to this plugin. Natively (in tests) the calls go to the mock backend
//! of [`crate::testing::Harness`].

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

/// HTTP methods a plugin may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The upper-case name, e.g. `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Parse a method name, case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Get, Self::Post, Self::Put, Self::Patch, Self::Delete]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend's answer (any status; deciding what is an error is the caller's job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response body as text.
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// Why the host did not get an answer from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The operator did not grant this method and path to the plugin.
    NotGranted(String),
    /// The path is malformed (empty, `.` or `..` segments, too long).
    InvalidPath(String),
    /// The backend did not answer within the host's timeout.
    Timeout,
    /// The backend could not be reached.
    Unavailable(String),
    /// The response was larger than the host accepts.
    TooLarge,
    /// The request body could not be encoded as JSON; nothing was sent.
    InvalidBody(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) => write!(f, "not granted to this plugin: {m}"),
            Self::InvalidPath(m) => write!(f, "invalid backend path: {m}"),
            Self::Timeout => f.write_str("the backend did not answer in time"),
            Self::Unavailable(m) => write!(f, "the backend is unavailable: {m}"),
            Self::TooLarge => f.write_str("the backend response was too large"),
            Self::InvalidBody(m) => write!(f, "the request body could not be encoded: {m}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Send `method` to the path made of `path` segments, with an optional JSON body.
///
/// ```ignore
/// let id = "WO000101";
/// let res = backend::request(Method::Post, &["api", "agent", "tools", "work-orders", id, "details"], Some(&json!({})))?;
/// ```
pub fn request(
    method: Method,
    path: &[&str],
    body: Option<&serde_json::Value>,
) -> Result<Response, BackendError> {
    send(method, path, body.map(|b| b.to_string()))
}

/// `GET` the path.
pub fn get(path: &[&str]) -> Result<Response, BackendError> {
    send(Method::Get, path, None)
}

/// `POST` `body` (serialised as JSON) to the path.
pub fn post<B: Serialize + ?Sized>(path: &[&str], body: &B) -> Result<Response, BackendError> {
    let body = serde_json::to_string(body).map_err(|e| BackendError::InvalidBody(e.to_string()))?;
    send(Method::Post, path, Some(body))
}

/// Send a request with a body that is already text.
pub fn send(method: Method, path: &[&str], body: Option<String>) -> Result<Response, BackendError> {
    imp::send(method, path, body)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{BackendError, Method, Response};
    use crate::bindings::tool::atlas::agent::backend as wit;

    pub(super) fn send(
        method: Method,
        path: &[&str],
        body: Option<String>,
    ) -> Result<Response, BackendError> {
        let method = match method {
            Method::Get => wit::Method::Get,
            Method::Post => wit::Method::Post,
            Method::Put => wit::Method::Put,
            Method::Patch => wit::Method::Patch,
            Method::Delete => wit::Method::Delete,
        };
        let segments: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        match wit::request(method, &segments, body.as_deref()) {
            Ok(r) => Ok(Response {
                status: r.status,
                body: r.body,
            }),
            Err(wit::BackendError::NotGranted(m)) => Err(BackendError::NotGranted(m)),
            Err(wit::BackendError::InvalidPath(m)) => Err(BackendError::InvalidPath(m)),
            Err(wit::BackendError::Timeout) => Err(BackendError::Timeout),
            Err(wit::BackendError::Unavailable(m)) => Err(BackendError::Unavailable(m)),
            Err(wit::BackendError::TooLarge) => Err(BackendError::TooLarge),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{BackendError, Method, Response};

    pub(super) fn send(
        method: Method,
        path: &[&str],
        body: Option<String>,
    ) -> Result<Response, BackendError> {
        crate::testing::mock_send(method, path, body)
    }
}
