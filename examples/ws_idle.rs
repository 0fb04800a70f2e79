//! Holds N idle WebSocket connections to an elementd endpoint and prints
//! the server's resident memory before and after (Linux /proc). Loopback
//! only; bounded in count and time. `scripts/ws-rss.sh` drives it.
//!
//!   cargo run --release --example ws_idle -- \
//!       ws://127.0.0.1:8080/ws/acme/ws <server-pid> 5000 http://127.0.0.1:8080/api/acme/chat <token>

use futures::StreamExt;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server pid");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn active(api: &str, token: &str) -> u64 {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}/ops/stats"))
        .bearer_auth(token)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    v["metrics"]["active_connections"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, pid, n, api, token] = &args[..] else {
        eprintln!("usage: ws_idle <ws-url> <server-pid> <count> <element-api-url> <token>");
        std::process::exit(2);
    };
    assert!(
        url.starts_with("ws://127.") || url.starts_with("ws://localhost"),
        "loopback only"
    );
    let pid: u32 = pid.parse().expect("pid");
    let n: usize = n.parse().expect("count");
    assert!(n <= 9_000, "bounded: at most 9000 connections");
    let before = rss_kib(pid);
    let started = Instant::now();
    let conns: Vec<_> = futures::stream::iter(0..n)
        .map(|_| async {
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await
            .expect("connect in time")
            .expect("connect")
            .0
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let opened = started.elapsed();
    // Let the server settle (tasks parked, buffers at rest).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = active(api, token).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "connections: {n} opened in {:.1}s; server reports {live} active",
        opened.as_secs_f64()
    );
    println!(
        "server RSS before: {before} KiB ({:.1} MiB)",
        before as f64 / 1024.0
    );
    println!(
        "server RSS after:  {after} KiB ({:.1} MiB)",
        after as f64 / 1024.0
    );
    println!("per connection:    {:.1} KiB", per / 1024.0);
    assert_eq!(live as usize, n, "every connection is live");
    drop(conns);
}
