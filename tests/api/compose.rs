//! Composition: attaching modifiers, and their effect on ops.

use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn setup(app: &TestApp) {
    app.with_chat().await;
    app.element(
        "acme",
        "rate-limit",
        "three",
        json!({"limit": 3, "window_seconds": 60}),
    )
    .await;
    app.element(
        "acme",
        "auth-policy",
        "members",
        json!({"min_role": "member"}),
    )
    .await;
    app.element("acme", "variable", "greeting", json!({"value": "hi"}))
        .await;
}

async fn compose(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/api/acme/chat/ops/compose", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_attaches_and_rejects_bad_entries_atomically() {
    let app = spawn_app().await;
    setup(&app).await;
    app.element(
        "acme",
        "rate-limit",
        "roomy",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    let (s, v) = compose(
        &app,
        json!({"add": [{"ref": "rate-limit/roomy", "priority": 10}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let att = v["added"][0].clone();
    app.element("acme", "project", "shop", json!({})).await;
    assert_eq!(
        (
            att["source"]["slug"].as_str(),
            att["is_modifier"].as_bool(),
            att["priority"].as_i64()
        ),
        (Some("roomy"), Some(true), Some(10))
    );
    let id = att["attachment_id"].as_str().unwrap().to_string();
    let cases: Vec<(Value, u16, &str)> = vec![
        // A websocket takes modifiers and variables, not a project.
        (json!({"add": [{"ref": "shop"}]}), 400, "INVALID_ATTACHMENT"),
        (json!({"add": [{"ref": "nobody"}]}), 404, "REF_NOT_FOUND"),
        (json!({"add": [{"ref": "Bad Ref"}]}), 400, "INVALID_REF"),
        (
            json!({"add": [{"ref": "auth-policy/three"}]}),
            400,
            "INVALID_REF",
        ),
        (json!({"add": [{"ref": "roomy"}]}), 409, "ALREADY_ATTACHED"),
        (
            json!({"add": [{"ref": "members@v9"}]}),
            404,
            "VERSION_NOT_FOUND",
        ),
        (
            json!({"add": [{"ref": "members", "priority": -1}]}),
            400,
            "INVALID_PRIORITY",
        ),
        (json!({"add": [{"ref": "chat"}]}), 400, "INVALID_ATTACHMENT"),
        // A good add with a bad remove leaves everything as it was.
        (
            json!({"add": [{"ref": "members"}], "remove": [{"attachment_id": "nope"}]}),
            404,
            "ATTACHMENT_NOT_FOUND",
        ),
        (json!({}), 400, "EMPTY_COMPOSE"),
        (
            json!({"add": [{"ref": "members", "pin": 1}]}),
            400,
            "INVALID_BODY",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(&compose(&app, body).await, status, code);
    }
    let (_, list) = app.get("/api/acme/chat/ops/attachments").await;
    let ids: Vec<_> = list["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attachment_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&id),
        "only the first attachment exists"
    );
    // Remove one and add another in one call.
    let (s, v) = compose(
        &app,
        json!({"add": [{"ref": "members"}], "remove": [{"attachment_id": id}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
    let mid = v["added"][0]["attachment_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/remove-modifier",
            json!({"attachment_id": mid}),
        )
        .await;
    assert_eq!(
        (s, v["attachments"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    assert_error(
        &app.post(
            "/api/acme/chat/ops/remove-modifier",
            json!({"attachment_id": mid}),
        )
        .await,
        404,
        "ATTACHMENT_NOT_FOUND",
    );
    let (_, act) = app
        .get("/api/acme/chat/ops/activity?type=element.composed")
        .await;
    assert_eq!(act["events"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_per_key() {
    let app = spawn_app().await;
    setup(&app).await;
    compose(&app, json!({"add": [{"ref": "three"}]})).await;
    let viewer = app.token("acme", Role::Viewer).await;
    for _ in 0..3 {
        assert_eq!(
            app.call(Method::GET, "/api/acme/chat", Some(&viewer), None)
                .await
                .0,
            StatusCode::OK
        );
    }
    let resp = app
        .client
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["retryable"].as_bool()
        ),
        (Some("RATE_LIMITED"), Some(true))
    );
    // Another token has its own budget.
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(&app.admin), None)
            .await
            .0,
        StatusCode::OK
    );
    // A stricter second limit wins.
    app.element(
        "acme",
        "rate-limit",
        "one",
        json!({"limit": 1, "window_seconds": 60}),
    )
    .await;
    compose(&app, json!({"add": [{"ref": "one"}]})).await;
    let member = app.token("acme", Role::Member).await;
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(&member), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &app.call(Method::GET, "/api/acme/chat", Some(&member), None)
            .await,
        429,
        "RATE_LIMITED",
    );
    // The limited caller can still see the limit; removing it is for the
    // admin who attached it (a member's 403 says why), and never blocked.
    let (s, list) = app
        .call(
            Method::GET,
            "/api/acme/chat/ops/attachments",
            Some(&member),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let one = list["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["source"]["slug"] == "one")
        .map(|a| a["attachment_id"].clone())
        .unwrap_or_else(|| panic!("'one' is attached: {list}"));
    let got = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/remove-modifier",
            Some(&member),
            Some(json!({"attachment_id": one.clone()})),
        )
        .await;
    assert_error(&got, 403, "FORBIDDEN");
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/remove-modifier",
            json!({"attachment_id": one}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(&member), None)
            .await
            .0,
        StatusCode::OK,
        "only the looser limit is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_policy_checks_role_and_origin() {
    let app = spawn_app().await;
    setup(&app).await;
    app.patch(
        "/api/acme/members/ops/update",
        json!({"spec": {"allowed_origins": ["https://ok.example"]}}),
    )
    .await;
    compose(&app, json!({"add": [{"ref": "members"}]})).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let member = app.token("acme", Role::Member).await;
    assert_error(
        &app.call(Method::GET, "/api/acme/chat", Some(&viewer), None)
            .await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(&member), None)
            .await
            .0,
        StatusCode::OK
    );
    let bad_origin = app
        .client
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&member)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_origin.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        bad_origin.json::<Value>().await.unwrap()["error"]["code"],
        "ORIGIN_NOT_ALLOWED"
    );
    let good_origin = app
        .client
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&member)
        .header("origin", "https://ok.example")
        .send()
        .await
        .unwrap();
    assert_eq!(good_origin.status(), StatusCode::OK);
    // A disabled modifier has no effect.
    app.post("/api/acme/members/ops/disable", json!({})).await;
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(&viewer), None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_modifier_keeps_its_version() {
    let app = spawn_app().await;
    setup(&app).await;
    app.element(
        "acme",
        "rate-limit",
        "two",
        json!({"limit": 2, "window_seconds": 60}),
    )
    .await;
    app.patch("/api/acme/two/ops/update", json!({"spec": {"limit": 1000}}))
        .await;
    let (s, v) = compose(&app, json!({"add": [{"ref": "two@v1"}]})).await;
    assert_eq!(
        (s, v["added"][0]["version_pin"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let viewer = app.token("acme", Role::Viewer).await;
    for _ in 0..2 {
        assert_eq!(
            app.call(Method::GET, "/api/acme/chat", Some(&viewer), None)
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_error(
        &app.call(Method::GET, "/api/acme/chat", Some(&viewer), None)
            .await,
        429,
        "RATE_LIMITED",
    );
}

/// A member cannot weaken what guards an element: an admin's
/// auth-policy, or a rate-limit an admin attached (issue 8, item 6).
#[tokio::test]
async fn members_cannot_weaken_an_admins_modifiers() {
    let app = spawn_app().await;
    app.with_chat().await;
    let member = app.token("acme", Role::Member).await;
    app.attach(
        "chat",
        "auth-policy",
        "admins-only",
        json!({"min_role": "admin"}),
    )
    .await;
    app.attach(
        "chat",
        "rate-limit",
        "strict",
        json!({"limit": 5, "window_seconds": 60}),
    )
    .await;
    for (path, spec) in [
        (
            "/api/acme/admins-only/ops/update",
            json!({"min_role": "viewer"}),
        ),
        ("/api/acme/strict/ops/update", json!({"limit": 100000})),
    ] {
        let got = app
            .call(
                Method::PATCH,
                path,
                Some(&member),
                Some(json!({ "spec": spec })),
            )
            .await;
        assert_error(&got, 403, "FORBIDDEN");
    }
    let (_, spec, _) = app.state_of("acme", "admins-only").await;
    assert_eq!(spec["min_role"], "admin", "nothing changed");
    let (_, spec, _) = app.state_of("acme", "strict").await;
    assert_eq!(spec["limit"], 5);
    // Nor detach them: the rate-limit also guards `feed`, where no
    // auth-policy stands in the way, so the guard alone refuses.
    app.element("acme", "websocket", "feed", json!({"path": "/feed"}))
        .await;
    let (s, v) = app
        .post(
            "/api/acme/feed/ops/compose",
            json!({"add": [{"ref": "strict"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let on_feed = v["added"][0]["attachment_id"].clone();
    let got = app
        .call(
            Method::POST,
            "/api/acme/feed/ops/compose",
            Some(&member),
            Some(json!({"remove": [{"attachment_id": on_feed}]})),
        )
        .await;
    assert_error(&got, 403, "FORBIDDEN");
    let (_, list) = app.get("/api/acme/chat/ops/attachments").await;
    let ids: Vec<String> = list["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attachment_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let got = app
            .call(
                Method::POST,
                "/api/acme/chat/ops/remove-modifier",
                Some(&member),
                Some(json!({"attachment_id": id})),
            )
            .await;
        assert_error(&got, 403, "FORBIDDEN");
    }
    let (_, list) = app.get("/api/acme/chat/ops/attachments").await;
    assert_eq!(list["attachments"].as_array().unwrap().len(), 2);
    // An admin may.
    let (s, v) = app
        .patch(
            "/api/acme/strict/ops/update",
            json!({"spec": {"limit": 50}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A rate-limit a member attached, the member may change and detach; an
/// unattached modifier guards nothing.
#[tokio::test]
async fn a_members_own_rate_limit_stays_theirs() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element("acme", "websocket", "feed", json!({"path": "/feed"}))
        .await;
    let member = app.token("acme", Role::Member).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/acme/ops/create",
            Some(&member),
            Some(json!({"element_type": "rate-limit", "slug": "mine",
                        "spec": {"limit": 5, "window_seconds": 60}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/acme/feed/ops/compose",
            Some(&member),
            Some(json!({"add": [{"ref": "mine"}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["added"][0]["attachment_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .call(
            Method::PATCH,
            "/api/acme/mine/ops/update",
            Some(&member),
            Some(json!({"spec": {"limit": 10}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/acme/feed/ops/remove-modifier",
            Some(&member),
            Some(json!({"attachment_id": id})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}
