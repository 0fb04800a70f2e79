//! Live events over Server-Sent Events, and resuming with Last-Event-ID.

use crate::helpers::*;
use elementd::model::Role;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Reads SSE frames until `n` events arrived (or a timeout).
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub async fn open(app: &TestApp, path: &str, last_id: Option<&str>) -> SseReader {
        Self::open_as(app, &app.admin, path, last_id).await
    }

    pub async fn open_as(
        app: &TestApp,
        token: &str,
        path: &str,
        last_id: Option<&str>,
    ) -> SseReader {
        let mut req = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(token);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event of this kind, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let (_, k, v) = self.next().await;
            if k == kind {
                return v;
            }
        }
    }

    pub async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return (id, kind, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("an event within 10 s")
                .expect("stream open")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_events_stream_in_order() {
    let app = spawn_app().await;
    app.with_chat().await;
    let mut sse = SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    let (s, _) = app
        .patch("/api/acme/chat/ops/update", json!({"spec": {"path": "/x"}}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, k1, started) = sse.next().await;
    let (_, k2, updated) = sse.next().await;
    let (_, k3, done) = sse.next().await;
    assert_eq!(
        [k1.as_str(), k2.as_str(), k3.as_str()],
        ["op.started", "element.updated", "op.completed"]
    );
    let inv = started["invocation_id"].clone();
    assert!(inv.is_string());
    for e in [&started, &updated, &done] {
        assert_eq!(e["invocation_id"], inv);
        assert_eq!(e["op"], "update");
        assert_eq!(e["element"]["slug"], "chat");
        assert_eq!(e["actor"]["kind"], "token");
        assert!(e["trace_id"].is_string() && e["timestamp"].is_string());
    }
    assert_eq!(updated["data"]["version"], 2);
    // A failing op ends in exactly one failed event.
    app.post("/api/acme/chat/ops/restore", json!({"version": 9}))
        .await;
    let (_, k, _) = sse.next().await;
    assert_eq!(k, "op.started");
    let (_, k, failed) = sse.next().await;
    assert_eq!(k, "op.failed");
    assert_eq!(failed["data"]["code"], "VERSION_NOT_FOUND");
    // The element stream carries nothing of other elements.
    app.element("acme", "websocket", "other", json!({"path": "/other"}))
        .await;
    app.patch("/api/acme/other/ops/update", json!({"spec": {}}))
        .await;
    app.get("/api/acme/chat/ops/get").await;
    let (_, k, e) = sse.next().await;
    assert_eq!(
        (k.as_str(), e["op"].as_str(), e["element"]["slug"].as_str()),
        ("op.started", Some("get"), Some("chat"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_from_activity() {
    let app = spawn_app().await;
    app.with_chat().await;
    let mut sse = SseReader::open(&app, "/api/acme/ops/events", None).await;
    app.patch("/api/acme/chat/ops/update", json!({"spec": {}}))
        .await;
    let (first_id, _, _) = sse.next().await;
    let mut seen = vec![first_id.clone()];
    for _ in 0..2 {
        seen.push(sse.next().await.0);
    }
    drop(sse);
    // While nobody listens, more happens.
    app.patch("/api/acme/chat/ops/update", json!({"spec": {}}))
        .await;
    let mut again = SseReader::open(&app, "/api/acme/ops/events", Some(&first_id)).await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        let (id, kind, _) = again.next().await;
        replayed.push((id, kind));
    }
    assert_eq!(
        replayed[0].0, seen[1],
        "resumes right after the last seen id"
    );
    assert_eq!(replayed[1].0, seen[2]);
    let kinds: Vec<_> = replayed[2..].iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["op.started", "element.updated", "op.completed"]);
    let ids: Vec<_> = replayed.iter().map(|(i, _)| i.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "in order, no duplicates");
    // Then live events follow.
    app.get("/api/acme/chat").await;
    let (id, kind, _) = again.next().await;
    assert_eq!(kind, "op.started");
    assert!(id > ids[4]);
    let bad = app
        .client
        .get(format!("{}/api/acme/ops/events", app.base))
        .bearer_auth(&app.admin)
        .header("Last-Event-ID", "zzz")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // An empty one (EventSource before its first event) means "from now".
    let empty = app
        .client
        .get(format!("{}/api/acme/ops/events", app.base))
        .bearer_auth(&app.admin)
        .header("Last-Event-ID", "")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    let anon = app
        .client
        .get(format!("{}/api/acme/ops/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
}

/// A resume from far back is read from the activity table page by page;
/// every missed event arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_pages_through_a_long_backlog() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_, first) = app.get("/api/acme/chat/ops/activity?limit=1").await;
    let from = first["events"][0]["id"].as_str().unwrap().to_string();
    for n in 0..120 {
        let (s, _) = app
            .patch("/api/acme/chat/ops/update_meta", json!({"meta": {"n": n}}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    // Everything after `from`, oldest first, as activity holds it.
    let mut want = Vec::new();
    let mut before = String::new();
    loop {
        let q = if before.is_empty() {
            String::new()
        } else {
            format!("&before={before}")
        };
        let (_, v) = app
            .get(&format!("/api/acme/chat/ops/activity?limit=500{q}"))
            .await;
        let page = v["events"].as_array().unwrap().clone();
        let done = page.len() < 500;
        for e in &page {
            let id = e["id"].as_str().unwrap().to_string();
            if id > from {
                want.push(id);
            }
        }
        before = page
            .last()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .unwrap_or_default();
        if done || before <= from {
            break;
        }
    }
    want.reverse();
    assert!(
        want.len() >= 360,
        "more than one replay page: {}",
        want.len()
    );
    let mut sse = SseReader::open(&app, "/api/acme/chat/ops/events", Some(&from)).await;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let (id, _, _) = sse.next().await;
        got.push(id);
    }
    assert_eq!(got, want);
}

/// One token, or one circle, cannot hold unbounded event streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped() {
    let app = spawn_app_with(|c| {
        c.limits.max_streams_per_token = 2;
        c.limits.max_streams_per_circle = 3;
    })
    .await;
    app.with_chat().await;
    let viewer = app.token("acme", Role::Viewer).await;
    let other = app.token("acme", Role::Viewer).await;
    let path = "/api/acme/ops/events";
    let a = SseReader::open_as(&app, &viewer, path, None).await;
    let _b = SseReader::open_as(&app, &viewer, path, None).await;
    let over = app
        .call(reqwest::Method::GET, path, Some(&viewer), None)
        .await;
    assert_error(&over, 429, "TOO_MANY_STREAMS");
    // Another token may still open one, up to the circle's cap.
    let _c = SseReader::open_as(&app, &other, path, None).await;
    let over = app
        .call(reqwest::Method::GET, path, Some(&other), None)
        .await;
    assert_error(&over, 429, "TOO_MANY_STREAMS");
    assert!(over.1["error"]["retryable"].as_bool().unwrap());
    // A closed stream gives its place back (noticed on its next write).
    drop(a);
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = app
            .patch("/api/acme/chat/ops/update_meta", json!({"meta": {"x": 1}}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the place came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clients that each drop their stream and reconnect at once, as many as
/// the token's limit, all get their places back without any event being
/// written in between; one more than the limit still gets 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reopened_at_once_get_their_places() {
    const CAP: usize = 4;
    let app = spawn_app_with(|c| c.limits.max_streams_per_token = CAP).await;
    app.with_chat().await;
    let viewer = app.token("acme", Role::Viewer).await;
    let path = "/api/acme/ops/events";
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CAP)
        .map(|_| {
            let (client, url, token, refused) = (
                reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap(),
                format!("{}{path}", app.base),
                viewer.clone(),
                refused.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..40 {
                    let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                    if r.status() != StatusCode::OK {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(SseReader::open_as(&app, &viewer, path, None).await);
    }
    let over = app
        .call(reqwest::Method::GET, path, Some(&viewer), None)
        .await;
    assert_error(&over, 429, "TOO_MANY_STREAMS");
}
