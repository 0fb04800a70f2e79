//! Op handlers, grouped by what they do. `dispatch` maps an op of the
//! type's table to its handler.

mod compose;
mod graph;
mod promote;
mod read;
mod source;
mod stats;
mod write;
mod ws;

pub use read::list_circles as read_list_circles;
pub use write::CreateBody;

use super::pipeline::{Call, Reply};
use crate::error::{Error, Result};
use crate::model::Element;
use crate::service::App;
use crate::store::rfc3339;
use crate::types::OpDef;
use serde_json::{json, Value};

pub async fn dispatch(app: &App, op: &OpDef, call: &Call) -> Result<Reply> {
    match op.name.as_str() {
        "get" => read::get(app, call).await,
        "version" => read::version(app, call).await,
        "activity" => read::activity(app, call).await,
        "intention" => read::intention(app, call).await,
        "schema" => read::schema(app, call).await,
        "list" => read::list(app, call).await,
        "stats" => stats::stats(app, call).await,
        "batch_stats" => stats::batch_stats(app, call).await,
        "create" => write::create(app, call).await,
        "update" => write::update(app, call).await,
        "update_meta" => write::update_meta(app, call).await,
        "delete" => write::delete(app, call).await,
        "enable" => write::set_enabled(app, call, true).await,
        "disable" => write::set_enabled(app, call, false).await,
        "restore" => write::restore(app, call).await,
        "readme" => source::readme(app, call).await,
        "readme_update" => source::readme_update(app, call).await,
        "source" => source::source(app, call).await,
        "source_branches" => source::branches(app, call).await,
        "source_status" => source::status(app, call).await,
        "source_promote" => source::promote(app, call).await,
        "source_validate" => source::validate(app, call).await,
        "source_repair" => source::repair(app, call).await,
        "export_bundle" => source::export_bundle(app, call).await,
        "import_bundle" => source::import_bundle(app, call).await,
        "attachments" => compose::attachments(app, call).await,
        "compose" => compose::compose(app, call).await,
        "remove-modifier" => compose::remove_modifier(app, call).await,
        "context" => graph::context(app, call).await,
        "tree" => graph::tree(app, call).await,
        "promote" => promote::promote(app, call).await,
        "accept" => ws::accept(app, call).await,
        "send" => ws::send(app, call).await,
        "broadcast" => ws::broadcast(app, call).await,
        "close" => ws::close(app, call).await,
        "connections" => ws::connections(app, call).await,
        "receive" => ws::receive(app, call).await,
        "test_connection" => ws::test_connection(app, call).await,
        other => Err(Error::not_implemented(format!(
            "op '{other}' is part of the {} type but not served by this build yet",
            call.ty.name()
        ))),
    }
}

/// The element JSON of SPEC §4.
pub fn element_json(app: &App, el: &Element) -> Value {
    let ty = app.types.get(&el.element_type).ok();
    let spec = match ty {
        Some(t) => t.redact(&el.spec),
        None => el.spec.clone(),
    };
    json!({
        "id": el.id,
        "circle": el.circle(),
        "slug": el.slug,
        "name": el.name,
        "element_type": el.element_type,
        "category": ty.map(|t| t.def.category.as_str()),
        "form": ty.map(|t| t.def.form.as_str()),
        "symbol": ty.map(|t| t.def.symbol.as_str()),
        "parent": el.parent_id,
        "state": el.state,
        "state_reason": el.state_reason,
        "intention": el.intention,
        "spec": spec,
        "meta": el.meta,
        "version": el.version,
        "created_at": rfc3339(el.created_at),
        "updated_at": rfc3339(el.updated_at),
    })
}

/// An element with warnings attached, as write ops answer.
pub fn with_warnings(app: &App, el: &Element, warnings: &[String]) -> Value {
    let mut v = element_json(app, el);
    v["warnings"] = json!(warnings);
    v
}
