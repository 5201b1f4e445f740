//! The HTTP surface: routes, request ids, CORS, body and rate limits, load
//! shedding, and the chat contract's request parsing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;
use crate::agent::Turn;
use crate::error::{ApiError, FieldError};
use crate::identity::Caller;
use crate::sessions::{Conversation, Owner, StoreError};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_PROMPT_CHARS: usize = 10_000;
const MAX_AGENT_ID_CHARS: usize = 100;

/// The request id of this request (taken from a sane `X-Request-ID` or new).
#[derive(Clone)]
pub struct RequestId(pub Arc<str>);

fn valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::new_v4().to_string()));
    req.extensions_mut().insert(RequestId(id.clone()));
    // Chat fills in who and which conversation once it knows.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        agent_id = tracing::field::Empty,
        session_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
        company_id = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

pub fn router(state: Arc<AppState>) -> Router {
    let config = &state.config;
    let origins = config.allowed_origins.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let ok = origins.iter().any(|o| o.as_bytes() == origin.as_bytes());
            if !ok {
                tracing::info!(origin = ?origin, "CORS origin not allowed");
            }
            ok
        }))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, REQUEST_ID])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));

    // Timeouts and load shedding answer from outside the chat handler, so
    // they are counted here: a chat that timed out or was shed shows in the
    // chat metrics (and the error-rate alert) like any other failed chat.
    let counted = {
        // Cloned for every request (axum clones the handler per call): one
        // reference count, not a copy of every metric handle.
        let state = state.clone();
        move |uri: Uri, e: BoxError| {
            let (metrics, agent) = (&state.metrics, &state.config.default_agent_id);
            let timeout = state.config.request_timeout;
            let (error, took) = if e.is::<tower::timeout::error::Elapsed>() {
                (ApiError::Timeout, timeout)
            } else {
                (
                    ApiError::Unavailable("The assistant is busy, please try again shortly".into()),
                    Duration::ZERO,
                )
            };
            if uri.path() == "/v1/chat" {
                metrics
                    .chat_requests
                    .with_label_values(&[error.kind(), agent])
                    .inc();
                metrics
                    .chat_duration
                    .with_label_values(&[agent, error.kind()])
                    .observe(took.as_secs_f64());
            }
            std::future::ready(error.into_response())
        }
    };
    // One limit for all of `/v1`: the semaphore is shared by every route
    // the layer is applied to (a plain concurrency limit would make one per
    // route and method).
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(counted))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .timeout(config.request_timeout);

    let mut api = Router::new()
        .route("/v1/chat", post(chat))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .layer(shed)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes));
    if let Some(per_second) = config.flood_guard_per_second() {
        let guard = GovernorConfigBuilder::default()
            .per_millisecond((1000 / per_second as u64).max(1))
            .burst_size(per_second.saturating_mul(2))
            .key_extractor(PeerIpKeyExtractor)
            .finish()
            .expect("valid flood guard quota");
        let metrics = state.metrics.clone();
        api = api.layer(GovernorLayer::new(guard).error_handler(move |_| {
            metrics.rate_limited.with_label_values(&["flood"]).inc();
            ApiError::RateLimited {
                limit: per_second,
                remaining: 0,
                reset_secs: 1,
            }
            .into_response()
        }));
    }

    let mut app = Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api);
    if config.admin_token.is_some() {
        app = app
            .route("/admin/plugins", get(admin_plugins))
            .route("/admin/plugins/reload", post(admin_reload));
    }
    app.fallback(|| async { ApiError::NotFound("No such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// A bug that panics inside a handler answers the contract's JSON 500 (with
/// CORS and request-id headers, which are added outside this layer) and is
/// logged, instead of resetting the connection with no answer.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    ApiError::Internal(format!("a handler panicked: {what}")).into_response()
}

// ---------------------------------------------------------------- health

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "status": "ok", "openaiConfigured": s.agent.model.is_some() }))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let timeout = Duration::from_secs(2);
    let redis = async {
        match &s.config.redis_url {
            None => "not_configured",
            Some(_) => match tokio::time::timeout(timeout, s.agent.sessions.ping()).await {
                Ok(Ok(())) => "ok",
                _ => "error",
            },
        }
    };
    let backend = async {
        if s.backend.healthy(timeout).await {
            "ok"
        } else {
            "error"
        }
    };
    let (redis, backend) = tokio::join!(redis, backend);
    let model = if s.agent.model.is_some() {
        "ok"
    } else {
        "not_configured"
    };
    let draining = s.draining.load(Ordering::SeqCst);
    let missing = s.agent.plugins.missing_policies();
    // No model is not a reason to leave the pool: the contract's "assistant
    // is offline" answer must stay reachable behind a Service.
    let ready = !draining && redis != "error" && backend == "ok" && missing.is_empty();
    s.metrics.ready.set(i64::from(ready));
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "redis": redis, "backend": backend, "model": model,
            "plugins": s.agent.plugins.tool_defs().len(),
            "missingPolicies": missing,
            "draining": draining,
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    // Counted at scrape time from the store's expiry index: no key scans.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.agent.sessions.active()).await
    {
        s.metrics.active_conversations.set(n as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

// ---------------------------------------------------------------- chat

/// A checked `/v1/chat` body.
#[derive(Debug)]
pub struct ChatRequest {
    pub prompt: String,
    pub agent_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub session_id: Option<String>,
}

/// `[A-Za-z0-9._:-]{1,100}`, as the backend stores it in varchar(100).
pub fn valid_session_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Parses and checks a chat body, collecting every problem.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    };
    let mut errors = Vec::new();
    let prompt = match obj.remove("prompt") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("prompt", "is required"));
            String::new()
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            let chars = t.chars().count();
            if chars == 0 {
                errors.push(FieldError::new("prompt", "must not be blank"));
            } else if chars > MAX_PROMPT_CHARS {
                errors.push(FieldError::new(
                    "prompt",
                    format!("must be at most {MAX_PROMPT_CHARS} characters (got {chars})"),
                ));
            }
            t.to_string()
        }
        Some(_) => {
            errors.push(FieldError::new("prompt", "must be a string"));
            String::new()
        }
    };
    let agent_id = match obj.remove("agentId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_AGENT_ID_CHARS => {
            Some(s.trim().to_string())
        }
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "agentId",
                format!("must be at most {MAX_AGENT_ID_CHARS} characters"),
            ));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("agentId", "must be a string"));
            None
        }
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            errors.push(FieldError::new("metadata", "must be an object"));
            Map::new()
        }
    };
    // The first key present names the session, and only it is checked: a
    // proxy's own `correlationId` does not fail a request that has a good
    // `sessionId`.
    let chosen = ["sessionId", "conversationId", "correlationId", "threadId"]
        .into_iter()
        .find_map(|key| match metadata.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some((key, v)),
        });
    let session_id = match chosen {
        None => None,
        Some((_, Value::String(s))) if valid_session_id(s) => Some(s.clone()),
        Some((key, v)) => {
            let problem = if v.is_string() {
                "must be 1 to 100 characters of letters, digits, '.', '_', ':' or '-'"
            } else {
                "must be a string"
            };
            errors.push(FieldError::new(format!("metadata.{key}"), problem));
            None
        }
    };
    if errors.is_empty() {
        Ok(ChatRequest {
            prompt,
            agent_id,
            metadata,
            session_id,
        })
    } else {
        Err(ApiError::InvalidRequest(errors))
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn body_or_413(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::invalid("body", e.body_text())
        }
    })
}

