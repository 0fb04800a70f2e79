//! WebSocket workloads, run the same way against elementd and each peer:
//! Node's `ws` server and the bare tokio-tungstenite relay
//! (`examples/ws_relay.rs`). Each has an `/echo` and a `/fan` endpoint.

use crate::common::*;
use futures::{SinkExt, StreamExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub struct Target {
    pub name: String,
    pub echo: String,
    pub fan: String,
    pub pid: u32,
    _keep: Box<dyn std::any::Any>,
}

pub async fn start_elementd() -> Result<Target, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = if std::env::var_os("BENCH_PG").is_some() {
        Some(ScratchDb::create("ws").ok_or("BENCH_PG: cannot create a scratch database")?)
    } else {
        None
    };
    let node = Elementd::start(dir.path(), db.as_ref().map(|d| d.url.as_str()), &[])?;
    let api = node.api();
    api.circle("bench").await?;
    for (slug, path, on) in [("echo", "/echo", "echo"), ("fan", "/fan", "broadcast")] {
        api.create(
            "bench",
            serde_json::json!({"element_type": "websocket", "slug": slug, "spec": ws_spec(path, on)}),
        )
        .await?;
    }
    Ok(Target {
        name: if db.is_some() {
            "elementd (pg)"
        } else {
            "elementd"
        }
        .into(),
        echo: format!("ws://{}/ws/bench/echo", node.addr),
        fan: format!("ws://{}/ws/bench/fan", node.addr),
        pid: node.proc.pid(),
        // Drop order: the node first, then its database and folder.
        _keep: Box::new((node, db, dir)),
    })
}

/// A peer process that prints `listening <port>` and serves `/echo` and `/fan`.
fn start_peer(name: &str, mut cmd: Command) -> Result<Target, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log_file(&name.replace(' ', "-")))
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    let port = read_until(&mut child, |l| {
        l.strip_prefix("listening ").map(str::to_string)
    });
    let proc = Proc(child);
    let port = port.ok_or(format!("{name} exited before listening"))?;
    Ok(Target {
        name: name.into(),
        echo: format!("ws://127.0.0.1:{port}/echo"),
        fan: format!("ws://127.0.0.1:{port}/fan"),
        pid: proc.pid(),
        _keep: Box::new(proc),
    })
}

pub fn start_node() -> Result<Target, String> {
    let js = assets().join("ws-peer.js");
    let mut cmd = Command::new("node");
    cmd.arg(&js).env("NODE_PATH", assets().join("node_modules"));
    start_peer("node ws", cmd)
}

pub fn start_relay() -> Result<Target, String> {
    let bin =
        std::env::var("RELAY_BIN").unwrap_or_else(|_| "target/release/examples/ws_relay".into());
    start_peer("tungstenite relay", Command::new(bin))
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Result<Ws, String> {
    within_10s(url, async {
        tokio_tungstenite::connect_async_with_config(url, Some(client_conf()), false)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| e.to_string())
    })
    .await
}

/// As [`connect`], but dropping the client resets the connection, so it
/// leaves no TIME_WAIT socket behind. The scale rows open and drop 10,000
/// a target; after a normal close those sockets stayed 60 s, and the
/// next target's connects shared the port space with them: a relay in
/// elementd's place (`BENCH_NOISE=1`) opened at 0.81-0.83x the same
/// relay run last.
pub async fn connect_leaving_nothing(url: &str) -> Result<Ws, String> {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("connect {url}: not a ws:// URL"))?;
    within_10s(url, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_zero_linger().map_err(|e| e.to_string())?;
        let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        tokio_tungstenite::client_async_with_config(url, tcp, Some(client_conf()))
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| e.to_string())
    })
    .await
}

/// A small read buffer: the client holds up to 10,000 of these.
fn client_conf() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// A client's opening, given 10 s; its error names the URL.
async fn within_10s(
    url: &str,
    open: impl std::future::Future<Output = Result<Ws, String>>,
) -> Result<Ws, String> {
    match tokio::time::timeout(Duration::from_secs(10), open).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(format!("connect {url}: {e}")),
        Err(_) => Err(format!("connect {url}: no answer in 10s")),
    }
}

