//! Wasm plugins: loading from `PLUGIN_DIR`, the registry of live versions,
//! hot reload, and calls under sandbox limits.
//!
//! - `bindings`: the generated host bindings (one bindgen site)
//! - `manifest`: the operator's `<name>.policy.toml`
//! - `runtime`: engine, per-call stores, limits, host functions
//! - `watch`: the folder watcher that triggers reloads

mod bindings;
pub mod compile;
pub mod manifest;
mod runtime;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use crate::backend::Backend;
use crate::config::{PluginLimits, PluginProfiler};
use crate::identity::User;
use crate::llm::{ToolDef, ToolSet};
use crate::sessions::now_ms;
use crate::telemetry::Metrics;
use bindings::{
    Decision, Hook as WitHook, PolicyPluginPre, ToolError, ToolKind as WitKind, ToolPluginPre,
};
use manifest::Manifest;
use runtime::{Delegation, Fault, State};

/// How a tool touches the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    Read,
    Write,
    Draft,
    Context,
}

impl From<WitKind> for ToolKind {
    fn from(k: WitKind) -> Self {
        match k {
            WitKind::Read => ToolKind::Read,
            WitKind::Write => ToolKind::Write,
            WitKind::Draft => ToolKind::Draft,
            WitKind::Context => ToolKind::Context,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    #[serde(skip)]
    pub schema: Value,
    pub kind: ToolKind,
}

enum Kind {
    Tools {
        pre: ToolPluginPre<State>,
        tools: Vec<ToolInfo>,
    },
    Policy {
        pre: PolicyPluginPre<State>,
        /// The hooks it declared at load; it is run on no others.
        hooks: Vec<WitHook>,
    },
}

/// One loaded version of a plugin.
pub struct Plugin {
    pub name: Arc<str>,
    pub digest: String,
    pub loaded_at: u64,
    manifest: Arc<Manifest>,
    kind: Kind,
    /// This plugin's series of `agents_plugin_fuel_consumed_total`.
    fuel: prometheus::IntCounter,
    /// This plugin's series of `agents_plugin_memory_grown_total`.
    memory_grown: prometheus::IntCounter,
}

impl Plugin {
    /// Counts the fuel a finished call's store consumed, and the call if
    /// it grew its memory.
    fn count_usage(&self, store: &wasmtime::Store<State>) {
        let left = store.get_fuel().unwrap_or(0);
        self.fuel
            .inc_by(self.manifest.limits.fuel.saturating_sub(left));
        if store.data().limiter.memory_grew {
            self.memory_grown.inc();
        }
    }

    fn version(&self) -> &str {
        &self.digest[..12]
    }

    fn tools(&self) -> &[ToolInfo] {
        match &self.kind {
            Kind::Tools { tools, .. } => tools,
            Kind::Policy { .. } => &[],
        }
    }
}

/// The live set: swapped whole, so a call that started on one version
/// finishes on it.
#[derive(Default)]
struct Snapshot {
    plugins: BTreeMap<String, Arc<Plugin>>,
    tools: HashMap<String, (Arc<Plugin>, usize)>,
    policies: Vec<Arc<Plugin>>,
    /// What the model is offered, built once per snapshot.
    tool_set: Arc<ToolSet>,
    /// Policies that were refused and have no live version, with the reason:
    /// while any is listed, chats are refused rather than run unchecked.
    missing_policies: BTreeMap<String, String>,
}

/// A plugin that could not be (re)loaded.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub error: String,
    pub at: u64,
    pub digest: String,
    /// Its policy file has a `[policy]` table: it was meant to check chats.
    pub policy: bool,
}

/// Who a call is for; the token stays here, in the host.
pub struct CallInfo<'a> {
    pub user: &'a User,
    pub authorization: &'a str,
    pub session_id: &'a str,
    pub request_id: &'a str,
    pub agent_id: &'a str,
    pub max_results: u32,
}

/// A draft a tool prepared.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DraftOut {
    pub operation_type: String,
    pub payload: Value,
    pub summary: String,
}

#[derive(Debug)]
pub struct ToolSuccess {
    pub content: String,
    pub result_count: Option<u32>,
    pub draft: Option<DraftOut>,
}

#[derive(Debug)]
pub struct ToolFailure {
    /// `invalid-arguments`, `not-found`, `forbidden`, `backend`, `internal`,
    /// `unknown-tool`, `timeout`, `cpu`, `out-of-memory`, `trap`,
    /// `invalid-output`, `output-too-large`, `unavailable`.
    pub kind: &'static str,
    pub message: String,
}

