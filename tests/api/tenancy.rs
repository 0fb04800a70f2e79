//! Tenancy follows a circle's id (issue 8, items 3, 12 and 13): a circle
//! made again under a deleted one's slug shares nothing with the old one,
//! and `receive` never speaks as anyone but its caller.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_recreated_circle_slug_is_a_new_tenant() {
    let app = spawn_app().await;
    app.circle("gamma").await;
    let old_admin = app.token("gamma", Role::Admin).await;
    app.element("gamma", "variable", "secret-plan", json!({"value": "old"}))
        .await;
    let (s, v) = app
        .call(
            Method::DELETE,
            "/api/gamma/secret-plan/ops/delete?confirm=true",
            Some(&old_admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.delete("/api/gamma/ops/delete?confirm=true").await;
    assert_eq!(s, 200, "{v}");
    // A token that somehow escaped revocation stays bound to the old id.
    let (escaped_row, escaped) = app
        .db
        .create_token("gamma", Role::Admin, "escaped", None)
        .await
        .unwrap();
    assert!(
        matches!(
            escaped_row.reach,
            elementd::model::Reach::Circle { id: None, .. }
        ),
        "made while no gamma lives: pending"
    );

    app.circle("gamma").await;
    app.element("gamma", "variable", "fresh", json!({"value": "new"}))
        .await;
    let viewer = app.token("gamma", Role::Viewer).await;

    // Deleting the circle revoked its tokens.
    let got = app
        .call(Method::GET, "/api/gamma/fresh", Some(&old_admin), None)
        .await;
    assert_error(&got, 401, "UNAUTHORIZED");
    let (s, v) = app
        .call(
            Method::PATCH,
            "/api/gamma/fresh/ops/update",
            Some(&old_admin),
            Some(json!({"spec": {"value": "taken"}})),
        )
        .await;
    assert_eq!(s, 401, "{v}");
    // Even un-revoked, a token bound to the old circle's id sees nothing.
    sqlx::query("UPDATE tokens SET revoked_at = NULL WHERE circle = 'gamma'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.caches_expire();
    for path in ["/api/gamma/fresh", "/api/gamma", "/api/gamma/ops/activity"] {
        let got = app.call(Method::GET, path, Some(&old_admin), None).await;
        assert_error(&got, 404, "NOT_FOUND");
    }
    let (s, v) = app
        .call(Method::GET, "/api/ops/list", Some(&old_admin), None)
        .await;
    assert_eq!(
        (s.as_u16(), v["circles"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    // A token made while no gamma existed belongs to the one made next.
    let (s, v) = app
        .call(Method::GET, "/api/gamma/fresh", Some(&escaped), None)
        .await;
    assert_eq!(s, 200, "{v}");

    // The new tenant sees none of the old one's elements or activity.
    let got = app
        .call(Method::GET, "/api/gamma/secret-plan", Some(&viewer), None)
        .await;
    assert_error(&got, 404, "ELEMENT_NOT_FOUND");
    let (s, v) = app
        .call(
            Method::GET,
            "/api/gamma/ops/list?state=deleted",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["elements"], json!([]), "{v}");
    let (s, v) = app
        .call(
            Method::GET,
            "/api/gamma/ops/activity?limit=500",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["element"]["slug"] != "secret-plan"),
        "old activity leaked: {v}"
    );
    // The old elements are still the platform's: gone for the new tenant only.
    let (s, _) = app.get("/api/gamma/fresh").await;
    assert_eq!(s, 200);
}

/// Without a token, `receive` answers a missing element exactly as one
/// that needs a token.
#[tokio::test]
async fn tokenless_receive_reveals_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "locked",
        json!({"path": "/locked", "auth": {"mode": "token"}}),
    )
    .await;
    let body = Some(json!({"message": "hi"}));
    let locked = app
        .call(
            Method::POST,
            "/api/acme/locked/ops/receive",
            None,
            body.clone(),
        )
        .await;
    let missing = app
        .call(
            Method::POST,
            "/api/acme/nothing/ops/receive",
            None,
            body.clone(),
        )
        .await;
    let no_circle = app
        .call(Method::POST, "/api/nocircle/x/ops/receive", None, body)
        .await;
    assert_error(&locked, 401, "UNAUTHORIZED");
    assert_eq!(locked, missing);
    assert_eq!(locked, no_circle);
}

/// A viewer's `receive` as an admin's connection is recorded as the
/// viewer's, never the admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_is_recorded_as_its_caller() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"auth": {"mode": "token"}})).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let _admin_client = connect_bearer(&app, "/ws/acme/ws", &app.admin).await;
    let ids = wait_connections(&app, "acme", "chat", 1).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/receive",
            Some(&viewer),
            Some(json!({"message": "as admin?", "connection_id": ids[0]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let events = activity_until(&app, "chat", "ws.message.received", |e| !e.is_empty()).await;
    let actor = &events[0]["actor"];
    assert_eq!(actor["role"], "viewer", "{}", events[0]);
    let (_, me) = app.get("/api/acme/chat/ops/activity?type=op.started").await;
    let viewer_id = me["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["op"] == "receive")
        .map(|e| e["actor"]["token_id"].clone())
        .unwrap();
    assert_eq!(actor["token_id"], viewer_id);
}
