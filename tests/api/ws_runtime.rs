//! The websocket runtime over time: live reconfiguration, heartbeats,
//! slow clients, driven links, event streams, metrics and shutdown.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::server::Server;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

async fn chat(app: &TestApp, spec: serde_json::Value) {
    app.circle("acme").await;
    app.element("acme", "websocket", "chat", spec).await;
}

/// `acme/chat` with `spec`, and `acme/feed` at `/feed`.
async fn chat_and_feed(app: &TestApp, spec: serde_json::Value) {
    chat(app, spec).await;
    app.element("acme", "websocket", "feed", json!({"path": "/feed"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_unique_per_circle_and_a_refused_change_changes_nothing() {
    let app = spawn_app().await;
    chat_and_feed(&app, json!({})).await;
    let before = app.state_of("acme", "feed").await;
    assert_error(
        &app.patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"path": "/ws"}}),
        )
        .await,
        409,
        "PATH_CONFLICT",
    );
    assert_eq!(app.state_of("acme", "feed").await, before);
    assert_error(
        &app.post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "dup", "spec": {"path": "/feed"}}),
        )
        .await,
        409,
        "PATH_CONFLICT",
    );
}

/// Released, the endpoint moves: its clients are closed (1001) and
/// reconnect at the new path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_path_change_moves_the_endpoint_live() {
    let app = spawn_app().await;
    chat(&app, json!({})).await;
    let mut old = connect(&app, "/ws/acme/ws").await;
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"path": "/rooms/main"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    app.release("acme", "chat").await;
    assert_eq!(closed_with(&mut old).await, (1001, "endpoint moved".into()));
    assert_eq!(refused(&app, "/ws/acme/ws", None).await.0, 404);
    let _old = connect(&app, "/ws/acme/rooms/main").await;
    let _new = connect(&app, "/ws/acme/rooms/main").await;
    wait_connections(&app, "acme", "chat", 2).await;
}

