//! The model behind a trait, and its OpenAI Chat Completions implementation
//! (async-openai; any OpenAI-compatible server through `OPENAI_BASE_URL`).

use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::{Config as ClientConfig, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::middleware::retry::OpenAIRetryLayer;
use async_openai::traits::RequestOptionsBuilder;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Config;
use crate::outbound::{self, Outbound, SendError};
use crate::telemetry::Metrics;

/// One tool call the model asked for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (a JSON object, as text).
    pub arguments: String,
}

/// One message of a conversation, as stored and as sent to the model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    User {
        content: String,
    },
    Assistant {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(default, rename = "toolCalls", skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        #[serde(rename = "toolCallId")]
        tool_call_id: String,
        name: String,
        content: String,
    },
}

/// A tool as offered to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// The tools offered to the model, sorted by name. Built once per plugin
/// set; the OpenAI wire form (eight JSON schemas) is serialised on first
/// use and then reused by every model call until the plugins change.
#[derive(Debug, Default)]
pub struct ToolSet {
    defs: Vec<ToolDef>,
    wire: OnceLock<Box<RawValue>>,
}

impl ToolSet {
    pub fn new(mut defs: Vec<ToolDef>) -> Self {
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        ToolSet {
            defs,
            wire: OnceLock::new(),
        }
    }

    pub fn defs(&self) -> &[ToolDef] {
        &self.defs
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// `[{"type":"function","function":{...}}, ...]`, serialised once.
    fn openai(&self) -> &RawValue {
        self.wire.get_or_init(|| {
            let tools: Vec<WireTool<'_>> = self
                .defs
                .iter()
                .map(|t| WireTool {
                    kind: "function",
                    function: WireFunctionDef {
                        name: &t.name,
                        description: &t.description,
                        parameters: &t.parameters,
                        strict: is_strict(&t.parameters),
                    },
                })
                .collect();
            serde_json::value::to_raw_value(&tools).expect("tool schemas serialise")
        })
    }
}

pub struct ModelRequest<'a> {
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a ToolSet,
    pub request_id: &'a str,
}

#[derive(Debug, Default)]
pub struct ModelReply {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model did not answer in time")]
    Timeout,
    #[error("the model service answered {status}")]
    Status { status: u16 },
    #[error("the model service could not be reached")]
    Unreachable,
    #[error("the model service sent an unreadable answer")]
    Invalid,
}

#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// The model name, for metrics.
    fn name(&self) -> &str;
    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError>;
}

/// OpenAI Chat Completions through async-openai, with per-attempt timeouts
/// and bounded retries (429 and 5xx from async-openai's retry layer, failed
/// connects from [`Transport`], both with exponential backoff).
pub struct OpenAiModel {
    client: Client<PreparedConfig>,
    model: String,
    timeout: Duration,
    metrics: Metrics,
    /// This model's series of the metrics every call touches, looked up once.
    series: ModelSeries,
}

struct ModelSeries {
    duration: prometheus::Histogram,
    success: prometheus::IntCounter,
    prompt_tokens: prometheus::IntCounter,
    completion_tokens: prometheus::IntCounter,
}

/// async-openai's `OpenAIConfig` with its headers and the chat URL made
/// once: the plain config formats the `Authorization` value, parses every
/// header and formats the URL again for each request.
struct PreparedConfig {
    inner: OpenAIConfig,
    headers: reqwest::header::HeaderMap,
    chat_url: String,
}

const CHAT_PATH: &str = "/chat/completions";

impl PreparedConfig {
    fn new(inner: OpenAIConfig) -> Self {
        PreparedConfig {
            headers: inner.headers(),
            chat_url: inner.url(CHAT_PATH),
            inner,
        }
    }
}

impl ClientConfig for PreparedConfig {
    fn headers(&self) -> reqwest::header::HeaderMap {
        self.headers.clone()
    }
    fn url(&self, path: &str) -> String {
        if path == CHAT_PATH {
            self.chat_url.clone()
        } else {
            self.inner.url(path)
        }
    }
    fn query(&self) -> Vec<(&str, &str)> {
        self.inner.query()
    }
    fn api_base(&self) -> &str {
        self.inner.api_base()
    }
    fn api_key(&self) -> &secrecy::SecretString {
        self.inner.api_key()
    }
}

