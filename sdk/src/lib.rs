//! Write Atlas Agent Host tools and validation policies as typed Rust functions.
//!
//! A tool is a function taking the call [`Context`] and a typed arguments
//! struct. The struct's doc comment becomes the tool description and its
//! JSON Schema (made strict for OpenAI function calling) is generated with
//! `schemars`, so the model, the schema and the code cannot drift apart.
//!
//! ```
//! use atlas_agent_sdk::prelude::*;
//!
//! /// Say hello to the signed-in user.
//! #[derive(Deserialize, JsonSchema)]
//! struct GreetArgs {
//!     /// How to greet, e.g. "Good morning".
//!     greeting: Option<String>,
//! }
//!
//! fn greet(ctx: &Context, args: GreetArgs) -> Result<Output, ToolError> {
//!     let greeting = args.greeting.unwrap_or_else(|| "Hello".into());
//!     Ok(Output::json(&json!({ "text": format!("{greeting}, {}!", ctx.user.full_name) })))
//! }
//!
//! fn tools() -> Tools {
//!     Tools::new().context("greet_user", greet)
//! }
//! atlas_agent_sdk::export_tools!(tools);
//!
//! // The same function runs natively under the test harness.
//! let out = atlas_agent_sdk::testing::Harness::new(tools())
//!     .invoke("greet_user", json!({ "greeting": "Hi" }))
//!     .unwrap();
//! assert_eq!(out.json()["text"], "Hi, Test User!");
//! ```
//!
//! Layout:
//! - [`Tools`], [`Output`], [`ToolError`]: define tools ([`tool`]).
//! - [`Policy`], [`Decision`]: define validation policies ([`policy`]).
//! - [`backend`]: raw calls to the Atlas backend; [`atlas`]: typed ones.
//! - [`schema`]: the strict JSON Schema transform.
//! - [`testing`]: run tools and policies natively against a mock backend.
//! - [`export_tools!`], [`export_policy!`]: turn a crate into a plugin component.

/// A plugin built without WASI allocates in the heap its module starts with
/// (`--initial-heap` in `.cargo/config.toml`) before it grows its memory;
/// Rust's own allocator there grows it at the first allocation of every
/// fresh instance. Off with `default-features = false`.
#[cfg(all(target_family = "wasm", target_os = "unknown", feature = "allocator"))]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[doc(hidden)]
pub mod bindings;

pub mod atlas;
pub mod backend;
mod context;
mod glue;
pub mod log;
pub mod policy;
pub mod schema;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod tool;

pub use context::{Context, User};
pub use policy::{Decision, Hook, Policy};
pub use tool::{Draft, Output, ToolError, ToolKind, ToolOutput, ToolSpec, Tools};

/// Everything a plugin usually needs, plus the serde and schemars derives.
pub mod prelude {
    pub use crate::backend::{self, Method};
    pub use crate::{
        Context, Decision, Draft, Hook, Output, Policy, ToolError, ToolKind, Tools, User, atlas,
        log,
    };
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
}

/// Glue used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::policy::exports::atlas::agent::policy::{
        Decision as WitDecision, Guest as PolicyGuest, Hook as WitHook,
    };
    pub use crate::bindings::tool::atlas::agent::types::{
        CallContext as WitCallContext, ToolError as WitToolError, ToolOutput as WitToolOutput,
        ToolSpec as WitToolSpec,
    };
    pub use crate::bindings::tool::exports::atlas::agent::tool::Guest as ToolGuest;
    pub use crate::glue::{check_answer, check_request, check_tool_call, describe, hooks, invoke};
}

/// Export a tool plugin. Takes a function (or closure) returning [`Tools`];
/// it is called for each `describe` and `invoke`, so keep it cheap.
///
/// ```ignore
/// fn tools() -> Tools { Tools::new().read("view_assets", view_assets) }
/// atlas_agent_sdk::export_tools!(tools);
/// ```
#[macro_export]
macro_rules! export_tools {
    ($tools:expr) => {
        #[doc(hidden)]
        pub struct __AtlasToolPlugin;

        impl $crate::__private::ToolGuest for __AtlasToolPlugin {
            fn describe() -> ::std::vec::Vec<$crate::__private::WitToolSpec> {
                $crate::__private::describe(&($tools)())
            }

            fn invoke(
                ctx: $crate::__private::WitCallContext,
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::__private::WitToolOutput,
                $crate::__private::WitToolError,
            > {
                $crate::__private::invoke(&($tools)(), ctx, &name, &arguments)
            }
        }

        // Native builds (tests) keep the impl above but export nothing.
        #[cfg(target_arch = "wasm32")]
        $crate::__export_tool_plugin_impl!(
            __AtlasToolPlugin with_types_in $crate::__private::bindings::tool
        );
    };
}

/// Export a validation policy. Takes an expression producing a value that
/// implements [`Policy`] (a unit struct works); it is evaluated per call.
///
/// ```ignore
/// struct NoShouting;
/// impl Policy for NoShouting { /* ... */ }
/// atlas_agent_sdk::export_policy!(NoShouting);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:expr) => {
        #[doc(hidden)]
        pub struct __AtlasPolicyPlugin;

        impl $crate::__private::PolicyGuest for __AtlasPolicyPlugin {
            fn hooks() -> ::std::vec::Vec<$crate::__private::WitHook> {
                $crate::__private::hooks(&$policy)
            }

            fn check_request(
                ctx: $crate::__private::WitCallContext,
                prompt: ::std::string::String,
                metadata: ::std::string::String,
            ) -> $crate::__private::WitDecision {
                $crate::__private::check_request(&$policy, ctx, &prompt, &metadata)
            }

            fn check_tool_call(
                ctx: $crate::__private::WitCallContext,
                tool: ::std::string::String,
                arguments: ::std::string::String,
            ) -> $crate::__private::WitDecision {
                $crate::__private::check_tool_call(&$policy, ctx, &tool, &arguments)
            }

            fn check_answer(
                ctx: $crate::__private::WitCallContext,
                answer: ::std::string::String,
            ) -> $crate::__private::WitDecision {
                $crate::__private::check_answer(&$policy, ctx, &answer)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__export_policy_plugin_impl!(
            __AtlasPolicyPlugin with_types_in $crate::__private::bindings::policy
        );
    };
}