/// Deleting needs no live connections; disabling closes them and keeps
/// the path reserved; enabled again, the endpoint serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_closes_clients_and_keeps_the_path_reserved() {
    let app = spawn_app().await;
    chat_and_feed(&app, json!({"path": "/rooms/main"})).await;
    let mut old = connect(&app, "/ws/acme/rooms/main").await;
    let mut new = connect(&app, "/ws/acme/rooms/main").await;
    wait_connections(&app, "acme", "chat", 2).await;
    assert_error(
        &app.delete("/api/acme/chat/ops/delete?confirm=true").await,
        409,
        "HAS_CONNECTIONS",
    );
    let (s, _) = app.post("/api/acme/chat/ops/disable", json!({})).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(closed_with(&mut old).await.0, 1001);
    assert_eq!(closed_with(&mut new).await.0, 1001);
    assert_eq!(refused(&app, "/ws/acme/rooms/main", None).await.0, 404);
    assert_error(
        &app.patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"path": "/rooms/main"}}),
        )
        .await,
        409,
        "PATH_CONFLICT",
    );
    app.post("/api/acme/chat/ops/enable", json!({})).await;
    let _again = connect(&app, "/ws/acme/rooms/main").await;
    wait_connections(&app, "acme", "chat", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_element_frees_its_path_and_its_series() {
    let app = spawn_app().await;
    chat_and_feed(&app, json!({"path": "/rooms/main"})).await;
    let _c = connect(&app, "/ws/acme/rooms/main").await;
    wait_connections(&app, "acme", "chat", 1).await;
    app.post("/api/acme/chat/ops/disable", json!({})).await;
    wait_connections(&app, "acme", "chat", 0).await;
    let (s, v) = app.delete("/api/acme/chat/ops/delete?confirm=true").await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let (_, stats) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(stats["metrics"]["connection_count"], 0);
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains(r#"slug="chat""#),
        "a deleted element's series are gone: {text}"
    );
    // Its path is free again.
    let (s, _) = app
        .patch(
            "/api/acme/feed/ops/update",
            json!({"spec": {"path": "/rooms/main"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200);
    app.release("acme", "feed").await;
    let _f = connect(&app, "/ws/acme/rooms/main").await;
    wait_connections(&app, "acme", "feed", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_drops_a_client_that_stops_answering() {
    let app = spawn_app().await;
    chat(
        &app,
        json!({"heartbeat": {"interval_ms": 100, "timeout_ms": 400}}),
    )
    .await;
    // This client never reads, so it never answers a ping.
    let _silent = connect(&app, "/ws/acme/ws").await;
    let silent_id = wait_connections(&app, "acme", "chat", 1).await.remove(0);
    let mut lively = connect(&app, "/ws/acme/ws").await;
    let reader = tokio::spawn(async move {
        // Reading answers pings; it ends when the test ends.
        while let Some(Ok(_)) = lively.next().await {}
    });
    let closed = activity_until(&app, "chat", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(closed[0]["data"]["connection_id"], silent_id.as_str());
    assert_eq!(closed[0]["data"]["reason"], "heartbeat timeout");
    // The answering client outlived several timeouts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left = wait_connections(&app, "acme", "chat", 1).await;
    assert_ne!(left[0], silent_id);
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_quiet_client() {
    let app = spawn_app().await;
    chat(
        &app,
        json!({"connection": {"idle_timeout_ms": 300}, "heartbeat": {"interval_ms": 100}}),
    )
    .await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    // Answering pings is not activity; only data messages are.
    assert_eq!(
        closed_with(&mut c).await,
        (1000, "idle timeout".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_hold_up_the_others() {
    let app = spawn_app().await;
    chat(
        &app,
        json!({"connection": {"send_queue": 4, "max_message_bytes": 1048576}}),
    )
    .await;
    let _stalled = connect(&app, "/ws/acme/ws").await;
    let stalled_id = wait_connections(&app, "acme", "chat", 1).await.remove(0);
    let mut fast = connect(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "chat", 2).await;
    // Each broadcast reaches the reading client while the stalled one's
    // socket buffers and queue fill up; then it is closed (1013).
    let body = "y".repeat(256 * 1024);
    for i in 0..96 {
        let (s, v) = app
            .post(
                "/api/acme/chat/ops/broadcast",
                json!({"message": format!("{i:08}{body}")}),
            )
            .await;
        assert_eq!(s.as_u16(), 200, "{v}");
        let got = next_text(&mut fast).await;
        assert_eq!(&got[..8], format!("{i:08}"), "in order, none lost");
    }
    let left = wait_connections(&app, "acme", "chat", 1).await;
    assert_ne!(left[0], stalled_id, "the stalled client was closed");
    let (_, stats) = app.get("/api/acme/chat/ops/stats").await;
    assert!(
        stats["metrics"]["slow_client_count"].as_u64() >= Some(1),
        "{stats}"
    );
    let closed = activity_until(&app, "chat", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(closed[0]["data"]["code"], 1013);
    assert_eq!(closed[0]["data"]["error"]["code"], "WS_SEND_QUEUE_FULL");
}

/// A local echo server for driven mode; answers its port and a handle
/// that stops it (closing its connections).
async fn echo_server(port: u16) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws
                            .send(Message::text(format!("echo:{}", m.to_text().unwrap_or(""))))
                            .await;
                    }
                }
            });
        }
    });
    (port, task)
}

async fn link_state(app: &TestApp) -> String {
    let list = connections(app, "acme", "link", None).await;
    list[0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driven_link_reconnects_after_the_server_goes_away() {
    let app = spawn_app().await;
    let (port, server) = echo_server(0).await;
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "link",
        json!({"url": format!("ws://127.0.0.1:{port}/feed"), "heartbeat": {"interval_ms": 200, "timeout_ms": 1000}}),
    )
    .await;
    let mut sse = crate::events::SseReader::open(&app, "/api/acme/link/ops/events", None).await;
    eventually("link open", || async { link_state(&app).await == "open" }).await;
    let (s, v) = app
        .post("/api/acme/link/ops/send", json!({"message": "one"}))
        .await;
    assert_eq!(
        (s.as_u16(), v["connection_id"].as_str()),
        (200, Some("link")),
        "{v}"
    );
    loop {
        let (_, kind, e) = sse.next().await;
        if kind == "ws.message.received" {
            assert_eq!(
                (
                    e["data"]["message"].as_str(),
                    e["data"]["connection_id"].as_str()
                ),
                (Some("echo:one"), Some("link"))
            );
            break;
        }
    }
    // The server goes away: sends fail, test-connection says why.
    server.abort();
    let _ = server.await;
    eventually("link down", || async { link_state(&app).await != "open" }).await;
    assert_error(
        &app.post("/api/acme/link/ops/send", json!({"message": "lost"}))
            .await,
        502,
        "WS_CONNECTION_FAILED",
    );
    eventually("a failed attempt", || async {
        let (_, v) = app
            .post("/api/acme/link/ops/test-connection", json!({}))
            .await;
        v["success"] == false
            && v["errors"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("WS_CONNECTION_FAILED")
    })
    .await;
    // It comes back on the same port; the link reconnects by itself.
    let (_, server) = echo_server(port).await;
    eventually("link open again", || async {
        link_state(&app).await == "open"
    })
    .await;
    let (s, _) = app
        .post("/api/acme/link/ops/send", json!({"message": "two"}))
        .await;
    assert_eq!(s.as_u16(), 200);
    loop {
        let (_, kind, e) = sse.next().await;
        if kind == "ws.message.received" && e["data"]["message"] == "echo:two" {
            break;
        }
    }
    let opened = activity(&app, "acme", "link", "ws.connection.opened").await;
    let live = opened.iter().filter(|e| e["data"]["env"] == "live").count();
    assert_eq!(live, 2, "live's link opened twice: {opened:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_link_that_fails_its_handshake_is_reported() {
    let app = spawn_app().await;
    // Accepts TCP and hangs up: the TLS handshake fails, the link backs off.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "link",
        json!({"url": format!("wss://127.0.0.1:{port}/")}),
    )
    .await;
    eventually("the failure is reported", || async {
        let (_, v) = app
            .post("/api/acme/link/ops/test-connection", json!({}))
            .await;
        v["success"] == false && v["link"]["attempts"].as_u64() >= Some(2)
    })
    .await;
    // Each environment runs its own link; live's is the one asked about.
    let live = |e: &serde_json::Value| e["data"]["env"] == "live";
    let rejected = activity_until(&app, "link", "ws.connection.rejected", |e| {
        e.iter().any(live)
    })
    .await;
    let rejected: Vec<_> = rejected.into_iter().filter(live).collect();
    assert_eq!(rejected.len(), 1, "one event per streak of failures");
    assert_eq!(rejected[0]["data"]["code"], "WS_CONNECTION_FAILED");
    assert_error(
        &app.post("/api/acme/link/ops/send", json!({"message": "x"}))
            .await,
        502,
        "WS_CONNECTION_FAILED",
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_carries_ws_events_in_order_and_activity_is_sampled() {
    let app = spawn_app().await;
    chat(&app, json!({})).await;
    let mut sse = crate::events::SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    const N: usize = 40;
    for i in 0..N {
        send_text(&mut c, &format!("m{i}")).await;
    }
    send_text(&mut c, &"z".repeat(10_000)).await;
    c.close(None).await.unwrap();
    let mut kinds = Vec::new();
    let mut messages = Vec::new();
    while kinds.last().map(String::as_str) != Some("ws.connection.closed") {
        let (_, kind, e) = sse.next().await;
        if kind == "ws.message.received" {
            messages.push(e["data"].clone());
        }
        kinds.push(kind);
    }
    assert_eq!(kinds[0], "ws.connection.opened");
    assert_eq!(messages.len(), N + 1, "the live stream has every message");
    for (i, m) in messages.iter().take(N).enumerate() {
        assert_eq!(m["message"], format!("m{i}"));
    }
    let big = &messages[N];
    assert_eq!(
        (big["bytes"].as_u64(), big["truncated"].as_bool()),
        (Some(10_000), Some(true))
    );
    assert_eq!(big["message"].as_str().unwrap().len(), 4096);
    let stored = activity(&app, "acme", "chat", "ws.message.received").await;
    assert!(
        !stored.is_empty() && stored.len() < N,
        "activity is sampled: {} of {}",
        stored.len(),
        N + 1
    );
    let skipped: u64 = stored
        .iter()
        .map(|e| e["data"]["unpersisted_before"].as_u64().unwrap())
        .sum();
    assert!(skipped as usize + stored.len() <= N + 1);
    assert_eq!(
        activity(&app, "acme", "chat", "ws.connection.").await.len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_stats_and_prometheus() {
    let app = spawn_app().await;
    chat(&app, json!({"on_message": "echo"})).await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    send_text(&mut c, "hi").await;
    assert_eq!(next_text(&mut c).await, "hi");
    app.post("/api/acme/chat/ops/broadcast", json!({"message": "b"}))
        .await;
    assert_eq!(next_text(&mut c).await, "b");
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    let m = &s["metrics"];
    for (name, want) in [
        ("connection_count", 1),
        ("active_connections", 1),
        ("message_sent_count", 2),
        ("broadcast_count", 1),
        ("broadcast_recipients", 1),
        ("disconnect_count", 0),
        ("message_received_count", 1),
    ] {
        assert_eq!(m[name], want, "{name} in {m}");
    }
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("circle") == Some("acme")
                    && s.labels.get("slug") == Some("chat")
                    && s.labels.get("env") == Some("live")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(value("elementd_ws_connection_count"), 1.0);
    assert_eq!(value("elementd_ws_active_connections"), 1.0);
    assert_eq!(value("elementd_ws_message_sent_count"), 2.0);
    c.close(None).await.unwrap();
    wait_connections(&app, "acme", "chat", 0).await;
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        (
            s["metrics"]["active_connections"].as_i64(),
            s["metrics"]["disconnect_count"].as_i64()
        ),
        (Some(0), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_1001() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    let server = Server::start(config.clone()).await.unwrap();
    let admin = server.admin_token.clone().unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/ops/create",
            json!({"element_type": "circle", "slug": "acme"}),
        ),
        (
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "chat"}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let url = format!("ws://{}/ws/acme/ws", server.addr);
    let (mut c, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let stop = tokio::spawn(server.stop());
    assert_eq!(closed_with(&mut c).await.0, 1001);
    drop(c);
    tokio::time::timeout(WAIT, stop)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
    // Restarted on the same data, the element is live again.
    let server = Server::start(config).await.unwrap();
    let url = format!("ws://{}/ws/acme/ws", server.addr);
    let (_c, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    drop(pg);
}
