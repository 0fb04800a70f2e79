//! The OpenAPI document's shapes against the server's real answers: real
//! calls through a running server, each answer validated (JSON Schema
//! 2020-12, formats checked) against the schema the document gives for
//! that path, method and status.

use crate::helpers::{spawn_app, TestApp};
use crate::ws_client::{connect, next_text};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Calls the server and checks each answer against the document.
struct Checker<'a> {
    app: &'a TestApp,
    doc: Value,
    checked: Vec<String>,
    wrong: Vec<String>,
}

impl<'a> Checker<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let (s, doc) = app.get("/api/openapi.json").await;
        assert_eq!(s, StatusCode::OK);
        Checker {
            app,
            doc,
            checked: Vec::new(),
            wrong: Vec::new(),
        }
    }

    /// The schema the document gives an answer of `template` (a path of
    /// the document), `method` and `status`.
    fn schema(&self, method: &Method, template: &str, status: u16) -> Value {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let answer = &op["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {template} answered {status}, which the document does not list"
        );
        answer["content"]["application/json"]["schema"].clone()
    }

    /// Calls `template` with `{circle}` as acme and `{slug}` as `slug`,
    /// then `query`; checks the answer and returns it.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        slug: &str,
        query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let path = template.replace("{circle}", "acme").replace("{slug}", slug);
        let got = self
            .app
            .call(
                method.clone(),
                &format!("{path}{query}"),
                Some(&self.app.admin),
                body,
            )
            .await;
        self.check(&method, template, got.0.as_u16(), &got.1);
        got
    }

    fn check(&mut self, method: &Method, template: &str, status: u16, answer: &Value) {
        let schema = self.schema(method, template, status);
        // The components travel with the schema so its `$ref`s resolve.
        let root = json!({"allOf": [schema], "components": self.doc["components"]});
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: bad schema: {e}"));
        for e in validator.iter_errors(answer) {
            self.wrong.push(format!(
                "{method} {template} {status}: at {}: {e}",
                e.instance_path()
            ));
        }
        self.checked.push(format!("{method} {template} {status}"));
    }

    async fn ok(
        &mut self,
        method: Method,
        template: &str,
        slug: &str,
        query: &str,
        body: Option<Value>,
    ) -> Value {
        let (s, v) = self.call(method.clone(), template, slug, query, body).await;
        assert!(s.is_success(), "{method} {template}{query}: {s} {v}");
        v
    }
}

const EL: &str = "/api/{circle}/{slug}/ops/";

