//! The user-context tool: who the user is, from the call context alone.

use atlas_agent_sdk::prelude::*;

/// Return the signed-in user's id, name, role and company, to ground
/// answers and make role-aware suggestions.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UserContextArgs {}

pub fn get_user_context(ctx: &Context, _: UserContextArgs) -> Result<Output, ToolError> {
    let user = &ctx.user;
    Ok(Output::json(&json!({
        "id": user.id,
        "fullName": user.display_name(),
        "role": user.role.to_uppercase(),
        "companyId": user.company_id,
    })))
}

pub fn tools() -> Tools {
    Tools::new().context("get_user_context", get_user_context)
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    fn user(full_name: &str) -> User {
        User {
            id: 12,
            email: "jo@example.com".into(),
            full_name: full_name.into(),
            role: "technician".into(),
            company_id: 456,
        }
    }

    #[test]
    fn describes_a_context_tool_without_arguments() {
        let specs = Harness::new(tools()).describe();
        assert_eq!(specs[0].name, "get_user_context");
        assert_eq!(specs[0].kind, ToolKind::Context);
        assert_eq!(
            specs[0].parameters,
            json!({ "type": "object", "properties": {}, "required": [], "additionalProperties": false })
        );
    }

    #[test]
    fn returns_the_user() {
        let h = Harness::new(tools())
            .policy_file(include_str!("../user-context.policy.toml"))
            .user(user("Jo Doe"));
        let out = h.invoke("get_user_context", json!({})).unwrap();
        assert_eq!(
            out.json(),
            json!({ "id": 12, "fullName": "Jo Doe", "role": "TECHNICIAN", "companyId": 456 })
        );
        assert_eq!(out.result_count, None);
        assert!(h.requests().is_empty());
    }

    #[test]
    fn falls_back_to_email_and_accepts_empty_arguments() {
        let h = Harness::new(tools()).user(user(" "));
        for raw in ["", "null", "{}"] {
            let out = h.invoke_raw("get_user_context", raw).unwrap();
            assert_eq!(out.json()["fullName"], "jo@example.com");
        }
    }
}
