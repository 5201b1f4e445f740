//! Logging setup and the metrics registry. Labels stay bounded: tool, plugin,
//! model and status names, never user or session ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Installs the global tracing subscriber: JSON or pretty logs on stderr
/// (level from `LOG_LEVEL`, or `RUST_LOG` when set), plus OpenTelemetry span
/// export over OTLP/HTTP when an endpoint is given. Keep the returned
/// provider and call [`shutdown_tracing`] on exit so queued spans are sent.
/// Calling it twice is harmless.
pub fn init_tracing(
    level: &str,
    json: bool,
    otlp_endpoint: Option<&str>,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = otlp_endpoint.and_then(|endpoint| match otlp_provider(endpoint) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("OpenTelemetry export disabled: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        // W3C trace context in and out: a caller's `traceparent` becomes the
        // parent of the request span, and calls to the backend and the model
        // carry the current span's.
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer("agent-host"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    provider
}

/// Makes `span` a child of the trace context in `headers` (`traceparent`),
/// when span export is on; otherwise does nothing.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// The current span's trace context as headers (`traceparent`), empty when
/// span export is off.
pub fn trace_headers() -> axum::http::HeaderMap {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut headers = axum::http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers))
    });
    headers
}

/// Spans go to `{endpoint}/v1/traces`, batched off the request path.
fn otlp_provider(endpoint: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("atlas-agent-host")
                .build(),
        )
        .build())
}

/// Sends what is queued and stops the exporter.
pub fn shutdown_tracing(provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>) {
    if let Some(p) = provider
        && let Err(e) = p.shutdown()
    {
        eprintln!("OpenTelemetry shutdown: {e}");
    }
}

/// Every metric the host exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub chat_requests: IntCounterVec,
    pub chat_duration: HistogramVec,
    pub active_conversations: IntGauge,
    pub tool_executions: IntCounterVec,
    pub openai_calls: IntCounterVec,
    pub openai_duration: HistogramVec,
    pub openai_tokens: IntCounterVec,
    pub host_overhead: Histogram,
    pub plugin_invocations: IntCounterVec,
    pub plugin_duration: HistogramVec,
    pub plugin_limit_hits: IntCounterVec,
    pub plugin_fuel: IntCounterVec,
    pub plugin_memory_grown: IntCounterVec,
    pub plugin_reloads: IntCounterVec,
    pub plugins_loaded: IntGauge,
    pub policy_decisions: IntCounterVec,
    pub backend_requests: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub session_store_duration: HistogramVec,
    pub session_store_errors: IntCounterVec,
    pub ready: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

const FAST_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        let r = &registry;
        Metrics {
            chat_requests: counter(
                r,
                "agents_chat_requests_total",
                "Chat requests by outcome",
                &["status", "agent_id"],
            ),
            chat_duration: histogram(
                r,
                "agents_chat_request_duration_seconds",
                "Chat request duration",
                &["agent_id", "status"],
                vec![0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            ),
            active_conversations: gauge(
                r,
                "agents_active_conversations",
                "Conversations that have not expired",
            ),
            tool_executions: counter(
                r,
                "agents_tool_executions_total",
                "Tool calls by tool and outcome",
                &["tool_name", "status"],
            ),
            openai_calls: counter(
                r,
                "agents_openai_api_calls_total",
                "Model calls by model and outcome",
                &["model", "status"],
            ),
            openai_duration: histogram(
                r,
                "agents_openai_request_duration_seconds",
                "Model call duration, retries included",
                &["model"],
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            ),
            openai_tokens: counter(
                r,
                "agents_openai_tokens_total",
                "Tokens used by kind (prompt, completion)",
                &["model", "kind"],
            ),
            host_overhead: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "agents_host_overhead_seconds",
                        "Chat time spent in the host: total minus model and backend time",
                    )
                    .buckets(FAST_BUCKETS.to_vec()),
                )
                .expect("valid histogram");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            plugin_invocations: counter(
                r,
                "agents_plugin_invocations_total",
                "Plugin calls by plugin, version, tool and outcome",
                &["plugin", "version", "tool", "outcome"],
            ),
            plugin_duration: histogram(
                r,
                "agents_plugin_invocation_duration_seconds",
                "Plugin call duration, backend calls included",
                &["plugin", "tool"],
                FAST_BUCKETS.to_vec(),
            ),
            plugin_limit_hits: counter(
                r,
                "agents_plugin_limit_hits_total",
                "Plugin calls stopped by a sandbox limit",
                &["plugin", "kind"],
            ),
            plugin_fuel: counter(
                r,
                "agents_plugin_fuel_consumed_total",
                "Fuel plugin calls consumed (about one unit per WebAssembly instruction), \
                 instantiation included; divided by the plugin's calls it is the mean to \
                 set the fuel limit against",
                &["plugin"],
            ),
            plugin_memory_grown: counter(
                r,
                "agents_plugin_memory_grown_total",
                "Plugin calls that grew their linear memory past the size it was \
                 instantiated with (each growth maps pages that are unmapped after the \
                 call; a growth refused by the memory limit is not counted); a plugin \
                 counted on most calls starts with too small a heap",
                &["plugin"],
            ),
            plugin_reloads: counter(
                r,
                "agents_plugin_reloads_total",
                "Plugin loads and refusals",
                &["outcome"],
            ),
            plugins_loaded: gauge(r, "agents_plugins_loaded", "Plugins currently live"),
            policy_decisions: counter(
                r,
                "agents_policy_decisions_total",
                "Validation policy decisions by policy, hook and decision",
                &["policy", "hook", "decision"],
            ),
            backend_requests: counter(
                r,
                "agents_backend_requests_total",
                "Atlas backend calls by status (HTTP code or error kind)",
                &["status"],
            ),
            rate_limited: counter(
                r,
                "agents_rate_limited_total",
                "Requests refused by a rate limit",
                &["scope"],
            ),
            session_store_duration: histogram(
                r,
                "agents_session_store_duration_seconds",
                "Session store operation duration",
                &["op"],
                FAST_BUCKETS.to_vec(),
            ),
            session_store_errors: counter(
                r,
                "agents_session_store_errors_total",
                "Session store failures by operation",
                &["op"],
            ),
            ready: gauge(r, "agents_ready", "1 when the instance reports ready"),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
