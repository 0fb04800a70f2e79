//! The web console in a real browser (headless Chromium over WebDriver),
//! against the real server: sign-in, the create form and its 422, edit,
//! diff and restore, promotion, the Live tab following a real WebSocket
//! client, a broadcast reaching it, the activity stream, a driven link, a
//! missing element, and no failed request in the browser's console. One
//! browser session walks through it all (about 20 s); screenshots go to
//! target/console-shots/. It runs on both backends like the rest.

use crate::browser::{
    chromedriver, click, console_errors, fill, session, shot, wait_count, wait_el, wait_path,
    wait_text,
};
use crate::helpers::{spawn_app, TestApp};
use crate::ws_client::{connect, WAIT};
use elementd::model::Role;
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use thirtyfour::prelude::*;
use tokio_tungstenite::tungstenite::Message;

const MAX: &str = "div.field[data-path='spec/connection/max_connections']";

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            walk_through(&app, &d).await;
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}

async fn walk_through(app: &TestApp, d: &WebDriver) {
    sign_in(app, d).await;
    create_with_a_422(app, d).await;
    edit_diff_restore(app, d).await;
    promote(app, d).await;
    live_and_broadcast(app, d).await;
    activity(app, d).await;
    readme_and_composition(app, d).await;
    a_second_websocket_gets_a_free_path(app, d).await;
    a_token_shows_its_secret_once(app, d).await;
    a_secret_survives_a_properties_save(app, d).await;
    a_driven_link_stands_apart(app, d).await;
    a_project_releases_its_members(app, d).await;
    a_missing_element_leads_back_to_its_circle(app, d).await;
    a_member_cannot_promote_to_live(app, d).await;
    nothing_failed_but_what_the_walk_provoked(app, d).await;
}

/// A refused token returns to sign-in with the server's message; a good
/// one shows the circles.
async fn sign_in(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/", app.base)).await.unwrap();
    wait_path(d, "/console/").await;
    // The tab's icon: linked from the page and served by the binary.
    let icon = d
        .execute_async(
            "const done = arguments[0]; const img = new Image(); \
             img.onload = () => done(img.naturalWidth); img.onerror = () => done(0); \
             img.src = document.querySelector('link[rel=icon]').href;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        icon.convert::<u32>().unwrap(),
        32,
        "the icon loads as an image"
    );
    fill(d, "#token", "edt_not_a_token").await;
    shot(d, "01-signin").await;
    click(d, "#signin").await;
    wait_text(d, "#signin-message", "invalid token").await;
    fill(d, "#token", &app.admin).await;
    click(d, "#signin").await;
    wait_text(d, "#whoami", "platform · admin").await;
    wait_text(d, "main table a", "acme").await;
    shot(d, "02-circles").await;
}

/// The create form comes from the websocket schema with its defaults; a
/// value the schema refuses is shown at its field; fixed, it creates.
async fn create_with_a_422(app: &TestApp, d: &WebDriver) {
    click(d, "main table a[href='/console/acme']").await;
    wait_path(d, "/console/acme").await;
    click(d, "#new-element").await;
    let path = wait_el(d, "#f-spec-path").await;
    assert_eq!(
        path.value().await.unwrap().as_deref(),
        Some("/ws"),
        "defaults filled"
    );
    fill(d, "#create-slug", "chat").await;
    click(d, "#f-spec-rooms-enabled").await;
    fill(d, "#f-spec-connection-max-connections", "-4").await;
    click(d, "#create-submit").await;
    wait_text(d, &format!("{MAX} .field-error"), "minimum of 1").await;
    wait_text(d, "#create-form .error", "SPEC_INVALID").await;
    shot(d, "03-create-422").await;
    let (s, _) = app.get("/api/acme/chat/ops/get").await;
    assert_eq!(s, 404, "a refused create leaves nothing");
    fill(d, "#f-spec-connection-max-connections", "50").await;
    click(d, "#create-submit").await;
    wait_path(d, "/console/acme/chat").await;
    wait_text(d, "#element-version", "v1").await;
    let (_, el) = app.get("/api/acme/chat/ops/get").await;
    assert_eq!(el["spec"]["rooms"]["enabled"], true);
    assert_eq!(el["spec"]["connection"]["max_connections"], 50);
}

