//! Read ops and the type registry.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_registry_describes_every_type() {
    let app = spawn_app().await;
    let (s, v) = app.call(Method::GET, "/api/types", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<_> = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "circle",
        "project",
        "app",
        "websocket",
        "rate-limit",
        "auth-policy",
        "variable",
        "api-token",
    ] {
        assert!(names.contains(&t), "{t} in {names:?}");
    }
    let (_, ws) = app.get("/api/types/websocket").await;
    assert_eq!(
        (
            ws["category"].as_str(),
            ws["form"].as_str(),
            ws["symbol"].as_str()
        ),
        (Some("io"), Some("atom"), Some("Ws"))
    );
    let ops: Vec<_> = ws["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let seed_ops = [
        "accept",
        "activity",
        "attachments",
        "batch_stats",
        "broadcast",
        "close",
        "compose",
        "connections",
        "context",
        "create",
        "delete",
        "disable",
        "enable",
        "export_bundle",
        "get",
        "import_bundle",
        "intention",
        "readme",
        "readme_update",
        "receive",
        "remove-modifier",
        "restore",
        "schema",
        "send",
        "source",
        "source_branches",
        "source_promote",
        "source_repair",
        "source_status",
        "source_validate",
        "stats",
        "test_connection",
        "tree",
        "update",
        "update_meta",
        "version",
    ];
    for op in seed_ops {
        assert!(ops.contains(&op), "websocket op {op}");
    }
    let op = |name: &str| {
        ws["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            op("update")["method"].as_str(),
            op("update")["auth"].as_str()
        ),
        (Some("PATCH"), Some("write"))
    );
    assert_eq!(op("receive")["auth"], "none");
    assert_eq!(op("delete")["auth"], "admin");
    assert_eq!(op("broadcast")["auth"], "execute");
    assert_eq!(
        ws["properties"]["properties"]["connection"]["properties"]["max_connections"]["default"],
        100
    );
    assert_eq!(
        ws["properties"]["properties"]["heartbeat"]["properties"]["interval_ms"]["default"],
        30000
    );
    assert_eq!(ws["properties"]["properties"]["path"]["default"], "/ws");
    assert_eq!(
        ws["relationships"]["attaches"],
        json!(["rate-limit", "auth-policy", "variable", "webhook"])
    );
    assert_eq!(ws["relationships"]["uses"], json!(["variable"]));
    // The seed's seven, and the two /metrics adds (refusals, slow clients).
    let metrics: Vec<&str> = ws["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for m in [
        "connection_count",
        "active_connections",
        "message_sent_count",
        "broadcast_count",
        "broadcast_recipients",
        "disconnect_count",
        "message_received_count",
        "rejected_count",
        "slow_client_count",
    ] {
        assert!(metrics.contains(&m), "{m} in {metrics:?}");
    }
    assert_eq!(ws["events"].as_array().unwrap().len(), 6);
    assert_eq!(ws["costs"]["invoke"], 10000);
    let codes: Vec<_> = ws["error_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "WS_CONNECTION_FAILED",
            "WS_MESSAGE_TOO_LARGE",
            "WS_CONNECTION_NOT_FOUND",
            "WS_MAX_CONNECTIONS_REACHED"
        ]
    );
    assert!(ws["validation_rules"][0]["message"]
        .as_str()
        .unwrap()
        .contains("10000"));
    for cap in [
        "websocket",
        "rooms",
        "broadcast",
        "presence",
        "heartbeat",
        "network",
        "observe",
    ] {
        assert!(
            ws["capabilities"].as_array().unwrap().contains(&json!(cap)),
            "{cap}"
        );
    }
    assert_eq!(ws["ports"]["inputs"].as_array().unwrap().len(), 4);
    let (_, project) = app.get("/api/types/project").await;
    assert!(project["ops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "promote"));
    assert_error(&app.get("/api/types/teapot").await, 404, "TYPE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_and_filters() {
    let app = spawn_app().await;
    app.circle("acme").await;
    for i in 0..5 {
        // Paths are unique per circle.
        app.element(
            "acme",
            "websocket",
            &format!("ws-{i}"),
            json!({"path": format!("/ws-{i}")}),
        )
        .await;
    }
    app.element("acme", "variable", "var", json!({"value": 1}))
        .await;
    let (_, p1) = app.get("/api/acme/ops/list?limit=4").await;
    let page1: Vec<_> = p1["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].clone())
        .collect();
    assert_eq!(
        page1,
        [json!("ws-0"), json!("ws-1"), json!("ws-2"), json!("ws-3")],
        "oldest first"
    );
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = app
        .get(&format!("/api/acme/ops/list?limit=4&cursor={cursor}"))
        .await;
    let page2: Vec<_> = p2["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].clone())
        .collect();
    assert_eq!(page2, [json!("ws-4"), json!("var")]);
    assert_eq!(p2["next_cursor"], Value::Null);
    let (_, vars) = app.get("/api/acme/ops/list?type=variable").await;
    assert_eq!(vars["elements"].as_array().unwrap().len(), 1);
    assert_error(
        &app.get("/api/acme/ops/list?limit=0").await,
        400,
        "INVALID_LIMIT",
    );
    assert_error(
        &app.get("/api/acme/ops/list?limit=abc").await,
        400,
        "INVALID_QUERY",
    );
    assert_error(
        &app.get("/api/acme/ops/list?state=gone").await,
        400,
        "INVALID_STATE",
    );
    assert_error(
        &app.get("/api/acme/ops/list?type=teapot").await,
        400,
        "UNKNOWN_TYPE",
    );
    assert_error(
        &app.get("/api/acme/ops/list?cursor=xyz").await,
        400,
        "INVALID_CURSOR",
    );
    // list is a circle op, not an element op.
    assert_error(
        &app.get("/api/acme/ws-0/ops/list").await,
        404,
        "OP_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_lists_newest_first_with_paging() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.patch("/api/acme/chat/ops/update", json!({"spec": {"path": "/a"}}))
        .await;
    app.post("/api/acme/chat/ops/disable", json!({})).await;
    let (s, v) = app.get("/api/acme/chat/ops/activity?type=element.").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kinds: Vec<_> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["element.disabled", "element.updated", "element.created"]
    );
    let (_, p1) = app.get("/api/acme/chat/ops/activity?limit=2").await;
    assert_eq!(p1["events"].as_array().unwrap().len(), 2);
    let before = p1["next_before"].as_str().unwrap();
    let (_, p2) = app
        .get(&format!(
            "/api/acme/chat/ops/activity?limit=2&before={before}"
        ))
        .await;
    let first_of_p2 = p2["events"][0]["id"].as_str().unwrap();
    assert!(first_of_p2 < before, "older page");
    // The circle sees its elements' activity too.
    let (_, circle) = app
        .get("/api/acme/ops/activity?type=element.&limit=50")
        .await;
    let n = circle["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["element"]["slug"] == "chat")
        .count();
    assert_eq!(n, 3);
    assert_error(
        &app.get("/api/acme/chat/ops/activity?limit=501").await,
        400,
        "INVALID_LIMIT",
    );
    assert_error(
        &app.get("/api/acme/chat/ops/activity?before=nope").await,
        400,
        "INVALID_CURSOR",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intention_and_schema() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.patch(
        "/api/acme/ops/update",
        json!({"intention": "serve acme's customers"}),
    )
    .await;
    app.element("acme", "websocket", "chat", json!({})).await;
    let (_, i) = app.get("/api/acme/chat/ops/intention").await;
    assert_eq!(i["direct"], Value::Null);
    assert_eq!(
        i["resolved"], "serve acme's customers",
        "nearest inherited intention"
    );
    assert_eq!(i["inherited"][0]["source"], "circle");
    assert_eq!(i["inherited"][1]["source"], "type");
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"intention": "lobby chat"}),
    )
    .await;
    let (_, i) = app.get("/api/acme/chat/ops/intention").await;
    assert_eq!(
        (i["direct"].as_str(), i["resolved"].as_str()),
        (Some("lobby chat"), Some("lobby chat"))
    );
    let (_, s) = app.get("/api/acme/chat/ops/schema").await;
    let ports = s["ports"].as_array().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "message" && p["direction"] == "input" && p["required"] == true));
    assert!(ports.iter().all(|p| p["schema"].is_object()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_runs_and_compute_health() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element("acme", "websocket", "other", json!({"path": "/other"}))
        .await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/acme/chat/ops/get").await.0, StatusCode::OK);
    }
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        (s["runs"].as_i64(), s["errors"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        (s["success_rate"].as_f64(), s["health"].as_str()),
        (Some(1.0), Some("ok"))
    );
    assert_eq!(s["period"], "day");
    // A caller's mistake is counted apart and leaves health alone.
    app.post("/api/acme/chat/ops/restore", json!({"version": 42}))
        .await;
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        (
            s["errors"].as_i64(),
            s["client_errors"].as_i64(),
            s["health"].as_str()
        ),
        (Some(0), Some(1), Some("ok")),
        "{s}"
    );
    // The element's own failures weigh: a driven link whose peer is down
    // fails a send with 502. One → warning.
    app.element(
        "acme",
        "websocket",
        "link",
        json!({"path": "/link", "url": "ws://127.0.0.1:9/down"}),
    )
    .await;
    for _ in 0..30 {
        assert_eq!(app.get("/api/acme/link").await.0, StatusCode::OK);
    }
    let send = || {
        app.post(
            "/api/acme/link/ops/send",
            json!({"message": "x", "env": "draft"}),
        )
    };
    assert_error(&send().await, 502, "WS_CONNECTION_FAILED");
    let (_, s) = app.get("/api/acme/link/ops/stats").await;
    assert_eq!(
        (s["errors"].as_i64(), s["health"].as_str()),
        (Some(1), Some("warning")),
        "{s}"
    );
    // Six failures: errors_per_day > 5 → error.
    for _ in 0..5 {
        send().await;
    }
    let (_, s) = app.get("/api/acme/link/ops/stats").await;
    assert_eq!(s["health"], "error", "{s}");
    assert!(s["avg_duration_ms"].as_f64().unwrap() > 0.0);
    for _ in 0..5 {
        app.post("/api/acme/chat/ops/restore", json!({"version": 42}))
            .await;
    }
    assert_error(
        &app.get("/api/acme/chat/ops/stats?period=year").await,
        400,
        "INVALID_PERIOD",
    );

    let (_, b) = app.get("/api/acme/ops/batch_stats").await;
    let children = b["children"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    let chat = children.iter().find(|c| c["slug"] == "chat").unwrap();
    let other = children.iter().find(|c| c["slug"] == "other").unwrap();
    assert_eq!(other["runs"], 0);
    assert_eq!(chat["health"], "ok", "{chat}");
    assert_eq!(
        chat["client_errors"], 7,
        "six bad restores and one bad period"
    );
    assert_eq!(b["aggregate"]["errors"], 6, "the link's six failed sends");
    let (_, atom) = app.get("/api/acme/chat/ops/batch_stats").await;
    assert_eq!(atom["children"], json!([]));
    assert_eq!(atom["aggregate"]["runs"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (s, v) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["database"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_op_is_served() {
    let app = spawn_app().await;
    app.circle("acme").await;
    // A webhook signs with a sensitive variable.
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": "k", "sensitive": true}),
    )
    .await;
    let (_, types) = app.get("/api/types").await;
    for t in types["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let path = if name == "circle" {
            "/api/acme".to_string()
        } else {
            let slug = format!("x-{name}");
            let spec = match name {
                "websocket" => json!({"path": "/every"}),
                "webhook" => crate::fixtures::spec("webhook-local"),
                _ => json!({}),
            };
            app.element("acme", name, &slug, spec).await;
            format!("/api/acme/{slug}")
        };
        for op in t["ops"].as_array().unwrap() {
            let op_path = op["path"].as_str().or(op["name"].as_str()).unwrap();
            let method = Method::from_bytes(op["method"].as_str().unwrap().as_bytes()).unwrap();
            if op_path == "delete" {
                continue; // would end the walk early
            }
            let body = (method != Method::GET).then(|| json!({}));
            let (s, v) = app
                .call(
                    method,
                    &format!("{path}/ops/{op_path}"),
                    Some(&app.admin),
                    body,
                )
                .await;
            assert_ne!(s, StatusCode::NOT_IMPLEMENTED, "{name}.{op_path}: {v}");
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{name}.{op_path}: {v}");
            assert!(!s.is_server_error(), "{name}.{op_path}: {s} {v}");
            if !s.is_success() {
                assert!(
                    v["error"]["code"].is_string(),
                    "{name}.{op_path}: envelope {v}"
                );
            }
        }
    }
}
