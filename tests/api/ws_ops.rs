//! Websocket ops beyond send and broadcast: subprotocols, `receive` and
//! `test-connection`.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_is_negotiated_from_the_spec() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"protocols": ["v2.chat", "v1.chat"]})).await;
    let (_c, chosen) = connect_protocols(&app, "/ws/acme/ws", "v1.chat, v2.chat").await;
    assert_eq!(
        chosen.as_deref(),
        Some("v2.chat"),
        "the server's preference"
    );
    let list = connections(&app, "acme", "chat", None).await;
    assert_eq!(list[0]["protocol"], "v2.chat");
}

/// The connection is registered before the 101 goes out, so a broadcast
/// sent the moment the handshake completes reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachable_as_soon_as_the_handshake_completes() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let mut clients = Vec::new();
    for n in 1..=20u64 {
        clients.push(connect(&app, "/ws/acme/ws").await);
        let (s, b) = app
            .post(
                "/api/acme/chat/ops/broadcast",
                json!({"message": format!("m{n}")}),
            )
            .await;
        assert_eq!(
            (s.as_u16(), b["delivered_to"].as_u64()),
            (200, Some(n)),
            "{b}"
        );
        let newest = clients.last_mut().unwrap();
        assert_eq!(next_text(newest).await, format!("m{n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_enters_as_a_client_message() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"on_message": "broadcast"})).await;
    let mut a = connect(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "chat", 1).await;
    // Platform auth none; the element's auth (none) applies.
    let (s, v) = app
        .call(
            reqwest::Method::POST,
            "/api/acme/chat/ops/receive",
            None,
            Some(json!({"message": "from outside"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["delivered_to"].as_u64()),
        (200, Some(1)),
        "{v}"
    );
    assert_eq!(next_text(&mut a).await, "from outside");
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"auth": {"mode": "token"}}}),
    )
    .await;
    app.release("acme", "chat").await;
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/api/acme/chat/ops/receive",
            None,
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(s.as_u16(), 401);
    let viewer = app.token("acme", Role::Viewer).await;
    let (s, v) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/acme/chat/ops/receive?token={viewer}"),
            None,
            Some(json!({"message": "with token"})),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(next_text(&mut a).await, "with token");
    let path = format!("/api/acme/chat/ops/receive?token={viewer}");
    for (body, status, code) in [
        (
            json!({"message": "x".repeat(70_000)}),
            413,
            "WS_MESSAGE_TOO_LARGE",
        ),
        (json!({}), 400, "MISSING_FIELD"),
        (
            json!({"message": "x", "connection_id": "c_gone"}),
            404,
            "WS_CONNECTION_NOT_FOUND",
        ),
        (json!({"message": "x", "room": "r"}), 400, "ROOMS_DISABLED"),
    ] {
        let got = app
            .call(reqwest::Method::POST, &path, None, Some(body))
            .await;
        assert_error(&got, status, code);
    }
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        s["metrics"]["message_received_count"], 2,
        "refused input counted nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_checks_locally() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let (s, v) = app
        .post("/api/acme/chat/ops/test-connection", json!({}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(
        (
            v["success"].clone(),
            v["mode"].clone(),
            v["endpoint"].clone()
        ),
        (json!(true), json!("exposed"), json!("/ws/acme/ws"))
    );
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("auth.mode")));
    // It takes no body fields.
    assert_error(
        &app.post("/api/acme/chat/ops/test-connection", json!({"x": 1}))
            .await,
        400,
        "INVALID_BODY",
    );
    // A driven link that cannot connect fails the check.
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"url": "ws://127.0.0.1:1/nothing"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // The change is draft's: live still exposes its path.
    let (_, live) = app
        .post("/api/acme/chat/ops/test-connection", json!({}))
        .await;
    assert_eq!(live["mode"], "exposed", "{live}");
    eventually("test-connection reports the dead link", || async {
        let (_, v) = app
            .post(
                "/api/acme/chat/ops/test-connection",
                json!({"env": "draft"}),
            )
            .await;
        v["success"] == json!(false)
            && v["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("WS_CONNECTION_FAILED"))
    })
    .await;
}
