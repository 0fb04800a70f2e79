//! A new user's trial (issue 18): the small truths the README promises.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Callers' mistakes are their own count; they do not make a healthy
/// element look broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_the_elements_not_its_callers() {
    let app = spawn_app().await;
    app.with_chat().await;
    for _ in 0..12 {
        let r = app
            .call(
                Method::POST,
                "/api/acme/chat/ops/broadcast",
                Some(&app.admin),
                Some(json!({"bogus": true})),
            )
            .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
        let r = app
            .call(
                Method::GET,
                "/api/acme/chat/ops/stats",
                Some("edt_wrong"),
                None,
            )
            .await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/send",
            Some(&app.admin),
            Some(json!({"connection_id": "nobody", "message": "hi", "env": "draft"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    let (s, v) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["health"], "ok", "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["client_errors"].as_i64().unwrap() >= 13, "{v}");
    let (_, all) = app.get("/api/acme/ops/batch_stats").await;
    let chat = all["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == "chat")
        .unwrap()
        .clone();
    assert_eq!(chat["health"], "ok", "{chat}");
    assert!(
        all["aggregate"]["client_errors"].as_i64().unwrap() >= 13,
        "{all}"
    );
}
