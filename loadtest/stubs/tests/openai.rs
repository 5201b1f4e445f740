use atlas_stubs::openai::{OpenAiConfig, OpenAiStub, SpawnedOpenAi};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOOLS: &[&str] = &[
    "view_work_orders",
    "view_work_order_details",
    "view_assets",
    "get_user_context",
    "prepare_work_order_creation_draft",
    "prepare_work_order_completion_draft",
];

fn tools(names: &[&str]) -> Value {
    names
        .iter()
        .map(|n| {
            json!({ "type": "function", "function": {
                "name": n, "description": "test tool",
                "parameters": { "type": "object", "properties": {} }, "strict": false } })
        })
        .collect()
}

fn request(messages: Value) -> Value {
    json!({ "model": "gpt-test", "messages": messages, "tools": tools(TOOLS) })
}

fn user(prompt: &str) -> Value {
    json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": prompt }])
}

async fn spawn() -> SpawnedOpenAi {
    OpenAiStub::spawn(OpenAiConfig::default()).await.unwrap()
}

async fn chat_raw(ai: &SpawnedOpenAi, body: &Value) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/chat/completions", ai.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn chat(ai: &SpawnedOpenAi, body: &Value) -> Value {
    let (status, body) = chat_raw(ai, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn text(res: &Value) -> &str {
    assert_eq!(res["choices"][0]["finish_reason"], "stop", "{res}");
    res["choices"][0]["message"]["content"].as_str().unwrap()
}

/// (name, parsed arguments) of each tool call.
fn calls(res: &Value) -> Vec<(String, Value)> {
    assert_eq!(res["choices"][0]["finish_reason"], "tool_calls", "{res}");
    assert!(res["choices"][0]["message"]["content"].is_null());
    res["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "function");
            assert!(c["id"].as_str().unwrap().starts_with("call_"));
            let args = c["function"]["arguments"].as_str().unwrap();
            (
                c["function"]["name"].as_str().unwrap().to_owned(),
                serde_json::from_str(args).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn response_shape_is_standard() {
    let ai = spawn().await;
    let res = chat(&ai, &request(user("hello there"))).await;
    assert!(res["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(res["object"], "chat.completion");
    assert_eq!(res["model"], "gpt-test");
    assert!(res["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(res["choices"][0]["index"], 0);
    assert_eq!(res["choices"][0]["message"]["role"], "assistant");
    assert!(res["choices"][0]["logprobs"].is_null());
    assert_eq!(text(&res), "You said: hello there");
    let usage = &res["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0);
    assert_eq!(p + c, t);
    // Deterministic counts for the same request.
    let again = chat(&ai, &request(user("hello there"))).await;
    assert_eq!(again["usage"], res["usage"]);
}

#[tokio::test]
async fn async_openai_parses_answers() {
    use async_openai::Client;
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionMessageToolCalls, CreateChatCompletionRequest, FinishReason,
    };

    let ai = OpenAiStub::spawn(OpenAiConfig {
        api_key: Some("sk-test".into()),
        ..OpenAiConfig::default()
    })
    .await
    .unwrap();
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(ai.base_url())
            .with_api_key("sk-test"),
    );
    let req: CreateChatCompletionRequest =
        serde_json::from_value(request(user("show my work orders"))).unwrap();
    let res = client.chat().create(req).await.unwrap();
    let choice = &res.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let Some(calls) = &choice.message.tool_calls else {
        panic!("no tool calls")
    };
    let ChatCompletionMessageToolCalls::Function(call) = &calls[0] else {
        panic!("not a function call")
    };
    assert_eq!(call.function.name, "view_work_orders");
    assert_eq!(call.function.arguments, r#"{"limit":5}"#);

    // The tool result goes back the way the host sends it, and a text answer parses too.
    let follow_up = json!({
        "model": "gpt-test",
        "messages": [
            { "role": "user", "content": "show my work orders" },
            { "role": "assistant", "content": null, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": { "name": "view_work_orders", "arguments": "{\"limit\":5}" } }] },
            { "role": "tool", "tool_call_id": call.id, "content": "{\"total\":1}" }
        ],
        "tools": tools(TOOLS),
    });
    let req: CreateChatCompletionRequest = serde_json::from_value(follow_up).unwrap();
    let res = client.chat().create(req).await.unwrap();
    assert_eq!(res.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        res.choices[0].message.content.as_deref(),
        Some("Here is what I found:\n\n- view_work_orders: {\"total\":1}")
    );
    assert!(res.usage.is_some());
}

#[tokio::test]
async fn keywords_choose_tools() {
    let ai = spawn().await;
    let cases = [
        (
            "Show me open work orders",
            "view_work_orders",
            json!({ "limit": 5 }),
        ),
        (
            "List my assets please",
            "view_assets",
            json!({ "limit": 5 }),
        ),
        ("who am I?", "get_user_context", json!({})),
        (
            "Please complete wo000101 today",
            "prepare_work_order_completion_draft",
            json!({ "workOrderId": "WO000101", "summary": "Complete work order WO000101" }),
        ),
        (
            "Create a work order to fix the leaking pipe",
            "prepare_work_order_creation_draft",
            json!({ "title": "fix the leaking pipe" }),
        ),
        (
            "create work order: Replace lamp",
            "prepare_work_order_creation_draft",
            json!({ "title": "Replace lamp" }),
        ),
    ];
    for (prompt, tool, args) in cases {
        let res = chat(&ai, &request(user(prompt))).await;
        assert_eq!(calls(&res), vec![(tool.to_owned(), args)], "{prompt}");
    }
}

#[tokio::test]
async fn tool_results_give_a_final_answer() {
    let ai = spawn().await;
    let long = "x".repeat(2000);
    let messages = json!([
        { "role": "system", "content": "sys" },
        { "role": "user", "content": "old question" },
        { "role": "assistant", "content": "old answer" },
        { "role": "user", "content": "show work orders and assets" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_a", "type": "function", "function": { "name": "view_work_orders", "arguments": "{}" } },
            { "id": "call_b", "type": "function", "function": { "name": "view_assets", "arguments": "{}" } } ] },
        { "role": "tool", "tool_call_id": "call_a", "content": "{\"type\":\"work_orders\",\"total\":2}" },
        { "role": "tool", "tool_call_id": "call_b", "content": [{ "type": "text", "text": long }] }
    ]);
    let res = chat(&ai, &request(messages)).await;
    let answer = text(&res);
    let expected = format!(
        "Here is what I found:\n\n- view_work_orders: {{\"type\":\"work_orders\",\"total\":2}}\n- view_assets: {}",
        "x".repeat(1500)
    );
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn call_directive_makes_parallel_calls() {
    let ai = spawn().await;
    let prompt = "do two things\n#call view_work_order_details {\"workOrderId\": \"WO000101\"}\n  #call view_assets {\"search\":\"pump\",\"limit\":2}";
    let res = chat(&ai, &request(user(prompt))).await;
    assert_eq!(
        calls(&res),
        vec![
            (
                "view_work_order_details".to_owned(),
                json!({ "workOrderId": "WO000101" })
            ),
            (
                "view_assets".to_owned(),
                json!({ "search": "pump", "limit": 2 })
            ),
        ]
    );
    let ids: Vec<&str> = res["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1], "call ids are unique");
}

#[tokio::test]
async fn unavailable_tools_are_not_called() {
    let ai = spawn().await;
    let mut body = request(user("#call delete_everything {}"));
    let res = chat(&ai, &body).await;
    assert_eq!(text(&res), "The tool delete_everything is not available.");

    body["tools"] = tools(&["view_assets"]);
    body["messages"] = user("show work orders");
    assert_eq!(
        text(&chat(&ai, &body).await),
        "The tool view_work_orders is not available."
    );
    body["tool_choice"] = json!("none");
    body["messages"] = user("list assets");
    assert_eq!(
        text(&chat(&ai, &body).await),
        "The tool view_assets is not available."
    );
}

#[tokio::test]
async fn fail_directive_fails_n_times_then_succeeds() {
    let ai = spawn().await;
    let body = request(user("#fail 500 2\nhello"));
    for _ in 0..2 {
        let (status, err) = chat_raw(&ai, &body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err["error"]["message"].is_string());
        assert!(err["error"]["type"].is_string());
        assert!(err["error"].as_object().unwrap().contains_key("code"));
    }
    let res = chat(&ai, &body).await;
    assert_eq!(text(&res), "You said: #fail 500 2\nhello");
    // Other prompts have their own counters.
    let (status, _) = chat_raw(&ai, &request(user("#fail 429 1\nagain"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ai.requests().len(), 4);
}

#[tokio::test]
async fn loop_never_answers() {
    let ai = spawn().await;
    let mut messages = user("#loop");
    for round in 0..3 {
        let res = chat(&ai, &request(messages.clone())).await;
        assert_eq!(
            calls(&res),
            vec![("get_user_context".to_owned(), json!({}))]
        );
        let call = res["choices"][0]["message"]["tool_calls"][0].clone();
        let list = messages.as_array_mut().unwrap();
        list.push(json!({ "role": "assistant", "content": null, "tool_calls": [call.clone()] }));
        list.push(json!({ "role": "tool", "tool_call_id": call["id"], "content": format!("round {round}") }));
    }
}

#[tokio::test]
async fn recall_and_system() {
    let ai = spawn().await;
    let res = chat(&ai, &request(user("#recall"))).await;
    assert_eq!(text(&res), "Earlier you said: nothing");
    let messages = json!([
        { "role": "system", "content": "You are the Atlas assistant." },
        { "role": "user", "content": "first" },
        { "role": "assistant", "content": "ok" },
        { "role": "user", "content": "second" },
        { "role": "assistant", "content": "ok" },
        { "role": "user", "content": "#recall" }
    ]);
    assert_eq!(
        text(&chat(&ai, &request(messages)).await),
        "Earlier you said: first | second"
    );
    let res = chat(
        &ai,
        &request(json!([
            { "role": "system", "content": "You are the Atlas assistant." },
            { "role": "user", "content": "#system" }
        ])),
    )
    .await;
    assert_eq!(text(&res), "You are the Atlas assistant.");
}

#[tokio::test]
async fn sleep_directive_delays() {
    let ai = spawn().await;
    let started = std::time::Instant::now();
    chat(&ai, &request(user("#sleep 200\nhi"))).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
}

#[tokio::test]
async fn api_key_fail_every_and_recording() {
    let ai = OpenAiStub::spawn(OpenAiConfig {
        api_key: Some("sk-right".into()),
        fail_every: Some(3),
        ..OpenAiConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", ai.base_url());
    let client = reqwest::Client::new();
    let body = request(user("hello"));
    let res = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = client
            .post(&url)
            .bearer_auth("sk-right")
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);

    // Also served without the /v1 prefix.
    let bare = format!("http://{}/chat/completions", ai.addr);
    let res = client
        .post(&bare)
        .bearer_auth("sk-right")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let recorded = ai.requests();
    assert_eq!(recorded.len(), 9);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].header("authorization"), None);
    assert_eq!(recorded[2].header("authorization"), Some("Bearer sk-right"));
    assert_eq!(recorded[2].json().unwrap(), body);
    assert_eq!(recorded[8].path, "/chat/completions");

    let listed: Vec<atlas_stubs::record::RecordedRequest> = client
        .get(format!("http://{}/__requests", ai.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, recorded);
    ai.clear_requests();
    assert!(ai.requests().is_empty());
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let ai = spawn().await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/chat/completions", ai.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let (status, _) = chat_raw(&ai, &json!({ "model": "m", "messages": [] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let res = client
        .get(format!("{}/embeddings", ai.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
