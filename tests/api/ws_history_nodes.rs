//! History shared by several nodes on PostgreSQL (SPEC 10.3): offsets
//! from one store whoever publishes, the same stream seen on every node,
//! and a client recovering on one node what another published. Skips on
//! SQLite (one node).

use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_history::{feed, history, publish, v1};
use elementd::model::now_ms;
use elementd::store::history::{append, cap_bytes, expire, position, read, NewMessage, Placed};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Reads `n` envelopes; asserts offsets rise by one in one epoch.
async fn envelopes(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::with_capacity(n);
    while got.len() < n {
        let m = next_json(c).await;
        if m.get("op").is_some() {
            continue;
        }
        if let Some(prev) = got.last() {
            assert_eq!(m["epoch"], prev["epoch"], "{m}");
            assert_eq!(
                m["offset"].as_u64(),
                prev["offset"].as_u64().map(|o| o + 1),
                "no gap, no repeat: {prev} then {m}"
            );
        }
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publishing_at_once_share_one_stream_and_recover_anywhere() {
    let Some((a, b)) = spawn_cluster().await else {
        println!("needs PostgreSQL (set TEST_DATABASE_URL); skipped");
        return;
    };
    feed(&a, 1000).await;
    eventually("the feed is live on B", || async {
        b.get("/api/acme/feed/ops/connections").await.0.as_u16() == 200
    })
    .await;
    let mut watch_a = v1(&a, "rooms=lobby").await;
    let mut watch_b = v1(&b, "rooms=lobby").await;
    let mut talk_a = v1(&a, "rooms=lobby").await;
    let mut talk_b = v1(&b, "rooms=lobby").await;
    wait_connections(&a, "acme", "feed", 4).await;

    // Both nodes publish to one room at the same moment: clients' messages
    // (on_message: room) and the broadcast op, through each node.
    async fn burst(c: &mut Client, who: &str) {
        for i in 0..60 {
            send_text(c, &format!("{who}{i}")).await;
        }
    }
    async fn ops(app: &TestApp, who: &str) {
        for i in 0..20 {
            publish(app, Some("lobby"), &format!("{who}{i}")).await;
        }
    }
    tokio::join!(
        burst(&mut talk_a, "ca"),
        burst(&mut talk_b, "cb"),
        ops(&a, "oa"),
        ops(&b, "ob")
    );
    let total = 160;
    let seen_a = envelopes(&mut watch_a, total).await;
    let seen_b = envelopes(&mut watch_b, total).await;
    let order = |v: &[Value]| -> Vec<(u64, String)> {
        v.iter()
            .map(|m| {
                (
                    m["offset"].as_u64().unwrap(),
                    m["data"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(order(&seen_a), order(&seen_b), "one order on both nodes");
    assert_eq!(seen_a[0]["offset"], 1);
    // Each publisher's own messages keep their order.
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, d) in order(&seen_a) {
        let (who, n) = d.split_at(2);
        let n: i64 = n.parse().unwrap();
        let prev = last.insert(who.to_string(), n).unwrap_or(-1);
        assert_eq!(n, prev + 1, "{who} in order");
    }
    let epoch = seen_a[0]["epoch"].as_str().unwrap().to_string();

    // A client of B drops at offset 100; A publishes; it recovers on B.
    drop(watch_b);
    for i in 0..5 {
        publish(&a, Some("lobby"), &format!("late{i}")).await;
    }
    let mut back = v1(&b, &format!("recover=lobby:{epoch}:100")).await;
    let replay = envelopes(&mut back, 65).await;
    assert_eq!(replay[0]["offset"], 101);
    assert_eq!(replay[64]["data"], "late4");
    let j = next_json(&mut back).await;
    assert_eq!(
        (j["op"].clone(), j["recovered"].clone(), j["offset"].clone()),
        (json!("joined"), json!(true), json!(165)),
        "{j}"
    );
    // Live again, once.
    publish(&b, Some("lobby"), "after").await;
    let m = next_json(&mut back).await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(166), json!("after"))
    );

    // The history op reads the same stream through either node.
    let (s, h) = history(&b, "?room=lobby&since=160&limit=10").await;
    assert_eq!(s, 200, "{h}");
    let data: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["late0", "late1", "late2", "late3", "late4", "after"]);
    assert_eq!(
        (h["epoch"].as_str(), h["offset"].as_u64()),
        (Some(epoch.as_str()), Some(166))
    );
    let (_, h_a) = history(&a, "?room=lobby&since=160&limit=10").await;
    assert_eq!(h_a["messages"], h["messages"]);
}

/// The test server's database, on PostgreSQL only: the store's SQL is
/// PostgreSQL's. The server sweeps it by the wall clock, so the tests'
/// times start at now: rows of a time long past would be swept under
/// them.
async fn pg_pool(app: &TestApp) -> Option<sqlx::PgPool> {
    let url = app.config.database_url();
    if !url.starts_with("postgres") {
        return None;
    }
    Some(sqlx::PgPool::connect(&url).await.unwrap())
}

fn msg<'a>(streams: &'a [String], body: &'static str, size: u64, ttl_ms: i64) -> NewMessage<'a> {
    NewMessage {
        hub_key: "h1",
        streams,
        body: body.as_bytes(),
        binary: false,
        size,
        ttl_ms,
    }
}

/// Streams "r" and "r"+"s".
fn streams() -> (Vec<String>, Vec<String>) {
    (
        vec!["r".to_string()],
        vec!["r".to_string(), "s".to_string()],
    )
}

/// One batch into hub h1 at `t0`: a..e to "r", b and e to "s" too, each
/// stream keeping 3 for a minute.
async fn five_in_h1(pool: &sqlx::PgPool, t0: i64) -> Vec<Vec<Placed>> {
    let (r, both) = streams();
    let mut tx = pool.begin().await.unwrap();
    let batch = [
        msg(&r, "a", 3, 60_000),
        msg(&both, "b", 3, 60_000),
        msg(&r, "c", 3, 60_000),
        msg(&r, "d", 3, 60_000),
        msg(&both, "e", 3, 60_000),
    ];
    let placed = append(&mut tx, &batch, t0).await.unwrap();
    tx.commit().await.unwrap();
    placed
}

/// The store's SQL on a real database: offsets per stream in one batch,
/// and each stream's last `size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_numbers_each_stream_and_keeps_its_last_size() {
    let app = spawn_app().await;
    let Some(pool) = pg_pool(&app).await else {
        return;
    };
    let t0 = now_ms();
    let placed = five_in_h1(&pool, t0).await;
    let offsets: Vec<Vec<u64>> = placed
        .iter()
        .map(|p| p.iter().map(|x| x.offset).collect())
        .collect();
    assert_eq!(offsets, [vec![1], vec![2, 1], vec![3], vec![4], vec![5, 2]]);
    assert_eq!(placed[1][0].epoch, placed[0][0].epoch);
    assert_ne!(
        placed[1][1].epoch, placed[1][0].epoch,
        "each stream its own epoch"
    );
    // "r" keeps its last 3.
    let kept = read(&pool, "h1", "r", 0, 100, t0 + 1_000).await.unwrap();
    let kept: Vec<(u64, Vec<u8>)> = kept.into_iter().map(|k| (k.0, k.1)).collect();
    assert_eq!(
        kept,
        [(3, b"c".to_vec()), (4, b"d".to_vec()), (5, b"e".to_vec())]
    );
    let p = position(&pool, "h1", "r", false, t0 + 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.offset, 5);
    assert!(position(&pool, "h1", "none", false, t0 + 1_000)
        .await
        .unwrap()
        .is_none());
    let made = position(&pool, "h1", "none", true, t0 + 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(made.offset, 0);
}

/// Past its ttl a message is not read, then deleted; the stream stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_expires_messages_past_their_ttl_and_keeps_the_stream() {
    let app = spawn_app().await;
    let Some(pool) = pg_pool(&app).await else {
        return;
    };
    let t0 = now_ms();
    five_in_h1(&pool, t0).await;
    assert!(read(&pool, "h1", "r", 0, 100, t0 + 61_001)
        .await
        .unwrap()
        .is_empty());
    expire(&pool, t0 + 61_001).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ws_history WHERE hub_key = 'h1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        position(&pool, "h1", "r", false, t0 + 61_001)
            .await
            .unwrap()
            .unwrap()
            .offset,
        5
    );
}

/// The bytes cap keeps the newest of a hub, across its streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_caps_a_hubs_bytes_keeping_the_newest() {
    let app = spawn_app().await;
    let Some(pool) = pg_pool(&app).await else {
        return;
    };
    let (r, both) = streams();
    let body = "x".repeat(100);
    let body: &'static str = Box::leak(body.into_boxed_str());
    let mut tx = pool.begin().await.unwrap();
    let batch: Vec<NewMessage> = (0..10)
        .map(|i| NewMessage {
            hub_key: "h2",
            streams: if i % 2 == 0 { &r[..] } else { &both[..] },
            body: body.as_bytes(),
            binary: false,
            size: 100,
            ttl_ms: 600_000,
        })
        .collect();
    append(&mut tx, &batch, now_ms()).await.unwrap();
    tx.commit().await.unwrap();
    // 15 rows of 164 counted bytes; a cap of 4 rows keeps the newest 4.
    assert_eq!(cap_bytes(&pool, 4 * 164).await.unwrap(), 11);
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream, pos FROM ws_history WHERE hub_key = 'h2' ORDER BY stream, pos",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(left.len(), 4);
    assert!(
        left.contains(&("r".to_string(), 10)),
        "the newest stays: {left:?}"
    );
    assert_eq!(
        cap_bytes(&pool, 4 * 164).await.unwrap(),
        0,
        "within the cap"
    );
}
