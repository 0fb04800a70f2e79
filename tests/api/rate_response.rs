//! A rate-limit's `response` (issue 24, item 2): the default message names
//! the limit, its window and where it is inherited from; an owner's
//! status, code, message and headers reach REST callers and, in-band,
//! WebSocket clients; bad responses are refused and change nothing.

use crate::fixtures::spec;
use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use serde_json::{json, Value};

/// GET `path` with `token`: status, the headers asked for, and the body.
async fn get_with(
    app: &TestApp,
    path: &str,
    token: &str,
    header: &str,
) -> (u16, Option<String>, Value) {
    let r = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let h = r
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_string());
    (status, h, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_answers_in_its_own_words() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element("acme", "websocket", "chat", spec("websocket-echo"))
        .await;
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    app.element(
        "acme",
        "rate-limit",
        "msg-limit",
        json!({"limit": 2, "window_seconds": 60, "scope": {"traffic": ["ops"]}}),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/shop/ops/compose",
            json!({"add": [{"ref": "msg-limit", "cascade_policy": "children"}]}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let member = app.token("acme", Role::Member).await;

    // The default: 429 RATE_LIMITED, a message that says which limit,
    // which window and from where, Retry-After and retry_after_ms.
    for _ in 0..2 {
        assert_eq!(
            get_with(&app, "/api/acme/chat/ops/get", &member, "x")
                .await
                .0,
            200
        );
    }
    let (status, retry, body) =
        get_with(&app, "/api/acme/chat/ops/get", &member, "retry-after").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["class"], "limit");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("rate limit 'msg-limit', inherited from 'shop', reached: 2 requests per 60 s; retry in "),
        "{msg}"
    );
    let ms = body["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(ms > 0 && ms <= 60_000, "{ms}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);

    // The owner's words: status, code, message and a header.
    let (s, v) = app
        .patch(
            "/api/acme/msg-limit/ops/update",
            json!({"spec": {"response": {"status": 503, "code": "SLOW_DOWN",
                "message": "The shop is busy", "headers": {"X-Limit-Name": "msg-limit"}}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let (status, named, body) =
        get_with(&app, "/api/acme/chat/ops/get", &member, "x-limit-name").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(named.as_deref(), Some("msg-limit"));
    assert_eq!(body["error"]["code"], "SLOW_DOWN");
    assert_eq!(body["error"]["message"], "The shop is busy");
    assert_eq!(body["error"]["class"], "limit");
    assert_eq!(body["error"]["retryable"], true);
    assert!(body["error"]["retry_after_ms"].as_u64().is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_hears_the_same_code_and_message() {
    let app = spawn_app().await;
    ws_element(&app, "chat", spec("websocket-echo")).await;
    app.element(
        "acme",
        "rate-limit",
        "one-a-minute",
        json!({"limit": 1, "window_seconds": 60, "key": "connection",
               "scope": {"traffic": ["messages"]},
               "response": {"code": "TOO_CHATTY", "message": "One message a minute"}}),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"add": [{"ref": "one-a-minute"}]}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let mut c = connect(&app, "/ws/acme/~draft/chat").await;
    send_text(&mut c, "first").await;
    assert_eq!(next_text(&mut c).await, "first");
    send_text(&mut c, "second").await;
    let e = next_json(&mut c).await;
    assert_eq!(e["error"]["code"], "TOO_CHATTY", "{e}");
    assert_eq!(
        e["error"]["message"],
        "One message a minute; this message was dropped"
    );
    assert!(
        e["error"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_responses_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let nine: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    for (why, response) in [
        ("a success status", json!({"status": 200})),
        ("a status past 599", json!({"status": 600})),
        ("a lower-case code", json!({"code": "slow_down"})),
        ("an empty message", json!({"message": ""})),
        ("a message over 500", json!({"message": "m".repeat(501)})),
        (
            "a header HTTP reads",
            json!({"headers": {"Set-Cookie": "a=b"}}),
        ),
        (
            "a header that ends the answer",
            json!({"headers": {"Content-Length": "0"}}),
        ),
        (
            "a value with a newline",
            json!({"headers": {"X-A": "a\r\nSet-Cookie: b"}}),
        ),
        (
            "a value over 256",
            json!({"headers": {"X-A": "v".repeat(257)}}),
        ),
        ("nine headers", json!({"headers": nine})),
        ("an unknown field", json!({"body": "no"})),
        ("not an object", json!("429")),
    ] {
        let got = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "rate-limit", "slug": "rl", "spec": {"response": response}}),
            )
            .await;
        assert_eq!(got.0.as_u16(), 422, "{why}: {}", got.1);
        assert_eq!(got.1["error"]["class"], "validation", "{why}");
        assert_eq!(
            app.get("/api/acme/rl").await.0.as_u16(),
            404,
            "{why} created it"
        );
    }
    // A good one is taken, and an update to a bad one changes nothing.
    app.element(
        "acme",
        "rate-limit",
        "rl",
        json!({"response": {"status": 429, "headers": {"x-why": "busy"}}}),
    )
    .await;
    let bad = app
        .patch(
            "/api/acme/rl/ops/update",
            json!({"spec": {"response": {"headers": {"Location": "http://evil"}}}}),
        )
        .await;
    assert_eq!(bad.0.as_u16(), 422, "{}", bad.1);
    let (_, el) = app.get("/api/acme/rl").await;
    assert_eq!(el["version"], 1);
    assert_eq!(el["spec"]["response"]["headers"], json!({"x-why": "busy"}));
}
