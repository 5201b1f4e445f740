//! Work order tools: list, details, create and update, on the Atlas agent
//! tool endpoints with the user's own permissions.

use atlas_agent_sdk::atlas::{
    self, SearchPage, WorkOrderFields, WorkOrderRef, WorkOrderSearch, one_or_many,
};
use atlas_agent_sdk::prelude::*;

mod listing;

/// Results returned when the model gives no limit.
const DEFAULT_LIMIT: u32 = 5;

/// Retrieve work orders of the user's company, filtered by status, priority,
/// dates, assignment, asset, location or category. Use it to list and find
/// work orders; by default it returns open, in-progress and on-hold ones,
/// most recently updated first.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewWorkOrdersArgs {
    /// How many work orders to return (default 5; capped by the operator's maximum).
    pub limit: Option<u32>,
    /// Statuses to include: OPEN, IN_PROGRESS, ON_HOLD, COMPLETE (default: the first three).
    #[serde(default, deserialize_with = "one_or_many")]
    pub statuses: Vec<String>,
    /// Text to match in title, description or code (e.g. WO000123).
    pub search: Option<String>,
    /// Priorities to include: NONE, LOW, MEDIUM, HIGH.
    #[serde(default, deserialize_with = "one_or_many")]
    pub priorities: Vec<String>,
    /// Only work orders due before this ISO 8601 date.
    pub due_date_before: Option<String>,
    /// Only work orders due after this ISO 8601 date.
    pub due_date_after: Option<String>,
    /// Only work orders created before this ISO 8601 date.
    pub created_at_before: Option<String>,
    /// Only work orders created after this ISO 8601 date.
    pub created_at_after: Option<String>,
    /// Only work orders updated before this ISO 8601 date.
    pub updated_at_before: Option<String>,
    /// Only work orders updated after this ISO 8601 date.
    pub updated_at_after: Option<String>,
    /// Only work orders assigned to this user id.
    pub assigned_to_user_id: Option<i64>,
    /// Only work orders whose primary user is this user id.
    pub primary_user_id: Option<i64>,
    /// Only work orders of this team id.
    pub team_id: Option<i64>,
    /// Only work orders on this asset id.
    pub asset_id: Option<i64>,
    /// Only work orders at this location id.
    pub location_id: Option<i64>,
    /// Only work orders in this category id.
    pub category_id: Option<i64>,
    /// Sort field: dueDate, priority, status, createdAt or updatedAt (default updatedAt).
    pub sort_by: Option<String>,
    /// Sort direction: ASC or DESC (default DESC).
    pub sort_direction: Option<String>,
}

/// Get full details of one work order: tasks, labor, files, history and the
/// people involved. Use it when the user asks about a specific work order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderDetailsArgs {
    /// The work order id or code (e.g. 101 or "WO000101").
    pub work_order_id: WorkOrderRef,
}

/// Create a work order immediately, without asking the user to confirm.
/// Use ONLY when the user explicitly asks to create it now; otherwise use
/// prepare_work_order_creation_draft.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateWorkOrderArgs {
    /// Work order title (required).
    pub title: String,
    #[serde(flatten)]
    pub fields: WorkOrderFields,
}

/// Update an existing work order: title, description, priority, dates,
/// assignment and so on. Only the fields given change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWorkOrderArgs {
    /// The work order id or code (e.g. 101 or "WO000101").
    pub work_order_id: WorkOrderRef,
    /// New title.
    pub title: Option<String>,
    #[serde(flatten)]
    pub fields: WorkOrderFields,
}

