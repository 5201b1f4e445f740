//! The tool-calling loop: history + prompt -> model -> tool calls (plugins,
//! concurrently) -> model ... -> answer, with the `toolCalls` and `drafts`
//! of the contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::llm::{ChatModel, Message, ModelError, ModelRequest, ToolCall};
use crate::plugins::{CallInfo, DraftOut, Hook, PluginHost, ToolKind, Verdict};
use crate::sessions::{Conversation, Owner, SessionStore, StoreError, model_window};
use crate::telemetry::Metrics;

/// The answer given when no model is configured.
pub const OFFLINE_ANSWER: &str = "The Atlas assistant is offline right now: no language model is configured. \
Your request was received, but I cannot answer it yet. Please try again later or contact your administrator.";

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRecord {
    pub tool_name: String,
    pub arguments: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_count: Option<u32>,
    /// `success` or `error`, the contract's two values.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a call that did not run was stopped, when a policy stopped it:
    /// `denied` or `approval_required` (`error` says which policy and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    pub session_id: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Draft {
    pub agent_session_id: String,
    pub operation_type: String,
    pub payload: Value,
    pub summary: String,
}

pub struct Turn<'a> {
    pub caller: &'a Caller,
    pub prompt: String,
    pub metadata: Value,
    pub session_id: &'a str,
    /// The conversation as loaded before the turn (with the rate-limit
    /// count, `RateLimiter::hit_and_load`); `Ok(None)` when there is none,
    /// as for a `session_id` the host minted for this turn.
    pub stored: Result<Option<Conversation>, StoreError>,
    pub agent_id: &'a str,
    pub request_id: &'a str,
}

#[derive(Debug)]
pub struct TurnOutput {
    pub answer: String,
    pub tool_calls: Vec<ToolCallRecord>,
    pub drafts: Vec<Draft>,
    /// Conversation history was unavailable (session store down).
    pub degraded: bool,
    /// Time waiting on the model and on the backend, for the overhead metric.
    pub upstream_time: Duration,
}

pub struct Agent {
    pub model: Option<Arc<dyn ChatModel>>,
    pub plugins: Arc<PluginHost>,
    pub sessions: Arc<dyn SessionStore>,
    pub metrics: Metrics,
    pub max_turns: usize,
    pub max_history_messages: usize,
    pub max_tool_results: u32,
    pub tool_result_max_bytes: usize,
}

/// Cuts text to at most `max` bytes on a character boundary, saying so.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [truncated: {} of {} bytes shown]",
        &text[..end],
        end,
        text.len()
    )
}

fn system_prompt(caller: &Caller, now: &str) -> String {
    let u = &caller.user;
    let name = if u.first_name.is_empty() {
        &u.full_name
    } else {
        &u.first_name
    };
    format!(
        "You are the Atlas maintenance copilot, an assistant inside Atlas CMMS \
(computerized maintenance management). You help maintenance teams with work orders, assets \
and their day-to-day tasks.\n\
- The user is {name} (role {role}, company {company}). Greet them by name at the start of a conversation.\n\
- Use the tools to look things up or act. Never invent work orders, assets, people, numbers or \
results: if a tool did not return it, you do not know it. If a tool fails, say so plainly and suggest a next step.\n\
- Prefer preparing drafts the user confirms over changing data directly, unless the user clearly asks for an immediate change.\n\
- Work order codes look like WO000123. Keep lists short and say when more results exist.\n\
- Answer in Markdown: short paragraphs, bullet lists, and tables for several items.\n\
- The current time is {now}.",
        role = if u.role_name.is_empty() {
            &u.role_code
        } else {
            &u.role_name
        },
        company = u.company_id,
    )
}