/// Connects until it succeeds or 15 s pass (a node may not have loaded
/// the endpoint yet).
pub async fn connect_retry(url: &str) -> Result<Ws, String> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match connect(url).await {
            Ok(ws) => return Ok(ws),
            Err(e) if Instant::now() > until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `n` connections, 64 handshakes in flight at a time.
pub async fn connect_many(url: &str, n: usize) -> Result<Vec<Ws>, String> {
    futures::stream::iter(0..n)
        .map(|_| connect(url))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

pub async fn next_data(ws: &mut Ws) -> Option<Message> {
    loop {
        match ws.next().await? {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Some(m),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Sequential round trips on one connection: p50 and p99 in µs.
async fn echo_latency(url: &str, n: usize) -> Result<(f64, f64), String> {
    let mut ws = connect(url).await?;
    let payload = "x".repeat(64);
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::Text(payload.clone().into()))
            .await
            .map_err(|e| e.to_string())?;
        next_data(&mut ws).await.ok_or("echo: closed")?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((pct(&mut us, 50.0), pct(&mut us, 99.0)))
}

/// 256 KiB binary round trips on one connection: MiB echoed per second.
async fn echo_large(url: &str, n: usize) -> Result<f64, String> {
    let mut ws = connect(url).await?;
    let payload: Vec<u8> = (0..256 * 1024).map(|i| i as u8).collect();
    let t = Instant::now();
    for _ in 0..n {
        ws.send(Message::Binary(payload.clone().into()))
            .await
            .map_err(|e| e.to_string())?;
        let back = next_data(&mut ws).await.ok_or("echo: closed")?;
        if back.len() != payload.len() {
            return Err("echo: wrong length".into());
        }
    }
    Ok((n * payload.len()) as f64 / (1024.0 * 1024.0) / t.elapsed().as_secs_f64())
}

/// Many clients doing round trips at once: messages per second.
async fn echo_throughput(url: &str, clients: usize, per: usize) -> Result<f64, String> {
    let conns = connect_many(url, clients).await?;
    let t = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for _ in 0..per {
                    ws.send(Message::Text("ping-pong-payload".into()))
                        .await
                        .ok()?;
                    next_data(&mut ws).await?;
                }
                Some(())
            })
        })
        .collect();
    for task in tasks {
        task.await.ok().flatten().ok_or("echo client failed")?;
    }
    Ok((clients * per) as f64 / t.elapsed().as_secs_f64())
}

/// One sender floods `msgs` messages to `receivers` (spread over `urls`):
/// deliveries per second until every receiver has every message, and how
/// many deliveries were missing when a receiver gave up (10 s of silence).
pub async fn fanout(
    urls: &[String],
    receivers: usize,
    msgs: usize,
) -> Result<(f64, usize), String> {
    fanout_from(urls, receivers, msgs, 1).await
}

