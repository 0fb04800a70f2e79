//! Writers of one element queue, in order (issue 9): concurrent updates
//! all succeed, each a version of its own, none lost.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_element_all_land() {
    let app = spawn_app().await;
    app.with_chat().await;
    let n = 16;
    let writes = (0..n).map(|i| {
        let app = &app;
        async move {
            let body = if i % 2 == 0 {
                json!({"spec": {"connection": {"max_connections": 100 + i}}})
            } else {
                json!({"meta": {format!("k{i}"): i}})
            };
            let path = if i % 2 == 0 {
                "/api/acme/chat/ops/update"
            } else {
                "/api/acme/chat/ops/update_meta"
            };
            app.patch(path, body).await
        }
    });
    let answers = futures::future::join_all(writes).await;
    for (s, v) in &answers {
        assert_eq!(*s, StatusCode::OK, "{v}");
    }
    let mut versions: Vec<i64> = answers
        .iter()
        .step_by(2)
        .map(|(_, v)| v["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), n / 2, "each update has its own version");
    let (_, el) = app.get("/api/acme/chat").await;
    assert_eq!(el["version"], 1 + n as i64 / 2);
    let meta = el["meta"].as_object().unwrap();
    assert_eq!(meta.len(), n / 2, "no metadata write lost: {meta:?}");
    let (_, hist) = app
        .get("/api/acme/chat/ops/version?history=true&limit=100")
        .await;
    assert_eq!(hist["versions"].as_array().unwrap().len(), 1 + n / 2);
}

/// Across nodes the row lock queues them (PostgreSQL only).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_through_two_nodes_all_land() {
    let Some((a, b)) = spawn_cluster().await else {
        eprintln!("needs TEST_DATABASE_URL (PostgreSQL); skipped");
        return;
    };
    a.with_chat().await;
    let n = 12;
    let writes = (0..n).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        async move {
            node.patch(
                "/api/acme/chat/ops/update",
                json!({"spec": {"connection": {"max_connections": 100 + i}}}),
            )
            .await
        }
    });
    for (s, v) in futures::future::join_all(writes).await {
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, el) = a.get("/api/acme/chat").await;
    assert_eq!(el["version"], 1 + n as i64);
}

/// An update that moves nothing (issue 9: it keeps the attachment caches
/// and the releases) still sees what is attached; a modifier's own update
/// is not such a change, and applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_updates_keep_modifiers_and_a_modifier_update_applies_at_once() {
    use elementd::model::Role;
    use reqwest::Method;
    let app = spawn_app().await;
    app.with_chat().await;
    let limit = crate::fixtures::spec("rate-limit-roomy");
    app.element("acme", "rate-limit", "rl", limit).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"add": [{"ref": "rl"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let get = |token: String| {
        let app = &app;
        async move {
            let r = app.call(Method::GET, "/api/acme/chat", Some(&token), None);
            r.await.0
        }
    };
    for i in 0..3 {
        let spec = json!({"spec": {"connection": {"max_connections": 50 + i}}});
        let (s, v) = app.patch("/api/acme/chat/ops/update", spec).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, composed) = app.get("/api/acme/chat/ops/attachments").await;
    assert!(composed.to_string().contains("\"rl\""), "{composed}");
    let spec = json!({"spec": {"limit": 1, "window_seconds": 60}});
    let (s, v) = app.patch("/api/acme/rl/ops/update", spec).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let member = app.token("acme", Role::Member).await;
    assert_eq!(get(member.clone()).await, StatusCode::OK);
    assert_eq!(get(member).await, StatusCode::TOO_MANY_REQUESTS);
}
