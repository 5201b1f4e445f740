//! An OpenAI-compatible Chat Completions stub with a deterministic script.
//!
//! The answer depends only on the last user message (the prompt) and what
//! follows it in the conversation:
//!
//! * tool results after the prompt: a final answer listing them
//!   (`Here is what I found:`), except under `#loop`;
//! * directives, one per line of the prompt: `#call <tool> <json>`, `#loop`,
//!   `#fail <status> <n>`, `#sleep <ms>`, `#recall`, `#system`;
//! * otherwise keywords: "complete" + a `WO…` code, a leading "create",
//!   "work order", "asset", "who am i"; anything else is echoed.
//!
//! Tools are only called when the request offers them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::record::{RecordedRequest, RequestLog, capture};
use crate::server::Server;

/// Longest `#sleep` honoured, so a typo cannot hang a test run forever.
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// Tool results are cut to this many characters in the final answer.
const RESULT_CUT: usize = 1500;
/// Path of the control endpoint listing recorded requests (not itself recorded).
pub const REQUESTS_PATH: &str = "/__requests";

#[derive(Clone, Debug, Default)]
pub struct OpenAiConfig {
    /// Added to every answer.
    pub latency: Duration,
    /// When set, `Authorization: Bearer <key>` is required (else 401).
    pub api_key: Option<String>,
    /// Every n-th chat completion request answers 500.
    pub fail_every: Option<u32>,
}

/// Handle over the stub's shared state; clones see the same state.
#[derive(Clone)]
pub struct OpenAiStub {
    inner: Arc<Inner>,
}

struct Inner {
    config: OpenAiConfig,
    log: RequestLog,
    completions: AtomicU64,
    /// `#fail` counters, per prompt text.
    failures: Mutex<HashMap<String, u32>>,
}

impl OpenAiStub {
    pub fn new(config: OpenAiConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                log: RequestLog::default(),
                completions: AtomicU64::new(0),
                failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Binds `127.0.0.1:0` and serves a fresh stub in a background task.
    pub async fn spawn(config: OpenAiConfig) -> anyhow::Result<SpawnedOpenAi> {
        Self::new(config)
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Serves this stub (its current state) on `addr`.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SpawnedOpenAi> {
        let server = Server::start(addr, self.router()).await?;
        Ok(SpawnedOpenAi {
            stub: self.clone(),
            addr: server.addr(),
            server,
        })
    }

    /// The requests received so far (the latest `record::RECORD_MAX`; not the
    /// `/__requests` control endpoint), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.all()
    }

    pub fn clear_requests(&self) {
        self.inner.log.clear();
    }
}

/// A stub being served. Dereferences to its [`OpenAiStub`].
pub struct SpawnedOpenAi {
    pub stub: OpenAiStub,
    pub addr: SocketAddr,
    server: Server,
}

impl SpawnedOpenAi {
    /// `http://127.0.0.1:PORT/v1`, the shape of `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Stops serving (connections are refused) but keeps the state.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    /// Serves again on the same address with the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let router = self.stub.router();
        self.server.restart(router).await
    }

    pub async fn shutdown(mut self) {
        self.server.stop().await;
    }
}

impl std::ops::Deref for SpawnedOpenAi {
    type Target = OpenAiStub;
    fn deref(&self) -> &OpenAiStub {
        &self.stub
    }
}

// ---------------------------------------------------------------------------
// HTTP

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        axum::Json(json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        })),
    )
        .into_response()
}

fn error_for_status(status: StatusCode) -> Response {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    let message = format!(
        "Stub failure: {}",
        status.canonical_reason().unwrap_or("error")
    );
    error(status, &message, kind, code)
}

