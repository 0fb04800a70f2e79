//! Sensitive variables: sealed at rest, never returned, never in git.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

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
    // Marking it not sensitive opens it again, by the owner's choice.
    let (_, v) = app
        .patch(
            "/api/acme/api-key/ops/update",
            json!({"spec": {"sensitive": false}}),
        )
        .await;
    assert_eq!(v["spec"]["value"], "s3cret-two");
}
