//! What a websocket client can make the server hold: queued bytes per
//! connection and per node, an unfinished message, and the spec's own
//! limits (README "Security").

use crate::helpers::*;
use crate::ws_client::*;
use futures::SinkExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// This process's resident memory (the server runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb / 1024.0
}

async fn queued_bytes(app: &TestApp) -> u64 {
    let (_, text) = app.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("elementd_ws_queued_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("elementd_ws_queued_bytes in /metrics")
}

/// Sends `total` bytes of binary messages of `size` without ever
/// reading, until the server stops taking them; answers the bytes sent.
async fn flood(c: &mut Client, size: usize, total: usize) -> usize {
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let mut sent = 0;
    while sent < total {
        let r = tokio::time::timeout(WAIT, c.send(Message::Binary(payload.clone()))).await;
        match r {
            Ok(Ok(())) => sent += size,
            // Closed under us, or the server stopped reading.
            _ => break,
        }
    }
    sent
}

/// Issue: a client that never reads an echo grew the server by 2.6 GB.
/// Its queued bytes are now bounded (ELEMENTD_MAX_WS_BUFFER_BYTES,
/// 4 MiB): it is closed with 1013 and memory stays flat, though the
/// spec's count bound alone (4096 messages of up to 1 MiB) would let one
/// connection queue 4 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "echo",
        json!({"on_message": "echo",
               "connection": {"send_queue": 4096, "max_message_bytes": 1048576}}),
    )
    .await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "echo", 1).await;
    let before = rss_mib();
    // The peak, sampled while the client floods.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let kib = (rss_mib() * 1024.0) as u64;
                peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // 320 MiB offered in 256 KiB messages.
    let sent = flood(&mut c, 256 << 10, 320 << 20).await;
    let closed = activity_until(&app, "echo", "ws.connection.closed", |e| !e.is_empty()).await;
    sampler.abort();
    let peak = (peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0).max(rss_mib());
    assert_eq!(closed[0]["data"]["code"], 1013, "{closed:?}");
    assert_eq!(closed[0]["data"]["error"]["code"], "WS_SEND_QUEUE_FULL");
    assert_eq!(closed[0]["data"]["closed_by"], "server");
    eventually("the node's queued bytes are given back", || async {
        queued_bytes(&app).await == 0
    })
    .await;
    let (_, stats) = app.get("/api/acme/echo/ops/stats").await;
    assert!(
        stats["metrics"]["slow_client_count"].as_u64() >= Some(1),
        "{stats}"
    );
    eprintln!(
        "rss before {before:.1} MiB, peak {peak:.1} MiB, after {:.1} MiB; the client sent {} MiB",
        rss_mib(),
        sent >> 20
    );
    drop(c);
    assert!(
        peak - before < 96.0,
        "memory grew {:.1} MiB while a client sent {} MiB it never read back",
        peak - before,
        sent >> 20
    );
}

/// The node's budget (ELEMENTD_MAX_WS_QUEUED_BYTES) holds across
/// connections: here it is smaller than one connection's own bound, and
/// the connection that would pass it is closed with 1013.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_budget_closes_the_connection_that_would_pass_it() {
    let app = spawn_app_with(|c| {
        c.limits.max_ws_queued_bytes = 1 << 20;
        c.limits.max_ws_buffer_bytes = 64 << 20;
    })
    .await;
    ws_element(
        &app,
        "echo",
        json!({"on_message": "echo", "connection": {"send_queue": 4096}}),
    )
    .await;
    let mut reader = connect(&app, "/ws/acme/ws").await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "echo", 2).await;
    flood(&mut c, 60_000, 64 << 20).await;
    let closed = activity_until(&app, "echo", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(closed[0]["data"]["code"], 1013, "{closed:?}");
    assert_eq!(closed[0]["data"]["error"]["code"], "WS_SERVER_BUFFERS_FULL");
    // The budget is given back: the other client is still served.
    reader
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut reader).await, "still here");
    eventually("queued bytes given back", || async {
        queued_bytes(&app).await == 0
    })
    .await;
}

/// A message begun and never finished kept a connection (and the
/// fragments gathered so far) forever, since pings were still answered.
/// It now has the heartbeat timeout to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_message_does_not_keep_a_connection() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "echo",
        json!({"on_message": "echo", "heartbeat": {"interval_ms": 100, "timeout_ms": 500}}),
    )
    .await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    // A finished fragmented message is served as usual.
    for (part, fin) in [("hel", false), ("lo", true)] {
        let op = if fin {
            OpCode::Data(Data::Continue)
        } else {
            OpCode::Data(Data::Text)
        };
        c.send(Message::Frame(Frame::message(
            part.as_bytes().to_vec(),
            op,
            fin,
        )))
        .await
        .unwrap();
    }
    assert_eq!(next_text(&mut c).await, "hello");
    // Then a first fragment alone; pings are still answered while we read.
    c.send(Message::Frame(Frame::message(
        b"never ends".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    let t = tokio::time::Instant::now();
    let (code, reason) = closed_with(&mut c).await;
    assert_eq!((code, reason.as_str()), (1008, "message left unfinished"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let closed = activity_until(&app, "echo", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(closed[0]["data"]["error"]["code"], "WS_MESSAGE_INCOMPLETE");
}

/// The spec's limits have maxima, checked when it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_limits_past_their_maxima_are_refused() {
    let app = spawn_app().await;
    ws_element(&app, "chat", json!({})).await;
    let before = app.state_of("acme", "chat").await;
    for spec in [
        json!({"connection": {"send_queue": 4097}}),
        json!({"connection": {"idle_timeout_ms": 86_400_001u64}}),
        json!({"heartbeat": {"interval_ms": 300_001}}),
        json!({"heartbeat": {"timeout_ms": 900_001}}),
        json!({"connection": {"max_message_bytes": 16_777_217}}),
        // Within the schema, past this server's ceiling (1 MiB).
        json!({"connection": {"max_message_bytes": 1_048_577}}),
    ] {
        let got = app
            .patch("/api/acme/chat/ops/update", json!({"spec": spec}))
            .await;
        assert_error(&got, 422, "SPEC_INVALID");
        let got = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "websocket", "slug": "other", "spec": spec}),
            )
            .await;
        assert_error(&got, 422, "SPEC_INVALID");
    }
    assert_eq!(app.state_of("acme", "chat").await, before);
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"connection": {"send_queue": 4096, "max_message_bytes": 1_048_576},
                            "heartbeat": {"interval_ms": 300_000, "timeout_ms": 900_000}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "the maxima themselves are fine: {v}");
}

/// The operator raises the message ceiling up to the schema's 16 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_raises_the_message_ceiling() {
    let app = spawn_app_with(|c| c.limits.max_ws_message_bytes = 16 << 20).await;
    ws_element(
        &app,
        "chat",
        json!({"connection": {"max_message_bytes": 16_777_216}}),
    )
    .await;
}
