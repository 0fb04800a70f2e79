//! Projects and apps deploy their members (issue 7): a promotion freezes
//! every member's version and commit in a snapshot, all or nothing; a
//! preview shows what would change; an earlier snapshot can be
//! redeployed; `spec.environments` belongs to the server.

use crate::git::{git, git_ok, url};
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn setup(app: &TestApp) {
    app.with_chat().await;
    app.element("acme", "websocket", "feed", json!({"path": "/feed"}))
        .await;
    app.element(
        "acme",
        "project",
        "shop",
        json!({"members": ["chat", "feed"]}),
    )
    .await;
}

async fn promote(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/api/acme/shop/ops/promote", body).await
}

async fn live_version(app: &TestApp, slug: &str) -> i64 {
    let (_, v) = app
        .get(&format!(
            "/api/acme/{slug}/ops/source/promotions?env=live&limit=1"
        ))
        .await;
    v["promotions"][0]["version"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_deploys_its_members_and_can_go_back() {
    let app = spawn_app().await;
    setup(&app).await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v2"}}),
    )
    .await;
    // The preview changes nothing and says what would.
    let (s, p) = app.get("/api/acme/shop/ops/promote?to=demo").await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let chat = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["slug"] == "chat")
        .unwrap()
        .clone();
    assert_eq!(
        (chat["from_version"].as_i64(), chat["to_version"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(p["changes"], 1, "feed stays at v1: {p}");
    let (s, demo) = promote(&app, json!({"to": "demo", "message": "first"})).await;
    assert_eq!(s, StatusCode::OK, "{demo}");
    let first_live = demo["environment"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, live) = promote(&app, json!({"to": "live"})).await;
    assert_eq!(s, StatusCode::OK, "{live}");
    let v2_live = live["environment"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(live_version(&app, "chat").await, 2);
    // A later change, demo and live again, then back to the earlier live.
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v3"}}),
    )
    .await;
    promote(&app, json!({"to": "demo"})).await;
    promote(&app, json!({"to": "live"})).await;
    assert_eq!(live_version(&app, "chat").await, 3);
    // The earlier snapshots are listed, newest first, without the log.
    let (s, snaps) = app.get("/api/acme/shop/ops/snapshots?env=live").await;
    assert_eq!(s, StatusCode::OK, "{snaps}");
    let ids: Vec<&str> = snaps["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{snaps}");
    assert_eq!(ids[1], v2_live, "newest first: {snaps}");
    assert_eq!(snaps["snapshots"][0]["env"], "live");
    let (_, all) = app.get("/api/acme/shop/ops/snapshots?limit=4").await;
    assert_eq!(all["snapshots"].as_array().unwrap().len(), 4, "{all}");
    assert_eq!(all["snapshots"][3]["message"], "first", "{all}");
    assert_eq!(all["snapshots"][3]["env"], "demo", "{all}");
    for bad in ["?env=draft", "?env=prod", "?limit=0", "?limit=x"] {
        let (s, v) = app.get(&format!("/api/acme/shop/ops/snapshots{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    assert_error(
        &app.get("/api/acme/chat/ops/snapshots").await,
        404,
        "OP_NOT_FOUND",
    );
    let (s, back) = promote(&app, json!({"to": "live", "snapshot": v2_live})).await;
    assert_eq!(s, StatusCode::OK, "{back}");
    assert_eq!(live_version(&app, "chat").await, 2);
    // environments: each env's snapshot, members' versions and endpoints.
    let (s, envs) = app.get("/api/acme/shop/ops/environments").await;
    assert_eq!(s, StatusCode::OK, "{envs}");
    let live_members = envs["environments"]["live"]["members"].as_array().unwrap();
    let chat = live_members.iter().find(|m| m["slug"] == "chat").unwrap();
    assert_eq!(chat["version"], 2);
    assert!(
        chat["endpoint"].as_str().unwrap().ends_with("/ws/acme/v2"),
        "{chat}"
    );
    let draft_chat = envs["environments"]["draft"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["slug"] == "chat")
        .unwrap()
        .clone();
    assert!(draft_chat["endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/ws/acme/~draft/v3"));
    // get shows the environments; they are not the spec's.
    let (_, shop) = app.get("/api/acme/shop").await;
    assert_eq!(
        shop["spec"]["environments"]["live"]["snapshot"],
        back["environment"]["snapshot"]
    );
    assert_ne!(first_live, v2_live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_member_blocks_the_whole_promotion() {
    let app = spawn_app().await;
    setup(&app).await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v2"}}),
    )
    .await;
    // feed's draft gains a secret file, straight into its repository.
    let (_, feed) = app.get("/api/acme/feed").await;
    let repo = app
        .config
        .repos_dir()
        .join(format!("{}.git", feed["id"].as_str().unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let repo_url = format!("file://{}", repo.display());
    git_ok(dir.path(), &["clone", "-q", "-b", "draft", &repo_url, "wt"]);
    let wt = dir.path().join("wt");
    std::fs::write(wt.join("id_rsa"), "key").unwrap();
    git_ok(&wt, &["add", "id_rsa"]);
    git_ok(&wt, &["commit", "-qm", "oops"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    let got = promote(&app, json!({"to": "demo"})).await;
    assert_error(&got, 409, "SOURCE_INVALID");
    let details: Vec<&str> = got.1["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("feed: ") && d.contains("id_rsa")),
        "{details:?}"
    );
    // chat was fine, but nothing moved.
    let (_, h) = app
        .get("/api/acme/chat/ops/source/promotions?env=demo")
        .await;
    assert_eq!(h["promotions"].as_array().unwrap().len(), 1);
    let (_, envs) = app.get("/api/acme/shop/ops/environments").await;
    assert!(
        envs["environments"]["demo"].get("snapshot").is_none(),
        "{envs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_belong_to_the_server() {
    let app = spawn_app().await;
    setup(&app).await;
    let forged = json!({"live": {"members": {"chat": {"version": 99}}}});
    let got = app
        .patch(
            "/api/acme/shop/ops/update",
            json!({"spec": {"environments": forged.clone()}}),
        )
        .await;
    assert_error(&got, 422, "READ_ONLY_FIELD");
    let got = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "app", "slug": "forged", "spec": {"environments": forged}}),
        )
        .await;
    assert_error(&got, 422, "READ_ONLY_FIELD");
    let (version, spec, _) = app.state_of("acme", "shop").await;
    assert_eq!(version, 1);
    assert_eq!(spec["environments"], json!({}), "none promoted yet: {spec}");
    // deep:false cannot erase them either: they are not in the spec.
    promote(&app, json!({"to": "demo"})).await;
    app.patch(
        "/api/acme/shop/ops/update",
        json!({"spec": {"members": ["chat"]}, "deep": false}),
    )
    .await;
    let (_, shop) = app.get("/api/acme/shop").await;
    assert!(
        shop["spec"]["environments"]["demo"]["snapshot"].is_string(),
        "{shop}"
    );
    // A push that sets them is refused with a message.
    let dir = tempfile::tempdir().unwrap();
    let u = url(&app, &app.admin, "acme", "shop");
    git_ok(dir.path(), &["clone", "-q", &u, "wt"]);
    let wt = dir.path().join("wt");
    let p = wt.join(".triform/spec.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}  environments:\n    live: {{}}\n")).unwrap();
    git_ok(&wt, &["commit", "-qam", "forge"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("environments"),
        "{said}"
    );
    // promote on a websocket points at source/promote.
    let got = app
        .post("/api/acme/chat/ops/promote", json!({"to": "demo"}))
        .await;
    assert_error(&got, 400, "NOT_A_MANIFEST");
}

/// Members may swap paths in one promotion: paths are checked against the
/// environment as it will be after; a clash with an element outside the
/// manifest still refuses it, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_swap_paths_in_one_promotion() {
    let app = spawn_app().await;
    setup(&app).await;
    let (s, v) = promote(&app, json!({"to": "demo"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (slug, path) in [("chat", "/swap"), ("feed", "/ws"), ("chat", "/feed")] {
        let (s, v) = app
            .patch(
                &format!("/api/acme/{slug}/ops/update"),
                json!({"spec": {"path": path}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{slug} to {path}: {v}");
    }
    let (s, v) = promote(&app, json!({"to": "demo"})).await;
    assert_eq!(s, StatusCode::OK, "the swap is promoted: {v}");
    let ws = app.base.replace("http", "ws");
    for (path, slug) in [("/feed", "chat"), ("/ws", "feed")] {
        let (_, resp) = tokio_tungstenite::connect_async(format!("{ws}/ws/acme/~demo{path}"))
            .await
            .unwrap_or_else(|e| panic!("{path} served in demo: {e}"));
        assert_eq!(resp.status(), 101, "{slug}");
    }
    // An element outside the project keeps /other in demo while its draft
    // moves on; a member may not take /other there.
    app.element("acme", "websocket", "other", json!({"path": "/other"}))
        .await;
    let (s, v) = app
        .post(
            "/api/acme/other/ops/source/promote",
            json!({"from": "draft", "to": "demo"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.patch(
        "/api/acme/other/ops/update",
        json!({"spec": {"path": "/elsewhere"}}),
    )
    .await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/other"}}),
    )
    .await;
    let before = live_version(&app, "chat").await;
    let r = promote(&app, json!({"to": "demo"})).await;
    assert_error(&r, 409, "PATH_CONFLICT");
    assert_eq!(live_version(&app, "chat").await, before, "nothing changed");
}
