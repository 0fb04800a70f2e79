//! `GET /api/openapi.json`: a valid OpenAPI 3.1 document, and every
//! operation it lists is served (the document cannot promise a route the
//! server does not have).

use crate::helpers::{spawn_app, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

async fn document(app: &TestApp) -> Value {
    let (s, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK, "public, like /api/types");
    doc
}

/// Resolves a local `$ref` (`#/components/...`).
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("$ref {r} resolves")),
        None => v,
    }
}

/// Every `$ref` anywhere in `v` points into the document.
fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "{r}");
            }
            m.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

/// The checks a reader relies on, done here so they hold without Python;
/// `openapi-spec-validator` (`.ci/run` sets ELEMENTD_OPENAPI_VALIDATOR)
/// checks the whole document against the OpenAPI 3.1 schema.
#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    check_refs(&doc, &doc);
    let mut ids = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: HashSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is unique");
            let declared: HashSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| deref(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared, templated, "{method} {path}: path parameters");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    // Ops from the registry: method, level, body limit and type errors.
    let send = &doc["paths"]["/api/{circle}/{slug}/ops/send"]["post"];
    assert_eq!(send["x-auth-level"], "execute");
    assert_eq!(send["x-body-limit"], 1 << 20);
    assert_eq!(
        doc["paths"]["/api/{circle}/ops/import/bundle"]["post"]["x-body-limit"],
        64 << 20
    );
    assert!(send["responses"]["503"]["description"]
        .as_str()
        .unwrap()
        .contains("WS_MAX_CONNECTIONS_REACHED"));
    let receive = &doc["paths"]["/api/{circle}/{slug}/ops/receive"]["post"];
    assert_eq!(receive["x-auth-level"], "none");
    let update = &doc["paths"]["/api/{circle}/{slug}/ops/update"]["patch"];
    assert_eq!(
        deref(&doc, &update["responses"]["422"])["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    let (_, ws) = app.get("/api/types/websocket").await;
    assert_eq!(
        doc["components"]["schemas"]["spec.websocket"],
        ws["properties"]
    );
    if let Ok(validator) = std::env::var("ELEMENTD_OPENAPI_VALIDATOR") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = std::process::Command::new(&validator)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("run {validator}: {e}"));
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One element of each non-root type in `acme`, named after its type.
async fn one_of_each(app: &TestApp) {
    app.circle("acme").await;
    let specs = [
        ("websocket", json!({})),
        ("project", json!({})),
        ("app", json!({})),
        ("rate-limit", crate::fixtures::spec("rate-limit-roomy")),
        ("auth-policy", json!({})),
        ("variable", json!({"value": "x"})),
    ];
    for (ty, spec) in specs {
        app.element("acme", ty, ty, spec).await;
    }
    app.element(
        "acme",
        "variable",
        "hook-key",
        json!({"value": "k", "sensitive": true}),
    )
    .await;
    app.element(
        "acme",
        "webhook",
        "webhook",
        crate::fixtures::spec("webhook-local"),
    )
    .await;
}

/// Every documented path and method reaches a handler: never the router's
/// or the pipeline's "no such route/op", a 405 or a 501. Bodies are
/// invalid JSON, so writes stop at parsing.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    one_of_each(&app).await;
    let mut calls = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let slug = op["x-element-types"][0].as_str().unwrap_or("websocket");
            let url = path
                .replace("{circle}", "acme")
                .replace("{slug}", slug)
                .replace("{type}", "websocket")
                .replace("{path}", "ws")
                .replace("{repo}", "websocket.git")
                .replace("{service}", "git-upload-pack");
            let method: Method = method.to_uppercase().parse().unwrap();
            let mut req = app
                .client
                .request(method.clone(), format!("{}{url}", app.base))
                .bearer_auth(&app.admin);
            if op.get("requestBody").is_some() {
                req = req.header("content-type", "application/json").body("{");
            }
            let resp = tokio::time::timeout(std::time::Duration::from_secs(15), req.send())
                .await
                .expect("answers in time")
                .expect("request sent");
            let status = resp.status().as_u16();
            // Event streams answer with headers and stay open: drop them.
            let body: Value = if resp
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap().starts_with("application/json"))
            {
                resp.json().await.unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            let code = body["error"]["code"].as_str().unwrap_or("");
            assert!(
                !matches!(code, "ROUTE_NOT_FOUND" | "OP_NOT_FOUND" | "TYPE_NOT_FOUND")
                    && status != 405
                    && status != 501,
                "{method} {url} ({path}) is documented but answers {status} {body}"
            );
            calls += 1;
        }
    }
    assert!(calls > 80, "{calls} operations");
}

#[tokio::test]
async fn whoami_names_the_tokens_circle_and_role() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let (s, me) = app.get("/api/ops/whoami").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(
        (me["circle"].as_str(), me["role"].as_str()),
        (Some("*"), Some("admin"))
    );
    let viewer = app.token("acme", elementd::model::Role::Viewer).await;
    let (_, me) = app
        .call(Method::GET, "/api/ops/whoami", Some(&viewer), None)
        .await;
    assert_eq!(me["circle"], "acme");
    assert_eq!(me["role"], "viewer");
    assert!(
        me["scopes"].is_null(),
        "a CLI token has a role, no scopes: {me}"
    );
    // An api-token shows its scopes.
    let made = app
        .element(
            "acme",
            "api-token",
            "ci",
            serde_json::json!({"scopes": ["read", "deploy"]}),
        )
        .await;
    let secret = made["token"]["secret"].as_str().unwrap();
    let (_, me) = app
        .call(Method::GET, "/api/ops/whoami", Some(secret), None)
        .await;
    assert_eq!(me["scopes"], serde_json::json!(["read", "deploy"]), "{me}");
    assert_eq!(me["role"], "member", "{me}");
    let (s, _) = app.call(Method::GET, "/api/ops/whoami", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