/// An edit is a new version with its warnings; the diff shows the change;
/// restoring v1 writes it back as a new version.
async fn edit_diff_restore(app: &TestApp, d: &WebDriver) {
    fill(d, "#f-spec-connection-max-connections", "20000").await;
    click(d, "#save").await;
    wait_text(d, "#properties .notice", "Saved as version 2").await;
    wait_text(d, "#properties .warnings", "High max_connections").await;
    wait_text(d, "#element-version", "v2").await;
    shot(d, "04-properties").await;
    click(d, "#tab-versions").await;
    let row = wait_text(d, "#diff tr.changed", "spec.connection.max_connections").await;
    let text = row.text().await.unwrap();
    assert!(text.contains("50") && text.contains("20000"), "{text}");
    click(d, "button[data-restore='1']").await;
    wait_text(d, "button[data-restore='1']", "Confirm restore v1").await;
    click(d, "button[data-restore='1']").await;
    wait_text(d, "#tab .notice", "Restored v1 as version 4").await;
    wait_text(d, "#element-version", "v4").await;
    shot(d, "05-versions").await;
    let (_, el) = app.get("/api/acme/chat/ops/get").await;
    assert_eq!(el["version"], 4);
    assert_eq!(el["spec"]["connection"]["max_connections"], 50);
}

