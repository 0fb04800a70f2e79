//! Nothing lost (issue 22), recovery: a client that dropped or left gets
//! what it missed, once, in order; a position it cannot be given is
//! answered with the room's current place; bad positions are refused.

use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_history::{feed, history, publish, published, v1};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `feed` keeping 5 per room and an `elementd.v1` client in lobby that
/// has read m1..m`n`; returns it and the stream's epoch.
async fn lobby_at(app: &TestApp, n: u64) -> (Client, String) {
    feed(app, 5).await;
    let mut c = v1(app, "rooms=lobby").await;
    wait_connections(app, "acme", "feed", 1).await;
    let epoch = published(app, &mut c, n).await;
    (c, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_connect_a_client_recovers_what_it_missed_then_goes_live() {
    let app = spawn_app().await;
    let (c, epoch) = lobby_at(&app, 3).await;
    drop(c);
    wait_connections(&app, "acme", "feed", 0).await;
    for i in 4..=6 {
        publish(&app, Some("lobby"), &format!("m{i}")).await;
    }
    // At connect: the missed three, in order, then the answer, then live.
    let mut c = v1(&app, &format!("recover=lobby:{epoch}:3")).await;
    for i in 4..=6 {
        let m = next_json(&mut c).await;
        assert_eq!(
            (m["offset"].clone(), m["data"].clone()),
            (json!(i), json!(format!("m{i}")))
        );
    }
    let joined = next_json(&mut c).await;
    assert_eq!(joined["op"], "joined");
    assert_eq!(
        (
            joined["recovered"].clone(),
            joined["offset"].clone(),
            joined["epoch"].clone()
        ),
        (json!(true), json!(6), json!(epoch))
    );
    publish(&app, Some("lobby"), "m7").await;
    assert_eq!(next_json(&mut c).await["offset"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_a_client_leaves_then_joins_since_its_place() {
    let app = spawn_app().await;
    let (mut c, epoch) = lobby_at(&app, 7).await;
    send_text(&mut c, r#"{"op":"leave","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut c).await["op"], "left");
    publish(&app, Some("lobby"), "m8").await;
    publish(&app, Some("lobby"), "m9").await;
    send_text(
        &mut c,
        &json!({"op": "join", "room": "lobby", "since": {"epoch": epoch, "offset": 7}}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut c).await["data"], "m8");
    assert_eq!(next_json(&mut c).await["data"], "m9");
    let joined = next_json(&mut c).await;
    assert_eq!(
        (
            joined["op"].clone(),
            joined["recovered"].clone(),
            joined["offset"].clone()
        ),
        (json!("joined"), json!(true), json!(9))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_usable_position_answers_the_rooms_place() {
    let app = spawn_app().await;
    let (_c, epoch) = lobby_at(&app, 9).await;
    // Too old (5 kept: 5..9) or another epoch: not recovered, no replay,
    // the current place to reload from.
    for since in [
        json!({"epoch": epoch, "offset": 2}),
        json!({"epoch": "0123abc", "offset": 9}),
    ] {
        let mut c2 = v1(&app, "").await;
        send_text(
            &mut c2,
            &json!({"op": "join", "room": "lobby", "since": since}).to_string(),
        )
        .await;
        let j = next_json(&mut c2).await;
        assert_eq!(
            (
                j["op"].clone(),
                j["recovered"].clone(),
                j["offset"].clone(),
                j["epoch"].clone()
            ),
            (json!("joined"), json!(false), json!(9), json!(epoch)),
            "{since}: {j}"
        );
    }
    // A plain join answers the room's place.
    let mut c3 = v1(&app, "").await;
    send_text(&mut c3, r#"{"op":"join","room":"lobby"}"#).await;
    let j = next_json(&mut c3).await;
    assert_eq!(
        (j["offset"].clone(), j["epoch"].clone(), j.get("recovered")),
        (json!(9), json!(epoch), None),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_positions_are_refused_and_publish_nothing() {
    let app = spawn_app().await;
    let (_c, epoch) = lobby_at(&app, 3).await;
    for q in [
        format!("recover=lobby:{}:3", epoch.to_uppercase()),
        "recover=lobby:abc".into(),
        format!("recover=lobby:{epoch}:-1"),
        format!("recover=a,b:{epoch}:1"),
        format!("recover=lobby:{epoch}:1,lobby:{epoch}:2"),
        format!("recover=lobby:{}:1", "e".repeat(33)),
    ] {
        let (s, v) = refused(&app, &format!("/ws/acme/feed?{q}"), None).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (400, json!("INVALID_RECOVER")),
            "{q}: {v}"
        );
    }
    let mut c3 = v1(&app, "").await;
    send_text(
        &mut c3,
        r#"{"op":"join","room":"other","since":{"epoch":"NOPE","offset":1}}"#,
    )
    .await;
    let e = next_json(&mut c3).await;
    assert_eq!(
        (e["op"].clone(), e["code"].clone()),
        (json!("error"), json!("INVALID_RECOVER")),
        "{e}"
    );
    // An element without history has nothing to recover from.
    app.element(
        "acme",
        "websocket",
        "plain",
        json!({"path": "/plain", "rooms": {"enabled": true}}),
    )
    .await;
    let (s, v) = refused(
        &app,
        &format!("/ws/acme/plain?recover=lobby:{epoch}:1"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (400, json!("INVALID_RECOVER")),
        "{v}"
    );
    let h = history(&app, "?room=lobby").await.1;
    assert_eq!(h["offset"], 3, "refusals published nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_published_while_a_client_recovers_comes_once_in_order() {
    let app = spawn_app().await;
    feed(&app, 1000).await;
    const N: u64 = 300;
    let publisher = {
        let base = app.base.clone();
        let admin = app.admin.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 1..=N {
                let r = http
                    .post(format!("{base}/api/acme/feed/ops/broadcast"))
                    .bearer_auth(&admin)
                    .json(&json!({"message": format!("m{i}"), "room": "lobby"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        })
    };
    // A client that drops and recovers again and again while they come.
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut order: Vec<u64> = Vec::new();
    let mut c = v1(&app, "rooms=lobby").await;
    let (mut epoch, mut last) = (String::new(), 0u64);
    while last < N {
        // Read a few, then drop.
        for _ in 0..20 {
            let m = next_json(&mut c).await;
            if m["op"] == "joined" {
                assert_eq!(m["recovered"], true, "{m}");
                continue;
            }
            let o = m["offset"].as_u64().unwrap();
            epoch = m["epoch"].as_str().unwrap().to_string();
            *seen.entry(o).or_default() += 1;
            order.push(o);
            last = o;
            if last == N {
                break;
            }
        }
        if last < N {
            drop(c);
            c = v1(&app, &format!("recover=lobby:{epoch}:{last}")).await;
        } else {
            break;
        }
    }
    publisher.await.unwrap();
    let first = order[0];
    assert_eq!(
        order,
        (first..=N).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert!(seen.values().all(|&n| n == 1), "none twice");
}

/// A restart: on PostgreSQL the history is kept (same epoch, the client
/// recovers); alone on SQLite it lived in memory, so the client's old
/// position is of an epoch that is gone, and it is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_history_is_kept_on_postgres_and_lost_in_memory() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    let server = elementd::server::Server::start(config.clone())
        .await
        .unwrap();
    let admin = server.admin_token.clone().unwrap();
    let http = reqwest::Client::new();
    let post = |base: String, path: &'static str, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    };
    let base = format!("http://{}", server.addr);
    post(
        base.clone(),
        "/api/ops/create",
        json!({"element_type": "circle", "slug": "acme"}),
    )
    .await;
    let spec = json!({"path": "/feed", "rooms": {"enabled": true}, "history": {"size": 10}});
    post(
        base.clone(),
        "/api/acme/ops/create",
        json!({"element_type": "websocket", "slug": "feed", "spec": spec}),
    )
    .await;
    post(
        base.clone(),
        "/api/acme/feed/ops/broadcast",
        json!({"message": "before", "room": "lobby"}),
    )
    .await;
    let h: Value = http
        .get(format!("{base}/api/acme/feed/ops/history?room=lobby"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old = h["epoch"].as_str().unwrap().to_string();
    server.stop().await.unwrap();

    let server = elementd::server::Server::start(config).await.unwrap();
    let base = format!("http://{}", server.addr);
    post(
        base.clone(),
        "/api/acme/feed/ops/broadcast",
        json!({"message": "after", "room": "lobby"}),
    )
    .await;
    let url = format!("ws://{}/ws/acme/feed?recover=lobby:{old}:1", server.addr);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "elementd.v1".parse().unwrap());
    let (mut c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    if pg.is_some() {
        // PostgreSQL keeps the history: same epoch, and what was
        // published after the restart is replayed.
        let m = next_json(&mut c).await;
        assert_eq!(
            (m["data"].clone(), m["offset"].clone(), m["epoch"].clone()),
            (json!("after"), json!(2), json!(old)),
            "{m}"
        );
        let j = next_json(&mut c).await;
        assert_eq!(
            (j["op"].clone(), j["recovered"].clone(), j["offset"].clone()),
            (json!("joined"), json!(true), json!(2)),
            "{j}"
        );
        assert_eq!(j["epoch"], old.as_str(), "the same epoch");
    } else {
        let j = next_json(&mut c).await;
        assert_eq!(
            (j["op"].clone(), j["recovered"].clone(), j["offset"].clone()),
            (json!("joined"), json!(false), json!(1)),
            "{j}"
        );
        assert_ne!(j["epoch"], old.as_str(), "a new epoch");
    }
    drop(c);
    server.stop().await.unwrap();
}
