//! Driven links and the outbound policy (issue 8, SSRF): by default a
//! link never reaches loopback or private networks, and says why; the
//! operator's allow-list opens them.

use crate::helpers::*;
use crate::ws_client::{activity, activity_until, connections, eventually};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// An internal service on loopback that greets whoever connects: it
/// counts connections, and a banner in activity would be a leak.
async fn internal_service() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6 internal\r\n").await;
        }
    });
    (port, seen, task)
}

async fn echo_server(host: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((host, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        let _ = ws
                            .send(Message::text(format!("echo:{}", m.to_text().unwrap())))
                            .await;
                    }
                }
            });
        }
    });
    (port, task)
}

async fn link(app: &TestApp) -> Value {
    connections(app, "acme", "link", None).await[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_loopback_is_refused_by_default_and_says_why() {
    let app = spawn_app_with(|c| c.outbound_allow.clear()).await;
    let (port, seen, service) = internal_service().await;
    app.circle("acme").await;
    let v = app
        .element(
            "acme",
            "websocket",
            "link",
            json!({"url": format!("ws://127.0.0.1:{port}/")}),
        )
        .await;
    let why = "destination 127.0.0.1 is not allowed: loopback; an operator can allow it with ELEMENTD_OUTBOUND_ALLOW";
    assert!(
        v["warnings"].as_array().unwrap().iter().any(|w| w == why),
        "warned at create: {v}"
    );
    eventually("the link reports the refusal", || async {
        link(&app).await["last_error"] == why
    })
    .await;
    let (s, v) = app
        .post("/api/acme/link/ops/test-connection", json!({}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(
        (v["success"].as_bool(), v["errors"].clone()),
        (Some(false), json!([why]))
    );
    let rejected = activity_until(&app, "link", "ws.connection.rejected", |e| !e.is_empty()).await;
    assert_eq!(rejected[0]["data"]["reason"], why);
    // A name is resolved and judged by its addresses.
    let (s, v) = app
        .patch(
            "/api/acme/link/ops/update",
            json!({"spec": {"url": format!("ws://localhost:{port}/")}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    app.release("acme", "link").await;
    eventually("the name is refused too", || async {
        let e = link(&app).await["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        e.starts_with("destination localhost (") && e.contains("is not allowed: loopback")
    })
    .await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the service saw no connection"
    );
    assert!(activity(&app, "acme", "link", "ws.message")
        .await
        .is_empty());
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_forms_of_local_addresses_are_refused_too() {
    let app = spawn_app_with(|c| c.outbound_allow.clear()).await;
    let (port, seen, service) = internal_service().await;
    app.circle("acme").await;
    // Only forms of this machine's own addresses, so that a broken policy
    // sends nothing off the machine; the classification of private,
    // link-local, CGNAT and ULA ranges is unit-tested in
    // src/runtime/outbound.rs.
    for (i, (url, why)) in [
        (format!("ws://127.0.0.2:{port}/"), "loopback"),
        (format!("ws://[::1]:{port}/"), "loopback"),
        (format!("ws://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        (format!("ws://2130706433:{port}/"), "loopback"),
        (format!("ws://0.0.0.0:{port}/"), "unspecified"),
    ]
    .into_iter()
    .enumerate()
    {
        let slug = format!("probe-{i}");
        app.element("acme", "websocket", &slug, json!({"url": url}))
            .await;
        let (_, t) = app
            .post(&format!("/api/acme/{slug}/ops/test-connection"), json!({}))
            .await;
        let errors = t["errors"].to_string();
        assert!(
            t["success"] == false
                && errors.contains(why)
                && errors.contains("ELEMENTD_OUTBOUND_ALLOW"),
            "{url}: {t}"
        );
        eventually("the link refused it", || async {
            let c = connections(&app, "acme", &slug, None).await;
            c[0]["last_error"].as_str().is_some_and(|e| e.contains(why))
        })
        .await;
        let (s, v) = app
            .delete(&format!("/api/acme/{slug}/ops/delete?confirm=true"))
            .await;
        assert_eq!(s.as_u16(), 200, "{v}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the service saw no connection"
    );
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_networks_and_host_names() {
    let app =
        spawn_app_with(|c| c.outbound_allow = vec!["127.0.0.1/32".into(), "localhost".into()])
            .await;
    let (port, server) = echo_server("127.0.0.1").await;
    app.circle("acme").await;
    for (slug, url) in [
        ("by-network", format!("ws://127.0.0.1:{port}/")),
        ("by-name", format!("ws://localhost:{port}/")),
    ] {
        let v = app
            .element("acme", "websocket", slug, json!({"url": url}))
            .await;
        assert!(v["warnings"].as_array().is_none_or(|w| w.is_empty()), "{v}");
        eventually("the link opens", || async {
            connections(&app, "acme", slug, None).await[0]["state"] == "open"
        })
        .await;
        let (s, v) = app
            .post(
                &format!("/api/acme/{slug}/ops/send"),
                json!({"message": "hi"}),
            )
            .await;
        assert_eq!(s.as_u16(), 200, "{v}");
        activity_until(&app, slug, "ws.message.received", |e| !e.is_empty()).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_holds_at_most_its_cap_of_driven_links() {
    let app = spawn_app_with(|c| c.limits.max_driven_links_per_circle = 2).await;
    // Nothing listens there: the links back off, harmlessly.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = |n: u32| json!({"url": format!("ws://127.0.0.1:{port}/{n}")});
    app.circle("acme").await;
    app.circle("other").await;
    app.element("acme", "websocket", "link-0", url(0)).await;
    app.element("acme", "websocket", "link-1", url(1)).await;
    let create = |slug: &str, spec: Value| {
        app.post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": slug, "spec": spec}),
        )
    };
    assert_error(&create("link-2", url(2)).await, 409, "DRIVEN_LINK_LIMIT");
    assert_error(
        &app.get("/api/acme/link-2/ops/get").await,
        404,
        "ELEMENT_NOT_FOUND",
    );
    // Exposed elements are not links; turning one into a link is.
    app.element("acme", "websocket", "chat", json!({})).await;
    let before = app.state_of("acme", "chat").await;
    let (s, v) = app
        .patch("/api/acme/chat/ops/update", json!({"spec": url(3)}))
        .await;
    assert_error(&(s, v.clone()), 409, "DRIVEN_LINK_LIMIT");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ELEMENTD_MAX_DRIVEN_LINKS"),
        "{v}"
    );
    assert_eq!(app.state_of("acme", "chat").await, before);
    // Changing an existing link adds none.
    let (s, v) = app
        .patch("/api/acme/link-1/ops/update", json!({"spec": url(11)}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // The cap is per circle.
    app.element("other", "websocket", "link-0", url(0)).await;
    // A disabled link frees its place; enabling it again needs one.
    let (s, v) = app.post("/api/acme/link-0/ops/disable", json!({})).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let (s, v) = app
        .patch("/api/acme/chat/ops/update", json!({"spec": url(3)}))
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_error(
        &app.post("/api/acme/link-0/ops/enable", json!({})).await,
        409,
        "DRIVEN_LINK_LIMIT",
    );
    let (_, v) = app.get("/api/acme/link-0/ops/get").await;
    assert_eq!(v["state"], "disabled");
}