pub struct ToolResult {
    pub kind: Option<ToolKind>,
    pub plugin: Option<Arc<str>>,
    pub outcome: Result<ToolSuccess, ToolFailure>,
    pub backend_time: Duration,
}

/// A policy's verdict, with the policy's name.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Allow,
    Deny {
        policy: String,
        reason: String,
    },
    Rewrite {
        policy: String,
        value: String,
    },
    RequireApproval {
        policy: String,
        reason: String,
    },
    /// A policy that should run could not be loaded: nothing is checked.
    Unavailable {
        policy: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum Hook<'a> {
    Request { prompt: &'a str, metadata: &'a str },
    ToolCall { tool: &'a str, arguments: &'a str },
    Answer { answer: &'a str },
}

impl Hook<'_> {
    fn wit(&self) -> WitHook {
        match self {
            Hook::Request { .. } => WitHook::Request,
            Hook::ToolCall { .. } => WitHook::ToolCall,
            Hook::Answer { .. } => WitHook::Answer,
        }
    }

    fn name(&self) -> &'static str {
        hook_name(self.wit())
    }
}

pub struct PluginHost {
    engine: Engine,
    tool_linker: Linker<State>,
    policy_linker: Linker<State>,
    backend: Backend,
    defaults: PluginLimits,
    dir: PathBuf,
    current: ArcSwap<Snapshot>,
    refusals: std::sync::Mutex<BTreeMap<String, Refusal>>,
    reload_lock: tokio::sync::Mutex<()>,
    metrics: Metrics,
    compiler: compile::Compiler,
}

/// What one reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub unloaded: Vec<String>,
    pub refused: BTreeMap<String, String>,
}

const TOOL_NAME_MAX: usize = 64;