async fn handle(State(stub): State<OpenAiStub>, req: Request) -> Response {
    if req.uri().path() == REQUESTS_PATH {
        return match *req.method() {
            Method::GET => axum::Json(stub.requests()).into_response(),
            Method::DELETE => {
                stub.clear_requests();
                StatusCode::NO_CONTENT.into_response()
            }
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        };
    }
    let (parts, body) = capture(&stub.inner.log, req).await;
    let config = &stub.inner.config;
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let path = parts.uri.path();
    let is_chat = matches!(path, "/v1/chat/completions" | "/chat/completions");
    let is_models = matches!(path, "/v1/models" | "/models");
    if !(is_chat && parts.method == Method::POST || is_models && parts.method == Method::GET) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Unknown request URL: {} {}", parts.method, path),
            "invalid_request_error",
            Some("unknown_url"),
        );
    }
    if !authorized(config, &parts.headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    if is_models {
        return axum::Json(json!({
            "object": "list",
            "data": [{ "id": "stub-model", "object": "model", "created": 0, "owned_by": "atlas-stubs" }],
        }))
        .into_response();
    }
    let n = stub.inner.completions.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(every) = config.fail_every.filter(|e| *e > 0)
        && n % u64::from(every) == 0
    {
        return error_for_status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let Some(body) = body else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "invalid_request_error",
            None,
        );
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            );
        }
    };
    let Some(conversation) = Conversation::parse(&request) else {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' must be a non-empty array of messages.",
            "invalid_request_error",
            None,
        );
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "The stub does not support streaming.",
            "invalid_request_error",
            None,
        );
    }

    let script = Script::parse(&conversation.prompt);
    if let Some(sleep) = script.sleep {
        tokio::time::sleep(sleep.min(MAX_SLEEP)).await;
    }
    if let Some((status, times)) = script.fail {
        let mut failures = stub
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let seen = failures.entry(conversation.prompt.clone()).or_insert(0);
        if *seen < times {
            *seen += 1;
            return error_for_status(status);
        }
    }
    let reply = decide(&conversation, &script);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("stub-model");
    axum::Json(completion(model, body.len(), reply)).into_response()
}

fn authorized(config: &OpenAiConfig, headers: &HeaderMap) -> bool {
    let Some(key) = &config.api_key else {
        return true;
    };
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == key)
}

// ---------------------------------------------------------------------------
// Conversation and script

struct Message {
    role: String,
    content: String,
    /// (id, name) of the tool calls an assistant message made.
    tool_calls: Vec<(String, String)>,
    tool_call_id: Option<String>,
}

struct Conversation {
    messages: Vec<Message>,
    /// Index of the last user message, if any.
    last_user: Option<usize>,
    prompt: String,
    offered: HashSet<String>,
}

/// Plain string content, or the text parts of a content array.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl Conversation {
    fn parse(request: &Value) -> Option<Self> {
        let raw = request.get("messages")?.as_array()?;
        if raw.is_empty() {
            return None;
        }
        let mut messages = Vec::with_capacity(raw.len());
        for m in raw {
            let role = m.get("role")?.as_str()?.to_owned();
            let tool_calls = m
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|c| {
                            let id = c.get("id")?.as_str()?.to_owned();
                            let name = c.get("function")?.get("name")?.as_str()?.to_owned();
                            Some((id, name))
                        })
                        .collect()
                })
                .unwrap_or_default();
            messages.push(Message {
                role,
                content: content_text(m.get("content")),
                tool_calls,
                tool_call_id: m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        let last_user = messages.iter().rposition(|m| m.role == "user");
        let prompt = last_user
            .map(|i| messages[i].content.clone())
            .unwrap_or_default();
        // `tool_choice: "none"` means no tool may be called.
        let tools_disabled = request.get("tool_choice").and_then(Value::as_str) == Some("none");
        let offered = if tools_disabled {
            HashSet::new()
        } else {
            request
                .get("tools")
                .and_then(Value::as_array)
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(|t| t.get("function")?.get("name")?.as_str())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Self {
            messages,
            last_user,
            prompt,
            offered,
        })
    }

    fn after_prompt(&self) -> &[Message] {
        match self.last_user {
            Some(i) => &self.messages[i + 1..],
            None => &self.messages,
        }
    }

    fn tool_name(&self, call_id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .find(|(id, _)| id == call_id)
            .map(|(_, name)| name.as_str())
    }
}

#[derive(Default)]
struct Script {
    calls: Vec<Result<(String, Value), String>>,
    looping: bool,
    fail: Option<(StatusCode, u32)>,
    sleep: Option<Duration>,
    recall: bool,
    system: bool,
}

/// `line` starts with `#name` followed by whitespace or nothing; returns the rest.
fn directive<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

