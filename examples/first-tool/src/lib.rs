//! Example tool plugin: counts the user's open work orders. Copy this crate
//! to start your own (see sdk/README.md).

use atlas_agent_sdk::atlas::{self, WorkOrderSearch};
use atlas_agent_sdk::prelude::*;

/// Count the user's open work orders, optionally only those matching a text.
/// Use it when the user asks "how many" rather than for a list.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CountArgs {
    /// Only count work orders whose title, description or code contains this text.
    pub search: Option<String>,
}

pub fn count_open_work_orders(ctx: &Context, args: CountArgs) -> Result<Output, ToolError> {
    let query = WorkOrderSearch {
        limit: 1, // only the total is needed
        statuses: vec!["OPEN".into()],
        search: args.search.filter(|s| !s.trim().is_empty()),
        ..Default::default()
    };
    let page = atlas::search_work_orders(&query)?;
    let open = page.total.unwrap_or(page.results.len() as u64);
    log::debug(format!("{open} open work orders for user {}", ctx.user.id));
    Ok(Output::json(
        &json!({ "open": open, "user": ctx.user.display_name() }),
    ))
}

pub fn tools() -> Tools {
    Tools::new().read("count_open_work_orders", count_open_work_orders)
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    #[test]
    fn counts_open_work_orders() {
        let h = Harness::new(tools())
            .policy_file(include_str!("../first-tool.policy.toml"))
            .on(
                Method::Post,
                "/api/agent/tools/work-orders/search",
                |_req| (200, json!({ "results": [{ "id": 1 }], "total": 12 })),
            );

        let out = h
            .invoke("count_open_work_orders", json!({ "search": "pump" }))
            .unwrap();

        assert_eq!(out.json(), json!({ "open": 12, "user": "Test User" }));
        assert_eq!(
            h.requests()[0].json(),
            json!({ "limit": 1, "statuses": ["OPEN"], "search": "pump" })
        );
    }

    #[test]
    fn has_a_description_and_strict_schema() {
        let spec = &Harness::new(tools()).describe()[0];
        assert!(
            spec.description
                .starts_with("Count the user's open work orders")
        );
        assert_eq!(spec.parameters["required"], json!(["search"]));
    }
}