fn valid_tool_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= TOOL_NAME_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PluginHost {
    pub fn new(
        dir: PathBuf,
        defaults: PluginLimits,
        backend: Backend,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        Self::with_profiler(dir, defaults, backend, metrics, PluginProfiler::None)
    }

    /// As [`PluginHost::new`], with the engine set to tell a profiler where
    /// plugin code lives (`PLUGIN_PROFILER`).
    pub fn with_profiler(
        dir: PathBuf,
        defaults: PluginLimits,
        backend: Backend,
        metrics: Metrics,
        profiler: PluginProfiler,
    ) -> anyhow::Result<Self> {
        let engine = runtime::engine(profiler)?;
        Ok(PluginHost {
            tool_linker: runtime::tool_linker(&engine)?,
            policy_linker: runtime::policy_linker(&engine)?,
            engine,
            backend,
            defaults,
            dir,
            current: ArcSwap::from_pointee(Snapshot::default()),
            refusals: Default::default(),
            reload_lock: tokio::sync::Mutex::new(()),
            metrics,
            compiler: compile::Compiler::Inline,
        })
    }

    /// Where plugins are compiled from now on (inline by default).
    pub fn with_compiler(mut self, compiler: compile::Compiler) -> Self {
        self.compiler = compiler;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tools offered to the model now.
    pub fn tool_defs(&self) -> Arc<ToolSet> {
        self.current.load().tool_set.clone()
    }

    /// Policies refused with no live version (readiness reports them).
    pub fn missing_policies(&self) -> Vec<String> {
        self.current
            .load()
            .missing_policies
            .keys()
            .cloned()
            .collect()
    }

    pub fn tool_kind(&self, name: &str) -> Option<ToolKind> {
        let snap = self.current.load();
        snap.tools.get(name).map(|(p, i)| p.tools()[*i].kind)
    }

    pub fn has_policies(&self) -> bool {
        !self.current.load().policies.is_empty()
    }

    /// Reads the plugin folder and swaps in what changed. Serialised: one
    /// reload at a time.
    pub async fn reload(&self) -> ReloadReport {
        let _guard = self.reload_lock.lock().await;
        let mut report = ReloadReport::default();
        let files = match scan(&self.dir).await {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read plugin folder");
                report.refused.insert("*".into(), e.to_string());
                return report;
            }
        };
        let old = self.current.load_full();
        // Live plugins keep their tool names when a newcomer, or a new
        // version of another live plugin, collides: unchanged live plugins
        // are admitted first, then changed ones, then new ones.
        let mut order: Vec<&PluginFile> = files.iter().collect();
        order.sort_by_key(|f| {
            let live = old.plugins.get(&f.name);
            (
                live.is_none(),
                live.is_some_and(|p| p.digest != f.digest),
                f.name.clone(),
            )
        });

        let mut next = Snapshot::default();
        let mut refusals = Vec::new();
        for file in order {
            let previous = old.plugins.get(&file.name);
            let candidate = match previous {
                Some(p) if p.digest == file.digest => {
                    report.unchanged.push(file.name.clone());
                    Ok(p.clone())
                }
                _ => match &file.unreadable {
                    Some(e) => Err(e.clone()),
                    None => self.load(file).await.map(Arc::new),
                },
            };
            let accepted = match candidate {
                Ok(plugin) => match admit(&mut next, plugin) {
                    Ok(()) => {
                        if previous.is_none_or(|p| p.digest != file.digest) {
                            report.loaded.push(file.name.clone());
                        }
                        true
                    }
                    Err(e) => {
                        refusals.push((file, e));
                        false
                    }
                },
                Err(e) => {
                    refusals.push((file, e));
                    false
                }
            };
            if !accepted
                && let Some(prev) = previous
                && prev.digest != file.digest
            {
                // The old version keeps serving.
                let _ = admit(&mut next, prev.clone());
            }
        }
        for name in old.plugins.keys() {
            if !next.plugins.contains_key(name) && !files.iter().any(|f| &f.name == name) {
                report.unloaded.push(name.clone());
            }
        }
        next.policies.sort_by(|a, b| {
            (a.manifest.policy_order, &a.name).cmp(&(b.manifest.policy_order, &b.name))
        });
        {
            let mut map = self.refusals.lock().expect("refusals lock");
            map.retain(|name, _| files.iter().any(|f| &f.name == name));
            for f in &files {
                if next
                    .plugins
                    .get(&f.name)
                    .is_some_and(|p| p.digest == f.digest)
                {
                    map.remove(&f.name);
                }
            }
            for (file, error) in refusals {
                tracing::error!(plugin = %file.name, path = %file.path.display(), %error, "plugin refused");
                report.refused.insert(file.name.clone(), error.clone());
                map.insert(
                    file.name.clone(),
                    Refusal {
                        error,
                        at: now_ms(),
                        digest: file.digest.clone(),
                        // A policy by its file, or by the version that was live
                        // (whose file may be the one that cannot be read).
                        policy: file.policy_text.as_deref().is_some_and(declares_policy)
                            || old
                                .plugins
                                .get(&file.name)
                                .is_some_and(|p| matches!(p.kind, Kind::Policy { .. })),
                    },
                );
            }
            next.missing_policies = map
                .iter()
                .filter(|(name, r)| r.policy && !next.plugins.contains_key(*name))
                .map(|(name, r)| (name.clone(), r.error.clone()))
                .collect();
        }
        for (name, error) in &next.missing_policies {
            tracing::error!(policy = %name, %error, "a validation policy is not loaded; chats are refused until it loads");
        }
        for name in &report.loaded {
            let p = &next.plugins[name];
            tracing::info!(plugin = %name, version = p.version(), tools = ?p.tools().iter().map(|t| &t.name).collect::<Vec<_>>(), "plugin loaded");
        }
        for name in &report.unloaded {
            tracing::info!(plugin = %name, "plugin unloaded");
        }
        let m = &self.metrics.plugin_reloads;
        m.with_label_values(&["loaded"])
            .inc_by(report.loaded.len() as u64);
        m.with_label_values(&["refused"])
            .inc_by(report.refused.len() as u64);
        m.with_label_values(&["unloaded"])
            .inc_by(report.unloaded.len() as u64);
        self.metrics.plugins_loaded.set(next.plugins.len() as i64);
        next.tool_set = Arc::new(ToolSet::new(
            next.tools
                .iter()
                .map(|(name, (plugin, i))| {
                    let t = &plugin.tools()[*i];
                    ToolDef {
                        name: name.clone(),
                        description: t.description.clone(),
                        parameters: t.schema.clone(),
                    }
                })
                .collect(),
        ));
        self.current.store(Arc::new(next));
        if !report.loaded.is_empty() && matches!(self.compiler, compile::Compiler::Inline) {
            // Return what the compiler freed. Blocking but short; a failed
            // join only means the memory stays mapped.
            let _ = tokio::task::spawn_blocking(crate::alloc::release_free_memory).await;
        }
        report
    }

    /// Compiles, links and checks one plugin, off the async threads.
    async fn load(&self, file: &PluginFile) -> Result<Plugin, String> {
        let manifest = match &file.policy_text {
            Some(text) => Manifest::parse(text, &self.defaults)
                .map_err(|e| format!("{}.policy.toml: {e}", file.name))?,
            None => Manifest::empty(&self.defaults),
        };
        let manifest = Arc::new(manifest);
        let component = self.compiler.compile(&self.engine, &file.wasm).await?;
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let name: Arc<str> = Arc::from(file.name.as_str());
        let kind = if exports.iter().any(|e| e == bindings::TOOL_EXPORT) {
            let pre = self
                .tool_linker
                .instantiate_pre(&component)
                .and_then(ToolPluginPre::new)
                .map_err(|e| format!("does not fit world tool-plugin: {}", root_cause(&e)))?;
            let tools = self.describe(&name, &manifest, &pre).await?;
            Kind::Tools { pre, tools }
        } else if exports.iter().any(|e| e == bindings::POLICY_EXPORT) {
            // The table is what marks a refused file as a missing policy (so
            // chats are refused while it cannot load); without it a broken
            // policy would be skipped silently.
            if !manifest.declares_policy {
                return Err(format!(
                    "a policy needs a [policy] table in {}.policy.toml (its order; it also tells the host to refuse chats while the policy cannot load)",
                    file.name
                ));
            }
            let pre = self
                .policy_linker
                .instantiate_pre(&component)
                .and_then(PolicyPluginPre::new)
                .map_err(|e| format!("does not fit world policy-plugin: {}", root_cause(&e)))?;
            let hooks = match self.policy_hooks(&name, &manifest, &pre).await {
                Ok(hooks) => hooks,
                Err(HooksError::None) => {
                    return Err("hooks() names no hook, so the policy would never run".into());
                }
                // A policy that cannot even answer runs on every hook, so
                // each chat fails closed on it, as it would on any failure.
                Err(HooksError::Failed(e)) => {
                    tracing::warn!(plugin = %name, error = %e, "policy did not declare its hooks; running it on all of them");
                    vec![WitHook::Request, WitHook::ToolCall, WitHook::Answer]
                }
            };
            Kind::Policy { pre, hooks }
        } else {
            return Err(format!(
                "exports neither {} nor {} (found: {})",
                bindings::TOOL_EXPORT,
                bindings::POLICY_EXPORT,
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ));
        };
        Ok(Plugin {
            fuel: self.metrics.plugin_fuel.with_label_values(&[&*name]),
            memory_grown: self
                .metrics
                .plugin_memory_grown
                .with_label_values(&[&*name]),
            name,
            digest: file.digest.clone(),
            loaded_at: now_ms(),
            manifest,
            kind,
        })
    }

    /// One call into a plugin while loading it, in a fresh store under its
    /// limits; `what` names the export in the error.
    async fn call_at_load<T>(
        &self,
        name: &Arc<str>,
        manifest: &Arc<Manifest>,
        what: &str,
        call: impl AsyncFnOnce(&mut Store<State>) -> wasmtime::Result<T>,
    ) -> Result<T, String> {
        let mut store = runtime::store(
            &self.engine,
            name.clone(),
            manifest.clone(),
            self.backend.clone(),
            None,
        )
        .map_err(|e| e.to_string())?;
        let deadline = manifest.limits.timeout + runtime::TICK * 10;
        let result = tokio::time::timeout(deadline, call(&mut store)).await;
        match result {
            Err(_) => Err(format!("{what} did not return in time")),
            Ok(Err(e)) => {
                let fault = runtime::classify(&e, store.data());
                Err(format!(
                    "{what} failed ({}): {}",
                    fault.as_str(),
                    root_cause(&e)
                ))
            }
            Ok(Ok(value)) => Ok(value),
        }
    }

    async fn describe(
        &self,
        name: &Arc<str>,
        manifest: &Arc<Manifest>,
        pre: &ToolPluginPre<State>,
    ) -> Result<Vec<ToolInfo>, String> {
        let specs = self
            .call_at_load(name, manifest, "describe()", async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.atlas_agent_tool().call_describe(store).await
            })
            .await?;
        if specs.is_empty() {
            return Err("describe() offers no tools".into());
        }
        let mut tools: Vec<ToolInfo> = Vec::with_capacity(specs.len());
        for s in specs {
            if !valid_tool_name(&s.name) {
                return Err(format!(
                    "tool name {:?} must be 1..64 of [A-Za-z0-9_-]",
                    s.name
                ));
            }
            if tools.iter().any(|t| t.name == s.name) {
                return Err(format!("tool {} is described twice", s.name));
            }
            let schema: Value = serde_json::from_str(&s.parameters_schema)
                .map_err(|e| format!("tool {}: parameters schema is not JSON: {e}", s.name))?;
            if schema.get("type") != Some(&Value::String("object".into())) {
                return Err(format!(
                    "tool {}: parameters schema must be an object schema",
                    s.name
                ));
            }
            tools.push(ToolInfo {
                name: s.name,
                description: s.description,
                schema,
                kind: s.kind.into(),
            });
        }
        Ok(tools)
    }

    /// Asks a policy which hooks it implements, once, at load.
    async fn policy_hooks(
        &self,
        name: &Arc<str>,
        manifest: &Arc<Manifest>,
        pre: &PolicyPluginPre<State>,
    ) -> Result<Vec<WitHook>, HooksError> {
        let declared = self
            .call_at_load(name, manifest, "hooks()", async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.atlas_agent_policy().call_hooks(store).await
            })
            .await
            .map_err(HooksError::Failed)?;
        let mut hooks: Vec<WitHook> = Vec::with_capacity(3);
        for h in declared {
            if !hooks.contains(&h) {
                hooks.push(h);
            }
        }
        if hooks.is_empty() {
            return Err(HooksError::None);
        }
        Ok(hooks)
    }

    /// Runs a tool under its plugin's limits.
    pub async fn invoke(&self, tool: &str, arguments: &str, call: &CallInfo<'_>) -> ToolResult {
        let snap = self.current.load_full();
        let Some((plugin, index)) = snap.tools.get(tool) else {
            return ToolResult {
                kind: None,
                plugin: None,
                outcome: Err(ToolFailure {
                    kind: "unknown-tool",
                    message: format!("there is no tool named {tool}"),
                }),
                backend_time: Duration::ZERO,
            };
        };
        let Kind::Tools { pre, tools } = &plugin.kind else {
            unreachable!("tool index only points at tool plugins")
        };
        let started = Instant::now();
        let (outcome, backend_time) = self.run_tool(plugin, pre, tool, arguments, call).await;
        let label = match &outcome {
            Ok(_) => "success",
            Err(f) => f.kind,
        };
        if matches!(
            label,
            "timeout" | "cpu" | "out-of-memory" | "output-too-large"
        ) {
            self.metrics
                .plugin_limit_hits
                .with_label_values(&[&plugin.name, label])
                .inc();
        }
        self.metrics
            .plugin_invocations
            .with_label_values(&[&plugin.name, plugin.version(), tool, label])
            .inc();
        self.metrics
            .plugin_duration
            .with_label_values(&[&plugin.name, tool])
            .observe(started.elapsed().as_secs_f64());
        ToolResult {
            kind: Some(tools[*index].kind),
            plugin: Some(plugin.name.clone()),
            outcome,
            backend_time,
        }
    }

    async fn run_tool(
        &self,
        plugin: &Plugin,
        pre: &ToolPluginPre<State>,
        tool: &str,
        arguments: &str,
        call: &CallInfo<'_>,
    ) -> (Result<ToolSuccess, ToolFailure>, Duration) {
        let fail = |kind, message: String| Err(ToolFailure { kind, message });
        let delegation = Delegation {
            authorization: call.authorization.to_string(),
            request_id: call.request_id.to_string(),
        };
        let mut store = match runtime::store(
            &self.engine,
            plugin.name.clone(),
            plugin.manifest.clone(),
            self.backend.clone(),
            Some(delegation),
        ) {
            Ok(s) => s,
            Err(e) => return (fail("unavailable", e.to_string()), Duration::ZERO),
        };
        let ctx = self.context(plugin, call);
        let limits = &plugin.manifest.limits;
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .atlas_agent_tool()
                .call_invoke(&mut store, &ctx, tool, arguments)
                .await
        };
        // The epoch deadline stops guest code; this one also bounds time
        // spent waiting on the backend.
        let result = tokio::time::timeout(limits.timeout, run).await;
        plugin.count_usage(&store);
        let backend_time = store.data().backend_time;
        let outcome = match result {
            Err(_) => fail(
                "timeout",
                format!(
                    "the tool did not finish within {} ms",
                    limits.timeout.as_millis()
                ),
            ),
            Ok(Err(e)) => {
                let fault = runtime::classify(&e, store.data());
                tracing::warn!(plugin = &*plugin.name, tool, fault = fault.as_str(), error = %root_cause(&e), "plugin call failed");
                let message = match fault {
                    Fault::Timeout => format!(
                        "the tool did not finish within {} ms",
                        limits.timeout.as_millis()
                    ),
                    Fault::Cpu => "the tool used more CPU than it is allowed".to_string(),
                    Fault::OutOfMemory => format!(
                        "the tool needed more than {} MiB of memory",
                        limits.memory_bytes >> 20
                    ),
                    Fault::Trap => "the tool crashed".to_string(),
                };
                fail(fault.as_str(), message)
            }
            Ok(Ok(Err(e))) => {
                let (kind, message) = match e {
                    ToolError::InvalidArguments(m) => ("invalid-arguments", m),
                    ToolError::NotFound(m) => ("not-found", m),
                    ToolError::Forbidden(m) => ("forbidden", m),
                    ToolError::Backend(m) => ("backend", m),
                    ToolError::Internal(m) => ("internal", m),
                };
                fail(kind, message)
            }
            Ok(Ok(Ok(out))) => check_output(out, limits.output_bytes),
        };
        (outcome, backend_time)
    }

    fn context(&self, plugin: &Plugin, call: &CallInfo<'_>) -> bindings::CallContext {
        bindings::CallContext {
            user: bindings::User {
                id: call.user.id,
                email: call.user.email.clone(),
                full_name: call.user.full_name.clone(),
                role: call.user.role_code.clone(),
                company_id: call.user.company_id,
            },
            session_id: call.session_id.to_string(),
            request_id: call.request_id.to_string(),
            agent_id: call.agent_id.to_string(),
            max_results: call.max_results,
            config: plugin.manifest.config_json.clone(),
        }
    }

    /// Runs every policy, in order, on one hook. The first deny or
    /// require-approval wins; rewrites chain. A policy that fails, fails closed.
    pub async fn check(&self, hook: Hook<'_>, call: &CallInfo<'_>) -> Verdict {
        let snap = self.current.load_full();
        if let Some((policy, error)) = snap.missing_policies.iter().next() {
            return Verdict::Unavailable {
                policy: policy.clone(),
                reason: format!(
                    "the validation policy {policy} is not loaded ({error}); \
                     chats are refused until it is fixed"
                ),
            };
        }
        let mut rewritten: Option<(String, String)> = None;
        for plugin in &snap.policies {
            let Kind::Policy { pre, hooks } = &plugin.kind else {
                continue;
            };
            if !hooks.contains(&hook.wit()) {
                continue;
            }
            let current = rewritten.as_ref().map(|(_, v)| v.as_str());
            let hook_now = match (hook, current) {
                (Hook::Request { metadata, .. }, Some(v)) => Hook::Request {
                    prompt: v,
                    metadata,
                },
                (Hook::ToolCall { tool, .. }, Some(v)) => Hook::ToolCall { tool, arguments: v },
                (Hook::Answer { .. }, Some(v)) => Hook::Answer { answer: v },
                (h, None) => h,
            };
            let decision = self.run_policy(plugin, pre, hook_now, call).await;
            let label = match &decision {
                Ok(Decision::Allow) => "allow",
                Ok(Decision::Deny(_)) => "deny",
                Ok(Decision::Rewrite(_)) => "rewrite",
                Ok(Decision::RequireApproval(_)) => "require_approval",
                Err(_) => "failed",
            };
            self.metrics
                .policy_decisions
                .with_label_values(&[&plugin.name, hook.name(), label])
                .inc();
            let policy = plugin.name.to_string();
            match decision {
                Ok(Decision::Allow) => {}
                Ok(Decision::Rewrite(v)) => rewritten = Some((policy, v)),
                Ok(Decision::Deny(reason)) => return Verdict::Deny { policy, reason },
                Ok(Decision::RequireApproval(reason)) => {
                    return Verdict::RequireApproval { policy, reason };
                }
                Err(reason) => {
                    tracing::error!(policy = %policy, hook = hook.name(), %reason, "policy failed; denying");
                    return Verdict::Deny {
                        policy,
                        reason: format!("The validation policy could not run ({reason})"),
                    };
                }
            }
        }
        match rewritten {
            Some((policy, value)) => Verdict::Rewrite { policy, value },
            None => Verdict::Allow,
        }
    }

    async fn run_policy(
        &self,
        plugin: &Plugin,
        pre: &PolicyPluginPre<State>,
        hook: Hook<'_>,
        call: &CallInfo<'_>,
    ) -> Result<Decision, String> {
        let mut store = runtime::store(
            &self.engine,
            plugin.name.clone(),
            plugin.manifest.clone(),
            self.backend.clone(),
            None,
        )
        .map_err(|e| e.to_string())?;
        let ctx = self.context(plugin, call);
        let limits = &plugin.manifest.limits;
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let p = instance.atlas_agent_policy();
            match hook {
                Hook::Request { prompt, metadata } => {
                    p.call_check_request(&mut store, &ctx, prompt, metadata)
                        .await
                }
                Hook::ToolCall { tool, arguments } => {
                    p.call_check_tool_call(&mut store, &ctx, tool, arguments)
                        .await
                }
                Hook::Answer { answer } => p.call_check_answer(&mut store, &ctx, answer).await,
            }
        };
        let result = tokio::time::timeout(limits.timeout, run).await;
        plugin.count_usage(&store);
        match result {
            Err(_) => Err("timeout".into()),
            Ok(Err(e)) => Err(runtime::classify(&e, store.data()).as_str().to_string()),
            Ok(Ok(Decision::Rewrite(v))) if v.len() > limits.output_bytes => {
                Err("output-too-large".into())
            }
            Ok(Ok(d)) => Ok(d),
        }
    }

    /// For `GET /admin/plugins`.
    pub fn describe_all(&self) -> Value {
        let snap = self.current.load_full();
        let refusals = self.refusals.lock().expect("refusals lock").clone();
        let mut out = Vec::new();
        for (name, p) in &snap.plugins {
            out.push(serde_json::json!({
                "name": name,
                "version": p.version(),
                "digest": p.digest,
                "kind": match p.kind { Kind::Tools { .. } => "tool", Kind::Policy { .. } => "policy" },
                "tools": p.tools(),
                "hooks": match &p.kind {
                    Kind::Policy { hooks, .. } => hooks.iter().map(|h| hook_name(*h)).collect(),
                    Kind::Tools { .. } => Vec::new(),
                },
                "state": "live",
                "loadedAt": p.loaded_at,
                "grants": p.manifest.grants.iter().map(|g| format!("{} {}", g.method.to_ascii_uppercase(), g.path)).collect::<Vec<_>>(),
                "lastError": refusals.get(name),
            }));
        }
        for (name, r) in &refusals {
            if !snap.plugins.contains_key(name) {
                out.push(serde_json::json!({
                    "name": name, "state": "refused", "digest": r.digest, "lastError": r,
                }));
            }
        }
        serde_json::json!({ "dir": self.dir.display().to_string(), "plugins": out })
    }
}

