//! Webhook rules (SPEC 10.2): specs refused and changing nothing, who
//! may read and send deliveries, and a url that holds a sensitive value.

use crate::helpers::*;
use crate::webhooks::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// A url filled from a sensitive variable sends that value to the
/// receiver: only an admin may point such a webhook, and no delivery
/// error names the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_from_a_sensitive_variable_is_an_admins_and_never_shown() {
    let app = spawn_app().await;
    // Bound but not listening: connections are refused, and no other
    // test's server or client takes the port, whose number the shared
    // log must not show.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    app.with_chat().await;
    for (slug, value) in [
        ("hook-key", whsec()),
        ("hook-host", format!("127.0.0.1:{port}")),
    ] {
        app.element(
            "acme",
            "variable",
            slug,
            json!({"value": value, "sensitive": true}),
        )
        .await;
    }
    let spec = crate::fixtures::spec_with(
        "webhook-local",
        json!({"url": "http://{{ vars.hook-host }}/hook", "events": ["element.updated"], "max_backoff_s": 1}),
    );
    let member = app.token("acme", Role::Member).await;
    let got = app
        .call(
            Method::POST,
            "/api/acme/ops/create",
            Some(&member),
            Some(json!({"element_type": "webhook", "slug": "hooks", "spec": spec})),
        )
        .await;
    assert_error(&got, 403, "FORBIDDEN");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("sensitive variable"), "{message}");
    let (s, _) = app.get("/api/acme/hooks/ops/get").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.element("acme", "webhook", "hooks", spec).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"add": [{"ref": "hooks"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    update_chat(&app, 1).await;
    // Nothing listens there: the attempt fails, and says so without the
    // address.
    let mut row = Value::Null;
    for _ in 0..50 {
        let d = deliveries(&app).await;
        row = d["deliveries"][0].clone();
        if row["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = row["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{row}"));
    assert!(why.contains("{{ vars.hook-host }}"), "{why}");
    assert!(!why.contains(&port.to_string()), "{why}");
    assert!(!captured_logs().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn bad_webhook_specs_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": "k", "sensitive": true}),
    )
    .await;
    app.element("acme", "variable", "plain", json!({"value": "k"}))
        .await;
    app.element(
        "acme",
        "variable",
        "bad-key",
        json!({"value": "whsec_!!", "sensitive": true}),
    )
    .await;
    let ok = crate::fixtures::spec_with("webhook-local", json!({"events": ["element.updated"]}));
    let with = |k: &str, v: Value| {
        let mut s = ok.clone();
        s[k] = v;
        s
    };
    let without = |k: &str| {
        let mut s = ok.clone();
        s.as_object_mut().unwrap().remove(k);
        s
    };
    let many: Vec<String> = (0..65).map(|i| format!("e{i}.*")).collect();
    let cases = [
        (without("secret"), 422, "SPEC_INVALID"),
        (without("url"), 422, "SPEC_INVALID"),
        (
            with("secret", json!("a-literal-secret")),
            422,
            "SPEC_INVALID",
        ),
        (
            with("secret", json!("{{ vars.nope }}")),
            422,
            "VARIABLE_NOT_FOUND",
        ),
        (
            with("secret", json!("{{ vars.plain }}")),
            422,
            "SPEC_INVALID",
        ),
        (with("url", json!("ftp://127.0.0.1/x")), 422, "SPEC_INVALID"),
        (
            with("url", json!("http://10.1.2.3/hook")),
            422,
            "SPEC_INVALID",
        ),
        (
            with("url", json!("http://{{ vars.nope }}/x")),
            422,
            "VARIABLE_NOT_FOUND",
        ),
        (with("events", json!(many)), 422, "SPEC_INVALID"),
        (with("events", json!([])), 422, "SPEC_INVALID"),
        (with("max_attempts", json!(0)), 422, "SPEC_INVALID"),
        (with("max_attempts", json!(101)), 422, "SPEC_INVALID"),
        (with("max_backoff_s", json!(86401)), 422, "SPEC_INVALID"),
        (with("enabled", json!("yes")), 422, "SPEC_INVALID"),
        (with("extra", json!(1)), 422, "SPEC_INVALID"),
    ];
    for (spec, status, code) in &cases {
        let got = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "webhook", "slug": "hooks", "spec": spec}),
            )
            .await;
        assert_error(&got, *status, code);
        let answer = got.1.to_string();
        assert!(
            !answer.contains("\"k\"") && !answer.contains("whsec_!!"),
            "a value is quoted: {answer}"
        );
        let (s, _) = app.get("/api/acme/hooks/ops/get").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{spec} created something");
    }
    // Nor does an update: the webhook keeps its version and spec.
    app.element("acme", "webhook", "hooks", ok.clone()).await;
    let before = app.state_of("acme", "hooks").await;
    for (spec, status, code) in &cases[2..] {
        let got = app
            .patch("/api/acme/hooks/ops/update", json!({"spec": spec}))
            .await;
        assert_error(&got, *status, code);
        assert_eq!(app.state_of("acme", "hooks").await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_circles_member_cannot_read_or_redeliver() {
    let app = spawn_app().await;
    let r = receiver().await;
    acme_with_webhook(&app, &r.url(), json!({})).await;
    update_chat(&app, 1).await;
    let id = r.wait_for("element.updated", 1).await[0].id();
    app.circle("globex").await;
    let outsider = app.token("globex", Role::Member).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let as_ = |token: &str, method: Method, op: &str, body: Option<Value>| {
        let (token, op) = (token.to_string(), op.to_string());
        let app = &app;
        async move {
            app.call(
                method,
                &format!("/api/acme/hooks/ops/{op}"),
                Some(&token),
                body,
            )
            .await
        }
    };
    let got = as_(&outsider, Method::GET, "deliveries", None).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    assert!(!got.1.to_string().contains(&id));
    let got = as_(
        &outsider,
        Method::POST,
        "redeliver",
        Some(json!({"id": id})),
    )
    .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    let got = as_(&outsider, Method::POST, "test", Some(json!({}))).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    // The circle's viewer reads, but may not send.
    let got = as_(&viewer, Method::GET, "deliveries", None).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["deliveries"][0]["id"], id.as_str());
    let got = as_(&viewer, Method::POST, "redeliver", Some(json!({"id": id}))).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    // Nothing was sent again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(r.got().iter().filter(|g| g.id() == id).count(), 1);
    // An id the webhook does not have.
    let got = app
        .post("/api/acme/hooks/ops/redeliver", json!({"id": "0190-nope"}))
        .await;
    assert_error(&got, 404, "DELIVERY_NOT_FOUND");
    let got = app.post("/api/acme/hooks/ops/redeliver", json!({})).await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
}
