//! The application's backend (issue 23, items 1-3): a real HTTP backend
//! started here answers the connect hook (admit, refuse, name) and the
//! message hook (reply, broadcast, send, close), late and garbled too.
//! Every request it gets is checked with the `standardwebhooks` crate.

use crate::helpers::*;
use crate::ws_client::*;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signing key, as an application would hold it.
const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// (status, JSON body or none, delay in ms)
type Answer = (u16, Option<Value>, u64);

/// A backend: what each request asked, and whether its signature held.
struct Backend {
    url: String,
    got: Arc<Mutex<Vec<(Value, bool)>>>,
    /// The client port of each request: one per connection it came on.
    ports: Arc<Mutex<Vec<u16>>>,
}

impl Backend {
    fn got(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap().clone();
        assert!(got.iter().all(|(_, ok)| *ok), "every request is signed");
        got.into_iter().map(|(v, _)| v).collect()
    }
}

async fn backend(answer: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> Backend {
    let got: Arc<Mutex<Vec<(Value, bool)>>> = Arc::default();
    let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
    let answer = Arc::new(answer);
    let (g, p) = (got.clone(), ports.clone());
    let route = axum::routing::post(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: String| {
            let (g, p, answer) = (g.clone(), p.clone(), answer.clone());
            async move {
                p.lock().unwrap().push(peer.port());
                let wh = standardwebhooks::Webhook::new(KEY).unwrap();
                let signed = wh.verify(body.as_bytes(), &headers).is_ok()
                    && wh.verify(format!("{body} ").as_bytes(), &headers).is_err();
                let asked: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                g.lock().unwrap().push((asked.clone(), signed));
                let (status, reply, delay) = answer(&asked);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                match reply {
                    Some(Value::String(raw)) => (status, raw),
                    Some(v) => (status, v.to_string()),
                    None => (status, String::new()),
                }
            }
        },
    );
    let router = axum::Router::new()
        .route("/hook", route)
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Backend {
        url: format!("http://127.0.0.1:{port}/hook"),
        got,
        ports,
    }
}

/// Circle acme, the key as the sensitive variable `hook-key`, and the
/// websocket `chat` at /ws/acme/chat with `hooks` pointing at `b`.
async fn chat(app: &TestApp, b: &Backend, hooks: Value, spec: Value) {
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": KEY, "sensitive": true}),
    )
    .await;
    let mut s = crate::fixtures::spec_with("websocket-hooks-rooms", json!({"hooks": hooks}));
    s["hooks"]["url"] = json!(b.url);
    app.element(
        "acme",
        "websocket",
        "chat",
        crate::fixtures::patched(s, spec),
    )
    .await;
}

/// [`chat`] asking `b` before each connection and with each message.
async fn hooked_chat(app: &TestApp, b: &Backend) {
    chat(
        app,
        b,
        json!({"connect": true}),
        json!({"on_message": "hook"}),
    )
    .await;
}

