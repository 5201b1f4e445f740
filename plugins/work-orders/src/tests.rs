use super::tools;
use atlas_agent_sdk::prelude::*;
use atlas_agent_sdk::testing::Harness;

const POLICY: &str = include_str!("../work-orders.policy.toml");

fn harness() -> Harness {
    Harness::new(tools()).policy_file(POLICY)
}

fn search_reply() -> Value {
    json!({
        "results": [
            { "id": 101, "code": "WO000101", "title": "Fix pump", "status": "OPEN", "priority": "HIGH",
              "asset": { "id": 3, "name": "Pump A" }, "location": { "name": "Hall" },
              "dueDate": "2026-12-01", "updatedAt": "2026-11-01" },
            { "id": 102, "title": null, "description": "Oil leak", "status": "ON_HOLD", "priority": "LOW",
              "asset": null, "dueDate": null },
            { "id": 103, "code": "WO000103", "title": "Belt", "status": "OPEN", "priority": "NONE", "asset": "Conveyor" }
        ],
        "total": 42
    })
}

#[test]
fn describes_four_tools_with_strict_schemas() {
    let specs = harness().describe();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "view_work_orders",
            "view_work_order_details",
            "create_work_order_immediately",
            "update_work_order"
        ]
    );
    let kinds: Vec<_> = specs.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            ToolKind::Read,
            ToolKind::Read,
            ToolKind::Write,
            ToolKind::Write
        ]
    );
    let view = &specs[0];
    assert!(view.description.starts_with("Retrieve work orders"));
    for arg in [
        "limit",
        "statuses",
        "search",
        "priorities",
        "dueDateBefore",
        "sortBy",
        "sortDirection",
        "assetId",
    ] {
        assert!(
            view.parameters["properties"].get(arg).is_some(),
            "missing {arg}"
        );
    }
    // The flattened fields show up in create, with title the only non-nullable one.
    let create = &specs[2].parameters;
    assert_eq!(create["properties"]["title"]["type"], "string");
    assert_eq!(
        create["properties"]["assignedUserIds"]["type"],
        json!(["array", "null"])
    );
    assert_eq!(create["additionalProperties"], json!(false));
    assert_eq!(
        specs[1].parameters["properties"]["workOrderId"]["anyOf"],
        json!([{ "type": "string" }, { "type": "integer" }])
    );
}

#[test]
fn view_work_orders_defaults() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
        (200, search_reply())
    });
    let out = h.invoke("view_work_orders", json!({})).unwrap();
    let req = &h.requests()[0];
    assert_eq!(req.path(), "/api/agent/tools/work-orders/search");
    assert_eq!(
        req.json(),
        json!({ "limit": 5, "statuses": ["OPEN", "IN_PROGRESS", "ON_HOLD"] })
    );
    let body = out.json();
    assert_eq!(body["type"], "work_orders");
    assert_eq!(body["total"], 42);
    assert_eq!(out.result_count, Some(3));
    assert_eq!(
        body["items"][0],
        json!({ "id": 101, "code": "WO000101", "title": "Fix pump", "priority": "HIGH",
                "status": "OPEN", "dueDate": "2026-12-01", "asset": "Pump A" })
    );
    // Fallbacks: code -> id, title -> description, asset as a plain string.
    assert_eq!(body["items"][1]["code"], 102);
    assert_eq!(body["items"][1]["title"], "Oil leak");
    assert_eq!(body["items"][1]["asset"], Value::Null);
    assert_eq!(body["items"][2]["asset"], "Conveyor");
}

#[test]
fn strict_mode_nulls_act_as_defaults() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
        (200, search_reply())
    });
    h.invoke(
        "view_work_orders",
        json!({ "limit": null, "statuses": null, "search": null, "priorities": null }),
    )
    .unwrap();
    assert_eq!(
        h.requests()[0].json(),
        json!({ "limit": 5, "statuses": ["OPEN", "IN_PROGRESS", "ON_HOLD"] })
    );
}