impl OpenAiModel {
    pub fn new(config: &Config, api_key: &str, metrics: Metrics) -> anyhow::Result<Self> {
        let transport = Transport {
            // Under the attempt's time, so a stalled connect ends as a
            // connect timeout (retried), not as the attempt's.
            http: Outbound::new(
                &config.openai_base_url,
                (config.openai_timeout / 2).min(Duration::from_secs(10)),
                Duration::from_secs(90),
            )?,
            timeout: config.openai_timeout,
            connect_retries: config.openai_max_retries,
        };
        let service = tower::ServiceBuilder::new()
            .layer(OpenAIRetryLayer::new(config.openai_max_retries))
            .service(transport);
        let client = Client::with_config(PreparedConfig::new(
            // Every value explicit and checked by `Config`: `new()` alone
            // would read the organisation and project ids from the
            // environment unchecked.
            OpenAIConfig::new()
                .with_api_key(api_key)
                .with_api_base(&config.openai_base_url)
                .with_org_id(&config.openai_org_id)
                .with_project_id(&config.openai_project_id),
        ))
        // async-openai builds each request with its own reqwest client;
        // `Transport` sends it.
        .with_http_service(service);
        let model = config.openai_model.as_str();
        let series = ModelSeries {
            duration: metrics.openai_duration.with_label_values(&[model]),
            success: metrics.openai_calls.with_label_values(&[model, "success"]),
            prompt_tokens: metrics.openai_tokens.with_label_values(&[model, "prompt"]),
            completion_tokens: metrics
                .openai_tokens
                .with_label_values(&[model, "completion"]),
        };
        Ok(OpenAiModel {
            client,
            model: config.openai_model.clone(),
            timeout: config.openai_timeout * (config.openai_max_retries as u32 + 1)
                + Duration::from_secs(10),
            metrics,
            series,
        })
    }
}

/// Bytes of a model answer the host reads; a Chat Completions answer with
/// tool calls is a few kilobytes.
const MAX_MODEL_RESPONSE_BYTES: usize = 8 << 20;

/// async-openai's transport: sends the request it builds through
/// [`outbound`] and reads the answer whole within `timeout`, each attempt.
/// async-openai's retry layer above it replays 429 and 5xx answers, but
/// recognises a failed connect only in reqwest's error type; so a connect
/// that fails or times out (nothing sent) is tried again here, up to
/// `connect_retries` times, with a backoff like the layer's (100 ms,
/// doubling, at most 8 s). The two budgets nest: each attempt of the layer
/// may connect up to `connect_retries + 1` times. The whole call stays
/// under the model's overall deadline.
#[derive(Clone)]
struct Transport {
    http: Outbound,
    timeout: Duration,
    connect_retries: usize,
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<reqwest::Response, OpenAIError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                let request = factory.build().await?;
                let url = request.url().clone();
                let request = http::Request::try_from(request).map_err(OpenAIError::Reqwest)?;
                match outbound::send(&this.http, request, this.timeout, MAX_MODEL_RESPONSE_BYTES)
                    .await
                {
                    Ok(answer) => return Ok(reqwest_response(answer, url)),
                    Err(e) if e.before_sending() && attempt < this.connect_retries => {
                        let backoff = Duration::from_millis(100 << attempt.min(7));
                        tokio::time::sleep(backoff.min(Duration::from_secs(8))).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(OpenAIError::Boxed(Box::new(e))),
                }
            }
        })
    }
}

/// The answer as the `reqwest::Response` async-openai reads, carrying the
/// request's URL: without one, reqwest's conversion parses a placeholder URL
/// for every answer.
fn reqwest_response(answer: http::Response<bytes::Bytes>, url: reqwest::Url) -> reqwest::Response {
    use reqwest::ResponseBuilderExt;
    let (mut parts, body) = answer.into_parts();
    let (tagged, ()) = http::Response::builder()
        .url(url)
        .body(())
        .expect("a response with only a URL builds")
        .into_parts();
    parts.extensions.extend(tagged.extensions);
    reqwest::Response::from(http::Response::from_parts(parts, body))
}

