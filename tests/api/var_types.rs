//! Typed variables with per-environment values (issue 24 item 1): type,
//! default and validation rules checked on every write, a value per
//! environment (sealed when sensitive), the links of each environment
//! filled with its own value, and a change relinking only the
//! environments it changes.

use crate::helpers::*;
use crate::ws_client::{eventually, WAIT};
use crate::ws_vars::peer;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A local upstream that accepts every link and reports the path each
/// one asked for.
// tungstenite fixes the callback's error type (a whole HTTP response).
#[allow(clippy::result_large_err)]
pub async fn upstream() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let seen =
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                        let _ = tx.send(req.uri().path().to_string());
                        Ok(resp)
                    };
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, seen).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    (port, rx)
}

/// The driven link of `acme/feed` in one environment.
async fn link_in(app: &TestApp, env: &str) -> Value {
    let (_, v) = app
        .get(&format!("/api/acme/feed/ops/connections?env={env}"))
        .await;
    v.as_array()
        .and_then(|a| a.iter().find(|c| c["kind"] == "link").cloned())
        .unwrap_or(Value::Null)
}

async fn open_in(app: &TestApp, env: &str) -> Value {
    eventually(&format!("the {env} link opens"), || async {
        link_in(app, env).await["state"] == "open"
    })
    .await;
    link_in(app, env).await
}

/// The paths the upstream was asked for until it goes quiet for `quiet`.
pub async fn paths(rx: &mut mpsc::UnboundedReceiver<String>, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(quiet, rx.recv()).await {
        out.push(p);
    }
    out
}

pub async fn create_var(app: &TestApp, slug: &str, spec: Value) -> (reqwest::StatusCode, Value) {
    app.post(
        "/api/acme/ops/create",
        json!({"element_type": "variable", "slug": slug, "spec": spec}),
    )
    .await
}