/// Normalise each non-blank label, dropping repeats (first one wins).
fn normalize_all(
    labels: &[String],
    normalize: fn(&str) -> Result<String, ToolError>,
) -> Result<Vec<String>, ToolError> {
    let mut out: Vec<String> = Vec::new();
    for label in labels.iter().filter(|l| !l.trim().is_empty()) {
        let value = normalize(label)?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn non_blank(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

pub fn view_work_orders(ctx: &Context, args: ViewWorkOrdersArgs) -> Result<Output, ToolError> {
    let limit = ctx.limit(args.limit, DEFAULT_LIMIT);
    let mut statuses = normalize_all(&args.statuses, atlas::normalize_status)?;
    if statuses.is_empty() {
        statuses = atlas::DEFAULT_WORK_ORDER_STATUSES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    }
    let priorities = normalize_all(&args.priorities, atlas::normalize_priority)?;
    let query = WorkOrderSearch {
        limit,
        statuses,
        search: non_blank(args.search),
        priorities,
        due_date_before: non_blank(args.due_date_before),
        due_date_after: non_blank(args.due_date_after),
        created_at_before: non_blank(args.created_at_before),
        created_at_after: non_blank(args.created_at_after),
        updated_at_before: non_blank(args.updated_at_before),
        updated_at_after: non_blank(args.updated_at_after),
        assigned_to_user_id: args.assigned_to_user_id,
        primary_user_id: args.primary_user_id,
        team_id: args.team_id,
        asset_id: args.asset_id,
        location_id: args.location_id,
        category_id: args.category_id,
        sort_by: non_blank(args.sort_by)
            .as_deref()
            .map(atlas::normalize_sort_field)
            .transpose()?,
        sort_direction: non_blank(args.sort_direction)
            .as_deref()
            .map(atlas::normalize_sort_direction)
            .transpose()?,
    };
    let text = atlas::search_work_orders_text(&query)?;
    if let Some(listing) = listing::summarize(&text, limit as usize) {
        let count = listing.items.len();
        return Ok(Output::json(&listing).with_count(count));
    }
    // An answer the borrowing parse does not take (a repeated key, say): the
    // same summary through `Value`s.
    let (listing, count) = listing_by_value(&text, limit as usize)?;
    Ok(Output::json(&listing).with_count(count))
}

/// The work order list built with `Value`s, and how many items it has.
fn listing_by_value(text: &str, limit: usize) -> Result<(Value, usize), ToolError> {
    let page = SearchPage::parse(text)?;
    let items: Vec<Value> = page
        .results
        .iter()
        .filter_map(summarize)
        .take(limit)
        .collect();
    let total = page.total.unwrap_or(items.len() as u64);
    let count = items.len();
    Ok((
        json!({ "type": "work_orders", "total": total, "items": items }),
        count,
    ))
}

/// The fields the model sees per work order (the backend sends more).
/// `listing` builds the same JSON without `Value`s; keep the two in step.
fn summarize(wo: &Value) -> Option<Value> {
    let o = wo.as_object()?;
    let text = |k: &str| o.get(k).filter(|v| !v.is_null() && v.as_str() != Some(""));
    let asset = match o.get("asset") {
        Some(Value::Object(a)) => a.get("name").or_else(|| a.get("customId")).cloned(),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.clone()),
    };
    Some(json!({
        "id": o.get("id"),
        "code": text("code").or_else(|| text("customId")).or_else(|| o.get("id")),
        "title": text("title").or_else(|| text("description")).cloned().unwrap_or_else(|| json!("Work order")),
        "priority": o.get("priority"),
        "status": o.get("status"),
        "dueDate": o.get("dueDate"),
        "asset": asset,
    }))
}

pub fn view_work_order_details(
    _: &Context,
    args: WorkOrderDetailsArgs,
) -> Result<Output, ToolError> {
    let details = atlas::work_order_details(&args.work_order_id)?;
    Ok(Output::json(&json!({ "type": "work_order_details", "details": details })).with_count(1))
}

pub fn create_work_order_immediately(
    _: &Context,
    args: CreateWorkOrderArgs,
) -> Result<Output, ToolError> {
    let title = non_blank(Some(args.title))
        .ok_or_else(|| ToolError::invalid("title is required to create a work order"))?;
    let fields = args.fields.normalized()?;
    let created = atlas::create_work_order(&title, &fields)?;
    Ok(Output::json(&json!({
        "status": "created",
        "workOrder": created.work_order,
        "message": created.message.unwrap_or_else(|| "Work order created successfully".into()),
    }))
    .with_count(1))
}

pub fn update_work_order(_: &Context, args: UpdateWorkOrderArgs) -> Result<Output, ToolError> {
    let title = non_blank(args.title);
    let fields = args.fields.normalized()?;
    if title.is_none() && fields.is_empty() {
        return Err(ToolError::invalid(
            "nothing to update: give at least one field to change",
        ));
    }
    let updated = atlas::update_work_order(&args.work_order_id, title.as_deref(), &fields)?;
    Ok(Output::json(&json!({
        "status": "updated",
        "workOrder": updated.work_order,
        "message": updated.message.unwrap_or_else(|| "Work order updated successfully".into()),
        "updatedFields": updated.updated_fields,
    }))
    .with_count(1))
}

pub fn tools() -> Tools {
    Tools::new()
        .read("view_work_orders", view_work_orders)
        .read("view_work_order_details", view_work_order_details)
        .write(
            "create_work_order_immediately",
            create_work_order_immediately,
        )
        .write("update_work_order", update_work_order)
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests;