/// A chat's answer, written straight from the turn's output (no `Value`
/// tree in between).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatAnswer<'a> {
    agent_id: &'a str,
    drafts: &'a [crate::agent::Draft],
    message: &'static str,
    messages: [AssistantMessage<'a>; 1],
    session_id: &'a str,
    status: &'static str,
    tool_calls: &'a [crate::agent::ToolCallRecord],
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    content: &'a str,
    role: &'static str,
}

async fn chat(
    State(s): State<Arc<AppState>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let default_agent = s.config.default_agent_id.clone();
    let mut agent_label = default_agent.clone();
    let result = async {
        if s.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable(
                "The assistant is shutting down, please retry".into(),
            ));
        }
        // The token first (local checks only): a forged or expired one is
        // refused before the body is even parsed.
        let token = s.identity.verify(authorization(&headers))?;
        let body = body_or_413(body, s.config.body_limit_bytes)?;
        let req = parse_chat(&body)?;
        let agent_id = req.agent_id.clone().unwrap_or(default_agent.clone());
        if agent_id != default_agent {
            agent_label = "other".into();
        }
        let caller = s.identity.caller(token, &agent_id, &request_id).await?;
        let session_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // A session id the host has just minted names nothing stored yet:
        // only a session id the client sent is loaded, with the count.
        let owner = Owner {
            company_id: caller.user.company_id,
            user_id: caller.user.id,
        };
        let load = req
            .session_id
            .is_some()
            .then_some((owner, session_id.as_str()));
        let stored = limit(&s, &caller, peer, load).await?;
        let span = tracing::Span::current();
        span.record("agent_id", agent_id.as_str());
        span.record("session_id", session_id.as_str());
        span.record("user_id", caller.user.id);
        span.record("company_id", caller.user.company_id);
        tracing::info!(prompt_chars = req.prompt.chars().count(), "chat");
        tracing::debug!(prompt = %req.prompt, "chat prompt");
        let out = s
            .agent
            .run(Turn {
                caller: &caller,
                prompt: req.prompt,
                metadata: Value::Object(req.metadata),
                session_id: &session_id,
                stored,
                agent_id: &agent_id,
                request_id: &request_id,
            })
            .await?;
        Ok((agent_id, session_id, out))
    }
    .await;
    let elapsed = started.elapsed();
    let status = match &result {
        Ok(_) => "success",
        Err(e) => e.kind(),
    };
    s.metrics
        .chat_requests
        .with_label_values(&[status, &agent_label])
        .inc();
    s.metrics
        .chat_duration
        .with_label_values(&[&agent_label, status])
        .observe(elapsed.as_secs_f64());
    match result {
        Ok((agent_id, session_id, out)) => {
            s.metrics
                .host_overhead
                .observe(elapsed.saturating_sub(out.upstream_time).as_secs_f64());
            let mut response = Json(ChatAnswer {
                agent_id: &agent_id,
                drafts: &out.drafts,
                message: "Agent response generated",
                messages: [AssistantMessage {
                    content: &out.answer,
                    role: "assistant",
                }],
                session_id: &session_id,
                status: "success",
                tool_calls: &out.tool_calls,
            })
            .into_response();
            if out.degraded {
                response.headers_mut().insert(
                    "x-agent-degraded",
                    HeaderValue::from_static("session-store-unavailable"),
                );
            }
            response
        }
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(status = e.status().as_u16(), error = %e, "chat failed");
            } else {
                tracing::info!(status = e.status().as_u16(), error = %e, "chat refused");
            }
            e.into_response()
        }
    }
}

