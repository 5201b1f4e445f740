//! The one place host bindings are generated from `wit/`.

pub mod tool {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-plugin",
        imports: { default: async },
        exports: { default: async },
        // Shared with the tool world, so one `log` implementation and one
        // `call-context` type serve both.
        with: {
            "atlas:agent/types": super::tool::atlas::agent::types,
            "atlas:agent/log": super::tool::atlas::agent::log,
        },
    });
}

pub use policy::PolicyPluginPre;
pub use policy::exports::atlas::agent::policy::{Decision, Hook};
pub use tool::ToolPluginPre;
pub use tool::atlas::agent::backend::{BackendError, Method, Response};
pub use tool::atlas::agent::types::{CallContext, Level, ToolError, ToolKind, ToolOutput, User};

/// The interface names a component must export, with the version this host speaks.
pub const TOOL_EXPORT: &str = "atlas:agent/tool@0.2.0";
pub const POLICY_EXPORT: &str = "atlas:agent/policy@0.2.0";
