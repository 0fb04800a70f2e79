//! Bundles, repair and protocol details of the git source.

use crate::git::{clone, git, git_ok};
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_export_clone_and_import() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/bundled"}}),
    )
    .await;
    let resp = app
        .client
        .get(format!("{}/api/acme/chat/ops/export/bundle", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.starts_with(b"# v2 git bundle"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chat.bundle"), &bytes).unwrap();
    git_ok(dir.path(), &["clone", "-q", "chat.bundle", "wt"]);
    let spec = std::fs::read_to_string(dir.path().join("wt/.triform/spec.yaml")).unwrap();
    assert!(spec.contains("/bundled"));
    git_ok(
        &dir.path().join("wt"),
        &["bundle", "verify", "../chat.bundle"],
    );

    app.circle("beta").await;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // An entry that names another slug or type than its bundle holds is
    // refused, and nothing is imported.
    for (slug, ty) in [("other", "websocket"), ("chat", "variable")] {
        let r = app
            .post(
                "/api/beta/ops/import/bundle",
                json!({"elements": [{"bundle_base64": b64, "slug": slug, "element_type": ty}]}),
            )
            .await;
        assert_error(&r, 400, "INVALID_BUNDLE");
    }
    assert_error(&app.get("/api/beta/chat").await, 404, "ELEMENT_NOT_FOUND");
    let (s, imp) = app
        .post("/api/beta/ops/import/bundle", json!({"bundle_base64": b64}))
        .await;
    assert_eq!(s, StatusCode::OK, "{imp}");
    assert_eq!(
        (imp["imported"].as_i64(), imp["skipped"].as_i64()),
        (Some(1), Some(0))
    );
    let (_, copy) = app.get("/api/beta/chat").await;
    let (_, orig) = app.get("/api/acme/chat").await;
    assert_ne!(copy["id"], orig["id"], "new id");
    assert_eq!(copy["spec"]["path"], "/bundled");
    let (_, again) = app
        .post("/api/beta/ops/import/bundle", json!({"bundle_base64": b64}))
        .await;
    assert_eq!(
        (again["imported"].as_i64(), again["skipped"].as_i64()),
        (Some(0), Some(1))
    );
    let (_, over) = app
        .post(
            "/api/beta/ops/import/bundle",
            json!({"bundle_base64": b64, "overwrite": true}),
        )
        .await;
    assert_eq!(over["imported"], 1, "{over}");
    // A circle export is one base64 bundle per element, and imports back.
    let (_, env) = app.get("/api/acme/ops/export/bundle").await;
    assert_eq!(env["elements"].as_array().unwrap().len(), 1);
    app.circle("gamma").await;
    let (_, g) = app
        .post(
            "/api/gamma/ops/import/bundle",
            json!({"elements": env["elements"]}),
        )
        .await;
    assert_eq!(g["imported"], 1, "{g}");
    // Corrupt bundles create nothing. Base64 that is not, and "AAAA" (three
    // zero bytes, nothing like a bundle), read best as they are sent.
    let (_, before) = app.get("/api/gamma/ops/list").await;
    for bad in [
        json!({"bundle_base64": "not base64!"}),
        json!({"bundle_base64": crate::fixtures::bundle_b64("header-only")}),
        json!({"elements": [{"bundle_base64": b64}, {"bundle_base64": "AAAA"}]}),
        json!({}),
    ] {
        let got = app.post("/api/gamma/ops/import/bundle", bad).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
    }
    assert_eq!(app.get("/api/gamma/ops/list").await.1, before);
}

/// `acme/chat` and the path of its bare repository.
async fn chat_repo(app: &TestApp) -> std::path::PathBuf {
    app.with_chat().await;
    let id = app.get("/api/acme/chat").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.config.repos_dir().join(format!("{id}.git"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_branch_is_found_by_a_dry_run_and_repaired() {
    let app = spawn_app().await;
    let repo = chat_repo(&app).await;
    git_ok(&repo, &["update-ref", "-d", "refs/heads/demo"]);
    let (_, dry) = app
        .post("/api/acme/chat/ops/source/repair", json!({}))
        .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["drift"][0]["kind"], "missing_branch", "{dry}");
    assert!(
        git(&repo, &["rev-parse", "--verify", "refs/heads/demo"])
            .status
            .code()
            != Some(0),
        "dry run changed nothing"
    );
    let (_, status) = app.get("/api/acme/chat/ops/source/status").await;
    assert_eq!(status["health"], "warning");
    assert!(status["clone_url"]
        .as_str()
        .unwrap()
        .ends_with("/git/acme/chat.git"));
    let (_, fixed) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(fixed["in_sync"], true, "{fixed}");
    git_ok(&repo, &["rev-parse", "--verify", "refs/heads/demo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_repository_gone_an_update_lands_warns_and_repair_rebuilds_it() {
    let app = spawn_app().await;
    let repo = chat_repo(&app).await;
    std::fs::remove_dir_all(&repo).unwrap();
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"path": "/db-wins"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["warnings"][0].as_str().unwrap().starts_with("git:"),
        "{v}"
    );
    let (_, st) = app.get("/api/acme/chat/ops/source/status").await;
    assert_eq!(st["health"], "error");
    let (_, fixed) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(fixed["in_sync"], true, "{fixed}");
    let (_d, wt) = clone(&app, &[]);
    assert!(std::fs::read_to_string(wt.join(".triform/spec.yaml"))
        .unwrap()
        .contains("/db-wins"));
}

/// A commit that bypassed elementd is found and fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_pushed_past_elementd_is_found_and_repaired() {
    let app = spawn_app().await;
    let repo = chat_repo(&app).await;
    let side = tempfile::tempdir().unwrap();
    git_ok(side.path(), &["clone", "-q", repo.to_str().unwrap(), "wt"]);
    let wt2 = side.path().join("wt");
    std::fs::write(wt2.join("README.md"), "changed behind elementd's back\n").unwrap();
    std::fs::write(wt2.join("debug.log"), "x").unwrap();
    git_ok(&wt2, &["add", "-A"]);
    git_ok(&wt2, &["commit", "-qm", "direct"]);
    git_ok(&wt2, &["push", "-q", "origin", "draft"]);
    let (_, val) = app
        .post(
            "/api/acme/chat/ops/source/validate",
            json!({"branch": "draft"}),
        )
        .await;
    assert_eq!(val["valid"], false);
    assert_eq!(val["findings"][0]["file"], "debug.log");
    assert_eq!(val["findings"][0]["rule"], "runtime-data");
    assert_error(
        &app.post("/api/acme/chat/ops/source/validate", json!({"branch": "x"}))
            .await,
        400,
        "INVALID_BRANCH",
    );
    let (_, dry) = app
        .post("/api/acme/chat/ops/source/repair", json!({"dry_run": true}))
        .await;
    assert_eq!(dry["drift"][0]["kind"], "content_differs", "{dry}");
    let (_, fixed) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(fixed["in_sync"], true);
    let (_, r) = app.get("/api/acme/chat/ops/readme").await;
    assert_ne!(r["content"], "changed behind elementd's back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_upload_pack_request_is_served() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_d, wt) = clone(&app, &[]);
    let head = git_ok(&wt, &["rev-parse", "HEAD"]).trim().to_string();
    let want = format!("want {head}\n");
    let body = format!("{:04x}{want}0000{:04x}done\n", want.len() + 4, 9);
    let resp = app
        .client
        .post(format!("{}/git/acme/chat.git/git-upload-pack", app.base))
        .basic_auth("git", Some(&app.admin))
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "gzip")
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    let bytes = resp.bytes().await.unwrap();
    assert!(
        bytes.starts_with(b"0008NAK\n"),
        "{:?}",
        &bytes[..bytes.len().min(40)]
    );
    assert!(bytes.windows(4).any(|w| w == b"PACK"), "a pack follows");
}

/// Gzips with the `gzip` command line, as a client would send it.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}