/// Promote draft → demo, then demo → live (an admin).
async fn promote(app: &TestApp, d: &WebDriver) {
    click(d, "#tab-source").await;
    wait_text(d, "#clone", "git clone http://token@").await;
    wait_text(d, "[data-link='draft-demo']", "ahead").await;
    // A release asks first: cancelled, nothing moves.
    let (_, before) = app.get("/api/acme/chat/ops/source/promotions").await;
    click(d, "#promote-demo").await;
    wait_text(d, "#release-dialog", "demo will run what draft runs now").await;
    click(d, "#cancel-promote").await;
    wait_text(d, "[data-link='draft-demo']", "ahead").await;
    let (_, after) = app.get("/api/acme/chat/ops/source/promotions").await;
    assert_eq!(before, after, "a cancelled dialog promoted");
    click(d, "#promote-demo").await;
    fill(d, "#release-message", "first demo").await;
    click(d, "#confirm-promote").await;
    wait_text(d, "#tab .notice", "demo now runs").await;
    click(d, "#promote-live").await;
    wait_text(d, "#release-dialog", "Production clients").await;
    fill(d, "#release-message", "launch").await;
    shot(d, "06-release-dialog").await;
    click(d, "#confirm-promote").await;
    wait_text(d, "#tab .notice", "live now runs").await;
    wait_text(d, "[data-link='demo-live']", "in sync").await;
    // The rows that run now say so and offer no rollback to themselves.
    let live_row = wait_text(d, "tr[data-env='live']", "launch").await;
    assert!(live_row.text().await.unwrap().contains("running"));
    assert!(live_row.find(By::Css("button")).await.is_err());
    shot(d, "06-source").await;
    let (_, p) = app.get("/api/acme/chat/ops/source/promotions").await;
    let messages: Vec<&str> = p["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["message"].as_str())
        .collect();
    assert_eq!(messages[..2], ["launch", "first demo"], "{p}");
    // Versions mark what demo and live run.
    click(d, "#tab-versions").await;
    let v4 = wait_text(d, "tr[data-version='4']", "live").await;
    assert!(v4.text().await.unwrap().contains("demo"));
    let v1 = wait_el(d, "tr[data-version='1']")
        .await
        .text()
        .await
        .unwrap();
    assert!(!v1.contains("live"), "{v1}");
    click(d, "#tab-source").await;
    wait_text(d, "[data-link='demo-live']", "in sync").await;
    let (_, b) = app.get("/api/acme/chat/ops/source/branches").await;
    assert!(
        b["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["in_sync"] == true),
        "{b}"
    );
}

/// A client connecting shows up without a reload; the broadcast box
/// reaches it.
async fn live_and_broadcast(app: &TestApp, d: &WebDriver) {
    click(d, "#tab-live").await;
    wait_text(d, "#connection-count", "0 connections").await;
    wait_text(d, "#stream-state", "live").await;
    let mut client = connect(app, "/ws/acme/ws?rooms=lobby").await;
    wait_text(d, "#connection-count", "1 connection").await;
    wait_text(d, "#connections td", "lobby").await;
    fill(d, "#broadcast-message", "hello from the console").await;
    click(d, "#broadcast").await;
    wait_text(d, "#broadcast-result", "Delivered to 1 of 1").await;
    assert_eq!(next_text(&mut client).await, "hello from the console");
    wait_text(d, "[data-metric='broadcast_count'] b", "1").await;
    fill(d, "#connections tr[data-connection] input", "just for you").await;
    click(d, "#connections button[data-send]").await;
    assert_eq!(next_text(&mut client).await, "just for you");
    shot(d, "07-live").await;
    // The circle's list counts live connections and follows them.
    click(d, "nav.crumbs a[href='/console/acme']").await;
    wait_text(d, "#elements tr[data-slug='chat'] td.conn", "1").await;
    shot(d, "11-elements").await;
    client.close(None).await.unwrap();
    wait_text(d, "#elements tr[data-slug='chat'] td.conn", "0").await;
    click(d, "#elements a[href='/console/acme/chat']").await;
    click(d, "#tab-live").await;
    wait_text(d, "#stream-state", "live").await;
    // Close from the console: the client gets the close frame.
    let mut client = connect(app, "/ws/acme/ws").await;
    click(d, "#connections button[data-close]").await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the close frame arrives");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1000));
    wait_text(d, "#connection-count", "0 connections").await;
}

/// The next text message a client gets (pings and pongs skipped).
async fn next_text(client: &mut crate::ws_client::Client) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("client stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a message arrives")
}

/// Op events arrive live; history filters by kind.
async fn activity(app: &TestApp, d: &WebDriver) {
    click(d, "#tab-activity").await;
    wait_el(d, "#activity-history tr[data-type='element.restored']").await;
    // An op from elsewhere shows up in the live table as it happens.
    let (s, _) = app
        .patch("/api/acme/chat/ops/update", json!({"name": "Chat room"}))
        .await;
    assert_eq!(s, 200);
    wait_el(d, "#activity-live tr[data-type='element.updated']").await;
    wait_text(d, "#activity-live tr[data-type='op.completed']", "update").await;
    // A long value with no spaces (a message as a client sent it) stays
    // within the page at 1280 px: cut short, whole in its title, wrapped.
    let long = "x".repeat(300);
    let (s, _) = app
        .post("/api/acme/chat/ops/receive", json!({"message": long}))
        .await;
    assert_eq!(s, 200);
    let cell = wait_el(
        d,
        "#activity-live tr[data-type='ws.message.received'] td.data",
    )
    .await;
    let title = cell.attr("title").await.unwrap().unwrap_or_default();
    assert!(
        title.contains(&long),
        "the whole value in the title: {title}"
    );
    choose_kind(d, "ws.").await;
    wait_el(d, "#activity-history tr[data-type='ws.message.received']").await;
    let widths: Vec<(String, i64, i64)> = d
        .execute(
            "const page = document.documentElement; \
             return [...document.querySelectorAll('#tab .events')] \
               .map((box) => [box.querySelector('tbody').id, \
                 box.querySelector('table').scrollWidth, box.clientWidth]) \
               .concat([['page', page.scrollWidth, page.clientWidth]]);",
            vec![],
        )
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert_eq!(widths.len(), 3, "{widths:?}");
    assert!(
        widths.iter().all(|(_, wide, room)| wide <= room),
        "a table wider than its box: {widths:?}"
    );
    shot(d, "12-activity-long").await;
    choose_kind(d, "element.").await;
    wait_el(d, "#activity-history tr[data-type='element.created']").await;
    let types: Vec<String> = {
        let mut out = Vec::new();
        for tr in d.find_all(By::Css("#activity-history tr")).await.unwrap() {
            out.push(tr.attr("data-type").await.unwrap().unwrap_or_default());
        }
        out
    };
    assert!(types.iter().all(|t| t.starts_with("element.")), "{types:?}");
    shot(d, "08-activity").await;
}

async fn choose_kind(d: &WebDriver, kind: &str) {
    let select = wait_el(d, "#activity-kind").await;
    d.execute(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))",
        vec![select.to_json().unwrap(), json!(kind)],
    )
    .await
    .unwrap();
}

