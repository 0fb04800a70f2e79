//! Users as addresses and presence (issue 21, items 4-5): `send` and
//! `close` to a user, `connections?user=`, `presence`, and presence
//! events told once per user, on one node and across nodes.

use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_jwt::{hs_chat, mint, now};
use elementd::model::Role;
use futures::StreamExt;
use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Circle acme, the signing secret, and a jwt websocket `chat` at
/// `/chat` with rooms and presence events.
pub async fn chat(app: &TestApp, presence_events: bool) {
    let rooms = json!({"enabled": true, "presence_events": presence_events});
    hs_chat(app, json!({"rooms": rooms}), json!({})).await;
}

pub fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": now() + 300, "info": {"name": sub.to_uppercase()}});
    mint(Algorithm::HS256, None, &claims)
}

pub async fn as_user(app: &TestApp, sub: &str, rooms: &str) -> Client {
    connect(
        app,
        &format!("/ws/acme/chat?token={}&rooms={rooms}", token(sub)),
    )
    .await
}

/// Asserts that no text frame arrives for a while (pings aside).
pub async fn quiet(c: &mut Client, what: &str) {
    let r = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match c.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => return format!("{other:?}"),
            }
        }
    })
    .await;
    if let Ok(got) = r {
        panic!("{what}: expected nothing, got {got}");
    }
}

fn presence_of(action: &str, user: &str) -> Value {
    json!({"op": "presence", "room": "lobby", "action": action, "user": user,
           "info": {"name": user.to_uppercase()}})
}

async fn users_of(app: &TestApp, query: &str) -> Value {
    let (s, v) = app
        .get(&format!("/api/acme/chat/ops/presence{query}"))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    v
}

