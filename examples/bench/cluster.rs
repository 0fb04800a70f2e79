//! Several nodes: elementd on one scratch PostgreSQL database and one data
//! folder, first as one node, then as three, with the same fan-out
//! workloads; receivers are spread over the nodes, the sender is on the
//! first.

use crate::common::*;
use crate::ws::{broadcast_latency, connect_retry, fanout, fanout_from, ok};
use std::time::Duration;

const RECEIVERS: usize = 500;

/// Flood fan-out (deliveries/s) and paced broadcasts (p50, p99 ms) with
/// the receivers spread over `urls`.
async fn workloads(urls: &[String], s: usize) -> (Option<f64>, Option<(f64, f64)>, Option<f64>) {
    let flood = ok(
        "cluster",
        bounded("cluster fan-out", fanout(urls, RECEIVERS, 100 * s)).await,
    );
    if let Some((_, lost)) = flood.filter(|f| f.1 > 0) {
        eprintln!("   cluster: fan-out lost {lost} deliveries");
    }
    let paced = async {
        let mut conns = Vec::new();
        for i in 0..RECEIVERS {
            conns.push(connect_retry(&urls[i % urls.len()]).await?);
        }
        let sender = connect_retry(&urls[0]).await?;
        let (p50, p99, missing) = broadcast_latency(conns, sender, 20 * s).await?;
        if missing > 0 {
            eprintln!("   cluster: {missing} broadcast deliveries missing");
        }
        Ok((p50, p99))
    };
    let paced = ok("cluster", bounded("cluster broadcast", paced).await);
    // Three senders (one per node when there are three) to one room with
    // history: every offset comes from the shared store.
    let hist: Vec<String> = urls
        .iter()
        .map(|u| u.replace("/ws/bench/fan", "/ws/bench/hist"))
        .collect();
    let history = ok(
        "cluster",
        bounded("cluster history", fanout_from(&hist, RECEIVERS, 100 * s, 3)).await,
    );
    if let Some((_, lost)) = history.filter(|f| f.1 > 0) {
        eprintln!("   cluster: history fan-out lost {lost} deliveries");
    }
    (flood.map(|f| f.0), paced, history.map(|f| f.0))
}

pub async fn rows(s: usize) -> Vec<Row> {
    const SECTION: &str = "cluster (PostgreSQL)";
    let mut out = Vec::new();
    let run = async {
        let db = ScratchDb::create("cluster").ok_or("cannot create a scratch database")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let one = Elementd::start(dir.path(), Some(&db.url), &[])?;
        let api = one.api();
        api.circle("bench").await?;
        api.create(
            "bench",
            serde_json::json!({"element_type": "websocket", "slug": "fan", "spec": ws_spec("/fan", "broadcast")}),
        )
        .await?;
        let mut spec = ws_spec("/hist", "broadcast");
        spec["history"] = serde_json::json!({"size": 1000});
        api.create(
            "bench",
            serde_json::json!({"element_type": "websocket", "slug": "hist", "spec": spec}),
        )
        .await?;
        let url = |n: &Elementd| format!("ws://{}/ws/bench/fan", n.addr);
        eprintln!("== cluster: 1 node");
        let single = workloads(&[url(&one)], s).await;
        drop(one);
        eprintln!("== cluster: 3 nodes");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Elementd::start(dir.path(), Some(&db.url), &[])?);
        }
        // Each node announces itself at start; give the announcements and
        // the first heartbeats a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let urls: Vec<String> = nodes.iter().map(url).collect();
        let three = workloads(&urls, s).await;
        drop(nodes);
        Ok::<_, String>((single, three))
    };
    let (single, three) = match run.await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("   cluster: {e}");
            ((None, None, None), (None, None, None))
        }
    };
    let peer = "1 node (same database)";
    out.push(Row::new(
        SECTION,
        format!("3 nodes: fan-out 1→{RECEIVERS} (flood)"),
        "deliveries/s",
        true,
        three.0,
        peer,
        single.0,
    ));
    out.push(Row::new(
        SECTION,
        format!("3 nodes: broadcast to {RECEIVERS}, delivery p50"),
        "ms",
        false,
        three.1.map(|p| p.0),
        peer,
        single.1.map(|p| p.0),
    ));
    out.push(Row::new(
        SECTION,
        format!("3 nodes: broadcast to {RECEIVERS}, delivery p99"),
        "ms",
        false,
        three.1.map(|p| p.1),
        peer,
        single.1.map(|p| p.1),
    ));
    out.push(Row::new(
        SECTION,
        format!("3 senders, one per node, history on: fan-out to {RECEIVERS} (flood)"),
        "deliveries/s",
        true,
        three.2,
        "1 node, 3 senders",
        single.2,
    ));
    out
}