fn query_of(asked: &Value) -> String {
    asked["query"]["who"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_hook_admits_refuses_and_names() {
    let app = spawn_app().await;
    let b = backend(|asked| match query_of(asked).as_str() {
        "ok" => (200, Some(json!({"allow": true})), 0),
        "named" => (
            200,
            Some(
                json!({"allow": true, "user": "u-42", "rooms": ["vip"], "info": {"plan": "gold"}}),
            ),
            0,
        ),
        "no" => (
            200,
            Some(json!({"allow": false, "status": 401, "code": "NOT_PAID", "reason": "pay first"})),
            0,
        ),
        "forbid" => (200, Some(json!({"allow": false})), 0),
        "garbage" => (200, Some(json!("not json at all")), 0),
        "bad-rooms" => (200, Some(json!({"allow": true, "rooms": ["ok", ""]})), 0),
        "down" => (500, None, 0),
        _ => (200, Some(json!({"allow": true})), 3_000),
    })
    .await;
    chat(&app, &b, json!({"connect": true}), json!({})).await;

    let _ok = connect(&app, "/ws/acme/chat?who=ok&token=not-for-the-backend").await;
    let _named = connect(&app, "/ws/acme/chat?who=named&rooms=lobby").await;
    wait_connections(&app, "acme", "chat", 2).await;
    let (_, v) = app.get("/api/acme/chat/ops/connections?user=u-42").await;
    let c = &v[0];
    assert_eq!(
        (c["user"].clone(), c["rooms"].clone(), c["info"].clone()),
        (json!("u-42"), json!(["vip"]), json!({"plan": "gold"})),
        "{v}"
    );

    // Refusals the backend chose keep its status and code.
    let (s, e) = refused(&app, "/ws/acme/chat?who=no", None).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (401, json!("NOT_PAID")),
        "{e}"
    );
    assert_eq!(e["error"]["message"], "pay first");
    let (s, e) = refused(&app, "/ws/acme/chat?who=forbid", None).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (403, json!("WS_HOOK_REFUSED")),
        "{e}"
    );
    // A backend that fails, is late or answers garbage: 503, retryable.
    for who in ["garbage", "bad-rooms", "down", "slow"] {
        let (s, e) = refused(&app, &format!("/ws/acme/chat?who={who}"), None).await;
        assert_eq!(
            (s, e["error"]["code"].clone()),
            (503, json!("WS_HOOK_FAILED")),
            "{who}: {e}"
        );
        assert_eq!(e["error"]["retryable"], true);
    }
    // Rejections are persisted sampled (at most one a second); the first
    // is always kept, with the code the client got.
    activity_until(&app, "chat", "ws.connection.rejected", |e| {
        e.iter()
            .any(|e| e["data"]["code"] == "NOT_PAID" && e["data"]["status"] == 401)
    })
    .await;

    // What the backend was told: the client, without its token.
    let got = b.got();
    let first = got.iter().find(|g| query_of(g) == "ok").unwrap();
    assert_eq!(first["type"], "connect");
    assert_eq!(
        (first["circle"].as_str(), first["element"].as_str()),
        (Some("acme"), Some("chat"))
    );
    assert!(first["connection_id"].as_str().unwrap().starts_with("c_"));
    assert!(first["query"].get("token").is_none(), "{first}");
    assert!(first["headers"].get("user-agent").is_some());
    let named = got.iter().find(|g| query_of(g) == "named").unwrap();
    assert_eq!(named["rooms"], json!(["lobby"]));
    // The key never shows in events.
    let all = activity(&app, "acme", "chat", "ws.").await;
    assert!(!json!(all)
        .to_string()
        .contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_hook_answers_in_order_and_a_late_one_leaves_the_connection() {
    let app = spawn_app().await;
    let b = backend(|asked| {
        if asked["type"] == "connect" {
            let who = query_of(asked);
            return (200, Some(json!({"allow": true, "user": who})), 0);
        }
        let text = asked["message"].as_str().unwrap_or("").to_string();
        let (verb, rest) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match verb {
            "echo" => (200, Some(json!({"reply": rest})), 0),
            "all" => (
                200,
                Some(json!({"broadcast": {"message": rest, "room": "lobby"}})),
                0,
            ),
            "dm" => {
                let (to, what) = rest.split_once(':').unwrap();
                (200, Some(json!({"send": {"user": to, "message": what}})), 0)
            }
            "bye" => (
                200,
                Some(json!({"close": {"code": 4000, "reason": "bye"}})),
                0,
            ),
            "slow" => (204, None, 2_000),
            "junk" => (200, Some(json!("{")), 0),
            "quiet" => (204, None, 0),
            _ => (500, None, 0),
        }
    })
    .await;
    // Room in the queue for the burst of 100 below.
    chat(
        &app,
        &b,
        json!({"connect": true, "queue_per_connection": 128}),
        json!({"on_message": "hook"}),
    )
    .await;
    let mut alice = connect(&app, "/ws/acme/chat?who=alice&rooms=lobby").await;
    let mut bob = connect(&app, "/ws/acme/chat?who=bob&rooms=lobby").await;
    wait_connections(&app, "acme", "chat", 2).await;

    send_text(&mut alice, "echo:hi").await;
    assert_eq!(next_text(&mut alice).await, "hi");
    send_text(&mut alice, "all:hello room").await;
    assert_eq!(next_text(&mut alice).await, "hello room");
    assert_eq!(next_text(&mut bob).await, "hello room");
    send_text(&mut alice, "dm:bob:psst").await;
    assert_eq!(next_text(&mut bob).await, "psst");

    // 100 messages: the backend sees them in order, one at a time, and
    // the replies come back in order.
    for i in 0..100 {
        send_text(&mut alice, &format!("echo:{i}")).await;
    }
    for i in 0..100 {
        assert_eq!(next_text(&mut alice).await, i.to_string());
    }
    let order: Vec<String> = b
        .got()
        .iter()
        .filter(|g| g["type"] == "message" && g["user"] == "alice")
        .filter_map(|g| {
            g["message"]
                .as_str()?
                .strip_prefix("echo:")
                .map(str::to_string)
        })
        .filter(|m| m != "hi")
        .collect();
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(order, want);

    // Late, failed or garbled: an error frame, an event, the connection stays.
    for bad in ["slow", "fail", "junk"] {
        send_text(&mut alice, bad).await;
        let e = next_json(&mut alice).await;
        assert_eq!(
            (e["op"].clone(), e["code"].clone(), e["retryable"].clone()),
            (json!("error"), json!("WS_HOOK_FAILED"), json!(true)),
            "{bad}: {e}"
        );
    }
    send_text(&mut alice, "echo:still here").await;
    assert_eq!(next_text(&mut alice).await, "still here");
    let failed = activity_until(&app, "chat", "ws.hook.failed", |e| e.len() >= 3).await;
    let why: Vec<&str> = failed
        .iter()
        .filter_map(|e| e["data"]["why"].as_str())
        .collect();
    assert!(
        why.contains(&"timeout") && why.contains(&"status") && why.contains(&"body"),
        "{why:?}"
    );
    let asked = b.got();
    let m = asked.iter().find(|g| g["type"] == "message").unwrap();
    assert_eq!(
        (m["user"].as_str(), m["rooms"].clone()),
        (Some("alice"), json!(["lobby"]))
    );
    assert!(m["connection_id"].is_string());

    send_text(&mut bob, "bye").await;
    assert_eq!(closed_with(&mut bob).await, (4000, "bye".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hook_queue_is_busy_not_memory() {
    let app = spawn_app().await;
    let b = backend(|_| (204, None, 300)).await;
    chat(
        &app,
        &b,
        json!({"queue_per_connection": 1, "timeout_ms": 2000}),
        json!({"on_message": "hook"}),
    )
    .await;
    let mut c = connect(&app, "/ws/acme/chat").await;
    for i in 0..6 {
        send_text(&mut c, &format!("m{i}")).await;
    }
    let e = next_json(&mut c).await;
    assert_eq!(
        (e["code"].clone(), e["retryable"].clone()),
        (json!("WS_HOOK_BUSY"), json!(true)),
        "{e}"
    );
    // What was queued still reaches the backend, fewer than were sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = b.got().len();
    assert!((1..6).contains(&n), "{n} reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hooks_are_refused_and_the_address_policy_holds() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let bad = [
        (json!({"on_message": "hook"}), "hook needs hooks"),
        (
            json!({"hooks": {"url": "http://127.0.0.1:1/h"}}),
            "no secret",
        ),
        (
            json!({"hooks": {"url": "ftp://x/h", "secret": "{{ vars.k }}"}}),
            "scheme",
        ),
        (
            json!({"hooks": {"url": "http://x/h", "secret": "plain"}}),
            "secret not a reference",
        ),
        (
            json!({"hooks": {"url": "http://x/h", "secret": "{{ vars.k }}", "timeout_ms": 50}}),
            "timeout",
        ),
        (
            json!({"hooks": {"url": "http://x/h", "secret": "{{ vars.k }}", "max_in_flight": 0}}),
            "in flight",
        ),
    ];
    for (spec, why) in bad {
        let (s, v) = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "websocket", "slug": "w", "spec": spec}),
            )
            .await;
        assert_eq!(s.as_u16(), 422, "{why}: {v}");
    }
    let (s, _) = app.get("/api/acme/w").await;
    assert_eq!(s.as_u16(), 404, "nothing was made");

    // A backend where the policy refuses to go: the connect fails, 503.
    app.element(
        "acme",
        "variable",
        "k",
        json!({"value": KEY, "sensitive": true}),
    )
    .await;
    let hooks =
        json!({"url": "http://169.254.169.254/hook", "secret": "{{ vars.k }}", "connect": true});
    app.element(
        "acme",
        "websocket",
        "meta",
        json!({"path": "/meta", "hooks": hooks}),
    )
    .await;
    let (s, e) = refused(&app, "/ws/acme/meta", None).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (503, json!("WS_HOOK_FAILED")),
        "{e}"
    );
    // The client is not told where the backend is.
    assert!(!e.to_string().contains("169.254"), "{e}");
}

/// README's backend, run as written with python3: it checks signatures
/// with nothing but the standard library, admits and answers; with
/// another key it refuses, and the connect fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_backend_verifies_and_answers() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- backend.py -->\n```python\n")
        .expect("README's backend")
        + 30;
    let code = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.py"), code).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut py = std::process::Command::new("python3")
        .arg("backend.py")
        .current_dir(dir.path())
        .env("HOOK_KEY", KEY)
        .env("PORT", port.to_string())
        .spawn()
        .expect("python3");
    eventually("the backend listens", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let app = spawn_app().await;
    let b = Backend {
        url: format!("http://127.0.0.1:{port}/"),
        got: Arc::default(),
        ports: Arc::default(),
    };
    hooked_chat(&app, &b).await;
    let mut c = connect(&app, "/ws/acme/chat").await;
    send_text(&mut c, "hi").await;
    assert_eq!(next_text(&mut c).await, "you said hi");
    // Another key: the backend answers 401, so the connect fails.
    let other = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";
    let (s, v) = app
        .patch(
            "/api/acme/hook-key/ops/update",
            json!({"spec": {"value": other, "sensitive": true}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    eventually("the new key is in use", || async {
        matches!(
            refused_or_none(&app, "/ws/acme/chat").await,
            Some((503, code)) if code == "WS_HOOK_FAILED"
        )
    })
    .await;
    py.kill().unwrap();
    let _ = py.wait();
}

/// A refused handshake's status and code, or None when it was accepted.
async fn refused_or_none(app: &TestApp, path: &str) -> Option<(u16, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let url = ws_url(app, path);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(WsError::Http(resp)) => {
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .unwrap_or_default();
            Some((
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            ))
        }
        Err(e) => panic!("{e}"),
    }
}

/// `max_in_flight` connect hooks at once: one more upgrade is 503
/// `WS_HOOK_BUSY`; and with history, a hook's broadcast is a publication
/// with an offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hooks_in_flight_are_capped_and_hook_broadcasts_get_offsets() {
    let app = spawn_app().await;
    let b = backend(
        |asked| match (asked["type"].as_str(), query_of(asked).as_str()) {
            (Some("connect"), "slow") => (200, Some(json!({"allow": true})), 1_500),
            (Some("connect"), _) => (200, Some(json!({"allow": true})), 0),
            _ => {
                let m = asked["message"].clone();
                (
                    200,
                    Some(json!({"broadcast": {"message": m, "room": "lobby"}})),
                    0,
                )
            }
        },
    )
    .await;
    chat(
        &app,
        &b,
        json!({"connect": true, "max_in_flight": 1, "timeout_ms": 3000}),
        json!({"on_message": "hook", "history": {"size": 10}}),
    )
    .await;
    let url = ws_url(&app, "/ws/acme/chat?who=slow");
    let slow = tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.is_ok() });
    eventually("the slow connect is at the backend", || async {
        b.got.lock().unwrap().len() == 1
    })
    .await;
    let (s, e) = refused(&app, "/ws/acme/chat?who=next", None).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (503, json!("WS_HOOK_BUSY")),
        "{e}"
    );
    assert!(slow.await.unwrap(), "the first is admitted");

    let (mut c, chosen) =
        connect_protocols(&app, "/ws/acme/chat?who=ann&rooms=lobby", "elementd.v1").await;
    assert_eq!(chosen.as_deref(), Some("elementd.v1"));
    send_text(&mut c, "first").await;
    let m = next_json(&mut c).await;
    assert_eq!(
        (m["room"].clone(), m["offset"].clone(), m["data"].clone()),
        (json!("lobby"), json!(1), json!("first")),
        "{m}"
    );
    let (_, h) = app.get("/api/acme/chat/ops/history?room=lobby").await;
    assert_eq!(h["messages"][0]["data"], "first", "{h}");
}

