//! `auth.jwt.jwks_url`: keys from a JWKS served by a small HTTP server the
//! test starts; cached, refetched on an unknown kid at most once per
//! 10 s, kept while the endpoint is down; a JWKS over 1 MiB or slower
//! than 5 s gives no key.

use crate::fixtures::jwks;
use crate::helpers::*;
use crate::ws_client::*;
use crate::ws_jwt::{jwt_element, mint, user};
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Down,
    Huge,
    Slow,
}

struct Jwks {
    port: u16,
    hits: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
}

async fn jwks_server(body: String) -> Jwks {
    let hits = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(Mutex::new(Mode::Serve));
    let (h, m) = (hits.clone(), mode.clone());
    let route = axum::routing::get(move || {
        let (h, m, body) = (h.clone(), m.clone(), body.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mode = *m.lock().unwrap();
            match mode {
                Mode::Serve => (axum::http::StatusCode::OK, body),
                Mode::Down => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                Mode::Huge => (
                    axum::http::StatusCode::OK,
                    format!(
                        "{{\"keys\":[],\"pad\":\"{}\"}}",
                        "x".repeat(1024 * 1024 + 10)
                    ),
                ),
                Mode::Slow => {
                    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
                    (axum::http::StatusCode::OK, body)
                }
            }
        }
    });
    let app = axum::Router::new().route("/jwks.json", route);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Jwks { port, hits, mode }
}

async fn jwks_element(app: &TestApp, slug: &str, port: u16) {
    jwt_element(
        app,
        slug,
        json!({"algorithms": ["RS256"], "jwks_url": format!("http://127.0.0.1:{port}/jwks.json")}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_cached_and_refetched_at_most_every_10s() {
    let app = spawn_app().await;
    let s = jwks_server(jwks()).await;
    jwks_element(&app, "rs", s.port).await;
    let k1 = mint(Algorithm::RS256, Some("test-rsa"), &user("ann"));
    let _a = connect_bearer(&app, "/ws/acme/rs", &k1).await;
    let _b = connect_bearer(&app, "/ws/acme/rs", &k1).await;
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );
    // An unknown kid just after a fetch: refused, no second fetch.
    let k2 = mint(Algorithm::RS256, Some("k2"), &user("ann"));
    let (status, body) = refused(&app, "/ws/acme/rs", Some(&k2)).await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (401, Some("signature")),
        "{body}"
    );
    let _ = refused(&app, "/ws/acme/rs", Some(&k2)).await;
    assert_eq!(s.hits.load(Ordering::SeqCst), 1, "no refetch within 10 s");
    // The endpoint goes down: the cached key still admits.
    *s.mode.lock().unwrap() = Mode::Down;
    let _c = connect_bearer(&app, "/ws/acme/rs", &k1).await;
    // After 10 s (on the server's clock) an unknown kid refetches once
    // (down: still refused), and the cached key keeps working.
    app.advance(elementd::runtime::jwks::REFETCH_EVERY);
    let _ = refused(&app, "/ws/acme/rs", Some(&k2)).await;
    assert_eq!(s.hits.load(Ordering::SeqCst), 2);
    let _d = connect_bearer(&app, "/ws/acme/rs", &k1).await;
    assert_eq!(wait_connections(&app, "acme", "rs", 4).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_over_1mib_or_slower_than_5s_gives_no_key() {
    let app = spawn_app().await;
    let big = jwks_server(jwks()).await;
    *big.mode.lock().unwrap() = Mode::Huge;
    jwks_element(&app, "big", big.port).await;
    let slow = jwks_server(jwks()).await;
    *slow.mode.lock().unwrap() = Mode::Slow;
    jwks_element(&app, "slow", slow.port).await;
    let t = mint(Algorithm::RS256, Some("test-rsa"), &user("ann"));
    let (status, body) = refused(&app, "/ws/acme/big", Some(&t)).await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (401, Some("signature")),
        "{body}"
    );
    assert_eq!(big.hits.load(Ordering::SeqCst), 1);
    let started = std::time::Instant::now();
    let (status, body) = refused(&app, "/ws/acme/slow", Some(&t)).await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (401, Some("signature")),
        "{body}"
    );
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(5) && took < std::time::Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_fetch_keeps_to_the_outbound_policy() {
    let app = spawn_app_with(|c| c.outbound_allow.clear()).await;
    let s = jwks_server(jwks()).await;
    jwks_element(&app, "rs", s.port).await;
    let t = mint(Algorithm::RS256, Some("test-rsa"), &user("ann"));
    let (status, body) = refused(&app, "/ws/acme/rs", Some(&t)).await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (401, Some("signature")),
        "{body}"
    );
    assert_eq!(s.hits.load(Ordering::SeqCst), 0, "loopback is never asked");
}