#[test]
fn limit_is_clamped_to_max_results() {
    let h =
        harness()
            .max_results(10)
            .on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
                (200, search_reply())
            });
    h.invoke("view_work_orders", json!({ "limit": 500 }))
        .unwrap();
    h.invoke("view_work_orders", json!({ "limit": 0 })).unwrap();
    h.invoke("view_work_orders", json!({ "limit": 2 })).unwrap();
    let limits: Vec<_> = h
        .requests()
        .iter()
        .map(|r| r.json()["limit"].clone())
        .collect();
    assert_eq!(limits, [json!(10), json!(5), json!(2)]);
    // Never more items than the limit, even if the backend sends more.
    let out = h.invoke("view_work_orders", json!({ "limit": 2 })).unwrap();
    assert_eq!(out.json()["items"].as_array().unwrap().len(), 2);
    assert_eq!(out.result_count, Some(2));
    let small =
        harness()
            .max_results(3)
            .on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
                (200, search_reply())
            });
    small.invoke("view_work_orders", json!({})).unwrap();
    assert_eq!(small.requests()[0].json()["limit"], 3);
}

#[test]
fn filters_are_normalised() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
        (200, search_reply())
    });
    h.invoke(
        "view_work_orders",
        json!({
            "statuses": ["Completed", "in progress", "open", "COMPLETE", " "],
            "priorities": ["high", "Low"],
            "search": "  pump ",
            "sortBy": "due_date",
            "sortDirection": "asc",
            "assetId": 3,
            "dueDateBefore": "2026-12-31"
        }),
    )
    .unwrap();
    assert_eq!(
        h.requests()[0].json(),
        json!({
            "limit": 5,
            "statuses": ["COMPLETE", "IN_PROGRESS", "OPEN"],
            "priorities": ["HIGH", "LOW"],
            "search": "pump",
            "sortBy": "dueDate",
            "sortDirection": "ASC",
            "assetId": 3,
            "dueDateBefore": "2026-12-31"
        })
    );
    // A single string is accepted where a list is expected.
    h.invoke(
        "view_work_orders",
        json!({ "statuses": "completed", "priorities": "MEDIUM" }),
    )
    .unwrap();
    let second = h.requests()[1].json();
    assert_eq!(second["statuses"], json!(["COMPLETE"]));
    assert_eq!(second["priorities"], json!(["MEDIUM"]));
}

#[test]
fn bad_filters_are_refused_before_calling_the_backend() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
        (200, search_reply())
    });
    for args in [
        json!({ "statuses": ["lost"] }),
        json!({ "priorities": ["urgent"] }),
        json!({ "sortDirection": "sideways" }),
        json!({ "sortBy": "colour" }),
        json!({ "limit": "many" }),
    ] {
        let err = h.invoke("view_work_orders", args.clone()).unwrap_err();
        assert!(
            matches!(err, ToolError::InvalidArguments(_)),
            "{args}: {err}"
        );
    }
    let err = h
        .invoke("view_work_orders", json!({ "limit": "many" }))
        .unwrap_err();
    assert!(err.message().starts_with("limit:"), "{err}");
    assert!(h.requests().is_empty());
}

#[test]
fn details_by_id_or_code() {
    let h = harness().on(
        Method::Post,
        "/api/agent/tools/work-orders/{id}/details",
        |req| {
            (
                200,
                json!({ "id": 101, "code": "WO000101", "tasks": [], "asked": req.segments[4] }),
            )
        },
    );
    let out = h
        .invoke(
            "view_work_order_details",
            json!({ "workOrderId": "WO000101" }),
        )
        .unwrap();
    assert_eq!(out.json()["type"], "work_order_details");
    assert_eq!(out.json()["details"]["code"], "WO000101");
    h.invoke("view_work_order_details", json!({ "workOrderId": 101 }))
        .unwrap();
    let reqs = h.requests();
    assert_eq!(
        reqs[0].path(),
        "/api/agent/tools/work-orders/WO000101/details"
    );
    assert_eq!(reqs[0].json(), json!({}));
    assert_eq!(reqs[1].path(), "/api/agent/tools/work-orders/101/details");
}

#[test]
fn hostile_ids_stay_one_segment() {
    let h = harness().on(
        Method::Post,
        "/api/agent/tools/work-orders/{id}/details",
        |_| (200, json!({})),
    );
    for hostile in ["../../auth/me", "1?admin=true", "1#x", "a/b"] {
        h.invoke("view_work_order_details", json!({ "workOrderId": hostile }))
            .unwrap();
    }
    for (req, hostile) in h
        .requests()
        .iter()
        .zip(["../../auth/me", "1?admin=true", "1#x", "a/b"])
    {
        assert_eq!(
            req.segments,
            ["api", "agent", "tools", "work-orders", hostile, "details"]
        );
    }
    // A bare `..` is refused as a path, and never reaches the backend.
    let err = h
        .invoke(
            "update_work_order",
            json!({ "workOrderId": "..", "title": "x" }),
        )
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)), "{err}");
    assert_eq!(h.requests().len(), 4);
}

