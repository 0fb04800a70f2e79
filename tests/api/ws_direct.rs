//! A websocket handshake whose head arrives whole is answered before
//! hyper (src/api/direct.rs); one split over packets, or with an escaped
//! path, goes through hyper and the router. Both ways must agree: the
//! same 101, the same refusals, a socket that works after.

use crate::helpers::*;
use crate::ws_client::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn head(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// Sends `head` whole, or in two writes 100 ms apart; reads the answer's
/// head (and a refusal's body, up to the close).
async fn send(app: &TestApp, head: &str, split: bool) -> (TcpStream, u16, String) {
    match split {
        true => {
            let (a, b) = head.split_at(head.len() / 2);
            send_parts(app, &[a.as_bytes(), b.as_bytes()]).await
        }
        false => send_parts(app, &[head.as_bytes()]).await,
    }
}

/// [`send`] of any bytes in one write.
async fn send_bytes(app: &TestApp, bytes: &[u8]) -> (TcpStream, u16, String) {
    send_parts(app, &[bytes]).await
}

async fn send_parts(app: &TestApp, parts: &[&[u8]]) -> (TcpStream, u16, String) {
    let mut s = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.write_all(part).await.unwrap();
    }
    // Byte by byte up to the blank line: nothing of what follows is taken.
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed before the head ended: {got:?}");
        got.push(b[0]);
    }
    let text = String::from_utf8(got).unwrap();
    let status = text[9..12].parse().unwrap();
    (s, status, text)
}

/// A header's value; names match in any case.
fn header<'t>(head: &'t str, name: &str) -> Option<&'t str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_the_same_whichever_way_its_head_arrives() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/chat", "on_message": "echo"})).await;
    let offer = "Sec-WebSocket-Protocol: nope, elementd.v1\r\n";
    for (target, split) in [
        ("/ws/acme/chat", false),
        ("/ws/acme/chat", true),
        // Escaped: the router decodes it.
        ("/ws/acme/ch%61t", false),
    ] {
        let (s, status, text) = send(&app, &head(target, offer), split).await;
        assert_eq!(status, 101, "{target} {split}: {text}");
        assert_eq!(
            header(&text, "sec-websocket-accept"),
            Some(derive_accept_key(KEY.as_bytes()).as_str()),
            "{text}"
        );
        assert_eq!(header(&text, "upgrade"), Some("websocket"), "{text}");
        assert_eq!(
            header(&text, "sec-websocket-protocol"),
            Some("elementd.v1"),
            "{text}"
        );
        assert!(header(&text, "date").is_some(), "{text}");
        let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
        ws.send(Message::text("hello")).await.unwrap();
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text("hello"), "{target} {split}");
    }
    // Both ways in record the connection.
    let events = app
        .get("/api/acme/chat/ops/activity?type=ws.connection.opened")
        .await;
    let n = events.1["events"].as_array().map_or(0, Vec::len);
    assert!(n >= 3, "{events:?}");
}

/// A client's masked text frame, as it goes on the wire.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_arrive_with_the_head_are_kept() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/chat", "on_message": "echo"})).await;
    // An eager client writes its first frames in the same packet as the
    // head, before the 101: the direct way reads past the head, and what
    // it read must reach the connection in order.
    let mut bytes = head("/ws/acme/chat", "").into_bytes();
    bytes.extend(masked_text("early"));
    bytes.extend(masked_text("second"));
    let (s, status, text) = send_bytes(&app, &bytes).await;
    assert_eq!(status, 101, "{text}");
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
    for want in ["early", "second"] {
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text(want));
    }
    ws.send(Message::text("later")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_the_same_whichever_way_its_head_arrives() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"path": "/chat", "auth": {"mode": "token", "query_param": "t"}}),
    )
    .await;
    for (target, code, status) in [
        ("/ws/acme/nowhere", "WS_ENDPOINT_NOT_FOUND", 404),
        ("/ws/acme/chat?t=edt_wrong", "UNAUTHORIZED", 401),
    ] {
        let mut answers = Vec::new();
        for split in [false, true] {
            let (mut s, got, text) = send(&app, &head(target, ""), split).await;
            assert_eq!(got, status, "{target} {split}: {text}");
            let len: usize = header(&text, "content-length").unwrap().parse().unwrap();
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], code, "{target} {split}: {body}");
            assert_eq!(
                header(&text, "content-type"),
                Some("application/json"),
                "{text}"
            );
            answers.push(body);
        }
        assert_eq!(answers[0], answers[1], "{target}");
    }
    // A whole head refused here is closed after its answer.
    let (mut s, status, text) = send(&app, &head("/ws/acme/nowhere", ""), false).await;
    assert_eq!(status, 404);
    assert_eq!(header(&text, "connection"), Some("close"), "{text}");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert!(rest.ends_with(b"}"), "only the body followed: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_plain_upgrade_still_gets_hypers_answers() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"path": "/chat"})).await;
    // Not an upgrade at all: the contract's 426.
    let (_, status, text) =
        send(&app, "GET /ws/acme/chat HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert_eq!(status, 426, "{text}");
    // A bad key, whole or split: the same 400.
    for split in [false, true] {
        let bad = head("/ws/acme/chat", "").replace(KEY, "short");
        let (_, status, text) = send(&app, &bad, split).await;
        assert_eq!(status, 400, "{split}: {text}");
    }
    // A silent client is dropped at the header timeout, unanswered.
    let mut s = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b))
        .await
        .expect("closed within the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent to a client that sent nothing");
}
