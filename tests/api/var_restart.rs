//! After a restart, changing a variable still reconnects only the links
//! of the environments whose value changed: the runtime learns every
//! variable's values when it starts, before its hubs run.

use crate::helpers::{fresh_database, init_logs, test_config};
use crate::var_types::{paths, upstream};
use crate::ws_client::eventually;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Calls `path` on `base` as `token`; the answer must be a success.
async fn call(base: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Waits until `feed`'s link is open in every environment.
async fn links_open(base: &str, token: &str) {
    for env in ["draft", "demo", "live"] {
        let path = format!("/api/acme/feed/ops/connections?env={env}");
        eventually(&format!("the {env} link opens"), || async {
            let v = call(base, token, Method::GET, &path, None).await;
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|c| c["kind"] == "link" && c["state"] == "open")
            })
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_change_relinks_only_its_environment() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    let (port, mut rx) = upstream().await;
    let at = |p: &str| format!("ws://127.0.0.1:{port}/{p}");

    let server = elementd::server::Server::start(config.clone())
        .await
        .unwrap();
    let admin = server.admin_token.clone().unwrap();
    let base = format!("http://{}", server.addr);
    let post = Method::POST;
    call(
        &base,
        &admin,
        post.clone(),
        "/api/ops/create",
        Some(json!({"element_type": "circle", "slug": "acme"})),
    )
    .await;
    let values = json!({"value": at("base"),
        "environments": {"demo": {"value": at("demo")}, "live": {"value": at("live")}}});
    call(
        &base,
        &admin,
        post.clone(),
        "/api/acme/ops/create",
        Some(json!({"element_type": "variable", "slug": "upstream", "spec": values})),
    )
    .await;
    call(
        &base,
        &admin,
        post.clone(),
        "/api/acme/ops/create",
        Some(json!({"element_type": "websocket", "slug": "feed",
                    "spec": {"url": "{{ vars.upstream }}"}})),
    )
    .await;
    for (from, to) in [("draft", "demo"), ("demo", "live")] {
        call(
            &base,
            &admin,
            post.clone(),
            "/api/acme/feed/ops/source/promote",
            Some(json!({"from": from, "to": to})),
        )
        .await;
    }
    links_open(&base, &admin).await;
    server.stop().await.unwrap();
    paths(&mut rx, Duration::from_millis(300)).await;

    let server = elementd::server::Server::start(config).await.unwrap();
    let base = format!("http://{}", server.addr);
    links_open(&base, &admin).await;
    let mut again = paths(&mut rx, Duration::from_millis(500)).await;
    again.sort();
    assert_eq!(again, ["/base", "/demo", "/live"], "each link came back");
    // The first change since the start: only demo's value moves.
    call(
        &base,
        &admin,
        Method::PATCH,
        "/api/acme/upstream/ops/update",
        Some(json!({"spec": {"environments": {"demo": {"value": at("demo-2")}}}})),
    )
    .await;
    let seen = paths(&mut rx, Duration::from_millis(1500)).await;
    assert_eq!(seen, ["/demo-2"], "only demo reconnected");
    server.stop().await.unwrap();
}
