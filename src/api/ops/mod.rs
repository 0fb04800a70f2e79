//! Op handlers, grouped by what they do. `dispatch` maps an op of the
//! type's table to its handler.

pub mod codes;
mod compose;
mod graph;
mod promote;
mod rate;
mod read;
pub(crate) mod release;
mod series;
mod source;
mod stats;
mod tokens;
mod webhooks;
mod write;
mod ws;

pub use read::list_circles;
pub use write::CreateBody;

use super::call::{Call, Reply};
use crate::error::{Error, Result};
use crate::model::Element;
use crate::service::App;
use crate::types::OpDef;
use serde_json::{json, Value};

/// The op table's handlers: each op a type declares is served by one of
/// these, which `check_handlers` proves at start.
macro_rules! handlers {
    ($($name:literal => $handler:expr),* $(,)?) => {
        /// The ops this build serves.
        pub const HANDLED: &[&str] = &[$($name),*];

        pub async fn dispatch(app: &App, op: &OpDef, call: &Call) -> Result<Reply> {
            match op.name.as_str() {
                // Boxed: the dispatch future is then a pointer, not the
                // largest handler's state.
                $($name => Box::pin($handler(app, call)).await,)*
                other => Err(Error::not_implemented(format!(
                    "op '{other}' is part of the {} type but not served by this build",
                    call.ty.name()
                ))),
            }
        }
    };
}

handlers! {
    "get" => read::get,
    "version" => read::version,
    "activity" => read::activity,
    "intention" => read::intention,
    "schema" => read::schema,
    "list" => read::list,
    "stats" => stats::stats,
    "batch_stats" => stats::batch_stats,
    "create" => write::create,
    "update" => write::update,
    "update_meta" => write::update_meta,
    "delete" => write::delete,
    "enable" => write::enable,
    "disable" => write::disable,
    "restore" => write::restore,
    "readme" => source::readme,
    "readme_update" => source::readme_update,
    "source" => source::source,
    "source_branches" => source::branches,
    "source_status" => source::status,
    "source_promote" => release::promote,
    "source_rollback" => release::rollback,
    "source_promotions" => release::promotions,
    "source_validate" => source::validate,
    "source_repair" => source::repair,
    "export_bundle" => source::export_bundle,
    "import_bundle" => source::import_bundle,
    "attachments" => compose::attachments,
    "compose" => compose::compose,
    "remove-modifier" => compose::remove_modifier,
    "context" => graph::context,
    "tree" => graph::tree,
    "promote" => promote::promote,
    "promote_preview" => promote::preview,
    "environments" => promote::environments,
    "snapshots" => promote::snapshots,
    "accept" => ws::accept,
    "send" => ws::send,
    "broadcast" => ws::broadcast,
    "close" => ws::close,
    "connections" => ws::connections,
    "presence" => ws::presence,
    "history" => ws::history,
    "series" => series::series,
    "receive" => ws::receive,
    "test_connection" => ws::test_connection,
    "status" => rate::status,
    "rotate" => tokens::rotate,
    "revoke" => tokens::revoke,
    "tokens" => tokens::tokens,
    "deliveries" => webhooks::deliveries,
    "redeliver" => webhooks::redeliver,
    "test" => webhooks::test,
}

