//! The element API under load, each op against `/healthz` on the same
//! server with the same client: `wrk` (Debian) for plain requests, the
//! bench's own client for Server-Sent Events.

use crate::common::*;
use futures::StreamExt;
use std::time::{Duration, Instant};

const SECTION: &str = "REST (vs /healthz, same server)";
/// Connections for every HTTP workload.
const CONNS: usize = 8;

pub const CIRCLE: &str = "acme";
pub const ELEMENTS: usize = 16;

fn slugs() -> Vec<String> {
    (0..ELEMENTS).map(|i| format!("u{i:02}")).collect()
}

/// The circle the REST and git rows use: `chat` (the README's example),
/// 16 more websockets to update, and `hist` for the clone rows.
pub async fn setup(api: &Api) -> Result<(), String> {
    api.circle(CIRCLE).await?;
    let ws = |slug: &str, path: &str| {
        serde_json::json!({"element_type": "websocket", "slug": slug,
            "spec": {"path": path, "rooms": {"enabled": true}}})
    };
    api.create(CIRCLE, ws("chat", "/chat")).await?;
    api.create(CIRCLE, ws("hist", "/hist")).await?;
    for s in slugs() {
        api.create(CIRCLE, ws(&s, &format!("/{s}"))).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Default)]
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Answers outside 2xx and 3xx, plus socket errors.
    pub failed: u64,
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", v] => w.p99_ms = ms(v)?,
            ["Requests/sec:", v] => w.rps = v.parse().ok()?,
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => w.failed += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                w.failed += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (w.requests > 0).then_some(w)
}

/// One `wrk` run: `CONNS` connections on one thread for `secs`.
pub async fn wrk(
    api: &Api,
    path: &str,
    secs: u64,
    update: Option<&[String]>,
) -> Result<Wrk, String> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(["-t1", &format!("-c{CONNS}"), &format!("-d{secs}s")])
        .args(["--latency", "--timeout", "10s"])
        .args(["-H", &format!("Authorization: Bearer {}", api.token)]);
    if let Some(slugs) = update {
        cmd.arg("-s")
            .arg(assets().join("update.lua"))
            .env("BENCH_CIRCLE", CIRCLE)
            .env("BENCH_SLUGS", slugs.join(","));
    }
    cmd.arg(format!("{}{path}", api.base)).kill_on_drop(true);
    let out = bounded("wrk", cmd.output())
        .await?
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).ok_or_else(|| format!("wrk {path}: {text}"))
}

