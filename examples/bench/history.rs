//! Room history on one server: the flood to 1,000 receivers with history
//! on against off, and how long a client that missed 100 messages waits
//! from connect to its `joined` answer.

use crate::common::*;
use crate::rest::wrk;
use crate::ws::{fanout, next_data};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECTION: &str = "history (same server)";
const RECEIVERS: usize = 1000;

/// Connects offering `elementd.v1`.
async fn connect_v1(url: &str) -> Result<crate::ws::Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "elementd.v1".parse().unwrap());
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .map_err(|_| "connect: no answer in 10s".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Connects `n` times with a position 100 messages back: p50 and p99 ms
/// from the connect call to the `joined` answer (after the replay).
async fn recovery(base: &str, epoch: &str, top: u64, n: usize) -> Result<(f64, f64), String> {
    let mut times = Vec::new();
    for _ in 0..n {
        let url = format!("{base}/ws/bench/hist?recover=lobby:{epoch}:{}", top - 100);
        let t = Instant::now();
        let mut ws = connect_v1(&url).await?;
        let mut replayed = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), next_data(&mut ws)).await {
                Ok(Some(Message::Text(t))) if t.contains("\"op\":\"joined\"") => break,
                Ok(Some(_)) => replayed += 1,
                _ => return Err("no joined answer in 10s".into()),
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if replayed != 100 {
            return Err(format!("replayed {replayed}, not 100"));
        }
        let _ = ws.close(None).await;
    }
    Ok((pct(&mut times, 50.0), pct(&mut times, 99.0)))
}

pub async fn rows(s: usize) -> Vec<Row> {
    eprintln!("== history: elementd");
    let run = async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pg = std::env::var_os("BENCH_PG").is_some();
        let db = if pg {
            ScratchDb::create("history")
        } else {
            None
        };
        let node = Elementd::start(dir.path(), db.as_ref().map(|d| d.url.as_str()), &[])?;
        let api = node.api();
        api.circle("bench").await?;
        for (slug, path, size) in [("plain", "/plain", 0), ("hist", "/hist", 1000)] {
            let mut spec = ws_spec(path, "broadcast");
            spec["rooms"] = json!({"enabled": true});
            spec["history"] = json!({"size": size});
            api.create(
                "bench",
                json!({"element_type": "websocket", "slug": slug, "spec": spec}),
            )
            .await?;
        }
        let base = format!("ws://{}", node.addr);
        let msgs = 20 * s;
        let off = fanout(&[format!("{base}/ws/bench/plain")], RECEIVERS, msgs).await?;
        let on = fanout(&[format!("{base}/ws/bench/hist")], RECEIVERS, msgs).await?;
        for (what, lost) in [("off", off.1), ("on", on.1)] {
            if lost > 0 {
                eprintln!("   history {what}: {lost} deliveries missing");
            }
        }
        // 100 messages to recover.
        for i in 0..100 {
            let body = json!({"message": format!("missed {i}"), "room": "lobby"});
            api.post("/api/bench/hist/ops/broadcast", body).await?;
        }
        let h = api
            .call(
                reqwest::Method::GET,
                "/api/bench/hist/ops/history?room=lobby&limit=1",
                None,
            )
            .await?;
        let epoch = h["epoch"].as_str().ok_or("no epoch")?.to_string();
        let top = h["offset"].as_u64().unwrap_or(0);
        let rec = recovery(&base, &epoch, top, 50 * s).await?;
        // The `history` op reading the room's last 100, against /healthz.
        let secs = 3 * s as u64;
        let read = wrk(
            &api,
            "/api/bench/hist/ops/history?room=lobby&limit=100",
            secs,
            None,
        )
        .await?;
        let health = wrk(&api, "/healthz", secs, None).await?;
        drop((node, db, dir));
        Ok::<_, String>((off.0, on.0, rec, read, health))
    };
    let r = bounded("history", run).await.and_then(|r| r);
    let r = r.map_err(|e| eprintln!("   elementd: {e}")).ok();
    vec![
        Row::new(
            SECTION,
            format!("flood 1→{RECEIVERS}: history on"),
            "deliveries/s",
            true,
            r.as_ref().map(|r| r.1),
            "history off",
            r.as_ref().map(|r| r.0),
        ),
        Row::new(
            SECTION,
            "recover 100 missed: connect → joined, p50",
            "ms",
            false,
            r.as_ref().map(|r| r.2 .0),
            "—",
            None,
        ),
        Row::new(
            SECTION,
            "recover 100 missed: connect → joined, p99",
            "ms",
            false,
            r.as_ref().map(|r| r.2 .1),
            "—",
            None,
        ),
        Row::new(
            SECTION,
            "history ?room=lobby&limit=100: throughput",
            "req/s",
            true,
            r.as_ref().map(|r| r.3.rps),
            "/healthz",
            r.as_ref().map(|r| r.4.rps),
        ),
        Row::new(
            SECTION,
            "history ?room=lobby&limit=100: p99",
            "ms",
            false,
            r.as_ref().map(|r| r.3.p99_ms),
            "/healthz",
            r.as_ref().map(|r| r.4.p99_ms),
        ),
    ]
}
