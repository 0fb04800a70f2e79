//! API tokens as elements (issue 11, part 3): an admin makes one over REST
//! and sees its secret once; scopes, allowed addresses, a rate limit,
//! rotation with a grace period and revocation hold on every entrance.

use crate::git::{git, url};
use crate::helpers::*;
use crate::ws_client::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Makes api-token `slug` in acme with `spec`; its secret.
async fn token(app: &TestApp, slug: &str, spec: Value) -> String {
    let v = app.element("acme", "api-token", slug, spec).await;
    assert!(v["token"]["id"].is_string(), "{v}");
    v["token"]["secret"].as_str().unwrap().to_string()
}

async fn get_as(app: &TestApp, secret: &str, path: &str) -> (StatusCode, Value) {
    app.call(Method::GET, path, Some(secret), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_makes_rotates_and_revokes_a_token() {
    let app = spawn_app().await;
    app.with_chat().await;
    let first = token(
        &app,
        "ci",
        json!({"scopes": ["write"], "description": "CI"}),
    )
    .await;
    // The secret is shown once: not in get, list or activity.
    let mut seen = Vec::new();
    for path in [
        "/api/acme/ci",
        "/api/acme/ops/list",
        "/api/acme/ops/activity?limit=200",
        "/api/acme/ci/ops/tokens",
    ] {
        seen.push(app.get(path).await.1.to_string());
    }
    assert!(seen.iter().all(|t| !t.contains(&first)), "{seen:?}");
    // write: member ops work, admin ops do not.
    assert_eq!(
        get_as(&app, &first, "/api/acme/chat").await.0,
        StatusCode::OK
    );
    let r = app
        .call(
            Method::POST,
            "/api/acme/ops/create",
            Some(&first),
            Some(json!({"element_type": "websocket", "slug": "made", "spec": {"path": "/made"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let r = app
        .call(
            Method::DELETE,
            "/api/acme/made/ops/delete?confirm=true",
            Some(&first),
            None,
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    // Uses are written in batches.
    eventually("last_used_at is written", || async {
        app.get("/api/acme/ci/ops/tokens").await.1["tokens"][0]["last_used_at"].is_string()
    })
    .await;
    // Rotation: the new secret works, the old one for its grace only.
    let (s, rot) = app
        .post("/api/acme/ci/ops/rotate", json!({"grace_seconds": 2}))
        .await;
    assert_eq!(s, StatusCode::OK, "{rot}");
    let second = rot["token"]["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(rot["previous"][0]["status"], "active");
    assert!(rot["previous"][0]["expires_at"].is_string());
    assert_eq!(
        get_as(&app, &first, "/api/acme/chat").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&app, &second, "/api/acme/chat").await.0,
        StatusCode::OK
    );
    // Past the grace on the server's clock.
    app.advance(std::time::Duration::from_millis(2300));
    assert_error(
        &get_as(&app, &first, "/api/acme/chat").await,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(
        get_as(&app, &second, "/api/acme/chat").await.0,
        StatusCode::OK
    );
    let (_, list) = app.get("/api/acme/ci/ops/tokens").await;
    let states: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["active", "expired"], "{list}");
    // Revoked: every secret stops; rotating it again is refused.
    let (s, v) = app.post("/api/acme/ci/ops/revoke", json!({})).await;
    assert_eq!((s, v["revoked"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    assert_error(
        &get_as(&app, &second, "/api/acme/chat").await,
        401,
        "UNAUTHORIZED",
    );
    let r = app.post("/api/acme/ci/ops/rotate", json!({})).await;
    assert_error(&r, 409, "TOKEN_REVOKED");
    // The CLI's tokens keep working beside them.
    let cli = app.token("acme", Role::Viewer).await;
    assert_eq!(get_as(&app, &cli, "/api/acme/chat").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_token_promotes_but_cannot_delete() {
    let app = spawn_app().await;
    app.with_chat().await;
    let deploy = token(&app, "releaser", json!({"scopes": ["deploy"]})).await;
    for (from, to) in [("draft", "demo"), ("demo", "live")] {
        let r = app
            .call(
                Method::POST,
                "/api/acme/chat/ops/source/promote",
                Some(&deploy),
                Some(json!({"from": from, "to": to})),
            )
            .await;
        assert_eq!(r.0, StatusCode::OK, "{from} → {to}: {}", r.1);
    }
    let r = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/source/rollback",
            Some(&deploy),
            Some(json!({"env": "live", "to": "previous"})),
        )
        .await;
    // Nothing earlier was released to live: a 400, not a 403.
    assert_eq!(r.0.as_u16(), 400, "{}", r.1);
    assert_eq!(
        get_as(&app, &deploy, "/api/acme/chat").await.0,
        StatusCode::OK
    );
    let before = app.state_of("acme", "chat").await;
    let r = app
        .call(
            Method::DELETE,
            "/api/acme/chat/ops/delete?confirm=true",
            Some(&deploy),
            None,
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    let r = app
        .call(
            Method::PATCH,
            "/api/acme/chat/ops/update",
            Some(&deploy),
            Some(json!({"spec": {"path": "/other"}})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    assert_eq!(app.state_of("acme", "chat").await, before);
    // A read token cannot promote.
    let reader = token(&app, "reader", json!({"scopes": ["read"]})).await;
    let r = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/source/promote",
            Some(&reader),
            Some(json!({"from": "draft", "to": "demo"})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_ips_and_the_tokens_own_limit_hold_everywhere() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "chat",
        json!({"path": "/chat", "auth": {"mode": "token"}}),
    )
    .await;
    let only2 = token(
        &app,
        "from-two",
        json!({"scopes": ["admin"], "allowed_ips": ["127.0.0.2/32"]}),
    )
    .await;
    // From 127.0.0.1 (every client here): refused on REST, git and the
    // WebSocket upgrade.
    assert_error(
        &get_as(&app, &only2, "/api/acme/chat").await,
        403,
        "IP_NOT_ALLOWED",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = git(
        dir.path(),
        &["clone", "-q", &url(&app, &only2, "acme", "chat"), "wt"],
    );
    assert!(!out.status.success(), "git clone from another address");
    let (status, body) = refused(&app, "/ws/acme/chat", Some(&only2)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("IP_NOT_ALLOWED"))
    );
    // From 127.0.0.2 it works.
    let from2 = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = from2
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&only2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A token's own rate limit.
    let slow = token(
        &app,
        "slow",
        json!({"scopes": ["read"], "rate_limit": {"limit": 2, "window_seconds": 60}}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            get_as(&app, &slow, "/api/acme/chat").await.0,
            StatusCode::OK
        );
    }
    assert_error(
        &get_as(&app, &slow, "/api/acme/chat").await,
        429,
        "RATE_LIMITED",
    );
    // allowed_origins, for browsers.
    let site = token(
        &app,
        "site",
        json!({"scopes": ["read"], "allowed_origins": ["https://app.example"]}),
    )
    .await;
    let asked = |origin: &'static str| {
        let c = app.client.clone();
        let u = format!("{}/api/acme/chat", app.base);
        let site = site.clone();
        async move {
            c.get(u)
                .bearer_auth(site)
                .header("origin", origin)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(asked("https://app.example").await, StatusCode::OK);
    assert_eq!(asked("https://evil.example").await, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let cases = [
        (json!({"scopes": ["read", "root"]}), "SPEC_INVALID"),
        (json!({"scopes": []}), "SPEC_INVALID"),
        (json!({"allowed_ips": ["10.0.0.0/33"]}), "INVALID_CIDR"),
        (json!({"allowed_ips": ["example.com"]}), "INVALID_CIDR"),
        (json!({"expires_at": "tomorrow"}), "SPEC_INVALID"),
    ];
    for (spec, code) in cases {
        let r = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "api-token", "slug": "bad", "spec": spec}),
            )
            .await;
        assert_error(&r, 422, code);
    }
    assert_error(&app.get("/api/acme/bad").await, 404, "ELEMENT_NOT_FOUND");
    // A member may not make one, nor widen one.
    let member = app.token("acme", Role::Member).await;
    let r = app
        .call(
            Method::POST,
            "/api/acme/ops/create",
            Some(&member),
            Some(
                json!({"element_type": "api-token", "slug": "mine", "spec": {"scopes": ["admin"]}}),
            ),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    token(&app, "ci", json!({"scopes": ["read"]})).await;
    let before = app.state_of("acme", "ci").await;
    let r = app
        .call(
            Method::PATCH,
            "/api/acme/ci/ops/update",
            Some(&member),
            Some(json!({"spec": {"scopes": ["admin"]}})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    // Nor bring one in by import.
    let (_, export) = app.get("/api/acme/ops/export/bundle").await;
    let r = app
        .call(
            Method::POST,
            "/api/acme/ops/import/bundle",
            Some(&member),
            Some(json!({"elements": export["elements"], "overwrite": true})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    for grace in [
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": 999999999}),
    ] {
        assert_error(
            &app.post("/api/acme/ci/ops/rotate", grace).await,
            400,
            "INVALID_GRACE",
        );
    }
    assert_eq!(app.state_of("acme", "ci").await, before);
    let (_, list) = app.get("/api/acme/ci/ops/tokens").await;
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1, "{list}");
}

/// `token_type: api-key` (issue 24, item 3): the secret goes in
/// `X-API-Key` on REST and the upgrade, and as git's Basic password;
/// whoami shows the type and the scopes; a bad header or both headers at
/// once is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_token_is_sent_as_x_api_key() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "chat",
        json!({"path": "/chat", "on_message": "echo", "auth": {"mode": "token"}}),
    )
    .await;
    let key = token(
        &app,
        "svc",
        json!({"token_type": "api-key", "scopes": ["read"]}),
    )
    .await;
    let with_key = |path: &str, k: &str| {
        app.client
            .get(format!("{}{path}", app.base))
            .header("X-API-Key", k)
    };
    let r = with_key("/api/ops/whoami", &key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["token_type"], "api-key", "{me}");
    assert_eq!(me["scopes"], json!(["read"]), "{me}");
    assert_eq!(me["role"], "viewer", "{me}");
    let r = with_key("/api/acme/chat", &key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The scopes still rule: read cannot write.
    let r = app
        .client
        .patch(format!("{}/api/acme/chat/ops/update", app.base))
        .header("X-API-Key", &key)
        .json(&json!({"name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Refused: a wrong key, an empty one, and two credentials at once.
    let r = with_key("/api/acme/chat", "edt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = with_key("/api/acme/chat", " ").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let both = with_key("/api/acme/chat", &key)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 401);
    let body: Value = both.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not both"),
        "{body}"
    );
    // git takes it as the Basic password.
    let dir = tempfile::tempdir().unwrap();
    let out = git(
        dir.path(),
        &["clone", "-q", &url(&app, &key, "acme", "chat"), "wt"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The upgrade takes it in X-API-Key.
    let mut req = ws_url(&app, "/ws/acme/~draft/chat")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let (mut c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send_text(&mut c, "hi").await;
    assert_eq!(next_text(&mut c).await, "hi");
    let (status, _) = refused_with_key(&app, "/ws/acme/~draft/chat", "edt_wrong").await;
    assert_eq!(status, 401);
    // A bearer token (the default type) says so in whoami.
    let plain = token(&app, "ci", json!({"scopes": ["write"]})).await;
    let (_, me) = get_as(&app, &plain, "/api/ops/whoami").await;
    assert_eq!(me["token_type"], "bearer", "{me}");
    // An unknown type is refused and makes nothing.
    let bad = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "api-token", "slug": "odd", "spec": {"token_type": "cookie"}}),
        )
        .await;
    assert_eq!(bad.0.as_u16(), 422, "{}", bad.1);
    assert_eq!(app.get("/api/acme/odd").await.0.as_u16(), 404);
}

/// An upgrade with `X-API-Key: key` that must be refused: its status.
async fn refused_with_key(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    let mut req = ws_url(app, path).into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("{path} accepted key {key}"),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            (r.status().as_u16(), format!("{:?}", r.body()))
        }
        Err(e) => panic!("{path}: {e}"),
    }
}