/// `chat` with ann connected twice (lobby, side) and bob once (lobby).
async fn ann_twice_and_bob(app: &TestApp) -> (Client, Client, Client) {
    chat(app, false).await;
    let ann1 = as_user(app, "ann", "lobby").await;
    let ann2 = as_user(app, "ann", "side").await;
    let bob = as_user(app, "bob", "lobby").await;
    wait_connections(app, "acme", "chat", 3).await;
    (ann1, ann2, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_a_user_are_listed_by_name() {
    let app = spawn_app().await;
    let _conns = ann_twice_and_bob(&app).await;
    let (s, rows) = app.get("/api/acme/chat/ops/connections?user=ann").await;
    assert_eq!(s.as_u16(), 200, "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["user"] == "ann" && r["info"]["name"] == "ANN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_a_user_reaches_each_of_their_connections_only() {
    let app = spawn_app().await;
    let (mut ann1, mut ann2, mut bob) = ann_twice_and_bob(&app).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"user": "ann", "message": "for ann"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["delivered_to"], 2, "{v}");
    assert_eq!(v["user"], "ann");
    assert_eq!(next_text(&mut ann1).await, "for ann");
    assert_eq!(next_text(&mut ann2).await, "for ann");
    quiet(&mut bob, "bob is not ann").await;
    let sent = activity_until(&app, "chat", "ws.message.sent", |e| {
        e.iter().any(|e| e["data"]["user"] == "ann")
    })
    .await;
    assert!(
        sent.iter().any(|e| e["data"]["delivered_to"] == 2),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_nobody_by_that_name_is_a_success_with_0() {
    let app = spawn_app().await;
    chat(&app, false).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/send",
            json!({"user": "zed", "message": "x"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["delivered_to"].clone()),
        (200, json!(0)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_inputs_are_refused_and_send_or_close_nothing() {
    let app = spawn_app().await;
    let (mut ann1, _ann2, _bob) = ann_twice_and_bob(&app).await;
    let long = "u".repeat(257);
    let bad = [
        (
            "send",
            json!({"user": "ann", "connection_id": "c_1", "message": "x"}),
            "INVALID_BODY",
        ),
        ("send", json!({"user": "", "message": "x"}), "INVALID_USER"),
        (
            "send",
            json!({"user": long, "message": "x"}),
            "INVALID_USER",
        ),
        (
            "send",
            json!({"user": "a\u{7}b", "message": "x"}),
            "INVALID_USER",
        ),
        ("send", json!({"user": 7, "message": "x"}), "INVALID_BODY"),
        ("close", json!({"code": 4000}), "MISSING_FIELD"),
        (
            "close",
            json!({"user": "ann", "connection_id": "c_1"}),
            "INVALID_BODY",
        ),
        (
            "close",
            json!({"user": "ann", "code": 1001}),
            "INVALID_CLOSE_CODE",
        ),
        ("close", json!({"user": ""}), "INVALID_USER"),
    ];
    for (op, body, code) in bad {
        let (s, v) = app
            .post(&format!("/api/acme/chat/ops/{op}"), body.clone())
            .await;
        assert_eq!(s.as_u16(), 400, "{op} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{op} {body}: {v}");
    }
    let (s, v) = app.get("/api/acme/chat/ops/connections?user=").await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].clone()),
        (400, json!("INVALID_USER")),
        "{v}"
    );
    quiet(&mut ann1, "refused ops send nothing").await;
    assert_eq!(connections(&app, "acme", "chat", None).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_circles_member_learns_nothing_of_the_users() {
    let app = spawn_app().await;
    let _conns = ann_twice_and_bob(&app).await;
    app.circle("other").await;
    let stranger = app.token("other", Role::Admin).await;
    for path in [
        "/api/acme/chat/ops/presence",
        "/api/acme/chat/ops/connections?user=ann",
    ] {
        let (s, _) = app.call(Method::GET, path, Some(&stranger), None).await;
        assert_eq!(s.as_u16(), 404, "{path}");
    }
    let close = json!({"user": "ann"});
    let (s, _) = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/close",
            Some(&stranger),
            Some(close),
        )
        .await;
    assert_eq!(s.as_u16(), 404);
    assert_eq!(
        connections(&app, "acme", "chat", None).await.len(),
        3,
        "the stranger closed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_to_a_user_closes_each_of_their_connections() {
    let app = spawn_app().await;
    let (mut ann1, mut ann2, bob) = ann_twice_and_bob(&app).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/close",
            json!({"user": "ann", "code": 4000, "reason": "bye ann"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["closed"], 2, "{v}");
    assert_eq!(closed_with(&mut ann1).await, (4000, "bye ann".into()));
    assert_eq!(closed_with(&mut ann2).await, (4000, "bye ann".into()));
    wait_connections(&app, "acme", "chat", 1).await;
    let (_, v) = app
        .post("/api/acme/chat/ops/close", json!({"user": "ann"}))
        .await;
    assert_eq!(v["closed"], 0, "{v}");
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_connections_and_info() {
    let app = spawn_app().await;
    chat(&app, false).await;
    let _a1 = as_user(&app, "ann", "lobby").await;
    let _a2 = as_user(&app, "ann", "lobby,side").await;
    let mut b = as_user(&app, "bob", "lobby").await;
    let mut c = as_user(&app, "cy", "side").await;
    wait_connections(&app, "acme", "chat", 4).await;

    // In band, for a member of the room (end users hold no platform token).
    send_text(&mut b, r#"{"op":"presence","room":"lobby"}"#).await;
    let p = next_json(&mut b).await;
    assert_eq!(
        (
            p["op"].clone(),
            p["user_count"].clone(),
            p["connection_count"].clone()
        ),
        (json!("presence"), json!(2), json!(3)),
        "{p}"
    );
    assert_eq!(p["users"][0]["user"], "ann");
    send_text(&mut c, r#"{"op":"presence","room":"lobby"}"#).await;
    let e = next_json(&mut c).await;
    assert_eq!(
        (e["op"].clone(), e["code"].clone()),
        (json!("error"), json!("ROOM_FORBIDDEN")),
        "{e}"
    );

    let v = users_of(&app, "?room=lobby").await;
    assert_eq!(v["room"], "lobby");
    assert_eq!(v["user_count"], 2, "{v}");
    assert_eq!(v["connection_count"], 3, "{v}");
    assert_eq!(
        v["users"],
        json!([{"user": "ann", "connections": 2, "info": {"name": "ANN"}},
               {"user": "bob", "connections": 1, "info": {"name": "BOB"}}])
    );
    let all = users_of(&app, "").await;
    assert_eq!(
        (all["user_count"].clone(), all["connection_count"].clone()),
        (json!(3), json!(4))
    );
    assert_eq!(all["room"], Value::Null);
    let empty = users_of(&app, "?room=nobody-here").await;
    assert_eq!(empty["users"], json!([]));
    assert_eq!(empty["user_count"], 0);

    for bad in ["?room=a,b", "?room="] {
        let (s, v) = app.get(&format!("/api/acme/chat/ops/presence{bad}")).await;
        assert_eq!(s.as_u16(), 400, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_ROOM", "{bad}: {v}");
    }
    let (s, v) = app.get("/api/acme/chat/ops/presence?env=staging").await;
    assert_eq!(s.as_u16(), 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_come_once_per_user() {
    let app = spawn_app().await;
    chat(&app, true).await;
    let mut bob = as_user(&app, "bob", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "bob"));

    let mut ann1 = as_user(&app, "ann", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "ann"));
    // Ann's own connection is a member too.
    assert_eq!(next_json(&mut ann1).await, presence_of("join", "ann"));
    // A second connection of ann (joining in-band) tells nobody.
    let mut ann2 = as_user(&app, "ann", "side").await;
    // Her first connection in `side`: she is told of herself there.
    let side = next_json(&mut ann2).await;
    assert_eq!(
        (side["room"].clone(), side["action"].clone()),
        (json!("side"), json!("join"))
    );
    send_text(&mut ann2, r#"{"op":"join","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut ann2).await["op"], "joined");
    quiet(&mut bob, "ann's second connection").await;
    // Her first goes: still there.
    drop(ann1);
    quiet(&mut bob, "ann's first connection left").await;
    // Her last leaves the room: gone.
    send_text(&mut ann2, r#"{"op":"leave","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut bob).await, presence_of("leave", "ann"));
    assert_eq!(next_json(&mut ann2).await["op"], "left");
    quiet(&mut ann2, "ann left lobby: no more of its news").await;

    // A platform token's id is the user in mode token; mode none has none.
    let (row, secret) = app
        .db
        .create_token("acme", Role::Viewer, "staff", None)
        .await
        .unwrap();
    let id = row.id;
    app.element(
        "acme",
        "websocket",
        "staff",
        json!({"path": "/staff", "auth": {"mode": "token"}, "rooms": {"enabled": true, "presence_events": true}}),
    )
    .await;
    let mut staff = connect(&app, &format!("/ws/acme/staff?token={secret}&rooms=ops")).await;
    let joined = next_json(&mut staff).await;
    assert_eq!(
        (joined["action"].clone(), joined["user"].clone()),
        (json!("join"), json!(id)),
        "{joined}"
    );
    app.element(
        "acme",
        "websocket",
        "open",
        json!({"path": "/open", "rooms": {"enabled": true, "presence_events": true}}),
    )
    .await;
    let mut anon = connect_bearer(&app, "/ws/acme/open?rooms=ops", &secret).await;
    quiet(&mut anon, "mode none has no users").await;
    let (_, rows) = app.get("/api/acme/open/ops/connections").await;
    assert_eq!(rows[0]["user"], Value::Null, "{rows}");
}

/// Waits until the node at `base` serves the endpoint.
async fn wait_endpoint(base: &str, path: &str) {
    let url = format!("{base}{path}");
    let client = reqwest::Client::new();
    eventually(&format!("{path} live on {base}"), || {
        let req = client.get(&url);
        async move { req.send().await.is_ok_and(|r| r.status().as_u16() == 426) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_presence_hold_across_nodes() {
    let Some((a, b)) = spawn_cluster().await else {
        return;
    };
    chat(&a, true).await;
    wait_endpoint(&b.base, "/ws/acme/chat").await;
    let mut bob = as_user(&a, "bob", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "bob"));
    let mut cy = as_user(&b, "cy", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "cy"));
    assert_eq!(next_json(&mut cy).await, presence_of("join", "cy"));
    // Ann on both nodes: told once, to the members of both nodes.
    let mut ann_a = as_user(&a, "ann", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "ann"));
    assert_eq!(next_json(&mut cy).await, presence_of("join", "ann"));
    assert_eq!(next_json(&mut ann_a).await, presence_of("join", "ann"));
    let mut ann_b = as_user(&b, "ann", "lobby").await;
    quiet(&mut bob, "ann's second connection, on the other node").await;
    quiet(&mut cy, "ann's second connection, on its node").await;

    // Presence, exact through either node.
    for node in [&a, &b] {
        let v = users_of(node, "?room=lobby").await;
        assert_eq!(v["user_count"], 3, "{v}");
        assert_eq!(v["connection_count"], 4, "{v}");
        let ann = v["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == "ann")
            .cloned();
        assert_eq!(
            ann,
            Some(json!({"user": "ann", "connections": 2, "info": {"name": "ANN"}}))
        );
        let (_, rows) = node.get("/api/acme/chat/ops/connections?user=ann").await;
        assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    }

    // send to ann through B reaches both of her connections.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/send",
            json!({"user": "ann", "message": "hi ann"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["delivered_to"], 2, "{v}");
    assert_eq!(next_text(&mut ann_a).await, "hi ann");
    assert_eq!(next_text(&mut ann_b).await, "hi ann");

    // Her connection on B closes: she is still there (on A).
    drop(ann_b);
    quiet(&mut bob, "ann still has a connection on A").await;
    // close her through B: the one on A goes, and she leaves.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/close",
            json!({"user": "ann", "code": 4001, "reason": "out"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["closed"], 1, "{v}");
    assert_eq!(closed_with(&mut ann_a).await, (4001, "out".into()));
    assert_eq!(next_json(&mut bob).await, presence_of("leave", "ann"));
    assert_eq!(next_json(&mut cy).await, presence_of("leave", "ann"));
    quiet(&mut bob, "one leave, not one per node").await;
    eventually("ann gone from presence", || {
        let b = &b;
        async move { users_of(b, "?room=lobby").await["user_count"] == 2 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_presence() {
    let Some((a, _b)) = spawn_cluster().await else {
        return;
    };
    chat(&a, true).await;
    // A third node as its own process, killed without a word.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.env("ELEMENTD_DATA_DIR", &a.config.data_dir);
    let url = a.config.database_url();
    let (mut child, base, _) = crate::cli::start_serve(c, Some(&url));
    wait_endpoint(&base, "/ws/acme/chat").await;
    let mut bob = as_user(&a, "bob", "lobby").await;
    assert_eq!(next_json(&mut bob).await, presence_of("join", "bob"));
    let url = format!(
        "{}/ws/acme/chat?token={}&rooms=lobby",
        base.replacen("http://", "ws://", 1),
        token("ann")
    );
    let _ann = tokio_tungstenite::connect_async(url)
        .await
        .expect("ann on C");
    assert_eq!(next_json(&mut bob).await, presence_of("join", "ann"));
    assert_eq!(users_of(&a, "?room=lobby").await["user_count"], 2);

    let killed = std::time::Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    // The node-dead timeout is 10 s; the survivors' heartbeat is 2 s.
    let left = tokio::time::timeout(Duration::from_secs(20), next_json(&mut bob))
        .await
        .expect("ann's leave within the node-dead timeout");
    assert_eq!(left, presence_of("leave", "ann"));
    assert!(killed.elapsed() < Duration::from_secs(20));
    let v = users_of(&a, "?room=lobby").await;
    assert_eq!(v["user_count"], 1, "{v}");
    quiet(&mut bob, "one leave").await;
}

/// `presence` keeps its answer while nothing changes (issue 26): every
/// change must still show at once, in the room asked about and in the
/// whole hub's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_answers_follow_every_change() {
    let app = spawn_app().await;
    chat(&app, false).await;
    let names = |v: &Value| -> Vec<(String, String)> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["user"].to_string(), u["info"]["name"].to_string()))
            .collect()
    };
    let ann_only = vec![("\"ann\"".to_string(), "\"ANN\"".to_string())];
    let mut ann = as_user(&app, "ann", "lobby").await;
    wait_connections(&app, "acme", "chat", 1).await;
    for _ in 0..2 {
        assert_eq!(names(&users_of(&app, "?room=lobby").await), ann_only);
        assert_eq!(users_of(&app, "").await["connection_count"], 1);
    }

    // A new connection, outside the room.
    let mut bob = as_user(&app, "bob", "side").await;
    wait_connections(&app, "acme", "chat", 2).await;
    let all = users_of(&app, "").await;
    assert_eq!(
        (all["user_count"].as_u64(), all["env"].as_str()),
        (Some(2), Some("live")),
        "{all}"
    );
    assert_eq!(names(&users_of(&app, "?room=lobby").await), ann_only);

    // Joins and leaves in band.
    send_text(&mut bob, r#"{"op":"join","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut bob).await["op"], "joined");
    let v = users_of(&app, "?room=lobby").await;
    assert_eq!(
        (v["user_count"].as_u64(), v["connection_count"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    send_text(&mut bob, r#"{"op":"leave","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut bob).await["op"], "left");
    assert_eq!(names(&users_of(&app, "?room=lobby").await), ann_only);

    // A refreshed token brings new info.
    let claims = json!({"sub": "ann", "exp": now() + 300, "info": {"name": "Ann B."}});
    let t = mint(Algorithm::HS256, None, &claims);
    send_text(&mut ann, &json!({"op": "refresh", "token": t}).to_string()).await;
    assert_eq!(next_json(&mut ann).await["op"], "refreshed");
    let v = users_of(&app, "?room=lobby").await;
    assert_eq!(v["users"][0]["info"], json!({"name": "Ann B."}), "{v}");

    // Closing: gone from the answer before the socket is.
    let (s, v) = app
        .post("/api/acme/chat/ops/close", json!({"user": "ann"}))
        .await;
    assert_eq!((s.as_u16(), v["closed"].as_u64()), (200, Some(1)), "{v}");
    let v = users_of(&app, "?room=lobby").await;
    assert_eq!(
        (v["user_count"].as_u64(), v["connection_count"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    drop(bob);
    wait_connections(&app, "acme", "chat", 0).await;
    let all = users_of(&app, "").await;
    assert_eq!(
        (all["user_count"].as_u64(), all["connection_count"].as_u64()),
        (Some(0), Some(0)),
        "{all}"
    );
}