/// Opens the stream (or GETs `path`) on a new connection each time, `CONNS`
/// at once, for `secs`: successful requests per second, their p99 ms until
/// the answer's head, and the answers that were not 2xx.
async fn open_loop(api: &Api, path: &str, secs: u64) -> Result<Wrk, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNS)
        .map(|_| {
            let (http, url, token) = (
                http.clone(),
                format!("{}{path}", api.base),
                api.token.clone(),
            );
            tokio::spawn(async move {
                let (mut lat, mut failed) = (Vec::new(), Vec::new());
                while Instant::now() < until {
                    let t = Instant::now();
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => {
                            lat.push(t.elapsed().as_secs_f64() * 1e3)
                        }
                        Ok(r) => failed.push(r.status().as_u16().to_string()),
                        Err(_) => failed.push("error".to_string()),
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let (mut lat, mut failed) = (Vec::new(), std::collections::BTreeMap::new());
    for t in tasks {
        let (l, f) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        for code in f {
            *failed.entry(code).or_insert(0u64) += 1;
        }
    }
    if !failed.is_empty() {
        eprintln!("   {path}: answers not 2xx: {failed:?}");
    }
    let ok = lat.len() as u64;
    let failed: u64 = failed.values().sum();
    // Throughput counts successful opens only.
    Ok(Wrk {
        rps: ok as f64 / start.elapsed().as_secs_f64(),
        p99_ms: pct(&mut lat, 99.0),
        requests: ok + failed,
        failed,
    })
}

/// Follows the circle's event stream, counting `element.updated` events
/// and each one's delay from its timestamp (the UUIDv7 id's milliseconds)
/// to its arrival, until `until`.
async fn subscribe(
    api: &Api,
    until: tokio::time::Instant,
) -> Result<tokio::task::JoinHandle<(usize, Vec<f64>)>, String> {
    let r = api
        .http
        .get(format!("{}/api/{CIRCLE}/ops/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("events: {}", r.status()));
    }
    Ok(tokio::spawn(async move {
        let (mut n, mut delays) = (0, Vec::new());
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(until, body.next()).await {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as f64;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                if !frame.lines().any(|l| l == "event: element.updated") {
                    continue;
                }
                n += 1;
                let id = frame.lines().find_map(|l| l.strip_prefix("id: "));
                let hex: Option<String> = id.map(|i| i.replace('-', "").chars().take(12).collect());
                if let Some(at) = hex.and_then(|h| u64::from_str_radix(&h, 16).ok()) {
                    delays.push(now_ms - at as f64);
                }
            }
        }
        (n, delays)
    }))
}

/// 8 subscribers follow the circle while `wrk` updates 16 elements:
/// events each subscriber received per second (the fewest of the 8) and
/// the p99 delay, with the run's updates per second and update p99.
async fn events_live(api: &Api, secs: u64) -> Result<((f64, f64), Wrk), String> {
    // The subscribers stop a moment after wrk, once the last events are in.
    let until = tokio::time::Instant::now() + Duration::from_secs(secs + 2);
    let mut subs = Vec::new();
    for _ in 0..CONNS {
        subs.push(subscribe(api, until).await?);
    }
    let w = wrk(api, "/", secs, Some(&slugs())).await?;
    let (mut fewest, mut delays) = (usize::MAX, Vec::new());
    for s in subs {
        let (n, d) = s.await.map_err(|e| e.to_string())?;
        fewest = fewest.min(n);
        delays.extend(d);
    }
    let per_sub = fewest as f64 / secs as f64;
    Ok(((per_sub, pct(&mut delays, 99.0)), w))
}

/// What the goals below the table need besides the rows.
#[derive(Default)]
pub struct Facts {
    pub update16: Option<Wrk>,
    pub update1: Option<Wrk>,
}

fn got<T>(who: &str, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| eprintln!("   {who}: {e}")).ok()
}

pub async fn rows(api: &Api, s: usize) -> (Vec<Row>, Facts) {
    let secs = 3 * s as u64;
    let mut out = Vec::new();
    let mut facts = Facts::default();
    let health = got("healthz", wrk(api, "/healthz", secs, None).await);
    let hz = "/healthz";
    let pair = |out: &mut Vec<Row>, label: String, w: Option<Wrk>, peer: &str, p: Option<Wrk>| {
        out.push(Row::new(
            SECTION,
            format!("{label}: throughput"),
            "req/s",
            true,
            w.map(|w| w.rps),
            peer,
            p.map(|p| p.rps),
        ));
        out.push(Row::new(
            SECTION,
            format!("{label}: p99"),
            "ms",
            false,
            w.map(|w| w.p99_ms),
            peer,
            p.map(|p| p.p99_ms),
        ));
    };
    let gets = [
        ("get: GET /api/acme/chat", "/api/acme/chat".to_string()),
        ("GET /api/types", "/api/types".to_string()),
        (
            "list: GET /api/acme/ops/list (19 elements)",
            format!("/api/{CIRCLE}/ops/list"),
        ),
    ];
    for (label, path) in gets {
        let w = got(label, wrk(api, &path, secs, None).await);
        pair(&mut out, failures(label, w), w, hz, health);
    }
    let u16 = got("update", wrk(api, "/", secs, Some(&slugs())).await);
    let label = format!("update: {ELEMENTS} elements × {CONNS} connections");
    pair(&mut out, failures(&label, u16), u16, hz, health);
    let u1 = got(
        "update",
        wrk(api, "/", secs, Some(&["chat".to_string()])).await,
    );
    let label = format!("update: {CONNS} writers on one element");
    pair(&mut out, failures(&label, u1), u1, hz, health);
    facts.update16 = u16;
    facts.update1 = u1;

    // Server-Sent Events: opening a stream, against /healthz with the
    // same client (a new connection for each request on both).
    let path = format!("/api/{CIRCLE}/ops/events");
    let open = got(
        "events",
        bounded("events", open_loop(api, &path, secs))
            .await
            .and_then(|r| r),
    );
    let fresh = got(
        "healthz",
        bounded("healthz", open_loop(api, "/healthz", secs))
            .await
            .and_then(|r| r),
    );
    let label = "events: open the circle's stream (new connection each)".to_string();
    pair(
        &mut out,
        failures(&label, open),
        open,
        "/healthz (new connection each)",
        fresh,
    );

    // Live delivery while updates run.
    if let Some(((per_sub, p99), w)) = got(
        "events",
        bounded("events", events_live(api, secs))
            .await
            .and_then(|r| r),
    ) {
        let answered = (w.requests - w.failed) as f64 / secs as f64;
        out.push(Row::new(
            SECTION,
            format!("events: {CONNS} subscribers during update {ELEMENTS}×{CONNS}, element.updated received (fewest)"),
            "events/s",
            true,
            Some(per_sub),
            "updates answered, same run",
            Some(answered),
        ));
        out.push(Row::new(
            SECTION,
            "events: delay from the event's timestamp to a subscriber, p99",
            "ms",
            false,
            Some(p99),
            "update p99, same run",
            Some(w.p99_ms),
        ));
    }
    (out, facts)
}

/// The label, with the run's failed answers: always for writes, for
/// reads when there were any.
fn failures(label: &str, w: Option<Wrk>) -> String {
    match w {
        Some(w) if w.failed > 0 || label.starts_with("update") => {
            format!("{label} ({} of {} not 2xx)", w.failed, w.requests)
        }
        _ => label.to_string(),
    }
}
