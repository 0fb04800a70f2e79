//! Connection caps: per client address (HTTP and websocket together), per
//! node for websockets, and the operator's clamp on an element's
//! `max_connections` (README "Security").

use crate::helpers::*;
use crate::ws_client::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn server_addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A websocket handshake from the local address `from`.
async fn handshake_from(
    app: &TestApp,
    from: &str,
    path: &str,
) -> Result<WsClientFrom, (u16, Value)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let tcp = socket.connect(server_addr(app)).await.unwrap();
    let req = ws_url(app, path).into_client_request().unwrap();
    let r = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake in time");
    match r {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err((
            resp.status().as_u16(),
            serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null),
        )),
        Err(e) => panic!("handshake from {from}: {e}"),
    }
}

type WsClientFrom = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn http_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn assert_envelope(got: &(u16, Value), status: u16, code: &str) {
    let (s, v) = got;
    assert_eq!(*s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["class"], "limit", "{v}");
    assert_eq!(v["error"]["retryable"], true, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

async fn echo(ws: &mut WsClientFrom, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an echo in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            assert_eq!(t.as_str(), text);
            return;
        }
    }
}

/// Issue: one client opened 4,067 connections and used every file
/// descriptor, and every tenant's REST, git and healthz failed. Now one
/// address holds at most ELEMENTD_MAX_CONNECTIONS_PER_IP sockets (here
/// 4), websockets included, and past it gets 429; another address is
/// served as usual, REST and websocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_past_its_cap_is_refused_and_others_are_served() {
    let app = spawn_app_with(|c| c.limits.max_connections_per_ip = 4).await;
    ws_element(&app, "echo", json!({"on_message": "echo"})).await;
    // The harness's own REST client (127.0.0.1) may keep a connection
    // or two; the cap counts them too.
    let mut held = Vec::new();
    let refusal = loop {
        match handshake_from(&app, "127.0.0.1", "/ws/acme/ws").await {
            Ok(ws) => held.push(ws),
            Err(refused) => break refused,
        }
        assert!(held.len() <= 4, "more than the cap admitted");
    };
    assert!(!held.is_empty());
    assert_envelope(&refusal, 429, "TOO_MANY_CONNECTIONS");
    // Plain HTTP from the same address is refused alike.
    let r = http_from("127.0.0.1")
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_envelope(&(status, body), 429, "TOO_MANY_CONNECTIONS");

    // 127.0.0.2 is another client: REST, health and websocket work.
    let other = http_from("127.0.0.2");
    let r = other
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = other
        .get(format!("{}/api/acme/echo", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut ws = handshake_from(&app, "127.0.0.2", "/ws/acme/ws")
        .await
        .expect("127.0.0.2 upgrades");
    echo(&mut ws, "from another address").await;
    echo(&mut held[0], "and the first ones still work").await;

    // A closed socket gives its place back.
    drop(held.pop());
    let end = tokio::time::Instant::now() + WAIT;
    let mut again = loop {
        match handshake_from(&app, "127.0.0.1", "/ws/acme/ws").await {
            Ok(ws) => break ws,
            Err(_) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("no place freed for 127.0.0.1: {e:?}"),
        }
    };
    echo(&mut again, "back").await;
}

/// The node's websocket cap (here 2, ELEMENTD_MAX_WS_CONNECTIONS) holds
/// across elements: past it, an upgrade gets 503 SERVER_BUSY, and REST
/// is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_websocket_cap_answers_503_and_rest_goes_on() {
    let app = spawn_app_with(|c| c.limits.max_ws_connections = 2).await;
    ws_element(&app, "one", json!({"path": "/one"})).await;
    app.element("acme", "websocket", "two", json!({"path": "/two"}))
        .await;
    let _a = connect(&app, "/ws/acme/one").await;
    let _b = connect(&app, "/ws/acme/two").await;
    let (status, body) = refused(&app, "/ws/acme/one", None).await;
    assert_envelope(&(status, body), 503, "SERVER_BUSY");
    let (s, v) = app.get("/api/acme/one").await;
    assert_eq!(s.as_u16(), 200, "{v}");
    drop(_a);
    connect_when_admitted(&app, "/ws/acme/two").await;
}

/// ELEMENTD_MAX_WS_CONNECTIONS_PER_ELEMENT clamps what a spec asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_clamps_an_elements_max_connections() {
    let app = spawn_app_with(|c| c.limits.max_ws_connections_per_element = 1).await;
    ws_element(
        &app,
        "chat",
        json!({"connection": {"max_connections": 100}}),
    )
    .await;
    let _a = connect(&app, "/ws/acme/ws").await;
    let (status, body) = refused(&app, "/ws/acme/ws", None).await;
    assert_envelope(&(status, body), 503, "WS_MAX_CONNECTIONS_REACHED");
}
