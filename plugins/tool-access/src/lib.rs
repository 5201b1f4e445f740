//! Access policy for tool calls: which roles may use which tools, and which
//! tools need the user's confirmation first. Tools not listed are open to
//! every user the host let in (the read, draft and context tools).

use std::collections::BTreeMap;

use atlas_agent_sdk::prelude::*;

/// The `[config]` table of `tool-access.policy.toml`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tool name -> the role codes allowed to use it (`"*"` = everyone).
    /// Replaces the default table when given.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Tools that need the user's confirmation before they run.
    pub approval_tools: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let admins = vec!["ADMIN".to_owned(), "LIMITED_ADMIN".to_owned()];
        Self {
            roles: BTreeMap::from([
                ("create_work_order_immediately".to_owned(), admins.clone()),
                ("update_work_order".to_owned(), admins),
            ]),
            approval_tools: Vec::new(),
        }
    }
}

pub struct ToolAccess;

impl Policy for ToolAccess {
    fn hooks(&self) -> &'static [Hook] {
        &[Hook::ToolCall]
    }

    fn check_tool_call(&self, ctx: &Context, tool: &str, _arguments: &Value) -> Decision {
        let config: Config = match ctx.config() {
            Ok(c) => c,
            Err(e) => {
                return Decision::deny(format!(
                    "tool access policy is misconfigured: {}",
                    e.message()
                ));
            }
        };
        if let Some(allowed) = config.roles.get(tool) {
            let role = ctx.user.role.trim();
            let permitted = allowed
                .iter()
                .any(|r| r == "*" || r.trim().eq_ignore_ascii_case(role));
            if !permitted {
                let who = if allowed.is_empty() {
                    "nobody".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Decision::deny(format!(
                    "The tool {tool} is reserved for these roles: {who}. The user's role is {}. \
                     Tell the user, or offer a draft for someone with that role to confirm.",
                    if role.is_empty() { "unknown" } else { role }
                ));
            }
        }
        if config.approval_tools.iter().any(|t| t == tool) {
            return Decision::RequireApproval(format!(
                "{tool} needs the user's confirmation before it runs."
            ));
        }
        Decision::Allow
    }
}

atlas_agent_sdk::export_policy!(ToolAccess);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    const READS: [&str; 6] = [
        "view_work_orders",
        "view_work_order_details",
        "view_assets",
        "get_user_context",
        "prepare_work_order_creation_draft",
        "prepare_work_order_completion_draft",
    ];
    const WRITES: [&str; 2] = ["create_work_order_immediately", "update_work_order"];

    fn shipped(role: &str) -> Harness {
        Harness::policy(ToolAccess)
            .policy_file(include_str!("../tool-access.policy.toml"))
            .role(role)
    }

    #[test]
    fn everyone_may_read_draft_and_ask_context() {
        for role in ["ADMIN", "TECHNICIAN", "LIMITED_TECHNICIAN", "VIEW_ONLY", ""] {
            for tool in READS {
                assert_eq!(
                    shipped(role).check_tool_call(tool, json!({})),
                    Decision::Allow,
                    "{role} {tool}"
                );
            }
        }
    }

    #[test]
    fn writes_are_for_admins() {
        for role in ["ADMIN", "LIMITED_ADMIN", "admin"] {
            for tool in WRITES {
                assert_eq!(
                    shipped(role).check_tool_call(tool, json!({})),
                    Decision::Allow,
                    "{role} {tool}"
                );
            }
        }
        for role in [
            "TECHNICIAN",
            "LIMITED_TECHNICIAN",
            "VIEW_ONLY",
            "REQUESTER",
            "",
        ] {
            for tool in WRITES {
                match shipped(role).check_tool_call(tool, json!({ "title": "x" })) {
                    Decision::Deny(reason) => {
                        assert!(
                            reason.contains(tool) && reason.contains("ADMIN, LIMITED_ADMIN"),
                            "{reason}"
                        )
                    }
                    other => panic!("{role} {tool}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn defaults_apply_without_config() {
        let h = Harness::policy(ToolAccess).role("TECHNICIAN");
        assert!(matches!(
            h.check_tool_call("update_work_order", json!({})),
            Decision::Deny(_)
        ));
        assert_eq!(h.check_tool_call("view_assets", json!({})), Decision::Allow);
    }

    #[test]
    fn config_replaces_roles_and_asks_for_approval() {
        let h = Harness::policy(ToolAccess)
            .config(json!({
                "roles": { "view_assets": ["ADMIN"], "update_work_order": ["*"] },
                "approval_tools": ["update_work_order"]
            }))
            .role("TECHNICIAN");
        assert!(matches!(
            h.check_tool_call("view_assets", json!({})),
            Decision::Deny(_)
        ));
        assert!(matches!(
            h.check_tool_call("update_work_order", json!({})),
            Decision::RequireApproval(_)
        ));
        // create is no longer restricted: the table was replaced.
        assert_eq!(
            h.check_tool_call("create_work_order_immediately", json!({})),
            Decision::Allow
        );
        // A denial wins over approval.
        let h = Harness::policy(ToolAccess)
            .config(json!({ "roles": { "x": [] }, "approval_tools": ["x"] }))
            .role("ADMIN");
        assert!(
            matches!(h.check_tool_call("x", json!({})), Decision::Deny(r) if r.contains("nobody"))
        );
    }

    #[test]
    fn broken_config_fails_closed() {
        let h = Harness::policy(ToolAccess).config(json!({ "roles": ["ADMIN"] }));
        assert!(
            matches!(h.check_tool_call("view_assets", json!({})), Decision::Deny(r) if r.contains("misconfigured"))
        );
    }

    #[test]
    fn runs_on_tool_calls_only() {
        assert_eq!(shipped("TECHNICIAN").hooks(), [Hook::ToolCall]);
    }
}
