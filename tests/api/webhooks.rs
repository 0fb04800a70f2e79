//! Webhooks (SPEC 10.2) against a real HTTP receiver on 127.0.0.1: signed
//! deliveries checked by an independent implementation (the
//! `standardwebhooks` crate), cascades, retries while the receiver is
//! down, failure and redelivery, `test`, the outbox's bound, and two nodes
//! (webhook_rules.rs: specs refused, who may read, secrets).

use crate::fixtures::assert_webhook_shape;
use crate::helpers::*;
use crate::ws_client::eventually;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signing key as the sensitive variable holds it.
const KEY_BYTES: &[u8] = b"a-webhook-key-of-32-bytes-long!!";

pub(crate) fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY_BYTES)
    )
}

/// What the receiver answers.
pub(crate) const UP: u8 = 0;
pub(crate) const FAILING: u8 = 1;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    headers: HeaderMap,
    body: String,
    /// The status the receiver answered it with.
    answered: u16,
}

impl Got {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub(crate) fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }
}

#[derive(Clone)]
pub(crate) struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    mode: Arc<AtomicU8>,
}

impl Receiver {
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
    pub(crate) fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
    /// Waits until `n` requests answered 2xx hold events of `kind`.
    pub(crate) async fn wait_for(&self, kind: &str, n: usize) -> Vec<Got> {
        for _ in 0..300 {
            let hits: Vec<Got> = self
                .got()
                .into_iter()
                .filter(|g| g.answered < 300 && g.json()["type"] == kind)
                .collect();
            if hits.len() >= n {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {n} deliveries of {kind}; got {:?}", self.got());
    }
}

/// A receiver on `port` (0: any), recording every request.
pub(crate) async fn receiver_on(
    port: u16,
    mode: Arc<AtomicU8>,
    got: Arc<Mutex<Vec<Got>>>,
) -> Receiver {
    let (g, m) = (got.clone(), mode.clone());
    let route = axum::routing::post(move |headers: HeaderMap, body: String| {
        let (g, m) = (g.clone(), m.clone());
        async move {
            let status = match m.load(Ordering::SeqCst) {
                UP => AxStatus::NO_CONTENT,
                _ => AxStatus::INTERNAL_SERVER_ERROR,
            };
            g.lock().unwrap().push(Got {
                headers,
                body,
                answered: status.as_u16(),
            });
            status
        }
    });
    let router = axum::Router::new().route("/hook", route);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Receiver { port, got, mode }
}

pub(crate) async fn receiver() -> Receiver {
    receiver_on(0, Arc::new(AtomicU8::new(UP)), Default::default()).await
}

/// Circle acme with the websocket `chat`, the key as the sensitive
/// variable `hook-key`, and the webhook `hooks` attached to chat.
pub(crate) async fn acme_with_webhook(app: &TestApp, url: &str, extra: Value) {
    app.with_chat().await;
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": whsec(), "sensitive": true}),
    )
    .await;
    let mut patch = json!({
        "url": url,
        "events": ["element.updated", "ws.connection.*"],
        "max_backoff_s": 1,
    });
    for (k, v) in extra.as_object().unwrap() {
        patch[k] = v.clone();
    }
    let spec = crate::fixtures::spec_with("webhook-local", patch);
    app.element("acme", "webhook", "hooks", spec).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"add": [{"ref": "hooks"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Verifies a request the way a receiver would, with code that is not
/// ours.
pub(crate) fn verify(g: &Got) {
    let wh = standardwebhooks::Webhook::new(&whsec()).unwrap();
    wh.verify(g.body.as_bytes(), &g.headers)
        .unwrap_or_else(|e| panic!("signature of {g:?}: {e}"));
    // Tampering is noticed: the check can fail.
    let tampered = g.body.replacen('{', "{ ", 1);
    assert!(wh.verify(tampered.as_bytes(), &g.headers).is_err());
}

pub(crate) async fn update_chat(app: &TestApp, n: u64) {
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"connection": {"max_connections": 100 + n}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

pub(crate) async fn deliveries(app: &TestApp) -> Value {
    let (s, v) = app.get("/api/acme/hooks/ops/deliveries").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_event_is_delivered_signed() {
    let app = spawn_app().await;
    let r = receiver().await;
    acme_with_webhook(&app, &r.url(), json!({})).await;
    update_chat(&app, 1).await;
    let got = r.wait_for("element.updated", 1).await;
    let g = &got[0];
    verify(g);
    let body = g.json();
    assert_eq!(g.id(), body["id"], "webhook-id is the event's id");
    assert_eq!(body["data"]["id"], body["id"]);
    assert_eq!(body["data"]["element"]["slug"], "chat");
    assert!(body["timestamp"].is_string());
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "type", "timestamp", "data"]
    );
    // Its whole shape is the one a receiver is told to expect.
    assert_webhook_shape("element.updated", &body);

    // A runtime event goes through the recorder's batches: delivered too.
    let ws = app.base.replace("http://", "ws://");
    let (mut c, _) = tokio_tungstenite::connect_async(format!("{ws}/ws/acme/~draft/ws"))
        .await
        .unwrap();
    let opened = r.wait_for("ws.connection.opened", 1).await;
    verify(&opened[0]);
    assert_webhook_shape("ws.connection.opened", &opened[0].json());
    let _ = c.close(None).await;
    let closed = r.wait_for("ws.connection.closed", 1).await;
    assert_webhook_shape("ws.connection.closed", &closed[0].json());

    // Kinds it did not ask for are not sent: a readme change.
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/readme_update",
            json!({"content": "# chat"}),
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
    let d = deliveries(&app).await;
    let rows = d["deliveries"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["type"] != "element.readme_updated"));
    let updated = rows
        .iter()
        .find(|r| r["type"] == "element.updated")
        .unwrap();
    assert_eq!(updated["id"], body["id"]);
    assert_eq!(updated["status"], "delivered");
    assert_eq!(updated["attempts"], 1);
    assert_eq!(updated["last_status"], 204);
    assert!(updated["next_attempt_at"].is_null());
    assert_eq!(d["dropped"], 0);
    // Newest first.
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);

    // The key reached no log line, no answer and no event.
    let key_b64 = whsec();
    let (_, activity) = app.get_text("/api/acme/ops/activity?limit=200").await;
    for text in [captured_logs(), d.to_string(), activity] {
        assert!(!text.contains(&key_b64[6..]), "the key leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_the_circle_cascades_to_its_elements() {
    let app = spawn_app().await;
    let r = receiver().await;
    app.with_chat().await;
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": "plain-secret-bytes", "sensitive": true}),
    )
    .await;
    app.element(
        "acme",
        "webhook",
        "hooks",
        crate::fixtures::spec_with("webhook-local", json!({"url": r.url()})),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/ops/compose",
            json!({"add": [{"ref": "hooks", "cascade_policy": "descendants"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.element("acme", "websocket", "other", json!({"path": "/other"}))
        .await;
    let got = r.wait_for("element.created", 1).await;
    assert_eq!(got[0].json()["data"]["element"]["slug"], "other");
    // A plain secret is its own bytes.
    standardwebhooks::Webhook::from_bytes(b"plain-secret-bytes".to_vec())
        .unwrap()
        .verify(got[0].body.as_bytes(), &got[0].headers)
        .unwrap();
    // The key's variable cannot go while the webhook signs with it.
    let before = app.state_of("acme", "hook-key").await;
    let got = app
        .delete("/api/acme/hook-key/ops/delete?confirm=true")
        .await;
    assert_error(&got, 409, "VARIABLE_IN_USE");
    assert!(got.1.to_string().contains("webhook 'hooks'"), "{}", got.1);
    assert_eq!(app.state_of("acme", "hook-key").await, before);
    // Deliveries are per webhook and event: one each, however reached.
    update_chat(&app, 2).await;
    let updated = r.wait_for("element.updated", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let same: Vec<Got> = r
        .got()
        .into_iter()
        .filter(|g| g.id() == updated[0].id())
        .collect();
    assert_eq!(same.len(), 1, "delivered once");
    // A disabled webhook writes no new deliveries.
    let (s, v) = app
        .patch(
            "/api/acme/hooks/ops/update",
            json!({"spec": {"enabled": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, d) = app.get("/api/acme/hooks/ops/deliveries").await;
    let rows = d["deliveries"].as_array().unwrap().len();
    update_chat(&app, 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, d) = app.get("/api/acme/hooks/ops/deliveries").await;
    assert_eq!(d["deliveries"].as_array().unwrap().len(), rows, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_with_the_same_ids() {
    let app = spawn_app().await;
    // Nothing listens on the port at first: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    acme_with_webhook(&app, &url, json!({})).await;
    for n in 0..5 {
        update_chat(&app, n).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let d = deliveries(&app).await;
    let pending: Vec<&Value> = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "element.updated")
        .collect();
    assert_eq!(pending.len(), 5, "{d}");
    for row in &pending {
        assert_eq!(row["status"], "pending", "{d}");
        assert!(row["attempts"].as_i64().unwrap() >= 1, "{d}");
        assert!(row["last_status"].is_null(), "{d}");
        assert!(row["next_attempt_at"].is_string(), "{d}");
    }

    // Then it answers 500 for a while, then 2xx.
    let mode = Arc::new(AtomicU8::new(FAILING));
    let r = receiver_on(port, mode.clone(), Default::default()).await;
    for _ in 0..100 {
        if r.got().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = deliveries(&app).await;
    assert!(d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["last_status"] == 500 && r["status"] == "pending"));
    mode.store(UP, Ordering::SeqCst);
    let ok = r.wait_for("element.updated", 5).await;
    // Every event got through: five distinct ids, each signed.
    let mut ids: Vec<String> = ok.iter().map(Got::id).collect();
    ids.sort();
    ids.dedup();
    for _ in 0..100 {
        let d = deliveries(&app).await;
        let rows = d["deliveries"].as_array().unwrap().clone();
        if rows
            .iter()
            .filter(|r| r["type"] == "element.updated")
            .all(|r| r["status"] == "delivered")
        {
            for row in rows.iter().filter(|r| r["type"] == "element.updated") {
                assert!(row["attempts"].as_i64().unwrap() >= 2, "{row}");
                assert!(ids.contains(&row["id"].as_str().unwrap().to_string()));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ids.len(), 5, "{ids:?}");
    for g in r.got() {
        verify(&g);
        // Every attempt of an event carried the event's id.
        assert_eq!(g.id(), g.json()["id"]);
    }
    // An event answered 500 came again, under the same id, and went in.
    let all = r.got();
    assert!(
        all.iter().any(|failed| failed.answered == 500
            && all
                .iter()
                .any(|ok| ok.answered == 204 && ok.id() == failed.id())),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_fails_after_max_attempts() {
    let app = spawn_app().await;
    let r = receiver_on(0, Arc::new(AtomicU8::new(FAILING)), Default::default()).await;
    acme_with_webhook(&app, &r.url(), json!({"max_attempts": 2})).await;
    update_chat(&app, 1).await;
    for _ in 0..100 {
        let d = deliveries(&app).await;
        let row = d["deliveries"][0].clone();
        if row["status"] == "failed" {
            assert_eq!(row["attempts"], 2);
            assert_eq!(row["last_status"], 500);
            assert!(row["next_attempt_at"].is_null());
            assert_eq!(r.got().len(), 2);
            // Redeliver makes it pending again, and it is tried once more.
            let id = row["id"].clone();
            let (s, v) = app
                .post("/api/acme/hooks/ops/redeliver", json!({"id": id}))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["status"], "pending");
            assert_eq!(v["attempts"], 0);
            r.mode.store(UP, Ordering::SeqCst);
            let got = r.wait_for("element.updated", 1).await;
            assert_eq!(got[0].id(), id);
            assert_eq!(r.got().len(), 3);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never failed: {}", deliveries(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sends_one_webhook_test_event_to_that_webhook() {
    let app = spawn_app().await;
    let r = receiver().await;
    acme_with_webhook(&app, &r.url(), json!({"events": ["element.created"]})).await;
    let (s, v) = app.post("/api/acme/hooks/ops/test", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["type"], "webhook.test");
    assert_eq!(v["status"], "pending");
    let got = r.wait_for("webhook.test", 1).await;
    assert_eq!(got.len(), 1);
    verify(&got[0]);
    assert_eq!(got[0].id(), v["id"]);
    assert_eq!(got[0].json()["data"]["data"]["webhook"], "hooks");
    assert_webhook_shape("webhook.test", &got[0].json());
    // The event is in the activity, like any other.
    let (_, activity) = app.get_text("/api/acme/hooks/ops/activity").await;
    assert!(activity.contains(v["id"].as_str().unwrap()), "{activity}");
    // A second webhook of the circle, which takes every kind, does not
    // get the first one's test.
    app.element(
        "acme",
        "webhook",
        "all",
        crate::fixtures::spec_with("webhook-local", json!({"url": r.url(), "events": ["*"]})),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/ops/compose",
            json!({"add": [{"ref": "all", "cascade_policy": "descendants"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = app.post("/api/acme/hooks/ops/test", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    r.wait_for("webhook.test", 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        r.got()
            .iter()
            .filter(|g| g.json()["type"] == "webhook.test")
            .count(),
        2
    );
    let (_, d) = app.get("/api/acme/all/ops/deliveries").await;
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] != "webhook.test"),
        "{d}"
    );
}

/// The outbox keeps at most 10,000 pending deliveries per webhook: the
/// oldest are dropped and counted, and `deliveries` says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_bounded_per_webhook() {
    let app = spawn_app().await;
    // A receiver that never answers 2xx keeps everything pending.
    let r = receiver_on(0, Arc::new(AtomicU8::new(FAILING)), Default::default()).await;
    acme_with_webhook(&app, &r.url(), json!({"max_backoff_s": 86400})).await;
    let (_, chat) = app.get("/api/acme/chat/ops/get").await;
    let (_, circle) = app.get("/api/acme").await;
    // Written the way the recorder writes runtime events: in batches.
    let events: Vec<std::sync::Arc<elementd::model::Event>> = (0..10_050)
        .map(|_| {
            let mut e = elementd::model::Event::new(
                "acme",
                &elementd::ids::CircleId::stored(circle["id"].as_str().unwrap()),
                elementd::event_kind::EventKind::WsConnectionOpened,
            );
            e.element_id = Some(elementd::ids::ElementId::stored(
                chat["id"].as_str().unwrap(),
            ));
            e.slug = Some("chat".into());
            std::sync::Arc::new(e)
        })
        .collect();
    let first = events[0].id.clone();
    let last = events[events.len() - 1].id.clone();
    for batch in events.chunks(512) {
        app.db.write_records(batch, &[], &[]).await.unwrap();
    }
    let d = deliveries(&app).await;
    assert_eq!(d["dropped"], 50, "{}", d["dropped"]);
    assert_eq!(d["deliveries"][0]["id"], last.as_str());
    let (_, oldest) = app
        .get(&format!(
            "/api/acme/hooks/ops/deliveries?before={}&limit=1",
            events[50].id
        ))
        .await;
    assert_eq!(
        oldest["deliveries"].as_array().unwrap().len(),
        0,
        "{oldest}"
    );
    let (s, v) = app
        .post("/api/acme/hooks/ops/redeliver", json!({"id": first}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the oldest was dropped: {v}");
}

/// Two nodes on one PostgreSQL database both run the worker: each
/// delivery is claimed by one of them, so the normal case delivers once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_event_once() {
    let Some((a, b)) = spawn_cluster().await else {
        return;
    };
    let r = receiver().await;
    acme_with_webhook(&a, &r.url(), json!({})).await;
    for n in 0..30 {
        update_chat(if n % 2 == 0 { &a } else { &b }, n).await;
    }
    let got = r.wait_for("element.updated", 30).await;
    // Time for a second claim to show, had there been one.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut ids: Vec<String> = r.got().iter().map(Got::id).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(all, ids.len(), "some event was delivered twice");
    assert!(got.len() >= 30);
    let d = deliveries(&b).await;
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "delivered" && r["attempts"] == 1),
        "{d}"
    );
}

/// Issue 23's hard case: three nodes on PostgreSQL, the receiver down,
/// the third node (its own process) killed with -9 while it holds
/// claims. Once the receiver is up every event arrives, and none is
/// accepted twice: the survivors take the dead node's claims when its
/// heartbeat goes stale, not after the whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_outage_leaves_its_deliveries_to_the_others() {
    let Some((a, b)) = spawn_cluster().await else {
        return;
    };
    let r = receiver().await;
    r.mode.store(FAILING, Ordering::SeqCst);
    acme_with_webhook(&a, &r.url(), json!({"max_attempts": 50})).await;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.env("ELEMENTD_DATA_DIR", &a.config.data_dir)
        .env("ELEMENTD_OUTBOUND_ALLOW", "127.0.0.0/8");
    let url = a.config.database_url();
    let (mut child, base, _) = crate::cli::start_serve(c, Some(&url));
    let ready: Value = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = ready["cluster"]["node_id"].as_str().unwrap().to_string();
    for n in 0..12 {
        update_chat(if n % 2 == 0 { &a } else { &b }, n).await;
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let held = || {
        let (pool, dead) = (pool.clone(), dead.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM webhook_outbox WHERE lease_node = $1 AND status = 'pending'",
            )
            .bind(dead)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Which node wins a claim depends on the workers' timing, so the test
    // hands every pending delivery to the third node, as if it had claimed
    // them mid-send, then kills it.
    let count = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM webhook_outbox")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    eventually("the events are in the outbox", || async {
        count().await >= 12
    })
    .await;
    let lease_until = chrono::Utc::now().timestamp_millis() + 60_000;
    sqlx::query(
        "UPDATE webhook_outbox SET lease_node = $1, lease_until = $2 WHERE status = 'pending'",
    )
    .bind(&dead)
    .bind(lease_until)
    .execute(&pool)
    .await
    .unwrap();
    assert!(held().await > 0, "the third node holds claims");
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    r.mode.store(UP, Ordering::SeqCst);

    // Each event once with 2xx; the dead node's too, within the node-dead
    // timeout (10 s) and a few retries, far inside the 60 s lease.
    let mut accepted: Vec<String> = Vec::new();
    for _ in 0..300 {
        accepted = r
            .got()
            .into_iter()
            .filter(|g| g.answered < 300 && g.json()["type"] == "element.updated")
            .map(|g| g.id())
            .collect();
        if accepted.len() >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed.elapsed() < Duration::from_secs(45),
        "{:?}",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ids: Vec<String> = r
        .got()
        .into_iter()
        .filter(|g| g.answered < 300 && g.json()["type"] == "element.updated")
        .map(|g| g.id())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    let rows: Vec<(String, String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT event_id, status, lease_node, attempts, next_attempt_at FROM webhook_outbox",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        (all, ids.len()),
        (12, 12),
        "each event accepted once: {accepted:?} {rows:?} dead {dead}"
    );
    assert_eq!(held().await, 0);
}

/// Message events are sampled out of activity (one a second), but a
/// webhook that subscribes to them gets every one, batched by the
/// recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_event_reaches_a_webhook_that_wants_them() {
    use crate::ws_client::{connect, send_text, wait_connections};
    let app = spawn_app().await;
    let r = receiver().await;
    acme_with_webhook(&app, &r.url(), json!({"events": ["ws.message.*"]})).await;
    let mut c = connect(&app, "/ws/acme/ws").await;
    wait_connections(&app, "acme", "chat", 1).await;
    for i in 0..25 {
        send_text(&mut c, &format!("m{i}")).await;
    }
    let got = r.wait_for("ws.message.received", 25).await;
    let mut texts: Vec<String> = got
        .iter()
        .map(|g| {
            g.json()["data"]["data"]["message"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    texts.sort_by_key(|t| t[1..].parse::<u32>().unwrap_or(0));
    let want: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    let mut ids: Vec<String> = got.iter().map(Got::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "one delivery per message");
    // Activity keeps far fewer (sampled).
    let (_, a) = app
        .get("/api/acme/chat/ops/activity?type=ws.message.received&limit=500")
        .await;
    assert!(a["events"].as_array().unwrap().len() < 25, "{a}");
}
