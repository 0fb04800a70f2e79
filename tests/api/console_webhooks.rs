//! The console shows webhooks and hooks (issue 23, item 6): a webhook's
//! Deliveries tab lists its deliveries with their status, Redeliver sends
//! a failed one again, Send test writes one; a viewer has neither button;
//! a websocket's Properties show its backend hooks as written and the
//! webhooks that take its events. In a real headless Chromium, against the
//! real server and a real receiver on 127.0.0.1 that answers 500, then
//! 204.

use crate::browser::{chromedriver, click, console_errors, session, shot, wait_path, wait_text};
use crate::helpers::{spawn_app, TestApp};
use crate::webhooks::{receiver_on, update_chat, whsec, Receiver, FAILING, UP};
use elementd::model::Role;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thirtyfour::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_deliveries_and_hooks() {
    let app = spawn_app().await;
    let mode = Arc::new(AtomicU8::new(FAILING));
    let r = receiver_on(0, mode.clone(), Default::default()).await;
    set_up(&app, &r).await;
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            sign_in(&app, &d, &app.admin, "platform · admin").await;
            deliveries_and_redeliver(&app, &d, &r, &mode).await;
            hooks_in_properties(&app, &d, &r).await;
            a_viewer_reads_but_does_not_act(&app, &d).await;
            let errors = console_errors(&d).await;
            assert!(errors.is_empty(), "the browser saw errors: {errors:?}");
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}

