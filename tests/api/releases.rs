//! Releases of demo and live (issue 7): promotions are validated and
//! recorded, history lists them, rollback goes back to what ran before,
//! and every refusal changes nothing.

use crate::git::{git_ok, url};
use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn promote(app: &TestApp, from: &str, to: &str) -> (StatusCode, Value) {
    app.post(
        "/api/acme/chat/ops/source/promote",
        json!({"from": from, "to": to, "message": format!("{from} to {to}")}),
    )
    .await
}

async fn history(app: &TestApp, env: &str) -> Vec<Value> {
    let (s, v) = app
        .get(&format!("/api/acme/chat/ops/source/promotions?env={env}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["promotions"].as_array().unwrap().clone()
}

async fn branch(app: &TestApp, name: &str) -> String {
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    b["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .and_then(|x| x["commit"].as_str())
        .unwrap()
        .to_string()
}

async fn set_path(app: &TestApp, path: &str) {
    let (s, v) = app
        .patch("/api/acme/chat/ops/update", json!({"spec": {"path": path}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_are_recorded_and_listed() {
    let app = spawn_app().await;
    app.with_chat().await;
    let created = history(&app, "live").await;
    assert_eq!(created.len(), 1, "creation is the first release");
    assert_eq!(created[0]["version"], 1);
    set_path(&app, "/v2").await;
    let (s, d) = promote(&app, "draft", "demo").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (d["promoted"].as_bool(), d["version"].as_i64()),
        (Some(true), Some(2))
    );
    assert_eq!(d["commit"], branch(&app, "demo").await);
    // Again: demo already holds draft's commit, nothing new is recorded.
    let (s, again) = promote(&app, "draft", "demo").await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["promoted"], false);
    assert_eq!(history(&app, "demo").await.len(), 2);
    let (s, l) = promote(&app, "demo", "live").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let live = history(&app, "live").await;
    assert_eq!(live.len(), 2);
    assert_eq!(
        (live[0]["version"].as_i64(), live[0]["rollback"].as_bool()),
        (Some(2), Some(false)),
        "newest first: {live:?}"
    );
    assert_eq!(live[0]["message"], "demo to live");
    assert_eq!(live[0]["from_commit"], live[1]["to_commit"]);
    assert!(live[0]["actor"].as_str().unwrap().starts_with("token:"));
    let all = app
        .get("/api/acme/chat/ops/source/promotions?limit=10")
        .await
        .1;
    assert_eq!(all["promotions"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_an_earlier_release() {
    let app = spawn_app().await;
    app.with_chat().await;
    let v1 = branch(&app, "live").await;
    set_path(&app, "/v2").await;
    promote(&app, "draft", "demo").await;
    promote(&app, "demo", "live").await;
    let v2 = branch(&app, "live").await;
    assert_ne!(v1, v2);
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": "previous", "message": "bad release"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["version"].as_i64(), r["commit"].as_str()),
        (Some(1), Some(v1.as_str()))
    );
    assert_eq!(branch(&app, "live").await, v1, "the branch moved back");
    let live = history(&app, "live").await;
    assert_eq!(live[0]["rollback"], true);
    let (_, act) = app
        .get("/api/acme/chat/ops/activity?type=source.rolled_back")
        .await;
    assert_eq!(act["events"].as_array().unwrap().len(), 1);
    // Forward again, by an abbreviated commit (as git takes it) and by
    // version.
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": &v2[..7]}),
        )
        .await;
    assert_eq!((s, r["version"].as_i64()), (StatusCode::OK, Some(2)), "{r}");
    // To the release already running: a success that records nothing.
    let promotions = history(&app, "live").await.len();
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": &v2[..10]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["promoted"].as_bool(), r["rolled_back"].as_bool()),
        (Some(false), Some(false)),
        "{r}"
    );
    assert_eq!(
        history(&app, "live").await.len(),
        promotions,
        "nothing recorded"
    );
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/rollback",
            json!({"env": "live", "to": {"version": 1}}),
        )
        .await;
    assert_eq!((s, r["version"].as_i64()), (StatusCode::OK, Some(1)), "{r}");
    // A git client sees the branch go back (a forced update).
    let dir = tempfile::tempdir().unwrap();
    let u = url(&app, &app.admin, "acme", "chat");
    git_ok(dir.path(), &["clone", "-q", &u, "wt"]);
    let wt = dir.path().join("wt");
    assert_eq!(git_ok(&wt, &["rev-parse", "origin/live"]).trim(), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_releases_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.with_chat().await;
    set_path(&app, "/v2").await;
    promote(&app, "draft", "demo").await;
    let before = (history(&app, "demo").await, history(&app, "live").await);
    let demo = branch(&app, "demo").await;
    let member = app.token("acme", Role::Member).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let rb = "/api/acme/chat/ops/source/rollback";
    let pr = "/api/acme/chat/ops/source/promote";
    let cases: Vec<(Option<&str>, &str, Value, u16, &str)> = vec![
        (
            None,
            pr,
            json!({"from": "draft", "to": "prod"}),
            400,
            "INVALID_ENVIRONMENT",
        ),
        (
            None,
            pr,
            json!({"from": "draft", "to": "live"}),
            400,
            "INVALID_PROMOTION",
        ),
        (
            None,
            pr,
            json!({"from": "demo", "to": "demo"}),
            400,
            "INVALID_PROMOTION",
        ),
        (
            None,
            pr,
            json!({"from": "live", "to": "demo"}),
            400,
            "INVALID_PROMOTION",
        ),
        (
            Some(&viewer),
            pr,
            json!({"from": "draft", "to": "demo"}),
            403,
            "FORBIDDEN",
        ),
        (
            Some(&member),
            pr,
            json!({"from": "demo", "to": "live"}),
            403,
            "FORBIDDEN",
        ),
        (Some(&member), rb, json!({"env": "live"}), 403, "FORBIDDEN"),
        (
            None,
            rb,
            json!({"env": "draft"}),
            400,
            "INVALID_ENVIRONMENT",
        ),
        (
            None,
            rb,
            json!({"env": "staging"}),
            400,
            "INVALID_ENVIRONMENT",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": "not-a-commit"}),
            400,
            "INVALID_COMMIT",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": "abc123"}),
            400,
            "INVALID_COMMIT",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": "0123456789012345678901234567890123456789"}),
            400,
            "NOT_PROMOTED",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": {"version": 7}}),
            400,
            "NOT_PROMOTED",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": {"version": 0}}),
            400,
            "INVALID_VERSION",
        ),
        (
            None,
            rb,
            json!({"env": "demo", "to": 5}),
            400,
            "INVALID_BODY",
        ),
    ];
    for (token, path, body, status, code) in cases {
        let token = token.unwrap_or(&app.admin);
        let got = app
            .call(Method::POST, path, Some(token), Some(body.clone()))
            .await;
        assert_error(&got, status, code);
    }
    let bad_env = app
        .get("/api/acme/chat/ops/source/promotions?env=prod")
        .await;
    assert_error(&bad_env, 400, "INVALID_ENVIRONMENT");
    assert_eq!(branch(&app, "demo").await, demo);
    assert_eq!(
        (history(&app, "demo").await, history(&app, "live").await),
        before
    );
}

/// A commit that breaks the source rules is never released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_commit_is_not_promoted() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (_, el) = app.get("/api/acme/chat").await;
    let repo = app
        .config
        .repos_dir()
        .join(format!("{}.git", el["id"].as_str().unwrap()));
    // Straight into the repository, past the hook (as a broken disk or an
    // operator might): draft gains a secret file.
    let dir = tempfile::tempdir().unwrap();
    let repo_url = format!("file://{}", repo.display());
    git_ok(dir.path(), &["clone", "-q", "-b", "draft", &repo_url, "wt"]);
    let wt = dir.path().join("wt");
    std::fs::write(wt.join(".env"), "PASSWORD=x\n").unwrap();
    git_ok(&wt, &["add", ".env"]);
    git_ok(&wt, &["commit", "-qm", "oops"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    let demo = branch(&app, "demo").await;
    let got = promote(&app, "draft", "demo").await;
    assert_error(&got, 409, "SOURCE_INVALID");
    let details = got.1["error"]["details"].as_array().unwrap();
    assert!(
        details.iter().any(|d| d.as_str().unwrap().contains(".env")),
        "{}",
        got.1
    );
    assert_eq!(branch(&app, "demo").await, demo);
    assert_eq!(history(&app, "demo").await.len(), 1);
}

/// Promotions racing on one element: one is released, the others answer
/// 409 or find it already done; one release is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_promotions_release_once() {
    let app = spawn_app().await;
    app.with_chat().await;
    set_path(&app, "/v2").await;
    let calls = (0..8).map(|_| promote(&app, "draft", "demo"));
    let answers = futures::future::join_all(calls).await;
    let mut promoted = 0;
    for (s, v) in &answers {
        match s.as_u16() {
            200 if v["promoted"] == true => promoted += 1,
            200 => {}
            409 => assert_eq!(v["error"]["code"], "PROMOTION_CONFLICT", "{v}"),
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(promoted, 1, "{answers:?}");
    assert_eq!(history(&app, "demo").await.len(), 2);
}
