//! The bench: elementd against a peer run in the same invocation, for
//! every row, printed as one table. `scripts/bench.sh` builds, installs
//! the peers and runs it. Every loop is bounded in count and time.
//!
//! - websocket: elementd, Node's `ws` server and a bare tokio-tungstenite
//!   relay (`examples/ws_relay.rs`), one after the other;
//! - connection scale: 10,000 connections on each of them;
//! - cluster: three elementd nodes on one PostgreSQL database against one;
//! - end users: upgrades with a JWT against upgrades without, and
//!   `presence` against `/healthz`, on the same server;
//! - history: the flood to 1,000 receivers with room history on against
//!   off, and recovering 100 missed messages;
//! - REST: element ops under `wrk` against `/healthz` on the same server;
//! - git: a clone over elementd's smart HTTP against `git clone file://`
//!   and `git http-backend` behind lighttpd.

mod cluster;
mod common;
mod git;
mod history;
mod hooks;
mod rest;
mod users;
mod ws;

use common::*;
use std::process::Command;

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Whether a section runs: all of them, or those `BENCH_ONLY` names
/// (comma separated: websocket, scale, cluster, users, history, rest).
fn wanted(section: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s.trim() == section))
}

/// Connections the scale rows hold: 10,000, or what the open-file limit
/// leaves (the client holds them all in this process).
fn scale_conns() -> usize {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let limit = if soft < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).map_or(soft, |_| hard)
    } else {
        soft
    };
    10_000.min(limit.saturating_sub(512) as usize)
}

type Starter =
    fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ws::Target, String>>>>;

fn starters() -> Vec<(&'static str, Starter)> {
    let mut v: Vec<(&'static str, Starter)> = vec![
        ("elementd", || Box::pin(ws::start_elementd())),
        ("node ws", || Box::pin(async { ws::start_node() })),
        ("tungstenite relay", || {
            Box::pin(async { ws::start_relay() })
        }),
    ];
    if noise_only() {
        v[0] = ("relay in elementd's place", || {
            Box::pin(async { ws::start_relay() })
        });
    }
    v
}

/// `BENCH_NOISE=1`: a second relay stands where elementd would in the
/// websocket and scale sections, so their ratios against the relay show
/// what this machine's noise alone does to a ratio.
fn noise_only() -> bool {
    std::env::var_os("BENCH_NOISE").is_some()
}