/// Whether a policy file has a `[policy]` table. Read leniently, so that a
/// policy whose file has another mistake still counts as one.
fn declares_policy(text: &str) -> bool {
    match text.parse::<toml::Table>() {
        Ok(t) => t.contains_key("policy"),
        Err(_) => text.lines().any(|l| l.trim_start().starts_with("[policy]")),
    }
}

enum HooksError {
    None,
    Failed(String),
}

fn hook_name(h: WitHook) -> &'static str {
    match h {
        WitHook::Request => "request",
        WitHook::ToolCall => "tool_call",
        WitHook::Answer => "answer",
    }
}

/// Adds a plugin to a snapshot being built, unless a tool name is taken.
fn admit(next: &mut Snapshot, plugin: Arc<Plugin>) -> Result<(), String> {
    for t in plugin.tools() {
        if let Some((other, _)) = next.tools.get(&t.name) {
            return Err(format!(
                "tool {} is already offered by plugin {}",
                t.name, other.name
            ));
        }
    }
    for (i, t) in plugin.tools().iter().enumerate() {
        next.tools.insert(t.name.clone(), (plugin.clone(), i));
    }
    if matches!(plugin.kind, Kind::Policy { .. }) {
        next.policies.push(plugin.clone());
    }
    next.plugins.insert(plugin.name.to_string(), plugin);
    Ok(())
}

