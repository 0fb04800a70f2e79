//! WebSocket benchmarks: elementd against a peer (Node's `ws` server),
//! both started here, driven by the same load generator on loopback, and
//! printed as one table with ratios. Every loop is bounded in count and
//! time. `scripts/bench.sh` builds and runs it.

use futures::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);

struct Target {
    name: &'static str,
    echo: String,
    fan: String,
    pid: u32,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scale() -> usize {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 10)
}

/// Reads the child's stdout until `pred` finds what it wants.
fn read_until<T>(child: &mut Child, mut pred: impl FnMut(&str) -> Option<T>) -> T {
    let mut r = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "server exited early");
        if let Some(t) = pred(line.trim()) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in r.lines() {});
            return t;
        }
    }
}

async fn start_elementd() -> Target {
    let bin = std::env::var("ELEMENTD_BIN").unwrap_or_else(|_| "target/release/elementd".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn");
    // SQLite unless the script made a PostgreSQL database for this run.
    match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => cmd.env("DATABASE_URL", url),
        Err(_) => cmd.env_remove("DATABASE_URL"),
    };
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("elementd starts");
    let mut token = String::new();
    let addr = read_until(&mut child, |l| {
        if l.starts_with("edt_") {
            token = l.to_string();
        }
        l.strip_prefix("elementd listening on http://")
            .map(str::to_string)
    });
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("http://{addr}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let spec = |path: &str, on: &str| {
        serde_json::json!({
            "path": path, "on_message": on,
            "connection": {"max_connections": 20000, "max_message_bytes": 1048576, "idle_timeout_ms": 0, "send_queue": 4096},
            "heartbeat": {"interval_ms": 600000, "timeout_ms": 1200000},
        })
    };
    assert!(post(
        "/api/ops/create",
        serde_json::json!({"element_type": "circle", "slug": "bench"})
    )
    .await
    .unwrap()
    .status()
    .is_success());
    for (slug, path, on) in [("echo", "/echo", "echo"), ("fan", "/fan", "broadcast")] {
        let r = post(
            "/api/bench/ops/create",
            serde_json::json!({"element_type": "websocket", "slug": slug, "spec": spec(path, on)}),
        )
        .await
        .unwrap();
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    Target {
        name: if std::env::var_os("BENCH_DATABASE_URL").is_some() {
            "elementd (pg)"
        } else {
            "elementd"
        },
        echo: format!("ws://{addr}/ws/bench/echo"),
        fan: format!("ws://{addr}/ws/bench/fan"),
        pid: child.id(),
        child,
        _dir: Some(dir),
    }
}

fn start_node() -> Target {
    let js = std::env::var("PEER_JS").unwrap_or_else(|_| "target/bench/ws-peer.js".into());
    let mut child = Command::new("node")
        .arg(&js)
        .env(
            "NODE_PATH",
            std::path::Path::new(&js)
                .parent()
                .unwrap()
                .join("node_modules"),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let port = read_until(&mut child, |l| {
        l.strip_prefix("listening ").map(str::to_string)
    });
    Target {
        name: "node ws",
        echo: format!("ws://127.0.0.1:{port}/echo"),
        fan: format!("ws://127.0.0.1:{port}/fan"),
        pid: child.id(),
        child,
        _dir: None,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match ws.next().await.expect("open").expect("frame") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            _ => continue,
        }
    }
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sequential round trips on one connection: p50 and p99 in µs.
async fn echo_latency(url: &str, n: usize) -> (f64, f64) {
    let mut ws = connect(url).await;
    let payload = "x".repeat(64);
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::Text(payload.clone().into()))
            .await
            .unwrap();
        next_data(&mut ws).await;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (us[n / 2], us[n * 99 / 100])
}

/// 256 KiB binary round trips on one connection: MiB echoed per second.
async fn echo_large(url: &str, n: usize) -> f64 {
    let mut ws = connect(url).await;
    let payload: Vec<u8> = (0..256 * 1024).map(|i| i as u8).collect();
    let t = Instant::now();
    for _ in 0..n {
        ws.send(Message::Binary(payload.clone().into()))
            .await
            .unwrap();
        let back = next_data(&mut ws).await;
        assert_eq!(back.len(), payload.len());
    }
    (n * payload.len()) as f64 / (1024.0 * 1024.0) / t.elapsed().as_secs_f64()
}

/// Many clients doing round trips at once: messages per second.
async fn echo_throughput(url: &str, clients: usize, per: usize) -> f64 {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(connect(url).await);
    }
    let t = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for _ in 0..per {
                    ws.send(Message::Text("ping-pong-payload".into()))
                        .await
                        .unwrap();
                    next_data(&mut ws).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (clients * per) as f64 / t.elapsed().as_secs_f64()
}

/// One sender, many receivers: deliveries per second until every receiver
/// has every message.
async fn fanout(url: &str, receivers: usize, msgs: usize) -> f64 {
    let mut rx = Vec::new();
    for _ in 0..receivers {
        rx.push(connect(url).await);
    }
    let mut sender = connect(url).await;
    // Let the server finish registering the last connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let tasks: Vec<_> = rx
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for _ in 0..msgs {
                    next_data(&mut ws).await;
                }
            })
        })
        .collect();
    for i in 0..msgs {
        sender
            .send(Message::Text(format!("broadcast {i}").into()))
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    (receivers * msgs) as f64 / t.elapsed().as_secs_f64()
}

