//! Sensitive variables: sealed at rest, never returned, never in git.

use crate::helpers::*;
use crate::ws_client::eventually;
use crate::ws_vars::{link_state, offered, peer};
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_values_never_leave() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let el = app
        .element(
            "acme",
            "variable",
            "api-key",
            json!({"value": "s3cret-one", "sensitive": true}),
        )
        .await;
    assert_eq!(el["spec"]["value"], "[redacted]");
    app.patch(
        "/api/acme/api-key/ops/update",
        json!({"spec": {"value": "s3cret-two"}}),
    )
    .await;
    let (_, got) = app.get("/api/acme/api-key").await;
    assert_eq!(got["spec"]["value"], "[redacted]");
    let mut seen = Vec::new();
    for path in [
        "/api/acme/api-key/ops/version?history=true",
        "/api/acme/api-key/ops/activity?limit=100",
        "/api/acme/ops/activity?limit=100",
        "/api/acme/api-key/ops/source?path=.triform/spec.yaml",
        "/api/acme/ops/export/bundle",
        "/api/acme/ops/list",
    ] {
        let (s, v) = app.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        seen.push(v.to_string());
    }
    let bundle = app
        .client
        .get(format!("{}/api/acme/api-key/ops/export/bundle", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    seen.push(String::from_utf8_lossy(&bundle).to_string());
    for text in &seen {
        assert!(
            !text.contains("s3cret"),
            "leak: {}",
            &text[..text.len().min(300)]
        );
    }
    // At rest: sealed in both tables.
    for sql in [
        "SELECT spec FROM elements WHERE slug = 'api-key'",
        "SELECT spec FROM element_versions",
    ] {
        for row in sqlx::query(sql).fetch_all(&app.db.pool).await.unwrap() {
            let spec: String = row.get("spec");
            assert!(!spec.contains("s3cret"), "{sql}: {spec}");
        }
    }
    let spec_row = sqlx::query("SELECT spec FROM elements WHERE slug = 'api-key'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(spec_row.get::<String, _>("spec").contains("$sealed"));
    let key = app.config.data_dir.join("secret.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Marking it not sensitive never opens it: the value is dropped.
    let (_, v) = app
        .patch(
            "/api/acme/api-key/ops/update",
            json!({"spec": {"sensitive": false}}),
        )
        .await;
    assert_eq!(v["spec"]["sensitive"], false, "{v}");
    assert!(v["spec"].get("value").is_none(), "{v}");
}

/// Turning `sensitive` off needs admin and drops the sealed value: the
/// old secret is never shown and never reaches git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_sensitive_off_reveals_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "api-key",
        json!({"value": "s3cret-one", "sensitive": true}),
    )
    .await;
    let member = app.token("acme", Role::Member).await;
    let flip = json!({"spec": {"sensitive": false}});
    let got = app
        .call(
            Method::PATCH,
            "/api/acme/api-key/ops/update",
            Some(&member),
            Some(flip.clone()),
        )
        .await;
    assert_error(&got, 403, "FORBIDDEN");
    let (version, spec, _) = app.state_of("acme", "api-key").await;
    assert_eq!((version, spec["sensitive"].clone()), (1, json!(true)));

    // An admin may turn it off: the value is dropped, not opened.
    let (s, v) = app.patch("/api/acme/api-key/ops/update", flip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["sensitive"], false);
    assert!(v["spec"].get("value").is_none(), "{v}");
    // With a new value in the same update, that value is kept, in the open.
    app.patch(
        "/api/acme/api-key/ops/update",
        json!({"spec": {"sensitive": true, "value": "s3cret-two"}}),
    )
    .await;
    let (s, v) = app
        .patch(
            "/api/acme/api-key/ops/update",
            json!({"spec": {"sensitive": false, "value": "public-now"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["value"], "public-now");
    let mut seen = Vec::new();
    for path in [
        "/api/acme/api-key",
        "/api/acme/api-key/ops/version?history=true",
        "/api/acme/api-key/ops/source?path=.triform/spec.yaml",
        "/api/acme/api-key/ops/activity?limit=100",
    ] {
        let (s, v) = app.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        seen.push(v.to_string());
    }
    let git_log = std::process::Command::new("git")
        .args(["log", "-p", "--all"])
        .current_dir(app.config.repos_dir().join(format!(
            "{}.git",
            app.get("/api/acme/api-key").await.1["id"].as_str().unwrap()
        )))
        .output()
        .unwrap();
    assert!(git_log.status.success());
    seen.push(String::from_utf8_lossy(&git_log.stdout).to_string());
    for text in &seen {
        assert!(!text.contains("s3cret"), "leak: {text}");
    }
}

/// A seal is bound to its element: a sealed blob sent by a client is
/// refused, and one moved between rows in the database does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seals_cannot_be_moved() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.circle("other").await;
    app.element(
        "acme",
        "variable",
        "api-key",
        json!({"value": "s3cret-one", "sensitive": true}),
    )
    .await;
    let row = sqlx::query("SELECT spec FROM elements WHERE slug = 'api-key'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let spec: serde_json::Value = serde_json::from_str(&row.get::<String, _>("spec")).unwrap();
    let sealed = spec["value"].clone();
    assert!(sealed.get("$sealed").is_some(), "{spec}");
    let member = app.token("other", Role::Member).await;
    let create = app
        .call(
            Method::POST,
            "/api/other/ops/create",
            Some(&member),
            Some(json!({"element_type": "variable", "slug": "stolen",
                        "spec": {"value": sealed.clone(), "sensitive": true}})),
        )
        .await;
    assert_error(&create, 400, "SEALED_VALUE_REFUSED");
    app.element("other", "variable", "stolen", json!({"value": "x"}))
        .await;
    let update = app
        .call(
            Method::PATCH,
            "/api/other/stolen/ops/update",
            Some(&member),
            Some(json!({"spec": {"value": sealed.clone(), "sensitive": false}})),
        )
        .await;
    assert_error(&update, 400, "SEALED_VALUE_REFUSED");
    let (_, spec, _) = app.state_of("other", "stolen").await;
    assert_eq!(spec["value"], "x", "a refused update changed nothing");
    // Copied behind the server's back, then unmarked by an admin: the
    // value is dropped, never opened under the wrong element.
    let moved = json!({"value": sealed, "sensitive": true}).to_string();
    sqlx::query("UPDATE elements SET spec = $1 WHERE slug = 'stolen'")
        .bind(moved)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, v) = app
        .patch(
            "/api/other/stolen/ops/update",
            json!({"spec": {"sensitive": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("s3cret"), "{v}");
}

/// The sealed value as stored in the element's row.
async fn stored(app: &TestApp, slug: &str) -> serde_json::Value {
    let row = sqlx::query("SELECT spec FROM elements WHERE slug = $1")
        .bind(slug)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let spec: serde_json::Value = serde_json::from_str(&row.get::<String, _>("spec")).unwrap();
    spec["value"].clone()
}

/// Opens a stored value with the server's key, as a driven link would.
fn opened(app: &TestApp, sealed: &serde_json::Value, id: &str) -> Option<serde_json::Value> {
    elementd::secrets::Secrets::load(&app.config.data_dir)
        .unwrap()
        .open(sealed, id)
}

/// Every stored spec: element rows, versions and releases.
async fn spec_rows(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT spec FROM elements ORDER BY id",
        "SELECT spec FROM element_versions ORDER BY element_id, version",
        "SELECT spec FROM deployments ORDER BY element_id, env",
    ] {
        for row in sqlx::query(sql).fetch_all(&app.db.pool).await.unwrap() {
            out.push(row.get::<String, _>("spec"));
        }
    }
    out
}

/// A client that sends back what `get` showed ("[redacted]") leaves the
/// secret as it was; with no secret to keep, the placeholder is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_value_sent_back_keeps_the_secret() {
    const KEY: &str = "s3cret-kept-5d2e";
    let app = spawn_app().await;
    app.circle("acme").await;
    let made = app
        .element(
            "acme",
            "variable",
            "api-key",
            json!({"value": KEY, "sensitive": true}),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    let (_, got) = app.get("/api/acme/api-key/ops/get").await;
    assert_eq!(got["spec"]["value"], "[redacted]", "{got}");
    let sealed = stored(&app, "api-key").await;
    for body in [
        json!({"spec": got["spec"]}),
        json!({"spec": got["spec"], "deep": false}),
        json!({"spec": {"value": "[redacted]"}, "name": "API key"}),
    ] {
        let (s, v) = app
            .patch("/api/acme/api-key/ops/update", body.clone())
            .await;
        assert_eq!(s, StatusCode::OK, "{body}: {v}");
        assert_eq!(v["spec"]["value"], "[redacted]", "{v}");
        assert_eq!(stored(&app, "api-key").await, sealed, "after {body}");
    }
    let (version, _, name) = app.state_of("acme", "api-key").await;
    assert_eq!((version, name), (4, json!("API key")));
    assert_eq!(opened(&app, &sealed, &id), Some(json!(KEY)));

    // A driven link made now sends the value, not the placeholder.
    let expected = Arc::new(Mutex::new(KEY.to_string()));
    let (port, mut rx) = peer(expected).await;
    app.element(
        "acme",
        "websocket",
        "feed",
        json!({"url": format!("ws://127.0.0.1:{port}/feed"),
               "headers": {"Authorization": "Bearer {{ vars.api-key }}"}}),
    )
    .await;
    offered(&mut rx, KEY).await;
    eventually("the link opens", || async {
        link_state(&app).await["state"] == "open"
    })
    .await;

    // Nothing to keep: refused, and nothing changes.
    for spec in [
        json!({"value": "[redacted]", "sensitive": true}),
        json!({"value": "[redacted]"}),
    ] {
        let r = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "variable", "slug": "copy", "spec": spec}),
            )
            .await;
        assert_error(&r, 422, "REDACTED_VALUE");
        assert_error(&app.get("/api/acme/copy").await, 404, "ELEMENT_NOT_FOUND");
    }
    app.element("acme", "variable", "plain", json!({"value": "open"}))
        .await;
    let before = app.state_of("acme", "plain").await;
    for spec in [
        json!({"value": "[redacted]"}),
        json!({"value": "[redacted]", "sensitive": true}),
    ] {
        let r = app
            .patch("/api/acme/plain/ops/update", json!({ "spec": spec }))
            .await;
        assert_error(&r, 422, "REDACTED_VALUE");
    }
    assert_eq!(app.state_of("acme", "plain").await, before);

    // Turning sensitive off with the placeholder brings no new value:
    // the old one is dropped, as without it.
    let (s, v) = app
        .patch(
            "/api/acme/api-key/ops/update",
            json!({"spec": {"sensitive": false, "value": "[redacted]"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["spec"].get("value").is_none(), "{v}");
}

/// An object value on a sensitive variable replaces the sealed one: it is
/// sealed, in every row, and it is what a link sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_value_replaces_a_sealed_one() {
    const PLAIN: &str = "plain-7c1d";
    let app = spawn_app().await;
    app.circle("acme").await;
    let made = app
        .element(
            "acme",
            "variable",
            "api-key",
            json!({"value": {"old": "s3cret-old-0a9b"}, "sensitive": true}),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    let (s, v) = app
        .patch(
            "/api/acme/api-key/ops/update",
            json!({"spec": {"value": {"a": PLAIN}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["value"], "[redacted]", "{v}");
    for text in spec_rows(&app).await {
        assert!(
            !text.contains(PLAIN) && !text.contains("s3cret-old"),
            "{text}"
        );
    }
    let sealed = stored(&app, "api-key").await;
    assert_eq!(sealed.as_object().map(|m| m.len()), Some(1), "{sealed}");
    assert_eq!(opened(&app, &sealed, &id), Some(json!({"a": PLAIN})));

    let sent = json!({"a": PLAIN}).to_string();
    let (port, mut rx) = peer(Arc::new(Mutex::new(sent.clone()))).await;
    app.element(
        "acme",
        "websocket",
        "feed",
        json!({"url": format!("ws://127.0.0.1:{port}/feed"),
               "headers": {"Authorization": "Bearer {{ vars.api-key }}"}}),
    )
    .await;
    offered(&mut rx, &sent).await;
    eventually("the link opens", || async {
        link_state(&app).await["state"] == "open"
    })
    .await;
}

/// Rows that earlier updates left with plain keys beside a seal are
/// sealed again when the server starts, as the value those keys make;
/// a later start changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_merged_beside_a_seal_are_sealed_again_at_start() {
    const PLAIN: &str = "plain-e41f";
    let app = spawn_app().await;
    app.circle("acme").await;
    let made = app
        .element(
            "acme",
            "variable",
            "api-key",
            json!({"value": "s3cret-old-77d0", "sensitive": true}),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    app.patch(
        "/api/acme/api-key/ops/update",
        json!({"spec": {"sensitive": true}}),
    )
    .await;
    let mut damaged = stored(&app, "api-key").await;
    damaged["a"] = json!(PLAIN);
    let spec = json!({"value": damaged, "sensitive": true}).to_string();
    for sql in [
        "UPDATE elements SET spec = $1 WHERE id = $2",
        "UPDATE element_versions SET spec = $1 WHERE element_id = $2 AND version = 2",
        "UPDATE deployments SET spec = $1 WHERE element_id = $2",
    ] {
        sqlx::query(sql)
            .bind(&spec)
            .bind(&id)
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    // A database from before the fix: never checked.
    let forget = "DELETE FROM settings WHERE key = 'merged_seals_checked'";
    sqlx::query(forget).execute(&app.db.pool).await.unwrap();
    assert!(spec_rows(&app).await.iter().any(|t| t.contains(PLAIN)));

    let second = elementd::server::Server::start(app.config.clone())
        .await
        .expect("a second start");
    let rows = spec_rows(&app).await;
    for text in &rows {
        assert!(!text.contains(PLAIN), "{text}");
    }
    let sealed = stored(&app, "api-key").await;
    assert_eq!(opened(&app, &sealed, &id), Some(json!({"a": PLAIN})));
    let (s, v) = app.get("/api/acme/api-key/ops/version?history=true").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Sealed values are left as they are, even when checked again.
    sqlx::query(forget).execute(&app.db.pool).await.unwrap();
    let third = elementd::server::Server::start(app.config.clone())
        .await
        .expect("a third start");
    assert_eq!(spec_rows(&app).await, rows);
    second.stop().await.unwrap();
    third.stop().await.unwrap();
}