/// Asserts a 422 `VARIABLE_INVALID` whose message says `says`.
#[track_caller]
pub fn invalid(got: &(reqwest::StatusCode, Value), says: &str) {
    assert_error(got, 422, "VARIABLE_INVALID");
    let msg = got.1["error"]["message"].as_str().unwrap();
    assert!(msg.contains(says), "{says:?} not in {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_runs_its_own_value_and_a_change_relinks_only_it() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let (port, mut rx) = upstream().await;
    let at = |p: &str| format!("ws://127.0.0.1:{port}/{p}");
    app.element(
        "acme",
        "variable",
        "upstream",
        json!({"value": at("base"),
               "environments": {"demo": {"value": at("demo")}, "live": {"value": at("live")}}}),
    )
    .await;
    let made = app
        .element(
            "acme",
            "websocket",
            "feed",
            json!({"url": "{{ vars.upstream }}"}),
        )
        .await;
    assert_eq!(made["spec"]["url"], "{{ vars.upstream }}", "{made}");
    app.release("acme", "feed").await;
    for env in ["draft", "demo", "live"] {
        open_in(&app, env).await;
    }
    let mut seen = paths(&mut rx, Duration::from_millis(500)).await;
    seen.sort();
    // Draft has no value of its own: it runs `value`.
    assert_eq!(seen, ["/base", "/demo", "/live"]);
    let live = link_in(&app, "live").await;
    let draft = link_in(&app, "draft").await;

    // Only demo's value changes: only demo's link connects again.
    let (s, v) = app
        .patch(
            "/api/acme/upstream/ops/update",
            json!({"spec": {"environments": {"demo": {"value": at("demo-2")}}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(
        v["spec"]["environments"]["live"]["value"],
        at("live"),
        "{v}"
    );
    let demo = open_in(&app, "demo").await;
    let seen = paths(&mut rx, Duration::from_millis(1500)).await;
    assert_eq!(seen, ["/demo-2"], "only demo reconnected");
    assert!(demo["connected_at"].is_string(), "{demo}");
    assert_eq!(
        link_in(&app, "live").await["connected_at"],
        live["connected_at"]
    );
    assert_eq!(
        link_in(&app, "draft").await["connected_at"],
        draft["connected_at"]
    );

    // A change that leaves every environment's value as it was (a rule
    // that still holds) reconnects nothing.
    let (s, v) = app
        .patch(
            "/api/acme/upstream/ops/update",
            json!({"spec": {"validation": {"max_length": 200}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(paths(&mut rx, Duration::from_millis(1000)).await.is_empty());

    // Dropping demo's own value falls back to `value`; the default comes
    // last, where no value is given.
    let (s, v) = app
        .patch(
            "/api/acme/upstream/ops/update",
            json!({"spec": {"environments": {"demo": null}, "value": null, "default": at("fallback")}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let mut seen = paths(&mut rx, Duration::from_millis(1500)).await;
    seen.sort();
    assert_eq!(seen, ["/fallback", "/fallback"], "draft and demo, not live");
    assert_eq!(
        link_in(&app, "live").await["connected_at"],
        live["connected_at"]
    );
}

const DEMO: &str = "s3cret-demo-5d1a";
const LIVE: &str = "s3cret-live-0c7e";
const BASE: &str = "s3cret-base-aa42";
const DEFAULT: &str = "s3cret-default-19be";

/// Circle acme's sensitive variable `key`: a value, a default and a value
/// of its own in demo and live; returns the create's answer.
async fn sealed_key(app: &TestApp) -> Value {
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "key",
        json!({"sensitive": true, "value": BASE, "default": DEFAULT,
               "validation": {"pattern": "^s3cret-"},
               "environments": {"demo": {"value": DEMO}, "live": {"value": LIVE}}}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_environment_values_are_sealed_and_never_shown() {
    let app = spawn_app().await;
    let expected = Arc::new(Mutex::new(DEMO.to_string()));
    let (port, mut rx) = peer(expected.clone()).await;
    let made = sealed_key(&app).await;
    for at in [
        "/value",
        "/default",
        "/environments/demo/value",
        "/environments/live/value",
    ] {
        assert_eq!(
            made["spec"].pointer(at),
            Some(&json!("[redacted]")),
            "{at}: {made}"
        );
    }
    // At rest every one is sealed.
    let row = sqlx::query("SELECT id, spec FROM elements WHERE slug = 'key'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let (id, stored): (String, String) = (row.get("id"), row.get("spec"));
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let secrets = elementd::secrets::Secrets::load(&app.config.data_dir).unwrap();
    for (at, want) in [
        ("/value", BASE),
        ("/default", DEFAULT),
        ("/environments/demo/value", DEMO),
        ("/environments/live/value", LIVE),
    ] {
        let sealed = stored.pointer(at).unwrap();
        assert!(sealed.get("$sealed").is_some(), "{at}: {stored}");
        assert_eq!(secrets.open(sealed, &id), Some(json!(want)), "{at}");
    }
    // A sensitive value that breaks a rule is refused without being quoted.
    let r = app
        .patch(
            "/api/acme/key/ops/update",
            json!({"spec": {"environments": {"demo": {"value": "leaky-4f9b"}}}}),
        )
        .await;
    invalid(&r, "environments.demo.value does not match pattern");
    assert!(!r.1.to_string().contains("leaky-4f9b"), "{}", r.1);
    // Sending the placeholders back keeps every value.
    let (_, got) = app.get("/api/acme/key").await;
    let (s, v) = app
        .patch(
            "/api/acme/key/ops/update",
            json!({"spec": got["spec"], "name": "Key"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // The demo hub's link sends demo's value; draft's sends `value`.
    let feed = json!({"url": format!("ws://127.0.0.1:{port}/feed"),
                      "headers": {"Authorization": "Bearer {{ vars.key }}"}});
    app.element("acme", "websocket", "feed", feed).await;
    // A new element runs in every environment at once.
    let mut want = vec![
        format!("Bearer {BASE}"),
        format!("Bearer {DEMO}"),
        format!("Bearer {LIVE}"),
    ];
    tokio::time::timeout(WAIT, async {
        while let Some(got) = rx.recv().await {
            want.retain(|w| *w != got);
            if want.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("each environment's link offers its own value");
    let demo = open_in(&app, "demo").await;
    assert_eq!(demo["state"], "open");
    let draft = link_in(&app, "draft").await;
    assert_ne!(
        draft["state"], "open",
        "the peer wants demo's value: {draft}"
    );
    // Nothing shows a value.
    let mut seen = vec![
        made.to_string(),
        got.to_string(),
        v.to_string(),
        r.1.to_string(),
    ];
    for path in [
        "/api/acme/key",
        "/api/acme/key/ops/version?history=true",
        "/api/acme/key/ops/source?path=.triform/spec.yaml",
        "/api/acme/ops/export/bundle",
        "/api/acme/ops/list",
        "/api/acme/ops/activity?limit=500",
        "/api/acme/feed/ops/connections?env=draft",
        "/api/acme/feed/ops/connections?env=demo",
    ] {
        let (s, v) = app.get(path).await;
        assert_eq!(s.as_u16(), 200, "{path}: {v}");
        seen.push(v.to_string());
    }
    for row in sqlx::query("SELECT spec FROM element_versions")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
    {
        seen.push(row.get::<String, _>("spec"));
    }
    seen.push(captured_logs());
    for text in &seen {
        for secret in [BASE, DEFAULT, DEMO, LIVE, "leaky-4f9b"] {
            assert!(
                !text.contains(secret),
                "leak: {}",
                &text[..text.len().min(400)]
            );
        }
    }
}

/// The placeholder stands for a kept value: with none to keep, it is
/// refused, naming where it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_with_no_value_to_keep_is_refused() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let r = create_var(
        &app,
        "other",
        json!({"sensitive": true, "environments": {"demo": {"value": "[redacted]"}}}),
    )
    .await;
    assert_error(&r, 422, "REDACTED_VALUE");
    assert!(
        r.1.to_string().contains("spec.environments.demo.value"),
        "{}",
        r.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_sensitive_off_drops_every_sealed_value() {
    let app = spawn_app().await;
    sealed_key(&app).await;
    let (s, v) = app
        .patch(
            "/api/acme/key/ops/update",
            json!({"spec": {"sensitive": false, "validation": null}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(!v.to_string().contains("s3cret"), "{v}");
    assert!(v["spec"].get("value").is_none(), "{v}");
    assert!(
        v["spec"]["environments"]["demo"].get("value").is_none(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_url_reference_is_checked_once_filled() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "up",
        json!({"value": "ws://127.0.0.1:9/x", "environments": {"live": {"value": "https://example.com/"}}}),
    )
    .await;
    // At write: live's value is no ws:// URL.
    let r = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "feed", "spec": {"url": "{{ vars.up }}"}}),
        )
        .await;
    assert_error(&r, 422, "SPEC_INVALID");
    let msg = r.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("live") && msg.contains("not a ws:// or wss:// URL"),
        "{msg}"
    );
    // Two references, or words around one, are no whole URL.
    for url in ["{{ vars.up }}{{ vars.up }}", "x{{ vars.up }}"] {
        let r = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "websocket", "slug": "feed", "spec": {"url": url}}),
            )
            .await;
        assert_error(&r, 422, "SPEC_INVALID");
    }
    let (s, v) = app
        .patch(
            "/api/acme/up/ops/update",
            json!({"spec": {"environments": {"live": null}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    app.element("acme", "websocket", "feed", json!({"url": "{{ vars.up }}"}))
        .await;
    // A variable in use may not become a bad URL for a link that runs it.
    let before = app.state_of("acme", "up").await;
    let r = app
        .patch(
            "/api/acme/up/ops/update",
            json!({"spec": {"environments": {"draft": {"value": "not a url"}}}}),
        )
        .await;
    invalid(&r, "'feed'");
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("draft"),
        "{}",
        r.1
    );
    assert_eq!(app.state_of("acme", "up").await, before);
    // A bad value that reaches the link anyway (written behind the
    // server's back) is the link's last_error when it connects.
    let bad = json!({"value": "http://127.0.0.1:9/x", "sensitive": false, "type": "string"});
    sqlx::query("UPDATE elements SET spec = $1 WHERE slug = 'up'")
        .bind(bad.to_string())
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.caches_expire();
    let mut last = Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            last = link_in(&app, "draft").await;
            if last["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not a ws:// or wss:// URL"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the link says why: {last}");
    assert!(
        last["last_error"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:9/x"),
        "{last}"
    );
}

/// The key of end users' tokens is read per environment too: demo checks
/// tokens with demo's secret, and a new demo secret takes effect there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_users_tokens_are_checked_with_their_environments_secret() {
    use crate::ws_client::{connect, refused};
    use jsonwebtoken::{encode, EncodingKey, Header};
    const BASE: &str = "jwt-base-secret-81f0";
    const DEMO: &str = "jwt-demo-secret-4c2b";
    const DEMO_2: &str = "jwt-demo-secret-77ad";
    let token = |secret: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 120;
        encode(
            &Header::default(),
            &json!({"sub": "alice", "exp": exp}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "chat-jwt",
        json!({"value": BASE, "sensitive": true, "environments": {"demo": {"value": DEMO}}}),
    )
    .await;
    app.element(
        "acme",
        "websocket",
        "hs",
        json!({"path": "/hs", "auth": {"mode": "jwt",
               "jwt": {"algorithms": ["HS256"], "secret": "{{ vars.chat-jwt }}"}}}),
    )
    .await;
    let at = |env: &str, secret: &str| format!("/ws/acme/~{env}/hs?token={}", token(secret));
    let _draft = connect(&app, &at("draft", BASE)).await;
    let _demo = connect(&app, &at("demo", DEMO)).await;
    let (status, body) = refused(&app, &at("demo", BASE), None).await;
    assert_eq!(
        (status, &body["error"]["reason"]),
        (401, &json!("signature")),
        "{body}"
    );
    let (status, body) = refused(&app, &at("draft", DEMO), None).await;
    assert_eq!(
        (status, &body["error"]["reason"]),
        (401, &json!("signature")),
        "{body}"
    );
    // A new demo secret: demo takes it, draft keeps `value`.
    let (s, v) = app
        .patch(
            "/api/acme/chat-jwt/ops/update",
            json!({"spec": {"environments": {"demo": {"value": DEMO_2}}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let _demo = connect(&app, &at("demo", DEMO_2)).await;
    let (status, _) = refused(&app, &at("demo", DEMO), None).await;
    assert_eq!(status, 401);
    let _draft = connect(&app, &at("draft", BASE)).await;
}