/// Counts the chat against its user's limit (its peer's, for a token
/// without a user id) and, if it is allowed, loads the stored conversation
/// `load` names in the same step (none when `load` is `None`).
async fn limit(
    s: &AppState,
    caller: &Caller,
    peer: SocketAddr,
    load: Option<(Owner, &str)>,
) -> Result<Result<Option<Conversation>, StoreError>, ApiError> {
    let key = if caller.user.id > 0 {
        format!("user:{}:{}", caller.user.company_id, caller.user.id)
    } else {
        format!("ip:{}", peer.ip())
    };
    let (d, loaded) = s
        .limiter
        .hit_and_load(&key, s.agent.sessions.as_ref(), load)
        .await;
    if d.allowed {
        Ok(loaded.unwrap_or(Ok(None)))
    } else {
        s.metrics.rate_limited.with_label_values(&["user"]).inc();
        Err(ApiError::RateLimited {
            limit: d.limit,
            remaining: d.remaining,
            reset_secs: d.reset_secs,
        })
    }
}

// ---------------------------------------------------------------- sessions

async fn session_owner(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    request_id: &str,
) -> Result<Owner, ApiError> {
    let caller = s
        .identity
        .authenticate(
            authorization(headers),
            &s.config.default_agent_id,
            request_id,
        )
        .await?;
    if !valid_session_id(id) {
        return Err(ApiError::invalid(
            "sessionId",
            "must be 1 to 100 characters of letters, digits, '.', '_', ':' or '-'",
        ));
    }
    Ok(Owner {
        company_id: caller.user.company_id,
        user_id: caller.user.id,
    })
}

/// An id that does not decode (not UTF-8 once percent-decoded) becomes an
/// empty one, which `session_owner` refuses with the contract's JSON 400
/// after the token check, instead of axum's plain-text rejection.
fn session_path_id(id: Result<Path<String>, PathRejection>) -> String {
    id.map(|Path(id)| id).unwrap_or_default()
}

fn store_error(e: crate::sessions::StoreError) -> ApiError {
    tracing::warn!(error = %e, "session store failed");
    ApiError::Unavailable("Conversation storage is unavailable, please retry".into())
}

async fn get_session(
    State(s): State<Arc<AppState>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = session_path_id(id);
    let owner = session_owner(&s, &headers, &id, &request_id).await?;
    match s
        .agent
        .sessions
        .load(owner, &id)
        .await
        .map_err(store_error)?
    {
        None => Err(ApiError::NotFound("No such conversation".into())),
        Some(c) => Ok(Json(json!({
            "status": "success",
            "sessionId": c.session_id,
            "messages": c.messages,
            "updatedAt": c.updated_at,
            "expiresAt": c.expires_at,
        }))),
    }
}

async fn delete_session(
    State(s): State<Arc<AppState>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = session_path_id(id);
    let owner = session_owner(&s, &headers, &id, &request_id).await?;
    if s.agent
        .sessions
        .delete(owner, &id)
        .await
        .map_err(store_error)?
    {
        Ok(Json(
            json!({ "status": "success", "sessionId": id, "deleted": true }),
        ))
    } else {
        Err(ApiError::NotFound("No such conversation".into()))
    }
}

