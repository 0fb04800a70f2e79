//! The REST data behind the console's pictures and lists (issue 25):
//! `series`, a websocket's last 15 minutes as this node saw them (one
//! bounded ring per hub, sampled every 10 s), and an api-token's
//! `token_status` in `list` and `get`.

use crate::helpers::{assert_error, spawn_app, TestApp};
use crate::ws_client::{connect, WAIT};
use elementd::model::Role;
use futures::SinkExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SERIES: &str = "/api/acme/chat/ops/series";

async fn chat(app: &TestApp) {
    app.circle("acme").await;
    app.element("acme", "websocket", "chat", json!({})).await;
    app.release("acme", "chat").await;
}

fn check_shape(s: &Value) {
    assert_eq!(s["interval_seconds"], 10, "{s}");
    assert_eq!(s["capacity"], 90, "{s}");
    let samples = s["samples"].as_array().expect("samples");
    assert!(samples.len() <= 90, "bounded: {}", samples.len());
    for x in samples.iter().chain([&s["current"]]) {
        assert!(x["at"].is_string(), "{x}");
        assert!(x["connections"].as_u64().is_some(), "{x}");
        assert!(x["messages_in_per_s"].as_f64().unwrap() >= 0.0, "{x}");
        assert!(x["messages_out_per_s"].as_f64().unwrap() >= 0.0, "{x}");
    }
}

