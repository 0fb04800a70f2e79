//! The edge of the server (issue 8): slow and idle clients time out, the
//! connection cap keeps health checks and admins served, `/metrics` is
//! not public, and the data on disk is the service user's alone.

use crate::helpers::*;
use crate::ws_client::{eventually, wait_connections, ws_element, ws_url, WAIT};
use elementd::api::admission::RESERVE;
use elementd::model::Role;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// A connection that has sent part of a request's headers.
async fn half_sent(app: &TestApp) -> TcpStream {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(b"GET /api/types HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    s
}

/// Reads until the server closes; None when it has not within `wait`.
async fn read_to_close(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|_| got)
}

/// A client that opens a new connection per request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.limits.header_timeout = Duration::from_millis(300)).await;
    let mut s = half_sent(&app).await;
    let got = read_to_close(&mut s, WAIT).await;
    assert!(got.is_some(), "the server closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_too() {
    let app = spawn_app_with(|c| c.limits.header_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s, WAIT).await.expect("closed when idle");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(r#"{"status":"ok"}"#),
        "the request itself was answered: {text}"
    );
}

/// A body trickled in slowly is cut off: 408, and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out() {
    let app = spawn_app_with(|c| c.limits.body_timeout = Duration::from_millis(300)).await;
    app.with_chat().await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "PATCH /api/acme/chat/ops/update HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"spec\":",
        app.admin
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_to_close(&mut s, WAIT)
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("BODY_TIMEOUT"), "{text}");
    let (version, _, _) = app.state_of("acme", "chat").await;
    assert_eq!(version, 1, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_probes_and_admins_are_served_others_are_busy() {
    const CAP: usize = 20;
    let app = spawn_app_with(|c| {
        c.limits.max_http_connections = CAP;
        c.limits.header_timeout = Duration::from_secs(60);
        c.internal_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let member = app.token("acme", Role::Member).await;
    // Slow clients take the cap, then the reserve, then more: the
    // reserve connections that waited longest give way, unanswered.
    // Connections are accepted in order.
    let mut held = Vec::new();
    for _ in 0..CAP + RESERVE + 8 {
        held.push(half_sent(&app).await);
    }
    let closed = futures::future::join_all(
        held.iter_mut()
            .map(|s| read_to_close(s, Duration::from_secs(1))),
    )
    .await;
    let unanswered: Vec<usize> = closed
        .iter()
        .enumerate()
        .filter(|(_, c)| c.as_ref().is_some_and(|b| b.is_empty()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        unanswered,
        (CAP..CAP + 8).collect::<Vec<_>>(),
        "the oldest reserve connections gave way"
    );
    // Health checks and admins are still served; others hear why not.
    let http = fresh_client();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(format!("{}{path}", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.expect("answered");
            let close = r
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body, close)
        }
    };
    let (s, v, close) = get("/healthz", None).await;
    assert_eq!((s, close.as_deref()), (200, Some("close")), "{v}");
    let (s, v, _) = get("/readyz", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = get("/api/ops/list", Some(&app.admin)).await;
    assert_eq!(s, 200, "a platform admin is served: {v}");
    for token in [None, Some(member.as_str())] {
        let (s, v, close) = get("/api/types", token).await;
        assert_eq!(close.as_deref(), Some("close"));
        assert_error(
            &(reqwest::StatusCode::from_u16(s).unwrap(), v.clone()),
            503,
            "SERVER_BUSY",
        );
        assert_eq!(
            (
                v["error"]["class"].as_str(),
                v["error"]["retryable"].as_bool()
            ),
            (Some("limit"), Some(true))
        );
    }
    // The internal listener is not under the public cap.
    let internal = app.internal.clone().unwrap();
    let r = http
        .get(format!("{internal}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The clients go away; service resumes.
    drop(held);
    eventually("normal service again", || async {
        matches!(
            http.get(format!("{}/api/types", app.base)).send().await,
            Ok(r) if r.status().as_u16() == 200
                && r.headers().get("connection").is_none_or(|v| v != "close")
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_websockets_leave_the_http_cap() {
    let app = spawn_app_with(|c| c.limits.max_http_connections = 2).await;
    ws_element(&app, "chat", json!({})).await;
    // A handshake holds an HTTP slot until hyper hands the socket over,
    // a moment after the client has its 101: retry a busy answer.
    let url = ws_url(&app, "/ws/acme/ws");
    let mut clients = Vec::new();
    tokio::time::timeout(WAIT, async {
        while clients.len() < 5 {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((c, _)) => clients.push(c),
                Err(e) => assert!(e.to_string().contains("503"), "{e}"),
            }
        }
    })
    .await
    .expect("five websockets open");
    let (s, v) = app
        .call(reqwest::Method::GET, "/api/types", None, None)
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    wait_connections(&app, "acme", "chat", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_platform_token_on_the_public_port() {
    let app = spawn_app_with(|c| c.internal_listen = Some("127.0.0.1:0".into())).await;
    ws_element(&app, "chat", json!({})).await;
    let scrape = |base: String, token: Option<String>| {
        let http = app.client.clone();
        async move {
            let mut req = http.get(format!("{base}/metrics"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (s, body) = scrape(app.base.clone(), None).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_error(&(s, v), 401, "UNAUTHORIZED");
    let member = app.token("acme", Role::Admin).await;
    let (s, body) = scrape(app.base.clone(), Some(member)).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_error(&(s, v), 403, "FORBIDDEN");
    for token in [app.admin.clone(), app.token("*", Role::Viewer).await] {
        let (s, body) = scrape(app.base.clone(), Some(token)).await;
        assert_eq!(s.as_u16(), 200);
        assert!(body.contains(r#"slug="chat""#), "{body}");
    }
    // The internal listener serves probes and metrics without a token,
    // and nothing else.
    let internal = app.internal.clone().expect("internal listener bound");
    let (s, body) = scrape(internal.clone(), None).await;
    assert_eq!(s.as_u16(), 200);
    assert!(body.contains(r#"slug="chat""#), "{body}");
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/api/types", 404)] {
        let r = app
            .client
            .get(format!("{internal}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
    }
    let (s, v) = app.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(s.as_u16(), 200, "/healthz stays public: {v}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_disk_is_the_service_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.circle("acme").await;
    let mode = |p: std::path::PathBuf| {
        std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let data = app.config.data_dir.clone();
    assert_eq!(mode(data.clone()), 0o700, "data dir");
    assert_eq!(mode(app.config.repos_dir()), 0o700, "repos dir");
    if app.config.database_url.is_none() {
        // SQLite: -wal and -shm take the database file's mode.
        for name in ["elementd.db", "elementd.db-wal", "elementd.db-shm"] {
            assert_eq!(mode(data.join(name)), 0o600, "{name}");
        }
    }
}

/// A connection that has sent nothing holds no request: a stop closes it
/// at once instead of waiting out its header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_that_sent_nothing() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let mut config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    config.limits.header_timeout = Duration::from_secs(120);
    let server = elementd::server::Server::start(config).await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Accepted and waiting for its first bytes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, server.stop())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop waited {:?} for a silent client",
        started.elapsed()
    );
    let got = read_to_close(&mut silent, WAIT).await.expect("closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_finishes_a_request_in_flight() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    let server = elementd::server::Server::start(config).await.unwrap();
    let admin = server.admin_token.clone().unwrap();
    let addr = server.addr;
    // The handler asks for the body (100 Continue): the request is in
    // flight when the stop begins.
    let body = r#"{"element_type":"circle","slug":"late"}"#;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/ops/create HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let stop = tokio::spawn(server.stop());
    eventually("no new connections", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    s.write_all(body.as_bytes()).await.unwrap();
    let got = read_to_close(&mut s, WAIT)
        .await
        .expect("answered, then closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    tokio::time::timeout(WAIT, stop)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
    drop(pg);
}