#[test]
fn details_require_an_id() {
    let h = harness();
    for args in [
        json!({}),
        json!({ "workOrderId": "  " }),
        json!({ "workOrderId": true }),
    ] {
        let err = h.invoke("view_work_order_details", args).unwrap_err();
        assert!(matches!(err, ToolError::InvalidArguments(_)));
    }
}

#[test]
fn backend_errors_are_mapped() {
    let h = harness()
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/404/details",
            |_| {
                (
                    404,
                    json!({ "success": false, "message": "Work order not found" }),
                )
            },
        )
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/403/details",
            |_| (403, json!({ "success": false, "message": "Access denied" })),
        )
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/400/details",
            |_| (400, json!({ "success": false, "message": "Bad id" })),
        )
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/500/details",
            |_| (500, "<html>oops</html>"),
        )
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/slow/details",
            |_| atlas_agent_sdk::backend::BackendError::Timeout,
        );
    let run = |id: &str| {
        h.invoke("view_work_order_details", json!({ "workOrderId": id }))
            .unwrap_err()
    };
    assert_eq!(
        run("404"),
        ToolError::NotFound("Work order not found".into())
    );
    assert_eq!(run("403"), ToolError::Forbidden("Access denied".into()));
    assert_eq!(run("400"), ToolError::InvalidArguments("Bad id".into()));
    assert!(matches!(run("500"), ToolError::Backend(m) if m.contains("500")));
    assert!(matches!(run("slow"), ToolError::Backend(_)));
}

#[test]
fn ungranted_paths_are_forbidden() {
    // Without the grant for details, the host refuses the call.
    let h = Harness::new(tools())
        .policy_file(
            "[[allow]]\nmethod = \"POST\"\npath = \"/api/agent/tools/work-orders/search\"\n",
        )
        .on(
            Method::Post,
            "/api/agent/tools/work-orders/{id}/details",
            |_| (200, json!({})),
        );
    let err = h
        .invoke("view_work_order_details", json!({ "workOrderId": 1 }))
        .unwrap_err();
    assert!(matches!(err, ToolError::Forbidden(_)), "{err}");
    assert!(h.requests().is_empty());
}

#[test]
fn create_sends_title_and_fields() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/create", |_| {
        (200, json!({ "success": true, "workOrder": { "id": 9, "code": "WO000009", "title": "Fix belt" }, "message": "Created" }))
    });
    let out = h
        .invoke(
            "create_work_order_immediately",
            json!({ "title": " Fix belt ", "priority": "high", "assetId": 3, "assignedUserIds": [4, 5],
                    "estimatedDurationHours": 2, "requireSignature": null, "description": null }),
        )
        .unwrap();
    assert_eq!(
        h.requests()[0].json(),
        json!({ "title": "Fix belt", "priority": "HIGH", "assetId": 3, "assignedUserIds": [4, 5],
                "estimatedDurationHours": 2.0 })
    );
    assert_eq!(
        out.json(),
        json!({ "status": "created", "workOrder": { "id": 9, "code": "WO000009", "title": "Fix belt" }, "message": "Created" })
    );
    assert_eq!(out.result_count, Some(1));
}

#[test]
fn create_needs_a_title_and_defaults_the_message() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/create", |_| {
        (200, json!({ "success": true, "workOrder": { "id": 9 } }))
    });
    assert!(matches!(
        h.invoke("create_work_order_immediately", json!({ "title": "   " })),
        Err(ToolError::InvalidArguments(_))
    ));
    let err = h
        .invoke(
            "create_work_order_immediately",
            json!({ "description": "x" }),
        )
        .unwrap_err();
    assert!(err.message().contains("title"), "{err}");
    assert!(matches!(
        h.invoke(
            "create_work_order_immediately",
            json!({ "title": "x", "priority": "urgent" })
        ),
        Err(ToolError::InvalidArguments(_))
    ));
    assert!(h.requests().is_empty());
    let out = h
        .invoke("create_work_order_immediately", json!({ "title": "x" }))
        .unwrap();
    assert_eq!(out.json()["message"], "Work order created successfully");
}