#[tokio::test]
async fn series_answers_a_websockets_last_minutes() {
    let app = spawn_app().await;
    chat(&app).await;
    let (s, quiet) = app.get(SERIES).await;
    assert_eq!(s, 200, "{quiet}");
    check_shape(&quiet);
    assert_eq!(quiet["env"], "live");
    // A PostgreSQL node may have peers: it names itself, as its ring is
    // its own. A SQLite server is alone.
    match app.db.backend {
        elementd::store::Backend::Postgres => assert!(quiet["node_id"].is_string(), "{quiet}"),
        elementd::store::Backend::Sqlite => assert!(quiet["node_id"].is_null(), "{quiet}"),
    }
    assert_eq!(quiet["current"]["connections"], 0);

    // A client sends; the interval under way shows it at once.
    let mut client = connect(&app, "/ws/acme/ws").await;
    for i in 0..5 {
        client.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    let start = Instant::now();
    let busy = loop {
        let (_, v) = app.get(SERIES).await;
        if v["current"]["connections"] == 1
            && v["current"]["messages_in_per_s"].as_f64() > Some(0.0)
        {
            break v;
        }
        assert!(start.elapsed() < WAIT, "never counted: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    check_shape(&busy);

    // The ticker takes a sample within 10 s: kept in the ring, with the
    // client and its messages.
    let start = Instant::now();
    let sampled = loop {
        let (_, v) = app.get(SERIES).await;
        if !v["samples"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(25), "no sample: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    check_shape(&sampled);
    let first = &sampled["samples"][0];
    assert_eq!(first["connections"], 1, "{sampled}");
    assert!(
        first["messages_in_per_s"].as_f64().unwrap() > 0.0,
        "{sampled}"
    );
    drop(client);

    // Another environment runs its own hub: demo, with nobody on it.
    let (s, demo) = app.get(&format!("{SERIES}?env=demo")).await;
    assert_eq!(s, 200, "{demo}");
    assert_eq!(demo["env"], "demo");
    assert_eq!(demo["current"]["connections"], 0);
}

/// Each node keeps its own ring: a client on node A shows in A's
/// series, not in B's; each answer names its node.
#[tokio::test]
async fn each_node_answers_its_own_series() {
    let Some((a, b)) = crate::helpers::spawn_cluster().await else {
        return;
    };
    chat(&a).await;
    let _client = connect(&a, "/ws/acme/ws").await;
    // connections, by contrast, is every node's: B lists A's client.
    let start = Instant::now();
    let (on_a, on_b) = loop {
        let (_, on_a) = a.get(SERIES).await;
        let (s, on_b) = b.get(SERIES).await;
        let (_, conns) = b.get("/api/acme/chat/ops/connections").await;
        let listed = conns.as_array().map(Vec::len) == Some(1);
        if on_a["current"]["connections"] == 1 && s == 200 && listed {
            break (on_a, on_b);
        }
        assert!(start.elapsed() < WAIT, "{on_a} {on_b} {conns}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        on_b["current"]["connections"], 0,
        "B holds no client: {on_b}"
    );
    assert!(on_a["node_id"].is_string() && on_b["node_id"].is_string());
    assert_ne!(on_a["node_id"], on_b["node_id"], "each names itself");
}

#[tokio::test]
async fn series_refuses_what_it_cannot_answer() {
    let app = spawn_app().await;
    chat(&app).await;
    app.element("acme", "variable", "greeting", json!({"value": "hi"}))
        .await;
    // Not a runtime element: the type has no such op.
    let got = app.get("/api/acme/greeting/ops/series").await;
    assert_error(&got, 404, "OP_NOT_FOUND");
    assert_error(
        &app.get(&format!("{SERIES}?env=prod")).await,
        400,
        "INVALID_ENVIRONMENT",
    );
    // No token; another circle's member.
    let none = app.call(Method::GET, SERIES, None, None).await;
    assert_eq!(none.0, 401, "{}", none.1);
    app.circle("other").await;
    let stranger = app.token("other", Role::Member).await;
    let got = app.call(Method::GET, SERIES, Some(&stranger), None).await;
    assert_eq!(
        got.0, 404,
        "another circle's element is not there: {}",
        got.1
    );
    // A viewer of the circle reads it.
    let viewer = app.token("acme", Role::Viewer).await;
    let (s, v) = app.call(Method::GET, SERIES, Some(&viewer), None).await;
    assert_eq!(s, 200, "{v}");
    // Disabled, nothing runs: 409 WS_NOT_LIVE, and enabling brings it back.
    let (s, _) = app.post("/api/acme/chat/ops/disable", json!({})).await;
    assert_eq!(s, 200);
    assert_error(&app.get(SERIES).await, 409, "WS_NOT_LIVE");
    let (s, _) = app.post("/api/acme/chat/ops/enable", json!({})).await;
    assert_eq!(s, 200);
    let (s, v) = app.get(SERIES).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn a_revoked_token_says_so_in_list_and_get() {
    let app = spawn_app().await;
    chat(&app).await;
    let made = app.element("acme", "api-token", "ci-bot", json!({})).await;
    let secret = made["token"]["secret"].as_str().unwrap().to_string();
    let status_in_list = |list: &Value, slug: &str| {
        list["elements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["slug"] == slug)
            .map(|e| e["token_status"].clone())
            .unwrap()
    };
    let (_, list) = app.get("/api/acme/ops/list").await;
    assert_eq!(status_in_list(&list, "ci-bot"), "active", "{list}");
    assert!(
        status_in_list(&list, "chat").is_null(),
        "only tokens carry it"
    );
    let (_, got) = app.get("/api/acme/ci-bot").await;
    assert_eq!(got["token_status"], "active");

    let (s, v) = app.post("/api/acme/ci-bot/ops/revoke", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (_, list) = app.get("/api/acme/ops/list?type=api-token").await;
    assert_eq!(status_in_list(&list, "ci-bot"), "revoked", "{list}");
    let (_, got) = app.get("/api/acme/ci-bot/ops/get").await;
    assert_eq!(got["token_status"], "revoked", "{got}");
    let (s, _) = app
        .call(Method::GET, "/api/acme/chat", Some(&secret), None)
        .await;
    assert_eq!(s, 401, "the revoked secret stopped");

    // One whose expiry has passed is expired, not active.
    let (s, v) = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "api-token", "slug": "old-bot",
                   "spec": {"expires_at": "2001-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, got) = app.get("/api/acme/old-bot").await;
    assert_eq!(got["token_status"], "expired", "{got}");
}