/// Runs `work` on a fresh instance of each target, one at a time, and
/// turns the values into rows: elementd against each peer.
async fn per_target<F>(section: &'static str, work: F) -> Vec<Row>
where
    F: AsyncFn(&ws::Target) -> Vec<(&'static str, &'static str, bool, Option<f64>)>,
{
    let mut results = Vec::new();
    for (name, start) in starters() {
        eprintln!("== {section}: {name}");
        match start().await {
            Ok(t) => {
                let v = work(&t).await;
                results.push((t.name.clone(), v));
            }
            Err(e) => {
                eprintln!("   {name}: {e}");
                results.push((name.to_string(), Vec::new()));
            }
        }
    }
    let (ours, peers) = results.split_first().unwrap();
    let mut rows = Vec::new();
    for (i, (workload, unit, hib, v)) in ours.1.iter().enumerate() {
        for (peer, theirs) in peers {
            let t = theirs.get(i).and_then(|r| r.3);
            rows.push(Row::new(
                section,
                *workload,
                unit,
                *hib,
                *v,
                peer.clone(),
                t,
            ));
        }
    }
    rows
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

#[tokio::main]
async fn main() {
    let s = scale();
    let started = std::time::Instant::now();
    let _ = std::fs::remove_dir_all(assets().join("logs"));
    let _ = std::fs::remove_dir_all(assets().join("sqlite"));
    let pg = std::env::var_os("BENCH_PG").is_some();
    println!(
        "elementd bench, {} · {} cores, {} (Linux {}) · BENCH_SCALE={s} · elementd on {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh("uname", &["-m"]),
        sh("uname", &["-r"]),
        if pg { "PostgreSQL" } else { "SQLite" },
    );
    if noise_only() {
        println!();
        println!("BENCH_NOISE: in the websocket and scale sections the elementd column is a");
        println!("second tungstenite relay; against the relay, those ratios are noise alone.");
    }
    println!();
    println!("How to read: each row compares elementd with one peer measured in this same run, on");
    println!(
        "this machine, one after the other. ratio = elementd ÷ peer, turned so that above 1.00"
    );
    println!(
        "elementd is better (faster, more per second, less memory) and below 1.00 it is worse:"
    );
    println!(
        "0.50 is half as good, 2.00 twice as good. Peers are floors, not rivals: the bare relay"
    );
    println!("and /healthz do almost nothing, so a ratio below 1 against them is the price of the");
    println!("product's work. Absolute numbers move with the machine's load; ratios much less.");
    println!();

    let mut rows = Vec::new();
    if wanted("websocket") {
        rows.extend(per_target("websocket", async |t: &ws::Target| ws::everyday(t, s).await).await);
    }
    if wanted("scale") {
        rows.extend(scale_rows(s).await);
    }
    if wanted("cluster") && pg_up() {
        rows.extend(cluster::rows(s).await);
    } else if wanted("cluster") {
        eprintln!("== cluster: skipped, no PostgreSQL at 127.0.0.1:5432");
    }
    if wanted("users") {
        rows.extend(users::rows(s).await);
    }
    if wanted("history") {
        rows.extend(history::rows(s).await);
    }
    if wanted("hooks") {
        rows.extend(hooks::rows(s).await);
    }
    let mut facts = rest::Facts::default();
    if wanted("rest") {
        let (r, f) = rest_and_git(s).await;
        rows.extend(r);
        facts = f;
    }
    print_table(&rows);
    goals(&rows, &facts);
    println!();
    for (file, n) in log_summary() {
        println!("server log {file}: {n} warning or error lines");
    }
    println!("(bench took {:.0}s)", started.elapsed().as_secs_f64());
}

async fn scale_rows(s: usize) -> Vec<Row> {
    let n = scale_conns();
    let section = "connection scale";
    eprintln!("== {section}: {n} connections");
    eprintln!("== {section}: warming the client on a throwaway relay");
    if let Err(e) = ws::warm_client(n).await {
        eprintln!("   warm-up: {e}");
    }
    per_target(section, async move |t: &ws::Target| {
        let mut v = ws::scale_rows(t, n, 5 * s).await;
        for r in v.iter_mut() {
            if r.0.starts_with("connections held") {
                r.0 = if n == 10_000 {
                    "10,000 connections held: RSS each"
                } else {
                    "connections held (fewer: fd limit): RSS each"
                };
            }
        }
        v
    })
    .await
}

async fn rest_and_git(s: usize) -> (Vec<Row>, rest::Facts) {
    eprintln!("== REST and git: elementd");
    let pg = std::env::var_os("BENCH_PG").is_some();
    let mut rows = Vec::new();
    let mut facts = rest::Facts::default();
    let dir = tempfile::tempdir().unwrap();
    let db = if pg { ScratchDb::create("rest") } else { None };
    match Elementd::start(dir.path(), db.as_ref().map(|d| d.url.as_str()), &[]) {
        Ok(node) => {
            let api = node.api();
            match rest::setup(&api).await {
                Ok(()) => {
                    let (r, f) = rest::rows(&api, s).await;
                    rows.extend(r);
                    facts = f;
                    rows.extend(git::rows(&node, dir.path(), s).await);
                }
                Err(e) => eprintln!("   setup: {e}"),
            }
        }
        Err(e) => eprintln!("   {e}"),
    }
    (rows, facts)
}

fn print_table(rows: &[Row]) {
    let mut section = "";
    println!("| workload | unit | elementd | peer | peer's | ratio (>1: elementd better) |");
    println!("| --- | --- | ---: | --- | ---: | ---: |");
    for r in rows {
        if r.section != section {
            section = r.section;
            println!("| **{section}** | | | | | |");
        }
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.unit,
            fmt(r.ours),
            r.peer,
            fmt(r.theirs),
            r.ratio().map_or("—".into(), |x| if x < 0.1 {
                format!("{x:.3}")
            } else {
                format!("{x:.2}")
            }),
        );
    }
    println!();
}

/// Issue 9's goals, read off the rows above.
fn goals(rows: &[Row], facts: &rest::Facts) {
    let find = |w: &str, p: &str| {
        rows.iter()
            .find(|r| r.workload.starts_with(w) && r.peer.starts_with(p))
    };
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    // Issue 9's goals carry no tag; later issues' name theirs.
    println!("Goals (untagged: issue 9's):");
    let idle = find("idle connection", "node ws");
    println!(
        "- idle connection ≤ Node's: {} (elementd {} KiB, node {} KiB)",
        verdict(idle.and_then(|r| Some(r.ours? <= r.theirs?))),
        fmt(idle.and_then(|r| r.ours)),
        fmt(idle.and_then(|r| r.theirs)),
    );
    // Read ops against /healthz on the same server: (name, row, goal, issue).
    for (what, w, goal, issue) in [
        ("GET /api/acme/chat", "get: GET /api/acme/chat", 0.3, ""),
        ("GET /api/types", "GET /api/types", 0.3, ""),
        ("list", "list: GET /api/acme/ops/list", 0.25, " (issue 26)"),
        ("presence", "presence ?room=lobby", 0.25, " (issue 26)"),
        ("history", "history ?room=lobby", 0.25, " (issue 26)"),
    ] {
        let r = find(w, "/healthz").filter(|r| r.unit == "req/s");
        let ratio = r.and_then(Row::ratio);
        println!(
            "- {what} ≥ {goal}× /healthz{issue}: {} ({}×)",
            verdict(ratio.map(|x| x >= goal)),
            fmt(ratio)
        );
    }
    // The websocket goals of issue 26, each a ratio floor against a peer
    // (ratios are turned so that above 1 is better).
    for (what, w, peer, floor) in [
        (
            "handshakes ≥ 0.85× the relay",
            "open connections (64",
            "tungstenite relay",
            0.85,
        ),
        (
            "handshakes ≥ 1.2× Node's",
            "open connections (64",
            "node ws",
            1.2,
        ),
        (
            "echo p99 ≤ 1.5× the relay's",
            "echo round trip p99",
            "tungstenite relay",
            1.0 / 1.5,
        ),
        (
            "echo p99 just after 2,000 hang-ups ≤ 1.5× the relay's",
            "echo round trip p99, just after",
            "tungstenite relay",
            1.0 / 1.5,
        ),
        (
            "broadcast to 10,000: p99 ≤ the relay's",
            "broadcast to all: delivery p99",
            "tungstenite relay",
            1.0,
        ),
        (
            "10,000 held: RSS each ≤ Node's",
            "10,000 connections held",
            "node ws",
            1.0,
        ),
    ] {
        let ratio = find(w, peer).and_then(Row::ratio);
        println!(
            "- {what} (issue 26): {} ({}×)",
            verdict(ratio.map(|x| x >= floor)),
            fmt(ratio)
        );
    }
    let jwt = find("handshakes: auth jwt HS256", "auth none").and_then(Row::ratio);
    println!(
        "- handshakes with a JWT (HS256) ≥ 0.85× without (issue 21): {} ({}×)",
        verdict(jwt.map(|x| x >= 0.85)),
        fmt(jwt)
    );
    let hist = find("flood 1→1000: history on", "history off").and_then(Row::ratio);
    println!(
        "- flood with history on ≥ 0.7× off (issue 22): {} ({}×)",
        verdict(hist.map(|x| x >= 0.7)),
        fmt(hist)
    );
    let hook = find(
        "message hook: client → backend → client",
        "backend called directly",
    );
    let overhead = hook.and_then(|r| Some(r.ours? - r.theirs?));
    println!(
        "- message-hook overhead ≤ 1 ms at p50 (issue 23): {} ({} ms)",
        verdict(overhead.map(|x| x <= 1.0)),
        fmt(overhead)
    );
    let u = facts.update16.map(|w| w.rps);
    println!(
        "- update on {} elements ≥ 618 req/s (2× 309): {} ({} req/s)",
        rest::ELEMENTS,
        verdict(u.map(|x| x >= 618.0)),
        fmt(u)
    );
    let one = facts.update1;
    println!(
        "- 8 concurrent updates of one element, none fail: {} ({} of {} not 2xx)",
        verdict(one.map(|w| w.failed == 0)),
        one.map_or("—".into(), |w| w.failed.to_string()),
        one.map_or("—".into(), |w| w.requests.to_string()),
    );
}