impl Agent {
    pub async fn run(&self, turn: Turn<'_>) -> Result<TurnOutput, ApiError> {
        let Turn {
            caller,
            mut prompt,
            metadata,
            session_id,
            stored,
            agent_id,
            request_id,
        } = turn;
        let owner = Owner {
            company_id: caller.user.company_id,
            user_id: caller.user.id,
        };
        let call = CallInfo {
            user: &caller.user,
            authorization: &caller.authorization,
            session_id,
            request_id,
            agent_id,
            max_results: self.max_tool_results,
        };

        let metadata_json = metadata.to_string();
        match self
            .plugins
            .check(
                Hook::Request {
                    prompt: &prompt,
                    metadata: &metadata_json,
                },
                &call,
            )
            .await
        {
            Verdict::Allow => {}
            Verdict::Rewrite { value, .. } => prompt = value,
            Verdict::Deny { policy, reason } | Verdict::RequireApproval { policy, reason } => {
                return Err(ApiError::PolicyDenied { policy, reason });
            }
            Verdict::Unavailable { reason, .. } => return Err(ApiError::Unavailable(reason)),
        }

        let Some(model) = self.model.clone() else {
            return Ok(TurnOutput {
                answer: OFFLINE_ANSWER.to_string(),
                tool_calls: vec![],
                drafts: vec![],
                degraded: false,
                upstream_time: Duration::ZERO,
            });
        };

        let mut degraded = false;
        let history = match stored {
            Ok(Some(c)) => c.messages,
            Ok(None) => vec![],
            Err(e) => {
                degraded = true;
                log_store_error("load", &e);
                vec![]
            }
        };
        let window = model_window(&history, self.max_history_messages.saturating_sub(1));
        let mut messages: Vec<Message> = window.to_vec();
        let first_new = messages.len();
        messages.push(Message::User {
            content: prompt.clone(),
        });

        let system = system_prompt(caller, &now_rfc3339());
        let tools = self.plugins.tool_defs();
        let mut tool_calls = Vec::new();
        let mut drafts = Vec::new();
        let mut upstream = Duration::ZERO;
        let mut answer = None;

        for _ in 0..self.max_turns {
            let started = Instant::now();
            let reply = model
                .complete(ModelRequest {
                    system: &system,
                    messages: &messages,
                    tools: &tools,
                    request_id,
                })
                .await;
            upstream += started.elapsed();
            let reply = reply.map_err(|e| {
                tracing::warn!(error = %e, "model call failed");
                ApiError::Upstream(match e {
                    ModelError::Timeout => "The AI model did not answer in time".into(),
                    _ => "The AI model is unavailable, please try again later".into(),
                })
            })?;
            if reply.tool_calls.is_empty() {
                answer = Some(reply.content.unwrap_or_default());
                break;
            }
            messages.push(Message::Assistant {
                content: reply.content.clone(),
                tool_calls: reply.tool_calls.clone(),
            });
            let results =
                futures::future::join_all(reply.tool_calls.iter().map(|c| self.run_tool(c, &call)))
                    .await;
            for (c, r) in reply.tool_calls.iter().zip(results) {
                upstream += r.backend_time;
                if let Some(record) = r.record {
                    tool_calls.push(record);
                }
                if let Some(d) = r.draft {
                    drafts.push(Draft {
                        agent_session_id: session_id.to_string(),
                        operation_type: d.operation_type,
                        payload: d.payload,
                        summary: d.summary,
                    });
                }
                messages.push(Message::Tool {
                    tool_call_id: c.id.clone(),
                    name: c.name.clone(),
                    content: truncate(&r.content, self.tool_result_max_bytes),
                });
            }
        }
        let Some(mut answer) = answer else {
            tracing::warn!(max_turns = self.max_turns, "model did not finish");
            return Err(ApiError::Upstream(format!(
                "The assistant did not reach an answer within {} steps; please rephrase or narrow the request",
                self.max_turns
            )));
        };
        match self
            .plugins
            .check(Hook::Answer { answer: &answer }, &call)
            .await
        {
            Verdict::Allow => {}
            Verdict::Rewrite { value, .. } => answer = value,
            Verdict::Deny { policy, reason } | Verdict::RequireApproval { policy, reason } => {
                tracing::info!(%policy, %reason, "answer withheld by policy");
                answer = format!("I cannot share that answer: {reason}");
            }
            Verdict::Unavailable { reason, .. } => return Err(ApiError::Unavailable(reason)),
        }
        messages.push(Message::Assistant {
            content: Some(answer.clone()),
            tool_calls: vec![],
        });
        if !degraded
            && let Err(e) = self
                .sessions
                .append(owner, session_id, &messages[first_new..])
                .await
        {
            degraded = true;
            log_store_error("append", &e);
        }
        Ok(TurnOutput {
            answer,
            tool_calls,
            drafts,
            degraded,
            upstream_time: upstream,
        })
    }

