//! Defining tools: the registry, their outputs and their errors.

use std::fmt;

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::Context;

/// How a tool touches the backend; the host uses it for audit and access policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    /// Reads backend data; reported in `toolCalls`.
    Read,
    /// Changes backend data; reported in `toolCalls`.
    Write,
    /// Prepares a draft for the user to confirm; changes nothing.
    Draft,
    /// Answers from the call context alone.
    Context,
}

/// Why a tool call failed. The message is shown to the model, so make it
/// something the model can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The arguments do not fit the schema or make no sense.
    InvalidArguments(String),
    /// The thing asked for does not exist (or is not visible to the user).
    NotFound(String),
    /// The backend or the host refused the call.
    Forbidden(String),
    /// The backend failed or could not be reached.
    Backend(String),
    /// The plugin itself failed.
    Internal(String),
}

impl ToolError {
    /// Shorthand for [`ToolError::InvalidArguments`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArguments(message.into())
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidArguments(m)
            | Self::NotFound(m)
            | Self::Forbidden(m)
            | Self::Backend(m)
            | Self::Internal(m) => m,
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::InvalidArguments(_) => "invalid arguments",
            Self::NotFound(_) => "not found",
            Self::Forbidden(_) => "forbidden",
            Self::Backend(_) => "backend error",
            Self::Internal(_) => "internal error",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for ToolError {}

/// An action the user has to confirm before it happens. The host adds the
/// session id (`agentSessionId`) when it collects drafts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Draft {
    /// The operation, e.g. `complete_work_order`.
    pub operation_type: String,
    /// The operation's payload, a JSON object.
    pub payload: Value,
    /// One line the user reads before confirming.
    pub summary: String,
}

impl Draft {
    /// A draft of `operation_type` with `payload` and `summary`.
    pub fn new(
        operation_type: impl Into<String>,
        payload: Value,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            operation_type: operation_type.into(),
            payload,
            summary: summary.into(),
        }
    }
}

/// What a tool function returns on success.
#[derive(Debug, Clone)]
pub struct Output {
    // Serialisation failures surface as `ToolError::Internal` at the boundary,
    // which keeps `Output::json` infallible for the author.
    content: Result<String, String>,
    result_count: Option<u32>,
    draft: Option<Draft>,
}

impl Output {
    /// Content given to the model: `value` serialised as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        Self {
            content: serde_json::to_string(value).map_err(|e| e.to_string()),
            result_count: None,
            draft: None,
        }
    }

    /// Content given to the model as is. The host expects JSON; use this only
    /// when the text already is JSON (or to test the host).
    pub fn raw(text: impl Into<String>) -> Self {
        Self {
            content: Ok(text.into()),
            result_count: None,
            draft: None,
        }
    }

    /// How many items a list tool found (reported as `resultCount`).
    pub fn with_count(mut self, count: usize) -> Self {
        self.result_count = Some(u32::try_from(count).unwrap_or(u32::MAX));
        self
    }

    /// A draft for the user to confirm, collected into the response's `drafts`.
    pub fn with_draft(mut self, draft: Draft) -> Self {
        self.draft = Some(draft);
        self
    }

    pub(crate) fn finish(self) -> Result<ToolOutput, ToolError> {
        let content = self
            .content
            .map_err(|e| ToolError::Internal(format!("tool output is not serialisable: {e}")))?;
        Ok(ToolOutput {
            content,
            result_count: self.result_count,
            draft: self.draft,
        })
    }
}

/// A finished tool output, as the host receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The JSON text given to the model.
    pub content: String,
    /// The item count of a list tool.
    pub result_count: Option<u32>,
    /// The draft the tool prepared, if any.
    pub draft: Option<Draft>,
}

impl ToolOutput {
    /// The content parsed as JSON. Panics when it is not JSON (meant for tests).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.content)
            .unwrap_or_else(|e| panic!("tool content is not JSON ({e}): {}", self.content))
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Unique name, `[a-zA-Z0-9_-]{1,64}`.
    pub name: String,
    /// What the tool does, from the arguments type's doc comment.
    pub description: String,
    /// Strict JSON Schema of the arguments object.
    pub parameters: Value,
    /// How the tool touches the backend.
    pub kind: ToolKind,
}

type Handler = Box<dyn Fn(&Context, &str) -> Result<Output, ToolError>>;

struct Entry {
    name: String,
    kind: ToolKind,
    // Schemas are built only for `describe` (once per load), not per call.
    schema: fn() -> Value,
    handler: Handler,
}

