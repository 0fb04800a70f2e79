//! Environments govern what runs (issue 7): live serves what was
//! promoted, `~draft` follows every change at once, `~demo` runs its own
//! release, and only a promotion or a rollback changes demo or live.

use crate::helpers::*;
use crate::ws_client::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn update(app: &TestApp, spec: Value) {
    let (s, v) = app
        .patch("/api/acme/chat/ops/update", json!({ "spec": spec }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keeps_what_was_promoted_while_draft_changes() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/v1", "on_message": "echo"})).await;
    // Version 1 runs everywhere at once.
    let mut live = connect(&app, "/ws/acme/v1").await;
    let _demo = connect(&app, "/ws/acme/~demo/v1").await;
    let _draft = connect(&app, "/ws/acme/~draft/v1").await;
    update(&app, json!({"path": "/v2", "on_message": "broadcast"})).await;
    // Live: same path, still echoes, the client still connected.
    send_text(&mut live, "still echo").await;
    assert_eq!(next_text(&mut live).await, "still echo");
    assert_eq!(refused(&app, "/ws/acme/v2", None).await.0, 404);
    let _live2 = connect(&app, "/ws/acme/v1").await;
    // The draft preview follows at once: new path, broadcast.
    assert_eq!(refused(&app, "/ws/acme/~draft/v1", None).await.0, 404);
    let mut d1 = connect(&app, "/ws/acme/~draft/v2").await;
    let mut d2 = connect(&app, "/ws/acme/~draft/v2").await;
    wait_connections_in(&app, "draft", 2).await;
    send_text(&mut d1, "to the others").await;
    assert_eq!(next_text(&mut d2).await, "to the others");
    // What each environment serves, as source says.
    let (_, src) = app
        .get("/api/acme/chat/ops/source?path=.triform/spec.yaml&branch=live")
        .await;
    assert!(
        src["content"].as_str().unwrap().contains("path: /v1"),
        "{src}"
    );
}

async fn wait_connections_in(app: &TestApp, env: &str, n: usize) -> Vec<Value> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, v) = app
            .get(&format!("/api/acme/chat/ops/connections?env={env}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let list: Vec<Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "client")
            .cloned()
            .collect();
        if list.len() == n {
            assert!(list.iter().all(|c| c["env"] == env), "{list:?}");
            return list;
        }
        assert!(tokio::time::Instant::now() < end, "{n} in {env}: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_changes_live_and_rollback_restores_it() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/v1", "on_message": "echo"})).await;
    let mut client = connect(&app, "/ws/acme/v1").await;
    update(
        &app,
        json!({"on_message": "emit", "connection": {"max_connections": 1}}),
    )
    .await;
    app.release("acme", "chat").await;
    // Same path: the client stays, and live now only emits.
    send_text(&mut client, "no echo now").await;
    let (s, v) = app
        .post("/api/acme/chat/ops/broadcast", json!({"message": "marker"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(next_text(&mut client).await, "marker", "no echo came first");
    // It kept the limits it connected with; new clients meet the new ones.
    let (status, body) = refused(&app, "/ws/acme/v1", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("WS_MAX_CONNECTIONS_REACHED"))
    );
    // Back to the previous release: echo again, at once.
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": "previous"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    send_text(&mut client, "echo again").await;
    assert_eq!(next_text(&mut client).await, "echo again");
    // Draft still holds the change: the preview emits.
    let (_, stats) = app.get("/api/acme/chat/ops/stats?env=draft").await;
    assert_eq!(stats["env"], "draft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_address_an_environment() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"rooms": {"enabled": true}})).await;
    let mut live = connect(&app, "/ws/acme/ws").await;
    let mut draft = connect(&app, "/ws/acme/~draft/ws?rooms=r").await;
    let d = wait_connections_in(&app, "draft", 1).await;
    wait_connections_in(&app, "live", 1).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "draft only", "env": "draft"}),
        )
        .await;
    assert_eq!(
        (s, v["delivered_to"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    assert_eq!(next_text(&mut draft).await, "draft only");
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/broadcast?env=live",
            json!({"message": "live only"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(next_text(&mut live).await, "live only");
    // A connection is found in its own environment only.
    let id = d[0]["connection_id"].as_str().unwrap().to_string();
    let got = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": id.clone(), "message": "x"}),
        )
        .await;
    assert_error(&got, 404, "WS_CONNECTION_NOT_FOUND");
    let (s, _) = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": id, "message": "to draft", "env": "draft"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(next_text(&mut draft).await, "to draft");
    // Events and metrics carry the environment.
    let (_, act) = app
        .get("/api/acme/chat/ops/activity?type=ws.broadcast.completed")
        .await;
    let envs: Vec<&str> = act["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["env"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["live", "draft"], "{act}");
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"elementd_ws_broadcast_count{circle="acme",env="draft",slug="chat"} 1"#),
        "{metrics}"
    );
    // Unknown environments are refused.
    for bad in [
        app.get("/api/acme/chat/ops/connections?env=prod").await,
        app.post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "x", "env": "prod"}),
        )
        .await,
        app.get("/api/acme/chat/ops/stats?env=staging").await,
    ] {
        assert_error(&bad, 400, "INVALID_ENVIRONMENT");
    }
    assert_eq!(refused(&app, "/ws/acme/~prod/ws", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_promotion_moves_its_members_live() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/v1"})).await;
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    update(&app, json!({"path": "/v2"})).await;
    assert_eq!(refused(&app, "/ws/acme/v2", None).await.0, 404);
    for to in ["demo", "live"] {
        let (s, v) = app
            .post("/api/acme/shop/ops/promote", json!({"to": to}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let _c = connect(&app, "/ws/acme/v2").await;
    assert_eq!(refused(&app, "/ws/acme/v1", None).await.0, 404);
    // Paths are unique per environment: once chat's draft moves on,
    // another element may take /v2 in draft, but not release it where
    // chat still serves it.
    update(&app, json!({"path": "/v3"})).await;
    app.element("acme", "websocket", "other", json!({"path": "/other"}))
        .await;
    let (s, v) = app
        .patch(
            "/api/acme/other/ops/update",
            json!({"spec": {"path": "/v2"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "draft's /v2 is free now: {v}");
    let got = app
        .post(
            "/api/acme/other/ops/source/promote",
            json!({"from": "draft", "to": "demo"}),
        )
        .await;
    assert_error(&got, 409, "PATH_CONFLICT");
    let _still = connect(&app, "/ws/acme/~demo/other").await;
}