async fn readme_and_composition(app: &TestApp, d: &WebDriver) {
    click(d, "#tab-readme").await;
    click(d, "#readme-edit").await;
    fill(
        d,
        "#readme-text",
        "# Chat\n\nA room for **everyone**. <script>bad()</script>",
    )
    .await;
    click(d, "#readme-save").await;
    wait_text(d, "#readme strong", "everyone").await;
    let html = wait_el(d, "#readme").await.inner_html().await.unwrap();
    assert!(!html.contains("<script"), "raw HTML stays text: {html}");
    shot(d, "09-readme").await;
    app.element(
        "acme",
        "rate-limit",
        "slow",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    click(d, "#tab-composition").await;
    fill(d, "#compose-ref", "slow").await;
    click(d, "#compose-add").await;
    wait_text(d, "#attachments td", "slow").await;
    wait_text(d, "#graph", "slow").await;
    // One held from the circle says so, links there and offers no Remove.
    app.element(
        "acme",
        "rate-limit",
        "circle-wide",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/ops/compose",
            json!({"add": [{"ref": "circle-wide", "cascade_policy": "descendants"}]}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    d.refresh().await.unwrap();
    click(d, "#tab-composition").await;
    let row = wait_text(d, "#attachments tr", "circle-wide").await;
    assert!(
        row.text().await.unwrap().contains("inherited from acme"),
        "{}",
        row.text().await.unwrap()
    );
    assert!(
        row.find(By::Css("button")).await.is_err(),
        "no Remove on an inherited row"
    );
    let to = row.find(By::Css(".inherited a")).await.unwrap();
    assert_eq!(
        to.attr("href").await.unwrap().as_deref(),
        Some("/console/acme")
    );
    // The element's own attachment keeps its Remove.
    let own = wait_text(d, "#attachments tr", "slow").await;
    assert!(own.find(By::Css("button[data-remove]")).await.is_ok());
    shot(d, "10-composition").await;
}

/// chat holds the default path: the form offers the next free one, says
/// why, and the circle takes it.
async fn a_second_websocket_gets_a_free_path(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme", app.base)).await.unwrap();
    click(d, "#new-element").await;
    wait_text(
        d,
        "#path-hint",
        "/ws is taken by chat in this circle; /ws-2 is free",
    )
    .await;
    let path = wait_el(d, "#f-spec-path").await;
    assert_eq!(path.value().await.unwrap().as_deref(), Some("/ws-2"));
    fill(d, "#create-slug", "chat-2").await;
    shot(d, "13-free-path").await;
    click(d, "#create-submit").await;
    wait_path(d, "/console/acme/chat-2").await;
    let (_, el) = app.get("/api/acme/chat-2/ops/get").await;
    assert_eq!(el["spec"]["path"], "/ws-2");
}

/// An api-token made from the form shows its secret once, and it works.
async fn a_token_shows_its_secret_once(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme", app.base)).await.unwrap();
    click(d, "#new-element").await;
    wait_el(d, "#create-type").await;
    d.execute(
        "const s = document.querySelector('#create-type'); s.value = 'api-token'; \
         s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    wait_text(d, "#create-form h3", "API TOKEN SPEC").await;
    fill(d, "#create-slug", "ci-bot").await;
    click(d, "#create-submit").await;
    let secret = wait_text(d, "#token-secret", "edt_")
        .await
        .text()
        .await
        .unwrap();
    shot(d, "11-token-secret").await;
    let (s, v) = app
        .call(Method::GET, "/api/acme/chat", Some(secret.trim()), None)
        .await;
    assert_eq!(s, 200, "the secret shown works: {v}");
    click(d, "#token-done").await;
    wait_path(d, "/console/acme/ci-bot").await;
    secrets_rotate_and_revoke(app, d, secret.trim()).await;
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    wait_text(d, "#element-version", "v").await;
}

/// The token's Secrets tab: status and use, a rotation with a grace, and
/// a revocation that takes two clicks.
async fn secrets_rotate_and_revoke(app: &TestApp, d: &WebDriver, first: &str) {
    click(d, "#tab-secrets").await;
    wait_text(d, "#secrets tr[data-status='active']", "active").await;
    fill(d, "#rotate-grace", "600").await;
    click(d, "#rotate").await;
    let second = wait_text(d, "#new-secret-value", "edt_")
        .await
        .text()
        .await
        .unwrap();
    assert_ne!(second.trim(), first);
    // Both work: the first through its grace.
    for s in [first, second.trim()] {
        let (status, _) = app.call(Method::GET, "/api/acme/chat", Some(s), None).await;
        assert_eq!(status, 200);
    }
    // Two active secrets during the grace, once the table is redrawn.
    wait_count(d, "#secrets tr[data-status='active']", 2).await;
    shot(d, "12-token-secrets").await;
    // One click arms Revoke; nothing is revoked yet.
    click(d, "#revoke").await;
    wait_text(d, "#revoke", "Confirm revoke").await;
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(first), None)
            .await
            .0,
        200
    );
    click(d, "#revoke").await;
    wait_text(d, "#tab .notice", "Revoked 2 secrets").await;
    wait_text(d, "#secrets tr[data-status='revoked']", "revoked").await;
    assert!(d
        .find_all(By::Css("#secrets tr[data-status='active']"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        app.call(Method::GET, "/api/acme/chat", Some(second.trim()), None)
            .await
            .0,
        401
    );
}

/// A project's Environments tab: what each environment runs, a promotion
/// that previews its members' changes and asks first, and Redeploy.
async fn a_project_releases_its_members(app: &TestApp, d: &WebDriver) {
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    let (_, chat) = app.get("/api/acme/chat").await;
    let v = chat["version"].as_i64().unwrap();
    d.goto(format!("{}/console/acme/shop/environments", app.base))
        .await
        .unwrap();
    wait_text(
        d,
        "[data-env='draft'] tr[data-member='chat']",
        &format!("v{v}"),
    )
    .await;
    wait_text(d, "[data-env='demo']", "not deployed").await;
    click(d, "#env-promote-demo").await;
    wait_text(d, "#release-dialog", &format!("→ v{v}")).await;
    fill(d, "#release-message", "shop to demo").await;
    click(d, "#confirm-promote").await;
    wait_text(d, "#tab .notice", "demo now runs snapshot").await;
    wait_text(d, "[data-env='demo']", "snapshot").await;
    wait_text(
        d,
        "[data-env='demo'] tr[data-member='chat']",
        &format!("v{v}"),
    )
    .await;
    let row = wait_text(d, "#snapshots tr", "shop to demo").await;
    assert!(row.find(By::Css("button[data-redeploy]")).await.is_ok());
    shot(d, "13-environments").await;
    let (_, envs) = app.get("/api/acme/shop/ops/environments").await;
    assert!(
        envs["environments"]["demo"]["snapshot"].is_string(),
        "{envs}"
    );
    let (_, snaps) = app.get("/api/acme/shop/ops/snapshots").await;
    assert_eq!(snaps["snapshots"][0]["message"], "shop to demo", "{snaps}");
    // Redeploying asks too; cancelled, it records nothing.
    click(d, "button[data-redeploy]").await;
    wait_text(d, "#release-dialog", "Redeploy").await;
    click(d, "#cancel-promote").await;
    let (_, again) = app.get("/api/acme/shop/ops/snapshots").await;
    assert_eq!(again["snapshots"].as_array().unwrap().len(), 1, "{again}");
    // The Source tab sends a manifest's release here.
    click(d, "#tab-source").await;
    wait_text(d, "#use-environments", "Environments").await;
    assert!(d.find(By::Css("#promote-demo")).await.is_err());
}

/// A sensitive variable's Properties show its value as the placeholder;
/// a save (a rename) does not send that back, and the value stays.
async fn a_secret_survives_a_properties_save(app: &TestApp, d: &WebDriver) {
    app.element(
        "acme",
        "variable",
        "api-key",
        json!({"value": "s3cret-console-3e8a", "sensitive": true}),
    )
    .await;
    d.goto(format!("{}/console/acme/api-key", app.base))
        .await
        .unwrap();
    let value = wait_el(d, "#f-spec-value").await;
    assert_eq!(value.value().await.unwrap().as_deref(), Some("[redacted]"));
    // Keep every request body the page sends from here on.
    d.execute(
        "window.sentBodies = []; const f = window.fetch; \
         window.fetch = (u, o) => { if (o && o.body) window.sentBodies.push(String(o.body)); \
         return f(u, o); };",
        vec![],
    )
    .await
    .unwrap();
    fill(d, "#prop-name", "API key").await;
    click(d, "#save").await;
    wait_text(d, "#properties .notice", "Saved as version 2").await;
    let sent = d
        .execute("return window.sentBodies.join('\\n')", vec![])
        .await
        .unwrap();
    let sent = sent.json().as_str().unwrap_or_default().to_string();
    assert!(
        sent.contains("API key") && !sent.contains("[redacted]"),
        "{sent}"
    );
    let (_, v) = app.get("/api/acme/api-key").await;
    assert_eq!(v["name"], "API key");
    assert_eq!(v["spec"]["value"], "[redacted]", "{v}");
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    wait_text(d, "#element-version", "v").await;
}

/// A driven link is the platform's own connection: the Live tab shows it
/// with its state and last error under its own header, not as a client.
async fn a_driven_link_stands_apart(app: &TestApp, d: &WebDriver) {
    // Nothing listens there: the link keeps trying and says why.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/feed");
    app.element("acme", "websocket", "feed", json!({"url": url}))
        .await;
    d.goto(format!("{}/console/acme/feed/live", app.base))
        .await
        .unwrap();
    wait_text(d, "#link tr[data-connection='link'] td.url", &url).await;
    wait_text(d, "#link td.last-error", "Connection refused").await;
    wait_text(d, "#connection-count", "0 connections").await;
    let heads: Vec<String> = d
        .execute(
            "return ['#link', '#connections'].map((s) => document.querySelector(s).previousElementSibling.textContent)",
            vec![],
        )
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert_eq!(heads, ["Driven link", "Client connections"]);
    assert!(
        d.find_all(By::Css("#connections tr[data-connection]"))
            .await
            .unwrap()
            .is_empty(),
        "the link is not listed as a client"
    );
    shot(d, "14-driven-link").await;
}

/// A missing element's page says so, and its breadcrumb leads back to the
/// circle.
async fn a_missing_element_leads_back_to_its_circle(app: &TestApp, d: &WebDriver) {
    d.goto(format!("{}/console/acme/nosuch", app.base))
        .await
        .unwrap();
    wait_text(d, "main .error", "ELEMENT_NOT_FOUND").await;
    shot(d, "15-missing-element").await;
    click(d, "nav.crumbs a[href='/console/acme']").await;
    wait_path(d, "/console/acme").await;
    wait_el(d, "#elements tr[data-slug='feed']").await;
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    wait_text(d, "#element-version", "v").await;
}

/// The browser's console over the whole walk: no asset, icon or script
/// failed; the failed requests are the three refusals the walk asks for.
async fn nothing_failed_but_what_the_walk_provoked(app: &TestApp, d: &WebDriver) {
    let errors = console_errors(d).await;
    let asked = [
        ("/api/ops/whoami", 401),
        ("/api/acme/ops/create", 422),
        ("/api/acme/nosuch/ops/get", 404),
    ];
    let as_asked = errors.len() == asked.len()
        && errors.iter().zip(asked).all(|(e, (path, status))| {
            e.starts_with(&format!("{}{path} - ", app.base))
                && e.contains(&format!("status of {status} "))
        });
    assert!(as_asked, "the browser's console: {errors:#?}");
}

/// Promoting to live is for admins: a member's console shows it disabled.
async fn a_member_cannot_promote_to_live(app: &TestApp, d: &WebDriver) {
    let member = app.token("acme", Role::Member).await;
    click(d, "#signout").await;
    fill(d, "#token", &member).await;
    click(d, "#signin").await;
    wait_text(d, "#whoami", "acme · member").await;
    click(d, "#tab-source").await;
    wait_text(d, "[data-link='draft-demo']", "draft → demo").await;
    let live = wait_el(d, "#promote-live").await;
    assert!(
        !live.is_enabled().await.unwrap(),
        "promote to live needs admin"
    );
    assert_eq!(
        live.attr("title").await.unwrap().as_deref(),
        Some("needs the admin role")
    );
}
