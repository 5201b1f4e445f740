//! Conversions between the WIT bindings and the SDK's own types, used by the
//! export macros and (natively) by the test harness, so tests cover them too.

use serde_json::Value;

use crate::bindings::policy::exports::atlas::agent::policy::{
    Decision as WitDecision, Hook as WitHook,
};
use crate::bindings::tool::atlas::agent::types as wit;
use crate::{Context, Decision, Hook, Policy, ToolError, ToolKind, ToolOutput, Tools, User};

pub fn describe(tools: &Tools) -> Vec<wit::ToolSpec> {
    tools
        .specs()
        .into_iter()
        .map(|s| wit::ToolSpec {
            name: s.name,
            description: s.description,
            parameters_schema: s.parameters.to_string(),
            kind: match s.kind {
                ToolKind::Read => wit::ToolKind::Read,
                ToolKind::Write => wit::ToolKind::Write,
                ToolKind::Draft => wit::ToolKind::Draft,
                ToolKind::Context => wit::ToolKind::Context,
            },
        })
        .collect()
}

pub fn invoke(
    tools: &Tools,
    ctx: wit::CallContext,
    name: &str,
    arguments: &str,
) -> Result<wit::ToolOutput, wit::ToolError> {
    let ctx = context_from_wit(ctx);
    tools
        .invoke(&ctx, name, arguments)
        .map(output_to_wit)
        .map_err(error_to_wit)
}

pub fn hooks<P: Policy + ?Sized>(policy: &P) -> Vec<WitHook> {
    let mut out: Vec<WitHook> = Vec::with_capacity(3);
    for h in policy.hooks() {
        let w = match h {
            Hook::Request => WitHook::Request,
            Hook::ToolCall => WitHook::ToolCall,
            Hook::Answer => WitHook::Answer,
        };
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

pub fn check_request<P: Policy + ?Sized>(
    policy: &P,
    ctx: wit::CallContext,
    prompt: &str,
    metadata: &str,
) -> WitDecision {
    let metadata = match metadata.trim() {
        "" | "null" => Value::Object(Default::default()),
        text => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return WitDecision::Deny("request metadata is not valid JSON".into()),
        },
    };
    decision_to_wit(policy.check_request(&context_from_wit(ctx), prompt, &metadata))
}

pub fn check_tool_call<P: Policy + ?Sized>(
    policy: &P,
    ctx: wit::CallContext,
    tool: &str,
    arguments: &str,
) -> WitDecision {
    let arguments = match arguments.trim() {
        "" => Value::Object(Default::default()),
        text => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return WitDecision::Deny("tool arguments are not valid JSON".into()),
        },
    };
    decision_to_wit(policy.check_tool_call(&context_from_wit(ctx), tool, &arguments))
}

pub fn check_answer<P: Policy + ?Sized>(
    policy: &P,
    ctx: wit::CallContext,
    answer: &str,
) -> WitDecision {
    decision_to_wit(policy.check_answer(&context_from_wit(ctx), answer))
}

pub(crate) fn context_from_wit(ctx: wit::CallContext) -> Context {
    Context {
        user: User {
            id: ctx.user.id,
            email: ctx.user.email,
            full_name: ctx.user.full_name,
            role: ctx.user.role,
            company_id: ctx.user.company_id,
        },
        session_id: ctx.session_id,
        request_id: ctx.request_id,
        agent_id: ctx.agent_id,
        max_results: ctx.max_results,
        config_json: ctx.config,
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn context_to_wit(ctx: &Context) -> wit::CallContext {
    wit::CallContext {
        user: wit::User {
            id: ctx.user.id,
            email: ctx.user.email.clone(),
            full_name: ctx.user.full_name.clone(),
            role: ctx.user.role.clone(),
            company_id: ctx.user.company_id,
        },
        session_id: ctx.session_id.clone(),
        request_id: ctx.request_id.clone(),
        agent_id: ctx.agent_id.clone(),
        max_results: ctx.max_results,
        config: ctx.config_json.clone(),
    }
}

fn output_to_wit(out: ToolOutput) -> wit::ToolOutput {
    wit::ToolOutput {
        content: out.content,
        result_count: out.result_count,
        draft: out.draft.map(|d| wit::Draft {
            operation_type: d.operation_type,
            payload: d.payload.to_string(),
            summary: d.summary,
        }),
    }
}

fn error_to_wit(e: ToolError) -> wit::ToolError {
    match e {
        ToolError::InvalidArguments(m) => wit::ToolError::InvalidArguments(m),
        ToolError::NotFound(m) => wit::ToolError::NotFound(m),
        ToolError::Forbidden(m) => wit::ToolError::Forbidden(m),
        ToolError::Backend(m) => wit::ToolError::Backend(m),
        ToolError::Internal(m) => wit::ToolError::Internal(m),
    }
}

fn decision_to_wit(d: Decision) -> WitDecision {
    match d {
        Decision::Allow => WitDecision::Allow,
        Decision::Deny(r) => WitDecision::Deny(r),
        Decision::Rewrite(v) => WitDecision::Rewrite(v),
        Decision::RequireApproval(r) => WitDecision::RequireApproval(r),
    }
}

// The harness goes through the WIT types and back so the conversions above are tested.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod back {
    use super::*;
    use crate::{Draft, ToolSpec};

    pub fn spec(s: wit::ToolSpec) -> ToolSpec {
        ToolSpec {
            name: s.name,
            description: s.description,
            parameters: serde_json::from_str(&s.parameters_schema).expect("schema is JSON"),
            kind: match s.kind {
                wit::ToolKind::Read => ToolKind::Read,
                wit::ToolKind::Write => ToolKind::Write,
                wit::ToolKind::Draft => ToolKind::Draft,
                wit::ToolKind::Context => ToolKind::Context,
            },
        }
    }

    pub fn output(o: wit::ToolOutput) -> ToolOutput {
        ToolOutput {
            content: o.content,
            result_count: o.result_count,
            draft: o.draft.map(|d| Draft {
                operation_type: d.operation_type,
                payload: serde_json::from_str(&d.payload).expect("draft payload is JSON"),
                summary: d.summary,
            }),
        }
    }

    pub fn error(e: wit::ToolError) -> ToolError {
        match e {
            wit::ToolError::InvalidArguments(m) => ToolError::InvalidArguments(m),
            wit::ToolError::NotFound(m) => ToolError::NotFound(m),
            wit::ToolError::Forbidden(m) => ToolError::Forbidden(m),
            wit::ToolError::Backend(m) => ToolError::Backend(m),
            wit::ToolError::Internal(m) => ToolError::Internal(m),
        }
    }

    pub fn hook(h: WitHook) -> Hook {
        match h {
            WitHook::Request => Hook::Request,
            WitHook::ToolCall => Hook::ToolCall,
            WitHook::Answer => Hook::Answer,
        }
    }

    pub fn decision(d: WitDecision) -> Decision {
        match d {
            WitDecision::Allow => Decision::Allow,
            WitDecision::Deny(r) => Decision::Deny(r),
            WitDecision::Rewrite(v) => Decision::Rewrite(v),
            WitDecision::RequireApproval(r) => Decision::RequireApproval(r),
        }
    }
}