/// [`fanout`] with `senders` publishing at once, one per node in turn,
/// `msgs` in all.
pub async fn fanout_from(
    urls: &[String],
    receivers: usize,
    msgs: usize,
    senders: usize,
) -> Result<(f64, usize), String> {
    let mut rx = Vec::new();
    for i in 0..receivers {
        rx.push(connect_retry(&urls[i % urls.len()]).await?);
    }
    let mut tx = Vec::new();
    for i in 0..senders.max(1) {
        tx.push(connect_retry(&urls[i % urls.len()]).await?);
    }
    // Let the servers finish registering the last connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let tasks: Vec<_> = rx
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = 0;
                while got < msgs {
                    match tokio::time::timeout(Duration::from_secs(10), next_data(&mut ws)).await {
                        Ok(Some(_)) => got += 1,
                        _ => break,
                    }
                }
                (got, Instant::now())
            })
        })
        .collect();
    let n = tx.len();
    let sending = tx
        .into_iter()
        .enumerate()
        .map(|(k, mut sender)| async move {
            for i in (k..msgs).step_by(n) {
                sender
                    .send(Message::Text(format!("broadcast {i}").into()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(sender)
        });
    let _senders = futures::future::try_join_all(sending).await?;
    let (mut got, mut last) = (0, t);
    for task in tasks {
        let (g, at) = task.await.map_err(|e| e.to_string())?;
        got += g;
        if g > 0 {
            last = last.max(at);
        }
    }
    let secs = last.duration_since(t).as_secs_f64().max(1e-6);
    Ok((got as f64 / secs, receivers * msgs - got))
}

/// Broadcasts one message at a time to every receiver (waiting until all
/// have it or 10 s pass): p50 and p99 delivery latency in ms over all
/// deliveries, and the deliveries missing.
pub async fn broadcast_latency(
    conns: Vec<Ws>,
    mut sender: Ws,
    rounds: usize,
) -> Result<(f64, f64, usize), String> {
    let n = conns.len();
    let base = Instant::now();
    let (tx, mut lat) = tokio::sync::mpsc::unbounded_channel::<(usize, f64)>();
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(m) = next_data(&mut ws).await {
                    let now = base.elapsed().as_secs_f64();
                    let text = m.into_text().unwrap_or_default();
                    let mut it = text.split(' ');
                    let (Some(round), Some(sent)) = (it.next(), it.next()) else {
                        continue;
                    };
                    let (Ok(round), Ok(sent)) = (round.parse(), sent.parse::<f64>()) else {
                        continue;
                    };
                    if tx.send((round, (now - sent) * 1e3)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all = Vec::with_capacity(n * rounds);
    let mut missing = 0;
    for round in 0..rounds {
        let sent = base.elapsed().as_secs_f64();
        sender
            .send(Message::Text(format!("{round} {sent}").into()))
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < n {
            match tokio::time::timeout_at(until, lat.recv()).await {
                Ok(Some((r, ms))) if r == round => {
                    got += 1;
                    all.push(ms);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        missing += n - got;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in readers {
        r.abort();
    }
    Ok((pct(&mut all, 50.0), pct(&mut all, 99.0), missing))
}

/// Server memory per idle connection, KiB.
async fn idle_memory(url: &str, pid: u32, n: usize) -> Result<f64, String> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid);
    let conns = connect_many(url, n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(conns);
    Ok((after - before) / n as f64)
}

/// The everyday rows, on a fresh server.
pub async fn everyday(
    t: &Target,
    s: usize,
) -> Vec<(&'static str, &'static str, bool, Option<f64>)> {
    // Memory first, on a fresh server: after the other workloads, freed
    // heap would be reused and flatter each server by a different amount.
    let mem = bounded("idle memory", idle_memory(&t.echo, t.pid, 2000)).await;
    // Right after those 2,000 hang up, while the server tears them down
    // (elementd also records their close events); then on a quiet server.
    let busy = bounded("echo latency", echo_latency(&t.echo, 3000 * s)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lat = bounded("echo latency", echo_latency(&t.echo, 3000 * s)).await;
    let thr = bounded("echo throughput", echo_throughput(&t.echo, 50, 400 * s)).await;
    let large = bounded("echo 256 KiB", echo_large(&t.echo, 400 * s)).await;
    let fan = bounded(
        "fan-out",
        fanout(std::slice::from_ref(&t.fan), 500, 100 * s),
    )
    .await;
    let who = t.name.as_str();
    let (mem, lat, thr) = (ok(who, mem), ok(who, lat), ok(who, thr));
    let busy = ok(who, busy);
    let (large, fan) = (ok(who, large), ok(who, fan));
    if let Some((_, lost)) = fan.filter(|f| f.1 > 0) {
        eprintln!("   {who}: fan-out lost {lost} deliveries");
    }
    vec![
        ("idle connection (2,000 held)", "KiB RSS each", false, mem),
        ("echo round trip p50", "µs", false, lat.map(|l| l.0)),
        ("echo round trip p99", "µs", false, lat.map(|l| l.1)),
        (
            "echo round trip p99, just after 2,000 clients hang up",
            "µs",
            false,
            busy.map(|l| l.1),
        ),
        ("echo, 50 clients", "msg/s", true, thr),
        ("echo 256 KiB messages", "MiB/s", true, large),
        (
            "fan-out 1→500 (flood)",
            "deliveries/s",
            true,
            fan.map(|f| f.0),
        ),
    ]
}

/// Connection scale, on a fresh server: `n` connections held (RSS each,
/// time to open them all), then `rounds` broadcasts to all of them.
pub async fn scale_rows(
    t: &Target,
    n: usize,
    rounds: usize,
) -> Vec<(&'static str, &'static str, bool, Option<f64>)> {
    let run = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib(t.pid);
        let cpu = cpu_seconds(t.pid);
        let start = Instant::now();
        let conns = connect_many_within(&t.fan, n, OPEN_BUDGET).await?;
        let rate = conns.len() as f64 / start.elapsed().as_secs_f64();
        // The server's own share: the client runs on the same cores.
        let cpu = (cpu_seconds(t.pid) - cpu) * 1e6 / conns.len().max(1) as f64;
        if conns.len() < n {
            eprintln!(
                "   {}: opened {} of {n} connections in {}s; no memory or broadcast rows",
                t.name,
                conns.len(),
                OPEN_BUDGET.as_secs()
            );
            return Ok((rate, cpu, None));
        }
        let sender = connect(&t.fan).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let per = (rss_kib(t.pid) - before) / n as f64;
        let (p50, p99, missing) = broadcast_latency(conns, sender, rounds).await?;
        if missing > 0 {
            eprintln!("   {}: {missing} broadcast deliveries missing", t.name);
        }
        Ok::<_, String>((rate, cpu, Some((per, p50, p99))))
    };
    let r = ok(&t.name, bounded("connection scale", run).await);
    let held = r.and_then(|r| r.2);
    vec![
        (
            "open connections (64 handshakes in flight)",
            "conn/s",
            true,
            r.map(|r| r.0),
        ),
        (
            "open connections: server CPU per handshake",
            "µs",
            false,
            r.map(|r| r.1),
        ),
        (
            "connections held: RSS each",
            "KiB",
            false,
            held.map(|h| h.0),
        ),
        (
            "broadcast to all: delivery p50",
            "ms",
            false,
            held.map(|h| h.1),
        ),
        (
            "broadcast to all: delivery p99",
            "ms",
            false,
            held.map(|h| h.2),
        ),
    ]
}

/// Runs the scale rows' work once on a throwaway relay (opens `n`
/// connections, broadcasts to them once, drops them), so the client's
/// heap already holds room for the sockets and the readers' tasks when
/// the first target is measured: cold, it cost the client about 10 µs
/// more a handshake, paid by whichever target came first (elementd).
pub async fn warm_client(n: usize) -> Result<(), String> {
    let t = start_relay()?;
    let conns = connect_many_within(&t.fan, n, OPEN_BUDGET).await?;
    let sender = connect(&t.fan).await?;
    broadcast_latency(conns, sender, 1).await?;
    Ok(())
}

/// The scale rows open their connections within this time, or report
/// only the rate they opened at.
const OPEN_BUDGET: Duration = Duration::from_secs(30);

/// Up to `n` connections, 64 handshakes in flight, for at most `budget`.
async fn connect_many_within(url: &str, n: usize, budget: Duration) -> Result<Vec<Ws>, String> {
    let mut conns = Vec::with_capacity(n);
    let mut opening = std::pin::pin!(futures::stream::iter(0..n)
        .map(|_| connect_leaving_nothing(url))
        .buffer_unordered(64)
        .take_until(tokio::time::sleep(budget)));
    while let Some(ws) = opening.next().await {
        conns.push(ws?);
    }
    Ok(conns)
}

/// The value of a bounded workload, or `None` with the reason on stderr.
pub fn ok<T>(who: &str, r: Result<Result<T, String>, String>) -> Option<T> {
    match r.and_then(|r| r) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("   {who}: {e}");
            None
        }
    }
}
