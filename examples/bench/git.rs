//! Cloning an element with 1,000 versions over elementd's smart HTTP,
//! against `git clone file://` of the same bare repository and against
//! `git http-backend` serving it as CGI behind lighttpd.

use crate::common::*;
use crate::rest::CIRCLE;
use futures::StreamExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECTION: &str = "git (clone, same repository)";
const VERSIONS: usize = 1000;

/// 999 updates after the create: version 1,000. Four in flight.
async fn make_history(api: &Api, slug: &str) -> Result<(), String> {
    let failed = futures::stream::iter(2..=VERSIONS)
        .map(|v| {
            let api = api.clone();
            async move {
                let body = serde_json::json!({"spec": {"connection": {"max_connections": v}}});
                api.call(
                    reqwest::Method::PATCH,
                    &format!("/api/{CIRCLE}/{slug}/ops/update"),
                    Some(body),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(4)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    if failed > 0 {
        return Err(format!("{failed} of {} updates failed", VERSIONS - 1));
    }
    Ok(())
}

/// lighttpd running `git http-backend` (the one of the `git` on PATH) as
/// CGI over `repos`, with its config in the bench's work folder.
fn start_lighttpd(repos: &Path) -> Result<(Proc, u16), String> {
    let work = std::fs::canonicalize(assets()).map_err(|e| e.to_string())?;
    let exec = Command::new("git")
        .arg("--exec-path")
        .output()
        .map_err(|e| e.to_string())?;
    let backend = format!(
        "{}/git-http-backend",
        String::from_utf8_lossy(&exec.stdout).trim()
    );
    let port = free_port();
    let conf = work.join("lighttpd.conf");
    std::fs::write(
        &conf,
        format!(
            r#"server.modules = ("mod_alias", "mod_cgi", "mod_setenv")
server.document-root = "{work}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{work}/lighttpd.log"
alias.url = ("/git" => "{backend}")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
            work = work.display(),
            repos = repos.display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new("lighttpd")
        .arg("-D")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log_file("lighttpd"))
        .spawn()
        .map_err(|e| format!("lighttpd: {e}"))?;
    let proc = Proc(child);
    let until = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until {
            return Err("lighttpd did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, port))
}

/// One `git clone` into a fresh folder: milliseconds.
fn clone_ms(url: &str) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let st = Command::new("git")
        .args(["clone", "-q", url])
        .arg(dir.path().join("c"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("git clone {url}: {st}"));
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

pub async fn rows(node: &Elementd, data: &Path, s: usize) -> Vec<Row> {
    let api = node.api();
    let label = "clone an element with 1,000 versions";
    let run = async {
        make_history(&api, "hist").await?;
        let el = api
            .call(reqwest::Method::GET, &format!("/api/{CIRCLE}/hist"), None)
            .await?;
        let id = el["id"]
            .as_str()
            .or(el["element"]["id"].as_str())
            .ok_or("no element id")?
            .to_string();
        let repos = data.join("repos");
        let ours = format!(
            "http://bench:{}@{}/git/{CIRCLE}/hist.git",
            node.token, node.addr
        );
        let file = format!("file://{}/{id}.git", repos.display());
        let cgi = match start_lighttpd(&repos) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("   git http-backend: {e}");
                None
            }
        };
        let cgi_url = cgi
            .as_ref()
            .map(|(_, port)| format!("http://127.0.0.1:{port}/git/{id}.git"));
        // Rounds interleave the three, so drift hits each alike.
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 * s {
            a.push(clone_ms(&ours)?);
            b.push(clone_ms(&file)?);
            if let Some(u) = &cgi_url {
                c.push(clone_ms(u)?);
            }
        }
        let med = |v: &mut Vec<f64>| (!v.is_empty()).then(|| pct(v, 50.0));
        Ok::<_, String>((med(&mut a), med(&mut b), med(&mut c)))
    };
    let (ours, file, cgi) = match bounded("git", run).await.and_then(|r| r) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("   git: {e}");
            (None, None, None)
        }
    };
    vec![
        Row::new(
            SECTION,
            format!("{label}, median"),
            "ms",
            false,
            ours,
            "git clone file://",
            file,
        ),
        Row::new(
            SECTION,
            format!("{label}, median"),
            "ms",
            false,
            ours,
            "git http-backend (lighttpd CGI)",
            cgi,
        ),
    ]
}
