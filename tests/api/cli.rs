//! The `elementd` binary itself: token commands, first start, signals.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn elementd(app: &TestApp) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.env("ELEMENTD_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", app.config.database_url())
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_list_revoke() {
    let app = spawn_app().await;
    app.with_chat().await;
    let out = elementd(&app)
        .args([
            "token",
            "create",
            "--circle",
            "acme",
            "--role",
            "member",
            "--expires-in",
            "30d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("edt_"));
    // A circle that does not exist yet is allowed, with a warning.
    let later = elementd(&app)
        .args(["token", "create", "--circle", "later", "--role", "viewer"])
        .output()
        .unwrap();
    assert!(later.status.success());
    assert!(
        String::from_utf8_lossy(&later.stderr).contains("no circle 'later'"),
        "{}",
        String::from_utf8_lossy(&later.stderr)
    );
    let ok = app
        .call(Method::GET, "/api/acme/chat/ops/get", Some(&token), None)
        .await;
    assert_eq!(ok.0, StatusCode::OK);

    let list = elementd(&app).args(["token", "list"]).output().unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(!text.contains(&token), "list never shows secrets");
    let line = text
        .lines()
        .find(|l| l.contains(" acme ") && l.contains("member"))
        .expect("token listed");
    let id = line.split_whitespace().next().unwrap().to_string();
    assert!(line.contains("active"));

    let rev = elementd(&app)
        .args(["token", "revoke", &id])
        .output()
        .unwrap();
    assert!(rev.status.success());
    // Another process revoked it: this server notices within the TTL.
    app.caches_expire();
    assert_error(
        &app.call(Method::GET, "/api/acme/chat/ops/get", Some(&token), None)
            .await,
        401,
        "UNAUTHORIZED",
    );
    let again = elementd(&app)
        .args(["token", "revoke", &id])
        .output()
        .unwrap();
    assert!(!again.status.success(), "revoking twice fails");
    let list = elementd(&app).args(["token", "list"]).output().unwrap();
    assert!(String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .any(|l| l.starts_with(&id) && l.contains("revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_rejects_bad_input() {
    let app = spawn_app().await;
    let before = app.db.list_tokens().await.unwrap().len();
    for args in [
        vec!["--circle", "acme", "--role", "owner"],
        vec!["--circle", "Bad_Circle", "--role", "viewer"],
        vec![
            "--circle",
            "acme",
            "--role",
            "viewer",
            "--expires-in",
            "soon",
        ],
    ] {
        let out = elementd(&app)
            .args(["token", "create"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(app.db.list_tokens().await.unwrap().len(), before);
    let star = elementd(&app)
        .args(["token", "create", "--circle", "*", "--role", "viewer"])
        .output()
        .unwrap();
    assert!(star.status.success());
}

/// Starts `elementd serve` on port 0 and reads stdout up to the address.
/// The caller waits on the returned child.
fn serve(data: &std::path::Path, url: Option<&str>) -> (std::process::Child, String, Vec<String>) {
    serve_env(data, url, &[])
}

/// `serve` with extra environment (limits); answers the child, the base
/// URL and the admin token it printed.
pub fn serve_with(
    data: &std::path::Path,
    url: Option<&str>,
    env: &[(&str, &str)],
) -> (std::process::Child, String, String) {
    let (child, addr, lines) = serve_env(data, url, env);
    let token = printed_token(&lines);
    (child, addr, token)
}

fn serve_env(
    data: &std::path::Path,
    url: Option<&str>,
    env: &[(&str, &str)],
) -> (std::process::Child, String, Vec<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.env("ELEMENTD_DATA_DIR", data);
    for (k, v) in env {
        c.env(k, v);
    }
    start_serve(c, url)
}

/// Runs `serve` on port 0 as `c` sets it up (and on `url`, when given)
/// and reads its stdout up to the address; the caller waits on the child.
pub fn start_serve(c: Command, url: Option<&str>) -> (std::process::Child, String, Vec<String>) {
    start_until(c, &["serve"], url, "elementd listening on ", false)
}

/// Runs `elementd <args> --listen 127.0.0.1:0` as `c` sets it up (on
/// `url`, when given) and reads its stdout until a line starts with
/// `last` (and the line after it, with `and_next`); answers the child,
/// the base URL and the lines. The caller waits on the child.
#[allow(clippy::zombie_processes)]
pub fn start_until(
    mut c: Command,
    args: &[&str],
    url: Option<&str>,
    last: &str,
    and_next: bool,
) -> (std::process::Child, String, Vec<String>) {
    c.env("RUST_LOG", "warn").env_remove("DATABASE_URL");
    if let Some(u) = url {
        c.env("DATABASE_URL", u);
    }
    let mut child = c
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (mut lines, mut base, mut found) = (Vec::new(), None, false);
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("elementd {args:?} stopped early: {lines:?}");
        }
        let l = l.trim().to_string();
        if let Some(a) = l.strip_prefix("elementd listening on ") {
            base = Some(a.to_string());
        }
        let done = found || (l.starts_with(last) && !and_next);
        found |= l.starts_with(last);
        lines.push(l);
        if done {
            return (child, base.expect("the address is printed first"), lines);
        }
    }
}

/// The admin token `serve` printed on its first start.
fn printed_token(lines: &[String]) -> String {
    lines
        .iter()
        .find(|l| l.starts_with("edt_"))
        .expect("admin token printed")
        .clone()
}

async fn list_circles(addr: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{addr}/api/ops/list"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

fn stop(child: &mut std::process::Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "{signal} ends with exit 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_admin_token_once_and_stops_on_signals() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (mut child, addr, lines) = serve(dir.path(), url);
    let token = printed_token(&lines);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim(),
        token
    );
    assert_eq!(list_circles(&addr, &token).await, StatusCode::OK);
    stop(&mut child, "-TERM");

    // A second start on the same database prints no new token.
    let (mut child, addr, lines) = serve(dir.path(), url);
    assert!(
        !lines.iter().any(|l| l.starts_with("edt_")),
        "no second token: {lines:?}"
    );
    assert_eq!(
        list_circles(&addr, &token).await,
        StatusCode::OK,
        "the first token still works"
    );
    stop(&mut child, "-INT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (mut child, addr, lines) = serve(dir.path(), url);
    let token = printed_token(&lines);
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{addr}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    assert_eq!(
        post(
            "/api/ops/create",
            serde_json::json!({"element_type": "circle", "slug": "acme"})
        )
        .await
        .unwrap()
        .status(),
        201
    );
    assert_eq!(
        post(
            "/api/acme/ops/create",
            serde_json::json!({"element_type": "websocket", "slug": "chat"})
        )
        .await
        .unwrap()
        .status(),
        201
    );
    let mut acked = 1;
    for i in 0..40 {
        let r = client
            .patch(format!("{addr}/api/acme/chat/ops/update"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"spec": {"path": format!("/v{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        acked += 1;
    }
    // No goodbye: the process dies as in a crash.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr, _) = serve(dir.path(), url);
    let v = crate::helpers::get_json(&format!("{addr}/api/acme/chat"), &token).await;
    assert_eq!(v["version"], acked, "every acknowledged update is there");
    assert_eq!(v["spec"]["path"], "/v39");
    let r: serde_json::Value = client
        .post(format!("{addr}/api/acme/chat/ops/source/repair"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"dry_run": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["in_sync"], true, "git is repairable: {r}");
    stop(&mut child, "-TERM");
}

/// `elementd token --help` and its subcommands list their own flags, not
/// every flag of `serve`.
#[test]
fn token_help_lists_only_its_own_flags() {
    for args in [
        &["token", "create", "--help"][..],
        &["token", "list", "--help"],
        &["migrate", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_elementd"))
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(
            help.contains("--data-dir") && help.contains("--database-url"),
            "{help}"
        );
        for serve_only in [
            "--listen",
            "--max-http-connections",
            "--ws-read-buffer",
            "--outbound-allow",
        ] {
            assert!(
                !help.contains(serve_only),
                "{args:?} lists {serve_only}:\n{help}"
            );
        }
    }
}
