//! `promote` on manifests (projects, apps): dev → demo → live. Freezes
//! each member's version into `spec.environments.{env}` and moves the
//! members' source branches along.

use super::with_warnings;
use crate::api::pipeline::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::model::Element;
use crate::service::elements::Change;
use crate::service::App;
use crate::store::tokens::Role;
use crate::store::{now_ms, rfc3339};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    to: String,
}

/// Members: those named in `spec.members` and those contained.
async fn all_members(app: &App, el: &Element) -> Result<Vec<Element>> {
    let mut out = app.members(el).await?;
    for c in app.db.children(el).await? {
        if !out.iter().any(|m| m.id == c.id) {
            out.push(c);
        }
    }
    let named: Vec<&str> = el
        .spec
        .get("members")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(missing) = named.iter().find(|s| !out.iter().any(|m| m.slug == **s)) {
        return Err(Error::conflict(
            "MEMBER_NOT_FOUND",
            format!("member '{missing}' does not exist in this circle"),
        ));
    }
    Ok(out)
}

pub async fn promote(app: &App, call: &Call) -> Result<Reply> {
    let body: PromoteBody = call.body()?;
    let el = &call.element;
    if !call.ty.has_capability("promote") {
        return Err(Error::bad_request(
            "NOT_A_MANIFEST",
            "only projects and apps promote",
        ));
    }
    let (from_branch, to_branch) = match body.to.as_str() {
        "demo" => ("draft", "demo"),
        "live" => {
            call.require(Role::Admin, "promoting to live")?;
            if el.spec.pointer("/environments/demo").is_none() {
                return Err(Error::precondition(
                    "PROMOTE_DEMO_FIRST",
                    "promote to demo before live",
                ));
            }
            ("demo", "live")
        }
        other => {
            return Err(Error::bad_request(
                "INVALID_ENVIRONMENT",
                format!(
                    "promote to demo or live, not '{}'",
                    crate::error::shown(other)
                ),
            ))
        }
    };
    let members = all_members(app, el).await?;
    let mut frozen = Map::new();
    let mut warnings = Vec::new();
    if body.to == "demo" {
        for m in &members {
            frozen.insert(
                m.slug.clone(),
                json!({"id": m.id, "element_type": m.element_type, "version": m.version}),
            );
        }
    } else {
        // Live gets exactly what demo was given.
        if let Some(Value::Object(d)) = el.spec.pointer("/environments/demo/members") {
            frozen = d.clone();
        }
    }
    let msg = format!(
        "promote {from_branch} to {to_branch} by {}",
        call.ctx.actor.label()
    );
    for m in &members {
        if let Err(e) = app
            .source
            .promote(&m.id, from_branch, to_branch, msg.clone())
            .await
        {
            warnings.push(format!("git: {}: {}", m.slug, e.message));
        }
    }
    let env = json!({
        "members": frozen,
        "promoted_at": rfc3339(now_ms()),
        "promoted_by": call.ctx.actor.label(),
    });
    let author = call.ctx.actor.label();
    let to = body.to.clone();
    let applied = app
        .apply(&call.ctx, el.clone(), |cur| {
            let change = Change::next_version(
                cur,
                &author,
                "element.promoted",
                |v| format!("promote to {to}: v{v} by {author}"),
                |el| {
                    let envs = el
                        .spec
                        .as_object_mut()
                        .map(|s| s.entry("environments").or_insert_with(|| json!({})));
                    if let Some(Value::Object(envs)) = envs {
                        envs.insert(to.clone(), env.clone());
                    }
                },
            );
            Ok(change.with_data(json!({"to": to, "members": env["members"]})))
        })
        .await?;
    // The manifest's own branch moves last, so it carries the record.
    if let Err(e) = app
        .source
        .promote(&el.id, from_branch, to_branch, msg)
        .await
    {
        warnings.push(format!("git: {}: {}", el.slug, e.message));
    }
    warnings.extend(applied.warnings);
    let mut out = with_warnings(app, &applied.element, &warnings);
    out["environment"] = applied.element.spec["environments"][&body.to].clone();
    ok(out)
}