/// The tools a plugin offers, built with one call per tool:
///
/// ```ignore
/// Tools::new()
///     .read("view_assets", view_assets)
///     .draft("prepare_work_order_completion_draft", completion_draft)
/// ```
///
/// Each function takes `(&Context, Args)` where `Args: Deserialize + JsonSchema`;
/// the doc comment on `Args` is the tool description.
#[derive(Default)]
pub struct Tools {
    entries: Vec<Entry>,
}

impl Tools {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a tool that reads backend data.
    pub fn read<A, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> Result<Output, ToolError> + 'static,
    {
        self.tool(ToolKind::Read, name, f)
    }

    /// Add a tool that changes backend data.
    pub fn write<A, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> Result<Output, ToolError> + 'static,
    {
        self.tool(ToolKind::Write, name, f)
    }

    /// Add a tool that prepares a draft for the user to confirm.
    pub fn draft<A, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> Result<Output, ToolError> + 'static,
    {
        self.tool(ToolKind::Draft, name, f)
    }

    /// Add a tool that answers from the call context alone.
    pub fn context<A, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> Result<Output, ToolError> + 'static,
    {
        self.tool(ToolKind::Context, name, f)
    }

    /// Add a tool of any kind.
    pub fn tool<A, F>(mut self, kind: ToolKind, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> Result<Output, ToolError> + 'static,
    {
        self.entries.push(Entry {
            name: name.to_owned(),
            kind,
            schema: crate::schema::schema_for::<A>,
            handler: Box::new(move |ctx, raw| f(ctx, parse_args::<A>(raw)?)),
        });
        self
    }

    /// The names, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The specs offered to the model. The root `description` of each schema
    /// moves into [`ToolSpec::description`].
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.entries
            .iter()
            .map(|e| {
                let mut parameters = (e.schema)();
                let description = parameters
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .and_then(|d| d.as_str().map(str::to_owned))
                    .unwrap_or_default();
                ToolSpec {
                    name: e.name.clone(),
                    description,
                    parameters,
                    kind: e.kind,
                }
            })
            .collect()
    }

    /// Run tool `name` with `arguments` (JSON text).
    pub fn invoke(
        &self,
        ctx: &Context,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutput, ToolError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                ToolError::NotFound(format!("this plugin has no tool named `{name}`"))
            })?;
        (entry.handler)(ctx, arguments)?.finish()
    }
}

/// Parse tool arguments. Strict-mode models send `null` for every absent
/// optional property; nulls inside objects are dropped first so that
/// `#[serde(default)]` fields get their defaults instead of a type error.
pub(crate) fn parse_args<A: DeserializeOwned>(raw: &str) -> Result<A, ToolError> {
    let raw = raw.trim();
    let mut value: Value = if raw.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(raw)
            .map_err(|e| ToolError::invalid(format!("arguments are not valid JSON: {e}")))?
    };
    if value.is_null() {
        value = Value::Object(Map::new());
    }
    if !value.is_object() {
        return Err(ToolError::invalid("arguments must be a JSON object"));
    }
    drop_nulls(&mut value);
    serde_path_to_error::deserialize(value)
        .map_err(|e| ToolError::InvalidArguments(describe_path_error(e)))
}

/// `field: message`, or just the message at the root (serde's
/// "missing field `title`" already names the field).
pub(crate) fn describe_path_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Args {
        title: String,
        limit: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn nulls_mean_absent() {
        let a: Args = parse_args(r#"{"title":"x","limit":null,"tags":null}"#).unwrap();
        assert_eq!(
            a,
            Args {
                title: "x".into(),
                limit: None,
                tags: vec![]
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_args::<Args>(r#"{"title":"x","limit":"many"}"#).unwrap_err();
        assert!(
            matches!(&e, ToolError::InvalidArguments(m) if m.starts_with("limit: ")),
            "{e}"
        );
        let e = parse_args::<Args>(r#"{"limit":3}"#).unwrap_err();
        assert!(e.message().contains("title"), "{e}");
        let e = parse_args::<Args>(r#"{"title":"x","tags":["a",1]}"#).unwrap_err();
        assert!(e.message().starts_with("tags[1]: "), "{e}");
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        assert!(matches!(
            parse_args::<Args>("[1]"),
            Err(ToolError::InvalidArguments(_))
        ));
        assert!(matches!(
            parse_args::<Args>("{"),
            Err(ToolError::InvalidArguments(_))
        ));
    }

    #[test]
    fn empty_arguments_read_as_empty_object() {
        #[derive(Deserialize)]
        struct NoArgs {}
        assert!(parse_args::<NoArgs>("").is_ok());
        assert!(parse_args::<NoArgs>("null").is_ok());
    }
}
