//! The console's create form shows the modifiers' newer fields (a
//! variable's type, validation and per-environment values, a rate limit's
//! response, an api-token's token_type, an auth-policy's methods and
//! scopes) from their schemas with their defaults, refuses a bad value
//! with the server's code and creates nothing, and creates good ones as
//! typed. In a real headless Chromium against the real server.

use crate::browser::{
    chromedriver, click, console_errors, fill, session, shot, sign_in, wait_el, wait_path,
    wait_text,
};
use crate::helpers::{spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use thirtyfour::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_form_shows_and_sends_the_modifiers_fields() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let driver = chromedriver().await;
    let browser = session(&driver).await;
    browser
        .run_and_quit(|d| async move {
            sign_in(&d, &app.base, &app.admin, "platform · admin").await;
            a_typed_variable_with_values_per_environment(&app, &d).await;
            a_rate_limit_with_its_own_response(&app, &d).await;
            an_api_key_token(&app, &d).await;
            a_policy_with_methods_and_scopes(&app, &d).await;
            // Only the two refusals the walk provoked.
            let errors = console_errors(&d).await;
            let provoked = |e: &String| e.contains("/api/acme/ops/create") && e.contains("422");
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(
                errors.iter().all(provoked),
                "the browser saw errors: {errors:?}"
            );
            Ok::<_, WebDriverError>(())
        })
        .await
        .expect("the browser session ends cleanly");
}

/// Opens the create form of `ty` in acme, named `slug`.
async fn new_of_type(app: &TestApp, d: &WebDriver, ty: &str, heading: &str, slug: &str) {
    d.goto(format!("{}/console/acme", app.base)).await.unwrap();
    click(d, "#new-element").await;
    wait_el(d, "#create-type").await;
    // The form may still be drawing the default type's schema: choose
    // again until the chosen type's form shows.
    for _ in 0..40 {
        choose(d, "#create-type", ty).await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let h3 = d.find(By::Css("#create-form h3")).await;
        if let Ok(h3) = h3 {
            if h3.text().await.unwrap_or_default().contains(heading) {
                break;
            }
        }
    }
    wait_text(d, "#create-form h3", heading).await;
    fill(d, "#create-slug", slug).await;
}

/// A form field's current value.
async fn value_of(d: &WebDriver, css: &str) -> String {
    wait_el(d, css)
        .await
        .value()
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Sets a select or text field the way a person's choice would.
async fn choose(d: &WebDriver, css: &str, value: &str) {
    d.execute(
        "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
         s.dispatchEvent(new Event('change'));",
        vec![json!(css), json!(value)],
    )
    .await
    .unwrap();
}

async fn spec_of(app: &TestApp, slug: &str) -> serde_json::Value {
    let (s, v) = app.get(&format!("/api/acme/{slug}/ops/get")).await;
    assert_eq!(s, StatusCode::OK, "{slug}: {v}");
    v["spec"].clone()
}

async fn a_typed_variable_with_values_per_environment(app: &TestApp, d: &WebDriver) {
    new_of_type(app, d, "variable", "VARIABLE SPEC", "upstream").await;
    assert_eq!(
        value_of(d, "#f-spec-type").await,
        "string",
        "type's default"
    );
    for path in [
        "spec/default",
        "spec/validation/pattern",
        "spec/validation/max_length",
        "spec/environments/demo/value",
        "spec/environments/live/value",
    ] {
        wait_el(d, &format!("[data-path='{path}']")).await;
    }
    // A value the rule refuses: the server's code, and nothing made.
    fill(d, "#f-spec-value", "ws://production.example").await;
    fill(d, "#f-spec-validation-max-length", "8").await;
    click(d, "#create-submit").await;
    wait_text(d, "#create-form .error", "VARIABLE_INVALID").await;
    shot(d, "24-variable-invalid").await;
    let (s, _) = app.get("/api/acme/upstream/ops/get").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a refused create leaves nothing");
    // Fixed: demo and live get their own values.
    fill(d, "#f-spec-validation-max-length", "64").await;
    fill(d, "#f-spec-environments-demo-value", "ws://staging.example").await;
    fill(
        d,
        "#f-spec-environments-live-value",
        "ws://production.example",
    )
    .await;
    click(d, "#create-submit").await;
    wait_path(d, "/console/acme/upstream").await;
    let spec = spec_of(app, "upstream").await;
    assert_eq!(spec["type"], "string");
    assert_eq!(spec["validation"]["max_length"], 64);
    assert_eq!(
        spec["environments"]["demo"]["value"],
        "ws://staging.example"
    );
    assert_eq!(
        spec["environments"]["live"]["value"],
        "ws://production.example"
    );
}

async fn a_rate_limit_with_its_own_response(app: &TestApp, d: &WebDriver) {
    new_of_type(app, d, "rate-limit", "RATE LIMIT SPEC", "slow").await;
    // Left empty, the defaults apply (429, RATE_LIMITED, a message that
    // names the limit): the form sends only what was filled in.
    assert_eq!(value_of(d, "#f-spec-response-status").await, "");
    assert_eq!(value_of(d, "#f-spec-response-code").await, "");
    wait_el(d, "[data-path='spec/response/headers']").await;
    fill(d, "#f-spec-response-message", "slow down, please").await;
    shot(d, "25-rate-limit-response").await;
    click(d, "#create-submit").await;
    wait_path(d, "/console/acme/slow").await;
    let spec = spec_of(app, "slow").await;
    assert_eq!(spec["response"], json!({"message": "slow down, please"}));
}

async fn an_api_key_token(app: &TestApp, d: &WebDriver) {
    new_of_type(app, d, "api-token", "API TOKEN SPEC", "ci-key").await;
    assert_eq!(value_of(d, "#f-spec-token-type").await, "bearer");
    choose(d, "#f-spec-token-type", "api-key").await;
    click(d, "#create-submit").await;
    let secret = wait_text(d, "#token-secret", "edt_")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(spec_of(app, "ci-key").await["token_type"], "api-key");
    // It works as X-API-Key, and whoami says its type.
    let who: serde_json::Value = app
        .client
        .get(format!("{}/api/ops/whoami", app.base))
        .header("X-API-Key", secret.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["token_type"], "api-key", "{who}");
}

async fn a_policy_with_methods_and_scopes(app: &TestApp, d: &WebDriver) {
    new_of_type(app, d, "auth-policy", "AUTH POLICY SPEC", "ends").await;
    assert_eq!(value_of(d, "#f-spec-methods").await, "", "any, by default");
    fill(d, "#f-spec-methods", "jwt, telepathy").await;
    click(d, "#create-submit").await;
    wait_text(d, "#create-form .error", "SPEC_INVALID").await;
    let (s, _) = app.get("/api/acme/ends/ops/get").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a refused create leaves nothing");
    fill(d, "#f-spec-methods", "jwt, api_key").await;
    fill(d, "#f-spec-scopes", "deploy").await;
    click(d, "#create-submit").await;
    wait_path(d, "/console/acme/ends").await;
    let spec = spec_of(app, "ends").await;
    assert_eq!(spec["methods"], json!(["jwt", "api_key"]));
    assert_eq!(spec["scopes"], json!(["deploy"]));
}
