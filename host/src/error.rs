//! The one error type of the HTTP boundary and its mapping to responses.
//! Every error body is JSON `{ "status": "error", "message": ... }`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// One problem with one request field.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid request format")]
    InvalidRequest(Vec<FieldError>),
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden { message: String, agent_id: String },
    #[error("{reason}")]
    PolicyDenied { policy: String, reason: String },
    #[error("Too many requests, please try again later")]
    RateLimited {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("This endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("The request took too long")]
    Timeout,
    #[error("Internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::PolicyDenied { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) | ApiError::PayloadTooLarge { .. } => "error_validation",
            ApiError::Unauthorized(_) => "error_auth",
            ApiError::Forbidden { .. } => "error_forbidden",
            ApiError::PolicyDenied { .. } => "error_policy",
            ApiError::RateLimited { .. } => "error_rate_limit",
            ApiError::NotFound(_) => "error_not_found",
            ApiError::MethodNotAllowed => "error_method",
            ApiError::Upstream(_) => "error_upstream",
            ApiError::Unavailable(_) => "error_unavailable",
            ApiError::Timeout => "error_timeout",
            ApiError::Internal(_) => "error_internal",
        }
    }

    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        ApiError::InvalidRequest(vec![FieldError::new(field, problem)])
    }

    pub fn body(&self) -> Value {
        let mut body = json!({ "status": "error", "message": self.to_string() });
        match self {
            ApiError::InvalidRequest(errors) => body["errors"] = json!(errors),
            ApiError::Forbidden { agent_id, .. } => body["agentId"] = json!(agent_id),
            ApiError::PolicyDenied { policy, .. } => body["policy"] = json!(policy),
            ApiError::RateLimited { reset_secs, .. } => body["retryAfter"] = json!(reset_secs),
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            // The detail is for operators, never for the client.
            tracing::error!(detail = %detail, "internal error");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited {
            limit,
            remaining,
            reset_secs,
        } = self
        {
            let h = response.headers_mut();
            let num = |n: u64| HeaderValue::from_str(&n.to_string()).expect("digits");
            h.insert(header::RETRY_AFTER, num(reset_secs.max(1)));
            h.insert("ratelimit-limit", num(limit as u64));
            h.insert("ratelimit-remaining", num(remaining as u64));
            h.insert("ratelimit-reset", num(reset_secs));
        }
        response
    }
}
