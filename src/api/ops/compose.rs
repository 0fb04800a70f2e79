//! `attachments`, `compose` and `remove-modifier`.

use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::rfc3339;
use crate::model::Element;
use crate::service::compose::Add;
use crate::service::App;
use crate::store::attachments::AttachmentRow;
use crate::types::Capability;
use serde::Deserialize;
use serde_json::{json, Value};

async fn attachment_json(app: &App, a: &AttachmentRow) -> Result<Value> {
    let src = app.elements().by_id(&a.source_id).await?;
    Ok(shown(app, a, src.as_ref()))
}

fn shown(app: &App, a: &AttachmentRow, src: Option<&Element>) -> Value {
    let (slug, ty, state) = match src {
        Some(s) => (s.slug.as_str(), s.element_type.as_str(), s.state.as_str()),
        None => ("", "", "missing"),
    };
    let is_modifier = app.types().has(ty, Capability::Modifier);
    json!({
        "attachment_id": a.id,
        "source": {"id": a.source_id, "slug": slug, "element_type": ty, "state": state},
        "priority": a.priority,
        "is_modifier": is_modifier,
        "version_pin": a.pin_version,
        "cascade_policy": a.cascade.as_str(),
        "inherited_from": null,
        "created_at": rfc3339(a.created_at),
    })
}

/// The element's own attachments, then those cascading from above, each
/// marked with the element it comes from.
async fn list(app: &App, el: &Element) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for a in app.elements().attachments_of(&el.id).await? {
        out.push(attachment_json(app, &a).await?);
    }
    for i in app.graph().inherited(el).await? {
        let mut v = shown(app, &i.attachment, Some(&i.source));
        v["inherited_from"] = json!({
            "id": i.carrier.id,
            "slug": i.carrier.slug,
            "element_type": i.carrier.element_type,
        });
        out.push(v);
    }
    Ok(out)
}

pub async fn attachments(app: &App, call: &Call) -> Result<Reply> {
    ok(json!({"attachments": list(app, &call.element).await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveItem {
    attachment_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeBody {
    #[serde(default)]
    add: Vec<Add>,
    #[serde(default)]
    remove: Vec<RemoveItem>,
}

pub async fn compose(app: &App, call: &Call) -> Result<Reply> {
    let body: ComposeBody = call.body()?;
    if body.add.is_empty() && body.remove.is_empty() {
        return Err(Error::bad_request(
            ErrorCode::EmptyCompose,
            "give add and/or remove entries",
        ));
    }
    let add = body.add;
    let remove: Vec<String> = body.remove.into_iter().map(|r| r.attachment_id).collect();
    let (added, removed) = app
        .elements()
        .compose(&call.ctx, &call.element, &add, &remove)
        .await?;
    let mut added_json = Vec::new();
    for a in &added {
        added_json.push(attachment_json(app, a).await?);
    }
    ok(json!({
        "added": added_json,
        "removed": removed,
        "attachments": list(app, &call.element).await?,
    }))
}

pub async fn remove_modifier(app: &App, call: &Call) -> Result<Reply> {
    let body: RemoveItem = call.body()?;
    let (_, removed) = app
        .elements()
        .compose(&call.ctx, &call.element, &[], &[body.attachment_id])
        .await?;
    ok(json!({"removed": removed, "attachments": list(app, &call.element).await?}))
}
