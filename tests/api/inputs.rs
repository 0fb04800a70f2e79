//! Bad input found by probing the running server: each case answers the
//! envelope and changes nothing.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_aliases_apply_on_update_and_are_validated() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"max_connections": 7, "heartbeat_interval_ms": 4000}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["connection"]["max_connections"], 7, "{v}");
    assert_eq!(v["spec"]["heartbeat"]["interval_ms"], 4000, "{v}");
    assert!(v["spec"].get("max_connections").is_none(), "{v}");
    let before = app.state_of("acme", "chat").await;
    for bad in [
        json!({"max_connections": -1}),
        json!({"max_connections": "lots"}),
        json!({"heartbeat_interval_ms": "x"}),
    ] {
        let got = app
            .patch("/api/acme/chat/ops/update", json!({ "spec": bad }))
            .await;
        assert_error(&got, 422, "SPEC_INVALID");
    }
    assert_eq!(app.state_of("acme", "chat").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_url_path_and_protocols_are_checked() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let bad_specs = [
        json!({"url": "ws://"}),
        json!({"url": "ws://exa mple.com/"}),
        json!({"url": "wss://[::1"}),
        json!({"url": "http://example.com/"}),
        json!({"path": "/../x"}),
        json!({"path": "/a/./b"}),
        json!({"path": "/a//b"}),
        json!({"path": "/.."}),
        json!({"protocols": ["a b"]}),
        json!({"protocols": ["chat", "chat"]}),
        json!({"protocols": [""]}),
    ];
    for spec in bad_specs {
        let got = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "websocket", "slug": "w", "spec": spec}),
            )
            .await;
        assert_error(&got, 422, "SPEC_INVALID");
    }
    let (s, v) = app.get("/api/acme/w").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was created: {v}");
    // The good neighbours of those values still pass.
    for (slug, spec) in [
        ("a", json!({"url": "wss://[::1]:9000/feed?x=1"})),
        ("b", json!({"path": "/.well-known/live"})),
        ("c", json!({"protocols": ["v1.chat", "graphql-ws"]})),
    ] {
        app.element("acme", "websocket", slug, spec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_bodies_must_be_objects() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.patch("/api/acme/chat/ops/update", json!({"spec": {"path": "/b"}}))
        .await;
    let before = app.state_of("acme", "chat").await;
    let got = app
        .raw(Method::POST, "/api/acme/chat/ops/restore", "[1]")
        .await;
    assert_error(&got, 400, "INVALID_BODY");
    let got = app
        .raw(
            Method::POST,
            "/api/acme/ops/create",
            r#"["variable","seqslug",null,{"value":"x"},null]"#,
        )
        .await;
    assert_error(&got, 400, "INVALID_BODY");
    assert_eq!(app.state_of("acme", "chat").await, before);
    assert_eq!(app.get("/api/acme/seqslug").await.0, StatusCode::NOT_FOUND);
    // A field of the wrong type is named.
    let got = app
        .post("/api/acme/chat/ops/restore", json!({"version": "one"}))
        .await;
    assert_error(&got, 400, "INVALID_BODY");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("version"), "{message}");
    // Free-text fields have their own codes.
    let got = app
        .post(
            "/api/acme/chat/ops/disable",
            json!({"reason": "r".repeat(10_001)}),
        )
        .await;
    assert_error(&got, 400, "INVALID_REASON");
    assert_eq!(app.state_of("acme", "chat").await, before);
    // Compressed bodies are refused, not misread as bad JSON.
    let resp = app
        .client
        .post(format!("{}/api/acme/chat/ops/restore", app.base))
        .bearer_auth(&app.admin)
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let got = (status, resp.json().await.unwrap());
    assert_error(&got, 415, "UNSUPPORTED_ENCODING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_name_the_parameter() {
    let app = spawn_app().await;
    app.with_chat().await;
    let got = app.get("/api/acme/chat/ops/activity?limit=abc").await;
    assert_error(&got, 400, "INVALID_QUERY");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("'limit'"), "{message}");
    // Git routes answer with the same envelope.
    let got = app
        .get("/git/acme/chat.git/info/refs?service=git-upload-pack&service=git-receive-pack")
        .await;
    assert_error(&got, 400, "INVALID_QUERY");
    let got = app.get("/api/acme/chat/ops/source").await;
    assert_error(&got, 400, "INVALID_PATH");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("required"),
        "{}",
        got.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_answer_400_and_change_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    let message = |got: &(StatusCode, serde_json::Value)| {
        got.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // A misspelled parameter is named, with what the op takes.
    let got = app.get("/api/acme/chat/ops/activity?limt=5").await;
    assert_error(&got, 400, "INVALID_QUERY");
    let m = message(&got);
    let takes = m.split("activity takes ").nth(1).unwrap_or_default();
    assert!(m.contains("'limt'"), "{m}");
    for name in ["before", "limit", "type"] {
        assert!(takes.split(", ").any(|t| t == name), "{m}");
    }
    // An op that takes none says so; one known name does not carry another.
    let got = app.get("/api/acme/chat/ops/get?x=1").await;
    assert_error(&got, 400, "INVALID_QUERY");
    assert!(
        message(&got).contains("get takes no query parameters"),
        "{}",
        got.1
    );
    let got = app.get("/api/acme/ops/list?limit=5&sort=name").await;
    assert_error(&got, 400, "INVALID_QUERY");
    assert!(message(&got).contains("'sort'"), "{}", got.1);
    let got = app
        .get("/api/acme/chat/ops/presence?env=draft&rom=lobby")
        .await;
    assert_error(&got, 400, "INVALID_QUERY");
    // The platform's circle list, outside the op pipeline, too.
    assert_error(&app.get("/api/ops/list?limt=1").await, 400, "INVALID_QUERY");
    // A write with one is refused before it writes.
    let before = app.state_of("acme", "chat").await;
    let got = app
        .patch(
            "/api/acme/chat/ops/update?dry_run=true",
            json!({"spec": {"path": "/elsewhere"}}),
        )
        .await;
    assert_error(&got, 400, "INVALID_QUERY");
    assert_eq!(app.state_of("acme", "chat").await, before);
    // Without a token the answer is 401, not the op's parameter list.
    let got = app
        .call(
            Method::GET,
            "/api/acme/chat/ops/activity?limt=5",
            None,
            None,
        )
        .await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
    assert!(!got.1.to_string().contains("takes"), "{}", got.1);
    // What the ops declare still works.
    for ok in [
        "/api/acme/chat/ops/activity?limit=5&type=element.",
        "/api/acme/ops/list?limit=5&type=websocket",
        "/api/acme/chat/ops/presence?env=draft&room=lobby",
        "/api/acme/chat/ops/version?history=true&limit=2",
        "/api/ops/list?limit=1",
    ] {
        let (s, v) = app.get(ok).await;
        assert_eq!(s, StatusCode::OK, "{ok}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_head_and_allow() {
    let app = spawn_app().await;
    app.with_chat().await;
    for path in ["/api/acme/chat", "/api/acme/chat/ops/get", "/api/ops/list"] {
        let (s, _) = app.call(Method::HEAD, path, Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::OK, "HEAD {path}");
    }
    let allow = |path: &'static str, method: Method| {
        let app = &app;
        async move {
            let resp = app
                .client
                .request(method, format!("{}{path}", app.base))
                .bearer_auth(&app.admin)
                .send()
                .await
                .unwrap();
            let allow = resp
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string());
            let status = resp.status();
            let got = (status, resp.json().await.unwrap_or_default());
            assert_error(&got, 405, "METHOD_NOT_ALLOWED");
            allow
        }
    };
    for (path, method, expected) in [
        ("/api/acme/chat/ops/update", Method::GET, "PATCH"),
        ("/api/acme/chat/ops/get", Method::POST, "GET, HEAD"),
        ("/api/types", Method::POST, "GET, HEAD"),
        ("/git/acme/chat.git/git-upload-pack", Method::GET, "POST"),
    ] {
        let got = allow(path, method.clone()).await;
        assert_eq!(got.as_deref(), Some(expected), "{method} {path}");
    }
    // An op's name, as types and activity show it, works beside its path.
    for (path, method) in [
        ("/api/acme/chat/ops/test_connection", Method::POST),
        ("/api/acme/chat/ops/source_branches", Method::GET),
    ] {
        let (s, v) = app
            .call(method, path, Some(&app.admin), Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    // Dumb-HTTP paths are not served; the answer says what is.
    for path in ["/git/acme/chat.git/HEAD", "/git/acme/chat.git/config"] {
        assert_error(&app.get(path).await, 404, "SMART_HTTP_ONLY");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_errors_do_not_show_server_paths() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let garbage = crate::fixtures::bundle_b64("header-only");
    let got = app
        .post(
            "/api/acme/ops/import/bundle",
            json!({"bundle_base64": garbage}),
        )
        .await;
    assert_error(&got, 400, "INVALID_BUNDLE");
    let message = got.1["error"]["message"].as_str().unwrap();
    let data_dir = app.config.data_dir.to_string_lossy().to_string();
    assert!(!message.contains(&data_dir), "{message}");
}

/// Writes a request as given and reads the status line and body.
async fn raw_http(app: &TestApp, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_and_early_413() {
    let app = spawn_app().await;
    app.with_chat().await;
    let upgrade = |key: &str| {
        format!(
            "GET /ws/acme/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\n{key}\r\n"
        )
    };
    for key in ["Sec-WebSocket-Key: short\r\n", ""] {
        let (status, text) = raw_http(&app, &upgrade(key)).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("INVALID_HANDSHAKE"), "{text}");
    }
    let (status, text) = raw_http(
        &app,
        &upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    )
    .await;
    assert_eq!(status, 101, "{text}");
    // A declared body over the limit is refused before a 100 Continue.
    let head = format!(
        "PATCH /api/acme/chat/ops/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n",
        app.admin
    );
    let (status, text) = raw_http(&app, &head).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("BODY_TOO_LARGE"), "{text}");
    // The unread body makes the connection unusable; the client is told.
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

/// Sends `head` and then `body` whole, as a client that does not wait for
/// an early answer does, and reads the answer: every write must land.
async fn send_whole(app: &TestApp, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body)
        .await
        .expect("the whole body is taken, not cut off with a reset");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.len() > 12, "an answer: {text:?}");
    (text[9..12].parse().unwrap(), text)
}

/// An oversize body gets its 413, not a broken pipe: the server answers,
/// then reads the rest (bounded) before closing. The same for git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_read_their_413() {
    let app = spawn_app_with(|c| c.limits.max_push_bytes = 1 << 20).await;
    app.with_chat().await;
    let body = vec![b'x'; 2 << 20];
    for i in 0..5 {
        let head = format!(
            "PATCH /api/acme/chat/ops/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            app.admin,
            body.len()
        );
        let (status, text) = send_whole(&app, &head, &body).await;
        assert_eq!(status, 413, "try {i}: {text}");
        assert!(text.contains("BODY_TOO_LARGE"), "{text}");
    }
    // Without a declared length, the limit trips while reading.
    let mut chunked = Vec::new();
    for piece in body.chunks(64 << 10) {
        chunked.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        chunked.extend(piece);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let head = format!(
        "PATCH /api/acme/chat/ops/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.admin
    );
    let (status, text) = send_whole(&app, &head, &chunked).await;
    assert_eq!(status, 413, "{text}");
    // git's request cap: the push limit plus 1 MiB.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("t:{}", app.admin));
    let big = vec![0u8; 3 << 20];
    let head = format!(
        "POST /git/acme/chat.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let (status, text) = send_whole(&app, &head, &big).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("GIT_REQUEST_TOO_LARGE"), "{text}");
    assert_eq!(app.state_of("acme", "chat").await.0, 1, "nothing changed");
}