/// Server memory per idle connection, KiB.
async fn idle_memory(url: &str, pid: u32, n: usize) -> f64 {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid);
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(connect(url).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(conns);
    (after - before) / n as f64
}

struct Row {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
    values: Vec<f64>,
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("workload finished in time")
}

async fn measure(t: &Target, s: usize) -> Vec<(String, &'static str, bool, f64)> {
    // Memory first, on a fresh server: after the other workloads, freed
    // heap would be reused and flatter both servers by different amounts.
    let mem = bounded(idle_memory(&t.echo, t.pid, 2000)).await;
    let (p50, p99) = bounded(echo_latency(&t.echo, 3000 * s)).await;
    let thr = bounded(echo_throughput(&t.echo, 50, 400 * s)).await;
    let large = bounded(echo_large(&t.echo, 400 * s)).await;
    let fan = bounded(fanout(&t.fan, 500, 100 * s)).await;
    vec![
        ("echo round trip p50".into(), "µs", false, p50),
        ("echo round trip p99".into(), "µs", false, p99),
        ("echo, 50 clients".into(), "msg/s", true, thr),
        ("echo 256 KiB messages".into(), "MiB/s", true, large),
        ("fan-out 1→500".into(), "deliveries/s", true, fan),
        ("idle connection".into(), "KiB RSS", false, mem),
    ]
}

#[tokio::main]
async fn main() {
    let s = scale();
    let mut rows: Vec<Row> = Vec::new();
    let mut names = Vec::new();
    // One target at a time, so they do not compete for the two cores.
    for start in [0, 1] {
        let target = if start == 0 {
            start_elementd().await
        } else {
            start_node()
        };
        eprintln!("== {}", target.name);
        names.push(target.name);
        for (i, (name, unit, hib, v)) in measure(&target, s).await.into_iter().enumerate() {
            if rows.len() <= i {
                rows.push(Row {
                    name,
                    unit,
                    higher_is_better: hib,
                    values: vec![],
                });
            }
            rows[i].values.push(v);
        }
    }
    println!(
        "| workload | unit | {} | {} | elementd vs {} |",
        names[0], names[1], names[1]
    );
    println!("| --- | --- | ---: | ---: | --- |");
    for r in rows {
        let (a, b) = (r.values[0], r.values[1]);
        let better = if r.higher_is_better { a / b } else { b / a };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}× {} |",
            r.name,
            r.unit,
            a,
            b,
            if better >= 1.0 { better } else { 1.0 / better },
            if better >= 1.0 { "better" } else { "worse" }
        );
    }
}
