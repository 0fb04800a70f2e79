//! The console's second round (issue 25) in a real headless Chromium,
//! against the real server: the Live tab's charts of the last 15 minutes
//! and the element's own health, the circle page's sparklines, a removal
//! that asks first (an attachment, an element), a revoked token shown as
//! revoked everywhere, and every tab of every kind of element opened
//! without one failed request in the browser's log.

use crate::browser::{
    chromedriver, click, console_errors, session, shot, sign_in, wait_el, wait_gone, wait_path,
    wait_text, WAIT,
};
use crate::helpers::{spawn_app, TestApp};
use crate::ws_client::connect;
use futures::SinkExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use thirtyfour::prelude::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn pictures_removals_and_revoked_tokens_in_a_real_browser() {
    let app = spawn_app().await;
    setup(&app).await;
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            walk(&app, &d).await;
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}

/// chat (released), a project shop with chat as its member and a
/// rate-limit cascading to its members, a spare rate-limit to delete, a
/// variable and a revoked api-token.
async fn setup(app: &TestApp) {
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "chat",
        json!({"rooms": {"enabled": true}, "on_message": "echo"}),
    )
    .await;
    app.release("acme", "chat").await;
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    app.element(
        "acme",
        "rate-limit",
        "slow",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/shop/ops/compose",
            json!({"add": [{"ref": "slow", "cascade_policy": "children"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    app.element(
        "acme",
        "rate-limit",
        "spare",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    app.element("acme", "variable", "greeting", json!({"value": "hi"}))
        .await;
    app.element("acme", "api-token", "ci-bot", json!({})).await;
    let (s, v) = app.post("/api/acme/ci-bot/ops/revoke", json!({})).await;
    assert_eq!(s, 200, "{v}");
}

async fn walk(app: &TestApp, d: &WebDriver) {
    sign_in(d, &app.base, &app.admin, "platform · admin").await;
    live_charts_and_health(app, d).await;
    removing_an_attachment_asks_first(app, d).await;
    deleting_an_element_asks_first(app, d).await;
    a_revoked_token_shows_as_revoked(app, d).await;
    every_tab_without_a_failed_request(app, d).await;
}

/// The value of `attr` on the first `css`, once it satisfies `ok`.
async fn wait_attr(d: &WebDriver, css: &str, attr: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let mut seen = None;
        if let Ok(el) = d.find(By::Css(css)).await {
            seen = el.attr(attr).await.ok().flatten();
            if let Some(v) = seen.as_deref().filter(|v| ok(v)) {
                return v.to_string();
            }
        }
        assert!(start.elapsed() < WAIT, "{css} [{attr}] stayed {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client and its messages show on the Live tab's charts within a poll;
/// a caller's mistakes count as client errors and leave health ok.
async fn live_charts_and_health(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme/chat/live", app.base))
        .await
        .unwrap();
    wait_text(d, "#stream-state", "live").await;
    wait_attr(d, "#chart-connections", "data-latest", |v| v == "0").await;
    let mut client = connect(app, "/ws/acme/ws?rooms=lobby").await;
    for i in 0..20 {
        client
            .send(Message::text(format!("hello {i}")))
            .await
            .unwrap();
    }
    // A caller's mistakes: a connection that is not there, twice.
    for _ in 0..2 {
        let (s, v) = app
            .post(
                "/api/acme/chat/ops/send",
                json!({"connection_id": "nosuch", "message": "x"}),
            )
            .await;
        assert_eq!(s, 404, "{v}");
    }
    wait_attr(d, "#chart-connections", "data-latest", |v| v == "1").await;
    let peak = wait_attr(d, "#chart-in", "data-peak", |v| {
        v.parse::<f64>().unwrap_or(0.0) > 0.0
    })
    .await;
    // The drawn line is there, from the numbers on the figure.
    let line = wait_el(d, "#chart-in path.line").await;
    let path = line.attr("d").await.unwrap().unwrap_or_default();
    assert!(path.starts_with('M') && path.contains('L'), "{path}");
    let values = wait_el(d, "#chart-connections")
        .await
        .attr("data-values")
        .await
        .unwrap()
        .unwrap();
    assert!(values.ends_with('1'), "{values}");
    // And the same numbers are what series answers.
    let (_, series) = app.get("/api/acme/chat/ops/series").await;
    assert_eq!(series["current"]["connections"], 1, "{series}");
    assert!(peak.parse::<f64>().unwrap() > 0.0);
    wait_text(d, "[data-metric='client_errors'] b", "2").await;
    wait_attr(d, "#health", "data-health", |v| v == "ok").await;
    wait_text(d, "[data-metric='errors'] b", "0").await;
    wait_text(d, "#charts-note", "One sample every 10 s").await;
    let (_, stats) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(
        stats["health"], "ok",
        "callers' mistakes are not the element's: {stats}"
    );
    assert_eq!(stats["client_errors"], 2, "{stats}");
    // Two samples later (the ticker takes one every 10 s), the charts
    // draw a line through them; messages keep coming meanwhile.
    let start = Instant::now();
    // A second client joins after the first sample.
    let mut i = 0u64;
    let mut second = None;
    loop {
        let (_, v) = app.get("/api/acme/chat/ops/series").await;
        let n = v["samples"].as_array().unwrap().len();
        if n >= 2 {
            break;
        }
        if n == 1 && second.is_none() {
            second = Some(connect(app, "/ws/acme/ws?rooms=lobby").await);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no samples: {v}");
        for _ in 0..(i % 5 + 1) {
            client
                .send(Message::text(format!("more {i}")))
                .await
                .unwrap();
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_attr(d, "#chart-in", "data-values", |v| v.split(',').count() >= 3).await;
    wait_attr(d, "#chart-connections", "data-latest", |v| v == "2").await;
    shot(d, "40-live-charts").await;
    // The circle page: chat's connections as a sparkline, ending at 2.
    click(d, "nav.crumbs a[href='/console/acme']").await;
    wait_path(d, "/console/acme").await;
    let spark = "#elements tr[data-slug='chat'] svg.sparkline";
    wait_attr(d, spark, "data-values", |v| {
        v.split(',').count() >= 3 && v.ends_with('2')
    })
    .await;
    let label = wait_el(d, spark)
        .await
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap();
    assert!(label.contains("last 15 minutes"), "{label}");
    shot(d, "41-circle-sparklines").await;
    client.close(None).await.unwrap();
    second.unwrap().close(None).await.unwrap();
    wait_attr(d, spark, "data-values", |v| v.ends_with('0')).await;
}

fn attached(v: &Value) -> Vec<String> {
    v["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"]["slug"].as_str().unwrap().to_string())
        .collect()
}

/// Remove opens a dialog naming the modifier, the element and the
/// members it cascades to; cancelled, nothing changes; confirmed, it goes.
async fn removing_an_attachment_asks_first(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme/shop/composition", app.base))
        .await
        .unwrap();
    wait_text(d, "#attachments td", "slow").await;
    click(d, "#attachments button[data-remove]").await;
    let dialog = wait_text(
        d,
        "#confirm-dialog",
        "slow (rate-limit) stops applying to shop",
    )
    .await;
    let text = dialog.text().await.unwrap();
    assert!(text.contains("children: chat"), "{text}");
    shot(d, "42-remove-dialog").await;
    click(d, "#confirm-cancel").await;
    let (_, v) = app.get("/api/acme/shop/ops/attachments").await;
    assert_eq!(attached(&v), ["slow"], "a cancelled dialog removed: {v}");
    let (_, v) = app.get("/api/acme/chat/ops/attachments").await;
    assert_eq!(attached(&v), ["slow"], "still cascading to the member: {v}");
    wait_gone(d, "#confirm-dialog").await;
    click(d, "#attachments button[data-remove]").await;
    wait_el(d, "#confirm-dialog").await;
    click(d, "#confirm-ok").await;
    wait_text(d, "#tab .notice", "Removed slow").await;
    let (_, v) = app.get("/api/acme/shop/ops/attachments").await;
    assert!(attached(&v).is_empty(), "{v}");
    let (_, v) = app.get("/api/acme/chat/ops/attachments").await;
    assert!(attached(&v).is_empty(), "{v}");
}

/// Delete asks too; cancelled, the element stays; confirmed, it is
/// deleted and the page goes back to the circle.
async fn deleting_an_element_asks_first(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme/spare", app.base))
        .await
        .unwrap();
    click(d, "#delete").await;
    wait_text(d, "#confirm-dialog", "spare (rate-limit) is deleted").await;
    click(d, "#confirm-cancel").await;
    let (_, v) = app.get("/api/acme/spare").await;
    assert_eq!(v["state"], "ready", "{v}");
    click(d, "#delete").await;
    wait_el(d, "#confirm-dialog").await;
    click(d, "#confirm-ok").await;
    wait_path(d, "/console/acme").await;
    wait_el(d, "#elements tr[data-slug='chat']").await;
    assert!(d
        .find(By::Css("#elements tr[data-slug='spare']"))
        .await
        .is_err());
    let (_, v) = app.get("/api/acme/spare").await;
    assert_eq!(v["state"], "deleted", "{v}");
}

/// The circle's list, the element's header and its Secrets tab all say
/// the token is revoked; Rotate is not offered.
async fn a_revoked_token_shows_as_revoked(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme", app.base)).await.unwrap();
    wait_text(
        d,
        "#elements tr[data-slug='ci-bot'] .token",
        "token revoked",
    )
    .await;
    click(d, "#elements a[href='/console/acme/ci-bot']").await;
    wait_text(d, "#token-status", "token revoked").await;
    click(d, "#tab-secrets").await;
    wait_text(d, "#token-whole", "revoked").await;
    wait_text(d, "#secrets tr[data-status='revoked']", "revoked").await;
    assert!(!wait_el(d, "#rotate").await.is_enabled().await.unwrap());
    shot(d, "43-token-revoked").await;
}

/// Waits until the tab shown is drawn (no "Loading…" left in it).
async fn settled(d: &WebDriver, tab: &str) {
    let start = Instant::now();
    loop {
        let done = d
            .execute(
                "const a = document.querySelector('nav.tabs a[aria-selected=true]'); \
                 const t = document.querySelector('#tab'); \
                 return !!a && a.id === arguments[0] && !!t && !t.textContent.includes('Loading…');",
                vec![json!(format!("tab-{tab}"))],
            )
            .await
            .unwrap()
            .convert::<bool>()
            .unwrap_or(false);
        if done {
            // Give a tab's second round of reads time to fail, if one would.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(start.elapsed() < WAIT, "tab {tab} never drew");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every tab each kind of element offers, opened in turn: no request
/// fails (a 404 from an op the type lacks would show in the log).
async fn every_tab_without_a_failed_request(app: &TestApp, d: &WebDriver) {
    console_errors(d).await; // what came before is the other steps'
    for slug in ["chat", "shop", "slow", "greeting", "ci-bot"] {
        d.goto(format!("{}/console/acme/{slug}", app.base))
            .await
            .unwrap();
        wait_el(d, "#element-version").await;
        let mut tabs = Vec::new();
        for a in d.find_all(By::Css("nav.tabs a")).await.unwrap() {
            tabs.push(a.attr("id").await.unwrap().unwrap().replace("tab-", ""));
        }
        assert!(tabs.len() >= 5, "{slug}: {tabs:?}");
        for tab in &tabs {
            click(d, &format!("#tab-{tab}")).await;
            settled(d, tab).await;
        }
        let errors = console_errors(d).await;
        assert!(errors.is_empty(), "{slug}'s tabs {tabs:?}: {errors:#?}");
    }
    d.goto(format!("{}/console/acme", app.base)).await.unwrap();
    wait_el(d, "#elements tr[data-slug='chat'] svg.sparkline").await;
    d.goto(format!("{}/console/", app.base)).await.unwrap();
    wait_text(d, "main table a", "acme").await;
    let errors = console_errors(d).await;
    assert!(errors.is_empty(), "circle pages: {errors:#?}");
}
