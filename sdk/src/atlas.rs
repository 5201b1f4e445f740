//! Typed calls to the Atlas agent tool endpoints (`/api/agent/tools/...`),
//! with backend failures mapped to [`ToolError`]s the model can act on.
//!
//! Error mapping: 400/422 -> `InvalidArguments`, 401/403 -> `Forbidden`,
//! 404 -> `NotFound`, any other status -> `Backend`; the backend's
//! `{"success": false, "message": "..."}` message is passed on. Host refusals:
//! not granted -> `Forbidden`, invalid path -> `InvalidArguments`, timeout,
//! unreachable or too large -> `Backend`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use crate::ToolError;
use crate::backend::{self, BackendError, Method, Response};

/// Work order statuses the search accepts.
pub const WORK_ORDER_STATUSES: &[&str] = &["OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETE"];
/// The statuses searched when none are given.
pub const DEFAULT_WORK_ORDER_STATUSES: &[&str] = &["OPEN", "IN_PROGRESS", "ON_HOLD"];
/// Work order priorities.
pub const PRIORITIES: &[&str] = &["NONE", "LOW", "MEDIUM", "HIGH"];
/// Fields the work order search can sort by.
pub const SORT_FIELDS: &[&str] = &["dueDate", "priority", "status", "createdAt", "updatedAt"];

/// `api/agent/tools/<rest>`, as segments.
fn tool_path<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["api", "agent", "tools"];
    path.extend_from_slice(rest);
    path
}
/// Longest backend message passed on to the model.
const MAX_MESSAGE: usize = 300;

/// A status label as the backend wants it: case-insensitive, spaces or
/// dashes for underscores, and "completed"/"done"/"closed" meaning `COMPLETE`.
pub fn normalize_status(label: &str) -> Result<String, ToolError> {
    let key = canonical(label);
    let status = match key.as_str() {
        "COMPLETED" | "DONE" | "CLOSED" | "FINISHED" => "COMPLETE",
        "INPROGRESS" | "STARTED" => "IN_PROGRESS",
        "ONHOLD" | "PAUSED" => "ON_HOLD",
        "OPENED" | "NEW" => "OPEN",
        other => other,
    };
    if WORK_ORDER_STATUSES.contains(&status) {
        Ok(status.to_owned())
    } else {
        Err(ToolError::invalid(format!(
            "unknown work order status {label:?}; use one of {}",
            WORK_ORDER_STATUSES.join(", ")
        )))
    }
}

/// A priority, upper-cased and checked against [`PRIORITIES`].
pub fn normalize_priority(label: &str) -> Result<String, ToolError> {
    let key = canonical(label);
    if PRIORITIES.contains(&key.as_str()) {
        Ok(key)
    } else {
        Err(ToolError::invalid(format!(
            "unknown priority {label:?}; use one of {}",
            PRIORITIES.join(", ")
        )))
    }
}

/// `ASC` or `DESC`, case-insensitively.
pub fn normalize_sort_direction(label: &str) -> Result<String, ToolError> {
    match canonical(label).as_str() {
        "ASC" | "ASCENDING" => Ok("ASC".into()),
        "DESC" | "DESCENDING" => Ok("DESC".into()),
        _ => Err(ToolError::invalid(format!(
            "unknown sortDirection {label:?}; use ASC or DESC"
        ))),
    }
}

/// A sort field from [`SORT_FIELDS`], matched ignoring case and `_`.
pub fn normalize_sort_field(label: &str) -> Result<String, ToolError> {
    let key = canonical(label).replace('_', "");
    SORT_FIELDS
        .iter()
        .find(|f| f.to_ascii_uppercase() == key)
        .map(|f| (*f).to_owned())
        .ok_or_else(|| {
            ToolError::invalid(format!(
                "unknown sortBy {label:?}; use one of {}",
                SORT_FIELDS.join(", ")
            ))
        })
}

/// Upper-case, trimmed, inner spaces and dashes as `_` (`"in progress"` -> `IN_PROGRESS`).
fn canonical(label: &str) -> String {
    label
        .trim()
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_uppercase()
}

/// A work order reference given by the model: a numeric id or a code like
/// `WO000101`. Accepts a JSON string or integer; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkOrderRef(String);

