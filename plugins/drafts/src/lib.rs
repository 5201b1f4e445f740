//! Draft tools: prepare work order creation and completion for the user to
//! confirm. They change nothing in Atlas; the host collects the drafts.

use atlas_agent_sdk::atlas::WorkOrderRef;
use atlas_agent_sdk::prelude::*;

/// Stage a new work order for the user to confirm. REQUIRED: title (a short
/// name). OPTIONAL: description (one sentence) and summary. Always collect a
/// title first; the text is tidied and the priority defaults to LOW. Leave
/// other fields for the user to update later.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreationDraftArgs {
    /// Work order title (required).
    pub title: String,
    /// One-sentence description of the problem or job.
    pub description: Option<String>,
    /// The line the user reads before confirming (default "Create work order: <title>").
    pub summary: Option<String>,
}

/// Stage the completion of a work order for the user to confirm, after
/// making sure it is the right record. Give the work order id or code.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionDraftArgs {
    /// The work order id or code (e.g. 101 or "WO000101").
    pub work_order_id: WorkOrderRef,
    /// The line the user reads before confirming (default "Complete work order <id>").
    pub summary: Option<String>,
}

/// Trim and collapse runs of whitespace into one space.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Upper-case the first character.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A title: collapsed whitespace, capital first letter.
pub fn tidy_title(title: &str) -> String {
    capitalize(&collapse(title))
}

/// A description: like a title, ending with a full stop (or `!`/`?`);
/// none at all becomes "<title> (details pending update).".
pub fn tidy_description(description: Option<&str>, title: &str) -> String {
    let text = capitalize(&collapse(description.unwrap_or_default()));
    if text.is_empty() {
        format!("{title} (details pending update).")
    } else if text.ends_with(['.', '!', '?']) {
        text
    } else {
        format!("{text}.")
    }
}

fn tidy_summary(summary: Option<&str>) -> Option<String> {
    let s = capitalize(&collapse(summary?));
    (!s.is_empty()).then_some(s)
}

/// The model-facing content: `{status:"draft_created", draft}`, the draft
/// carrying this session's id as the host will store it.
fn draft_created(ctx: &Context, draft: Draft) -> Output {
    let content = json!({
        "status": "draft_created",
        "draft": {
            "agentSessionId": ctx.session_id,
            "operationType": draft.operation_type,
            "payload": draft.payload,
            "summary": draft.summary,
        }
    });
    Output::json(&content).with_draft(draft)
}

pub fn prepare_creation_draft(ctx: &Context, args: CreationDraftArgs) -> Result<Output, ToolError> {
    let title = tidy_title(&args.title);
    if title.is_empty() {
        return Err(ToolError::invalid(
            "title is required to prepare a work order; ask the user for a short title",
        ));
    }
    let description = tidy_description(args.description.as_deref(), &title);
    let summary = tidy_summary(args.summary.as_deref())
        .unwrap_or_else(|| format!("Create work order: {title}"));
    let payload = json!({
        "summary": summary,
        "data": { "title": title, "priority": "LOW", "description": description },
    });
    Ok(draft_created(
        ctx,
        Draft::new("create_work_order", payload, summary),
    ))
}

pub fn prepare_completion_draft(
    ctx: &Context,
    args: CompletionDraftArgs,
) -> Result<Output, ToolError> {
    let reference = &args.work_order_id;
    // A code like WO000101 means work order 101; anything else is kept as given.
    let work_order_id = reference
        .numeric_id()
        .map_or_else(|| json!(reference.as_str()), |id| json!(id));
    let summary = args
        .summary
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("Complete work order {reference}"));
    let payload = json!({
        "workOrderId": work_order_id,
        "status": "COMPLETED",
        "completedBy": ctx.user.id,
    });
    Ok(draft_created(
        ctx,
        Draft::new("complete_work_order", payload, summary),
    ))
}

