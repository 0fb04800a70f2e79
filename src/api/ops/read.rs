//! Ops that only read.

use super::{element_json, ElementView};
use crate::api::call::{ok, Call, Payload, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::rfc3339;
use crate::model::State;
use crate::service::App;
use crate::store::activity::ActivityQuery;
use crate::store::elements::ListFilter;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn get(app: &App, call: &Call) -> Result<Reply> {
    let mut out = element_json(app, &call.element);
    if call.ty.def.read_only.iter().any(|k| k == "environments") {
        // Server-owned: shown from the snapshots, never stored in spec.
        out["spec"]["environments"] = app.releases().environments_of(&call.element).await?;
    }
    if let Some(status) = app
        .tokens()
        .statuses(&[&call.element])
        .await?
        .get(&call.element.id)
    {
        out["token_status"] = json!(status);
    }
    ok(out)
}

/// Checks an optional `limit` against its range.
pub fn limit(v: Option<i64>, default: i64, max: i64) -> Result<i64> {
    ranged("limit", ErrorCode::InvalidLimit, v, default, max)
}

/// Checks an optional integer parameter against 1..=max.
pub fn ranged(name: &str, code: ErrorCode, v: Option<i64>, default: i64, max: i64) -> Result<i64> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Error::bad_request(
            code,
            format!("{name} must be between 1 and {max}, not {n}"),
        )),
    }
}

#[derive(Deserialize)]
struct VersionQuery {
    #[serde(default)]
    history: bool,
    limit: Option<i64>,
}

pub async fn version(app: &App, call: &Call) -> Result<Reply> {
    let q: VersionQuery = call.query()?;
    let el = &call.element;
    let mut out = json!({
        "element_id": el.id,
        "version": el.version,
        "updated_at": rfc3339(el.updated_at),
    });
    if q.history {
        let n = limit(q.limit, 50, 1000)?;
        let versions: Vec<Value> = app
            .elements()
            .versions(&el.id, n)
            .await?
            .into_iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "name": v.name,
                    "intention": v.intention,
                    "spec": call.ty.redact(&v.spec),
                    "author": v.author,
                    "message": v.message,
                    "created_at": rfc3339(v.created_at),
                })
            })
            .collect();
        out["versions"] = json!(versions);
    }
    ok(out)
}

#[derive(Deserialize)]
struct ActivityParams {
    limit: Option<i64>,
    before: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn activity(app: &App, call: &Call) -> Result<Reply> {
    let q: ActivityParams = call.query()?;
    let n = limit(q.limit, 50, 500)?;
    if let Some(b) = &q.before {
        uuid::Uuid::parse_str(b).map_err(|_| {
            Error::bad_request(ErrorCode::InvalidCursor, "before must be an event id")
        })?;
    }
    // Lifecycle events are written in batches; make ours visible first.
    app.records().flush().await;
    let el = &call.element;
    let events = app
        .elements()
        .activity(&ActivityQuery {
            circle_id: &el.circle_id,
            element_id: (!el.is_root()).then_some(&el.id),
            kind_prefix: q.kind.as_deref(),
            before: q.before.as_deref(),
            after: None,
            limit: n,
        })
        .await?;
    let next = (events.len() as i64 == n).then(|| events.last().map(|e| e.id.clone()));
    // A circle's activity shows only what the caller may read of each
    // child, as its stream does; addresses are for admins.
    let admin = call.require(crate::model::Role::Admin, "").is_ok();
    let mut readable = crate::service::gate::Readable::default();
    let mut shown = Vec::with_capacity(events.len());
    for e in &events {
        if readable.check(app, call.caller(), el.is_root(), e).await {
            shown.push(e.to_json_for(admin));
        }
    }
    ok(json!({
        "events": shown,
        "next_before": next.flatten(),
    }))
}

pub async fn intention(_app: &App, call: &Call) -> Result<Reply> {
    let el = &call.element;
    let mut inherited = Vec::new();
    if !el.is_root() {
        if let Some(i) = call.circle.intention.as_deref().filter(|s| !s.is_empty()) {
            inherited.push(json!({"source": "circle", "slug": call.circle.slug, "intention": i}));
        }
    }
    inherited.push(json!({
        "source": "type",
        "element_type": call.ty.name(),
        "category": call.ty.def.category,
        "intention": call.ty.def.intention,
    }));
    let direct = el.intention.clone().filter(|s| !s.is_empty());
    let resolved = direct
        .clone()
        .or_else(|| inherited[0]["intention"].as_str().map(str::to_string));
    ok(json!({"direct": direct, "inherited": inherited, "resolved": resolved}))
}

pub async fn schema(_app: &App, call: &Call) -> Result<Reply> {
    let ports = &call.ty.def.ports;
    let mut out = Vec::new();
    for (direction, list) in [("input", &ports.inputs), ("output", &ports.outputs)] {
        for p in list {
            out.push(json!({
                "name": p.name,
                "direction": direction,
                "kind": p.kind,
                "required": p.required,
                "schema": p.schema,
            }));
        }
    }
    ok(json!({"element_type": call.ty.name(), "ports": out, "spec_schema": call.ty.def.properties}))
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(rename = "type")]
    element_type: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Parses list paging and filters shared by circle and platform lists.
fn list_filter<'a>(app: &App, q: &'a ListParams) -> Result<ListFilter<'a>> {
    if let Some(t) = q.element_type.as_deref().filter(|t| !t.is_empty()) {
        app.types().get(t)?;
    }
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            Error::bad_request(
                ErrorCode::InvalidState,
                format!(
                    "state must be ready, disabled or deleted, not '{}'",
                    crate::error::shown(s)
                ),
            )
        })?),
    };
    if let Some(c) = &q.cursor {
        uuid::Uuid::parse_str(c).map_err(|_| {
            Error::bad_request(
                ErrorCode::InvalidCursor,
                "cursor is not one this server gave",
            )
        })?;
    }
    Ok(ListFilter {
        element_type: q.element_type.as_deref().filter(|t| !t.is_empty()),
        state,
        after_id: q.cursor.as_deref(),
        limit: limit(q.limit, 50, 200)?,
    })
}

