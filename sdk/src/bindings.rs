//! The one place the WIT bindings are generated; everything else in the SDK
//! talks to these modules and never exposes them to plugin authors.
//!
//! `pub_export_macro` makes the world's export section travel with the export
//! macro into the plugin crate, so a policy plugin never claims the tool
//! exports and vice versa.

/// Bindings for world `tool-plugin` (imports `backend` and `log`, exports `tool`).
pub mod tool {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tool-plugin",
        pub_export_macro: true,
        export_macro_name: "export_tool_plugin",
        default_bindings_module: "atlas_agent_sdk::__private::bindings::tool",
    });
}

/// Bindings for world `policy-plugin`; shares the types and log import with `tool`.
pub mod policy {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "export_policy_plugin",
        default_bindings_module: "atlas_agent_sdk::__private::bindings::policy",
        with: {
            "atlas:agent/types@0.2.0": crate::bindings::tool::atlas::agent::types,
            "atlas:agent/log@0.2.0": crate::bindings::tool::atlas::agent::log,
        },
    });
}