impl WorkOrderRef {
    /// Wrap a reference (trimmed).
    pub fn new(reference: impl AsRef<str>) -> Result<Self, ToolError> {
        let r = reference.as_ref().trim();
        if r.is_empty() {
            Err(ToolError::invalid("workOrderId must not be empty"))
        } else {
            Ok(Self(r.to_owned()))
        }
    }

    /// The reference as given, to put into a path segment.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The numeric id when there is one: `101` for `"101"` or for a code
    /// like `"WO000101"` (letters, then digits).
    pub fn numeric_id(&self) -> Option<i64> {
        let digits = self.0.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let digits = digits.strip_prefix(['-', '_', '#']).unwrap_or(digits);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The reference as JSON, as given: a number when it is all digits, else a string.
    pub fn to_json(&self) -> Value {
        match self.0.parse::<i64>() {
            Ok(n) if self.0.bytes().all(|b| b.is_ascii_digit()) => json!(n),
            _ => json!(self.0),
        }
    }
}

impl fmt::Display for WorkOrderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkOrderRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(n) => n.to_string(),
            Raw::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.0}"),
            Raw::Float(f) => {
                return Err(serde::de::Error::custom(format!(
                    "{f} is not a work order id"
                )));
            }
        };
        WorkOrderRef::new(text).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl JsonSchema for WorkOrderRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WorkOrderRef".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{ "type": "string" }, { "type": "integer" }]
        })
    }
}

/// Deserialize a list that the model may also send as a single value.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(x)) => vec![x],
    })
}

/// Body of `POST /api/agent/tools/work-orders/search`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderSearch {
    pub limit: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub priorities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to_user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_direction: Option<String>,
}

/// Body of `POST /api/agent/tools/assets/search`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetSearch {
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}

/// One page of search results; items are kept as the backend sent them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPage {
    /// The results (`results` of the answer, or the answer itself when it is a list).
    pub results: Vec<Value>,
    /// The backend's total match count, when it sent one.
    pub total: Option<u64>,
}

impl SearchPage {
    /// A search answer given as text (see [`search_work_orders_text`]).
    pub fn parse(text: &str) -> Result<Self, ToolError> {
        serde_json::from_str(text)
            .map(Self::from_value)
            .map_err(unexpected_answer)
    }

    fn from_value(v: Value) -> Self {
        match v {
            Value::Array(results) => Self {
                results,
                total: None,
            },
            Value::Object(mut o) => Self {
                results: match o.remove("results") {
                    Some(Value::Array(r)) => r,
                    _ => Vec::new(),
                },
                total: o.get("total").and_then(Value::as_u64),
            },
            _ => Self::default(),
        }
    }
}

/// The optional work order fields of create and update (everything but the
/// title). Arguments types can `#[serde(flatten)]` this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderFields {
    /// Longer description of the work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// NONE, LOW, MEDIUM or HIGH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Due date, ISO 8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// Estimated start date, ISO 8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_start_date: Option<String>,
    /// Estimated duration in hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_duration_hours: Option<f64>,
    /// Whether completing it needs a signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<bool>,
    /// Location id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<i64>,
    /// Asset id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<i64>,
    /// Team id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    /// Id of the primary (responsible) user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_user_id: Option<i64>,
    /// Category id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    /// Ids of the users to assign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_user_ids: Option<Vec<i64>>,
}

