use atlas_stubs::atlas::{
    ADMIN, AtlasConfig, AtlasStub, NO_COMPANY, OTHER_ADMIN, SpawnedAtlas, TECHNICIAN, VIEWER,
};
use atlas_stubs::token;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn spawn() -> SpawnedAtlas {
    AtlasStub::spawn(AtlasConfig::default()).await.unwrap()
}

async fn post(atlas: &SpawnedAtlas, email: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", atlas.base_url()))
        .bearer_auth(atlas.token(email))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn search(atlas: &SpawnedAtlas, email: &str, body: Value) -> (StatusCode, Value) {
    post(atlas, email, "/api/agent/tools/work-orders/search", body).await
}

fn codes(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn me(atlas: &SpawnedAtlas, auth: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(format!("{}/auth/me", atlas.base_url()));
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn auth_me_status_codes() {
    let atlas = spawn().await;
    assert_eq!(me(&atlas, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(me(&atlas, Some("Basic abc")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(me(&atlas, Some("Bearer ")).await.0, StatusCode::FORBIDDEN);

    let forged = token::mint("Zm9yZ2VkLWZvcmdlZC1mb3JnZWQtZm9yZ2VkLWtleQ==", ADMIN, 3600);
    let (status, body) = me(&atlas, Some(&format!("Bearer {forged}"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["success"], false);

    let expired = atlas.token_with_ttl(ADMIN, -5);
    assert_eq!(
        me(&atlas, Some(&format!("Bearer {expired}"))).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let garbage = me(&atlas, Some("Bearer abc.def.ghi")).await.0;
    assert_eq!(garbage, StatusCode::INTERNAL_SERVER_ERROR);

    let stranger = atlas.token("nobody@acme.test");
    assert_eq!(
        me(&atlas, Some(&format!("Bearer {stranger}"))).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn auth_me_returns_the_user() {
    let atlas = spawn().await;
    let (status, body) = me(&atlas, Some(&format!("Bearer {}", atlas.token(ADMIN)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 1);
    assert_eq!(body["email"], ADMIN);
    assert_eq!(body["firstName"], "Alice");
    assert_eq!(body["lastName"], "Admin");
    assert_eq!(body["companyId"], 1);
    assert_eq!(body["role"]["code"], "ADMIN");
    assert_eq!(body["role"]["name"], "Administrator");

    let expect = [
        (TECHNICIAN, 2, json!(1), "TECHNICIAN", "Technician"),
        (VIEWER, 3, json!(1), "VIEW_ONLY", "View only"),
        (NO_COMPANY, 4, Value::Null, "ADMIN", "Administrator"),
        (OTHER_ADMIN, 10, json!(2), "ADMIN", "Administrator"),
    ];
    for (email, id, company, code, name) in expect {
        let (status, body) = me(&atlas, Some(&format!("Bearer {}", atlas.token(email)))).await;
        assert_eq!(status, StatusCode::OK, "{email}");
        assert_eq!(body["id"], id, "{email}");
        assert_eq!(body["companyId"], company, "{email}");
        assert!(body.as_object().unwrap().contains_key("companyId"));
        assert_eq!(body["role"]["code"], code, "{email}");
        assert_eq!(body["role"]["name"], name, "{email}");
    }
}

#[tokio::test]
async fn custom_secret_is_used() {
    let secret = "c3R1Yi1zZWNyZXQtZm9yLXRlc3RzLW9ubHktMzItYnl0ZXMh";
    let atlas = AtlasStub::spawn(AtlasConfig {
        jwt_secret_b64: secret.into(),
        ..AtlasConfig::default()
    })
    .await
    .unwrap();
    let good = token::mint(secret, ADMIN, 60);
    assert_eq!(
        me(&atlas, Some(&format!("Bearer {good}"))).await.0,
        StatusCode::OK
    );
    let default_key = token::mint(token::DEFAULT_JWT_SECRET, ADMIN, 60);
    assert_eq!(
        me(&atlas, Some(&format!("Bearer {default_key}"))).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn tools_need_a_valid_token() {
    let atlas = spawn().await;
    let url = format!("{}/api/agent/tools/work-orders/search", atlas.base_url());
    let client = reqwest::Client::new();
    let res = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = client
        .post(&url)
        .bearer_auth(atlas.token_with_ttl(ADMIN, -5))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(body["message"].is_string());

    let (status, body) = search(&atlas, NO_COMPANY, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let atlas = spawn().await;
    let (status, body) = post(
        &atlas,
        OTHER_ADMIN,
        "/api/agent/tools/work-orders/WO000101/details",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "success": false, "message": "Work order not found" })
    );

    let (status, _) = post(
        &atlas,
        OTHER_ADMIN,
        "/api/agent/tools/work-orders/101/details",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = post(
        &atlas,
        OTHER_ADMIN,
        "/api/agent/tools/work-orders/WO000101/update",
        json!({ "title": "hijacked" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Work order not found");
    assert_eq!(
        atlas.work_order("WO000101").unwrap()["title"],
        "Replace conveyor belt"
    );

    let (_, body) = search(&atlas, OTHER_ADMIN, json!({ "limit": 50 })).await;
    assert_eq!(codes(&body), ["WO000201"]);
    assert_eq!(body["total"], 1);

    let (_, body) = search(&atlas, ADMIN, json!({ "limit": 50 })).await;
    assert!(!codes(&body).contains(&"WO000201".to_owned()));

    let (_, body) = post(
        &atlas,
        OTHER_ADMIN,
        "/api/agent/tools/assets/search",
        json!({ "limit": 50 }),
    )
    .await;
    let names: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    assert!(!names.contains(&"Conveyor Belt A"), "{names:?}");

    let (status, body) = post(
        &atlas,
        ADMIN,
        "/api/agent/tools/work-orders/WO000201/details",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Work order not found");
}

#[tokio::test]
async fn search_defaults_limit_total_and_order() {
    let atlas = spawn().await;
    let (status, body) = search(&atlas, ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().unwrap().len(), 5);
    let total = body["total"].as_u64().unwrap();
    assert!(total >= 10, "total {total}");
    let updated: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["updatedAt"].as_str().unwrap())
        .collect();
    let mut sorted = updated.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(updated, sorted, "default is updatedAt DESC");

    let first = &body["results"][0];
    for field in [
        "id",
        "code",
        "title",
        "status",
        "priority",
        "asset",
        "location",
        "dueDate",
        "updatedAt",
    ] {
        assert!(first.get(field).is_some(), "missing {field}");
    }

    let (_, body) = search(&atlas, ADMIN, json!({ "limit": 50 })).await;
    assert_eq!(body["results"].as_array().unwrap().len() as u64, total);

    let (status, body) = search(&atlas, ADMIN, json!({ "limit": 51 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["success"], false);
    assert_eq!(
        search(&atlas, ADMIN, json!({ "limit": 0 })).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        search(&atlas, ADMIN, json!({ "limit": "lots" })).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn search_filters() {
    let atlas = spawn().await;
    let non_complete = json!({ "limit": 50, "statuses": ["OPEN", "IN_PROGRESS", "ON_HOLD"] });
    let (_, body) = search(&atlas, ADMIN, non_complete).await;
    assert!(body["total"].as_u64().unwrap() >= 8);

    let (_, body) = search(&atlas, ADMIN, json!({ "limit": 2, "statuses": ["OPEN"] })).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert!(
        body["total"].as_u64().unwrap() > 2,
        "total counts before the limit"
    );

    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 50, "statuses": ["Completed"] }),
    )
    .await;
    let mut done = codes(&body);
    done.sort();
    assert!(done.contains(&"WO000103".to_owned()));
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "COMPLETE");
    }
    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 50, "statuses": ["in progress", "on_hold"] }),
    )
    .await;
    assert!(codes(&body).contains(&"WO000102".to_owned()));
    assert!(codes(&body).contains(&"WO000104".to_owned()));
    assert!(!codes(&body).contains(&"WO000101".to_owned()));
    assert_eq!(
        search(&atlas, ADMIN, json!({ "statuses": ["closed"] }))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    let (_, body) = search(&atlas, ADMIN, json!({ "search": "BOILER pressure" })).await;
    assert_eq!(codes(&body), ["WO000102"]);
    let (_, body) = search(&atlas, ADMIN, json!({ "search": "wo000103" })).await;
    assert_eq!(codes(&body), ["WO000103"]);
    let (_, body) = search(&atlas, ADMIN, json!({ "search": "waiting for parts" })).await;
    assert_eq!(codes(&body), ["WO000104"], "description matches");

    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 50, "priorities": ["high"] }),
    )
    .await;
    assert!(codes(&body).contains(&"WO000101".to_owned()));
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["priority"], "HIGH");
    }

    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 50, "dueDateBefore": "2026-05-01" }),
    )
    .await;
    for r in body["results"].as_array().unwrap() {
        assert!(r["dueDate"].as_str().unwrap() < "2026-05-01", "{r}");
    }
    assert!(codes(&body).contains(&"WO000103".to_owned()));

    let (_, body) = search(&atlas, ADMIN, json!({ "limit": 50, "assignedToUserId": 2 })).await;
    assert!(codes(&body).contains(&"WO000101".to_owned()));
    assert!(!codes(&body).contains(&"WO000121".to_owned()));
}

#[tokio::test]
async fn search_sorting() {
    let atlas = spawn().await;
    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 50, "sortBy": "dueDate", "sortDirection": "ASC" }),
    )
    .await;
    let due: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dueDate"].as_str().unwrap())
        .collect();
    let mut sorted = due.clone();
    sorted.sort();
    assert_eq!(due, sorted);

    let (_, body) = search(&atlas, ADMIN, json!({ "limit": 50, "sortBy": "priority" })).await;
    assert_eq!(body["results"][0]["priority"], "HIGH");
    let last = body["results"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["priority"], "NONE");

    let (_, body) = search(
        &atlas,
        ADMIN,
        json!({ "limit": 1, "sortBy": "updatedAt", "sortDirection": "asc" }),
    )
    .await;
    assert_eq!(codes(&body), ["WO000127"]);

    assert_eq!(
        search(&atlas, ADMIN, json!({ "sortBy": "colour" })).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn details_by_code_and_id() {
    let atlas = spawn().await;
    let (status, by_code) = post(
        &atlas,
        TECHNICIAN,
        "/api/agent/tools/work-orders/WO000101/details",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, by_id) = post(
        &atlas,
        TECHNICIAN,
        "/api/agent/tools/work-orders/101/details",
        json!({}),
    )
    .await;
    assert_eq!(by_code, by_id);
    assert_eq!(by_code["code"], "WO000101");
    assert_eq!(by_code["id"], 101);
    assert_eq!(by_code["title"], "Replace conveyor belt");
    assert_eq!(by_code["status"], "OPEN");
    assert_eq!(by_code["priority"], "HIGH");
    assert_eq!(by_code["asset"]["name"], "Conveyor Belt A");
    for field in ["tasks", "labor", "history", "files"] {
        assert!(by_code[field].is_array(), "{field}");
    }
    assert!(!by_code["tasks"].as_array().unwrap().is_empty());
    assert_eq!(by_code["people"]["primaryUser"]["id"], 2);
    assert!(by_code["people"]["assignedTo"].is_array());
    for field in [
        "description",
        "location",
        "dueDate",
        "createdAt",
        "updatedAt",
    ] {
        assert!(!by_code[field].is_null(), "{field}");
    }

    let (status, body) = post(
        &atlas,
        ADMIN,
        "/api/agent/tools/work-orders/WO009999/details",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Work order not found");
}

#[tokio::test]
async fn create_and_update() {
    let atlas = spawn().await;
    let create = "/api/agent/tools/work-orders/create";
    let (status, body) = post(&atlas, VIEWER, create, json!({ "title": "Nope" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["success"], false);

    assert_eq!(
        post(&atlas, ADMIN, create, json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&atlas, ADMIN, create, json!({ "title": "  " }))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    let (status, body) = post(
        &atlas,
        TECHNICIAN,
        create,
        json!({ "title": "Fix the leaking pipe", "description": "Under sink 3" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["workOrder"]["id"], 105);
    assert_eq!(body["workOrder"]["code"], "WO000105");
    assert_eq!(body["workOrder"]["title"], "Fix the leaking pipe");
    assert_eq!(body["workOrder"]["status"], "OPEN");
    assert_eq!(body["workOrder"]["priority"], "NONE");
    assert!(body["workOrder"]["createdAt"].is_string());
    assert_eq!(body["message"], "Work order WO000105 created");

    let (_, body) = post(
        &atlas,
        ADMIN,
        create,
        json!({ "title": "Second", "priority": "high", "assetId": 13 }),
    )
    .await;
    assert_eq!(body["workOrder"]["code"], "WO000106");
    assert_eq!(body["workOrder"]["priority"], "HIGH");

    // Created work orders are searchable by their company only.
    let (_, body) = search(&atlas, ADMIN, json!({ "search": "leaking pipe" })).await;
    assert_eq!(codes(&body), ["WO000105"]);
    let (_, body) = search(&atlas, OTHER_ADMIN, json!({ "search": "leaking pipe" })).await;
    assert_eq!(body["total"], 0);

    // Another company's asset cannot be attached.
    let (status, _) = post(
        &atlas,
        ADMIN,
        create,
        json!({ "title": "x", "assetId": 21 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let update = "/api/agent/tools/work-orders/WO000101/update";
    assert_eq!(
        post(&atlas, VIEWER, update, json!({ "priority": "LOW" }))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = post(
        &atlas,
        TECHNICIAN,
        update,
        json!({ "priority": "low", "dueDate": "2026-09-01T12:00:00Z" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["updatedFields"], json!(["priority", "dueDate"]));
    assert_eq!(body["workOrder"]["priority"], "LOW");
    assert_eq!(body["workOrder"]["code"], "WO000101");
    assert!(body["message"].as_str().unwrap().contains("WO000101"));
    let stored = atlas.work_order("101").unwrap();
    assert_eq!(stored["priority"], "LOW");
    assert_eq!(stored["dueDate"], "2026-09-01T12:00:00Z");

    let (status, _) = post(
        &atlas,
        ADMIN,
        "/api/agent/tools/work-orders/WO000777/update",
        json!({ "title": "x" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        post(&atlas, ADMIN, update, json!({ "priority": "urgent" }))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        atlas.work_order("101").unwrap()["priority"],
        "LOW",
        "failed update changes nothing"
    );
}

#[tokio::test]
async fn assets_search() {
    let atlas = spawn().await;
    let (status, body) = post(&atlas, ADMIN, "/api/agent/tools/assets/search", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["total"].as_u64().unwrap() >= 4);
    let first = &body["results"][0];
    for field in ["id", "name", "status", "location", "customId", "category"] {
        assert!(!first[field].is_null(), "{field}");
    }
    let (_, body) = post(
        &atlas,
        ADMIN,
        "/api/agent/tools/assets/search",
        json!({ "search": "pump", "limit": 1 }),
    )
    .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["name"], "Water Pump P-3");
    assert_eq!(body["results"][0]["status"], "DOWN");
    let (status, _) = post(
        &atlas,
        ADMIN,
        "/api/agent/tools/assets/search",
        json!({ "limit": 99 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_toggle_and_unknown_paths() {
    let atlas = spawn().await;
    let client = reqwest::Client::new();
    let health = format!("{}/actuator/health", atlas.base_url());
    let res = client.get(&health).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "status": "UP" })
    );
    atlas.set_healthy(false);
    let res = client.get(&health).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "status": "DOWN" })
    );
    atlas.set_healthy(true);
    assert_eq!(
        client.get(&health).send().await.unwrap().status(),
        StatusCode::OK
    );

    let res = client
        .get(format!("{}/nowhere", atlas.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.json::<Value>().await.is_ok());
    let (status, _) = post(&atlas, ADMIN, "/api/agent/drafts", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// reqwest normalises `%2e%2e` away, so this speaks HTTP/1.1 by hand.
async fn raw_request(atlas: &SpawnedAtlas, request_line_path: &str, token: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(atlas.addr).await.unwrap();
    let body = "{}";
    let req = format!(
        "POST {request_line_path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        atlas.addr,
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn records_raw_paths_headers_and_bodies() {
    let atlas = spawn().await;
    let token = atlas.token(ADMIN);
    let raw = "/api/agent/tools/work-orders/%2e%2e/details?x=%3F";
    let response = raw_request(&atlas, raw, &token).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    post(
        &atlas,
        ADMIN,
        "/api/agent/tools/work-orders/search",
        json!({ "limit": 2 }),
    )
    .await;
    reqwest::get(format!("{}/missing", atlas.base_url()))
        .await
        .unwrap();

    let recorded = atlas.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, raw);
    assert_eq!(recorded[0].body, "{}");
    assert_eq!(
        recorded[0].header("Authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(recorded[1].path, "/api/agent/tools/work-orders/search");
    assert_eq!(recorded[1].json().unwrap(), json!({ "limit": 2 }));
    assert!(recorded[1].headers.keys().all(|k| *k == k.to_lowercase()));
    assert!(recorded[1].headers.contains_key("content-type"));
    assert_eq!(recorded[2].method, "GET");
    assert_eq!(recorded[2].path, "/missing");

    atlas.clear_requests();
    assert!(atlas.requests().is_empty());
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let mut atlas = spawn().await;
    let url = format!("{}/actuator/health", atlas.base_url());
    let client = reqwest::Client::new();
    assert!(client.get(&url).send().await.unwrap().status().is_success());
    atlas.set_healthy(false);

    atlas.stop().await;
    assert!(!atlas.is_running());
    assert!(
        client.get(&url).send().await.is_err(),
        "stopped stub must refuse connections"
    );

    atlas.restart().await.unwrap();
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "state survives a restart"
    );
    atlas.shutdown().await;
}

#[tokio::test]
async fn latency_is_applied() {
    let atlas = AtlasStub::spawn(AtlasConfig {
        latency: std::time::Duration::from_millis(150),
        ..AtlasConfig::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    reqwest::get(format!("{}/actuator/health", atlas.base_url()))
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}
