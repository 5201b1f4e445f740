//! Asset tools: search the user's company's assets (equipment, machines).

use atlas_agent_sdk::atlas::{self, AssetSearch};
use atlas_agent_sdk::prelude::*;

/// Results returned when the model gives no limit.
const DEFAULT_LIMIT: u32 = 5;

/// Retrieve assets (equipment, machines) of the user's company. Use it when
/// the user asks about assets, their status or where they are.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewAssetsArgs {
    /// How many assets to return (default 5; capped by the operator's maximum).
    pub limit: Option<u32>,
    /// Text to match in the asset's name or id.
    pub search: Option<String>,
}

pub fn view_assets(ctx: &Context, args: ViewAssetsArgs) -> Result<Output, ToolError> {
    let limit = ctx.limit(args.limit, DEFAULT_LIMIT);
    let search = args
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let page = atlas::search_assets(&AssetSearch { limit, search })?;
    let items: Vec<Value> = page
        .results
        .iter()
        .filter_map(summarize)
        .take(limit as usize)
        .collect();
    let total = page.total.unwrap_or(items.len() as u64);
    Ok(
        Output::json(&json!({ "type": "assets", "total": total, "items": items }))
            .with_count(items.len()),
    )
}

/// The fields the model sees per asset; related records become their names.
fn summarize(asset: &Value) -> Option<Value> {
    let o = asset.as_object()?;
    let text = |k: &str| o.get(k).filter(|v| !v.is_null() && v.as_str() != Some(""));
    let name_of = |k: &str| match o.get(k) {
        Some(Value::Object(r)) => r.get("name").or_else(|| r.get("customId")).cloned(),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.clone()),
    };
    Some(json!({
        "id": o.get("id"),
        "name": text("name").or_else(|| text("customId")).cloned().unwrap_or_else(|| json!("Asset")),
        "status": o.get("status"),
        "location": name_of("location"),
        "customId": text("customId"),
        "category": name_of("category"),
    }))
}

pub fn tools() -> Tools {
    Tools::new().read("view_assets", view_assets)
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests {
    use super::tools;
    use atlas_agent_sdk::prelude::*;
    use atlas_agent_sdk::testing::Harness;

    fn harness() -> Harness {
        Harness::new(tools())
            .policy_file(include_str!("../assets.policy.toml"))
            .on(Method::Post, "/api/agent/tools/assets/search", |_| {
                (
                    200,
                    json!({
                        "results": [
                            { "id": 1, "name": "Pump A", "status": "OPERATIONAL", "customId": "A-1",
                              "location": { "id": 4, "name": "Hall 2" }, "category": { "name": "Pumps" } },
                            { "id": 2, "name": "", "customId": "B-7", "status": "DOWN", "location": null },
                            { "id": 3, "status": "STANDBY" }
                        ],
                        "total": 17
                    }),
                )
            })
    }

    #[test]
    fn describes_view_assets() {
        let specs = harness().describe();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "view_assets");
        assert_eq!(specs[0].kind, ToolKind::Read);
        assert!(specs[0].description.starts_with("Retrieve assets"));
        assert_eq!(specs[0].parameters["required"], json!(["limit", "search"]));
    }

    #[test]
    fn defaults_and_output() {
        let h = harness();
        let out = h
            .invoke("view_assets", json!({ "limit": null, "search": null }))
            .unwrap();
        assert_eq!(h.requests()[0].json(), json!({ "limit": 5 }));
        let body = out.json();
        assert_eq!(body["type"], "assets");
        assert_eq!(body["total"], 17);
        assert_eq!(out.result_count, Some(3));
        assert_eq!(
            body["items"][0],
            json!({ "id": 1, "name": "Pump A", "status": "OPERATIONAL", "location": "Hall 2",
                    "customId": "A-1", "category": "Pumps" })
        );
        assert_eq!(body["items"][1]["name"], "B-7");
        assert_eq!(body["items"][1]["location"], Value::Null);
        assert_eq!(body["items"][2]["name"], "Asset");
    }

    #[test]
    fn search_is_trimmed_and_limit_clamped() {
        let h = harness().max_results(2);
        let out = h
            .invoke("view_assets", json!({ "limit": 50, "search": "  pump " }))
            .unwrap();
        assert_eq!(
            h.requests()[0].json(),
            json!({ "limit": 2, "search": "pump" })
        );
        assert_eq!(out.json()["items"].as_array().unwrap().len(), 2);
        h.invoke("view_assets", json!({ "search": "   " })).unwrap();
        assert_eq!(h.requests()[1].json(), json!({ "limit": 2 }));
    }

    #[test]
    fn errors_are_mapped() {
        let h = Harness::new(tools()).on(Method::Post, "/api/agent/tools/assets/search", |_| {
            (
                403,
                json!({ "success": false, "message": "No access to assets" }),
            )
        });
        assert_eq!(
            h.invoke("view_assets", json!({})),
            Err(ToolError::Forbidden("No access to assets".into()))
        );
        let h = Harness::new(tools()).on(Method::Post, "/api/agent/tools/assets/search", |_| {
            atlas_agent_sdk::backend::BackendError::Unavailable("connection refused".into())
        });
        assert!(matches!(
            h.invoke("view_assets", json!({})),
            Err(ToolError::Backend(_))
        ));
    }

    #[test]
    fn only_the_search_is_granted() {
        let h = harness();
        assert!(h.granted(Method::Post, "/api/agent/tools/assets/search"));
        assert!(!h.granted(Method::Get, "/api/agent/tools/assets/search"));
        assert!(!h.granted(Method::Post, "/api/agent/tools/work-orders/search"));
        assert!(!h.granted(Method::Get, "/auth/me"));
    }
}