#[test]
fn update_sends_changes_to_the_work_order_path() {
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/{id}/update", |_| {
        (200, json!({ "success": true, "workOrder": { "id": 101 }, "message": "Updated", "updatedFields": ["priority"] }))
    });
    let out = h
        .invoke(
            "update_work_order",
            json!({ "workOrderId": "WO000101", "priority": "medium", "title": null }),
        )
        .unwrap();
    let req = &h.requests()[0];
    assert_eq!(req.path(), "/api/agent/tools/work-orders/WO000101/update");
    assert_eq!(
        req.json(),
        json!({ "workOrderId": "WO000101", "priority": "MEDIUM" })
    );
    assert_eq!(
        out.json(),
        json!({ "status": "updated", "workOrder": { "id": 101 }, "message": "Updated", "updatedFields": ["priority"] })
    );
}

#[test]
fn update_needs_something_to_change() {
    let h = harness();
    let err = h
        .invoke("update_work_order", json!({ "workOrderId": 5 }))
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)));
    let h = harness().on(
        Method::Post,
        "/api/agent/tools/work-orders/{id}/update",
        |_| (200, json!({ "success": true, "workOrder": { "id": 5 } })),
    );
    let out = h
        .invoke(
            "update_work_order",
            json!({ "workOrderId": 5, "title": "New" }),
        )
        .unwrap();
    assert_eq!(
        h.requests()[0].json(),
        json!({ "workOrderId": 5, "title": "New" })
    );
    assert_eq!(out.json()["updatedFields"], json!([]));
    assert_eq!(out.json()["message"], "Work order updated successfully");
}

/// Answers the backend might send, odd ones included: both ways of building
/// the list must give the same JSON, and the borrowing one must take them.
#[test]
fn borrowing_listing_matches_the_value_one() {
    let answers = [
        search_reply().to_string(),
        // Pretty-printed, with escapes and a list at the top level.
        serde_json::to_string_pretty(&search_reply()["results"]).unwrap(),
        r#"[{"id":7,"code":"","customId":"C-7","title":"","description":"","asset":{"customId":"A\"1"}},
            {"id":8,"code":null,"asset":{"name":null,"customId":"X"}},
            {"asset":{"id":1}}, 5, "text", null, {"id":9,"asset":[1,2]}]"#
            .to_string(),
        r#"{"results":[{"id":1,"title":"\u00e9t\u00e9"}],"total":"12"}"#.to_string(),
        r#"{"results":{"id":1},"total":3}"#.to_string(),
        r#"{"total":-1}"#.to_string(),
        r#"{"results":[],"total":1e3}"#.to_string(),
        // Escaped key names, and fields and keys the summary skips.
        r#"{"page":{"n":[1,{"a":null}]},"results":[{"\u0069d":3,"t\u0069tle":"X","extra":[1.5,{"b":true}],"asset":{"id":2,"name":"Pump","tags":["x"]}}],"total":1}"#
            .to_string(),
        r#"{"results":{"a":[1,2],"b":{"c":"d"}}}"#.to_string(),
        r#"[{"id":12345678901234567890,"code":-5,"title":true,"priority":"P\"1"}]"#.to_string(),
        "null".to_string(),
        "17".to_string(),
    ];
    for answer in &answers {
        for limit in [1, 2, 5, 50] {
            let fast = super::listing::summarize(answer, limit)
                .unwrap_or_else(|| panic!("borrowing parse refused {answer}"));
            let fast_count = fast.items.len();
            let fast = serde_json::to_value(&fast).unwrap();
            let (slow, slow_count) = super::listing_by_value(answer, limit).unwrap();
            assert_eq!(fast, slow, "answer {answer}, limit {limit}");
            assert_eq!(fast_count, slow_count);
        }
    }
}

#[test]
fn listing_falls_back_to_values_for_repeated_keys_and_reports_bad_json() {
    // serde's derived structs refuse a repeated key; `Value` keeps the last.
    let repeated = r#"{"results":[{"id":1,"id":2,"title":"T"}],"total":1}"#;
    assert!(super::listing::summarize(repeated, 5).is_none());
    for other in [
        r#"{"results":[],"results":[{"id":1}]}"#,
        r#"{"results":[{"id":1}],"total":1,"total":2}"#,
    ] {
        assert!(super::listing::summarize(other, 5).is_none(), "{other}");
        assert!(super::listing_by_value(other, 5).is_ok(), "{other}");
    }
    let h = harness().on(
        Method::Post,
        "/api/agent/tools/work-orders/search",
        move |_| (200, repeated),
    );
    let out = h.invoke("view_work_orders", json!({})).unwrap();
    assert_eq!(out.json()["items"][0]["id"], 2);
    assert_eq!(out.result_count, Some(1));
    // Invalid JSON from the backend is a backend error naming the problem.
    assert!(super::listing::summarize("[{", 5).is_none());
    let h = harness().on(Method::Post, "/api/agent/tools/work-orders/search", |_| {
        (200, "[{\"id\":")
    });
    let err = h.invoke("view_work_orders", json!({})).unwrap_err();
    assert!(
        matches!(&err, ToolError::Backend(m) if m.contains("unexpected answer")),
        "{err:?}"
    );
}