fn check_output(out: bindings::ToolOutput, max: usize) -> Result<ToolSuccess, ToolFailure> {
    let size = out.content.len()
        + out
            .draft
            .as_ref()
            .map(|d| d.payload.len() + d.summary.len() + d.operation_type.len())
            .unwrap_or(0);
    if size > max {
        return Err(ToolFailure {
            kind: "output-too-large",
            message: format!("the tool returned {size} bytes, more than the {max} allowed"),
        });
    }
    let invalid = |m: String| ToolFailure {
        kind: "invalid-output",
        message: m,
    };
    // Checked, not kept: the content goes on as text, so the parser skips
    // every value instead of building a tree (a listing is many small
    // allocations).
    serde_json::from_str::<serde::de::IgnoredAny>(&out.content)
        .map_err(|e| invalid(format!("the tool returned content that is not JSON: {e}")))?;
    let draft = match out.draft {
        None => None,
        Some(d) => {
            let payload: Value = serde_json::from_str(&d.payload)
                .map_err(|e| invalid(format!("the draft payload is not JSON: {e}")))?;
            Some(DraftOut {
                operation_type: d.operation_type,
                payload,
                summary: d.summary,
            })
        }
    };
    Ok(ToolSuccess {
        content: out.content,
        result_count: out.result_count,
        draft,
    })
}

