//! The element source with the real `git` command line against the server.

use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .output()
        .expect("git runs")
}

#[track_caller]
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn url(app: &TestApp, token: &str, circle: &str, slug: &str) -> String {
    let host = app.base.trim_start_matches("http://");
    format!("http://token:{token}@{host}/git/{circle}/{slug}.git")
}

/// Clones acme/chat into a fresh folder and returns the work tree.
pub fn clone(app: &TestApp, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let u = url(app, &app.admin, "acme", "chat");
    let mut args = extra.to_vec();
    args.extend(["clone", "-q", u.as_str(), "wt"]);
    git_ok(dir.path(), &args);
    let wt = dir.path().join("wt");
    (dir, wt)
}

pub fn set_path(wt: &Path, path: &str) {
    let spec = wt.join(".triform/spec.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("path:"))
        .unwrap()
        .to_string();
    std::fs::write(&spec, text.replace(&line, &format!("  path: {path}"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_push_and_version() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_d, wt) = clone(&app, &[]);
    assert_eq!(
        git_ok(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "draft"
    );
    let remote = git_ok(&wt, &["branch", "-r"]);
    for b in ["origin/draft", "origin/demo", "origin/live"] {
        assert!(remote.contains(b), "{remote}");
    }
    let spec = std::fs::read_to_string(wt.join(".triform/spec.yaml")).unwrap();
    assert!(
        spec.contains("element_type: websocket") && spec.contains("path: /ws"),
        "{spec}"
    );
    assert!(wt.join("README.md").exists());

    set_path(&wt, "/pushed");
    std::fs::write(wt.join("README.md"), "# Chat\n\nPushed readme.\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "move the endpoint"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = git_ok(&wt, &["rev-parse", "HEAD"]).trim().to_string();

    let (_, v) = app.get("/api/acme/chat").await;
    assert_eq!(
        (v["version"].as_i64(), v["spec"]["path"].as_str()),
        (Some(2), Some("/pushed"))
    );
    let (_, r) = app.get("/api/acme/chat/ops/readme").await;
    assert_eq!(r["content"], "# Chat\n\nPushed readme.\n");
    let (_, act) = app
        .get("/api/acme/chat/ops/activity?type=element.pushed")
        .await;
    assert_eq!(
        act["events"][0]["data"]["commit"],
        head.as_str(),
        "activity names the commit"
    );
    let (_, hist) = app
        .get("/api/acme/chat/ops/version?history=true&limit=1")
        .await;
    assert_eq!(
        hist["versions"][0]["message"], "move the endpoint",
        "a pushed commit's message is its version's"
    );
    // The URL without .git clones too, as git hosts allow.
    let bare = url(&app, &app.admin, "acme", "chat");
    let plain = tempfile::tempdir().unwrap();
    git_ok(
        plain.path(),
        &["clone", "-q", bare.trim_end_matches(".git"), "again"],
    );
    assert_eq!(
        git_ok(&plain.path().join("again"), &["rev-parse", "HEAD"]).trim(),
        head
    );

    // An op's change is a commit on draft the clone can pull.
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/from-api"}}),
    )
    .await;
    git_ok(&wt, &["pull", "-q", "origin", "draft"]);
    let spec = std::fs::read_to_string(wt.join(".triform/spec.yaml")).unwrap();
    assert!(spec.contains("path: /from-api"), "{spec}");
    let log = git_ok(&wt, &["log", "-1", "--format=%an %s"]);
    assert!(
        log.contains("token-") && log.contains("update: v3"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_clone_and_push() {
    let app = spawn_app().await;
    app.with_chat().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = git(
        dir.path(),
        &["clone", "-q", &url(&app, "edt_wrong", "acme", "chat"), "x"],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("Authentication failed") || err.contains("401"),
        "{err}"
    );
    let host = app.base.trim_start_matches("http://");
    let anon = git(
        dir.path(),
        &[
            "clone",
            "-q",
            &format!("http://{host}/git/acme/chat.git"),
            "y",
        ],
    );
    assert!(!anon.status.success(), "no credentials, no clone");
    let resp = app
        .client
        .get(format!(
            "{}/git/acme/chat.git/info/refs?service=git-upload-pack",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));

    app.circle("beta").await;
    let other = app.token("beta", Role::Admin).await;
    let o = git(
        dir.path(),
        &["clone", "-q", &url(&app, &other, "acme", "chat"), "z"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let viewer = app.token("acme", Role::Viewer).await;
    git_ok(
        dir.path(),
        &["clone", "-q", &url(&app, &viewer, "acme", "chat"), "v"],
    );
    let wt = dir.path().join("v");
    set_path(&wt, "/viewer");
    git_ok(&wt, &["commit", "-qam", "viewer edit"]);
    let push = git(&wt, &["push", "origin", "draft"]);
    assert!(!push.status.success(), "a viewer cannot push");
    assert_eq!(app.state_of("acme", "chat").await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_v2_and_v0_clone() {
    let app = spawn_app().await;
    app.with_chat().await;
    for (v, marker) in [("2", "version 2"), ("0", "# service=git-upload-pack")] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("git")
            .current_dir(dir.path())
            .args([
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                &url(&app, &app.admin, "acme", "chat"),
                "wt",
            ])
            .env("GIT_TRACE_PACKET", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "v{v}: {trace}");
        assert!(trace.contains(marker), "v{v} spoken: {trace}");
        assert!(dir.path().join("wt/.triform/spec.yaml").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rejects_bad_pushes_and_changes_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_d, wt) = clone(&app, &[]);
    let before = app.state_of("acme", "chat").await;
    let server_draft = || {
        let dir = tempfile::tempdir().unwrap();
        let out = git(
            dir.path(),
            &[
                "ls-remote",
                &url(&app, &app.admin, "acme", "chat"),
                "refs/heads/draft",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let draft0 = server_draft();

    // An invalid spec is rejected with the findings.
    set_path(&wt, "no-slash");
    git_ok(&wt, &["commit", "-qam", "bad path"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.yaml") && err.contains("spec-yaml"),
        "{err}"
    );
    // Pushes to live or demo are refused by policy.
    let out = git(&wt, &["push", "origin", "HEAD:live"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("move only by promotion"), "{err}");
    assert!(
        err.contains("/api/acme/"),
        "names the real promote URL: {err}"
    );
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    // Secret material is refused.
    std::fs::write(wt.join(".env"), "TOKEN=1\n").unwrap();
    git_ok(&wt, &["add", ".env"]);
    git_ok(&wt, &["commit", "-qm", "oops"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(".env") && err.contains("secret-material"),
        "{err}"
    );
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    // Changing the slug is refused.
    let spec = wt.join(".triform/spec.yaml");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("slug: chat", "slug: renamed"),
    )
    .unwrap();
    git_ok(&wt, &["commit", "-qam", "rename"]);
    assert!(!git(&wt, &["push", "origin", "draft"]).status.success());
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    // Deleting draft and rewriting it are refused.
    let out = git(&wt, &["push", "origin", ":draft"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleting draft"));
    set_path(&wt, "/ok");
    git_ok(&wt, &["commit", "-qam", "good"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    git_ok(&wt, &["reset", "-q", "--hard", "HEAD~1"]);
    set_path(&wt, "/rewritten");
    git_ok(&wt, &["commit", "-qam", "rewrite"]);
    let out = git(&wt, &["push", "-f", "origin", "draft"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("force pushes are rejected"));
    let after = app.state_of("acme", "chat").await;
    assert_eq!(
        after.0,
        before.0 + 1,
        "only the one good push became a version"
    );
    assert_eq!(after.1["path"], "/ok");
    assert_ne!(server_draft(), draft0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_draft_to_demo_to_live() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v2"}}),
    )
    .await;
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert_eq!(
        b["promotions"][0]["ahead"], 1,
        "draft is one ahead of demo: {b}"
    );
    let member = app.token("acme", Role::Member).await;
    let p = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/source/promote",
            Some(&member),
            Some(json!({"from": "draft", "to": "demo"})),
        )
        .await;
    assert_eq!(p.0, StatusCode::OK, "{}", p.1);
    let live = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/source/promote",
            Some(&member),
            Some(json!({"from": "demo", "to": "live"})),
        )
        .await;
    assert_error(&live, 403, "FORBIDDEN");
    for bad in [
        json!({"from": "draft", "to": "live"}),
        json!({"from": "live", "to": "demo"}),
        json!({"from": "draft"}),
    ] {
        let got = app.post("/api/acme/chat/ops/source/promote", bad).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
    }
    let (s, l) = app
        .post(
            "/api/acme/chat/ops/source/promote",
            json!({"from": "demo", "to": "live"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let (_d, wt) = clone(&app, &[]);
    let draft = git_ok(&wt, &["rev-parse", "origin/draft"]);
    assert_eq!(git_ok(&wt, &["rev-parse", "origin/demo"]), draft);
    assert_eq!(git_ok(&wt, &["rev-parse", "origin/live"]), draft);
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert_eq!(b["promotions"][1]["in_sync"], true);
    let (_, act) = app
        .get("/api/acme/chat/ops/activity?type=source.promoted")
        .await;
    assert_eq!(act["events"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_and_source_files() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/readme_update",
            json!({"content": "# Lobby\n"}),
        )
        .await;
    assert_eq!((s, v["version"].as_i64()), (StatusCode::OK, Some(2)), "{v}");
    let (_d, wt) = clone(&app, &[]);
    assert_eq!(
        std::fs::read_to_string(wt.join("README.md")).unwrap(),
        "# Lobby\n"
    );
    let (_, r) = app.get("/api/acme/chat/ops/readme").await;
    assert_eq!(
        (r["content"].as_str(), r["format"].as_str()),
        (Some("# Lobby\n"), Some("markdown"))
    );
    assert_error(
        &app.post("/api/acme/chat/ops/readme_update", json!({"content": 5}))
            .await,
        400,
        "INVALID_BODY",
    );
    assert_error(
        &app.post("/api/acme/chat/ops/readme_update", json!({}))
            .await,
        400,
        "INVALID_BODY",
    );

    let (_, f) = app
        .get("/api/acme/chat/ops/source?path=.triform/spec.yaml")
        .await;
    assert!(f["content"].as_str().unwrap().contains("slug: chat"));
    let (_, missing) = app.get("/api/acme/chat/ops/source?path=nope.txt").await;
    assert_eq!(
        (missing["exists"].as_bool(), missing["content"].as_str()),
        (Some(false), Some(""))
    );
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a%00b",
        "",
        "./x",
    ] {
        let got = app
            .get(&format!("/api/acme/chat/ops/source?path={bad}"))
            .await;
        assert_error(&got, 400, "INVALID_PATH");
    }
    assert_error(
        &app.get("/api/acme/chat/ops/source?path=README.md&branch=main")
            .await,
        400,
        "INVALID_BRANCH",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_push_passes() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_d, wt) = clone(&app, &[]);
    // Incompressible bytes, so the pack is as big as the file.
    let mut data = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(wt.join("asset.bin"), &data).unwrap();
    git_ok(&wt, &["add", "asset.bin"]);
    git_ok(&wt, &["commit", "-qm", "big asset"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d2, wt2) = clone(&app, &[]);
    assert_eq!(std::fs::read(wt2.join("asset.bin")).unwrap().len(), 6 << 20);
    let (_, v) = app
        .post("/api/acme/chat/ops/source/validate", json!({}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
}
