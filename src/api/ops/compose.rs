//! `attachments`, `compose` and `remove-modifier`.

use crate::api::pipeline::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::service::compose::Add;
use crate::service::App;
use crate::store::attachments::AttachmentRow;
use crate::store::rfc3339;
use serde::Deserialize;
use serde_json::{json, Value};

async fn attachment_json(app: &App, a: &AttachmentRow) -> Result<Value> {
    let src = app.db.element_by_id(&a.source_id).await?;
    let (slug, ty, state) = match &src {
        Some(s) => (s.slug.clone(), s.element_type.clone(), s.state.as_str()),
        None => (String::new(), String::new(), "missing"),
    };
    let is_modifier = app
        .types
        .get(&ty)
        .is_ok_and(|t| t.has_capability("modifier"));
    Ok(json!({
        "attachment_id": a.id,
        "source": {"id": a.source_id, "slug": slug, "element_type": ty, "state": state},
        "priority": a.priority,
        "is_modifier": is_modifier,
        "version_pin": a.pin_version,
        "cascade_policy": "none",
        "created_at": rfc3339(a.created_at),
    }))
}

async fn list(app: &App, element_id: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for a in app.db.attachments_of(element_id).await? {
        out.push(attachment_json(app, &a).await?);
    }
    Ok(out)
}

pub async fn attachments(app: &App, call: &Call) -> Result<Reply> {
    ok(json!({"attachments": list(app, &call.element.id).await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    #[serde(rename = "ref")]
    reference: String,
    priority: Option<i64>,
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
    add: Vec<AddItem>,
    #[serde(default)]
    remove: Vec<RemoveItem>,
}

pub async fn compose(app: &App, call: &Call) -> Result<Reply> {
    let body: ComposeBody = call.body()?;
    if body.add.is_empty() && body.remove.is_empty() {
        return Err(Error::bad_request(
            "EMPTY_COMPOSE",
            "give add and/or remove entries",
        ));
    }
    let add: Vec<Add> = body
        .add
        .into_iter()
        .map(|a| Add {
            reference: a.reference,
            priority: a.priority,
        })
        .collect();
    let remove: Vec<String> = body.remove.into_iter().map(|r| r.attachment_id).collect();
    let (added, removed) = app.compose(&call.ctx, &call.element, &add, &remove).await?;
    let mut added_json = Vec::new();
    for a in &added {
        added_json.push(attachment_json(app, a).await?);
    }
    ok(json!({
        "added": added_json,
        "removed": removed,
        "attachments": list(app, &call.element.id).await?,
    }))
}

pub async fn remove_modifier(app: &App, call: &Call) -> Result<Reply> {
    let body: RemoveItem = call.body()?;
    let (_, removed) = app
        .compose(&call.ctx, &call.element, &[], &[body.attachment_id])
        .await?;
    ok(json!({"removed": removed, "attachments": list(app, &call.element.id).await?}))
}