/// A backend's answer over 1 MiB is refused unread: the client gets
/// `WS_HOOK_FAILED` (why: body) and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_a_mebibyte_is_refused() {
    let app = spawn_app().await;
    let b = backend(|asked| match asked["message"].as_str() {
        Some("big") => (200, Some(json!({"reply": "x".repeat(1_100_000)})), 0),
        _ => (200, Some(json!({"reply": "small"})), 0),
    })
    .await;
    chat(&app, &b, json!({}), json!({"on_message": "hook"})).await;
    let mut c = connect(&app, "/ws/acme/chat").await;
    send_text(&mut c, "big").await;
    let e = next_json(&mut c).await;
    assert_eq!(e["code"], "WS_HOOK_FAILED", "{e}");
    assert!(e["message"].as_str().unwrap().contains("1 MiB"), "{e}");
    send_text(&mut c, "again").await;
    assert_eq!(next_text(&mut c).await, "small");
    let failed = activity_until(&app, "chat", "ws.hook.failed", |e| !e.is_empty()).await;
    assert_eq!(failed[0]["data"]["why"], "body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_requests_reuse_their_connections() {
    let app = spawn_app().await;
    let b = backend(|asked| match asked["message"].as_str() {
        Some(text) => (200, Some(json!({"reply": text})), 0),
        None => (200, Some(json!({"allow": true})), 0),
    })
    .await;
    hooked_chat(&app, &b).await;
    let mut ws = connect(&app, "/ws/acme/chat?rooms=lobby").await;
    for n in 0..20 {
        send_text(&mut ws, &format!("m{n}")).await;
        assert_eq!(next_text(&mut ws).await, format!("m{n}"));
    }
    let _again = connect(&app, "/ws/acme/chat?rooms=lobby").await;
    wait_connections(&app, "acme", "chat", 2).await;
    let ports = b.ports.lock().unwrap().clone();
    assert_eq!(ports.len(), 22, "two connect hooks and 20 messages");
    let mut links = ports.clone();
    links.sort_unstable();
    links.dedup();
    // One request at a time: each finds the last one's connection idle.
    // A connection per request would make 22.
    assert!(
        links.len() <= 3,
        "{} connections for {ports:?}",
        links.len()
    );
}

/// A backend that answers one request per connection as HTTP/1.1 (so the
/// connection looks reusable) and then hangs up: the server closing an
/// idle connection, which a pooled link must survive.
async fn one_shot_backend() -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let accepted: Arc<Mutex<usize>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *a.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as it announces.
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body.to_string();
                    }
                };
                let asked: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let answer = json!({"reply": asked["message"]}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/"), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_backend_closed_is_not_a_failure() {
    let app = spawn_app().await;
    let (url, accepted) = one_shot_backend().await;
    let b = Backend {
        url,
        got: Arc::default(),
        ports: Arc::default(),
    };
    chat(&app, &b, json!({}), json!({"on_message": "hook"})).await;
    let mut ws = connect(&app, "/ws/acme/chat?rooms=lobby").await;
    for n in 0..3 {
        send_text(&mut ws, &format!("m{n}")).await;
        assert_eq!(next_text(&mut ws).await, format!("m{n}"));
        // The backend hangs up 50 ms after each answer.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(*accepted.lock().unwrap(), 3, "a new connection each time");
    let (_, v) = app
        .get("/api/acme/chat/ops/activity?type=ws.hook.failed")
        .await;
    assert_eq!(v["events"], json!([]), "{v}");
}