/// The request body, borrowing everything: the conversation is not copied
/// and the tool list is the cached serialisation.
fn wire_request<'a>(model: &'a str, request: &ModelRequest<'a>) -> WireRequest<'a> {
    let mut messages: Vec<WireMessage<'a>> = Vec::with_capacity(request.messages.len() + 1);
    messages.push(WireMessage::System {
        content: request.system,
    });
    for m in request.messages {
        messages.push(match m {
            Message::User { content } => WireMessage::User { content },
            Message::Assistant {
                content,
                tool_calls,
            } => WireMessage::Assistant {
                content: content.as_deref(),
                tool_calls: tool_calls
                    .iter()
                    .map(|c| WireToolCall {
                        id: &c.id,
                        kind: "function",
                        function: WireFunctionCall {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            },
            Message::Tool {
                tool_call_id,
                content,
                ..
            } => WireMessage::Tool {
                tool_call_id,
                content,
            },
        });
    }
    let has_tools = !request.tools.is_empty();
    WireRequest {
        model,
        messages,
        tools: has_tools.then(|| request.tools.openai()),
        parallel_tool_calls: has_tools.then_some(true),
    }
}

// The Chat Completions wire format: only the fields this host sends and
// reads. Unknown response fields are ignored.

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDef<'a>,
}

#[derive(Serialize)]
struct WireFunctionDef<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
    strict: bool,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireReply,
}

#[derive(Deserialize)]
struct WireReply {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireReplyToolCall>>,
}

#[derive(Deserialize)]
struct WireReplyToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<WireReplyFunction>,
}

#[derive(Deserialize)]
struct WireReplyFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Strict mode only works when the schema was written for it.
fn is_strict(schema: &serde_json::Value) -> bool {
    schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false))
}

#[async_trait::async_trait]
impl ChatModel for OpenAiModel {
    fn name(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let body = wire_request(&self.model, &request);
        let started = Instant::now();
        let chat = self
            .client
            .chat()
            .header("x-request-id", request.request_id)
            .map_err(|_| ModelError::Invalid)?
            .headers(crate::telemetry::trace_headers());
        let call = chat.create_byot::<_, WireResponse>(&body);
        let result = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ModelError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(e)),
        };
        self.series
            .duration
            .observe(started.elapsed().as_secs_f64());
        let failure = match &result {
            Ok(_) => None,
            Err(ModelError::Status { status }) => Some(status.to_string()),
            Err(ModelError::Timeout) => Some("timeout".into()),
            Err(ModelError::Unreachable) => Some("unreachable".into()),
            Err(ModelError::Invalid) => Some("invalid".into()),
        };
        match failure {
            None => self.series.success.inc(),
            Some(status) => self
                .metrics
                .openai_calls
                .with_label_values(&[&self.model, &status])
                .inc(),
        }
        let response = result?;
        let mut reply = ModelReply::default();
        if let Some(usage) = &response.usage {
            reply.prompt_tokens = usage.prompt_tokens;
            reply.completion_tokens = usage.completion_tokens;
            self.series.prompt_tokens.inc_by(usage.prompt_tokens as u64);
            self.series
                .completion_tokens
                .inc_by(usage.completion_tokens as u64);
        }
        let choice = response
            .choices
            .into_iter()
            .next()
            .ok_or(ModelError::Invalid)?;
        reply.content = choice.message.content.filter(|c| !c.trim().is_empty());
        for call in choice.message.tool_calls.unwrap_or_default() {
            // Only function calls exist in Chat Completions tool use.
            if call.kind.as_deref().is_some_and(|k| k != "function") {
                continue;
            }
            if let Some(f) = call.function {
                reply.tool_calls.push(ToolCall {
                    id: call.id,
                    name: f.name,
                    arguments: f.arguments,
                });
            }
        }
        Ok(reply)
    }
}

