//! Ops that change an element: each checks its body and calls one use
//! case of the service.

use super::{element_json, with_warnings};
use crate::api::call::{ok, Call, Payload, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Role;
use crate::model::Slug;
use crate::service::edits::Update;
use crate::service::elements::NewElement;
use crate::service::gate;
use crate::service::App;
use crate::types::Capability;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// Slugs that would shadow a route.
const RESERVED: &[&str] = &["ops", "types"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub element_type: String,
    pub slug: String,
    pub name: Option<String>,
    pub spec: Option<Value>,
    pub intention: Option<String>,
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err(Error::bad_request(
            ErrorCode::InvalidName,
            "name must be 1-200 characters and not blank",
        ));
    }
    Ok(())
}

/// Free text fields (`intention`, `reason`): bounded, no NUL.
fn check_text(field: &str, code: ErrorCode, v: &str) -> Result<()> {
    if v.chars().count() > 10_000 || v.contains('\0') {
        return Err(Error::bad_request(
            code,
            format!("{field} must be at most 10000 characters, without NUL"),
        ));
    }
    Ok(())
}

fn check_intention(i: &str) -> Result<()> {
    check_text("intention", ErrorCode::InvalidIntention, i)
}

impl CreateBody {
    /// Checks the body's own fields (the spec is checked by its type).
    pub fn into_new(self) -> Result<NewElement> {
        if self.element_type.is_empty() {
            return Err(Error::bad_request(
                ErrorCode::MissingField,
                "element_type is required",
            ));
        }
        let slug = Slug::parse(&self.slug)?;
        if RESERVED.contains(&slug.as_str()) {
            return Err(Error::bad_request(
                ErrorCode::ReservedSlug,
                format!("'{}' is reserved; choose another slug", slug.as_str()),
            ));
        }
        if let Some(n) = &self.name {
            check_name(n)?;
        }
        if let Some(i) = &self.intention {
            check_intention(i)?;
        }
        if self.spec.as_ref().is_some_and(|s| !s.is_object()) {
            return Err(Error::bad_request(
                ErrorCode::InvalidSpec,
                "spec must be a JSON object",
            ));
        }
        if let Some(spec) = &self.spec {
            crate::secrets::refuse_sealed(spec)?;
        }
        Ok(NewElement {
            id: None,
            element_type: self.element_type,
            slug,
            name: self.name,
            spec: self.spec,
            intention: self.intention,
            readme: None,
            repo: None,
        })
    }
}

pub async fn create(app: &App, call: &Call) -> Result<Reply> {
    let body: CreateBody = call.body()?;
    let token = app.types().has(&body.element_type, Capability::ApiToken);
    let who = call.principal.as_ref();
    gate::token_policy(app, who, &body.element_type, "making an api-token")?;
    let applied = app
        .elements()
        .create(&call.ctx, Some(&call.element), body.into_new()?)
        .await?;
    let mut answer = with_warnings(app, &applied.element, &applied.warnings);
    if token {
        // The secret is shown here once, and never again.
        let (row, secret) = app.tokens().mint(&applied.element).await?;
        answer["token"] = json!({"id": row.id, "secret": secret});
    }
    Ok((StatusCode::CREATED, Payload::Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    spec: Option<Value>,
    name: Option<String>,
    intention: Option<String>,
    deep: Option<bool>,
}

pub async fn update(app: &App, call: &Call) -> Result<Reply> {
    let body: UpdateBody = call.body()?;
    if body.spec.as_ref().is_some_and(|s| !s.is_object()) {
        return Err(Error::bad_request(
            ErrorCode::InvalidSpec,
            "spec must be a JSON object",
        ));
    }
    if let Some(n) = &body.name {
        check_name(n)?;
    }
    if let Some(i) = &body.intention {
        check_intention(i)?;
    }
    if let Some(spec) = &body.spec {
        crate::secrets::refuse_sealed(spec)?;
    }
    let input = Update {
        spec: body.spec,
        name: body.name,
        intention: body.intention,
        deep: body.deep,
        may_unseal: call
            .principal
            .as_ref()
            .is_some_and(|p| p.role >= Role::Admin),
    };
    let applied = app
        .elements()
        .update(&call.ctx, call.element_owned(), input)
        .await?;
    ok(with_warnings(app, &applied.element, &applied.warnings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    meta: Value,
}

pub async fn update_meta(app: &App, call: &Call) -> Result<Reply> {
    let body: MetaBody = call.body()?;
    let Value::Object(patch) = body.meta else {
        return Err(Error::bad_request(
            ErrorCode::InvalidMeta,
            "meta must be a JSON object",
        ));
    };
    let applied = app
        .elements()
        .update_meta(&call.ctx, call.element_owned(), patch)
        .await?;
    ok(element_json(app, &applied.element))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    confirm: bool,
}

pub async fn delete(app: &App, call: &Call) -> Result<Reply> {
    let q: DeleteQuery = call.query()?;
    if !q.confirm {
        return Err(Error::precondition(
            ErrorCode::ConfirmationRequired,
            "deleting needs ?confirm=true",
        ));
    }
    let applied = app
        .elements()
        .delete(&call.ctx, call.element_owned())
        .await?;
    ok(element_json(app, &applied.element))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

pub async fn enable(app: &App, call: &Call) -> Result<Reply> {
    set_enabled(app, call, true).await
}

pub async fn disable(app: &App, call: &Call) -> Result<Reply> {
    set_enabled(app, call, false).await
}

async fn set_enabled(app: &App, call: &Call, enable: bool) -> Result<Reply> {
    let body: ReasonBody = call.body()?;
    if let Some(r) = &body.reason {
        check_text("reason", ErrorCode::InvalidReason, r)?;
    }
    let applied = app
        .elements()
        .set_enabled(&call.ctx, call.element_owned(), enable, body.reason)
        .await?;
    ok(element_json(app, &applied.element))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    version: i64,
}

pub async fn restore(app: &App, call: &Call) -> Result<Reply> {
    let body: RestoreBody = call.body()?;
    let applied = app
        .elements()
        .restore(&call.ctx, call.element_owned(), body.version)
        .await?;
    ok(with_warnings(app, &applied.element, &applied.warnings))
}