// ---------------------------------------------------------------- admin

fn check_admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    use sha2::{Digest, Sha256};
    let expected = s.config.admin_token.as_deref().unwrap_or_default();
    let given = crate::identity::bearer_token(authorization(headers))?;
    // Comparing digests keeps the comparison time independent of the token.
    if Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("Invalid admin token".into()))
    }
}

async fn admin_plugins(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&s, &headers)?;
    Ok(Json(s.agent.plugins.describe_all()))
}

async fn admin_reload(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&s, &headers)?;
    let report = s.agent.plugins.reload().await;
    Ok(Json(json!({ "status": "success", "report": report })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_answer_is_the_contract_json() {
        let calls = vec![crate::agent::ToolCallRecord {
            tool_name: "view_work_orders".into(),
            arguments: json!({ "limit": 5 }),
            result_count: Some(2),
            status: "success",
            error: None,
            outcome: None,
            session_id: "s-1".into(),
        }];
        let answer = ChatAnswer {
            agent_id: "default-agent",
            drafts: &[],
            message: "Agent response generated",
            messages: [AssistantMessage {
                content: "Two \"open\" ones",
                role: "assistant",
            }],
            session_id: "s-1",
            status: "success",
            tool_calls: &calls,
        };
        let contract = json!({
            "status": "success",
            "message": "Agent response generated",
            "agentId": "default-agent",
            "sessionId": "s-1",
            "messages": [{ "role": "assistant", "content": "Two \"open\" ones" }],
            "toolCalls": calls,
            "drafts": [],
        });
        let written: Value = serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
        assert_eq!(written, contract);
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_the_json_500_not_a_reset() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("kaboom at a private detail")
        }
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let resp = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["message"], "Internal error", "no detail for the client");
    }

    fn problems(body: &str) -> Vec<String> {
        match parse_chat(body.as_bytes()) {
            Err(ApiError::InvalidRequest(errs)) => errs.into_iter().map(|e| e.field).collect(),
            other => panic!("expected 400 for {body}: {other:?}"),
        }
    }

    #[test]
    fn chat_body_rules() {
        assert_eq!(problems("{"), vec!["body"]);
        assert_eq!(problems("[]"), vec!["body"]);
        assert_eq!(problems("{}"), vec!["prompt"]);
        assert_eq!(problems(r#"{"prompt":"   "}"#), vec!["prompt"]);
        assert_eq!(problems(r#"{"prompt":5}"#), vec!["prompt"]);
        assert_eq!(
            problems(r#"{"prompt":"hi","metadata":"x"}"#),
            vec!["metadata"]
        );
        assert_eq!(problems(r#"{"prompt":"hi","agentId":3}"#), vec!["agentId"]);
        assert_eq!(
            problems(r#"{"prompt":"hi","metadata":{"sessionId":"a b"}}"#),
            vec!["metadata.sessionId"]
        );
        let long = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(10_001));
        assert_eq!(problems(&long), vec!["prompt"]);
        let ok = format!(r#"{{"prompt":"  {}  "}}"#, "é".repeat(10_000));
        assert_eq!(
            parse_chat(ok.as_bytes()).unwrap().prompt.chars().count(),
            10_000
        );
    }

    #[test]
    fn only_the_chosen_session_key_is_checked() {
        let r = parse_chat(
            br#"{"prompt":"hi","metadata":{"sessionId":"s-1","correlationId":"bad id","threadId":7}}"#,
        )
        .unwrap();
        assert_eq!(r.session_id.as_deref(), Some("s-1"));
        // A null key is skipped; the next present one is chosen and checked.
        assert_eq!(
            problems(r#"{"prompt":"hi","metadata":{"sessionId":null,"conversationId":"a b"}}"#),
            vec!["metadata.conversationId"]
        );
        let r = parse_chat(br#"{"prompt":"hi","metadata":null}"#).unwrap();
        assert!(r.session_id.is_none() && r.metadata.is_empty());
    }

    #[test]
    fn session_id_precedence() {
        let r = parse_chat(br#"{"prompt":"hi","metadata":{"correlationId":"c-1","threadId":"t"}}"#)
            .unwrap();
        assert_eq!(r.session_id.as_deref(), Some("c-1"));
        let r =
            parse_chat(br#"{"prompt":"hi","metadata":{"sessionId":"s:1","conversationId":"c"}}"#)
                .unwrap();
        assert_eq!(r.session_id.as_deref(), Some("s:1"));
        assert!(
            parse_chat(br#"{"prompt":"hi","user":{"x":1}}"#)
                .unwrap()
                .session_id
                .is_none()
        );
    }
}