    async fn run_tool(&self, c: &ToolCall, call: &CallInfo<'_>) -> ToolRun {
        let parsed: Result<Value, _> = serde_json::from_str(&c.arguments);
        let arguments_value = parsed
            .as_ref()
            .cloned()
            .unwrap_or(Value::String(c.arguments.clone()));
        let kind = self.plugins.tool_kind(&c.name);
        let logged = matches!(kind, Some(ToolKind::Read | ToolKind::Write));
        // The record speaks the contract (`success`, or `error` with its
        // text); the metrics keep the finer outcome.
        let record = |outcome: &'static str, count: Option<u32>, error: Option<String>| {
            logged.then(|| ToolCallRecord {
                tool_name: c.name.clone(),
                arguments: arguments_value.clone(),
                result_count: count,
                status: if outcome == "success" {
                    "success"
                } else {
                    "error"
                },
                error,
                outcome: matches!(outcome, "denied" | "approval_required").then_some(outcome),
                session_id: call.session_id.to_string(),
            })
        };
        let failed = |outcome: &'static str, kind: &str, message: String| {
            self.metrics
                .tool_executions
                .with_label_values(&[tool_label(&c.name, &self.plugins), outcome])
                .inc();
            ToolRun {
                content: json!({ "error": kind, "message": message }).to_string(),
                record: record(outcome, None, Some(message)),
                draft: None,
                backend_time: Duration::ZERO,
            }
        };
        if !matches!(parsed, Ok(Value::Object(_))) {
            return failed(
                "error",
                "invalid-arguments",
                "the arguments must be a JSON object".into(),
            );
        }
        let mut arguments = c.arguments.clone();
        let mut approval = None;
        match self
            .plugins
            .check(
                Hook::ToolCall {
                    tool: &c.name,
                    arguments: &arguments,
                },
                call,
            )
            .await
        {
            Verdict::Allow => {}
            Verdict::Rewrite { value, .. } => arguments = value,
            Verdict::Deny { policy, reason } | Verdict::Unavailable { policy, reason } => {
                return failed(
                    "denied",
                    "denied",
                    format!("refused by policy {policy}: {reason}"),
                );
            }
            Verdict::RequireApproval { policy, reason } => approval = Some((policy, reason)),
        }
        if let Some((policy, reason)) = approval {
            self.metrics
                .tool_executions
                .with_label_values(&[tool_label(&c.name, &self.plugins), "approval_required"])
                .inc();
            let args: Value = serde_json::from_str(&arguments).unwrap_or(Value::Null);
            let summary = format!("Run {} (needs approval: {reason})", c.name);
            let message = format!(
                "Not executed. Policy {policy} requires the user's approval: {reason}. A draft was created for the user to confirm."
            );
            return ToolRun {
                content: json!({ "status": "approval_required", "message": message }).to_string(),
                record: record("approval_required", None, Some(message)),
                draft: Some(DraftOut {
                    operation_type: c.name.clone(),
                    payload: args,
                    summary,
                }),
                backend_time: Duration::ZERO,
            };
        }
        let result = self.plugins.invoke(&c.name, &arguments, call).await;
        match result.outcome {
            Ok(ok) => {
                self.metrics
                    .tool_executions
                    .with_label_values(&[tool_label(&c.name, &self.plugins), "success"])
                    .inc();
                ToolRun {
                    content: ok.content,
                    record: record("success", ok.result_count, None),
                    draft: ok.draft,
                    backend_time: result.backend_time,
                }
            }
            Err(f) => {
                let mut run = failed("error", f.kind, f.message);
                run.backend_time = result.backend_time;
                run
            }
        }
    }
}

/// Unknown names the model made up share one label, so labels stay bounded.
fn tool_label<'a>(name: &'a str, plugins: &PluginHost) -> &'a str {
    if plugins.tool_kind(name).is_some() {
        name
    } else {
        "unknown"
    }
}

struct ToolRun {
    content: String,
    record: Option<ToolCallRecord>,
    draft: Option<DraftOut>,
    backend_time: Duration,
}

fn log_store_error(op: &str, e: &StoreError) {
    tracing::warn!(op, error = %e, "session store unavailable; answering without history");
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_says_so() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate("ééééé", 3);
        assert!(t.starts_with("é…"), "{t}");
        assert!(t.contains("2 of 10 bytes"));
    }
}
