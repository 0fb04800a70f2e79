//! A websocket uses variables (issue 11, part 2): its driven link's url
//! and headers name `{{ vars.slug }}`, filled when the link connects; a
//! sensitive value reaches the peer and nothing else.

use crate::git::{git_ok, url};
use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const FIRST: &str = "s3cret-first-7f3a";
const SECOND: &str = "s3cret-second-91c2";

/// A local peer that accepts only `Authorization: Bearer <expected>`, and
/// reports every Authorization header it is offered.
// tungstenite fixes the callback's error type (a whole HTTP response).
#[allow(clippy::result_large_err)]
pub async fn peer(expected: Arc<Mutex<String>>) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, expected) = (tx.clone(), expected.clone());
            tokio::spawn(async move {
                let check = move |req: &Request, resp: Response| {
                    let got = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(got.clone());
                    if got == format!("Bearer {}", expected.lock().unwrap()) {
                        Ok(resp)
                    } else {
                        let mut no = ErrorResponse::new(None);
                        *no.status_mut() =
                            tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                        Err(no)
                    }
                };
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    (port, rx)
}

pub async fn offered(rx: &mut mpsc::UnboundedReceiver<String>, want: &str) {
    let want = format!("Bearer {want}");
    tokio::time::timeout(WAIT, async {
        while let Some(got) = rx.recv().await {
            if got == want {
                return;
            }
        }
    })
    .await
    .expect("the peer is offered the value in time");
}

pub async fn link_state(app: &TestApp) -> Value {
    let (_, v) = app.get("/api/acme/feed/ops/connections").await;
    v.as_array()
        .and_then(|a| a.iter().find(|c| c["kind"] == "link").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driven_link_authenticates_with_a_sensitive_variable() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let expected = Arc::new(Mutex::new(String::from("not yet")));
    let (port, mut rx) = peer(expected.clone()).await;
    app.element(
        "acme",
        "variable",
        "feed-token",
        json!({"value": FIRST, "sensitive": true}),
    )
    .await;
    let made = app
        .element(
            "acme",
            "websocket",
            "feed",
            json!({"url": format!("ws://127.0.0.1:{port}/feed"),
                   "headers": {"Authorization": "Bearer {{ vars.feed-token }}", "X-Client": "elementd"}}),
        )
        .await;
    // Refused first (the peer expects something else): the failure is
    // shown without the value.
    offered(&mut rx, FIRST).await;
    eventually("the refusal shows", || async {
        link_state(&app).await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    *expected.lock().unwrap() = FIRST.to_string();
    eventually("the link opens", || async {
        link_state(&app).await["state"] == "open"
    })
    .await;
    // A new value reconnects the link with it.
    *expected.lock().unwrap() = SECOND.to_string();
    let (s, v) = app
        .patch(
            "/api/acme/feed-token/ops/update",
            json!({"spec": {"value": SECOND, "sensitive": true}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    offered(&mut rx, SECOND).await;
    eventually("the link opens again", || async {
        link_state(&app).await["state"] == "open"
    })
    .await;
    // The value is nowhere but at the peer.
    let mut seen = vec![made.to_string()];
    for path in [
        "/api/acme/feed",
        "/api/acme/feed-token",
        "/api/acme/feed/ops/connections",
        "/api/acme/feed/ops/connections?env=draft",
        "/api/acme/ops/activity?limit=500",
        "/api/acme/feed/ops/activity?limit=500",
        "/api/acme/feed/ops/source?path=.triform/spec.yaml&branch=live",
        "/api/acme/feed/ops/context",
        "/api/acme/ops/export/bundle",
        "/api/acme/feed/ops/version?history=true",
    ] {
        let (s, v) = app.get(path).await;
        assert_eq!(s.as_u16(), 200, "{path}: {v}");
        seen.push(v.to_string());
    }
    let spec = &seen[1];
    assert!(
        spec.contains("{{ vars.feed-token }}"),
        "get shows the reference: {spec}"
    );
    let dir = tempfile::tempdir().unwrap();
    for slug in ["feed", "feed-token"] {
        git_ok(
            dir.path(),
            &["clone", "-q", &url(&app, &app.admin, "acme", slug), slug],
        );
        seen.push(git_ok(&dir.path().join(slug), &["log", "-p", "--all"]));
    }
    let logs = captured_logs();
    assert!(
        logs.contains("driven link cannot connect"),
        "the refusal was logged (so the logs are looked at)"
    );
    seen.push(logs);
    for text in &seen {
        for secret in [FIRST, SECOND] {
            assert!(
                !text.contains(secret),
                "leak: {}",
                &text[..text.len().min(400)]
            );
        }
    }
}

/// `acme` with variable `host` and websocket `feed`, whose url names it.
async fn host_and_feed() -> TestApp {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element("acme", "variable", "host", json!({"value": "127.0.0.1:9"}))
        .await;
    app.element(
        "acme",
        "websocket",
        "feed",
        json!({"url": "ws://{{ vars.host }}/feed"}),
    )
    .await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_checked_and_a_used_variable_stays() {
    let app = host_and_feed().await;
    let before = app.state_of("acme", "feed").await;
    // A missing variable is named; bad header names are refused.
    let r = app
        .patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"url": "ws://{{ vars.host }}/feed", "headers": {"X-Key": "{{ vars.nope }}"}}}),
        )
        .await;
    assert_error(&r, 422, "VARIABLE_NOT_FOUND");
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("'nope'"),
        "{}",
        r.1
    );
    for headers in [
        json!({"Host": "x"}),
        json!({"Sec-WebSocket-Key": "x"}),
        json!({"Bad Name": "x"}),
        json!({"X-Line": "a\r\nb"}),
    ] {
        let r = app
            .patch(
                "/api/acme/feed/ops/update",
                json!({"spec": {"url": "ws://{{ vars.host }}/feed", "headers": headers}}),
            )
            .await;
        assert_error(&r, 422, "SPEC_INVALID");
    }
    let r = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "other",
                   "spec": {"url": "wss://{{ vars.ghost }}/"}}),
        )
        .await;
    assert_error(&r, 422, "VARIABLE_NOT_FOUND");
    assert_eq!(app.state_of("acme", "feed").await, before);
    // context and tree show the use both ways.
    let (_, ctx) = app.get("/api/acme/feed/ops/context").await;
    assert!(ctx.to_string().contains("\"uses\""), "{ctx}");
    let (_, tree) = app.get("/api/acme/host/ops/tree").await;
    assert_eq!(tree["used_by"][0]["slug"], "feed", "{tree}");
    let (_, tree) = app.get("/api/acme/feed/ops/tree").await;
    assert_eq!(tree["uses"][0]["slug"], "host", "{tree}");
    // A variable in use is kept, while draft or a release names it.
    let r = app.delete("/api/acme/host/ops/delete?confirm=true").await;
    assert_error(&r, 409, "VARIABLE_IN_USE");
    let (s, v) = app
        .patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"url": "ws://127.0.0.1:9/feed"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let r = app.delete("/api/acme/host/ops/delete?confirm=true").await;
    assert_error(&r, 409, "VARIABLE_IN_USE");
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("live"),
        "{}",
        r.1
    );
    app.release("acme", "feed").await;
    let (s, v) = app.delete("/api/acme/host/ops/delete?confirm=true").await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // compose attaches a variable to a websocket.
    app.element("acme", "variable", "greeting", json!({"value": "hi"}))
        .await;
    let (s, v) = app
        .post(
            "/api/acme/feed/ops/compose",
            json!({"add": [{"ref": "variable/greeting"}]}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["added"][0]["is_modifier"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_brings_variables_before_the_websockets_that_name_them() {
    let app = host_and_feed().await;
    let (_, export) = app.get("/api/acme/ops/export/bundle").await;
    let mut elements = export["elements"].as_array().unwrap().clone();
    // The websocket first, as a client might send them.
    elements.sort_by_key(|e| e["element_type"] != "websocket");
    assert_eq!(elements[0]["element_type"], "websocket");
    app.circle("beta").await;
    let (s, v) = app
        .post(
            "/api/beta/ops/import/bundle",
            json!({ "elements": elements }),
        )
        .await;
    assert_eq!((s.as_u16(), v["imported"].as_u64()), (200, Some(2)), "{v}");
    let (_, feed) = app.get("/api/beta/feed").await;
    assert_eq!(feed["spec"]["url"], "ws://{{ vars.host }}/feed");
}

/// A member cannot send an admin's secret elsewhere: pointing a link that
/// sends a sensitive variable, or changing what it sends beside it, needs
/// an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_send_a_secret_elsewhere() {
    let app = host_and_feed().await;
    app.element(
        "acme",
        "variable",
        "key",
        json!({"value": "s3cret-admins", "sensitive": true}),
    )
    .await;
    let (s, v) = app
        .patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"url": "ws://{{ vars.host }}/feed",
                            "headers": {"Authorization": "Bearer {{ vars.key }}"}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let member = app.token("acme", Role::Member).await;
    let before = app.state_of("acme", "feed").await;
    let host = app.state_of("acme", "host").await;
    let as_member = |method: Method, path: &'static str, body: Value| {
        let member = member.clone();
        let app = &app;
        async move { app.call(method, path, Some(&member), Some(body)).await }
    };
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/acme/feed/ops/update",
            json!({"spec": {"url": "wss://elsewhere.example/x",
                            "headers": {"Authorization": "Bearer {{ vars.key }}"}}}),
        ),
        (
            Method::PATCH,
            "/api/acme/host/ops/update",
            json!({"spec": {"value": "elsewhere.example:443"}}),
        ),
        (
            Method::POST,
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "steal",
                   "spec": {"url": "wss://elsewhere.example/", "headers": {"X-K": "{{ vars.key }}"}}}),
        ),
    ] {
        assert_error(&as_member(method, path, body).await, 403, "FORBIDDEN");
    }
    assert_eq!(app.state_of("acme", "feed").await, before);
    assert_eq!(app.state_of("acme", "host").await, host);
    assert_error(&app.get("/api/acme/steal").await, 404, "ELEMENT_NOT_FOUND");
    // What does not move the secret stays a member's to do.
    let ok = as_member(
        Method::PATCH,
        "/api/acme/feed/ops/update",
        json!({"spec": {"url": "ws://{{ vars.host }}/feed",
                        "headers": {"Authorization": "Bearer {{ vars.key }}"},
                        "heartbeat": {"interval_ms": 20000}}}),
    )
    .await;
    assert_eq!(ok.0.as_u16(), 200, "{}", ok.1);
    let ok = as_member(
        Method::POST,
        "/api/acme/ops/create",
        json!({"element_type": "websocket", "slug": "plain",
               "spec": {"url": "ws://{{ vars.host }}/plain"}}),
    )
    .await;
    assert_eq!(ok.0.as_u16(), 201, "{}", ok.1);
    // An admin may point it.
    let (s, v) = app
        .patch(
            "/api/acme/host/ops/update",
            json!({"spec": {"value": "127.0.0.1:10"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
}

/// The check reads what every environment runs: an admin's draft that
/// stopped sending the secret leaves demo and live sending it, and a
/// member still may not repoint the host they use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_link_guards_its_secret_after_the_draft_drops_it() {
    let app = host_and_feed().await;
    app.element(
        "acme",
        "variable",
        "key",
        json!({"value": "s3cret-released", "sensitive": true}),
    )
    .await;
    let with_key = json!({"spec": {"url": "ws://{{ vars.host }}/feed",
                                   "headers": {"Authorization": "Bearer {{ vars.key }}"}}});
    let (s, v) = app.patch("/api/acme/feed/ops/update", with_key).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    app.release("acme", "feed").await;
    // The admin's draft stops sending it; demo and live still do.
    let (s, v) = app
        .patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"headers": null}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(v["spec"].get("headers").is_none(), "{v}");
    let member = app.token("acme", Role::Member).await;
    let host = app.state_of("acme", "host").await;
    let r = app
        .call(
            Method::PATCH,
            "/api/acme/host/ops/update",
            Some(&member),
            Some(json!({"spec": {"value": "elsewhere.example:443"}})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    let said = r.1["error"]["message"].as_str().unwrap();
    assert!(
        said.contains("in demo") || said.contains("in live"),
        "{said}"
    );
    assert_eq!(app.state_of("acme", "host").await, host, "nothing changed");
}

/// A sensitive host name reaches no error text in any case a parser or
/// resolver gives it: the link names the reference instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_host_shows_as_its_reference() {
    // `.invalid` never resolves (RFC 6761), so the connect fails at once.
    const HOST: &str = "Feed-S3cret-4b1e.Invalid";
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "feed-host",
        json!({"value": HOST, "sensitive": true}),
    )
    .await;
    app.element(
        "acme",
        "websocket",
        "feed",
        json!({"url": "ws://{{ vars.feed-host }}/feed"}),
    )
    .await;
    eventually("the link fails", || async {
        link_state(&app).await["last_error"].is_string()
    })
    .await;
    let link = link_state(&app).await;
    let why = link["last_error"].as_str().unwrap();
    assert!(why.contains("{{ vars.feed-host }}"), "{why}");
    let send = app
        .post("/api/acme/feed/ops/send", json!({"message": "hi"}))
        .await;
    assert_error(&send, 502, "WS_CONNECTION_FAILED");
    eventually("the refusal is recorded", || async {
        let (_, v) = app.get("/api/acme/feed/ops/activity?limit=500").await;
        v.to_string().contains("ws.connection.rejected")
    })
    .await;
    let mut seen = vec![link.to_string(), send.1.to_string()];
    for path in [
        "/api/acme/feed/ops/connections",
        "/api/acme/feed/ops/activity?limit=500",
        "/api/acme/ops/activity?limit=500",
        "/api/acme/feed/ops/stats",
    ] {
        let (s, v) = app.get(path).await;
        assert_eq!(s.as_u16(), 200, "{path}: {v}");
        seen.push(v.to_string());
    }
    let logs = captured_logs();
    assert!(
        logs.contains("ws://{{ vars.feed-host }}/feed"),
        "the failure was logged (so the logs are looked at)"
    );
    seen.push(logs);
    let lower = HOST.to_lowercase();
    for text in &seen {
        for form in [HOST, lower.as_str(), "s3cret-4b1e"] {
            assert!(
                !text.to_lowercase().contains(&form.to_lowercase()),
                "{form} shows: {}",
                &text[..text.len().min(400)]
            );
        }
    }
}
