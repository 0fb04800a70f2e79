//! Ops that change an element. Each builds a [`Change`] and hands it to the
//! one write path, `App::apply` (or `App::create_element`).

use super::{element_json, with_warnings};
use crate::api::call::{ok, Call, Payload, Reply};
use crate::error::{Error, Result};
use crate::model::Slug;
use crate::model::State;
use crate::service::elements::{Change, NewElement};
use crate::service::App;
use crate::store::tokens::Role;
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
            "INVALID_NAME",
            "name must be 1-200 characters and not blank",
        ));
    }
    Ok(())
}

/// Free text fields (`intention`, `reason`): bounded, no NUL.
fn check_text(field: &str, code: &'static str, v: &str) -> Result<()> {
    if v.chars().count() > 10_000 || v.contains('\0') {
        return Err(Error::bad_request(
            code,
            format!("{field} must be at most 10000 characters, without NUL"),
        ));
    }
    Ok(())
}

fn check_intention(i: &str) -> Result<()> {
    check_text("intention", "INVALID_INTENTION", i)
}

impl CreateBody {
    /// Checks the body's own fields (the spec is checked by its type).
    pub fn into_new(self) -> Result<NewElement> {
        if self.element_type.is_empty() {
            return Err(Error::bad_request(
                "MISSING_FIELD",
                "element_type is required",
            ));
        }
        let slug = Slug::parse(&self.slug)?;
        if RESERVED.contains(&slug.as_str()) {
            return Err(Error::bad_request(
                "RESERVED_SLUG",
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
                "INVALID_SPEC",
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
    let token = app
        .types
        .get(&body.element_type)
        .is_ok_and(|t| t.has_capability("api_token"));
    let admin = call
        .principal
        .as_ref()
        .is_some_and(|p| p.require(crate::types::Level::Admin).is_ok());
    if token && !admin {
        return Err(Error::forbidden("making an api-token needs the admin role"));
    }
    let applied = app
        .create_element(&call.ctx, Some(&call.element), body.into_new()?)
        .await?;
    let mut answer = with_warnings(app, &applied.element, &applied.warnings);
    if token {
        // The secret is shown here once, and never again.
        let (row, secret) = app.mint(&applied.element).await?;
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
            "INVALID_SPEC",
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
        call.ty.check_writable(spec)?;
    }
    let ty = call.ty.clone();
    let author = call.ctx.actor.label();
    let is_admin = call
        .principal
        .as_ref()
        .is_some_and(|p| p.role >= Role::Admin);
    let applied = app
        .apply(&call.ctx, call.element.clone(), |cur| {
            let mut spec = match (&body.spec, body.deep) {
                (Some(patch), Some(false)) => patch.clone(),
                (Some(Value::Object(patch)), _) => ty.merge_patch(&cur.spec, patch.clone()),
                (Some(patch), _) => patch.clone(),
                (None, _) => cur.spec.clone(),
            };
            ty.keep_redacted(&mut spec, Some(&cur.spec))?;
            if ty.is_sensitive(&cur.spec) && !ty.is_sensitive(&spec) && !is_admin {
                return Err(Error::forbidden(
                    "turning sensitive off needs the admin role (the old value is dropped, never shown)",
                ));
            }
            let checked = ty.check_spec(spec)?;
            let warnings = checked.warnings.clone();
            let change = Change::next_version(
                cur,
                &author,
                "element.updated",
                |v| format!("update: v{v} by {author}"),
                |el| {
                    el.spec = checked.spec;
                    if let Some(n) = &body.name {
                        el.name = n.clone();
                    }
                    if let Some(i) = &body.intention {
                        el.intention = Some(i.clone());
                    }
                },
            );
            Ok(change
                .with_data(json!({ "warnings": warnings }))
                .with_warnings(warnings))
        })
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
            "INVALID_META",
            "meta must be a JSON object",
        ));
    };
    let keys: Vec<String> = patch.keys().cloned().collect();
    let applied = app
        .apply(&call.ctx, call.element.clone(), |cur| {
            let mut meta = match &cur.meta {
                Value::Object(m) => m.clone(),
                _ => Default::default(),
            };
            for (k, v) in &patch {
                if v.is_null() {
                    meta.remove(k);
                } else {
                    meta.insert(k.clone(), v.clone());
                }
            }
            let data = json!({ "keys": keys });
            Ok(Change::unversioned(
                cur,
                "element.meta_updated",
                data,
                |el| el.meta = Value::Object(meta),
            ))
        })
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
            "CONFIRMATION_REQUIRED",
            "deleting needs ?confirm=true",
        ));
    }
    let children = app.db.children(&call.element).await?;
    if !children.is_empty() {
        return Err(Error::conflict(
            "HAS_CHILDREN",
            format!(
                "'{}' still has {} element(s); delete them first",
                call.element.slug,
                children.len()
            ),
        ));
    }
    let live = app.runtime.live_connections(&call.element.id);
    if live > 0 {
        return Err(Error::conflict(
            "HAS_CONNECTIONS",
            format!(
                "'{}' has {live} live connection(s); disable it first (closes them with 1001)",
                call.element.slug
            ),
        ));
    }
    let applied = app
        .apply(&call.ctx, call.element.clone(), |cur| {
            let data = json!({ "previous_state": cur.state });
            Ok(Change::unversioned(cur, "element.deleted", data, |el| {
                el.state = State::Deleted
            }))
        })
        .await?;
    if applied.element.is_root() {
        // A circle's tokens end with it; its slug may be taken again.
        let n = app.db.revoke_circle_tokens(&applied.element.id).await?;
        tracing::info!(circle = %applied.element.slug, revoked = n, "circle deleted; its tokens revoked");
    }
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
        check_text("reason", "INVALID_REASON", r)?;
    }
    let target = if enable {
        State::Ready
    } else {
        State::Disabled
    };
    if call.element.state == target {
        return ok(element_json(app, &call.element));
    }
    let applied = app
        .apply(&call.ctx, call.element.clone(), |cur| {
            let kind = if enable {
                "element.enabled"
            } else {
                "element.disabled"
            };
            let data = json!({ "reason": body.reason });
            Ok(Change::unversioned(cur, kind, data, |el| {
                el.state = target;
                el.state_reason = if enable { None } else { body.reason.clone() };
            }))
        })
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
    if body.version < 1 {
        return Err(Error::bad_request(
            "INVALID_VERSION",
            "version must be 1 or more",
        ));
    }
    let target = app
        .db
        .version_of(&call.element.id, body.version)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "VERSION_NOT_FOUND",
                format!("'{}' has no version {}", call.element.slug, body.version),
            )
        })?;
    // Versions keep the README only when it changed: take the newest one
    // at or before the target.
    let readme = app.db.readme_at(&call.element.id, target.version).await?;
    let ty = call.ty.clone();
    let author = call.ctx.actor.label();
    let applied = app
        .apply(&call.ctx, call.element.clone(), |cur| {
            let checked = ty.check_spec(target.spec.clone())?;
            let t = target.version;
            let change = Change::next_version(
                cur,
                &author,
                "element.restored",
                |_| format!("Before restore to v{t}"),
                |_| {},
            )
            .then_version(
                &author,
                |_| format!("Restore to v{t}"),
                |el| {
                    el.spec = checked.spec;
                    el.readme = readme.clone();
                },
            );
            Ok(change
                .with_data(json!({ "restored_from": t }))
                .with_warnings(checked.warnings))
        })
        .await?;
    ok(with_warnings(app, &applied.element, &applied.warnings))
}