/// Circle acme; the signing key as the sensitive variable `hook-key`;
/// the backend's url as the variable `backend`; the websocket `chat`
/// whose hooks use both; a websocket `plain` without hooks; and the
/// webhook `hooks`, attached to chat, that takes element.updated and
/// gives up after two attempts.
async fn set_up(app: &TestApp, r: &Receiver) {
    app.circle("acme").await;
    let key = json!({"value": whsec(), "sensitive": true});
    app.element("acme", "variable", "hook-key", key).await;
    app.element("acme", "variable", "backend", json!({"value": r.url()}))
        .await;
    let hooks = json!({"url": "{{ vars.backend }}", "secret": "{{ vars.hook-key }}",
                       "connect": true, "timeout_ms": 1500});
    let chat = json!({"path": "/chat", "hooks": hooks, "on_message": "hook"});
    app.element("acme", "websocket", "chat", chat).await;
    app.element("acme", "websocket", "plain", json!({"path": "/plain"}))
        .await;
    let webhook = crate::fixtures::spec_with(
        "webhook-local",
        json!({"url": r.url(), "events": ["element.updated"], "max_attempts": 2, "max_backoff_s": 1}),
    );
    app.element("acme", "webhook", "hooks", webhook).await;
    let add = json!({"add": [{"ref": "hooks"}]});
    let (s, v) = app.post("/api/acme/chat/ops/compose", add).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn sign_in(app: &TestApp, d: &WebDriver, token: &str, who: &str) {
    crate::browser::sign_in(d, &app.base, token, who).await;
}

/// The newest delivery's id, once there is one more than `seen`.
async fn newest_delivery(app: &TestApp, seen: usize) -> String {
    for _ in 0..200 {
        let (s, v) = app.get("/api/acme/hooks/ops/deliveries").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let rows = v["deliveries"].as_array().unwrap();
        if rows.len() > seen {
            return rows[0]["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new delivery");
}

/// A cell of one delivery's row, read afresh (the table is drawn again
/// on each read).
fn cell(id: &str, class: &str) -> String {
    format!("#deliveries tr[data-delivery='{id}'] td.{class}")
}

async fn deliveries_and_redeliver(app: &TestApp, d: &WebDriver, r: &Receiver, mode: &AtomicU8) {
    // The receiver answers 500: the change's delivery fails after two
    // attempts, and the page, open all along, follows it there.
    update_chat(app, 1).await;
    let failed = newest_delivery(app, 0).await;
    d.goto(format!("{}/console/acme/hooks", app.base))
        .await
        .unwrap();
    click(d, "#tab-deliveries").await;
    wait_path(d, "/console/acme/hooks/deliveries").await;
    wait_text(
        d,
        "#webhook-target",
        "POSTs element.updated to http://127.0.0.1:",
    )
    .await;
    wait_text(d, &cell(&failed, "type"), "element.updated").await;
    wait_text(d, &cell(&failed, "status"), "failed").await;
    wait_text(d, &cell(&failed, "attempts"), "2").await;
    wait_text(d, &cell(&failed, "last-status"), "500").await;
    wait_text(d, &cell(&failed, "next"), "—").await;
    wait_text(d, "#dropped", "0 dropped").await;
    let badge = wait_text(d, &format!("{} .badge", cell(&failed, "status")), "failed").await;
    assert_eq!(
        badge.attr("data-kind").await.unwrap().as_deref(),
        Some("error")
    );

    // The receiver is up: the next change is delivered; Refresh shows it
    // next to the failed one.
    mode.store(UP, Ordering::SeqCst);
    update_chat(app, 2).await;
    let delivered = newest_delivery(app, 1).await;
    assert_ne!(delivered, failed);
    r.wait_for("element.updated", 1).await;
    click(d, "#reload-deliveries").await;
    wait_text(d, &cell(&delivered, "status"), "delivered").await;
    wait_text(d, &cell(&delivered, "attempts"), "1").await;
    wait_text(d, &cell(&delivered, "last-status"), "204").await;
    wait_text(d, &cell(&failed, "status"), "failed").await;
    // Newest first.
    wait_text(d, "#deliveries tbody tr:first-child td.id", &delivered).await;
    wait_text(
        d,
        "#delivery-summary",
        "2 shown (newest first): 0 pending, 1 delivered, 1 failed",
    )
    .await;
    shot(d, "30-webhook-deliveries").await;

    // Redeliver the failed one: pending again, then delivered, with the
    // same id.
    click(d, &format!("button[data-redeliver='{failed}']")).await;
    wait_text(
        d,
        "#tab .notice",
        &format!("Redelivering {failed}: pending."),
    )
    .await;
    wait_text(d, &cell(&failed, "status"), "delivered").await;
    wait_text(d, &cell(&failed, "attempts"), "1").await;
    wait_text(d, &cell(&failed, "last-status"), "204").await;
    let got = r.wait_for("element.updated", 2).await;
    assert!(
        got.iter().any(|g| g.id() == failed),
        "the receiver got {failed}"
    );
    shot(d, "31-webhook-redelivered").await;

    // Send test: a webhook.test event, delivered to this webhook.
    click(d, "#send-test").await;
    wait_text(d, "#tab .notice", "Test event").await;
    wait_text(
        d,
        "#deliveries tr[data-status='delivered'] td.type",
        "webhook.test",
    )
    .await;
    r.wait_for("webhook.test", 1).await;
    wait_text(d, "#delivery-summary", "3 shown").await;
}

/// chat's Properties: its hooks as written (the url a reference, never
/// the filled value), connect on, the timeout set, defaults named, the
/// message hook, and the webhook linked to its deliveries. plain has no
/// hooks.
async fn hooks_in_properties(app: &TestApp, d: &WebDriver, r: &Receiver) {
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    let row = |k: &str| format!("#hooks tr[data-hook='{k}'] td");
    wait_text(d, &row("url"), "{{ vars.backend }}").await;
    wait_text(d, &row("secret"), "{{ vars.hook-key }}").await;
    wait_text(d, &row("connect"), "on").await;
    wait_text(d, &row("timeout_ms"), "1500").await;
    wait_text(d, &row("max_in_flight"), "256 (default)").await;
    wait_text(d, &row("queue_per_connection"), "32 (default)").await;
    wait_text(d, &row("on_message"), "hook").await;
    wait_text(d, "#hook-webhooks", "Webhooks: hooks").await;
    let hooks = wait_text(d, "#hooks", "Webhooks: hooks")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !hooks.contains(&r.url()),
        "the url is shown filled: {hooks}"
    );
    // The form holds it as written too.
    let input = wait_text(d, "#f-spec-hooks-url", "").await;
    assert_eq!(
        input.prop("value").await.unwrap().as_deref(),
        Some("{{ vars.backend }}")
    );
    let page = d.source().await.unwrap();
    assert!(!page.contains(&r.url()), "a filled url in the page");
    assert!(!page.contains(&whsec()), "the key in the page");
    shot(d, "32-websocket-hooks").await;

    // The webhook's link leads to its deliveries.
    click(d, "#hook-webhooks a").await;
    wait_path(d, "/console/acme/hooks/deliveries").await;
    wait_text(d, "#delivery-summary", "shown").await;

    d.goto(format!("{}/console/acme/plain", app.base))
        .await
        .unwrap();
    wait_text(d, "#no-hooks", "No backend hooks").await;
    wait_text(d, "#hooks tr[data-hook='on_message'] td", "emit").await;
    wait_text(d, "#hook-webhooks", "none").await;
    let url = d
        .find_all(By::Css("#hooks tr[data-hook='url']"))
        .await
        .unwrap();
    assert!(url.is_empty(), "plain shows a hooks url");
}

/// A viewer sees the deliveries and the hooks, and no Redeliver or Send
/// test: the page says they need the member role.
async fn a_viewer_reads_but_does_not_act(app: &TestApp, d: &WebDriver) {
    let viewer = app.token("acme", Role::Viewer).await;
    sign_in(app, d, &viewer, "acme · viewer").await;
    d.goto(format!("{}/console/acme/hooks/deliveries", app.base))
        .await
        .unwrap();
    wait_text(d, "#read-only-note", "need the member role").await;
    wait_text(
        d,
        "#deliveries tr[data-status='delivered'] td.type",
        "element.updated",
    )
    .await;
    // (The API refuses a viewer's redeliver too: webhook_rules.rs.)
    for css in ["button[data-redeliver]", "#send-test"] {
        let found = d.find_all(By::Css(css)).await.unwrap();
        assert!(found.is_empty(), "a viewer sees {css}");
    }
    shot(d, "33-webhook-viewer").await;
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    wait_text(d, "#hooks tr[data-hook='url'] td", "{{ vars.backend }}").await;
}
