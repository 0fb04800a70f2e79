//! A connection's two events (SPEC §5) are written as text once, not
//! built as maps: their whole data and actor, field by field and in
//! order, as activity keeps them and as the live stream and a webhook
//! receiver see them.

use crate::events::SseReader;
use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_jwt::{hs_chat, mint, now};
use elementd::model::Role;
use futures::SinkExt;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_events_carry_all_their_fields_in_order() {
    let app = spawn_app().await;
    let spec = json!({"rooms": {"enabled": true}, "protocols": ["v2.chat"]});
    hs_chat(&app, spec, json!({})).await;
    let mut live = SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    // A name that needs escaping, as text written by hand would not.
    let info = json!({"name": "Ann \"the\" <admin>\n", "tier": 3});
    let claims = json!({"sub": "ann", "exp": now() + 300, "info": info});
    let token = mint(Algorithm::HS256, None, &claims);
    let path = format!("/ws/acme/~draft/chat?token={token}&rooms=red,blue");
    let (mut c, chosen) = connect_protocols(&app, &path, "v2.chat").await;
    assert_eq!(chosen.as_deref(), Some("v2.chat"));
    send_text(&mut c, "hi").await;
    c.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye \"now\"".into(),
    })))
    .await
    .unwrap();
    let closed = activity_until(&app, "chat", "ws.connection.closed", |e| !e.is_empty()).await;
    let opened = activity(&app, "acme", "chat", "ws.connection.opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let (o, x) = (&opened[0], &closed[0]);

    let d = &o["data"];
    assert_eq!(
        keys(d),
        [
            "connection_id",
            "remote_addr",
            "rooms",
            "protocol",
            "user",
            "env"
        ],
        "{d}"
    );
    let id = d["connection_id"].as_str().unwrap();
    assert!(id.starts_with("c_"), "{d}");
    assert!(d["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(d["rooms"], json!(["red", "blue"]), "{d}");
    assert_eq!(
        (&d["protocol"], &d["user"], &d["env"]),
        (&json!("v2.chat"), &json!("ann"), &json!("draft"))
    );

    let d = &x["data"];
    assert_eq!(
        keys(d),
        [
            "connection_id",
            "code",
            "reason",
            "closed_by",
            "duration_ms",
            "messages_in",
            "messages_out",
            "user",
            "env"
        ],
        "{d}"
    );
    assert_eq!(d["connection_id"], id);
    assert_eq!(d["code"], 1000);
    assert_eq!(d["reason"], "bye \"now\"");
    assert_eq!(d["closed_by"], "client");
    assert!(d["duration_ms"].as_i64().unwrap() >= 0, "{d}");
    assert_eq!(
        (&d["messages_in"], &d["messages_out"]),
        (&json!(1), &json!(0))
    );
    assert_eq!((&d["user"], &d["env"]), (&json!("ann"), &json!("draft")));

    // The end user is the actor, with what their token said of them.
    for e in [o, x] {
        assert_eq!(keys(&e["actor"]), ["kind", "user", "info"], "{e}");
        assert_eq!(e["actor"]["user"], "ann");
        assert_eq!(e["actor"]["info"], info);
        assert_eq!(e["element"]["slug"], "chat");
    }
    // The message, kept as the first of its second.
    let got = activity(&app, "acme", "chat", "ws.message.received").await;
    let m = &got[0];
    assert_eq!(
        keys(&m["data"]),
        [
            "kind",
            "bytes",
            "message",
            "truncated",
            "connection_id",
            "on_message",
            "env",
            "unpersisted_before"
        ],
        "{m}"
    );
    let want = json!({"kind": "text", "bytes": 2, "message": "hi", "truncated": false,
        "connection_id": id, "on_message": "emit", "env": "draft", "unpersisted_before": 0});
    assert_eq!(m["data"], want);
    assert_eq!(m["actor"], o["actor"]);
    // The live stream carries the same JSON as activity keeps.
    for (kind, kept) in [
        ("ws.connection.opened", o),
        ("ws.message.received", m),
        ("ws.connection.closed", x),
    ] {
        let e = live.next_of(kind).await;
        assert_eq!(e["data"], kept["data"], "{kind}");
        assert_eq!(e["actor"], kept["actor"], "{kind}");
        assert_eq!(keys(&e["data"]), keys(&kept["data"]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_is_none_without_auth_and_the_token_in_token_mode() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let spec = json!({"path": "/staff", "auth": {"mode": "token"}});
    app.element("acme", "websocket", "staff", spec).await;
    let mut c = connect(&app, "/ws/acme/~draft/ws").await;
    c.close(None).await.unwrap();
    let mut t = connect_bearer(&app, "/ws/acme/~draft/staff", &app.admin).await;
    t.close(None).await.unwrap();
    for (slug, actor_keys) in [
        ("chat", vec!["kind"]),
        ("staff", vec!["kind", "token_id", "role", "user"]),
    ] {
        let closed = activity_until(&app, slug, "ws.connection.closed", |e| !e.is_empty()).await;
        let opened = activity(&app, "acme", slug, "ws.connection.opened").await;
        // In token mode the user is the platform token's id (SPEC §10).
        let user = opened[0]["actor"]["token_id"].clone();
        assert_eq!(user.is_null(), slug == "chat", "{opened:?}");
        let (o, x) = (&opened[0]["data"], &closed[0]["data"]);
        assert_eq!((&o["rooms"], &o["protocol"]), (&json!([]), &Value::Null));
        assert_eq!((&o["user"], &x["user"]), (&user, &user), "{slug}");
        assert!(x.get("error").is_none(), "{x}");
        for e in [&opened[0], &closed[0]] {
            assert_eq!(keys(&e["actor"]), actor_keys, "{e}");
            assert_eq!(e["actor"]["user"], user, "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_shows_a_clients_address_to_admins_only() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let path = "/api/acme/chat/ops/events";
    let mut admin = SseReader::open(&app, path, None).await;
    let mut seen = SseReader::open_as(&app, &viewer, path, None).await;
    let mut c = connect(&app, "/ws/acme/~draft/ws").await;
    // A message that names the key is shown as sent, to both.
    send_text(&mut c, "remote_addr").await;
    let a = admin.next_of("ws.connection.opened").await;
    let v = seen.next_of("ws.connection.opened").await;
    assert!(a["data"]["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(v["data"].get("remote_addr").is_none(), "{v}");
    let mut want = a.clone();
    want["data"].as_object_mut().unwrap().remove("remote_addr");
    assert_eq!(v, want);
    assert_eq!(
        keys(&v["data"]),
        ["connection_id", "rooms", "protocol", "user", "env"]
    );
    let (am, vm) = (
        admin.next_of("ws.message.received").await,
        seen.next_of("ws.message.received").await,
    );
    assert_eq!(vm["data"]["message"], "remote_addr", "{vm}");
    assert_eq!(am, vm);
}

/// A flood of connections cannot grow activity without bound: past the
/// node's budget (here 3 a second per element and kind) the opened events
/// are left out of activity, and the next one written says how many were.
/// The live stream, a webhook that takes them, and the counters get every
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_written_within_the_budget() {
    use crate::webhooks::{acme_with_webhook, receiver};
    let app = spawn_app_with(|c| c.limits.connection_events_per_second = 3).await;
    let r = receiver().await;
    let only_opened = json!({"events": ["ws.connection.opened"]});
    acme_with_webhook(&app, &r.url(), only_opened).await;
    let mut live = SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    const FLOOD: usize = 12;
    let mut clients = Vec::new();
    for _ in 0..FLOOD {
        clients.push(connect(&app, "/ws/acme/ws").await);
    }
    // A later second: this one is written, with the count of the others.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    clients.push(connect(&app, "/ws/acme/ws").await);
    let total = FLOOD + 1;

    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < total {
        let e = live.next_of("ws.connection.opened").await;
        ids.insert(e["data"]["connection_id"].as_str().unwrap().to_string());
    }
    let hooked: std::collections::BTreeSet<String> = (r.wait_for("ws.connection.opened", total))
        .await
        .iter()
        .map(|g| {
            g.json()["data"]["data"]["connection_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(hooked, ids, "the webhook got every one, once");
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(s["metrics"]["connection_count"], total, "{s}");

    let left_out = |rows: &[Value]| -> usize {
        rows.iter()
            .filter_map(|e| e["data"]["unpersisted_before"].as_u64())
            .sum::<u64>() as usize
    };
    let rows = activity_until(&app, "chat", "ws.connection.opened", |rows| {
        rows.len() + left_out(rows) == total
    })
    .await;
    assert!(rows.len() < total, "sampled: {} of {total}", rows.len());
    assert!(left_out(&rows) > 0);
    let newest = &rows[0]["data"];
    assert!(newest["unpersisted_before"].as_u64() > Some(0), "{newest}");
    for e in &rows {
        assert!(ids.contains(e["data"]["connection_id"].as_str().unwrap()));
        let skipped = &e["data"]["unpersisted_before"];
        assert!(skipped.is_null() || skipped.as_u64() > Some(0), "{e}");
    }
    drop(clients);
}