/// Every op of every type has a handler; the server refuses to start
/// otherwise, rather than answer 501 at the first call.
pub fn check_handlers(types: &crate::types::Registry) -> anyhow::Result<()> {
    let missing: Vec<String> = types
        .all()
        .flat_map(|t| t.def.ops.iter().map(move |o| (t.name(), o.name.as_str())))
        .filter(|(_, op)| !HANDLED.contains(op))
        .map(|(ty, op)| format!("{ty}.{op}"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "ops without a handler: {}",
        missing.join(", ")
    );
    Ok(())
}

/// The element JSON the ops answer with.
pub fn element_json(app: &App, el: &Element) -> Value {
    serde_json::to_value(ElementView::of(app, el)).unwrap_or_default()
}

/// An element as the ops show it, borrowed from the row, so a listing is
/// written out without building a JSON tree per element first.
#[derive(serde::Serialize)]
pub struct ElementView<'a> {
    id: &'a str,
    circle: &'a str,
    slug: &'a str,
    name: &'a str,
    element_type: &'a str,
    category: Option<&'a str>,
    form: Option<&'a str>,
    symbol: Option<&'a str>,
    parent: &'a Option<crate::ids::ElementId>,
    state: crate::model::State,
    state_reason: &'a Option<String>,
    intention: &'a Option<String>,
    spec: std::borrow::Cow<'a, Value>,
    meta: &'a Value,
    version: i64,
    created_at: crate::model::Rfc3339,
    updated_at: crate::model::Rfc3339,
    /// An api-token's `active`, `expired` or `revoked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_status: Option<&'static str>,
}

impl<'a> ElementView<'a> {
    pub fn with_token_status(mut self, status: Option<&'static str>) -> Self {
        self.token_status = status;
        self
    }

    pub fn of(app: &'a App, el: &'a Element) -> ElementView<'a> {
        let ty = app.types().get(&el.element_type).ok();
        ElementView {
            id: &el.id,
            circle: el.circle(),
            slug: &el.slug,
            name: &el.name,
            element_type: &el.element_type,
            category: ty.map(|t| t.def.category.as_str()),
            form: ty.map(|t| t.def.form.as_str()),
            symbol: ty.map(|t| t.def.symbol.as_str()),
            parent: &el.parent_id,
            state: el.state,
            state_reason: &el.state_reason,
            intention: &el.intention,
            spec: match ty {
                Some(t) => t.redacted(&el.spec),
                None => std::borrow::Cow::Borrowed(&el.spec),
            },
            meta: &el.meta,
            version: el.version,
            created_at: crate::model::Rfc3339(el.created_at),
            updated_at: crate::model::Rfc3339(el.updated_at),
            token_status: None,
        }
    }
}

/// An element with warnings attached, as write ops answer.
pub fn with_warnings(app: &App, el: &Element, warnings: &[String]) -> Value {
    let mut v = element_json(app, el);
    v["warnings"] = json!(warnings);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every REST call holds the dispatch future; each handler's state is
    /// boxed, so the biggest handler does not size them all.
    #[tokio::test]
    async fn the_op_future_stays_small() {
        let t = crate::service::tests::app().await;
        let app = &t.app;
        let ctx = crate::service::ctx::OpCtx::new(crate::model::Actor::system(), "get", None);
        let circle = app
            .elements()
            .create(
                &ctx,
                None,
                crate::service::elements::NewElement {
                    id: None,
                    element_type: "circle".into(),
                    slug: crate::model::Slug::parse("acme").unwrap(),
                    name: None,
                    spec: None,
                    intention: None,
                    readme: None,
                    repo: None,
                },
            )
            .await
            .unwrap()
            .element;
        let ty = app.types().get("circle").unwrap().clone();
        let op = ty.op("get").unwrap().clone();
        let call = Call {
            ctx,
            element: std::sync::Arc::new(circle.clone()),
            circle: std::sync::Arc::new(circle),
            ty,
            principal: None,
            query: String::new(),
            body: Default::default(),
            headers: Default::default(),
            peer: None,
        };
        let size = std::mem::size_of_val(&dispatch(app, &op, &call));
        eprintln!("op future: {size} bytes");
        assert!(size <= 512, "the op future is {size} bytes");
    }

    #[test]
    fn every_declared_op_has_a_handler() {
        let types = crate::types::Registry::load().unwrap();
        check_handlers(&types).unwrap();
        assert!(HANDLED
            .iter()
            .all(|h| types.all().any(|t| t.op(h).is_some())));
    }
}
