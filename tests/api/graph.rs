//! `context`, `tree` and manifest `promote`.

use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn setup(app: &TestApp) {
    app.with_chat().await;
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    let (s, v) = app
        .post(
            "/api/acme/shop/ops/create",
            json!({"element_type": "variable", "slug": "greeting", "spec": {"value": "hi"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.attach(
        "chat",
        "rate-limit",
        "roomy",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
}

fn rels(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["relationship"].as_str().unwrap().to_string(),
                c["slug"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_walks_the_graph() {
    let app = spawn_app().await;
    setup(&app).await;
    let (s, v) = app.get("/api/acme/chat/ops/context").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        rels(&v),
        [
            ("attaches".to_string(), "roomy".to_string()),
            ("contained_by".into(), "acme".into()),
            ("referenced_by".into(), "shop".into()),
        ]
    );
    let (_, v) = app.get("/api/acme/roomy/ops/context").await;
    assert!(rels(&v).contains(&("attached_to".into(), "chat".into())));
    let (_, v) = app
        .get("/api/acme/shop/ops/context?depth=2&types=variable,io")
        .await;
    let got = rels(&v);
    assert!(
        got.contains(&("contains".into(), "greeting".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("references".into(), "chat".into())),
        "{got:?}"
    );
    assert!(
        got.iter().all(|(_, s)| s == "greeting" || s == "chat"),
        "filtered by type or category: {got:?}"
    );
    for (bad, code) in [
        ("types=nope", "UNKNOWN_TYPE"),
        ("depth=0", "INVALID_DEPTH"),
        ("depth=6", "INVALID_DEPTH"),
        ("depth=x", "INVALID_QUERY"),
    ] {
        let got = app.get(&format!("/api/acme/chat/ops/context?{bad}")).await;
        assert_error(&got, 400, code);
        let message = got.1["error"]["message"].as_str().unwrap_or_default();
        let param = bad.split('=').next().unwrap();
        assert!(
            message.contains(param),
            "{bad}: names the parameter: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_shows_ancestors_children_members() {
    let app = spawn_app().await;
    setup(&app).await;
    let (_, t) = app
        .get("/api/acme/shop/ops/tree?include_metadata=true")
        .await;
    assert_eq!(t["ancestors"][0]["slug"], "acme");
    assert_eq!(t["children"][0]["slug"], "greeting");
    assert_eq!(t["children"][0]["state"], "ready", "metadata included");
    assert_eq!(t["members"][0]["slug"], "chat");
    assert_eq!(t["stats"]["descendants"], 1);
    let (_, c) = app.get("/api/acme/ops/tree?depth=1").await;
    assert_eq!(c["stats"]["descendants"], 4, "{c}");
    assert!(
        c["children"][0].get("state").is_none(),
        "no metadata unless asked"
    );
    let (_, chat) = app.get("/api/acme/chat/ops/tree").await;
    assert_eq!(chat["attachments"][0]["slug"], "roomy");
    assert_eq!(chat["referenced_by"][0]["slug"], "shop");
    assert_error(
        &app.get("/api/acme/chat/ops/tree?depth=11").await,
        400,
        "INVALID_DEPTH",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_freezes_members_into_environments() {
    let app = spawn_app().await;
    setup(&app).await;
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v2"}}),
    )
    .await;
    let member = app.token("acme", Role::Member).await;
    let promote = |token: String, to: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/acme/shop/ops/promote",
                Some(&token),
                Some(json!({"to": to})),
            )
            .await
        }
    };
    assert_error(
        &promote(app.admin.clone(), "live").await,
        412,
        "PROMOTE_DEMO_FIRST",
    );
    let (s, v) = promote(member.clone(), "demo").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["environment"]["members"]["chat"]["version"], 2);
    assert_eq!(v["environment"]["members"]["greeting"]["version"], 1);
    assert_eq!(
        v["spec"]["environments"]["demo"]["members"]["chat"]["version"],
        2
    );
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert_eq!(
        b["promotions"][0]["in_sync"], true,
        "chat's demo moved to its draft: {b}"
    );
    // Later edits do not change what demo froze.
    app.patch(
        "/api/acme/chat/ops/update",
        json!({"spec": {"path": "/v3"}}),
    )
    .await;
    assert_error(&promote(member.clone(), "live").await, 403, "FORBIDDEN");
    let (s, v) = promote(app.admin.clone(), "live").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["environment"]["members"]["chat"]["version"], 2);
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert_eq!(b["promotions"][1]["in_sync"], true);
    assert_eq!(b["promotions"][0]["in_sync"], false, "draft moved on");
    assert_error(
        &promote(app.admin.clone(), "prod").await,
        400,
        "INVALID_ENVIRONMENT",
    );
    // A websocket has promote (the seed lists it) but promotes its own
    // source with source/promote.
    let got = app
        .post("/api/acme/chat/ops/promote", json!({"to": "demo"}))
        .await;
    assert_error(&got, 400, "NOT_A_MANIFEST");
    assert!(got.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("source/promote"));
    app.element("acme", "project", "broken", json!({"members": ["ghost"]}))
        .await;
    assert_error(
        &app.post("/api/acme/broken/ops/promote", json!({"to": "demo"}))
            .await,
        409,
        "MEMBER_NOT_FOUND",
    );
}
