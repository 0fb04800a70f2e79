//! The websocket runtime: upgrade, auth, rooms, send/broadcast/close,
//! limits and on_message, with real WebSocket clients.

use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_auth_failures_are_refused_and_recorded() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"auth": {"mode": "token", "query_param": "t"}}),
    )
    .await;
    app.circle("other").await;
    let foreign = app.token("other", Role::Admin).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let member = app.token("acme", Role::Member).await;
    let (revoked_row, revoked) = app
        .db
        .create_token("acme", Role::Admin, "gone", None)
        .await
        .unwrap();
    app.db.revoke_token(&revoked_row.id).await.unwrap();
    let mut live = crate::events::SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    let cases = [
        (
            refused(&app, "/ws/acme/ws", None).await,
            401,
            "UNAUTHORIZED",
        ),
        (
            refused(&app, "/ws/acme/ws?t=nope", None).await,
            401,
            "UNAUTHORIZED",
        ),
        (
            refused(&app, "/ws/acme/ws", Some("nope")).await,
            401,
            "UNAUTHORIZED",
        ),
        (
            refused(&app, &format!("/ws/acme/ws?t={revoked}"), None).await,
            401,
            "UNAUTHORIZED",
        ),
        (
            // Another circle's token learns nothing: as for an unknown path.
            refused(&app, &format!("/ws/acme/ws?t={foreign}"), None).await,
            404,
            "WS_ENDPOINT_NOT_FOUND",
        ),
        (
            refused(&app, "/ws/acme/ws?rooms=a", Some(&viewer)).await,
            400,
            "ROOMS_DISABLED",
        ),
    ];
    for (got, status, code) in &cases {
        assert_eq!(got.0, *status, "{}", got.1);
        assert_eq!(got.1["error"]["code"], *code, "{}", got.1);
    }
    // Not a rejection of this element: no such path, or no upgrade.
    let nowhere = refused(&app, "/ws/acme/nowhere", None).await;
    assert_eq!(nowhere.0, 404);
    assert_eq!(
        nowhere.1, cases[4].0 .1,
        "a foreign token and a missing path look alike"
    );
    let (s, v) = app.get("/ws/acme/ws").await;
    assert_error(&(s, v.clone()), 426, "UPGRADE_REQUIRED");
    let (s, v) = app.post("/api/acme/chat/ops/accept", json!({})).await;
    assert_error(&(s, v.clone()), 426, "UPGRADE_REQUIRED");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/ws/acme/ws"),
        "{v}"
    );
    // Viewer is enough, by query parameter or bearer header.
    let _a = connect(&app, &format!("/ws/acme/ws?t={viewer}")).await;
    let _b = connect_bearer(&app, "/ws/acme/ws", &member).await;
    wait_connections(&app, "acme", "chat", 2).await;
    // Every refusal is a live event; the activity table keeps a sample.
    let mut got = Vec::new();
    while got.len() < cases.len() {
        let e = live.next_of("ws.connection.rejected").await;
        got.push((
            e["data"]["status"].as_u64().unwrap(),
            e["data"]["code"].as_str().unwrap().to_string(),
        ));
    }
    let want: Vec<(u64, String)> = cases
        .iter()
        .map(|(_, s, c)| (*s as u64, c.to_string()))
        .collect();
    let kept = activity(&app, "acme", "chat", "ws.connection.rejected").await;
    assert!(!kept.is_empty() && kept.len() <= cases.len(), "{kept:?}");
    assert_eq!(got, want, "one rejected event per refusal, in order");
    let opened = activity(&app, "acme", "chat", "ws.connection.opened").await;
    assert_eq!(opened.len(), 2);
    assert_eq!(opened[0]["actor"]["kind"], "token");
}

