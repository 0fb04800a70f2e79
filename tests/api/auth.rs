use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_tokens_get_401() {
    let app = spawn_app().await;
    app.with_chat().await;
    let path = "/api/acme/chat/ops/get";
    assert_error(
        &app.call(Method::GET, path, None, None).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &app.call(Method::GET, path, Some("edt_nope"), None).await,
        401,
        "UNAUTHORIZED",
    );
    // Without a token, a missing element is not told apart from a present one.
    assert_error(
        &app.call(Method::GET, "/api/acme/ghost/ops/get", None, None)
            .await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &app.call(Method::GET, "/api/ops/list", None, None).await,
        401,
        "UNAUTHORIZED",
    );
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .header("authorization", "Token abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("www-authenticate").is_some());
    // Basic with the token as password is accepted.
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .basic_auth("anyone", Some(&app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_gate_ops_by_level() {
    let app = spawn_app().await;
    app.with_chat().await;
    let viewer = app.token("acme", Role::Viewer).await;
    let member = app.token("acme", Role::Member).await;
    let before = app.state_of("acme", "chat").await;

    let get = app
        .call(Method::GET, "/api/acme/chat/ops/get", Some(&viewer), None)
        .await;
    assert_eq!(get.0, StatusCode::OK);
    let upd = app
        .call(
            Method::PATCH,
            "/api/acme/chat/ops/update",
            Some(&viewer),
            Some(json!({"spec": {"path": "/x"}})),
        )
        .await;
    assert_error(&upd, 403, "FORBIDDEN");
    assert_eq!(
        app.state_of("acme", "chat").await,
        before,
        "a forbidden update changed nothing"
    );

    let upd = app
        .call(
            Method::PATCH,
            "/api/acme/chat/ops/update",
            Some(&member),
            Some(json!({"spec": {"path": "/x"}})),
        )
        .await;
    assert_eq!(upd.0, StatusCode::OK, "{}", upd.1);
    // delete, disable and restore are admin ops.
    let del = app
        .call(
            Method::DELETE,
            "/api/acme/chat/ops/delete?confirm=true",
            Some(&member),
            None,
        )
        .await;
    assert_error(&del, 403, "FORBIDDEN");
    let dis = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/disable",
            Some(&member),
            Some(json!({})),
        )
        .await;
    assert_error(&dis, 403, "FORBIDDEN");
    assert_eq!(app.get("/api/acme/chat/ops/get").await.1["state"], "ready");
    // Creating circles needs a platform admin.
    let circle_admin = app.token("acme", Role::Admin).await;
    let c = app
        .call(
            Method::POST,
            "/api/ops/create",
            Some(&circle_admin),
            Some(json!({"element_type": "circle", "slug": "other"})),
        )
        .await;
    assert_error(&c, 403, "FORBIDDEN");
    assert_error(&app.get("/api/other/ops/get").await, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_circles_are_invisible() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.circle("beta").await;
    let beta_admin = app.token("beta", Role::Admin).await;
    // Existing and missing elements of another circle look the same: 404.
    let existing = app
        .call(
            Method::GET,
            "/api/acme/chat/ops/get",
            Some(&beta_admin),
            None,
        )
        .await;
    let missing = app
        .call(
            Method::GET,
            "/api/acme/ghost/ops/get",
            Some(&beta_admin),
            None,
        )
        .await;
    let no_circle = app
        .call(Method::GET, "/api/nowhere/ops/get", Some(&beta_admin), None)
        .await;
    assert_error(&existing, 404, "NOT_FOUND");
    assert_error(&no_circle, 404, "NOT_FOUND");
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    assert_eq!(existing.1, no_circle.1);
    let upd = app
        .call(
            Method::PATCH,
            "/api/acme/chat/ops/update",
            Some(&beta_admin),
            Some(json!({"spec": {}})),
        )
        .await;
    assert_error(&upd, 404, "NOT_FOUND");
    assert_eq!(app.state_of("acme", "chat").await.0, 1);
    // The circle list shows a scoped token only its own circle.
    let (s, list) = app
        .call(Method::GET, "/api/ops/list", Some(&beta_admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let slugs: Vec<_> = list["circles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].clone())
        .collect();
    assert_eq!(slugs, vec![json!("beta")]);
    let (_, all) = app.get("/api/ops/list").await;
    assert_eq!(all["circles"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_get_401() {
    let app = spawn_app().await;
    app.with_chat().await;
    let (row, expired) = app
        .db
        .create_token(
            "acme",
            Role::Admin,
            "old",
            Some(elementd::model::now_ms() - 1000),
        )
        .await
        .unwrap();
    assert!(row.expires_at.is_some());
    assert_error(
        &app.call(Method::GET, "/api/acme/chat/ops/get", Some(&expired), None)
            .await,
        401,
        "UNAUTHORIZED",
    );
    let (row, tok) = app
        .db
        .create_token("acme", Role::Admin, "soon revoked", None)
        .await
        .unwrap();
    let cached_at = std::time::Instant::now();
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat/ops/get", Some(&tok), None)
            .await
            .0,
        StatusCode::OK
    );
    // Revoked behind the server's back: its cached row still admits...
    assert!(app.db.revoke_token(&row.id).await.unwrap());
    let stale = app
        .call(Method::GET, "/api/acme/chat/ops/get", Some(&tok), None)
        .await;
    if cached_at.elapsed() < elementd::store::cache::TTL {
        assert_eq!(
            stale.0,
            StatusCode::OK,
            "served from the cache: {}",
            stale.1
        );
    }
    // ...until the TTL has passed on the server's clock.
    app.caches_expire();
    assert_error(
        &app.call(Method::GET, "/api/acme/chat/ops/get", Some(&tok), None)
            .await,
        401,
        "UNAUTHORIZED",
    );
    assert!(
        !app.db.revoke_token(&row.id).await.unwrap(),
        "revoking twice reports nothing to revoke"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed_and_admin_token_file_is_private() {
    let app = spawn_app().await;
    let rows = sqlx::query("SELECT hash FROM tokens")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    use sqlx::Row;
    let hashes: Vec<String> = rows.iter().map(|r| r.get("hash")).collect();
    assert_eq!(hashes.len(), 1);
    assert!(!hashes[0].contains(&app.admin) && !app.admin.contains(&hashes[0]));
    let path = app.config.data_dir.join("admin.token");
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(file.trim(), app.admin);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Token lookups are cached, and a revocation still reaches every node
/// within the cache's TTL (one second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_on_every_node() {
    let Some((a, b)) = spawn_cluster().await else {
        eprintln!("needs TEST_DATABASE_URL (PostgreSQL); skipped");
        return;
    };
    a.with_chat().await;
    let (row, tok) =
        a.db.create_token("acme", Role::Viewer, "both nodes", None)
            .await
            .unwrap();
    for node in [&a, &b] {
        let got = node
            .call(Method::GET, "/api/acme/chat", Some(&tok), None)
            .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    }
    assert!(a.db.revoke_token(&row.id).await.unwrap());
    for node in [&a, &b] {
        node.caches_expire();
    }
    for node in [&a, &b] {
        let got = node
            .call(Method::GET, "/api/acme/chat", Some(&tok), None)
            .await;
        assert_error(&got, 401, "UNAUTHORIZED");
    }
}