fn classify(e: OpenAIError) -> ModelError {
    match e {
        OpenAIError::ApiError(api) => ModelError::Status {
            status: api.status_code.as_u16(),
        },
        OpenAIError::Reqwest(r) if r.is_timeout() => ModelError::Timeout,
        OpenAIError::Reqwest(r) => match r.status() {
            Some(s) => ModelError::Status { status: s.as_u16() },
            None => ModelError::Unreachable,
        },
        OpenAIError::Boxed(e) => match e.downcast_ref::<SendError>() {
            Some(SendError::Timeout | SendError::ConnectTimeout) => ModelError::Timeout,
            Some(SendError::TooLarge(_)) => ModelError::Invalid,
            Some(e @ (SendError::Connect(_) | SendError::Failed(_))) => {
                tracing::warn!(cause = e.cause(), "model call failed: {e}");
                ModelError::Unreachable
            }
            None => {
                tracing::warn!(error = %e, "model call failed");
                ModelError::Unreachable
            }
        },
        OpenAIError::JSONDeserialize(..) => ModelError::Invalid,
        other => {
            tracing::warn!(error = %other, "model call failed");
            ModelError::Unreachable
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_request_speaks_chat_completions() {
        let tools = ToolSet::new(vec![
            ToolDef {
                name: "view_work_orders".into(),
                description: "List work orders".into(),
                parameters: json!({"type": "object", "properties": {}, "required": [],
                                   "additionalProperties": false}),
            },
            ToolDef {
                name: "legacy".into(),
                description: "Loose schema".into(),
                parameters: json!({"type": "object"}),
            },
        ]);
        let messages = vec![
            Message::User {
                content: "open work orders?".into(),
            },
            Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "view_work_orders".into(),
                    arguments: "{}".into(),
                }],
            },
            Message::Tool {
                tool_call_id: "call_1".into(),
                name: "view_work_orders".into(),
                content: "[]".into(),
            },
            Message::Assistant {
                content: Some("None open.".into()),
                tool_calls: vec![],
            },
        ];
        let request = ModelRequest {
            system: "be brief",
            messages: &messages,
            tools: &tools,
            request_id: "r1",
        };
        let body = serde_json::to_value(wire_request("gpt-4o-mini", &request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "open work orders?"},
                    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "view_work_orders", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "[]"},
                    {"role": "assistant", "content": "None open."},
                ],
                "tools": [
                    {"type": "function", "function": {"name": "legacy",
                        "description": "Loose schema", "parameters": {"type": "object"},
                        "strict": false}},
                    {"type": "function", "function": {"name": "view_work_orders",
                        "description": "List work orders",
                        "parameters": {"type": "object", "properties": {}, "required": [],
                                       "additionalProperties": false},
                        "strict": true}},
                ],
                "parallel_tool_calls": true,
            })
        );
        // The tool list is serialised once and reused.
        assert!(std::ptr::eq(tools.openai(), tools.openai()));

        let bare = ModelRequest {
            tools: &ToolSet::default(),
            ..request
        };
        let body = serde_json::to_value(wire_request("m", &bare)).unwrap();
        assert!(body.get("tools").is_none() && body.get("parallel_tool_calls").is_none());
    }

    /// A model service that is not listening yet at the first attempt: the
    /// transport connects again (nothing was sent) and gets the answer; with
    /// no retries the connect failure is the error, classified unreachable.
    #[tokio::test]
    async fn a_failed_connect_is_tried_again() {
        use tokio::io::AsyncWriteExt;
        use tower::Service;

        // Bound but not listening: connects are refused, and the port stays
        // this test's until it listens.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let transport = |connect_retries| Transport {
            http: Outbound::Direct(
                outbound::client(Duration::from_secs(1), Duration::from_secs(1)).unwrap(),
            ),
            timeout: Duration::from_secs(2),
            connect_retries,
        };
        let url = format!("http://{addr}/v1/chat/completions");
        let factory = HttpRequestFactory::new(move || {
            let request = reqwest::Client::new().post(&url).body("{}").build();
            async move { request.map_err(OpenAIError::Reqwest) }
        });

        let refused = transport(0).call(factory.clone()).await.unwrap_err();
        assert!(
            matches!(&refused, OpenAIError::Boxed(e)
                if matches!(e.downcast_ref::<SendError>(), Some(SendError::Connect(_)))),
            "{refused:?}"
        );
        assert!(matches!(classify(refused), ModelError::Unreachable));

        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let listener = socket.listen(16).unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            outbound::read_head(&mut s).await.expect("a request head");
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .await
                .unwrap();
        });
        let answer = transport(3).call(factory).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "{}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_answer_handed_to_async_openai_keeps_its_parts_and_the_request_url() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/v1/chat/completions").unwrap();
        let answer = http::Response::builder()
            .status(429)
            .header("retry-after", "2")
            .body(bytes::Bytes::from_static(b"{\"error\":{}}"))
            .unwrap();
        let response = reqwest_response(answer, url.clone());
        assert_eq!(response.url(), &url);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.text().await.unwrap(), "{\"error\":{}}");
    }

    #[test]
    fn the_reply_keeps_function_calls_and_usage() {
        let reply: WireResponse = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "view_assets", "arguments": "{\"limit\":3}"}},
                    {"id": "c2", "type": "custom", "custom": {"name": "x", "input": ""}}
                ]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        }))
        .unwrap();
        let choice = &reply.choices[0].message;
        assert!(choice.content.is_none());
        let calls = choice.tool_calls.as_ref().unwrap();
        assert_eq!(
            calls[0].function.as_ref().unwrap().arguments,
            "{\"limit\":3}"
        );
        assert_eq!(calls[1].kind.as_deref(), Some("custom"));
        assert_eq!(reply.usage.as_ref().unwrap().prompt_tokens, 12);
    }
}
