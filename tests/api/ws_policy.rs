//! Attached modifiers on the live endpoint: auth-policy at upgrade,
//! rate-limit at upgrade and on inbound messages.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_policy_is_checked_at_upgrade() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/chat"})).await;
    app.attach(
        "chat",
        "auth-policy",
        "members",
        json!({"min_role": "member"}),
    )
    .await;
    let mut live = crate::events::SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    // auth.mode is none, but the attached policy wants a member token.
    let (status, body) = refused(&app, "/ws/acme/chat", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let viewer = app.token("acme", Role::Viewer).await;
    let (status, _) = refused(&app, "/ws/acme/chat", Some(&viewer)).await;
    assert_eq!(status, 403);
    let member = app.token("acme", Role::Member).await;
    let mut c = connect_bearer(&app, "/ws/acme/chat", &member).await;
    send_text(&mut c, "hello").await;
    let first = live.next_of("ws.connection.rejected").await;
    let second = live.next_of("ws.connection.rejected").await;
    assert_eq!(
        (
            first["data"]["status"].as_u64(),
            second["data"]["status"].as_u64()
        ),
        (Some(401), Some(403)),
        "each refusal is a live event"
    );
    let kept = activity_until(&app, "chat", "ws.connection.rejected", |e| !e.is_empty()).await;
    assert!(kept.len() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_inbound_messages() {
    let app = spawn_app().await;
    ws_element(&app, "chat", crate::fixtures::spec("websocket-echo")).await;
    app.attach(
        "chat",
        "rate-limit",
        "per-conn",
        json!({"limit": 3, "window_seconds": 60, "key": "connection"}),
    )
    .await;
    let mut c = connect(&app, "/ws/acme/chat").await;
    for i in 0..3 {
        send_text(&mut c, &format!("m{i}")).await;
        assert_eq!(
            next_text(&mut c).await,
            format!("m{i}"),
            "within the limit: echoed"
        );
    }
    send_text(&mut c, "m3").await;
    let err = next_json(&mut c).await;
    assert_eq!(err["error"]["code"], "RATE_LIMITED", "{err}");
    assert!(err["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    // The connection stays; another connection has its own budget.
    let mut d = connect(&app, "/ws/acme/chat").await;
    send_text(&mut d, "fresh").await;
    assert_eq!(next_text(&mut d).await, "fresh");
    let (_, stats) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        stats["metrics"]["message_received_count"], 4,
        "the dropped message is not counted: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_ip_refuses_upgrades() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/chat"})).await;
    app.attach(
        "chat",
        "rate-limit",
        "by-ip",
        json!({"limit": 2, "window_seconds": 60, "key": "ip"}),
    )
    .await;
    let _a = connect(&app, "/ws/acme/chat").await;
    let _b = connect(&app, "/ws/acme/chat").await;
    let (status, body) = refused(&app, "/ws/acme/chat", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
}
