//! Run tools and policies natively, against a mock Atlas backend.
//!
//! ```
//! use atlas_agent_sdk::prelude::*;
//! use atlas_agent_sdk::testing::Harness;
//!
//! /// Count open work orders.
//! #[derive(Deserialize, JsonSchema)]
//! struct CountArgs {}
//!
//! fn count(_: &Context, _: CountArgs) -> Result<Output, ToolError> {
//!     let res = backend::post(&["api", "agent", "tools", "work-orders", "search"], &json!({ "limit": 1 }))
//!         .map_err(|e| ToolError::Backend(e.to_string()))?;
//!     let body: Value = res.json().map_err(|e| ToolError::Backend(e.to_string()))?;
//!     Ok(Output::json(&json!({ "open": body["total"] })))
//! }
//!
//! let h = Harness::new(Tools::new().read("count", count))
//!     .on(Method::Post, "/api/agent/tools/work-orders/search", |_req| (200, json!({ "results": [], "total": 3 })));
//! assert_eq!(h.invoke("count", json!({})).unwrap().json()["open"], 3);
//! assert_eq!(h.requests()[0].json()["limit"], 1);
//! ```
//!
//! The harness calls the tool through the same conversions the wasm export
//! uses. Backend calls are answered by the routes given with [`Harness::on`];
//! an unrouted call fails with [`BackendError::Unavailable`]. After
//! [`Harness::policy_file`], calls the file does not grant fail with
//! [`BackendError::NotGranted`], as they would in the host.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use crate::backend::{BackendError, Method, Response};
use crate::glue;
use crate::log::Level;
use crate::{Context, Decision, Hook, Policy, ToolError, ToolOutput, ToolSpec, Tools, User};

/// A request a tool sent to the mock backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The raw (unencoded) path segments, exactly as the plugin passed them.
    pub segments: Vec<String>,
    /// The body text, if any.
    pub body: Option<String>,
}

impl Request {
    /// The segments joined with `/`, with a leading `/` (for display and asserts;
    /// the host percent-encodes each segment instead).
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }

    /// The body parsed as JSON (`null` when there is none). Panics on bad JSON.
    pub fn json(&self) -> Value {
        match &self.body {
            None => Value::Null,
            Some(b) => serde_json::from_str(b)
                .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {b}")),
        }
    }
}

/// What a mock route may answer.
pub trait IntoReply {
    /// The reply as the backend module returns it.
    fn into_reply(self) -> Result<Response, BackendError>;
}

impl IntoReply for (u16, Value) {
    fn into_reply(self) -> Result<Response, BackendError> {
        Ok(Response {
            status: self.0,
            body: self.1.to_string(),
        })
    }
}

impl IntoReply for (u16, &str) {
    fn into_reply(self) -> Result<Response, BackendError> {
        Ok(Response {
            status: self.0,
            body: self.1.to_owned(),
        })
    }
}

impl IntoReply for (u16, String) {
    fn into_reply(self) -> Result<Response, BackendError> {
        Ok(Response {
            status: self.0,
            body: self.1,
        })
    }
}

impl IntoReply for BackendError {
    fn into_reply(self) -> Result<Response, BackendError> {
        Err(self)
    }
}

impl IntoReply for Result<Response, BackendError> {
    fn into_reply(self) -> Result<Response, BackendError> {
        self
    }
}

type Reply = Box<dyn Fn(&Request) -> Result<Response, BackendError>>;

struct Route {
    method: Method,
    pattern: Vec<String>,
    reply: Reply,
}

#[derive(Default)]
struct Mock {
    routes: Vec<Route>,
    // `None` = everything granted; `Some` = only these (from a policy file),
    // one router per method over percent-encoded paths, as in the host.
    grants: Option<Vec<(Method, matchit::Router<()>)>>,
    requests: RefCell<Vec<Request>>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl Mock {
    fn allows(&self, method: Method, segments: &[String]) -> bool {
        self.grants.as_ref().is_none_or(|grants| {
            let path = encode_path(segments);
            grants
                .iter()
                .any(|(m, r)| *m == method && r.at(&path).is_ok())
        })
    }
}

/// The host's limits on a backend path.
const MAX_SEGMENTS: usize = 16;
const MAX_SEGMENT_LEN: usize = 512;

/// Everything but the RFC 3986 unreserved characters is encoded, as the
/// host encodes each segment: a segment never adds a `/` of its own.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_path(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", percent_encoding::utf8_percent_encode(s, SEGMENT)))
        .collect()
}

