//! Bad input at the edges: sizes, paths, routes, methods.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_and_changes_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = app.state_of("acme", "chat").await;
    let big = format!("{{\"spec\":{{\"path\":\"/{}\"}}}}", "a".repeat(1 << 20));
    let got = app
        .raw(Method::PATCH, "/api/acme/chat/ops/update", big)
        .await;
    assert_error(&got, 413, "BODY_TOO_LARGE");
    assert_eq!(got.1["error"]["class"], "limit");
    assert_eq!(app.state_of("acme", "chat").await, before);
    // Just under the limit is read (and then judged on its content).
    let near = format!(
        "{{\"spec\":{{\"path\":\"/{}\"}}}}",
        "a".repeat((1 << 20) - 64)
    );
    assert_error(
        &app.raw(Method::PATCH, "/api/acme/chat/ops/update", near)
            .await,
        422,
        "SPEC_INVALID",
    );
}

/// Sends a request line as written: HTTP clients normalise `..` away.
async fn raw_get(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        app.admin
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_400() {
    let app = spawn_app().await;
    app.with_chat().await;
    for path in [
        "/api/acme/../ops/get",
        "/api/acme/%2e%2e/ops/get",
        "/api/acme/..%2Fchat/ops/get",
        "/api/acme/ch%00at/ops/get",
        "/api/ac%00me/chat/ops/get",
        "/api/ACME/chat/ops/get",
        "/api/acme/%ff%fe/ops/get",
        "/api/../acme/ops/get",
    ] {
        let (status, body) = raw_get(&app, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["class"], "validation", "{path}: {body}");
    }
    assert_eq!(raw_get(&app, "/api/acme/chat/ops/get").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_ops_and_methods() {
    let app = spawn_app().await;
    app.with_chat().await;
    assert_error(&app.get("/nowhere").await, 404, "ROUTE_NOT_FOUND");
    assert_error(
        &app.get("/api/acme/chat/ops/fly").await,
        404,
        "OP_NOT_FOUND",
    );
    assert_error(&app.get("/api/ops/fly").await, 404, "OP_NOT_FOUND");
    assert_error(
        &app.get("/api/acme/chat/ops/update").await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/get", json!({})).await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_error(&app.get("/api/ops/create").await, 405, "METHOD_NOT_ALLOWED");
    assert_error(
        &app.post("/healthz", json!({})).await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_error(&app.get("/api/acme/ghost").await, 404, "ELEMENT_NOT_FOUND");
}