impl WorkOrderFields {
    /// Trim texts (blank ones become absent) and normalise the priority.
    pub fn normalized(mut self) -> Result<Self, ToolError> {
        fn tidy(v: &mut Option<String>) {
            if let Some(s) = v {
                let t = s.trim();
                *v = (!t.is_empty()).then(|| t.to_owned());
            }
        }
        tidy(&mut self.description);
        tidy(&mut self.due_date);
        tidy(&mut self.estimated_start_date);
        tidy(&mut self.priority);
        self.priority = self
            .priority
            .as_deref()
            .map(normalize_priority)
            .transpose()?;
        Ok(self)
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The answer of create and update.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// The work order as the backend returned it.
    pub work_order: Value,
    /// The backend's message, if any.
    pub message: Option<String>,
    /// The fields the backend changed (update only).
    pub updated_fields: Vec<Value>,
}

impl WriteResult {
    fn from_value(mut v: Value) -> Self {
        let message = v.get("message").and_then(Value::as_str).map(str::to_owned);
        let updated_fields = match v.get_mut("updatedFields").map(Value::take) {
            Some(Value::Array(f)) => f,
            _ => Vec::new(),
        };
        Self {
            work_order: v
                .get_mut("workOrder")
                .map(Value::take)
                .unwrap_or(Value::Null),
            message,
            updated_fields,
        }
    }
}

/// `POST /api/agent/tools/work-orders/search`.
pub fn search_work_orders(query: &WorkOrderSearch) -> Result<SearchPage, ToolError> {
    let body = to_value(query)?;
    call(
        Method::Post,
        &tool_path(&["work-orders", "search"]),
        Some(&body),
    )
    .map(SearchPage::from_value)
}

/// [`search_work_orders`], with the answer as text for a plugin's own
/// parsing (see [`call_text`]); [`SearchPage::parse`] reads it as `Value`s.
pub fn search_work_orders_text(query: &WorkOrderSearch) -> Result<String, ToolError> {
    let body = serde_json::to_string(query).map_err(encode_error)?;
    text_answer(
        Method::Post,
        &tool_path(&["work-orders", "search"]),
        Some(body),
    )
}

/// `POST /api/agent/tools/work-orders/{id}/details` with body `{}`.
pub fn work_order_details(id: &WorkOrderRef) -> Result<Value, ToolError> {
    call(
        Method::Post,
        &tool_path(&["work-orders", id.as_str(), "details"]),
        Some(&json!({})),
    )
}

/// `POST /api/agent/tools/assets/search`.
pub fn search_assets(query: &AssetSearch) -> Result<SearchPage, ToolError> {
    let body = to_value(query)?;
    call(Method::Post, &tool_path(&["assets", "search"]), Some(&body)).map(SearchPage::from_value)
}

/// `POST /api/agent/tools/work-orders/create` with `title` and `fields`.
pub fn create_work_order(title: &str, fields: &WorkOrderFields) -> Result<WriteResult, ToolError> {
    let mut body = Map::new();
    body.insert("title".into(), json!(title));
    extend(&mut body, fields)?;
    call(
        Method::Post,
        &tool_path(&["work-orders", "create"]),
        Some(&Value::Object(body)),
    )
    .map(WriteResult::from_value)
}

/// `POST /api/agent/tools/work-orders/{id}/update`; the body carries
/// `workOrderId`, the new `title` when given, and `fields`.
pub fn update_work_order(
    id: &WorkOrderRef,
    title: Option<&str>,
    fields: &WorkOrderFields,
) -> Result<WriteResult, ToolError> {
    let mut body = Map::new();
    body.insert("workOrderId".into(), id.to_json());
    if let Some(t) = title {
        body.insert("title".into(), json!(t));
    }
    extend(&mut body, fields)?;
    call(
        Method::Post,
        &tool_path(&["work-orders", id.as_str(), "update"]),
        Some(&Value::Object(body)),
    )
    .map(WriteResult::from_value)
}

/// Call any backend endpoint and get its JSON answer, with errors mapped as
/// described in the module docs. An empty 2xx body reads as `null`.
pub fn call(method: Method, path: &[&str], body: Option<&Value>) -> Result<Value, ToolError> {
    let response = backend::request(method, path, body).map_err(from_backend_error)?;
    from_response(response)
}

/// Like [`call`], but a successful answer comes back as text, for a plugin
/// that parses it into its own (borrowing) types instead of a `Value` tree,
/// whose allocations dominate a list tool's own work. The same answers
/// are errors: a failed status, and an object with `"success": false`. An
/// empty 2xx body reads as `null`; other text is not checked here, so the
/// caller's parse reports invalid JSON.
pub fn call_text(method: Method, path: &[&str], body: Option<&Value>) -> Result<String, ToolError> {
    text_answer(method, path, body.map(Value::to_string))
}

/// [`call_text`] with a body that is already JSON text.
fn text_answer(method: Method, path: &[&str], body: Option<String>) -> Result<String, ToolError> {
    /// The one field of an answer that makes a 2xx a failure.
    #[derive(Deserialize)]
    struct Outcome {
        success: Option<Value>,
    }
    let response = backend::send(method, path, body).map_err(from_backend_error)?;
    let text = response.body.trim_start();
    if text.is_empty() && response.is_success() {
        return Ok("null".into());
    }
    let judge_fully = !response.is_success()
        || (text.starts_with('{')
            && may_name_success(text)
            && match serde_json::from_str::<Outcome>(text) {
                Ok(o) => o.success == Some(Value::Bool(false)),
                // Invalid JSON, or a shape the small struct cannot take (a
                // repeated key): judged exactly as `call` judges it.
                Err(_) => true,
            });
    if judge_fully {
        // Failures are rare: they are mapped exactly as `call` maps them.
        return match from_response(response) {
            Err(e) => Err(e),
            Ok(value) => Ok(value.to_string()),
        };
    }
    Ok(response.body)
}

/// Whether a key of `text` could be `success`. Such a key is written either
/// with the letters themselves or with a `\u` escape (no other escape
/// stands for a letter), so text with neither needs no parse to know its
/// answer has no `success` field: a byte search instead of a JSON pass over
/// an answer that is mostly a list.
fn may_name_success(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memmem::find(bytes, b"success").is_some()
        || memchr::memmem::find(bytes, b"\\u").is_some()
}

/// Call an endpoint and deserialize its JSON answer into `T`.
pub fn call_as<T: DeserializeOwned>(
    method: Method,
    path: &[&str],
    body: Option<&Value>,
) -> Result<T, ToolError> {
    serde_json::from_value(call(method, path, body)?).map_err(unexpected_answer)
}

/// An answer that is JSON but not of the expected shape.
fn unexpected_answer(e: serde_json::Error) -> ToolError {
    ToolError::Backend(format!("unexpected answer from the Atlas backend: {e}"))
}

/// Map a host refusal to a tool error.
pub fn from_backend_error(e: BackendError) -> ToolError {
    match e {
        BackendError::NotGranted(m) => ToolError::Forbidden(format!(
            "the operator has not granted this plugin access to {m}"
        )),
        BackendError::InvalidPath(m) => {
            ToolError::InvalidArguments(format!("invalid backend path: {m}"))
        }
        BackendError::InvalidBody(m) => {
            ToolError::Internal(format!("request body could not be encoded: {m}"))
        }
        BackendError::Timeout => {
            ToolError::Backend("the Atlas backend did not answer in time".into())
        }
        BackendError::Unavailable(m) => {
            ToolError::Backend(format!("the Atlas backend is unavailable: {m}"))
        }
        BackendError::TooLarge => {
            ToolError::Backend("the Atlas backend answer was too large".into())
        }
    }
}

/// Map a backend answer: 2xx JSON is the value, anything else an error.
pub fn from_response(response: Response) -> Result<Value, ToolError> {
    let parsed: Option<Value> = if response.body.trim().is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_str(&response.body).ok()
    };
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("error")))
        .and_then(Value::as_str)
        .map(short);
    if response.is_success() {
        let value = parsed.ok_or_else(|| {
            ToolError::Backend("the Atlas backend answered with invalid JSON".into())
        })?;
        if value.get("success") == Some(&Value::Bool(false)) {
            return Err(ToolError::Backend(
                message.unwrap_or_else(|| "the Atlas backend reported a failure".into()),
            ));
        }
        return Ok(value);
    }
    let status = response.status;
    Err(match status {
        400 | 422 => ToolError::InvalidArguments(
            message.unwrap_or_else(|| "the Atlas backend rejected the request".into()),
        ),
        401 | 403 => ToolError::Forbidden(
            message.unwrap_or_else(|| "the user may not do this in Atlas".into()),
        ),
        404 => ToolError::NotFound(message.unwrap_or_else(|| "not found in Atlas".into())),
        _ => ToolError::Backend(match message {
            Some(m) => format!("the Atlas backend failed ({status}): {m}"),
            None => format!("the Atlas backend failed ({status})"),
        }),
    })
}

