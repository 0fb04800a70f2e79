//! Issue 8, the git side: no push, bundle or read of the source can crash
//! the server, grow its memory without bound, or slip past the source
//! rules. Every refusal leaves the element (version, branches) unchanged.

use crate::fixtures::{alias_bomb, bundle_b64};
use crate::git::{clone, git, git_ok, set_path};
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;

/// Bytes that do not compress, so a pack is as large as the file.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a refusal must leave alone: the version and every branch.
async fn snapshot(app: &TestApp) -> (i64, Value) {
    let (s, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let commits: Vec<Value> = b["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["commit"].clone())
        .collect();
    (app.state_of("acme", "chat").await.0, json!(commits))
}

/// Commits everything in the work tree and pushes draft; returns the
/// client's stderr, asserting the push was refused.
fn push_refused(wt: &Path, message: &str) -> String {
    git_ok(wt, &["add", "-A"]);
    git_ok(wt, &["commit", "-qm", message]);
    let out = git(wt, &["push", "origin", "draft"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the push went through: {err}");
    err
}

async fn assert_alive(app: &TestApp) {
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("the server still answers");
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn circle_list(app: &TestApp, circle: &str) -> Value {
    let (s, v) = app.get(&format!("/api/{circle}/ops/list")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_bomb_in_an_imported_bundle_is_refused() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let b64 = bundle_b64("alias-bomb");
    let before = circle_list(&app, "acme").await;
    let got = app
        .post("/api/acme/ops/import/bundle", json!({"bundle_base64": b64}))
        .await;
    assert_error(&got, 400, "INVALID_BUNDLE");
    let msg = got.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.yaml") && msg.contains("more than 100000 values"),
        "names the reason: {msg}"
    );
    assert_alive(&app).await;
    assert_eq!(circle_list(&app, "acme").await, before, "nothing created");
    assert_error(&app.get("/api/acme/bomb").await, 404, "ELEMENT_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_bomb_in_a_push_is_refused_with_the_reason() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = snapshot(&app).await;
    let (_d, wt) = clone(&app, &[]);
    std::fs::write(wt.join(".triform/spec.yaml"), alias_bomb("chat")).unwrap();
    let err = push_refused(&wt, "bomb");
    assert!(
        err.contains("remote:") && err.contains("more than 100000 values"),
        "{err}"
    );
    assert_alive(&app).await;
    assert_eq!(snapshot(&app).await, before);
    // Drift checks parse the same file: status still answers.
    let (s, st) = app.get("/api/acme/chat/ops/source/status").await;
    assert_eq!(
        (s, st["health"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_or_spec_over_1_mib_is_refused_on_push() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = snapshot(&app).await;
    let (_d, wt) = clone(&app, &[]);
    std::fs::write(wt.join("README.md"), vec![b'#'; (1 << 20) + 1]).unwrap();
    let err = push_refused(&wt, "huge readme");
    assert!(
        err.contains("README.md") && err.contains("at most 1048576 bytes"),
        "names the file and the limit: {err}"
    );
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    let mut text = std::fs::read_to_string(wt.join(".triform/spec.yaml")).unwrap();
    text.push_str(&format!("# {}\n", "p".repeat(1 << 20)));
    std::fs::write(wt.join(".triform/spec.yaml"), text).unwrap();
    let err = push_refused(&wt, "huge spec");
    assert!(
        err.contains(".triform/spec.yaml") && err.contains("at most 1048576 bytes"),
        "{err}"
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_the_push_cap_are_refused() {
    let cap = 256 << 10;
    let app = spawn_app_with(|c| c.limits.max_push_bytes = cap).await;
    app.with_chat().await;
    let before = snapshot(&app).await;
    let (_d, wt) = clone(&app, &[]);
    // A pack over the cap, sent whole (Content-Length) and streamed
    // (chunked, over git's 1 MiB post buffer): git says why.
    for size in [600 << 10, 3 << 20] {
        std::fs::write(wt.join("asset.bin"), noise(size)).unwrap();
        let err = push_refused(&wt, "big asset");
        assert!(err.contains("pack exceeds maximum allowed size"), "{err}");
        git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    }
    // A small pack of one file over the cap (zeros compress): the hook
    // refuses it from its size alone.
    std::fs::write(wt.join("zeros.bin"), vec![0u8; 2 << 20]).unwrap();
    let err = push_refused(&wt, "zeros");
    assert!(
        err.contains("zeros.bin") && err.contains(&format!("larger than {cap} bytes")),
        "{err}"
    );
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    // A body that says it is over the cap is refused before git runs.
    let resp = app
        .client
        .post(format!("{}/git/acme/chat.git/git-receive-pack", app.base))
        .basic_auth("token", Some(&app.admin))
        .header("content-type", "application/x-git-receive-pack-request")
        .body(vec![0u8; (cap as usize) + (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(&(status, body), 413, "GIT_REQUEST_TOO_LARGE");
    // The hook reads a bounded number of ref updates.
    let refs: Vec<String> = (0..17).map(|i| format!("HEAD:refs/heads/b{i}")).collect();
    let mut args = vec!["push", "origin"];
    args.extend(refs.iter().map(String::as_str));
    let out = git(&wt, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("more than 16 refs"),
        "{err}"
    );
    assert_eq!(snapshot(&app).await, before);
    // Under the cap, pushes work as before.
    set_path(&wt, "/small");
    git_ok(&wt, &["commit", "-qam", "small"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    assert_eq!(app.state_of("acme", "chat").await.0, before.0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_held_to_the_push_rules() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = snapshot(&app).await;
    app.circle("beta").await;
    let good = bundle_b64("chat");
    let bad = [
        (
            "live names another element",
            bundle_b64("live-names-another"),
            vec!["live: .triform/spec.yaml", "slug is chat"],
        ),
        (
            "an extra branch",
            bundle_b64("extra-branch"),
            vec!["refs/heads/feature"],
        ),
        ("a tag", bundle_b64("tag"), vec!["refs/tags/v1"]),
        (
            "secrets on draft",
            bundle_b64("secrets-on-draft"),
            vec!["draft: .env", "draft: id_rsa", "secret-material"],
        ),
        (
            "a huge README on demo",
            bundle_b64("huge-readme-on-demo"),
            vec!["demo: README.md", "at most 1048576 bytes"],
        ),
    ];
    let listed = circle_list(&app, "beta").await;
    for (what, b64, said) in bad {
        // Alone, and beside a good bundle: either way nothing is created.
        for body in [
            json!({"bundle_base64": b64}),
            json!({"elements": [{"bundle_base64": good}, {"bundle_base64": b64}]}),
        ] {
            let got = app.post("/api/beta/ops/import/bundle", body).await;
            assert_error(&got, 400, "INVALID_BUNDLE");
            let all = format!(
                "{} {}",
                got.1["error"]["message"], got.1["error"]["details"]
            );
            for s in &said {
                assert!(all.contains(s), "{what}: {s} in {all}");
            }
            assert_eq!(circle_list(&app, "beta").await, listed, "{what}");
        }
        // Overwriting an existing element is refused the same way.
        let got = app
            .post(
                "/api/acme/ops/import/bundle",
                json!({"bundle_base64": b64, "overwrite": true}),
            )
            .await;
        assert_error(&got, 400, "INVALID_BUNDLE");
        assert_eq!(snapshot(&app).await, before, "{what}");
    }
    let (s, ok) = app
        .post(
            "/api/beta/ops/import/bundle",
            json!({"bundle_base64": good}),
        )
        .await;
    assert_eq!(
        (s, ok["imported"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{ok}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_any_case_and_scan_large_files() {
    let app = spawn_app().await;
    app.with_chat().await;
    let before = snapshot(&app).await;
    let (_d, wt) = clone(&app, &[]);
    std::fs::create_dir_all(wt.join("Node_Modules")).unwrap();
    std::fs::write(wt.join(".ENV"), "TOKEN=1\n").unwrap();
    std::fs::write(wt.join("Node_Modules/x.js"), "x\n").unwrap();
    std::fs::write(wt.join("ID_RSA"), "key\n").unwrap();
    let err = push_refused(&wt, "cases");
    for f in [".ENV", "Node_Modules/x.js", "ID_RSA"] {
        assert!(err.contains(f), "{f} flagged: {err}");
    }
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    // A 3 MiB file with a private key near its end.
    let mut big = vec![b'a'; 3 << 20];
    let key = b"\n-----BEGIN OPENSSH PRIVATE KEY-----\n";
    let at = big.len() - 4096;
    big[at..at + key.len()].copy_from_slice(key);
    std::fs::write(wt.join("dump.txt"), &big).unwrap();
    let err = push_refused(&wt, "dump");
    assert!(
        err.contains("dump.txt") && err.contains("private key"),
        "{err}"
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_of_a_big_file_is_bounded() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_d, wt) = clone(&app, &[]);
    let size = 3 << 20;
    std::fs::write(wt.join("asset.bin"), noise(size)).unwrap();
    std::fs::write(wt.join("small.txt"), "hello\n").unwrap();
    git_ok(&wt, &["add", "-A"]);
    git_ok(&wt, &["commit", "-qm", "asset"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    let (s, f) = app.get("/api/acme/chat/ops/source?path=asset.bin").await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(
        (
            f["exists"].as_bool(),
            f["size"].as_u64(),
            f["truncated"].as_bool()
        ),
        (Some(true), Some(size as u64), Some(true)),
        "{}",
        &f.to_string()[..f.to_string().len().min(400)]
    );
    assert_eq!(f["content"], "");
    assert!(f.get("content_base64").is_none());
    assert!(f["message"].as_str().unwrap().contains("clone"));
    let (_, small) = app.get("/api/acme/chat/ops/source?path=small.txt").await;
    assert_eq!(
        (small["content"].as_str(), small["truncated"].as_bool()),
        (Some("hello\n"), Some(false))
    );
    let (_, v) = app
        .post("/api/acme/chat/ops/source/validate", json!({}))
        .await;
    assert_eq!(
        (v["valid"].as_bool(), v["files"].as_u64()),
        (Some(true), Some(4)),
        "{v}"
    );
}