/// `acme/chat` with rooms (2 per connection at most), and clients in
/// red, in red and blue, and in none.
async fn red_both_none(app: &TestApp) -> (Client, Client, Client) {
    ws_element(
        app,
        "chat",
        json!({"rooms": {"enabled": true, "max_rooms_per_connection": 2}}),
    )
    .await;
    let red = connect(app, "/ws/acme/ws?rooms=red").await;
    let both = connect(app, "/ws/acme/ws?rooms=red,blue").await;
    // No waiting: a connection is registered before its 101 goes out.
    let none = connect(app, "/ws/acme/ws").await;
    (red, both, none)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_all_or_one_room() {
    let app = spawn_app().await;
    let (mut red, mut both, mut none) = red_both_none(&app).await;
    let (s, b) = app
        .post("/api/acme/chat/ops/broadcast", json!({"message": "all"}))
        .await;
    assert_eq!(s.as_u16(), 200, "{b}");
    assert_eq!(
        (
            b["broadcast"].clone(),
            b["delivered_to"].clone(),
            b["subscriber_count"].clone()
        ),
        (json!(true), json!(3), json!(3))
    );
    for c in [&mut red, &mut both, &mut none] {
        assert_eq!(next_text(c).await, "all");
    }
    let (_, b) = app
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": {"n": 1}, "room": "red"}),
        )
        .await;
    assert_eq!(
        (b["delivered_to"].as_u64(), b["subscriber_count"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(next_json(&mut red).await, json!({"n": 1}));
    assert_eq!(next_json(&mut both).await, json!({"n": 1}));
    // Each broadcast is recorded, newest first.
    let done = activity(&app, "acme", "chat", "ws.broadcast.completed").await;
    assert_eq!(done.len(), 2);
    assert_eq!(done[1]["data"]["delivered_to"], 3);
    assert_eq!(done[1]["op"], "broadcast");
}

/// Join and leave by frame; the server acknowledges, and the room's
/// audience follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_by_frame_change_who_a_room_reaches() {
    let app = spawn_app().await;
    let (_red, mut both, mut none) = red_both_none(&app).await;
    send_text(&mut none, r#"{"op":"join","room":"blue"}"#).await;
    let ack = next_json(&mut none).await;
    assert_eq!(
        (ack["op"].as_str(), ack["rooms"].clone()),
        (Some("joined"), json!(["blue"]))
    );
    let (_, b) = app
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "b", "room": "blue"}),
        )
        .await;
    assert_eq!(b["delivered_to"], 2);
    assert_eq!(next_text(&mut none).await, "b");
    assert_eq!(next_text(&mut both).await, "b");
    let in_blue = connections(&app, "acme", "chat", Some("blue")).await;
    assert_eq!(in_blue.len(), 2);
    send_text(&mut both, r#"{"op":"leave","room":"blue"}"#).await;
    assert_eq!(next_json(&mut both).await["rooms"], json!(["red"]));
    let (_, b) = app
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "b2", "room": "blue"}),
        )
        .await;
    assert_eq!(b["delivered_to"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_past_the_rooms_cap_is_refused_in_band() {
    let app = spawn_app().await;
    let (mut red, _both, _none) = red_both_none(&app).await;
    send_text(&mut red, r#"{"op":"join","room":"a"}"#).await;
    send_text(&mut red, r#"{"op":"join","room":"b"}"#).await;
    assert_eq!(next_json(&mut red).await["op"], "joined");
    let err = next_json(&mut red).await;
    assert_eq!(
        (err["op"].as_str(), err["code"].as_str()),
        (Some("error"), Some("TOO_MANY_ROOMS"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_an_empty_audience_is_a_success() {
    let app = spawn_app().await;
    let _clients = red_both_none(&app).await;
    let (s, b) = app
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "x", "room": "empty"}),
        )
        .await;
    assert_eq!(
        (
            s.as_u16(),
            b["delivered_to"].as_u64(),
            b["subscriber_count"].as_u64()
        ),
        (200, Some(0), Some(0))
    );
}

/// Too many rooms at connect, bad room names, bad bodies: refused,
/// changing and recording nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rooms_and_broadcast_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let _clients = red_both_none(&app).await;
    assert_eq!(
        refused(&app, "/ws/acme/ws?rooms=a,b,c", None).await.1["error"]["code"],
        "TOO_MANY_ROOMS"
    );
    assert_eq!(
        refused(&app, "/ws/acme/ws?rooms=a%01", None).await.1["error"]["code"],
        "INVALID_ROOM"
    );
    let before = app.state_of("acme", "chat").await;
    for (body, status, code) in [
        (json!({}), 400, "MISSING_FIELD"),
        (json!({"message": "x", "extra": 1}), 400, "INVALID_BODY"),
        (json!({"message": "x", "room": ""}), 400, "INVALID_ROOM"),
        (
            json!({"message": "x".repeat(70_000)}),
            413,
            "WS_MESSAGE_TOO_LARGE",
        ),
    ] {
        assert_error(
            &app.post("/api/acme/chat/ops/broadcast", body).await,
            status,
            code,
        );
    }
    assert_eq!(app.state_of("acme", "chat").await, before);
    let done = activity(&app, "acme", "chat", "ws.broadcast.completed").await;
    assert!(done.is_empty(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_with_room_needs_rooms_enabled() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    assert_error(
        &app.post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "x", "room": "r"}),
        )
        .await,
        400,
        "ROOMS_DISABLED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_one_and_refuses_closed_ids() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"connection": {"max_message_bytes": 64}}),
    )
    .await;
    let mut a = connect(&app, "/ws/acme/ws").await;
    let ids = wait_connections(&app, "acme", "chat", 1).await;
    let mut b = connect(&app, "/ws/acme/ws").await;
    let ids_ab = wait_connections(&app, "acme", "chat", 2).await;
    assert_eq!(ids_ab[0], ids[0]);
    let (a_id, b_id) = (ids_ab[0].clone(), ids_ab[1].clone());
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": b_id, "message": "just b"}),
        )
        .await;
    assert_eq!((s.as_u16(), v["sent"].clone()), (200, json!(true)), "{v}");
    assert_eq!(next_text(&mut b).await, "just b");
    app.post(
        "/api/acme/chat/ops/send",
        json!({"connection_id": a_id, "message": [1, "two"]}),
    )
    .await;
    assert_eq!(
        next_text(&mut a).await,
        r#"[1,"two"]"#,
        "JSON goes out serialized"
    );
    let before = app.state_of("acme", "chat").await;
    for (body, status, code) in [
        (
            json!({"connection_id": "c_nope", "message": "x"}),
            404,
            "WS_CONNECTION_NOT_FOUND",
        ),
        (json!({"message": "x"}), 400, "MISSING_FIELD"),
        (json!({"connection_id": a_id}), 400, "MISSING_FIELD"),
        (
            json!({"connection_id": a_id, "message": "x", "to": 1}),
            400,
            "INVALID_BODY",
        ),
        (
            json!({"connection_id": a_id, "message": "x".repeat(65)}),
            413,
            "WS_MESSAGE_TOO_LARGE",
        ),
    ] {
        assert_error(
            &app.post("/api/acme/chat/ops/send", body).await,
            status,
            code,
        );
    }
    assert_eq!(app.state_of("acme", "chat").await, before);
    a.close(None).await.unwrap();
    wait_connections(&app, "acme", "chat", 1).await;
    assert_error(
        &app.post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": a_id, "message": "x"}),
        )
        .await,
        404,
        "WS_CONNECTION_NOT_FOUND",
    );
    let c = connections(&app, "acme", "chat", None).await;
    assert_eq!(c[0]["connection_id"], b_id.as_str());
    assert_eq!(c[0]["messages_out"], 1);
    assert!(c[0]["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    chrono::DateTime::parse_from_rfc3339(c[0]["connected_at"].as_str().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_code_and_reason() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let mut a = connect(&app, "/ws/acme/ws").await;
    let id = wait_connections(&app, "acme", "chat", 1).await.remove(0);
    for (body, code) in [
        (
            json!({"connection_id": id, "code": 1005}),
            "INVALID_CLOSE_CODE",
        ),
        (
            json!({"connection_id": id, "code": 2999}),
            "INVALID_CLOSE_CODE",
        ),
        (
            json!({"connection_id": id, "reason": "r".repeat(124)}),
            "INVALID_CLOSE_REASON",
        ),
        (json!({"code": 4000}), "MISSING_FIELD"),
    ] {
        assert_error(&app.post("/api/acme/chat/ops/close", body).await, 400, code);
    }
    assert_error(
        &app.get("/api/acme/chat/ops/connections?room=%01").await,
        400,
        "INVALID_ROOM",
    );
    assert_eq!(
        connections(&app, "acme", "chat", None).await.len(),
        1,
        "still open"
    );
    // What was sent before the close arrives before it.
    app.post(
        "/api/acme/chat/ops/send",
        json!({"connection_id": id, "message": "last words"}),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/close",
            json!({"connection_id": id, "code": 4001, "reason": "bye now"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(next_text(&mut a).await, "last words");
    assert_eq!(closed_with(&mut a).await, (4001, "bye now".to_string()));
    wait_connections(&app, "acme", "chat", 0).await;
    assert_error(
        &app.post("/api/acme/chat/ops/close", json!({"connection_id": id}))
            .await,
        404,
        "WS_CONNECTION_NOT_FOUND",
    );
    let closed = activity_until(&app, "chat", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(
        (
            closed[0]["data"]["code"].as_u64(),
            closed[0]["data"]["closed_by"].as_str()
        ),
        (Some(4001), Some("server"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_before_upgrade() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({"max_connections": 2})).await;
    let _a = connect(&app, "/ws/acme/ws").await;
    let mut b = connect(&app, "/ws/acme/ws").await;
    let (status, body) = refused(&app, "/ws/acme/ws", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "WS_MAX_CONNECTIONS_REACHED");
    assert_eq!(body["error"]["retryable"], true);
    let rejected = activity(&app, "acme", "chat", "ws.connection.rejected").await;
    assert_eq!(rejected[0]["data"]["code"], "WS_MAX_CONNECTIONS_REACHED");
    b.close(None).await.unwrap();
    wait_connections(&app, "acme", "chat", 1).await;
    let _c = connect_when_admitted(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "chat", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_1009_and_bad_utf8_1007() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"connection": {"max_message_bytes": 1024}}),
    )
    .await;
    let mut a = connect(&app, "/ws/acme/ws").await;
    a.send(Message::Text("x".repeat(2000).into()))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut a).await.0, 1009);
    let mut b = connect(&app, "/ws/acme/ws").await;
    let bad = Frame::message(vec![b'a', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    b.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(closed_with(&mut b).await.0, 1007);
    wait_connections(&app, "acme", "chat", 0).await;
    let closed = activity_until(&app, "chat", "ws.connection.closed", |e| e.len() == 2).await;
    let too_big = closed
        .iter()
        .find(|e| e["data"]["code"] == 1009)
        .expect("a 1009 close");
    assert_eq!(too_big["data"]["error"]["code"], "WS_MESSAGE_TOO_LARGE");
    assert!(closed.iter().any(|e| e["data"]["code"] == 1007));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_message_modes() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"on_message": "echo", "rooms": {"enabled": true}}),
    )
    .await;
    let mut a = connect(&app, "/ws/acme/ws?rooms=red").await;
    let ids = wait_connections(&app, "acme", "chat", 1).await;
    let mut b = connect(&app, "/ws/acme/ws?rooms=red").await;
    wait_connections(&app, "acme", "chat", 2).await;
    let mut c = connect(&app, "/ws/acme/ws?rooms=blue").await;
    let all = wait_connections(&app, "acme", "chat", 3).await;
    let c_id = all[2].clone();
    // echo: text and binary come back as they were.
    send_text(&mut a, "héllo").await;
    assert_eq!(next_text(&mut a).await, "héllo");
    a.send(Message::Binary(vec![0u8, 1, 255].into()))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut a).await,
        Message::Binary(vec![0u8, 1, 255].into())
    );
    // A marker sent by REST shows what a client got before it.
    let marker = |id: String| {
        let app = &app;
        async move {
            app.post(
                "/api/acme/chat/ops/send",
                json!({"connection_id": id, "message": "marker"}),
            )
            .await;
        }
    };
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"on_message": "broadcast"}}),
    )
    .await;
    app.release("acme", "chat").await;
    send_text(&mut a, "to all others").await;
    assert_eq!(next_text(&mut b).await, "to all others");
    assert_eq!(next_text(&mut c).await, "to all others");
    marker(ids[0].clone()).await;
    assert_eq!(next_text(&mut a).await, "marker", "no copy to the sender");
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"on_message": "room"}}),
    )
    .await;
    app.release("acme", "chat").await;
    b.send(Message::Binary(vec![7u8; 3].into())).await.unwrap();
    assert_eq!(next_msg(&mut a).await, Message::Binary(vec![7u8; 3].into()));
    marker(c_id.clone()).await;
    assert_eq!(next_text(&mut c).await, "marker", "other rooms get nothing");
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"on_message": "emit"}}),
    )
    .await;
    app.release("acme", "chat").await;
    send_text(&mut a, "only an event").await;
    marker(c_id).await;
    assert_eq!(next_text(&mut c).await, "marker");
    let received = activity_until(&app, "chat", "ws.message.received", |e| !e.is_empty()).await;
    assert!(received[0]["data"]["connection_id"]
        .as_str()
        .unwrap()
        .starts_with("c_"));
}