/// The search reads its answer as text (`call_text`); failures must still be
/// mapped as every other call maps them.
#[test]
fn search_failures_are_mapped_like_other_calls() {
    let search = |status: u16, body: &'static str| {
        harness()
            .on(
                Method::Post,
                "/api/agent/tools/work-orders/search",
                move |_| (status, body),
            )
            .invoke("view_work_orders", json!({}))
    };
    assert_eq!(
        search(200, r#"{"success":false,"message":"Search is down"}"#),
        Err(ToolError::Backend("Search is down".into()))
    );
    assert_eq!(
        search(200, r#" {"success":false,"error":"No index"}"#),
        Err(ToolError::Backend("No index".into()))
    );
    // The key spelled with an escape is the same key.
    assert_eq!(
        search(
            200,
            r#"{"results":[],"succ\u0065ss":false,"message":"Escaped"}"#
        ),
        Err(ToolError::Backend("Escaped".into()))
    );
    assert_eq!(
        search(200, r#"{"success":false}"#),
        Err(ToolError::Backend(
            "the Atlas backend reported a failure".into()
        ))
    );
    // A `null` message is no message, and `error` is then not read (as in `call`).
    assert_eq!(
        search(200, r#"{"success":false,"message":null,"error":"boom"}"#),
        Err(ToolError::Backend(
            "the Atlas backend reported a failure".into()
        ))
    );
    assert_eq!(
        search(403, r#"{"success":false,"message":"Access denied"}"#),
        Err(ToolError::Forbidden("Access denied".into()))
    );
    assert!(matches!(
        search(200, r#"{"success":false,"message":"x","#),
        Err(ToolError::Backend(m)) if m.contains("invalid JSON")
    ));
    // An empty answer is an empty list; `"success": true` is an answer.
    let empty = search(200, "").unwrap();
    assert_eq!(
        empty.json(),
        json!({ "type": "work_orders", "total": 0, "items": [] })
    );
    let ok = search(200, r#"{"success":true,"results":[{"id":4}],"total":1}"#).unwrap();
    assert_eq!(ok.json()["items"][0]["code"], 4);
}

/// What a `Value` refuses (a lone surrogate, a number out of range, nesting
/// beyond serde_json's limit), the borrowing path refuses too, even in fields
/// it skips, and the tool reports a backend error naming it.
#[test]
fn answers_a_value_refuses_are_refused_by_both_paths() {
    let deep = format!(
        r#"[{{"id":1,"extra":{}1{}}}]"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    let bad = [
        r#"[{"id":1,"title":"T","notes":"\ud83d"}]"#.to_string(),
        r#"[{"id":1,"title":"Pump \ud83d"}]"#.to_string(),
        r#"{"results":[],"total":1e400}"#.to_string(),
        "[1e400]".to_string(),
        // Out of range in a kept field, a skipped key, a skipped list item
        // and a `results` that is not a list.
        r#"[{"id":1e400}]"#.to_string(),
        format!(r#"[{{"id":{}}}]"#, "9".repeat(400)),
        r#"{"results":[],"meta":1e400}"#.to_string(),
        r#"[[1e400]]"#.to_string(),
        r#"{"results":{"x":"\udc00"}}"#.to_string(),
        deep,
        // Too deep inside a kept field (the asset).
        format!(
            r#"[{{"id":1,"asset":{{"name":{}1{}}}}}]"#,
            "[".repeat(126),
            "]".repeat(126)
        ),
    ];
    for answer in bad {
        assert!(
            super::listing::summarize(&answer, 5).is_none(),
            "borrowing path took {answer}"
        );
        assert!(super::listing_by_value(&answer, 5).is_err(), "{answer}");
        let h = harness().on(
            Method::Post,
            "/api/agent/tools/work-orders/search",
            move |_| (200, answer.clone()),
        );
        let err = h.invoke("view_work_orders", json!({})).unwrap_err();
        assert!(matches!(&err, ToolError::Backend(_)), "{err:?}");
    }
}
