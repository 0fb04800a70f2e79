//! Nothing lost (issue 22): room history with offsets, `elementd.v1`
//! envelopes and the `history` op. Recovery after a drop is in
//! ws_recover.rs.

use crate::helpers::*;
use crate::ws_client::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Circle acme and a websocket `feed` at `/feed` keeping `size` messages
/// per room.
pub async fn feed(app: &TestApp, size: usize) {
    ws_element(
        app,
        "feed",
        json!({"path": "/feed", "rooms": {"enabled": true}, "on_message": "room",
               "history": {"size": size, "ttl_s": 600}}),
    )
    .await;
}

pub async fn v1(app: &TestApp, query: &str) -> Client {
    let (c, chosen) =
        connect_protocols(app, &format!("/ws/acme/feed?{query}"), "elementd.v1").await;
    assert_eq!(chosen.as_deref(), Some("elementd.v1"));
    c
}

pub async fn publish(app: &TestApp, room: Option<&str>, message: &str) {
    let mut body = json!({"message": message});
    if let Some(r) = room {
        body["room"] = json!(r);
    }
    let (s, v) = app.post("/api/acme/feed/ops/broadcast", body).await;
    assert_eq!(s.as_u16(), 200, "{v}");
}

pub async fn history(app: &TestApp, query: &str) -> (u16, Value) {
    let (s, v) = app.get(&format!("/api/acme/feed/ops/history{query}")).await;
    (s.as_u16(), v)
}

/// `feed` keeping 5 per room, with an `elementd.v1` client and a plain
/// one in lobby, both registered.
async fn lobby(app: &TestApp) -> (Client, Client) {
    feed(app, 5).await;
    let env = v1(app, "rooms=lobby").await;
    let raw = connect(app, "/ws/acme/feed?rooms=lobby").await;
    wait_connections(app, "acme", "feed", 2).await;
    (env, raw)
}

/// Publishes m1..m`n` to lobby and reads them from `env`; returns the
/// stream's epoch.
pub async fn published(app: &TestApp, env: &mut Client, n: u64) -> String {
    for i in 1..=n {
        publish(app, Some("lobby"), &format!("m{i}")).await;
    }
    let mut epoch = String::new();
    for _ in 1..=n {
        epoch = next_json(env).await["epoch"].as_str().unwrap().to_string();
    }
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_get_rising_offsets_in_one_epoch() {
    let app = spawn_app().await;
    let (mut env, mut raw) = lobby(&app).await;
    for i in 1..=7 {
        publish(&app, Some("lobby"), &format!("m{i}")).await;
    }
    let first = next_json(&mut env).await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        first,
        json!({"room": "lobby", "offset": 1, "epoch": epoch, "data": "m1"})
    );
    for i in 2..=7 {
        let m = next_json(&mut env).await;
        assert_eq!(
            (m["offset"].clone(), m["data"].clone()),
            (json!(i), json!(format!("m{i}")))
        );
        assert_eq!(m["epoch"], epoch.as_str());
    }
    // A client without the subprotocol gets the messages as they were.
    for i in 1..=7 {
        assert_eq!(next_text(&mut raw).await, format!("m{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_op_reads_a_rooms_last_messages() {
    let app = spawn_app().await;
    let (mut env, _raw) = lobby(&app).await;
    let epoch = published(&app, &mut env, 7).await;
    // The room keeps its last 5.
    let (s, h) = history(&app, "?room=lobby").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        (h["epoch"].clone(), h["offset"].clone()),
        (json!(epoch), json!(7))
    );
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5, 6, 7]);
    assert_eq!(h["messages"][0]["data"], "m3");
    assert!(h["messages"][0]["published_at"].is_string());
    let (_, h) = history(&app, "?room=lobby&since=5").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
    let (_, h) = history(&app, "?room=lobby&limit=1").await;
    assert_eq!(h["messages"][0]["offset"], 3);
    // A room nobody published to has no stream yet.
    let (_, h) = history(&app, "?room=quiet").await;
    assert_eq!(
        (
            h["epoch"].clone(),
            h["offset"].clone(),
            h["messages"].clone()
        ),
        (Value::Null, json!(0), json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_no_room_are_the_stream_with_the_empty_name() {
    let app = spawn_app().await;
    let (mut env, mut raw) = lobby(&app).await;
    publish(&app, None, "to all").await;
    let m = next_json(&mut env).await;
    assert_eq!(
        (m["room"].clone(), m["offset"].clone(), m["data"].clone()),
        (json!(""), json!(1), json!("to all"))
    );
    assert_eq!(next_text(&mut raw).await, "to all");
    let (_, h) = history(&app, "").await;
    assert_eq!(h["messages"][0]["data"], "to all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_binary_message_is_base64_in_the_envelope() {
    let app = spawn_app().await;
    let (mut env, mut raw) = lobby(&app).await;
    published(&app, &mut env, 7).await;
    raw.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    let m = next_json(&mut env).await;
    assert_eq!(m["data"], json!({"base64": "AAEC/w=="}), "{m}");
    assert_eq!(m["offset"], 8, "the room's next offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_history_queries_and_sizes_are_refused() {
    let app = spawn_app().await;
    feed(&app, 5).await;
    for (q, code) in [
        ("?room=lobby&limit=0", "INVALID_LIMIT"),
        ("?room=lobby&limit=1001", "INVALID_LIMIT"),
        ("?room=lobby&limit=ten", "INVALID_LIMIT"),
        ("?room=lobby&since=-1", "INVALID_QUERY"),
        ("?room=a,b", "INVALID_ROOM"),
    ] {
        let (s, v) = history(&app, q).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (400, json!(code)),
            "{q}: {v}"
        );
    }
    let (s, v) = app
        .post("/api/acme/ops/create", json!({"element_type": "websocket", "slug": "huge", "spec": {"path": "/huge", "history": {"size": 10001}}}))
        .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].clone()),
        (422, json!("SPEC_INVALID")),
        "{v}"
    );
}

/// Without history, elementd.v1 is still chosen (browsers insist) and
/// changes nothing: the message comes as it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_the_subprotocol_changes_nothing() {
    let app = spawn_app().await;
    ws_element(&app, "plain", json!({"path": "/plain"})).await;
    let (mut p, chosen) = connect_protocols(&app, "/ws/acme/plain", "elementd.v1").await;
    assert_eq!(chosen.as_deref(), Some("elementd.v1"));
    wait_connections(&app, "acme", "plain", 1).await;
    let (s, _) = app
        .post("/api/acme/plain/ops/broadcast", json!({"message": "as is"}))
        .await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(next_text(&mut p).await, "as is");
    let (s, v) = app.get("/api/acme/plain/ops/history").await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].clone()),
        (409, json!("HISTORY_DISABLED")),
        "{v}"
    );
}
