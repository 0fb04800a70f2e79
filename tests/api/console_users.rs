//! The console's Live tab shows an element's end users (issue 21, item
//! 6): who is present per room, with their connection counts and info,
//! and a send and a close that reach every connection of a user. In a
//! real headless Chromium, against the real server.

use crate::browser::{
    chromedriver, click, console_errors, fill, session, shot, sign_in, wait_text,
};
use crate::helpers::{spawn_app, TestApp};
use crate::ws_client::*;
use crate::ws_users::{as_user, chat};
use thirtyfour::prelude::*;

#[tokio::test]
async fn the_live_tab_shows_users_and_reaches_them() {
    let app = spawn_app().await;
    chat(&app, false).await;
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            users_on_the_live_tab(&app, &d).await;
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}

/// Types `text` into the input and presses Enter.
async fn enter(d: &WebDriver, css: &str, text: &str) {
    fill(d, css, text).await;
    let input = d.find(By::Css(css)).await.unwrap();
    input.send_keys(Key::Enter).await.unwrap();
}

async fn users_on_the_live_tab(app: &TestApp, d: &WebDriver) {
    sign_in(d, &app.base, &app.admin, "platform · admin").await;
    d.goto(format!("{}/console/acme/chat", app.base))
        .await
        .unwrap();
    click(d, "#tab-live").await;
    wait_text(d, "#stream-state", "live").await;
    wait_text(d, "#user-count", "0 users, 0 connections").await;

    let mut ann1 = as_user(app, "ann", "lobby").await;
    let mut ann2 = as_user(app, "ann", "side").await;
    let _bob = as_user(app, "bob", "lobby").await;
    // Followed from the event stream, without a reload.
    wait_text(d, "#user-count", "2 users, 3 connections").await;
    // The table is drawn again on each connection event: read its cells
    // by waiting for them, never through a row found earlier.
    wait_text(d, "#users tr[data-user='ann'] td.count", "2").await;
    wait_text(d, "#users tr[data-user='ann'] td.info", "ANN").await;
    wait_text(d, "#connections td.user", "bob").await;

    // One room only.
    enter(d, "#users-room", "side").await;
    wait_text(d, "#user-count", "1 user, 1 connection in side").await;
    enter(d, "#users-room", "").await;
    wait_text(d, "#user-count", "2 users, 3 connections").await;

    // Send to ann: both of her connections get it.
    fill(d, "#users tr[data-user='ann'] input", "hello ann").await;
    click(d, "#users button[data-send-user='ann']").await;
    wait_text(d, "#tab .notice", "Sent to 2 connections of ann").await;
    assert_eq!(next_text(&mut ann1).await, "hello ann");
    assert_eq!(next_text(&mut ann2).await, "hello ann");
    shot(d, "20-live-users").await;

    // Close all of ann's connections.
    click(d, "#users button[data-close-user='ann']").await;
    wait_text(d, "#tab .notice", "Closed 2 connections of ann").await;
    assert_eq!(closed_with(&mut ann1).await.0, 1000);
    assert_eq!(closed_with(&mut ann2).await.0, 1000);
    wait_text(d, "#user-count", "1 user, 1 connection").await;
    let errors = console_errors(d).await;
    assert!(errors.is_empty(), "the browser saw errors: {errors:?}");
}

#[tokio::test]
async fn the_live_tab_shows_a_rooms_last_messages() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "websocket",
        "feed",
        serde_json::json!({"path": "/feed", "rooms": {"enabled": true}, "history": {"size": 50}}),
    )
    .await;
    for i in 1..=25 {
        let body = serde_json::json!({"message": format!("m{i}"), "room": "lobby"});
        let (s, v) = app.post("/api/acme/feed/ops/broadcast", body).await;
        assert_eq!(s.as_u16(), 200, "{v}");
    }
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            sign_in(&d, &app.base, &app.admin, "platform · admin").await;
            d.goto(format!("{}/console/acme/feed", app.base))
                .await
                .unwrap();
            click(&d, "#tab-live").await;
            wait_text(&d, "#stream-state", "live").await;
            wait_text(&d, "#history-place", "nothing published here yet").await;
            enter(&d, "#history-room", "lobby").await;
            wait_text(&d, "#history-place", "offset 25 · epoch").await;
            wait_text(&d, "#history tr[data-offset='25']", "m25").await;
            wait_text(&d, "#history tr[data-offset='6']", "m6").await;
            let rows = d.find_all(By::Css("#history tr[data-offset]")).await?;
            assert_eq!(rows.len(), 20, "the last 20");
            assert!(d
                .find_all(By::Css("#history tr[data-offset='5']"))
                .await?
                .is_empty());
            // A new message shows up without a reload.
            let body = serde_json::json!({"message": "m26", "room": "lobby"});
            app.post("/api/acme/feed/ops/broadcast", body).await;
            wait_text(&d, "#history-place", "offset 26").await;
            wait_text(&d, "#history tr[data-offset='26']", "m26").await;
            shot(&d, "21-live-history").await;
            let errors = console_errors(&d).await;
            assert!(errors.is_empty(), "the browser saw errors: {errors:?}");
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}
