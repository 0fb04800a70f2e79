//! Typed variables' rules (issue 24 item 1): a value's type, default and
//! validation rules are checked on every write, create and update alike,
//! and a refusal names what broke and changes nothing.

use crate::helpers::*;
use crate::var_types::{create_var, invalid};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_breaks_its_type_or_a_rule_is_refused_naming_it() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let digits = json!({"pattern": "^[0-9]+$"});
    for (spec, says) in [
        (
            json!({"value": "abc", "validation": digits}),
            "value 'abc' does not match pattern '^[0-9]+$'",
        ),
        (
            json!({"value": "12345", "validation": {"max_length": 4}}),
            "max_length 4",
        ),
        (
            json!({"value": "blue", "validation": {"enum": ["red", "green"]}}),
            "not one of enum",
        ),
        (
            json!({"type": "number", "value": 3, "validation": {"min": 5}}),
            "value 3 is below min 5",
        ),
        (
            json!({"type": "number", "value": 30, "validation": {"max": 10}}),
            "above max 10",
        ),
        (
            json!({"type": "number", "value": "3"}),
            "does not have type number",
        ),
        (
            json!({"type": "boolean", "value": "yes"}),
            "does not have type boolean",
        ),
        (
            json!({"type": "string", "value": 42}),
            "does not have type string",
        ),
        (
            json!({"value": "1", "default": "x", "validation": digits}),
            "default 'x' does not match",
        ),
        (
            json!({"value": "1", "validation": digits, "environments": {"live": {"value": "l1ve"}}}),
            "environments.live.value 'l1ve' does not match pattern",
        ),
        (
            json!({"value": "1", "validation": {"pattern": "([0-9]"}}),
            "not a usable regular expression",
        ),
        (
            json!({"value": "1", "validation": {"pattern": "1".repeat(513)}}),
            "longer than 512",
        ),
        (
            json!({"value": "aaa", "validation": {"pattern": "(a{1000}){1000}"}}),
            "size limit",
        ),
        (
            json!({"value": "1", "validation": {"min": 0}}),
            "min applies to number variables",
        ),
        (
            json!({"type": "number", "value": 1, "validation": {"max_length": 3}}),
            "max_length applies to string",
        ),
        (
            json!({"type": "number", "value": 1, "validation": {"min": 5, "max": 1}}),
            "above validation.max",
        ),
        (
            json!({"value": "a", "validation": {"enum": ["a", 2]}}),
            "enum entry 1",
        ),
    ] {
        let r = create_var(&app, "v", spec.clone()).await;
        invalid(&r, says);
    }
    assert_error(&app.get("/api/acme/v").await, 404, "ELEMENT_NOT_FOUND");
}

/// An environment other than draft, demo and live, an unknown type or an
/// unknown rule is not in the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_environment_type_or_rule_is_not_in_the_schema() {
    let app = spawn_app().await;
    app.circle("acme").await;
    for spec in [
        json!({"value": "1", "environments": {"staging": {"value": "2"}}}),
        json!({"value": "1", "environments": {"demo": {"valu": "2"}}}),
        json!({"value": "1", "type": "text"}),
        json!({"value": "1", "validation": {"min_length": 1}}),
        json!({"value": "1", "validation": {"max_length": -1}}),
    ] {
        assert_error(&create_var(&app, "v", spec).await, 422, "SPEC_INVALID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_types_good_values_pass_and_the_schema_defaults_fill_in() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let digits = json!({"pattern": "^[0-9]+$"});
    let (s, v) = create_var(
        &app,
        "n",
        json!({"type": "number", "value": 7, "validation": {"min": 1, "max": 9}}),
    )
    .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let (s, v) = create_var(&app, "j", json!({"type": "json", "value": {"a": [1]}})).await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let (s, v) = create_var(&app, "code", json!({"value": "0042", "validation": digits})).await;
    assert_eq!(s.as_u16(), 201, "{v}");
    assert_eq!(
        (
            &v["spec"]["type"],
            &v["spec"]["environments"],
            &v["spec"]["default"],
            &v["spec"]["sensitive"]
        ),
        (&json!("string"), &json!({}), &Value::Null, &json!(false)),
        "{v}"
    );
}

/// Without `type`, the value tells it (variables made before types).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_type_the_value_tells_it() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let (s, v) = create_var(&app, "count", json!({"value": 5})).await;
    assert_eq!(
        (s.as_u16(), &v["spec"]["type"]),
        (201, &json!("number")),
        "{v}"
    );
}

/// An update is checked whole: new rules against the values kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_checked_whole_and_a_refusal_changes_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let digits = json!({"pattern": "^[0-9]+$"});
    for (slug, spec) in [
        ("code", json!({"value": "0042", "validation": digits})),
        (
            "n",
            json!({"type": "number", "value": 7, "validation": {"min": 1, "max": 9}}),
        ),
    ] {
        let (s, v) = create_var(&app, slug, spec).await;
        assert_eq!(s.as_u16(), 201, "{v}");
    }
    let before = app.state_of("acme", "code").await;
    for (patch, says) in [
        (
            json!({"validation": {"max_length": 2}}),
            "value '0042' is longer than max_length 2",
        ),
        (json!({"type": "number"}), "pattern applies to string"),
        (
            json!({"environments": {"demo": {"value": "x"}}}),
            "environments.demo.value 'x'",
        ),
    ] {
        let r = app
            .patch("/api/acme/code/ops/update", json!({"spec": patch}))
            .await;
        invalid(&r, says);
    }
    let r = app
        .patch("/api/acme/n/ops/update", json!({"spec": {"value": 10}}))
        .await;
    invalid(&r, "value 10 is above max 9");
    assert_eq!(
        app.state_of("acme", "code").await,
        before,
        "refusals changed nothing"
    );
    let (_, n) = app.get("/api/acme/n").await;
    assert_eq!(n["spec"]["value"], 7);
}
