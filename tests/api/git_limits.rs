//! git processes are bounded (hardening round two, item 6): per node, per
//! token and per address, with 503 and Retry-After past the caps; a
//! trickled request body is cut off at its deadline.

use crate::helpers::*;
use base64::Engine;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts an upload-pack request that declares a body and sends only its
/// start: the git process it starts waits for the rest.
async fn trickle(app: &TestApp, token: &str, from: &str) -> TcpStream {
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("t:{token}"));
    let head = format!(
        "POST /git/acme/chat.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 1000\r\n\r\n0032want "
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The status of a whole upload-pack request made now.
async fn status_of(app: &TestApp, token: &str, from: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/git/acme/chat.git/git-upload-pack", app.base))
        .basic_auth("t", Some(token))
        .header("content-type", "application/x-git-upload-pack-request")
        .body("0000")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().contains_key("retry-after");
    let body = r.text().await.unwrap_or_default();
    (status, format!("retry-after: {retry}; {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_processes_are_capped_per_client_and_per_node() {
    let app = spawn_app_with(|c| {
        c.limits.max_git_processes = 3;
        c.limits.max_git_processes_per_client = 2;
        c.limits.git_body_timeout = Duration::from_secs(3);
    })
    .await;
    app.with_chat().await;
    let other = app.token("acme", elementd::model::Role::Viewer).await;
    // One client holds its two places.
    let _held = [
        trickle(&app, &app.admin, "127.0.0.1").await,
        trickle(&app, &app.admin, "127.0.0.1").await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, said) = status_of(&app, &app.admin, "127.0.0.1").await;
    assert_eq!(s, 503, "{said}");
    assert!(
        said.contains("GIT_BUSY") && said.contains("retry-after: true"),
        "{said}"
    );
    // The same token from elsewhere is held to its two as well.
    assert_eq!(status_of(&app, &app.admin, "127.0.0.2").await.0, 503);
    // Another client is served: the node has a third place.
    let third = trickle(&app, &other, "127.0.0.3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the node is full, for everyone.
    let (s, said) = status_of(&app, &other, "127.0.0.4").await;
    assert_eq!(s, 503, "the node holds three: {said}");
    drop(third);
    // The trickled bodies are cut off at their deadline, and the places
    // come back.
    let start = Instant::now();
    loop {
        let (s, said) = status_of(&app, &app.admin, "127.0.0.1").await;
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "places never came back: {said}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A body that never finishes does not keep its git process: past the
/// deadline git gets the end of its input, and the answer ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_git_body_is_cut_off_at_its_deadline() {
    let app = spawn_app_with(|c| c.limits.git_body_timeout = Duration::from_secs(2)).await;
    app.with_chat().await;
    let mut s = trickle(&app, &app.admin, "127.0.0.1").await;
    let start = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // The chunked answer's last chunk.
                    if out.ends_with(b"0\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the answer never ended");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "ended before the deadline: {took:?}"
    );
    // Its place is back: a whole request gets through at once.
    let (s, said) = status_of(&app, &app.admin, "127.0.0.5").await;
    assert_eq!(s, 200, "{said}");
}
