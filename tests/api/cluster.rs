//! Several nodes on one PostgreSQL database: REST ops through one
//! node reach clients of another; limits, element changes and live events
//! cross nodes. Needs TEST_DATABASE_URL; with SQLite these tests skip.

use crate::events::SseReader;
use crate::helpers::*;
use crate::ws_client::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn cluster_or_skip(test: &str) -> Option<(TestApp, TestApp)> {
    let nodes = spawn_cluster().await;
    if nodes.is_none() {
        println!("{test}: needs PostgreSQL (set TEST_DATABASE_URL); skipped");
    }
    nodes
}

/// Waits until `node` serves the endpoint: the element's change reached it.
async fn wait_endpoint(node: &TestApp, path: &str) {
    let url = format!("{}{path}", node.base);
    eventually(&format!("{path} live on {}", node.base), || {
        let req = node.client.get(&url);
        async move { req.send().await.is_ok_and(|r| r.status().as_u16() == 426) }
    })
    .await;
}

async fn node_of(app: &TestApp, id: &str) -> Value {
    connections(app, "acme", "chat", None)
        .await
        .into_iter()
        .find(|c| c["connection_id"] == id)
        .map(|c| c["node_id"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_ops_through_one_node_reach_clients_of_another() {
    let Some((a, b)) = cluster_or_skip("rest_ops_through_one_node_reach_clients_of_another").await
    else {
        return;
    };
    ws_element(&a, "chat", json!({"rooms": {"enabled": true}})).await;
    wait_endpoint(&b, "/ws/acme/ws").await;
    let mut on_a = connect(&a, "/ws/acme/ws?rooms=red").await;
    let id_a = wait_connections(&a, "acme", "chat", 1).await.remove(0);
    // B lists A's client, marked with A's node.
    let via_b = wait_connections(&b, "acme", "chat", 1).await;
    assert_eq!(via_b, vec![id_a.clone()]);
    let node_a = node_of(&a, &id_a).await;
    assert!(node_a.is_string());
    assert_eq!(node_of(&b, &id_a).await, node_a);
    let red = connections(&b, "acme", "chat", Some("red")).await;
    assert_eq!(red.len(), 1);
    assert_eq!(red[0]["rooms"], json!(["red"]));

    // send through B.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": id_a, "message": "hello from B"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["sent"], true);
    assert_eq!(next_text(&mut on_a).await, "hello from B");

    // broadcast through B: one client on each node.
    let mut on_b = connect(&b, "/ws/acme/ws").await;
    wait_connections(&a, "acme", "chat", 2).await;
    let (s, v) = b
        .post("/api/acme/chat/ops/broadcast", json!({"message": {"n": 1}}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["delivered_to"], 2);
    assert_eq!(v["subscriber_count"], 2);
    assert_eq!(next_json(&mut on_a).await, json!({"n": 1}));
    assert_eq!(next_json(&mut on_b).await, json!({"n": 1}));
    // A room only A's client is in.
    let (_, v) = b
        .post(
            "/api/acme/chat/ops/broadcast",
            json!({"message": "red only", "room": "red"}),
        )
        .await;
    assert_eq!(
        (&v["delivered_to"], &v["subscriber_count"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(next_text(&mut on_a).await, "red only");

    // A message too big for one NOTIFY goes through the payload table.
    let big = "x".repeat(20_000);
    let (s, _) = b
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": id_a, "message": big}),
        )
        .await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(next_text(&mut on_a).await, big);

    // close through B.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/close",
            json!({"connection_id": id_a, "code": 4001, "reason": "bye from B"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(
        closed_with(&mut on_a).await,
        (4001, "bye from B".to_string())
    );
    wait_connections(&b, "acme", "chat", 1).await;
    let gone = b
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": id_a, "message": "late"}),
        )
        .await;
    assert_error(&gone, 404, "WS_CONNECTION_NOT_FOUND");
    let gone = b
        .post("/api/acme/chat/ops/close", json!({"connection_id": id_a}))
        .await;
    assert_error(&gone, 404, "WS_CONNECTION_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_across_nodes() {
    let Some((a, b)) = cluster_or_skip("max_connections_holds_across_nodes").await else {
        return;
    };
    ws_element(&a, "chat", json!({"max_connections": 1})).await;
    wait_endpoint(&b, "/ws/acme/ws").await;
    // A dead node's presence row counts for nothing and is swept.
    let (_, el) = a.get("/api/acme/chat/ops/get").await;
    let el_id = el["id"].as_str().unwrap().to_string();
    sqlx::query("INSERT INTO cluster_nodes (node_id, heartbeat_at) VALUES ('dead', 0)")
        .execute(&a.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ws_connections (connection_id, element_id, node_id, rooms, remote, connected_at) \
         VALUES ('c_dead', $1, 'dead', '[]', '', 0)",
    )
    .bind(&el_id)
    .execute(&a.db.pool)
    .await
    .unwrap();
    assert_eq!(
        connections(&b, "acme", "chat", None).await,
        Vec::<Value>::new()
    );
    let gone = b
        .post(
            "/api/acme/chat/ops/send",
            json!({"connection_id": "c_dead", "message": "x"}),
        )
        .await;
    assert_error(&gone, 404, "WS_CONNECTION_NOT_FOUND");
    let mut on_a = connect(&a, "/ws/acme/ws").await;
    let (status, body) = refused(&b, "/ws/acme/ws", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "WS_MAX_CONNECTIONS_REACHED");
    assert_eq!(body["error"]["retryable"], true);
    // Once A's client is gone, B admits one.
    futures::SinkExt::close(&mut on_a).await.unwrap();
    drop(on_a);
    wait_connections(&b, "acme", "chat", 0).await;
    let _on_b = connect(&b, "/ws/acme/ws").await;
    let (status, _) = refused(&a, "/ws/acme/ws", None).await;
    assert_eq!(status, 503);
    let db = &a.db;
    eventually("the dead node's rows are swept", || async move {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM ws_connections WHERE node_id = 'dead'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        n == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_changes_and_events_cross_nodes() {
    let Some((a, b)) = cluster_or_skip("element_changes_and_events_cross_nodes").await else {
        return;
    };
    ws_element(&a, "chat", json!({})).await;
    wait_endpoint(&b, "/ws/acme/ws").await;

    // An update on A reaches B's event stream.
    let mut sse = SseReader::open(&b, "/api/acme/chat/ops/events", None).await;
    let (s, _) = a
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"path": "/moved"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200);
    let updated = loop {
        let (id, kind, e) = sse.next().await;
        if kind == "element.updated" {
            assert_eq!(e["id"], id);
            break e;
        }
    };
    assert_eq!(updated["element"]["slug"], "chat");
    assert_eq!(updated["data"]["version"], 2);
    assert_eq!(updated["op"], "update");
    // The draft preview moved on B at once; live moves when A releases.
    wait_endpoint(&b, "/ws/acme/~draft/moved").await;
    assert_eq!(
        b.client
            .get(format!("{}/ws/acme/moved", b.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404,
        "live still runs the released path"
    );
    a.release("acme", "chat").await;
    wait_endpoint(&b, "/ws/acme/moved").await;

    // A client's message on A reaches B's subscribers as an event, once A
    // knows B has a listener (message events cross only then).
    eventually("A learns that B has a live listener", || async {
        a.get("/readyz").await.1["cluster"]["nodes_with_live_listeners"] == 1
    })
    .await;
    let mut on_a = connect(&a, "/ws/acme/moved").await;
    let id_a = wait_connections(&b, "acme", "chat", 1).await.remove(0);
    send_text(&mut on_a, "ping from A").await;
    let received = loop {
        let (_, kind, e) = sse.next().await;
        if kind == "ws.message.received" {
            break e;
        }
    };
    assert_eq!(received["data"]["message"], "ping from A");
    assert_eq!(received["data"]["connection_id"], json!(id_a));
    assert_eq!(received["data"]["bytes"], 11);
    // When B's last listener goes, A stops building message events for it.
    drop(sse);
    eventually("A learns that B has no live listener", || async {
        // B notices the closed stream when it next writes an event to it.
        b.get("/api/acme/chat").await;
        a.get("/readyz").await.1["cluster"]["nodes_with_live_listeners"] == 0
    })
    .await;

    // A node swept as dead (a long stall) writes its presence again.
    let node_a = node_of(&a, &id_a).await;
    for q in [
        "DELETE FROM ws_connections WHERE node_id = $1",
        "DELETE FROM cluster_nodes WHERE node_id = $1",
    ] {
        sqlx::query(q)
            .bind(node_a.as_str().unwrap())
            .execute(&b.db.pool)
            .await
            .unwrap();
    }
    eventually("A's client listed by B again", || async {
        node_of(&b, &id_a).await == node_a
    })
    .await;

    // disable through B closes A's client with 1001.
    let (s, v) = b.post("/api/acme/chat/ops/disable", json!({})).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(closed_with(&mut on_a).await.0, 1001);
    let (status, body) = refused(&a, "/ws/acme/moved", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "WS_ENDPOINT_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_message_relays_reach_clients_of_other_nodes() {
    let Some((a, b)) = cluster_or_skip("on_message_relays_reach_clients_of_other_nodes").await
    else {
        return;
    };
    ws_element(&a, "chat", json!({"on_message": "broadcast"})).await;
    wait_endpoint(&b, "/ws/acme/ws").await;
    let mut on_a = connect(&a, "/ws/acme/ws").await;
    let id_a = wait_connections(&a, "acme", "chat", 1).await.remove(0);
    let mut on_b = connect(&b, "/ws/acme/ws").await;
    wait_connections(&a, "acme", "chat", 2).await;
    send_text(&mut on_a, "hi all").await;
    assert_eq!(next_text(&mut on_b).await, "hi all");
    futures::SinkExt::send(&mut on_a, Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut on_b).await,
        Message::Binary(vec![1u8, 2, 3].into())
    );
    // A burst is relayed in batches, in order, none lost.
    for i in 0..200 {
        send_text(&mut on_a, &format!("burst {i}")).await;
    }
    for i in 0..200 {
        assert_eq!(next_text(&mut on_b).await, format!("burst {i}"));
    }
    // B lists A's client with its counters, as of A's last heartbeat.
    eventually("A's counters reach B", || async {
        connections(&b, "acme", "chat", None)
            .await
            .iter()
            .find(|c| c["connection_id"] == id_a)
            .is_some_and(|c| c["messages_in"] == 202 && c["counted_at"].is_string())
    })
    .await;
    // `receive` through B reaches both nodes' clients; A's client never
    // got its own messages back.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/receive",
            json!({"message": "from outside"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(next_text(&mut on_a).await, "from outside");
    assert_eq!(next_text(&mut on_b).await, "from outside");
    // `receive` through B as A's client: A runs on_message for it, so
    // B's client gets it and A's client (the sender) does not.
    let (s, v) = b
        .post(
            "/api/acme/chat/ops/receive",
            json!({"message": "as a", "connection_id": id_a}),
        )
        .await;
    assert_eq!(
        (
            s.as_u16(),
            v["received"].clone(),
            v["connection_id"].clone()
        ),
        (200, json!(true), json!(id_a)),
        "{v}"
    );
    assert_eq!(next_text(&mut on_b).await, "as a");
    assert_error(
        &b.post(
            "/api/acme/chat/ops/receive",
            json!({"message": "x", "connection_id": "c_nobody"}),
        )
        .await,
        404,
        "WS_CONNECTION_NOT_FOUND",
    );
    // Then a marker through A's own client shows nothing else came first.
    send_text(&mut on_b, "marker").await;
    assert_eq!(next_text(&mut on_a).await, "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_lost_its_connection_still_follows_changes() {
    let Some((a, b)) =
        cluster_or_skip("a_listener_that_lost_its_connection_still_follows_changes").await
    else {
        return;
    };
    ws_element(&a, "chat", json!({})).await;
    wait_endpoint(&b, "/ws/acme/ws").await;
    let mut on_a = connect(&a, "/ws/acme/ws").await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%') t",
    )
    .fetch_one(&a.db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 2, "one listener per node");
    let (s, v) = b.post("/api/acme/chat/ops/disable", json!({})).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(closed_with(&mut on_a).await.0, 1001);
}

/// Pools ping a connection before use only after it sat idle over a
/// second: one whose server process died while it idled is found out and
/// replaced, so the next requests on every node still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_that_died_while_idle_is_replaced() {
    let Some((a, b)) =
        cluster_or_skip("a_pooled_connection_that_died_while_idle_is_replaced").await
    else {
        return;
    };
    ws_element(&a, "chat", json!({})).await;
    for node in [&a, &b] {
        let (s, v) = node.get("/api/acme/ops/activity").await;
        assert_eq!(s.as_u16(), 200, "{v}");
    }
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&a.db.pool)
    .await
    .unwrap();
    assert!(killed >= 4, "both nodes' pools and listeners: {killed}");
    tokio::time::sleep(elementd::store::PING_AFTER_IDLE + std::time::Duration::from_millis(500))
        .await;
    for node in [&a, &b, &a, &b] {
        let (s, v) = node.get("/api/acme/ops/activity").await;
        assert_eq!(s.as_u16(), 200, "{v}");
    }
    let (s, v) = b
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"on_message": "echo"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
}

/// Issue 7 on several nodes: a promotion or a rollback made on A
/// reconfigures the live hub on B; a draft change reaches only B's preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_one_node_changes_live_on_another() {
    let Some((a, b)) = cluster_or_skip("a_release_on_one_node_changes_live_on_another").await
    else {
        return;
    };
    ws_element(&a, "chat", json!({"path": "/v1", "on_message": "echo"})).await;
    wait_endpoint(&b, "/ws/acme/v1").await;
    let mut on_b = connect(&b, "/ws/acme/v1").await;
    let (s, v) = a
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"path": "/v2", "on_message": "echo"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // B's preview moved; B's live did not.
    wait_endpoint(&b, "/ws/acme/~draft/v2").await;
    assert_eq!(refused(&b, "/ws/acme/v2", None).await.0, 404);
    send_text(&mut on_b, "still here").await;
    assert_eq!(next_text(&mut on_b).await, "still here");
    // Released on A: B's live moves and its client on the old path goes.
    a.release("acme", "chat").await;
    wait_endpoint(&b, "/ws/acme/v2").await;
    assert_eq!(closed_with(&mut on_b).await.0, 1001);
    // Rolled back on A: B serves the first release again.
    let (s, r) = a
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": "previous"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{r}");
    wait_endpoint(&b, "/ws/acme/v1").await;
    eventually("B's live left /v2", || async {
        refused(&b, "/ws/acme/v2", None).await.0 == 404
    })
    .await;
}
