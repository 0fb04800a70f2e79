//! The application's backend on one server: a message hook's round trip
//! against the same backend called directly, upgrades through a connect
//! hook against upgrades with none, and webhook deliveries to a local
//! receiver. The backend and the receiver run in this process.

use crate::common::*;
use crate::users::handshakes;
use crate::ws::{connect, next_data};
use futures::SinkExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SECTION: &str = "the app's backend (same server)";
const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The backend: connect → allow, message → reply with it; `/webhook`
/// counts deliveries. Answers its port and the count.
async fn backend() -> Result<(u16, Arc<AtomicUsize>), String> {
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let hook = axum::routing::post(|body: axum::Json<Value>| async move {
        let answer = match body["type"].as_str() {
            Some("connect") => json!({"allow": true}),
            _ => json!({"reply": body["message"]}),
        };
        axum::Json(answer)
    });
    let webhook = axum::routing::post(move || {
        let d = d.clone();
        async move {
            d.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let router = axum::Router::new()
        .route("/hook", hook)
        .route("/webhook", webhook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((port, delivered))
}

/// p50 ms of `n` message-hook round trips: a client's message out, the
/// backend's reply back.
async fn through_hook(url: &str, n: usize) -> Result<f64, String> {
    let mut ws = connect(url).await?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        ws.send(Message::Text(format!("ping {i}").into()))
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), next_data(&mut ws)).await {
            Ok(Some(Message::Text(r))) if r.as_str() == format!("ping {i}") => {}
            other => return Err(format!("hook reply: {other:?}")),
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(pct(&mut times, 50.0))
}

/// p50 ms of `n` POSTs of the same body straight to the backend.
async fn direct(port: u16, n: usize) -> Result<f64, String> {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"type": "message", "message": format!("ping {i}")});
        let t = Instant::now();
        let r = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.bytes().await.map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(pct(&mut times, 50.0))
}

/// Webhook deliveries per second: `n` connections open and close (two
/// events each); the clock runs until the receiver has them all.
async fn webhook_rate(url: &str, delivered: &AtomicUsize, n: usize) -> Result<f64, String> {
    let before = delivered.load(Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..n {
        let mut ws = connect(url).await?;
        let _ = ws.close(None).await;
    }
    let want = before + 2 * n;
    let end = t + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < want {
        if Instant::now() > end {
            let got = delivered.load(Ordering::Relaxed) - before;
            return Err(format!("{got} of {} webhook deliveries in 120 s", 2 * n));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((2 * n) as f64 / t.elapsed().as_secs_f64())
}

pub async fn rows(s: usize) -> Vec<Row> {
    eprintln!("== the app's backend: elementd");
    let run = async {
        let (port, delivered) = backend().await?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pg = std::env::var_os("BENCH_PG").is_some();
        let db = if pg { ScratchDb::create("hooks") } else { None };
        let allow = ["--outbound-allow", "127.0.0.0/8"];
        let node = Elementd::start(dir.path(), db.as_ref().map(|d| d.url.as_str()), &allow)?;
        let api = node.api();
        api.circle("bench").await?;
        let var = json!({"element_type": "variable", "slug": "hook-key",
                         "spec": {"value": KEY, "sensitive": true}});
        api.create("bench", var).await?;
        let hooks = |connect: bool| {
            json!({"url": format!("http://127.0.0.1:{port}/hook"),
                   "secret": "{{ vars.hook-key }}", "connect": connect})
        };
        for (slug, path, on_message, h) in [
            ("open", "/open", "emit", None),
            ("watched", "/watched", "emit", None),
            ("gate", "/gate", "emit", Some(hooks(true))),
            ("echo", "/echo", "hook", Some(hooks(false))),
        ] {
            let mut spec = ws_spec(path, on_message);
            if let Some(h) = h {
                spec["hooks"] = h;
            }
            let body = json!({"element_type": "websocket", "slug": slug, "spec": spec});
            api.create("bench", body).await?;
        }
        let wh = json!({"element_type": "webhook", "slug": "wh", "spec": {
            "url": format!("http://127.0.0.1:{port}/webhook"), "secret": "{{ vars.hook-key }}",
            "events": ["ws.connection.*"]}});
        api.create("bench", wh).await?;
        api.post(
            "/api/bench/watched/ops/compose",
            json!({"add": [{"ref": "wh"}]}),
        )
        .await?;
        let base = format!("ws://{}", node.addr);
        let n = 100 * s;
        let direct_p50 = direct(port, n).await?;
        let hook_p50 = through_hook(&format!("{base}/ws/bench/echo"), n).await?;
        let shakes = 400 * s;
        let plain = handshakes(&[format!("{base}/ws/bench/open")], shakes).await?;
        let gated = handshakes(&[format!("{base}/ws/bench/gate")], shakes).await?;
        let rate = webhook_rate(&format!("{base}/ws/bench/watched"), &delivered, 50 * s).await?;
        drop((node, db, dir));
        Ok::<_, String>((hook_p50, direct_p50, gated, plain, rate))
    };
    let r = bounded("hooks", run).await.and_then(|r| r);
    let r = r.map_err(|e| eprintln!("   elementd: {e}")).ok();
    vec![
        Row::new(
            SECTION,
            "message hook: client → backend → client, p50",
            "ms",
            false,
            r.map(|r| r.0),
            "backend called directly",
            r.map(|r| r.1),
        ),
        Row::new(
            SECTION,
            "handshakes through a connect hook (64 in flight)",
            "conn/s",
            true,
            r.map(|r| r.2),
            "no hook",
            r.map(|r| r.3),
        ),
        Row::new(
            SECTION,
            "webhook deliveries to a local receiver",
            "deliveries/s",
            true,
            r.map(|r| r.4),
            "—",
            None,
        ),
    ]
}
