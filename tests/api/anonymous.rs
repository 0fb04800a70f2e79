//! Traffic without a token cannot make the server write a row per
//! request (issue 8, item 9): its events are sampled per element, kind
//! and second, its runs folded, and an address-keyed rate limit holds it.

use crate::helpers::*;
use crate::ws_client::*;
use reqwest::Method;
use serde_json::json;
use sqlx::Row;

async fn rows(app: &TestApp, element_id: &str) -> (i64, i64, i64) {
    let activity =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM activity WHERE element_id = $1")
            .bind(element_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .get::<i64, _>("n");
    let runs = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(count), 0) AS BIGINT) AS c \
         FROM runs WHERE element_id = $1 AND op = 'receive'",
    )
    .bind(element_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    (activity, runs.get("n"), runs.get("c"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_receive_floods_write_a_sample() {
    let app = spawn_app().await;
    let el = app
        .element_in_new_circle("acme", "websocket", "open", json!({"path": "/open"}))
        .await;
    let id = el["id"].as_str().unwrap().to_string();
    let n = 300;
    for i in 0..n {
        let (s, v) = app
            .call(
                Method::POST,
                "/api/acme/open/ops/receive",
                None,
                Some(json!({"message": format!("m{i}")})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // The first call of a later second (on the server's clock) carries
    // the count of those skipped.
    app.advance(std::time::Duration::from_secs(1));
    let (s, _) = app
        .call(
            Method::POST,
            "/api/acme/open/ops/receive",
            None,
            Some(json!({"message": "late"})),
        )
        .await;
    assert_eq!(s, 200);
    let n = n + 1;
    // stats flushes the recorder, and still counts every run.
    let (s, stats) = app.get("/api/acme/open/ops/stats").await;
    assert_eq!(s, 200, "{stats}");
    let (activity, run_rows, runs) = rows(&app, &id).await;
    assert_eq!(stats["runs"].as_i64(), Some(n), "{stats}");
    assert_eq!(runs, n, "every run is counted");
    assert!(run_rows < 40, "runs folded: {run_rows} rows for {n} calls");
    // Three events per call (started, message, completed) are sampled.
    assert!(activity < 150, "{activity} activity rows for {n} calls");
    let (_, v) = app
        .get("/api/acme/open/ops/activity?type=op.completed&limit=500")
        .await;
    let kept: Vec<_> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "receive")
        .collect();
    let skipped: u64 = kept
        .iter()
        .filter_map(|e| e["data"]["unpersisted_before"].as_u64())
        .sum();
    assert_eq!(
        kept.len() as u64 + skipped,
        n as u64,
        "kept events and the skipped ones they count: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_are_sampled_and_held_to_an_ip_limit() {
    let app = spawn_app().await;
    let el = app
        .element_in_new_circle(
            "acme",
            "websocket",
            "chat",
            json!({"path": "/chat", "auth": {"mode": "token"}}),
        )
        .await;
    let id = el["id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        assert_eq!(refused(&app, "/ws/acme/chat", None).await.0, 401);
    }
    app.get("/api/acme/chat/ops/stats").await;
    let (activity, _, _) = rows(&app, &id).await;
    assert!(activity < 60, "{activity} rows for 200 refusals");
    let (s, metrics) = app.get_text("/metrics").await;
    assert_eq!(s, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("elementd_ws_rejected_count{")
                && l.contains("slug=\"chat\"")
                && l.ends_with(" 200")),
        "every refusal is counted: {metrics}"
    );
    // An attached limit keyed by address counts refused attempts too.
    app.attach(
        "chat",
        "rate-limit",
        "per-ip",
        json!({"limit": 3, "window_seconds": 60, "key": "ip"}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(refused(&app, "/ws/acme/chat", None).await.0, 401);
    }
    let (status, body) = refused(&app, "/ws/acme/chat", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
}