fn short(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, ToolError> {
    serde_json::to_value(v).map_err(encode_error)
}

fn encode_error(e: serde_json::Error) -> ToolError {
    ToolError::Internal(format!("request body could not be encoded: {e}"))
}

fn extend(body: &mut Map<String, Value>, fields: &WorkOrderFields) -> Result<(), ToolError> {
    if let Value::Object(f) = to_value(fields)? {
        body.extend(f);
    }
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn statuses_normalise() {
        for (given, want) in [
            ("open", "OPEN"),
            ("Completed", "COMPLETE"),
            ("completed", "COMPLETE"),
            ("COMPLETE", "COMPLETE"),
            ("in progress", "IN_PROGRESS"),
            ("In-Progress", "IN_PROGRESS"),
            ("inprogress", "IN_PROGRESS"),
            (" on hold ", "ON_HOLD"),
        ] {
            assert_eq!(normalize_status(given).unwrap(), want, "{given}");
        }
        assert!(matches!(
            normalize_status("lost"),
            Err(ToolError::InvalidArguments(_))
        ));
    }

    #[test]
    fn priorities_and_sorting_normalise() {
        assert_eq!(normalize_priority("high").unwrap(), "HIGH");
        assert!(normalize_priority("urgent").is_err());
        assert_eq!(normalize_sort_direction("desc").unwrap(), "DESC");
        assert!(normalize_sort_direction("up").is_err());
        assert_eq!(normalize_sort_field("due_date").unwrap(), "dueDate");
        assert_eq!(normalize_sort_field("UPDATEDAT").unwrap(), "updatedAt");
        assert!(normalize_sort_field("title").is_err());
    }

    #[test]
    fn work_order_refs() {
        let r: WorkOrderRef = serde_json::from_value(json!("WO000101")).unwrap();
        assert_eq!(r.numeric_id(), Some(101));
        assert_eq!(r.to_json(), json!("WO000101"));
        let r: WorkOrderRef = serde_json::from_value(json!(42)).unwrap();
        assert_eq!(r.as_str(), "42");
        assert_eq!(r.to_json(), json!(42));
        let r: WorkOrderRef = serde_json::from_value(json!("pump-A")).unwrap();
        assert_eq!(r.numeric_id(), None);
        assert_eq!(r.to_json(), json!("pump-A"));
        let r: WorkOrderRef = serde_json::from_value(json!("../../auth/me")).unwrap();
        assert_eq!(r.numeric_id(), None);
        assert!(serde_json::from_value::<WorkOrderRef>(json!("  ")).is_err());
        assert!(serde_json::from_value::<WorkOrderRef>(json!(true)).is_err());
    }

    #[test]
    fn responses_map_to_errors() {
        let resp = |status, body: &str| Response {
            status,
            body: body.into(),
        };
        let msg = r#"{"success":false,"message":"Work order not found"}"#;
        assert_eq!(
            from_response(resp(404, msg)),
            Err(ToolError::NotFound("Work order not found".into()))
        );
        assert!(matches!(
            from_response(resp(403, msg)),
            Err(ToolError::Forbidden(_))
        ));
        assert!(matches!(
            from_response(resp(401, "")),
            Err(ToolError::Forbidden(_))
        ));
        assert!(matches!(
            from_response(resp(400, msg)),
            Err(ToolError::InvalidArguments(_))
        ));
        assert!(
            matches!(from_response(resp(500, "<html>")), Err(ToolError::Backend(m)) if m.contains("500"))
        );
        assert!(matches!(
            from_response(resp(200, msg)),
            Err(ToolError::Backend(_))
        ));
        assert!(matches!(
            from_response(resp(200, "not json")),
            Err(ToolError::Backend(_))
        ));
        assert_eq!(from_response(resp(200, r#"{"a":1}"#)), Ok(json!({"a":1})));
        assert!(matches!(
            from_backend_error(BackendError::NotGranted("x".into())),
            ToolError::Forbidden(_)
        ));
        assert!(matches!(
            from_backend_error(BackendError::Timeout),
            ToolError::Backend(_)
        ));
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(1000));
        assert!(from_response(resp(500, &long)).unwrap_err().message().len() < 400);
    }

    #[test]
    fn search_page_shapes() {
        let p = SearchPage::from_value(json!({"results":[{"id":1}],"total":9}));
        assert_eq!((p.results.len(), p.total), (1, Some(9)));
        let p = SearchPage::from_value(json!([{"id":1},{"id":2}]));
        assert_eq!((p.results.len(), p.total), (2, None));
    }
}
