//! A real WebSocket client (tokio-tungstenite) for the runtime tests.

use crate::helpers::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous: only to end a broken test, never a timing target.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn ws_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base.replacen("http://", "ws://", 1))
}

async fn handshake(
    app: &TestApp,
    path: &str,
    bearer: Option<&str>,
    protocols: Option<&str>,
) -> Result<Client, WsError> {
    let mut req = ws_url(app, path).into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
        .map(|(ws, _)| ws)
}

/// A circle `acme` with one websocket element.
pub async fn ws_element(app: &TestApp, slug: &str, spec: Value) {
    app.circle("acme").await;
    app.element("acme", "websocket", slug, spec).await;
}

pub async fn connect(app: &TestApp, path: &str) -> Client {
    handshake(app, path, None, None)
        .await
        .unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

/// Connects once a freed place is seen: with PostgreSQL, a closed
/// connection's presence row goes in the cluster's next batch, so the
/// shared count may lag the local one for a moment.
pub async fn connect_when_admitted(app: &TestApp, path: &str) -> Client {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        match handshake(app, path, None, None).await {
            Ok(c) => return c,
            Err(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {path}: {e}"),
        }
    }
}

pub async fn connect_bearer(app: &TestApp, path: &str, token: &str) -> Client {
    handshake(app, path, Some(token), None)
        .await
        .unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

/// Connects asking for subprotocols; answers the one the server chose.
pub async fn connect_protocols(app: &TestApp, path: &str, offer: &str) -> (Client, Option<String>) {
    let mut req = ws_url(app, path).into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(offer).unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

/// A refused handshake: its status and JSON body.
pub async fn refused(app: &TestApp, path: &str, bearer: Option<&str>) -> (u16, Value) {
    match handshake(app, path, bearer, None).await {
        Ok(_) => panic!("{path}: expected a refusal, got an upgrade"),
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("{path}: unexpected error {e}"),
    }
}

/// The next data frame (pings and pongs are skipped).
pub async fn next_msg(c: &mut Client) -> Message {
    loop {
        let m = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub async fn next_text(c: &mut Client) -> String {
    match next_msg(c).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn next_json(c: &mut Client) -> Value {
    serde_json::from_str(&next_text(c).await).unwrap()
}

/// Reads until the server's close frame, then on to the end so the
/// client's reply goes out; answers the frame's code and reason.
pub async fn closed_with(c: &mut Client) -> (u16, String) {
    let got = loop {
        let m = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("a close in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => break (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => break (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before a close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    };
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = c.next().await {} }).await;
    got
}

pub async fn send_text(c: &mut Client, s: &str) {
    c.send(Message::Text(s.into())).await.unwrap();
}

/// Polls `check` until it holds (a test of eventual state, not of speed).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// `connections` of an element.
pub async fn connections(
    app: &TestApp,
    circle: &str,
    slug: &str,
    room: Option<&str>,
) -> Vec<Value> {
    let q = room.map(|r| format!("?room={r}")).unwrap_or_default();
    let (s, v) = app
        .get(&format!("/api/{circle}/{slug}/ops/connections{q}"))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    v.as_array().expect("an array").clone()
}

/// Waits until the element holds `n` client connections; answers their
/// ids, oldest first.
pub async fn wait_connections(app: &TestApp, circle: &str, slug: &str, n: usize) -> Vec<String> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let ids: Vec<String> = connections(app, circle, slug, None)
            .await
            .iter()
            .filter(|c| c["kind"] == "client")
            .map(|c| c["connection_id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == n {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never reached {n} connection(s) on {slug}: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Activity of one element with a type prefix, newest first.
pub async fn activity(app: &TestApp, circle: &str, slug: &str, prefix: &str) -> Vec<Value> {
    let (_, v) = app
        .get(&format!(
            "/api/{circle}/{slug}/ops/activity?type={prefix}&limit=500"
        ))
        .await;
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until an element's activity of `prefix` satisfies `done`.
pub async fn activity_until(
    app: &TestApp,
    slug: &str,
    prefix: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let events = activity(app, "acme", slug, prefix).await;
        if done(&events) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "activity {prefix} never settled: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