impl Script {
    fn parse(prompt: &str) -> Self {
        let mut script = Script::default();
        for line in prompt.lines().map(str::trim) {
            if let Some(rest) = directive(line, "#call") {
                let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let args = if args.trim().is_empty() {
                    "{}"
                } else {
                    args.trim()
                };
                script
                    .calls
                    .push(match serde_json::from_str::<Value>(args) {
                        Ok(v @ Value::Object(_)) if !name.is_empty() => Ok((name.to_owned(), v)),
                        _ => Err(format!("Invalid #call directive: {line}")),
                    });
            } else if directive(line, "#loop").is_some() {
                script.looping = true;
            } else if let Some(rest) = directive(line, "#fail") {
                let mut words = rest.split_whitespace();
                let status = words
                    .next()
                    .and_then(|s| s.parse::<u16>().ok())
                    .and_then(|s| StatusCode::from_u16(s).ok());
                let times = words.next().map_or(Some(1), |n| n.parse::<u32>().ok());
                if let (Some(status), Some(times)) = (status, times) {
                    script.fail = Some((status, times));
                }
            } else if let Some(rest) = directive(line, "#sleep") {
                if let Ok(ms) = rest.parse::<u64>() {
                    script.sleep = Some(Duration::from_millis(ms));
                }
            } else if directive(line, "#recall").is_some() {
                script.recall = true;
            } else if directive(line, "#system").is_some() {
                script.system = true;
            }
        }
        script
    }
}

#[derive(Debug, PartialEq)]
enum Reply {
    Text(String),
    Tools(Vec<(String, Value)>),
}

fn decide(conv: &Conversation, script: &Script) -> Reply {
    if script.looping {
        return call_if_offered(conv, vec![("get_user_context".to_owned(), json!({}))]);
    }
    let results: Vec<&Message> = conv
        .after_prompt()
        .iter()
        .filter(|m| m.role == "tool")
        .collect();
    if !results.is_empty() {
        let lines: Vec<String> = results
            .iter()
            .map(|m| {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| conv.tool_name(id))
                    .unwrap_or("unknown_tool");
                let cut: String = m.content.chars().take(RESULT_CUT).collect();
                format!("- {name}: {cut}")
            })
            .collect();
        return Reply::Text(format!("Here is what I found:\n\n{}", lines.join("\n")));
    }
    if !script.calls.is_empty() {
        let mut calls = Vec::new();
        for call in &script.calls {
            match call {
                Ok(call) => calls.push(call.clone()),
                Err(problem) => return Reply::Text(problem.clone()),
            }
        }
        return call_if_offered(conv, calls);
    }
    if script.recall {
        let earlier: Vec<&str> = match conv.last_user {
            Some(last) => conv.messages[..last]
                .iter()
                .filter(|m| m.role == "user")
                .map(|m| m.content.as_str())
                .collect(),
            None => Vec::new(),
        };
        let said = if earlier.is_empty() {
            "nothing".to_owned()
        } else {
            earlier.join(" | ")
        };
        return Reply::Text(format!("Earlier you said: {said}"));
    }
    if script.system {
        let system: Vec<&str> = conv
            .messages
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(|m| m.content.as_str())
            .collect();
        return Reply::Text(if system.is_empty() {
            "No system message.".to_owned()
        } else {
            system.join("\n\n")
        });
    }
    keywords(conv)
}

fn call_if_offered(conv: &Conversation, calls: Vec<(String, Value)>) -> Reply {
    match calls.iter().find(|(name, _)| !conv.offered.contains(name)) {
        Some((name, _)) => Reply::Text(format!("The tool {name} is not available.")),
        None => Reply::Tools(calls),
    }
}

fn keywords(conv: &Conversation) -> Reply {
    let prompt = conv.prompt.trim();
    let lower = prompt.to_lowercase();
    let call = |name: &str, args: Value| call_if_offered(conv, vec![(name.to_owned(), args)]);
    if lower.contains("complete")
        && let Some(code) = work_order_code(prompt)
    {
        return call(
            "prepare_work_order_completion_draft",
            json!({ "workOrderId": code, "summary": format!("Complete work order {code}") }),
        );
    }
    if let Some(rest) = strip_word(prompt, "create") {
        return call(
            "prepare_work_order_creation_draft",
            json!({ "title": creation_title(rest) }),
        );
    }
    if lower.contains("work order") {
        return call("view_work_orders", json!({ "limit": 5 }));
    }
    if lower.contains("asset") {
        return call("view_assets", json!({ "limit": 5 }));
    }
    if lower.contains("who am i") {
        return call("get_user_context", json!({}));
    }
    Reply::Text(format!("You said: {}", conv.prompt))
}

