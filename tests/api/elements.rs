//! Write ops: create, update, update_meta, delete, enable/disable, restore.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fills_defaults_and_versions() {
    let app = spawn_app().await;
    let c = app.circle("acme").await;
    assert_eq!(
        (c["circle"].as_str(), c["element_type"].as_str()),
        (Some("acme"), Some("circle"))
    );
    let (s, el) = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "chat-room", "intention": "talk", "spec": {"max_connections": 20000}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{el}");
    assert_eq!(el["name"], "Chat Room", "name from slug");
    assert_eq!(el["version"], 1);
    assert_eq!(el["state"], "ready");
    assert_eq!(
        (
            el["category"].as_str(),
            el["form"].as_str(),
            el["symbol"].as_str()
        ),
        (Some("io"), Some("atom"), Some("Ws"))
    );
    assert_eq!(el["spec"]["path"], "/ws");
    assert_eq!(
        el["spec"]["connection"]["max_connections"], 20000,
        "flat alias moved"
    );
    assert_eq!(el["spec"]["heartbeat"]["interval_ms"], 30000);
    assert_eq!(
        el["warnings"][0],
        "High max_connections (>10000) may require resource scaling"
    );
    uuid::Uuid::parse_str(el["id"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(el["created_at"].as_str().unwrap()).unwrap();
    let (_, got) = app.get("/api/acme/chat-room").await;
    assert_eq!(got["id"], el["id"]);
    let (_, v) = app
        .get("/api/acme/chat-room/ops/version?history=true")
        .await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    assert_eq!(v["versions"][0]["message"], "Created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rejects_bad_input_and_creates_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"element_type": "websocket", "slug": "Bad_Slug"}),
            400,
            "INVALID_SLUG",
        ),
        (
            json!({"element_type": "websocket", "slug": "-x"}),
            400,
            "INVALID_SLUG",
        ),
        (
            json!({"element_type": "websocket", "slug": ""}),
            400,
            "INVALID_SLUG",
        ),
        (
            json!({"element_type": "websocket", "slug": "a".repeat(64)}),
            400,
            "INVALID_SLUG",
        ),
        (
            json!({"element_type": "teapot", "slug": "x"}),
            400,
            "UNKNOWN_TYPE",
        ),
        (
            json!({"element_type": "", "slug": "x"}),
            400,
            "MISSING_FIELD",
        ),
        (json!({"slug": "x"}), 400, "INVALID_BODY"),
        (
            json!({"element_type": "websocket", "slug": "x", "colour": "red"}),
            400,
            "INVALID_BODY",
        ),
        (
            json!({"element_type": "websocket", "slug": 7}),
            400,
            "INVALID_BODY",
        ),
        (
            json!({"element_type": "websocket", "slug": "x", "spec": [1]}),
            400,
            "INVALID_SPEC",
        ),
        (
            json!({"element_type": "websocket", "slug": "x", "spec": {"path": "no-slash"}}),
            422,
            "SPEC_INVALID",
        ),
        (
            json!({"element_type": "websocket", "slug": "x", "spec": {"connection": {"max_connections": "many"}}}),
            422,
            "SPEC_INVALID",
        ),
        (
            json!({"element_type": "websocket", "slug": "x", "spec": {"unknown_key": 1}}),
            422,
            "SPEC_INVALID",
        ),
        (
            json!({"element_type": "websocket", "slug": "x", "name": "  "}),
            400,
            "INVALID_NAME",
        ),
        (
            json!({"element_type": "websocket", "slug": "chat"}),
            409,
            "ALREADY_EXISTS",
        ),
        (
            json!({"element_type": "websocket", "slug": "ops"}),
            400,
            "RESERVED_SLUG",
        ),
        (
            json!({"element_type": "circle", "slug": "inner"}),
            400,
            "INVALID_PARENT",
        ),
    ];
    for (body, status, code) in cases {
        let got = app.post("/api/acme/ops/create", body.clone()).await;
        assert_error(&got, status, code);
    }
    let bad_json = app
        .raw(
            reqwest::Method::POST,
            "/api/acme/ops/create",
            "{\"element_type\": ",
        )
        .await;
    assert_error(&bad_json, 400, "INVALID_JSON");
    // Only circles at the platform level; websockets cannot hold children.
    assert_error(
        &app.post(
            "/api/ops/create",
            json!({"element_type": "websocket", "slug": "x"}),
        )
        .await,
        400,
        "INVALID_PARENT",
    );
    assert_error(
        &app.post(
            "/api/acme/chat/ops/create",
            json!({"element_type": "variable", "slug": "v"}),
        )
        .await,
        400,
        "INVALID_PARENT",
    );
    let (_, list) = app.get("/api/acme/ops/list").await;
    let slugs: Vec<_> = list["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(slugs, ["chat"], "nothing was created");
    assert_eq!(app.state_of("acme", "chat").await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_merges_replaces_and_versions() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "chat",
        json!({"protocols": ["a", "b"], "rooms": {"enabled": true}}),
    )
    .await;
    let url = "/api/acme/chat/ops/update";
    // Deep merge keeps siblings; lists replace.
    let (s, v) = app
        .patch(
            url,
            json!({"spec": {"rooms": {"max_rooms_per_connection": 3}, "protocols": ["c"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(
        v["spec"]["rooms"],
        json!({"enabled": true, "max_rooms_per_connection": 3, "presence_events": false})
    );
    assert_eq!(v["spec"]["protocols"], json!(["c"]));
    assert_eq!(v["warnings"], json!([]));
    // An empty spec still records a version with the same content.
    let (_, v3) = app.patch(url, json!({"spec": {}})).await;
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["spec"], v["spec"]);
    // deep:false replaces the spec; defaults fill the rest.
    let (_, v4) = app
        .patch(url, json!({"spec": {"path": "/live"}, "deep": false}))
        .await;
    assert_eq!(v4["spec"]["path"], "/live");
    assert_eq!(v4["spec"]["rooms"]["enabled"], false);
    assert_eq!(v4["spec"]["protocols"], json!([]));
    // Name and intention alone also version.
    let (_, v5) = app
        .patch(
            url,
            json!({"name": "Lobby", "intention": "chat for everyone"}),
        )
        .await;
    assert_eq!(
        (v5["version"].as_i64(), v5["name"].as_str()),
        (Some(5), Some("Lobby"))
    );
    // Validation warnings come back with the element.
    let (_, v6) = app
        .patch(
            url,
            json!({"spec": {"connection": {"max_connections": 10001}}}),
        )
        .await;
    assert_eq!(v6["warnings"].as_array().unwrap().len(), 1);
    let (_, hist) = app
        .get("/api/acme/chat/ops/version?history=true&limit=2")
        .await;
    let versions = hist["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 6);
    assert_eq!(versions[1]["name"], "Lobby");
    assert!(versions[0]["author"]
        .as_str()
        .unwrap()
        .starts_with("token:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_updates_change_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = app.state_of("acme", "chat").await;
    let url = "/api/acme/chat/ops/update";
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"spec": "text"}), 400, "INVALID_SPEC"),
        (json!({"spec": {"path": 5}}), 422, "SPEC_INVALID"),
        (
            json!({"spec": {"heartbeat": {"interval_ms": 1}}}),
            422,
            "SPEC_INVALID",
        ),
        (json!({"spec": {}, "slug": "renamed"}), 400, "INVALID_BODY"),
        (json!({"deep": "yes"}), 400, "INVALID_BODY"),
        (json!({"name": ""}), 400, "INVALID_NAME"),
        (json!([1, 2]), 400, "INVALID_BODY"),
    ];
    for (body, status, code) in cases {
        assert_error(&app.patch(url, body).await, status, code);
    }
    assert_error(
        &app.raw(reqwest::Method::PATCH, url, "{not json").await,
        400,
        "INVALID_JSON",
    );
    assert_eq!(app.state_of("acme", "chat").await, before);
    let (_, hist) = app.get("/api/acme/chat/ops/version?history=true").await;
    assert_eq!(
        hist["versions"].as_array().unwrap().len(),
        1,
        "no version rows were written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_meta_merges_without_versioning() {
    let app = spawn_app().await;
    app.with_chat().await;
    let url = "/api/acme/chat/ops/update_meta";
    let (s, v) = app
        .patch(url, json!({"meta": {"x": 1, "panel": {"open": true}}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app
        .patch(
            url,
            json!({"meta": {"panel": {"width": 3}, "x": null, "y": 2}}),
        )
        .await;
    assert_eq!(
        v["meta"],
        json!({"panel": {"width": 3}, "y": 2}),
        "top-level keys replace; null removes"
    );
    assert_eq!(v["version"], 1);
    assert_error(
        &app.patch(url, json!({"meta": [1]})).await,
        400,
        "INVALID_META",
    );
    assert_error(&app.patch(url, json!({})).await, 400, "INVALID_BODY");
    assert_eq!(
        app.get("/api/acme/chat").await.1["meta"],
        json!({"panel": {"width": 3}, "y": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_confirm_and_no_children() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element("acme", "project", "shop", json!({})).await;
    let (s, child) = app
        .post(
            "/api/acme/shop/ops/create",
            json!({"element_type": "variable", "slug": "greeting", "spec": {"value": "hi"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{child}");
    assert_eq!(child["parent"], app.get("/api/acme/shop").await.1["id"]);

    assert_error(
        &app.delete("/api/acme/chat/ops/delete").await,
        412,
        "CONFIRMATION_REQUIRED",
    );
    assert_error(
        &app.delete("/api/acme/chat/ops/delete?confirm=false").await,
        412,
        "CONFIRMATION_REQUIRED",
    );
    assert_error(
        &app.delete("/api/acme/chat/ops/delete?confirm=maybe").await,
        400,
        "INVALID_QUERY",
    );
    assert_error(
        &app.delete("/api/acme/shop/ops/delete?confirm=true").await,
        409,
        "HAS_CHILDREN",
    );
    assert_error(
        &app.delete("/api/acme/ops/delete?confirm=true").await,
        409,
        "HAS_CHILDREN",
    );
    assert_eq!(app.get("/api/acme/shop").await.1["state"], "ready");

    let (s, v) = app.delete("/api/acme/chat/ops/delete?confirm=true").await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("deleted")));
    // Reads still answer; changes are refused.
    assert_eq!(app.get("/api/acme/chat").await.1["state"], "deleted");
    assert_error(
        &app.patch("/api/acme/chat/ops/update", json!({"spec": {}}))
            .await,
        409,
        "ELEMENT_DELETED",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/restore", json!({"version": 1}))
            .await,
        409,
        "ELEMENT_DELETED",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/enable", json!({})).await,
        409,
        "ELEMENT_DELETED",
    );
    assert_error(
        &app.delete("/api/acme/chat/ops/delete?confirm=true").await,
        409,
        "ELEMENT_DELETED",
    );
    // Deleted elements leave the default list but show with state=deleted,
    // and the slug is free again.
    let (_, list) = app.get("/api/acme/ops/list").await;
    assert!(list["elements"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["slug"] != "chat"));
    let (_, deleted) = app.get("/api/acme/ops/list?state=deleted").await;
    assert_eq!(deleted["elements"].as_array().unwrap().len(), 1);
    let again = app.element("acme", "websocket", "chat", json!({})).await;
    assert_ne!(again["id"], v["id"]);
    assert_eq!(
        app.get("/api/acme/chat").await.1["id"],
        again["id"],
        "the live one wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_disable_are_idempotent_and_disabled_refuses_invocations() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/disable",
            json!({"reason": "maintenance"}),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["state_reason"].as_str()),
        (StatusCode::OK, Some("disabled"), Some("maintenance"))
    );
    let (s, v2) = app.post("/api/acme/chat/ops/disable", json!({})).await;
    assert_eq!(
        (s, v2["updated_at"].clone()),
        (StatusCode::OK, v["updated_at"].clone()),
        "idempotent"
    );
    // An invocation (an execute op) is refused; management still works.
    let send = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": "x", "message": "hi"}),
        )
        .await;
    assert_error(&send, 409, "ELEMENT_DISABLED");
    let test_conn = app
        .post("/api/acme/chat/ops/test-connection", json!({}))
        .await;
    assert_error(&test_conn, 409, "ELEMENT_DISABLED");
    assert_eq!(
        app.patch("/api/acme/chat/ops/update", json!({"spec": {}}))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &app.post("/api/acme/chat/ops/disable", json!({"why": "x"}))
            .await,
        400,
        "INVALID_BODY",
    );
    let (s, v) = app.post("/api/acme/chat/ops/enable", json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("ready")));
    assert_eq!(v["state_reason"], Value::Null);
    assert_eq!(
        app.post("/api/acme/chat/ops/enable", json!({})).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_snapshots_then_restores() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/two"}}),
    )
    .await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/three"}}),
    )
    .await;
    let (s, v) = app
        .post("/api/acme/chat/ops/restore", json!({"version": 1}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["spec"]["path"].as_str()),
        (Some(5), Some("/ws"))
    );
    let (_, hist) = app.get("/api/acme/chat/ops/version?history=true").await;
    let h = hist["versions"].as_array().unwrap();
    assert_eq!(h[0]["message"], "Restore to v1");
    assert_eq!(h[1]["message"], "Before restore to v1");
    assert_eq!(
        h[1]["spec"]["path"], "/three",
        "the snapshot holds the state before"
    );
    let before = app.state_of("acme", "chat").await;
    assert_error(
        &app.post("/api/acme/chat/ops/restore", json!({"version": 99}))
            .await,
        404,
        "VERSION_NOT_FOUND",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/restore", json!({"version": 0}))
            .await,
        400,
        "INVALID_VERSION",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/restore", json!({"version": "1"}))
            .await,
        400,
        "INVALID_BODY",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/restore", json!({})).await,
        400,
        "INVALID_BODY",
    );
    assert_eq!(app.state_of("acme", "chat").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_all_land() {
    let app = spawn_app().await;
    app.with_chat().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = app.client.clone();
        let url = format!("{}/api/acme/chat/ops/update_meta", app.base);
        let url2 = format!("{}/api/acme/chat/ops/update", app.base);
        let tok = app.admin.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .patch(&url2)
                .bearer_auth(&tok)
                .json(&json!({"spec": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let r = client
                .patch(&url)
                .bearer_auth(&tok)
                .json(&json!({"meta": {format!("k{i}"): i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, v) = app.get("/api/acme/chat").await;
    assert_eq!(v["version"], 13, "every update got its own version");
    assert_eq!(
        v["meta"].as_object().unwrap().len(),
        12,
        "no meta write was lost"
    );
}
