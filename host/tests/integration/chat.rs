//! The chat contract end to end: real host, stub Atlas, stub model, real plugins.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn work_order_question_goes_through_the_plugin_with_the_users_token() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (status, body) = host.chat(&token, prompt("Show me open work orders")).await;
    assert_eq!(status, 200, "{body}");
    let text = answer(&body);
    assert!(
        text.contains("WO000102") && text.contains("\"total\":9"),
        "{text}"
    );
    assert!(
        !text.contains("WO000201"),
        "another company's work order: {text}"
    );
    assert_eq!(body["agentId"], "default-agent");
    let session = body["sessionId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(session).unwrap().get_version_num(), 4);

    let calls = body["toolCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["toolName"], "view_work_orders");
    assert_eq!(calls[0]["status"], "success");
    assert_eq!(calls[0]["arguments"], json!({"limit": 5}));
    assert_eq!(calls[0]["sessionId"], session);
    assert!(calls[0]["resultCount"].as_u64().unwrap() >= 1);

    let backend = stack.tool_requests();
    assert_eq!(backend.len(), 1, "{backend:?}");
    assert_eq!(backend[0].method, "POST");
    assert_eq!(backend[0].path, "/api/agent/tools/work-orders/search");
    assert_eq!(
        backend[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let sent = backend[0].json().unwrap();
    assert_eq!(sent["limit"], 5);
    // The model never sees the token.
    for r in stack.openai.requests() {
        assert!(!r.body.contains(&token));
    }
    host.stop().await;
}

/// Every model call carries the key, the organisation and project the
/// operator set, and the chat's request id, to the chat completions path.
#[tokio::test]
async fn model_calls_carry_the_configured_headers() {
    let mut stack = Stack::new().await;
    stack
        .set("OPENAI_ORG_ID", "org-7")
        .set("OPENAI_PROJECT_ID", "proj-9");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    for _ in 0..2 {
        let (status, body) = host.chat(&token, prompt("Show me open work orders")).await;
        assert_eq!(status, 200, "{body}");
    }
    let calls = stack.openai.requests();
    assert_eq!(calls.len(), 4, "two chats, two model calls each");
    let ids: std::collections::HashSet<_> = calls
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "one request id per chat: {ids:?}");
    for r in &calls {
        assert_eq!(r.path_only(), "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer test-key"));
        assert_eq!(r.header("openai-organization"), Some("org-7"));
        assert_eq!(r.header("openai-project"), Some("proj-9"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    host.stop().await;
}

#[tokio::test]
async fn turn_two_carries_turn_one() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s1, b1) = host
        .chat(&token, prompt_in("Remember the blue pump", "conv-1"))
        .await;
    assert_eq!(s1, 200, "{b1}");
    assert_eq!(b1["sessionId"], "conv-1");
    let (s2, b2) = host.chat(&token, prompt_in("#recall", "conv-1")).await;
    assert_eq!(s2, 200, "{b2}");
    assert!(answer(&b2).contains("Remember the blue pump"), "{b2}");
    // The model received turn one (prompt and answer) before turn two.
    let last = stack.openai.requests().last().unwrap().json().unwrap();
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    host.stop().await;
}

#[tokio::test]
async fn tool_calls_and_results_are_kept_in_history() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    host.chat(&token, prompt_in("Show me open work orders", "h-1"))
        .await;
    let (_, b) = host.chat(&token, prompt_in("#recall", "h-1")).await;
    assert_eq!(b["status"], "success");
    let last = stack.openai.requests().last().unwrap().json().unwrap();
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    let (status, conv) = host.get("/v1/sessions/h-1", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(conv["messages"].as_array().unwrap().len(), 6);
    host.stop().await;
}

#[tokio::test]
async fn another_user_can_neither_see_nor_erase_a_conversation() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let alice = stack.token(ADMIN);
    let tech = stack.token(TECHNICIAN);
    let other = stack.token(OTHER_ADMIN);
    host.chat(
        &alice,
        prompt_in("My secret plan is maintenance at dawn", "shared-id"),
    )
    .await;

    // Same id from a colleague and from another company: a fresh, empty conversation.
    for t in [&tech, &other] {
        let (s, b) = host.chat(t, prompt_in("#recall", "shared-id")).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(answer(&b), "Earlier you said: nothing");
        assert_eq!(host.get("/v1/sessions/shared-id", Some(t)).await.0, 200);
        let del = host
            .http
            .delete(host.url("/v1/sessions/shared-id"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), 200);
    }
    // Alice's conversation is intact.
    let (s, b) = host.chat(&alice, prompt_in("#recall", "shared-id")).await;
    assert_eq!(s, 200);
    assert!(answer(&b).contains("secret plan"), "{b}");
    let (s, conv) = host.get("/v1/sessions/shared-id", Some(&alice)).await;
    assert_eq!(s, 200);
    assert!(
        conv["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("secret plan")
    );
    host.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_host_keeps_serving() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let raw = |body: &'static str| {
        host.http
            .post(host.url("/v1/chat"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    for (body, field) in [
        ("{not json", "body"),
        ("[1,2]", "body"),
        ("{}", "prompt"),
        (r#"{"prompt":"   "}"#, "prompt"),
        (r#"{"prompt":42}"#, "prompt"),
        (r#"{"prompt":"hi","metadata":[]}"#, "metadata"),
        (
            r#"{"prompt":"hi","metadata":{"sessionId":"../etc/passwd"}}"#,
            "metadata.sessionId",
        ),
        (
            r#"{"prompt":"hi","metadata":{"sessionId":7}}"#,
            "metadata.sessionId",
        ),
        (r#"{"prompt":"hi","agentId":["x"]}"#, "agentId"),
    ] {
        let resp = raw(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(b["status"], "error");
        assert_eq!(b["message"], "Invalid request format");
        assert_eq!(b["errors"][0]["field"], field, "{body}: {b}");
    }
    let long = json!({ "prompt": "x".repeat(20_000) });
    let (s, b) = host.chat(&token, long).await;
    assert_eq!(s, 400);
    assert_eq!(b["errors"][0]["field"], "prompt");

    let huge = format!(r#"{{"prompt":"{}"}}"#, "y".repeat(5 * 1024 * 1024));
    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(b["status"], "error");

    let (s, b) = host.chat(&token, prompt("still there?")).await;
    assert_eq!(s, 200, "{b}");

    // Null metadata counts as absent, as a null agentId does.
    let (s, b) = host
        .chat(&token, json!({"prompt": "hi", "metadata": null}))
        .await;
    assert_eq!(s, 200, "{b}");
    // Only the key that names the session is checked: a proxy's odd
    // correlationId does not fail a request with a good sessionId.
    let (s, b) = host
        .chat(
            &token,
            json!({"prompt": "hi", "metadata": {"sessionId": "s-1", "correlationId": "a b/c"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sessionId"], "s-1");
    host.stop().await;
}

#[tokio::test]
async fn identity_errors() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let (s, _, b) = host.chat_full(None, prompt("hi")).await;
    assert_eq!((s, b["status"].as_str()), (401, Some("error")));
    let resp = host
        .http
        .post(host.url("/v1/chat"))
        .header("authorization", "Basic abc")
        .json(&prompt("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let forged = atlas_stubs::token::mint(
        "Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0LWZvcmdlZA==",
        ADMIN,
        3600,
    );
    let expired = stack.atlas.token_with_ttl(ADMIN, -3600);
    for bad in [forged, expired, "not.a.jwt".to_string()] {
        let (s, b) = host.chat(&bad, prompt("hi")).await;
        assert_eq!(s, 401, "{b}");
        // The token is refused before the body is looked at.
        let (s, _, b) = host.chat_full(Some(&bad), json!({"prompt": 42})).await;
        assert_eq!(s, 401, "{b}");
    }
    let (s, _, b) = host.chat_full(None, json!([1, 2])).await;
    assert_eq!(s, 401, "{b}");
    // Refused locally: the backend never saw those tokens.
    assert!(
        stack.atlas.requests().is_empty(),
        "{:?}",
        stack.atlas.requests()
    );

    let (s, b) = host
        .chat(
            &stack.token(VIEWER),
            json!({"prompt": "hi", "agentId": "floor-bot"}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["agentId"], "floor-bot");
    let (s, b) = host.chat(&stack.token(NO_COMPANY), prompt("hi")).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["agentId"], "default-agent");
    host.stop().await;
}

#[tokio::test]
async fn token_refused_by_atlas_without_local_secret_is_401_and_lookups_are_cached() {
    let mut stack = Stack::new().await;
    stack.unset("JWT_SECRET_KEY");
    let host = stack.start().await;
    let expired = stack.atlas.token_with_ttl(ADMIN, -3600);
    let (s, b) = host.chat(&expired, prompt("hi")).await;
    assert_eq!(s, 401, "{b}");
    let token = stack.token(TECHNICIAN);
    for _ in 0..3 {
        assert_eq!(host.chat(&token, prompt("hello")).await.0, 200);
    }
    let lookups = stack
        .atlas
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/auth/me" && r.header("authorization") == Some(&format!("Bearer {token}"))
        })
        .count();
    assert_eq!(lookups, 1, "the /auth/me answer is cached per token");
    host.stop().await;
}

#[tokio::test]
async fn model_failing_then_recovering_is_retried() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, b) = host.chat(&token, prompt("#fail 500 2\nhello")).await;
    assert_eq!(s, 200, "{b}");
    let hits = stack.openai.requests().len();
    assert_eq!(hits, 3, "two failures, then success");
    // A rate limit (429 with a rate-limit body, not a quota one) is
    // retried too: async-openai's retry layer reads that answer's body.
    let (s, b) = host.chat(&token, prompt("#fail 429 1\nhello again")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        stack.openai.requests().len() - hits,
        2,
        "one 429, then success"
    );
    // More failures than retries: a clean 502 without upstream details.
    let (s, b) = host.chat(&token, prompt("#fail 503 10\nhello")).await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["status"], "error");
    assert!(!b.to_string().contains("chatcmpl"), "{b}");
    host.stop().await;
}

#[tokio::test]
async fn unreachable_model_is_502() {
    let mut stack = Stack::new().await;
    stack
        .set("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .set("OPENAI_MAX_RETRIES", "0");
    let host = stack.start().await;
    let (s, b) = host.chat(&stack.token(ADMIN), prompt("hello")).await;
    assert_eq!(s, 502, "{b}");
    host.stop().await;
}

#[tokio::test]
async fn max_turns_exceeded_is_a_clean_error() {
    let mut stack = Stack::new().await;
    stack.set("AGENT_MAX_TURNS", "3");
    let host = stack.start().await;
    let (s, b) = host.chat(&stack.token(ADMIN), prompt("#loop")).await;
    assert_eq!(s, 502, "{b}");
    assert!(b["message"].as_str().unwrap().contains("3 steps"), "{b}");
    assert_eq!(stack.openai.requests().len(), 3);
    host.stop().await;
}

#[tokio::test]
async fn offline_without_a_model_key() {
    let mut stack = Stack::new().await;
    stack.unset("OPENAI_API_KEY");
    let host = stack.start().await;
    let (s, b) = host.chat(&stack.token(ADMIN), prompt("hello")).await;
    assert_eq!(s, 200, "{b}");
    assert!(answer(&b).contains("offline"));
    // Ready all the same, so a Service keeps sending chats that get this answer.
    let (s, r) = host.get("/health/ready", None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["checks"]["model"], "not_configured");
    assert!(stack.openai.requests().is_empty());
    // Identity checks still apply.
    assert_eq!(
        host.chat(&stack.token(VIEWER), prompt("hello")).await.0,
        403
    );
    let (s, h) = host.get("/health", None).await;
    assert_eq!(
        (s, h),
        (200, json!({"status": "ok", "openaiConfigured": false}))
    );
    host.stop().await;
}

#[tokio::test]
async fn parallel_tool_calls_and_a_failing_tool() {
    let stack = Stack::new().await;
    let host = stack.start().await;
    let p = "#call view_assets {\"limit\": 2}\n#call view_work_order_details {\"workOrderId\": \"WO999999\"}";
    let (s, b) = host.chat(&stack.token(ADMIN), prompt(p)).await;
    assert_eq!(s, 200, "{b}");
    let calls = b["toolCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{b}");
    assert_eq!(calls[0]["toolName"], "view_assets");
    assert_eq!(calls[0]["status"], "success");
    assert_eq!(calls[1]["toolName"], "view_work_order_details");
    assert_eq!(calls[1]["status"], "error");
    assert!(
        calls[1]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("not found"),
        "{b}"
    );
    // The model was told about each failure and still answered.
    let text = answer(&b);
    assert!(
        text.contains("view_work_order_details: {\"error\":\"not-found\""),
        "{text}"
    );
    assert!(text.contains("view_assets: {"), "{text}");
    host.stop().await;
}

#[tokio::test]
async fn oversized_tool_output_is_truncated_before_history() {
    let mut stack = Stack::new().await;
    stack.set("TOOL_RESULT_MAX_BYTES", "300");
    let host = stack.start().await;
    let token = stack.token(ADMIN);
    let (s, _) = host
        .chat(
            &token,
            prompt_in("#call view_work_orders {\"limit\": 10}", "t-1"),
        )
        .await;
    assert_eq!(s, 200);
    let (_, conv) = host.get("/v1/sessions/t-1", Some(&token)).await;
    let tool = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    let content = tool["content"].as_str().unwrap();
    assert!(
        content.len() < 400 && content.contains("truncated"),
        "{content}"
    );
    host.stop().await;
}
