//! Modifiers that cascade (issue 11, part 1): attached to a circle, a
//! project or an app with `cascade_policy`, they hold every element below;
//! `attachments` shows them, and a rate-limit's `status` shows its counters.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn compose_on(app: &TestApp, target: &str, add: Value) -> (StatusCode, Value) {
    app.post(&format!("{target}/ops/compose"), json!({ "add": add }))
        .await
}

/// `acme` with a project `shop` whose members are `chat` (a websocket
/// that echoes) and `feed`.
async fn shop(app: &TestApp) {
    app.circle("acme").await;
    for slug in ["chat", "feed"] {
        app.element(
            "acme",
            "websocket",
            slug,
            json!({"path": format!("/{slug}"), "on_message": "echo"}),
        )
        .await;
    }
    app.element(
        "acme",
        "project",
        "shop",
        json!({"members": ["chat", "feed"]}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_rate_limit_holds_its_members() {
    let app = spawn_app().await;
    shop(&app).await;
    app.element(
        "acme",
        "rate-limit",
        "per-member",
        json!({"limits": [{"limit": 3, "window_seconds": 60}, {"limit": 100, "window_seconds": 3600}],
               "key": "token", "scope": {"counter": "element"}}),
    )
    .await;
    let (s, v) = compose_on(
        &app,
        "/api/acme/shop",
        json!([{"ref": "per-member", "cascade_policy": "children"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["added"][0]["cascade_policy"], "children");
    let member = app.token("acme", Role::Member).await;
    let get = |slug: &'static str| {
        let member = member.clone();
        let app = &app;
        async move {
            app.call(
                Method::GET,
                &format!("/api/acme/{slug}/ops/get"),
                Some(&member),
                None,
            )
            .await
        }
    };
    // The member's ops on chat are held to the project's limit.
    for _ in 0..3 {
        assert_eq!(get("chat").await.0, StatusCode::OK);
    }
    let refused = get("chat").await;
    assert_error(&refused, 429, "RATE_LIMITED");
    // Kept per element: feed has its own three.
    assert_eq!(get("feed").await.0, StatusCode::OK);
    // status: chat's counter is spent, feed's has two left; asking
    // charged nothing.
    let (s, st) = app
        .get(&format!(
            "/api/acme/per-member/ops/status?key={}",
            token_id(&app, &member).await
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["scope"]["counter"], "element");
    let left = |el: &str| -> Vec<u64> {
        st["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["element_id"] == el)
            .map(|k| {
                k["windows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["remaining"].as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (chat_id, feed_id) = (id_of(&app, "chat").await, id_of(&app, "feed").await);
    assert_eq!(left(&chat_id), vec![0, 96], "{st}");
    assert_eq!(left(&feed_id), vec![2, 99], "{st}");
    assert!(st["keys"][0]["windows"][0]["reset_at"].is_string());
    // An element outside the project is not held.
    app.element("acme", "websocket", "lone", json!({"path": "/lone"}))
        .await;
    for _ in 0..5 {
        assert_eq!(get("lone").await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascading_rate_limit_holds_websocket_messages() {
    let app = spawn_app().await;
    shop(&app).await;
    app.element(
        "acme",
        "rate-limit",
        "chatty",
        json!({"limit": 2, "window_seconds": 60, "key": "connection",
               "scope": {"traffic": ["messages"]}}),
    )
    .await;
    let (s, v) = compose_on(
        &app,
        "/api/acme/shop",
        json!([{"ref": "chatty", "cascade_policy": "descendants"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut c = connect(&app, "/ws/acme/chat").await;
    for i in 0..2 {
        send_text(&mut c, &format!("m{i}")).await;
        assert_eq!(next_text(&mut c).await, format!("m{i}"));
    }
    send_text(&mut c, "m2").await;
    let err = next_json(&mut c).await;
    assert_eq!(err["error"]["code"], "RATE_LIMITED", "{err}");
    // Messages only: ops on chat are not counted.
    for _ in 0..4 {
        assert_eq!(app.get("/api/acme/chat/ops/get").await.0, StatusCode::OK);
    }
    // attachments on chat shows it, marked as the project's.
    let (_, a) = app.get("/api/acme/chat/ops/attachments").await;
    let list = a["attachments"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{a}");
    assert_eq!(list[0]["source"]["slug"], "chatty");
    assert_eq!(list[0]["inherited_from"]["slug"], "shop");
    assert_eq!(list[0]["cascade_policy"], "descendants");
    // It cannot be detached from chat, only from the project.
    let id = list[0]["attachment_id"].as_str().unwrap();
    let r = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"remove": [{"attachment_id": id}]}),
        )
        .await;
    assert_error(&r, 404, "ATTACHMENT_NOT_FOUND");
    let r = app
        .post(
            "/api/acme/shop/ops/compose",
            json!({"remove": [{"attachment_id": id}]}),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let (_, a) = app.get("/api/acme/chat/ops/attachments").await;
    assert_eq!(a["attachments"], json!([]));
    let mut d = connect(&app, "/ws/acme/chat").await;
    for i in 0..4 {
        send_text(&mut d, &format!("n{i}")).await;
        assert_eq!(next_text(&mut d).await, format!("n{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_auth_policy_guards_every_element() {
    let app = spawn_app().await;
    shop(&app).await;
    app.element(
        "acme",
        "auth-policy",
        "members-only",
        json!({"min_role": "member"}),
    )
    .await;
    let viewer = app.token("acme", Role::Viewer).await;
    let as_viewer = |path: String| {
        let viewer = viewer.clone();
        let app = &app;
        async move { app.call(Method::GET, &path, Some(&viewer), None).await }
    };
    assert_eq!(
        as_viewer("/api/acme/chat/ops/get".into()).await.0,
        StatusCode::OK
    );
    // Only an admin attaches to a circle.
    let member = app.token("acme", Role::Member).await;
    let r = app
        .call(
            Method::POST,
            "/api/acme/ops/compose",
            Some(&member),
            Some(json!({"add": [{"ref": "members-only", "cascade_policy": "children"}]})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    // `children` from a circle: every element directly in it.
    let (s, v) = compose_on(
        &app,
        "/api/acme",
        json!([{"ref": "members-only", "cascade_policy": "children"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for slug in ["chat", "feed", "shop"] {
        let r = as_viewer(format!("/api/acme/{slug}/ops/get")).await;
        assert_error(&r, 403, "FORBIDDEN");
        assert!(
            r.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("(from 'acme')"),
            "{}",
            r.1
        );
    }
    // The circle's own list too, and the WebSocket upgrade.
    assert_error(
        &as_viewer("/api/acme/ops/list".into()).await,
        403,
        "FORBIDDEN",
    );
    let (status, _) = refused(&app, "/ws/acme/chat", Some(&viewer)).await;
    assert_eq!(status, 403);
    let (s, v) = app
        .call(Method::GET, "/api/acme/feed/ops/get", Some(&member), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // attachments shows where it comes from.
    let (_, a) = app.get("/api/acme/feed/ops/attachments").await;
    assert_eq!(a["attachments"][0]["inherited_from"]["slug"], "acme");
    assert_eq!(
        a["attachments"][0]["inherited_from"]["element_type"],
        "circle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cascades_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    shop(&app).await;
    app.element(
        "acme",
        "rate-limit",
        "rl",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    let before = app.get("/api/acme/chat/ops/attachments").await.1;
    let cases = [
        // A websocket has nothing below it.
        (
            "/api/acme/chat",
            json!([{"ref": "rl", "cascade_policy": "children"}]),
            "INVALID_CASCADE",
        ),
        (
            "/api/acme/shop",
            json!([{"ref": "rl", "cascade_policy": "everyone"}]),
            "INVALID_CASCADE",
        ),
        (
            "/api/acme/shop",
            json!([{"ref": "rl", "cascade_policy": 3}]),
            "INVALID_BODY",
        ),
    ];
    for (target, add, code) in cases {
        let r = compose_on(&app, target, add.clone()).await;
        assert_error(&r, 400, code);
    }
    assert_eq!(app.get("/api/acme/chat/ops/attachments").await.1, before);
    let (_, shop_att) = app.get("/api/acme/shop/ops/attachments").await;
    assert_eq!(shop_att["attachments"], json!([]));
    // A rate-limit's windows are checked by its schema.
    for spec in [
        json!({"limit": 5}),
        json!({"limits": []}),
        json!({"limits": [{"limit": 0, "window_seconds": 1}]}),
        json!({"limit": 1, "window_seconds": 1, "scope": {"counter": "galaxy"}}),
        json!({"limit": 1, "window_seconds": 1, "scope": {"traffic": []}}),
    ] {
        let r = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "rate-limit", "slug": "bad", "spec": spec}),
            )
            .await;
        assert_eq!(r.0.as_u16(), 422, "{spec}: {}", r.1);
    }
    assert_error(
        &app.get("/api/acme/bad/ops/get").await,
        404,
        "ELEMENT_NOT_FOUND",
    );
    // status takes only `key`.
    assert_error(
        &app.get("/api/acme/rl/ops/status?who=me").await,
        400,
        "INVALID_QUERY",
    );
}

async fn id_of(app: &TestApp, slug: &str) -> String {
    let (_, v) = app.get(&format!("/api/acme/{slug}/ops/get")).await;
    v["id"].as_str().unwrap().to_string()
}

async fn token_id(app: &TestApp, secret: &str) -> String {
    let (s, v) = app
        .call(Method::GET, "/api/ops/whoami", Some(secret), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["token_id"].as_str().unwrap().to_string()
}
