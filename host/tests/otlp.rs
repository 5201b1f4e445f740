//! Spans reach an OTLP/HTTP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! Its own test binary: the tracing subscriber is process-global.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;

/// Each export: its content type and body.
type Exports = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_spans_are_exported() {
    let received: Exports = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock().unwrap().push((ct, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let provider =
        agent_host::telemetry::init_tracing("info", true, Some(&endpoint)).expect("exporter");
    let stack = Stack::new().await;
    let host = stack.start().await;
    let (s, _) = host
        .chat(&stack.token(ADMIN), prompt("Show me open work orders"))
        .await;
    assert_eq!(s, 200);

    // A caller's W3C trace context continues to the backend and the model.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .bearer_auth(stack.token(ADMIN))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&prompt("Show me open work orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let carried = |reqs: Vec<atlas_stubs::record::RecordedRequest>| {
        reqs.iter()
            .filter_map(|r| r.header("traceparent").map(str::to_string))
            .filter(|t| t.starts_with(&format!("00-{trace_id}-")))
            .count()
    };
    // The tool's search (and /auth/me, when not cached), and both model calls.
    assert!(
        carried(stack.atlas.requests()) >= 1,
        "{:?}",
        stack.atlas.requests()
    );
    assert_eq!(carried(stack.openai.requests()), 2);
    host.stop().await;
    tokio::task::spawn_blocking(move || agent_host::telemetry::shutdown_tracing(Some(provider)))
        .await
        .unwrap();

    let got = received.lock().unwrap();
    assert!(!got.is_empty(), "no export reached the collector");
    let (ct, body) = &got[0];
    assert_eq!(ct, "application/x-protobuf");
    let all: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
    let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"atlas-agent-host"), "service name");
    assert!(
        has(b"request") && has(b"/v1/chat"),
        "the request span and its path"
    );
    assert!(!body.is_empty());
}