/// `s` without a leading whole word `word` (ASCII case-insensitive), trimmed.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    (head.eq_ignore_ascii_case(word) && !rest.starts_with(|c: char| c.is_alphanumeric()))
        .then(|| rest.trim_start())
}

/// "create a work order to fix the pump" -> "fix the pump".
fn creation_title(rest: &str) -> String {
    let mut rest = rest;
    for prefix in ["a work order", "work order"] {
        if let Some(r) = strip_word(rest, prefix) {
            rest = r;
            break;
        }
    }
    if let Some(r) = rest.strip_prefix(':') {
        rest = r.trim_start();
    } else if let Some(r) = strip_word(rest, "to") {
        rest = r;
    }
    rest.trim().to_owned()
}

/// The first `WO<digits>` token in `s`, upper-cased.
fn work_order_code(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    for i in 0..bytes.len().saturating_sub(2) {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if starts_word
            && bytes[i].eq_ignore_ascii_case(&b'w')
            && bytes[i + 1].eq_ignore_ascii_case(&b'o')
        {
            let digits: String = s[i + 2..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let ends_word = !s[i + 2 + digits.len()..].starts_with(|c: char| c.is_alphanumeric());
            if !digits.is_empty() && ends_word {
                return Some(format!("WO{digits}"));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Response

/// Deterministic token estimate: about four characters a token.
fn tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

fn completion(model: &str, request_len: usize, reply: Reply) -> Value {
    let (message, finish_reason, produced) = match reply {
        Reply::Text(text) => {
            let len = text.chars().count();
            (
                json!({ "role": "assistant", "content": text, "refusal": null, "annotations": [] }),
                "stop",
                len,
            )
        }
        Reply::Tools(calls) => {
            let mut produced = 0;
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(name, args)| {
                    let arguments = args.to_string();
                    produced += name.len() + arguments.len();
                    json!({
                        "id": format!("call_{}", uuid::Uuid::new_v4().simple()),
                        "type": "function",
                        "function": { "name": name, "arguments": arguments },
                    })
                })
                .collect();
            (
                json!({ "role": "assistant", "content": null, "refusal": null, "annotations": [], "tool_calls": calls }),
                "tool_calls",
                produced,
            )
        }
    };
    let prompt_tokens = tokens(request_len);
    let completion_tokens = tokens(produced);
    json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": crate::time::unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason,
            "logprobs": null,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens.saturating_add(completion_tokens),
        },
        "system_fingerprint": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_work_order_codes() {
        assert_eq!(
            work_order_code("complete wo000101 now"),
            Some("WO000101".into())
        );
        assert_eq!(
            work_order_code("Complete WO000102."),
            Some("WO000102".into())
        );
        assert_eq!(work_order_code("two000101"), None);
        assert_eq!(work_order_code("WO"), None);
        assert_eq!(work_order_code("WO12ab"), None);
    }

    #[test]
    fn creation_titles() {
        let title = |p: &str| creation_title(strip_word(p, "create").unwrap());
        assert_eq!(title("Create a work order to fix the pump"), "fix the pump");
        assert_eq!(title("create work order: Fix the pump"), "Fix the pump");
        assert_eq!(
            title("create a work order: tomorrow's check"),
            "tomorrow's check"
        );
        assert_eq!(title("Create tomorrow's check"), "tomorrow's check");
        assert_eq!(strip_word("created stuff", "create"), None);
    }

    #[test]
    fn directives_need_a_word_boundary() {
        let s = Script::parse("#looping\n#sleep 20\n#fail 503\n#call a\n#call b {\"x\":1}");
        assert!(!s.looping);
        assert_eq!(s.sleep, Some(Duration::from_millis(20)));
        assert_eq!(s.fail, Some((StatusCode::SERVICE_UNAVAILABLE, 1)));
        assert_eq!(
            s.calls,
            vec![
                Ok(("a".into(), json!({}))),
                Ok(("b".into(), json!({"x": 1})))
            ]
        );
    }
}