fn op(name: &str) -> String {
    format!("{EL}{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_their_schemas() {
    let app = spawn_app().await;
    let mut c = Checker::new(&app).await;
    let circle = json!({"element_type": "circle", "slug": "acme", "intention": "test"});
    c.ok(Method::POST, "/api/ops/create", "", "", Some(circle))
        .await;
    for (path, q) in [
        ("/healthz", ""),
        ("/readyz", ""),
        ("/api/ops/whoami", ""),
        ("/api/ops/list", "?limit=5"),
    ] {
        c.ok(Method::GET, path, "", q, None).await;
    }
    c.ok(Method::GET, "/api/{circle}", "", "", None).await;
    // Children of each kind: a websocket, a rate limit, an app, a token.
    let create = "/api/{circle}/ops/create";
    for (ty, slug, spec) in [
        ("websocket", "chat", json!({"rooms": {"enabled": true}})),
        (
            "rate-limit",
            "rl",
            crate::fixtures::spec("rate-limit-roomy"),
        ),
        ("app", "shop", json!({"members": ["chat"]})),
        ("api-token", "ci", json!({"scopes": ["read"]})),
    ] {
        let body = json!({"element_type": ty, "slug": slug, "spec": spec});
        let (s, _) = c.call(Method::POST, create, "", "", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    c.ok(Method::GET, "/api/{circle}/{slug}", "chat", "", None)
        .await;
    let circle_op = |n: &str| format!("/api/{{circle}}/ops/{n}");
    for (name, q) in [
        ("list", "?limit=2"),
        ("activity", "?limit=3"),
        ("batch_stats", "?period=hour"),
        ("tree", "?include_metadata=true"),
        ("context", "?depth=2"),
        ("attachments", ""),
        ("export/bundle", ""),
        ("source/status", ""),
        ("intention", ""),
        ("schema", ""),
    ] {
        c.ok(Method::GET, &circle_op(name), "", q, None).await;
    }
    // The element's life: reads, writes, versions, source.
    let get = |n: &str| (Method::GET, op(n));
    for (name, q) in [
        ("get", ""),
        ("version", "?history=true&limit=5"),
        ("intention", ""),
        ("schema", ""),
        ("stats", "?period=week&env=live"),
        ("context", ""),
        ("tree", "?depth=2"),
        ("readme", "?branch=draft"),
        ("source", "?path=README.md"),
        ("source", "?path=nothing-here.txt"),
        ("source/branches", ""),
        ("source/status", ""),
        ("export/bundle", ""),
    ] {
        let (m, t) = get(name);
        if name == "export/bundle" {
            // An element's bundle is binary: only its status is checked.
            let (s, _) = app.get("/api/acme/chat/ops/export/bundle").await;
            assert_eq!(s, StatusCode::OK);
            continue;
        }
        c.ok(m, &t, "chat", q, None).await;
    }
    let patch = Some(json!({"spec": {"heartbeat": {"interval_ms": 20000}}, "name": "Chat"}));
    c.ok(Method::PATCH, &op("update"), "chat", "", patch).await;
    c.ok(
        Method::PATCH,
        &op("update_meta"),
        "chat",
        "",
        Some(json!({"meta": {"team": "a"}})),
    )
    .await;
    c.ok(
        Method::POST,
        &op("readme_update"),
        "chat",
        "",
        Some(json!({"content": "# Chat\n"})),
    )
    .await;
    c.ok(
        Method::POST,
        &op("restore"),
        "chat",
        "",
        Some(json!({"version": 1})),
    )
    .await;
    let promote = json!({"from": "draft", "to": "demo", "message": "first"});
    let released = c
        .ok(
            Method::POST,
            &op("source/promote"),
            "chat",
            "",
            Some(promote),
        )
        .await;
    assert_eq!(released["to"], "demo");
    c.ok(
        Method::POST,
        &op("source/promote"),
        "chat",
        "",
        Some(json!({"from": "demo", "to": "live"})),
    )
    .await;
    c.ok(
        Method::GET,
        &op("source/promotions"),
        "chat",
        "?env=live&limit=5",
        None,
    )
    .await;
    c.ok(
        Method::POST,
        &op("source/rollback"),
        "chat",
        "",
        Some(json!({"env": "demo"})),
    )
    .await;
    c.ok(
        Method::POST,
        &op("source/validate"),
        "chat",
        "",
        Some(json!({"branch": "draft"})),
    )
    .await;
    c.ok(
        Method::POST,
        &op("source/repair"),
        "chat",
        "",
        Some(json!({"dry_run": true})),
    )
    .await;
    // Modifiers.
    let composed = c
        .ok(
            Method::POST,
            &op("compose"),
            "chat",
            "",
            Some(json!({"add": [{"ref": "rl"}]})),
        )
        .await;
    let attachment = composed["added"][0]["attachment_id"].clone();
    c.ok(Method::GET, &op("attachments"), "chat", "", None)
        .await;
    c.ok(Method::GET, &op("status"), "rl", "", None).await;
    c.ok(
        Method::POST,
        &op("remove-modifier"),
        "chat",
        "",
        Some(json!({"attachment_id": attachment})),
    )
    .await;
    // The runtime, with a real client connected.
    let mut client = connect(&app, "/ws/acme/ws?rooms=red").await;
    let conns = c
        .ok(Method::GET, &op("connections"), "chat", "?room=red", None)
        .await;
    let id = conns[0]["connection_id"].as_str().unwrap().to_string();
    let b = c
        .ok(
            Method::POST,
            &op("broadcast"),
            "chat",
            "",
            Some(json!({"message": "hi", "room": "red"})),
        )
        .await;
    assert_eq!(b["delivered_to"], 1);
    assert_eq!(next_text(&mut client).await, "hi");
    let sent = json!({"connection_id": id, "message": {"n": 1}});
    c.ok(Method::POST, &op("send"), "chat", "", Some(sent))
        .await;
    c.ok(
        Method::POST,
        &op("receive"),
        "chat",
        "",
        Some(json!({"message": "in"})),
    )
    .await;
    c.ok(Method::GET, &op("series"), "chat", "?env=live", None)
        .await;
    c.ok(
        Method::POST,
        &op("test-connection"),
        "chat",
        "?env=live",
        Some(json!({})),
    )
    .await;
    let close = json!({"connection_id": id, "code": 4000, "reason": "done"});
    c.ok(Method::POST, &op("close"), "chat", "", Some(close))
        .await;
    c.ok(Method::GET, &op("activity"), "chat", "?type=ws.", None)
        .await;
    // A manifest.
    c.ok(Method::GET, &op("promote"), "shop", "?to=demo", None)
        .await;
    c.ok(
        Method::POST,
        &op("promote"),
        "shop",
        "",
        Some(json!({"to": "demo", "message": "m"})),
    )
    .await;
    c.ok(Method::GET, &op("environments"), "shop", "", None)
        .await;
    c.ok(Method::GET, &op("snapshots"), "shop", "?env=demo", None)
        .await;
    // An api-token.
    c.ok(Method::GET, &op("tokens"), "ci", "", None).await;
    c.ok(
        Method::POST,
        &op("rotate"),
        "ci",
        "",
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    c.ok(Method::POST, &op("revoke"), "ci", "", None).await;
    // Bundles into a circle: the same elements, skipped.
    let (_, exported) = app.get("/api/acme/ops/export/bundle").await;
    let elements: Vec<Value> = exported["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"bundle_base64": e["bundle_base64"], "slug": e["slug"]}))
        .collect();
    c.ok(
        Method::POST,
        &circle_op("import/bundle"),
        "",
        "",
        Some(json!({"elements": elements})),
    )
    .await;
    // A webhook: its test, its deliveries, a redelivery and an unknown id.
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
        "hooks",
        crate::fixtures::spec("webhook-local"),
    )
    .await;
    let sent = c
        .ok(Method::POST, &op("test"), "hooks", "", Some(json!({})))
        .await;
    c.ok(Method::GET, &op("deliveries"), "hooks", "?limit=5", None)
        .await;
    c.ok(
        Method::POST,
        &op("redeliver"),
        "hooks",
        "",
        Some(json!({"id": sent["id"]})),
    )
    .await;
    let (s, _) = c
        .call(
            Method::POST,
            &op("redeliver"),
            "hooks",
            "",
            Some(json!({"id": "nope"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // State changes and the end.
    c.ok(
        Method::POST,
        &op("disable"),
        "chat",
        "",
        Some(json!({"reason": "maintenance"})),
    )
    .await;
    c.ok(Method::POST, &op("enable"), "chat", "", None).await;
    c.ok(Method::DELETE, &op("delete"), "ci", "?confirm=true", None)
        .await;
    // Errors answer the Error envelope the document names.
    let (s, _) = c
        .call(
            Method::POST,
            &op("broadcast"),
            "chat",
            "",
            Some(json!({"nope": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A field the document does not list is refused, and changes nothing.
    let before = app.get("/api/acme/chat/ops/source/promotions").await.1;
    let bad = json!({"from": "draft", "to": "demo", "force": true});
    let (s, e) = c
        .call(Method::POST, &op("source/promote"), "chat", "", Some(bad))
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_BODY"))
    );
    assert_eq!(
        app.get("/api/acme/chat/ops/source/promotions").await.1,
        before
    );
    let (s, _) = c.call(Method::GET, &op("get"), "ghost", "", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = c
        .call(Method::DELETE, &op("delete"), "chat", "", None)
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, _) = c.call(Method::POST, &op("accept"), "chat", "", None).await;
    assert_eq!(s.as_u16(), 426);
    assert!(
        c.wrong.is_empty(),
        "answers that disagree with the document:\n{}",
        c.wrong.join("\n")
    );
    assert!(c.checked.len() > 60, "{} answers checked", c.checked.len());
}