fn root_cause(e: &wasmtime::Error) -> String {
    let mut s = e.to_string();
    if let Some(c) = e.chain().last()
        && c.to_string() != s
    {
        s = format!("{s}: {c}");
    }
    s
}

struct PluginFile {
    name: String,
    path: PathBuf,
    wasm: Arc<Vec<u8>>,
    policy_text: Option<String>,
    digest: String,
    /// The `.wasm` or its policy file exists but could not be read: refused
    /// (the live version, if any, keeps serving), never taken for a deletion.
    unreadable: Option<String>,
}

/// Every `<name>.wasm` in the folder (symlinks followed, dot-files skipped),
/// with its policy file.
async fn scan(dir: &Path) -> std::io::Result<Vec<PluginFile>> {
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(name) = file_name.strip_suffix(".wasm") else {
            continue;
        };
        if name.is_empty() || file_name.starts_with('.') {
            continue;
        }
        let read = async {
            let meta = tokio::fs::metadata(&path).await?;
            if !meta.is_file() {
                return Ok(None);
            }
            let wasm = tokio::fs::read(&path).await?;
            Ok::<_, std::io::Error>(Some(wasm))
        };
        let (wasm, mut unreadable) = match read.await {
            Ok(Some(wasm)) => (wasm, None),
            Ok(None) => continue,
            // Gone between the listing and the read: a deletion.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read plugin");
                (Vec::new(), Some(format!("cannot read {file_name}: {e}")))
            }
        };
        let policy_path = dir.join(format!("{name}.policy.toml"));
        let policy_text = match tokio::fs::read_to_string(&policy_path).await {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %policy_path.display(), error = %e, "cannot read policy file");
                unreadable.get_or_insert(format!("cannot read {name}.policy.toml: {e}"));
                None
            }
        };
        let mut h = Sha256::new();
        h.update(&wasm);
        h.update([0]);
        h.update(policy_text.as_deref().unwrap_or("").as_bytes());
        if let Some(e) = &unreadable {
            // Differs from every readable version, so the refusal is recorded.
            h.update([1]);
            h.update(e.as_bytes());
        }
        files.push(PluginFile {
            name: name.to_string(),
            path,
            wasm: Arc::new(wasm),
            policy_text,
            digest: hex::encode(h.finalize()),
            unreadable,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names() {
        assert!(valid_tool_name("view_work_orders"));
        assert!(valid_tool_name("a-b"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("has space"));
        assert!(!valid_tool_name(&"x".repeat(65)));
    }

    #[test]
    fn output_checks() {
        let out = |content: &str| bindings::ToolOutput {
            content: content.into(),
            result_count: None,
            draft: None,
        };
        assert!(check_output(out("{\"a\":1}"), 100).is_ok());
        // Nesting deeper than a parse into a tree allows is still JSON, and
        // the check goes through it without recursing.
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        for ok in [
            "[1, -2.5e3, true, null, \"\\u00e9\\n\", {\"b\": []}]",
            " \"text\" ",
            deep.as_str(),
        ] {
            assert!(check_output(out(ok), 20_000).is_ok(), "{ok}");
        }
        // The content is checked without being kept: every way JSON can be
        // malformed is still refused.
        for bad in [
            "nope",
            "",
            "{\"a\":1} trailing",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\" 1}",
            "\"\\x\"",
            "\"\\u12G4\"",
            "01",
            "1.",
            "-",
            "[1,",
            "{\"a\":",
            "\"unterminated",
            "\"tab\there\"",
            "[[[]]",
        ] {
            assert_eq!(
                check_output(out(bad), 1000).unwrap_err().kind,
                "invalid-output",
                "{bad}"
            );
        }
        assert_eq!(
            check_output(out(&format!("\"{}\"", "x".repeat(200))), 100)
                .unwrap_err()
                .kind,
            "output-too-large"
        );
    }
}
