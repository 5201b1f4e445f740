//! Validation policies: hooks the host runs on each request, tool call and
//! answer, in the order the operator gives them.
//!
//! ```
//! use atlas_agent_sdk::prelude::*;
//!
//! #[derive(Deserialize, Default)]
//! #[serde(default)]
//! struct Config {
//!     banned_words: Vec<String>,
//! }
//!
//! pub struct NoBannedWords;
//!
//! impl Policy for NoBannedWords {
//!     fn hooks(&self) -> &'static [Hook] {
//!         &[Hook::Request]
//!     }
//!
//!     fn check_request(&self, ctx: &Context, prompt: &str, _metadata: &Value) -> Decision {
//!         let config: Config = match ctx.config() {
//!             Ok(c) => c,
//!             Err(e) => return Decision::deny(e.to_string()), // fail closed
//!         };
//!         match config.banned_words.iter().find(|w| prompt.contains(w.as_str())) {
//!             Some(word) => Decision::deny(format!("Please do not use the word {word:?}.")),
//!             None => Decision::Allow,
//!         }
//!     }
//! }
//!
//! atlas_agent_sdk::export_policy!(NoBannedWords);
//!
//! let h = atlas_agent_sdk::testing::Harness::policy(NoBannedWords)
//!     .config(json!({ "banned_words": ["darn"] }));
//! assert!(matches!(h.check_request("darn it", json!({})), Decision::Deny(_)));
//! assert_eq!(h.check_request("fine", json!({})), Decision::Allow);
//! ```

use serde_json::Value;

use crate::Context;

/// A policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through unchanged.
    Allow,
    /// Refuse it; the reason is shown to the user (request, answer) or the model (tool call).
    Deny(String),
    /// Let it through with this value instead: a prompt, arguments JSON or
    /// answer text, depending on the hook.
    Rewrite(String),
    /// Do not act now: turn it into a draft the user must confirm.
    RequireApproval(String),
}

impl Decision {
    /// Shorthand for [`Decision::Deny`].
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::Deny(reason.into())
    }

    /// Whether this lets the thing through unchanged.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// A point in a chat where the host can run a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// [`Policy::check_request`], once per chat request.
    Request,
    /// [`Policy::check_tool_call`], before every tool call.
    ToolCall,
    /// [`Policy::check_answer`], once on the final answer.
    Answer,
}

impl Hook {
    /// Every hook, the default of [`Policy::hooks`].
    pub const ALL: &'static [Hook] = &[Hook::Request, Hook::ToolCall, Hook::Answer];
}

/// A validation policy. Every hook allows by default, so implement only the
/// ones you need, and name them in [`Policy::hooks`] so the host does not
/// run the policy where it has nothing to say. Read operator settings with
/// [`Context::config`].
pub trait Policy {
    /// The hooks this policy implements; the host calls only these (it asks
    /// once, when the plugin loads). The default is every hook, which is
    /// always correct but costs a sandboxed call per hook per chat.
    fn hooks(&self) -> &'static [Hook] {
        Hook::ALL
    }

    /// Check an incoming chat request; `metadata` is the request's metadata
    /// object (`{}` when absent).
    fn check_request(&self, ctx: &Context, prompt: &str, metadata: &Value) -> Decision {
        let _ = (ctx, prompt, metadata);
        Decision::Allow
    }

    /// Check a tool call the model asked for, before it runs.
    fn check_tool_call(&self, ctx: &Context, tool: &str, arguments: &Value) -> Decision {
        let _ = (ctx, tool, arguments);
        Decision::Allow
    }

    /// Check the final answer before it reaches the user.
    fn check_answer(&self, ctx: &Context, answer: &str) -> Decision {
        let _ = (ctx, answer);
        Decision::Allow
    }
}