pub async fn list(app: &App, call: &Call) -> Result<Reply> {
    let q: ListParams = call.query()?;
    let f = list_filter(app, &q)?;
    let circle = &call.element.circle_id;
    // The first page without a filter (what consoles and most callers
    // ask) comes from the read cache; written out straight from the rows.
    let plain = f.element_type.is_none() && f.state.is_none() && f.after_id.is_none();
    let rows = match plain {
        true => app.elements().listing(circle, f.limit).await?,
        false => std::sync::Arc::new(app.elements().list(Some(circle), &f).await?),
    };
    let next = (rows.len() as i64 == f.limit)
        .then(|| rows.last().map(|e| e.id.clone()))
        .flatten();
    let shown = call.readable_refs(app, &rows).await?;
    let tokens = app.tokens().statuses(&shown).await?;
    #[derive(serde::Serialize)]
    struct Page<'a> {
        elements: Vec<ElementView<'a>>,
        next_cursor: Option<crate::ids::ElementId>,
    }
    let page = Page {
        elements: (shown.into_iter())
            .map(|e| ElementView::of(app, e).with_token_status(tokens.get(&e.id).copied()))
            .collect(),
        next_cursor: next,
    };
    Ok((
        StatusCode::OK,
        Payload::Serialized(serde_json::to_vec(&page)?.into()),
    ))
}

/// `GET /api/ops/list`: the circles a token can see.
pub async fn list_circles(
    app: &App,
    principal: &crate::service::principal::Principal,
    query: &str,
) -> Result<Value> {
    // Outside the op pipeline, so its parameter check is made here, with
    // the circle's own `list` (the same parameters).
    if let Some(op) = app.types().get("circle")?.op("list") {
        crate::api::input::check_query_names(op, query)?;
    }
    let q: ListParams = crate::api::input::parse_query(query)?;
    let f = list_filter(app, &q)?;
    let rows = if principal.is_platform() {
        app.elements().list(None, &f).await?
    } else {
        // A circle-scoped token sees at most its own circle.
        let own = match &principal.reach {
            crate::model::Reach::Circle { id: Some(id), .. } => {
                app.elements().by_id(&id.as_element()).await?
            }
            _ => None,
        };
        own.into_iter()
            .filter(|c| match f.state {
                Some(s) => c.state == s,
                None => c.state != State::Deleted,
            })
            .filter(|c| f.after_id.is_none_or(|a| c.id.as_str() > a))
            .collect()
    };
    let next = (rows.len() as i64 == f.limit).then(|| rows.last().map(|e| e.id.clone()));
    Ok(json!({
        "circles": rows.iter().map(|e| element_json(app, e)).collect::<Vec<_>>(),
        "next_cursor": next.flatten(),
    }))
}