pub fn tools() -> Tools {
    Tools::new()
        .draft("prepare_work_order_creation_draft", prepare_creation_draft)
        .draft(
            "prepare_work_order_completion_draft",
            prepare_completion_draft,
        )
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    fn harness() -> Harness {
        Harness::new(tools())
            .policy_file(include_str!("../drafts.policy.toml"))
            .session_id("s-1")
    }

    #[test]
    fn text_tidying() {
        assert_eq!(tidy_title("  fix   the\tpump "), "Fix the pump");
        assert_eq!(tidy_title("ölpumpe prüfen"), "Ölpumpe prüfen");
        assert_eq!(tidy_description(Some(" leaks  oil "), "T"), "Leaks oil.");
        assert_eq!(
            tidy_description(Some("Is it broken?"), "T"),
            "Is it broken?"
        );
        assert_eq!(tidy_description(Some("Done."), "T"), "Done.");
        assert_eq!(
            tidy_description(Some("   "), "Fix pump"),
            "Fix pump (details pending update)."
        );
        assert_eq!(
            tidy_description(None, "Fix pump"),
            "Fix pump (details pending update)."
        );
    }

    #[test]
    fn describes_two_draft_tools() {
        let specs = harness().describe();
        let names: Vec<_> = specs.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("prepare_work_order_creation_draft", ToolKind::Draft),
                ("prepare_work_order_completion_draft", ToolKind::Draft)
            ]
        );
        assert_eq!(specs[0].parameters["properties"]["title"]["type"], "string");
        assert_eq!(
            specs[0].parameters["properties"]["description"]["type"],
            json!(["string", "null"])
        );
    }

    #[test]
    fn creation_draft() {
        let h = harness();
        let out = h
            .invoke(
                "prepare_work_order_creation_draft",
                json!({ "title": "  replace  belt ", "description": "the belt is   worn", "summary": null }),
            )
            .unwrap();
        let draft = out.draft.clone().unwrap();
        assert_eq!(draft.operation_type, "create_work_order");
        assert_eq!(draft.summary, "Create work order: Replace belt");
        assert_eq!(
            draft.payload,
            json!({ "summary": "Create work order: Replace belt",
                    "data": { "title": "Replace belt", "priority": "LOW", "description": "The belt is worn." } })
        );
        assert_eq!(
            out.json(),
            json!({ "status": "draft_created", "draft": {
                "agentSessionId": "s-1", "operationType": "create_work_order",
                "payload": draft.payload, "summary": "Create work order: Replace belt" } })
        );
        assert_eq!(out.result_count, None);
        assert!(h.requests().is_empty(), "drafts never call the backend");
    }

    #[test]
    fn creation_draft_without_description_and_with_summary() {
        let out = harness()
            .invoke(
                "prepare_work_order_creation_draft",
                json!({ "title": "fix pump", "summary": " new  pump job " }),
            )
            .unwrap();
        let draft = out.draft.unwrap();
        assert_eq!(draft.summary, "New pump job");
        assert_eq!(draft.payload["summary"], "New pump job");
        assert_eq!(
            draft.payload["data"]["description"],
            "Fix pump (details pending update)."
        );
    }

    #[test]
    fn creation_draft_needs_a_title() {
        for args in [
            json!({}),
            json!({ "title": "   " }),
            json!({ "title": null }),
        ] {
            let err = harness()
                .invoke("prepare_work_order_creation_draft", args)
                .unwrap_err();
            assert!(
                matches!(err, ToolError::InvalidArguments(ref m) if m.contains("title")),
                "{err}"
            );
        }
    }

    #[test]
    fn completion_draft_by_code_number_or_other() {
        let h = harness();
        let cases = [
            (
                json!("WO000101"),
                json!(101),
                "Complete work order WO000101",
            ),
            (json!(101), json!(101), "Complete work order 101"),
            (
                json!("pump-A"),
                json!("pump-A"),
                "Complete work order pump-A",
            ),
        ];
        for (given, want, summary) in cases {
            let out = h
                .invoke(
                    "prepare_work_order_completion_draft",
                    json!({ "workOrderId": given }),
                )
                .unwrap();
            let draft = out.draft.clone().unwrap();
            assert_eq!(draft.operation_type, "complete_work_order");
            assert_eq!(
                draft.payload,
                json!({ "workOrderId": want, "status": "COMPLETED", "completedBy": 7 })
            );
            assert_eq!(draft.summary, summary);
            assert_eq!(out.json()["status"], "draft_created");
            assert_eq!(out.json()["draft"]["agentSessionId"], "s-1");
        }
    }

    #[test]
    fn completion_draft_summary_and_user() {
        let out = Harness::new(tools())
            .user(User {
                id: 42,
                email: "a@b.c".into(),
                full_name: "A B".into(),
                role: "ADMIN".into(),
                company_id: 3,
            })
            .invoke(
                "prepare_work_order_completion_draft",
                json!({ "workOrderId": "WO000007", "summary": "  Close the pump job " }),
            )
            .unwrap();
        let draft = out.draft.unwrap();
        assert_eq!(draft.summary, "Close the pump job");
        assert_eq!(draft.payload["completedBy"], 42);
        assert_eq!(draft.payload["workOrderId"], 7);
    }

    #[test]
    fn completion_draft_needs_an_id() {
        let err = harness()
            .invoke(
                "prepare_work_order_completion_draft",
                json!({ "summary": "x" }),
            )
            .unwrap_err();
        assert!(err.message().contains("workOrderId"), "{err}");
    }

    #[test]
    fn policy_grants_nothing() {
        assert!(!harness().granted(Method::Post, "/api/agent/tools/work-orders/search"));
    }
}
