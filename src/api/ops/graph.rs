//! `context` and `tree`: the element's place in the graph.

use super::read::ranged;
use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Element;
use crate::service::graph::Rel;
use crate::service::App;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};

fn node(el: &Element, metadata: bool) -> Value {
    let mut v = json!({"id": el.id, "slug": el.slug, "element_type": el.element_type});
    if metadata {
        v["name"] = json!(el.name);
        v["state"] = json!(el.state);
        v["version"] = json!(el.version);
    }
    v
}

#[derive(Deserialize)]
struct ContextQuery {
    depth: Option<i64>,
    types: Option<String>,
}

pub async fn context(app: &App, call: &Call) -> Result<Reply> {
    let q: ContextQuery = call.query()?;
    let depth = ranged("depth", ErrorCode::InvalidDepth, q.depth, 1, 5)?;
    let types: Vec<String> = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    for t in &types {
        let known = app
            .types()
            .all()
            .any(|ty| &ty.def.name == t || &ty.def.category == t);
        if !known {
            return Err(Error::bad_request(
                ErrorCode::UnknownType,
                format!(
                    "types: '{}' is neither a type nor a category; see GET /api/types",
                    crate::error::shown(t)
                ),
            ));
        }
    }
    let wanted = |el: &Element| {
        types.is_empty()
            || types.contains(&el.element_type)
            || app
                .types()
                .get(&el.element_type)
                .is_ok_and(|t| types.contains(&t.def.category))
    };
    let mut seen = HashSet::from([call.element.id.clone()]);
    let mut queue = VecDeque::from([(call.element_owned(), 0)]);
    let mut out = Vec::new();
    while let Some((el, d)) = queue.pop_front() {
        if d >= depth {
            continue;
        }
        for (rel, n) in app.graph().neighbors(&el).await? {
            if !seen.insert(n.id.clone()) {
                continue;
            }
            if wanted(&n) {
                let mut v = node(&n, true);
                v["relationship"] = json!(rel.as_str());
                v["depth"] = json!(d + 1);
                v["via"] = json!(el.slug);
                out.push(v);
            }
            queue.push_back((n, d + 1));
        }
    }
    ok(json!({"element": node(&call.element, true), "depth": depth, "connections": out}))
}

#[derive(Deserialize)]
struct TreeQuery {
    depth: Option<i64>,
    #[serde(default)]
    include_metadata: bool,
}

/// Children down to `depth`, counting what it passes by type.
async fn subtree(
    app: &App,
    el: &Element,
    depth: i64,
    meta: bool,
    counts: &mut BTreeMap<String, i64>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    if depth == 0 {
        return Ok(out);
    }
    for c in app.elements().children(el).await? {
        *counts.entry(c.element_type.clone()).or_default() += 1;
        let mut v = node(&c, meta);
        v["children"] = json!(Box::pin(subtree(app, &c, depth - 1, meta, counts)).await?);
        out.push(v);
    }
    Ok(out)
}

pub async fn tree(app: &App, call: &Call) -> Result<Reply> {
    let q: TreeQuery = call.query()?;
    let depth = ranged("depth", ErrorCode::InvalidDepth, q.depth, 3, 10)?;
    let meta = q.include_metadata;
    let el = &call.element;
    let mut ancestors = Vec::new();
    let mut cur = app.graph().parent_of(el).await?;
    while let Some(p) = cur {
        ancestors.push(node(&p, meta));
        cur = app.graph().parent_of(&p).await?;
        if ancestors.len() > 10 {
            break;
        }
    }
    ancestors.reverse();
    let mut counts = BTreeMap::new();
    let children = subtree(app, el, depth, meta, &mut counts).await?;
    let mut attachments = Vec::new();
    let mut members = Vec::new();
    let mut referenced_by = Vec::new();
    let (mut uses, mut used_by) = (Vec::new(), Vec::new());
    for (rel, n) in app.graph().neighbors(el).await? {
        match rel {
            Rel::Uses => uses.push(node(&n, meta)),
            Rel::UsedBy => used_by.push(node(&n, meta)),
            Rel::Attaches => attachments.push(node(&n, meta)),
            Rel::References => members.push(node(&n, meta)),
            Rel::ReferencedBy => referenced_by.push(node(&n, meta)),
            _ => {}
        }
    }
    let total: i64 = counts.values().sum();
    ok(json!({
        "element": node(el, meta),
        "ancestors": ancestors,
        "children": children,
        "members": members,
        "referenced_by": referenced_by,
        "attachments": attachments,
        "uses": uses,
        "used_by": used_by,
        "stats": {"descendants": total, "by_type": counts, "depth": depth},
    }))
}