/// The policy file as the host reads it: unknown keys are refused.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<PolicyGrant>,
    #[serde(default)]
    limits: PolicyLimits,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    policy: Option<PolicySection>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyGrant {
    method: String,
    path: String,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyLimits {
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    memory_mb: Option<usize>,
    output_bytes: Option<usize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    #[allow(dead_code)]
    order: Option<i32>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Rc<Mock>>> = const { RefCell::new(None) };
}

/// Makes `mock` the backend of this thread until dropped (also on panic).
struct Activation;

impl Activation {
    fn new(mock: &Rc<Mock>) -> Self {
        ACTIVE.with(|a| *a.borrow_mut() = Some(Rc::clone(mock)));
        Activation
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        ACTIVE.with(|a| *a.borrow_mut() = None);
    }
}

fn active() -> Option<Rc<Mock>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// Split a route or grant path into segments, ignoring leading/trailing `/`.
fn split(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect()
}

/// `{name}` (or `*`) matches exactly one segment; anything else matches itself.
fn matches(pattern: &[String], segments: &[String]) -> bool {
    pattern.len() == segments.len()
        && pattern
            .iter()
            .zip(segments)
            .all(|(p, s)| p == "*" || (p.starts_with('{') && p.ends_with('}')) || p == s)
}

pub(crate) fn mock_send(
    method: Method,
    path: &[&str],
    body: Option<String>,
) -> Result<Response, BackendError> {
    let Some(mock) = active() else {
        return Err(BackendError::Unavailable(
            "no host: outside wasm the backend exists only inside testing::Harness".into(),
        ));
    };
    // The same refusals as the host's, before anything is "sent".
    if path.is_empty() {
        return Err(BackendError::InvalidPath("empty path".into()));
    }
    if let Some(bad) = path
        .iter()
        .find(|s| s.is_empty() || **s == "." || **s == "..")
    {
        return Err(BackendError::InvalidPath(format!(
            "segment {bad:?} is not allowed"
        )));
    }
    if path.len() > MAX_SEGMENTS {
        return Err(BackendError::InvalidPath(format!(
            "the path has more than {MAX_SEGMENTS} segments"
        )));
    }
    if let Some(long) = path.iter().position(|s| s.len() > MAX_SEGMENT_LEN) {
        return Err(BackendError::InvalidPath(format!(
            "segment {long} is longer than {MAX_SEGMENT_LEN} bytes"
        )));
    }
    let request = Request {
        method,
        segments: path.iter().map(|s| (*s).to_owned()).collect(),
        body,
    };
    if !mock.allows(method, &request.segments) {
        return Err(BackendError::NotGranted(format!(
            "{method} {}",
            request.path()
        )));
    }
    mock.requests.borrow_mut().push(request.clone());
    match mock
        .routes
        .iter()
        .find(|r| r.method == method && matches(&r.pattern, &request.segments))
    {
        Some(route) => (route.reply)(&request),
        None => Err(BackendError::Unavailable(format!(
            "no mock route for {method} {}",
            request.path()
        ))),
    }
}

pub(crate) fn mock_log(level: Level, message: &str) {
    if let Some(mock) = active() {
        mock.logs.borrow_mut().push((level, message.to_owned()));
    }
}

/// Runs tools or a policy natively with a chosen context and mock backend.
pub struct Harness {
    tools: Tools,
    policy: Option<Box<dyn Policy>>,
    ctx: Context,
    mock: Rc<Mock>,
}

impl Harness {
    /// A harness for these tools. The default user is id 7, `TECHNICIAN` of
    /// company 1, named "Test User"; `max_results` is 10; config is `{}`.
    pub fn new(tools: Tools) -> Self {
        Self {
            tools,
            policy: None,
            ctx: Context {
                user: User {
                    id: 7,
                    email: "test.user@example.com".into(),
                    full_name: "Test User".into(),
                    role: "TECHNICIAN".into(),
                    company_id: 1,
                },
                session_id: "test-session".into(),
                request_id: "test-request".into(),
                agent_id: "default-agent".into(),
                max_results: 10,
                config_json: "{}".into(),
            },
            mock: Rc::new(Mock::default()),
        }
    }

    /// A harness for a policy (the same context defaults as [`Harness::new`]).
    pub fn policy(policy: impl Policy + 'static) -> Self {
        let mut h = Self::new(Tools::new());
        h.policy = Some(Box::new(policy));
        h
    }

    /// Replace the calling user.
    pub fn user(mut self, user: User) -> Self {
        self.ctx.user = user;
        self
    }

    /// Set the calling user's role code.
    pub fn role(mut self, role: &str) -> Self {
        self.ctx.user.role = role.into();
        self
    }

    /// Set the session id.
    pub fn session_id(mut self, id: &str) -> Self {
        self.ctx.session_id = id.into();
        self
    }

    /// Set the most results a list tool may ask for.
    pub fn max_results(mut self, n: u32) -> Self {
        self.ctx.max_results = n;
        self
    }

    /// Set the operator config (the `[config]` table) as JSON.
    pub fn config(mut self, config: Value) -> Self {
        self.ctx.config_json = config.to_string();
        self
    }

    /// Apply a plugin policy file (its text, e.g. `include_str!("../x.policy.toml")`):
    /// its `[[allow]]` grants are enforced like the host does, and its
    /// `[config]` table becomes the config. Panics on a malformed file.
    pub fn policy_file(mut self, text: &str) -> Self {
        let file: PolicyFile =
            toml::from_str(text).unwrap_or_else(|e| panic!("policy file refused: {e}"));
        let l = &file.limits;
        assert!(
            l.memory_mb.is_none_or(|m| (1..=1024).contains(&m)),
            "policy file refused: limits.memory_mb must be 1 to 1024"
        );
        assert!(
            l.timeout_ms != Some(0) && l.fuel != Some(0) && l.output_bytes != Some(0),
            "policy file refused: limits must be above zero"
        );
        let mut grants: Vec<(Method, matchit::Router<()>)> = Vec::new();
        for PolicyGrant { method, path } in &file.allow {
            let method = Method::parse(method)
                .unwrap_or_else(|| panic!("policy file refused: unknown method {method:?}"));
            assert!(
                path.starts_with('/') && !path.contains(['?', '#']) && !path.contains(".."),
                "policy file refused: path {path:?} must be absolute, without '?', '#' or '..'"
            );
            let segments = path[1..].split('/').count();
            assert!(
                segments <= MAX_SEGMENTS,
                "policy file refused: path {path:?} has {segments} segments, more than a call can have ({MAX_SEGMENTS})"
            );
            let router = match grants.iter().position(|(m, _)| *m == method) {
                Some(i) => &mut grants[i].1,
                None => {
                    grants.push((method, matchit::Router::new()));
                    &mut grants.last_mut().expect("just pushed").1
                }
            };
            router
                .insert(path.as_str(), ())
                .unwrap_or_else(|e| panic!("policy file refused: path {path:?}: {e}"));
        }
        self.mock_mut().grants = Some(grants);
        let config = file.config.unwrap_or_default();
        self.ctx.config_json = serde_json::to_string(&config).expect("config is JSON-able");
        self
    }

    /// Answer `method` on `path` (segments separated by `/`; `{name}` or `*`
    /// matches one segment) with `reply`, e.g. `|req| (200, json!({...}))`.
    /// The first matching route wins.
    pub fn on<R, F>(mut self, method: Method, path: &str, reply: F) -> Self
    where
        R: IntoReply,
        F: Fn(&Request) -> R + 'static,
    {
        self.mock_mut().routes.push(Route {
            method,
            pattern: split(path),
            reply: Box::new(move |req| reply(req).into_reply()),
        });
        self
    }

    fn mock_mut(&mut self) -> &mut Mock {
        Rc::get_mut(&mut self.mock).expect("configure the harness before invoking it")
    }

    /// Whether `method` on `path` (e.g. `/api/agent/tools/assets/search`) is
    /// granted: always true until [`Harness::policy_file`] is applied.
    pub fn granted(&self, method: Method, path: &str) -> bool {
        self.mock.allows(method, &split(path))
    }

    /// The context the tools and policy see.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The tool specs as the host would receive them. Panics when a spec
    /// would be refused: bad or duplicate name, empty description, or a
    /// parameters schema whose root is not an object.
    pub fn describe(&self) -> Vec<ToolSpec> {
        let specs: Vec<ToolSpec> = glue::describe(&self.tools)
            .into_iter()
            .map(glue::back::spec)
            .collect();
        for (i, s) in specs.iter().enumerate() {
            let valid_name = (1..=64).contains(&s.name.len())
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            assert!(
                valid_name,
                "tool name {:?} must match [a-zA-Z0-9_-]{{1,64}}",
                s.name
            );
            assert!(
                !specs[..i].iter().any(|o| o.name == s.name),
                "tool name {:?} is used twice",
                s.name
            );
            assert!(
                !s.description.trim().is_empty(),
                "tool {:?} has no description: add a doc comment to its arguments type",
                s.name
            );
            assert_eq!(
                s.parameters["type"], "object",
                "tool {:?}: parameters must be an object",
                s.name
            );
        }
        specs
    }

    /// Run `tool` with `arguments`.
    pub fn invoke(&self, tool: &str, arguments: Value) -> Result<ToolOutput, ToolError> {
        self.invoke_raw(tool, &arguments.to_string())
    }

    /// Run `tool` with arguments given as text (to test malformed input).
    pub fn invoke_raw(&self, tool: &str, arguments: &str) -> Result<ToolOutput, ToolError> {
        let _active = Activation::new(&self.mock);
        glue::invoke(
            &self.tools,
            glue::context_to_wit(&self.ctx),
            tool,
            arguments,
        )
        .map(glue::back::output)
        .map_err(glue::back::error)
    }

    fn the_policy(&self) -> &dyn Policy {
        self.policy
            .as_deref()
            .expect("this harness has no policy: build it with Harness::policy")
    }

    /// The hooks the policy declares, as the host will read them at load.
    pub fn hooks(&self) -> Vec<Hook> {
        glue::hooks(self.the_policy())
            .into_iter()
            .map(glue::back::hook)
            .collect()
    }

    /// Panics when the policy does not declare `hook`: the host would never
    /// run it there, so a test calling it would test nothing real.
    fn expect_hook(&self, hook: Hook) {
        let hooks = self.hooks();
        assert!(
            hooks.contains(&hook),
            "the policy declares the hooks {hooks:?}, not {hook:?}, so the host never \
             calls it there; add Hook::{hook:?} to Policy::hooks"
        );
    }

    /// Run the policy's `check_request` hook.
    pub fn check_request(&self, prompt: &str, metadata: Value) -> Decision {
        self.expect_hook(Hook::Request);
        let _active = Activation::new(&self.mock);
        let d = glue::check_request(
            self.the_policy(),
            glue::context_to_wit(&self.ctx),
            prompt,
            &metadata.to_string(),
        );
        glue::back::decision(d)
    }

    /// Run the policy's `check_tool_call` hook.
    pub fn check_tool_call(&self, tool: &str, arguments: Value) -> Decision {
        self.expect_hook(Hook::ToolCall);
        let _active = Activation::new(&self.mock);
        let d = glue::check_tool_call(
            self.the_policy(),
            glue::context_to_wit(&self.ctx),
            tool,
            &arguments.to_string(),
        );
        glue::back::decision(d)
    }

    /// Run the policy's `check_answer` hook.
    pub fn check_answer(&self, answer: &str) -> Decision {
        self.expect_hook(Hook::Answer);
        let _active = Activation::new(&self.mock);
        let d = glue::check_answer(self.the_policy(), glue::context_to_wit(&self.ctx), answer);
        glue::back::decision(d)
    }

    /// Every request the tools sent so far (refused ones excluded).
    pub fn requests(&self) -> Vec<Request> {
        self.mock.requests.borrow().clone()
    }

    /// Every log line written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.mock.logs.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::prelude::*;
    use std::collections::BTreeMap;

    /// Ping a path.
    #[derive(Deserialize, JsonSchema)]
    struct PingArgs {
        /// Path segments.
        path: Vec<String>,
    }

    fn ping(_: &Context, args: PingArgs) -> Result<Output, ToolError> {
        let path: Vec<&str> = args.path.iter().map(String::as_str).collect();
        let res = backend::post(&path, &json!({ "x": 1 })).map_err(atlas::from_backend_error)?;
        log::warn(format!("pinged {}", res.status));
        Ok(Output::json(&json!({ "status": res.status })).with_count(1))
    }

    /// Fail to serialise.
    #[derive(Deserialize, JsonSchema)]
    struct NoArgs {}

    fn unserialisable(_: &Context, _: NoArgs) -> Result<Output, ToolError> {
        // JSON object keys must be strings.
        Ok(Output::json(&BTreeMap::from([((1, 2), 3)])))
    }

    fn tools() -> Tools {
        Tools::new()
            .read("ping", ping)
            .context("bad", unserialisable)
    }

    const POLICY: &str = r#"
        [[allow]]
        method = "post"
        path = "/api/items/{id}/ping"
        [limits]
        timeout_ms = 100
        [config]
        level = 3
        names = ["a"]
    "#;

    #[test]
    fn routes_record_and_log() {
        let h = Harness::new(tools()).on(Method::Post, "api/items/{id}/ping", |req| {
            (202, json!({ "id": req.segments[2] }))
        });
        let out = h
            .invoke("ping", json!({ "path": ["api", "items", "7", "ping"] }))
            .unwrap();
        assert_eq!(out.json(), json!({ "status": 202 }));
        assert_eq!(out.result_count, Some(1));
        let req = &h.requests()[0];
        assert_eq!(
            (req.method, req.path()),
            (Method::Post, "/api/items/7/ping".to_owned())
        );
        assert_eq!(req.json(), json!({ "x": 1 }));
        assert_eq!(h.logs(), [(Level::Warn, "pinged 202".to_owned())]);
    }

    #[test]
    fn unrouted_and_malformed_paths_fail_like_the_host() {
        let h = Harness::new(tools());
        let err = h
            .invoke("ping", json!({ "path": ["nowhere"] }))
            .unwrap_err();
        assert!(
            matches!(&err, ToolError::Backend(m) if m.contains("no mock route")),
            "{err}"
        );
        for bad in [
            json!([]),
            json!(["a", ""]),
            json!(["a", "."]),
            json!(["..", "b"]),
        ] {
            let err = h.invoke("ping", json!({ "path": bad })).unwrap_err();
            assert!(
                matches!(err, ToolError::InvalidArguments(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn policy_file_grants_and_config() {
        let h =
            Harness::new(tools())
                .policy_file(POLICY)
                .on(Method::Post, "/api/{a}/{b}/ping", |_| (200, json!({})));
        assert!(
            h.invoke("ping", json!({ "path": ["api", "items", "x/y", "ping"] }))
                .is_ok()
        );
        let err = h
            .invoke("ping", json!({ "path": ["api", "other", "1", "ping"] }))
            .unwrap_err();
        assert!(matches!(err, ToolError::Forbidden(_)), "{err}");
        assert_eq!(h.requests().len(), 1, "refused calls are not sent");
        assert_eq!(
            serde_json::from_str::<Value>(&h.context().config_json).unwrap(),
            json!({ "level": 3, "names": ["a"] })
        );
        assert!(h.granted(Method::Post, "/api/items/1/ping"));
        assert!(!h.granted(Method::Get, "/api/items/1/ping"));
        assert!(!h.granted(Method::Post, "/api/items/1/2/ping"));
    }

    #[test]
    fn grants_and_refusals_match_the_hosts() {
        let h = Harness::new(tools()).policy_file(
            "[[allow]]\nmethod = \"POST\"\npath = \"/api/files/{*rest}\"\n\
             [[allow]]\nmethod = \"POST\"\npath = \"/api/x/\"\n[policy]\norder = 3\n",
        );
        // A catch-all takes any number of segments, as matchit does.
        assert!(h.granted(Method::Post, "/api/files/a/b/c"));
        // Paths match exactly: a trailing '/' in a grant is part of it.
        assert!(!h.granted(Method::Post, "/api/x"));
        // Over the host's 16 segments: an invalid path, not a grant question
        // (the catch-all grants it).
        let mut deep: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        deep.splice(0..0, ["api".to_string(), "files".to_string()]);
        let err = h.invoke("ping", json!({ "path": deep })).unwrap_err();
        assert!(err.to_string().contains("more than 16 segments"), "{err}");
        assert!(h.requests().is_empty(), "refused before sending");
        for (text, why) in [
            ("[limit]\ntimeout_ms = 1\n", "unknown field"),
            (
                "[[allow]]\nmethod = \"GET\"\nmehtod = \"x\"\npath = \"/a\"\n",
                "unknown field",
            ),
            ("[limits]\nmemory_mb = 4096\n", "memory_mb"),
            ("[limits]\noutput_bytes = 0\n", "above zero"),
            (
                "[[allow]]\nmethod = \"GET\"\npath = \"/a/../b\"\n",
                "absolute",
            ),
            (
                "[[allow]]\nmethod = \"GET\"\npath = \"/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q\"\n",
                "17 segments",
            ),
        ] {
            let payload = std::panic::catch_unwind(|| Harness::new(tools()).policy_file(text))
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"));
            let err = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn boundary_errors() {
        let h = Harness::new(tools());
        assert!(matches!(
            h.invoke("nope", json!({})),
            Err(ToolError::NotFound(_))
        ));
        assert!(matches!(
            h.invoke("bad", json!({})),
            Err(ToolError::Internal(_))
        ));
        assert!(matches!(
            h.invoke_raw("ping", "not json"),
            Err(ToolError::InvalidArguments(_))
        ));
    }

    #[test]
    fn describe_moves_the_doc_comment_into_the_description() {
        let specs = Harness::new(tools()).describe();
        assert_eq!(specs[0].description, "Ping a path.");
        assert!(specs[0].parameters.get("description").is_none());
        assert_eq!(
            specs[0].parameters["properties"]["path"]["description"],
            "Path segments."
        );
        assert_eq!(
            (specs[0].kind, specs[1].kind),
            (ToolKind::Read, ToolKind::Context)
        );
    }

    #[test]
    #[should_panic(expected = "no description")]
    fn describe_insists_on_a_description() {
        #[derive(Deserialize, JsonSchema)]
        struct Undocumented {}
        fn f(_: &Context, _: Undocumented) -> Result<Output, ToolError> {
            Ok(Output::raw("{}"))
        }
        Harness::new(Tools::new().read("f", f)).describe();
    }

    #[test]
    fn context_helpers() {
        let ctx = Harness::new(Tools::new()).max_results(10).context().clone();
        assert_eq!(ctx.limit(None, 5), 5);
        assert_eq!(ctx.limit(Some(0), 5), 5);
        assert_eq!(ctx.limit(Some(50), 5), 10);
        assert_eq!(ctx.limit(Some(3), 5), 3);
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Cfg {
            level: u8,
        }
        assert_eq!(ctx.config::<Cfg>().unwrap().level, 0);
        let bad = Context {
            config_json: r#"{"level":"high"}"#.into(),
            ..ctx
        };
        let err = bad.config::<Cfg>().err().unwrap();
        assert!(
            matches!(&err, ToolError::Internal(m) if m.contains("level")),
            "{err}"
        );
    }

    struct Shouty;

    impl Policy for Shouty {
        fn check_request(&self, _: &Context, prompt: &str, metadata: &Value) -> Decision {
            if metadata["block"] == true {
                Decision::deny("blocked")
            } else if prompt.chars().any(char::is_lowercase) {
                Decision::Rewrite(prompt.to_uppercase())
            } else {
                Decision::Allow
            }
        }
    }

    #[test]
    fn policies_default_to_allow_and_see_parsed_json() {
        let h = Harness::policy(Shouty);
        assert_eq!(
            h.check_request("hi", json!({})),
            Decision::Rewrite("HI".into())
        );
        assert_eq!(
            h.check_request("HI", json!({ "block": true })),
            Decision::deny("blocked")
        );
        assert_eq!(h.check_request("HI", Value::Null), Decision::Allow);
        assert_eq!(h.check_tool_call("any", json!({})), Decision::Allow);
        assert_eq!(h.check_answer("any"), Decision::Allow);
        // Malformed JSON from the host is refused before the policy runs.
        let ctx = glue::context_to_wit(h.context());
        let d = glue::check_tool_call(&Shouty, ctx, "t", "{oops");
        assert!(matches!(glue::back::decision(d), Decision::Deny(_)));
    }

    struct AnswersOnly;

    impl Policy for AnswersOnly {
        fn hooks(&self) -> &'static [Hook] {
            &[Hook::Answer, Hook::Answer]
        }

        fn check_answer(&self, _: &Context, answer: &str) -> Decision {
            Decision::Rewrite(answer.replace("secret", "******"))
        }
    }

    #[test]
    fn declared_hooks_reach_the_host_once_each() {
        assert_eq!(Harness::policy(Shouty).hooks(), Hook::ALL);
        let h = Harness::policy(AnswersOnly);
        assert_eq!(h.hooks(), [Hook::Answer]);
        assert_eq!(
            h.check_answer("a secret"),
            Decision::Rewrite("a ******".into())
        );
    }

    #[test]
    #[should_panic(expected = "add Hook::Request to Policy::hooks")]
    fn calling_an_undeclared_hook_fails_the_test() {
        Harness::policy(AnswersOnly).check_request("hi", json!({}));
    }
}
