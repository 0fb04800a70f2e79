//! What every section of the bench shares: processes it starts, scratch
//! databases, the element API, percentiles and the table's rows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// No single workload runs longer than this.
pub const LIMIT: Duration = Duration::from_secs(120);

pub fn scale() -> usize {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 10)
}

/// Fails the workload (not the process) when it overruns [`LIMIT`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(LIMIT, f)
        .await
        .map_err(|_| format!("{what}: over {}s", LIMIT.as_secs()))
}

/// One row of the table: elementd's value and one peer's, in the same unit.
pub struct Row {
    pub section: &'static str,
    pub workload: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub ours: Option<f64>,
    pub peer: String,
    pub theirs: Option<f64>,
}

impl Row {
    pub fn new(
        section: &'static str,
        workload: impl Into<String>,
        unit: &'static str,
        higher_is_better: bool,
        ours: Option<f64>,
        peer: impl Into<String>,
        theirs: Option<f64>,
    ) -> Row {
        Row {
            section,
            workload: workload.into(),
            unit,
            higher_is_better,
            ours,
            peer: peer.into(),
            theirs,
        }
    }

    /// elementd ÷ peer in the direction of better: above 1 elementd does
    /// better, below 1 worse.
    pub fn ratio(&self) -> Option<f64> {
        let (a, b) = (self.ours?, self.theirs?);
        let r = if self.higher_is_better { a / b } else { b / a };
        r.is_finite().then_some(r)
    }
}

/// Sorted copy's p-th percentile (0..=100), or 0 when empty.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i]
}

pub fn rss_kib(pid: u32) -> f64 {
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

/// CPU time a process has used, user and system, all its threads, in
/// seconds (clock ticks: 10 ms steps on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may itself hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    match (f.get(11), f.get(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's stdout until `pred` finds what it wants, then keeps
/// draining it so the child never blocks on a full pipe.
pub fn read_until<T>(child: &mut Child, mut pred: impl FnMut(&str) -> Option<T>) -> Option<T> {
    let mut r = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(t) = pred(line.trim()) {
            std::thread::spawn(move || for _ in r.lines() {});
            return Some(t);
        }
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL database made for this run and dropped with the value.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
}

fn psql(sql: &str) -> bool {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qAtc", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn pg_up() -> bool {
    psql("SELECT 1")
}

impl ScratchDb {
    pub fn create(tag: &str) -> Option<ScratchDb> {
        let prefix = std::env::var("BENCH_DB_PREFIX")
            .unwrap_or_else(|_| format!("elementd_bench_{}", std::process::id()));
        let name = format!("{prefix}_{tag}");
        psql(&format!("CREATE DATABASE {name}")).then(|| ScratchDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A running `elementd serve` on a loopback port of its own.
pub struct Elementd {
    pub addr: String,
    pub token: String,
    pub proc: Proc,
}

impl Elementd {
    /// Starts a node on `data` and `db`. With `None`, SQLite on disk under
    /// the bench's assets (see [`sqlite_beside`]), whatever `data` is on.
    pub fn start(data: &Path, db: Option<&str>, extra: &[&str]) -> Result<Elementd, String> {
        let bin =
            std::env::var("ELEMENTD_BIN").unwrap_or_else(|_| "target/release/elementd".into());
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file("elementd"));
        match db {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env("DATABASE_URL", sqlite_beside(data)?),
        };
        let mut child = cmd.spawn().map_err(|e| format!("elementd: {e}"))?;
        let addr = read_until(&mut child, |l| {
            l.strip_prefix("elementd listening on http://")
                .map(str::to_string)
        });
        let proc = Proc(child);
        let addr = addr.ok_or("elementd exited before listening")?;
        let token = std::fs::read_to_string(data.join("admin.token"))
            .map_err(|e| format!("admin.token: {e}"))?
            .trim()
            .to_string();
        Ok(Elementd { addr, token, proc })
    }

    pub fn api(&self) -> Api {
        Api {
            base: format!("http://{}", self.addr),
            token: self.token.clone(),
            http: reqwest::Client::new(),
        }
    }
}

/// The element API of one node, as the platform admin.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{path}: {status} {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create(
        &self,
        circle: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.post(&format!("/api/{circle}/ops/create"), body).await
    }

    pub async fn circle(&self, slug: &str) -> Result<serde_json::Value, String> {
        self.post(
            "/api/ops/create",
            serde_json::json!({"element_type": "circle", "slug": slug}),
        )
        .await
    }
}

/// A websocket element's spec for the bench: generous limits, no
/// heartbeat or idle timeout within the run.
pub fn ws_spec(path: &str, on_message: &str) -> serde_json::Value {
    serde_json::json!({
        "path": path, "on_message": on_message,
        "connection": {"max_connections": 20000, "max_message_bytes": 1048576, "idle_timeout_ms": 0, "send_queue": 4096},
        "heartbeat": {"interval_ms": 300000, "timeout_ms": 900000},
    })
}

/// A SQLite URL for the node on `data`, in a folder of its own under the
/// bench's assets (on disk), the same for a node started again on `data`.
/// The data folders may be on a tmpfs (`scripts/bench.sh`); the database
/// stays on disk, so its syncs cost what they cost a user.
pub fn sqlite_beside(data: &Path) -> Result<String, String> {
    let name = data.file_name().ok_or("data folder has no name")?;
    let dir = std::path::absolute(assets().join("sqlite").join(name))
        .map_err(|e| format!("sqlite folder: {e}"))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(format!("sqlite://{}/elementd.db", dir.display()))
}

/// Where the script put the bench's assets (Node peer, wrk scripts).
pub fn assets() -> PathBuf {
    std::env::var("BENCH_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/bench"))
}

/// Server logs go to files under the bench's work folder, numbered in
/// start order, so the terminal shows only the bench.
pub fn log_file(name: &str) -> Stdio {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let i = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let dir = assets().join("logs");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::File::create(dir.join(format!("{name}-{i}.log"))).map_or(Stdio::null(), Stdio::from)
}

/// Warnings and errors the servers logged, per file.
pub fn log_summary() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(assets().join("logs")) else {
        return out;
    };
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let n = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count();
        if n > 0 {
            out.push((e.path().display().to_string(), n));
        }
    }
    out.sort();
    out
}
