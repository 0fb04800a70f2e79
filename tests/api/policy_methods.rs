//! An auth-policy's `methods` and `scopes` (issue 24, item 4): which
//! credentials the guarded element accepts, and which api-token scopes a
//! caller must hold, on REST and at the upgrade; admins always pass.

use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_jwt::{hs, jwt_element, mint, user};
use elementd::model::Role;
use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{json, Value};

async fn attach(app: &TestApp, target: &str, slug: &str, spec: Value) {
    app.element("acme", "auth-policy", slug, spec).await;
    let (s, v) = app
        .post(
            &format!("/api/acme/{target}/ops/compose"),
            json!({"add": [{"ref": slug}]}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
}

async fn api_token(app: &TestApp, slug: &str, spec: Value) -> String {
    let v = app.element("acme", "api-token", slug, spec).await;
    v["token"]["secret"].as_str().unwrap().to_string()
}

/// GET the chat as `secret`, in a header of that name.
async fn get_as(app: &TestApp, header: &str, secret: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}/api/acme/chat", app.base))
        .header(header, secret)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_scopes_hold_on_rest() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element("acme", "websocket", "chat", json!({"path": "/chat"}))
        .await;
    let key = api_token(
        &app,
        "svc",
        json!({"token_type": "api-key", "scopes": ["write"]}),
    )
    .await;
    let bearer = api_token(&app, "ci", json!({"scopes": ["write"]})).await;
    let deployer = api_token(
        &app,
        "deployer",
        json!({"token_type": "api-key", "scopes": ["deploy"]}),
    )
    .await;
    let member = app.token("acme", Role::Member).await;
    attach(&app, "chat", "keys-only", json!({"methods": ["api_key"]})).await;

    assert_eq!(get_as(&app, "x-api-key", &key).await.0, 200);
    let (s, v) = get_as(&app, "authorization", &format!("Bearer {bearer}")).await;
    assert_eq!(s, 403, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("'keys-only'") && msg.contains("does not accept token"),
        "{msg}"
    );
    let (s, _) = get_as(&app, "authorization", &format!("Bearer {member}")).await;
    assert_eq!(s, 403, "a CLI member token is a bearer token");
    // No credential at all: 401, and an admin passes whatever the policy.
    let anon = app.call(Method::GET, "/api/acme/chat", None, None).await;
    assert_eq!(anon.0.as_u16(), 401, "{}", anon.1);
    assert_eq!(app.get("/api/acme/chat").await.0.as_u16(), 200);

    // Scopes: deploy is needed; write is not enough.
    attach(&app, "chat", "deployers", json!({"scopes": ["deploy"]})).await;
    assert_eq!(get_as(&app, "x-api-key", &deployer).await.0, 200);
    let (s, v) = get_as(&app, "x-api-key", &key).await;
    assert_eq!(s, 403, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("requires the scopes deploy; this caller holds write"),
        "{msg}"
    );
    // The admin can still take both policies off.
    let (_, att) = app.get("/api/acme/chat/ops/attachments").await;
    let ids: Vec<Value> = att["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!({"attachment_id": a["attachment_id"]}))
        .collect();
    let (s, v) = app
        .post("/api/acme/chat/ops/compose", json!({"remove": ids}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(
        get_as(&app, "authorization", &format!("Bearer {bearer}"))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_hold_at_the_upgrade() {
    let app = spawn_app().await;
    jwt_element(&app, "room", hs()).await;
    attach(&app, "room", "end-users", json!({"methods": ["jwt"]})).await;
    // An end user's token is accepted.
    let t = mint(Algorithm::HS256, None, &user("ana"));
    let mut c = connect(&app, &format!("/ws/acme/~draft/room?token={t}")).await;
    send_text(&mut c, r#"{"op":"join","room":"a"}"#).await;
    let _ = next_json(&mut c).await;
    // A websocket in token mode behind a jwt-only policy refuses tokens.
    app.element(
        "acme",
        "websocket",
        "ops-feed",
        json!({"path": "/ops-feed", "auth": {"mode": "token"}}),
    )
    .await;
    attach(&app, "ops-feed", "jwt-only", json!({"methods": ["jwt"]})).await;
    let member = app.token("acme", Role::Member).await;
    let (status, body) = refused(&app, "/ws/acme/~draft/ops-feed", Some(&member)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("does not accept token"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_methods_and_scopes_are_refused() {
    let app = spawn_app().await;
    app.circle("acme").await;
    for (why, spec) in [
        ("an unknown method", json!({"methods": ["cookie"]})),
        ("a repeated method", json!({"methods": ["jwt", "jwt"]})),
        ("methods not a list", json!({"methods": "jwt"})),
        ("an unknown scope", json!({"scopes": ["root"]})),
        (
            "too many scopes",
            json!({"scopes": ["read", "write", "deploy", "admin", "read"]}),
        ),
    ] {
        let (s, v) = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "auth-policy", "slug": "p", "spec": spec}),
            )
            .await;
        assert_eq!(s.as_u16(), 422, "{why}: {v}");
        assert_eq!(app.get("/api/acme/p").await.0.as_u16(), 404, "{why}");
    }
}
