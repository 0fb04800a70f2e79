//! One op of the registry as an OpenAPI operation: its parameters (path
//! and query), body, answers and error codes, all read from the op's
//! definition.

use super::{error_ref, json_answer, param_ref};
use crate::config::BODY_LIMIT;
use crate::error_codes::ErrorCode;
use crate::types::{ElementType, Level, OpDef, Registry};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Every op of every type, merged by path and method: ops of the root
/// type (circle) sit at `/api/{circle}/ops/…`, all others at
/// `/api/{circle}/{slug}/ops/…`. Types sharing an op share its operation.
pub(super) fn registry_ops(types: &Registry) -> Vec<(String, String, Value)> {
    type Key = (bool, String, String);
    let mut by_key: BTreeMap<Key, Vec<(&ElementType, &OpDef)>> = BTreeMap::new();
    for t in types.all() {
        for op in &t.def.ops {
            let key = (
                t.def.root,
                op.url_path().to_string(),
                op.method.to_lowercase(),
            );
            by_key.entry(key).or_default().push((t.as_ref(), op));
        }
    }
    by_key
        .into_iter()
        .map(|((root, path, method), users)| {
            let url = if root {
                format!("/api/{{circle}}/ops/{path}")
            } else {
                format!("/api/{{circle}}/{{slug}}/ops/{path}")
            };
            (url, method, operation(types, root, &users))
        })
        .collect()
}

fn level_text(level: Level) -> &'static str {
    match level {
        Level::None => "none: no platform token; the element's own auth applies",
        Level::Read => "read: viewer role or above",
        Level::Write => "write: member role or above",
        Level::Execute => "execute: member role or above",
        Level::Admin => "admin: admin role",
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::None => "none",
        Level::Read => "read",
        Level::Write => "write",
        Level::Execute => "execute",
        Level::Admin => "admin",
    }
}

/// The operation id: stable, unique, and the name a generated client gives
/// the method (`source_promote_post`, `circle_list_get`).
pub fn operation_id(root: bool, op: &OpDef) -> String {
    format!(
        "{}{}_{}",
        if root { "circle_" } else { "" },
        op.name.replace('-', "_"),
        op.method.to_lowercase()
    )
}

/// The first of several types' definitions that says `part` (the types
/// sharing an op share its shapes; ops.yaml declares them once).
fn shape<'a>(
    users: &'a [(&ElementType, &OpDef)],
    part: fn(&OpDef) -> &Option<Value>,
) -> Option<&'a Value> {
    users.iter().find_map(|(_, o)| part(o).as_ref())
}

/// One operation from the op definitions of the types that have it (the
/// same name, method and level in each, as ops.yaml groups them).
fn operation(types: &Registry, root: bool, users: &[(&ElementType, &OpDef)]) -> Value {
    let (_, op) = users[0];
    let names: Vec<&str> = users.iter().map(|(t, _)| t.name()).collect();
    let has_body = matches!(op.method.as_str(), "POST" | "PATCH" | "PUT");
    let limit = op.body_limit.unwrap_or(BODY_LIMIT);
    let mut params = vec![param_ref("circle")];
    if !root {
        params.push(param_ref("slug"));
    }
    if let Some(q) = shape(users, |o| &o.query) {
        params.extend(query_params(q));
    }
    let mut out = json!({
        "operationId": operation_id(root, op),
        "summary": op.summary,
        "description": format!("Level {}. Types: {}.{}", level_text(op.auth), names.join(", "),
            if op.unlimited { " Attached rate limits do not apply." } else { "" }),
        // A group's op sits under its group (a generated client's module),
        // a type's own op under its type.
        "tags": [op.group.as_deref().unwrap_or(names[0])],
        "parameters": params,
        "x-op-name": op.name,
        "x-auth-level": level_name(op.auth),
        "x-element-types": names,
        "x-rate-limited": !op.unlimited,
        "x-error-codes": error_codes(op, &users.iter().map(|(t, _)| *t).collect::<Vec<_>>(), has_body),
        "responses": responses(types, op, users, has_body),
    });
    if op.auth == Level::None {
        // A public op takes a token when one is given (element auth).
        out["security"] = json!([{}, {"bearer": []}]);
    }
    if let Some(cost) = &op.cost {
        out["x-cost"] = json!(cost);
    }
    if has_body {
        let schema = shape(users, |o| &o.body)
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        out["x-body-limit"] = json!(limit);
        out["requestBody"] = json!({
            "required": false,
            "description": format!("A JSON object (an empty body reads as {{}}); unknown fields \
                answer 400; at most {limit} bytes."),
            "content": {"application/json": {"schema": schema}},
        });
    }
    out
}

/// The query schema's properties as parameters, each with its type.
fn query_params(q: &Value) -> Vec<Value> {
    let required: Vec<&str> = q["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    q["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut p = json!({"name": name, "in": "query",
                "required": required.contains(&name.as_str()), "schema": schema});
            if let Some(d) = description {
                p["description"] = d;
            }
            p
        })
        .collect()
}

/// The statuses an op may answer: its success with the answer's shape,
/// the errors every op can meet (token, role, addressing, state, rate
/// limits) and the codes its types declare with their statuses.
fn responses(
    types: &Registry,
    op: &OpDef,
    users: &[(&ElementType, &OpDef)],
    has_body: bool,
) -> Value {
    let names: Vec<&str> = users.iter().map(|(t, _)| t.name()).collect();
    let mut r = Map::new();
    let answer = shape(users, |o| &o.answer);
    let status = users.iter().find_map(|(_, o)| o.status).unwrap_or(200);
    match answer {
        Some(a) if op.name == "export_bundle" => {
            r.insert(status.to_string(), json!({
                "description": "A git bundle (v2) of an element; on a circle, JSON with one base64 bundle per element",
                "content": {
                    "application/x-git-bundle": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": a},
                }}));
        }
        Some(a) => {
            r.insert(status.to_string(), json_answer("Success", a.clone()));
        }
        // Only `accept` has no answer of its own: it is always a 426.
        None => {}
    }
    let mut errors: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut add = |status: u16, why: &str| errors.entry(status).or_default().push(why.into());
    add(400, "bad input (the message names the field or parameter)");
    add(401, "no valid token");
    add(403, "the token's role is too low");
    add(
        404,
        "no such circle, element or op (another circle's elements answer 404 too)",
    );
    add(
        409,
        "the element is disabled (ELEMENT_DISABLED) or the change conflicts",
    );
    if !op.unlimited {
        add(
            429,
            "an attached rate-limit (RATE_LIMITED, with Retry-After)",
        );
    }
    add(500, "internal error (details in the server log)");
    if has_body {
        add(408, "the body came too slowly (BODY_TIMEOUT)");
        add(413, "the body is over the op's limit (BODY_TOO_LARGE)");
        add(415, "a Content-Encoding on the body");
    }
    if matches!(op.name.as_str(), "create" | "update" | "restore") {
        add(
            422,
            "the spec fails the type's schema (SPEC_INVALID; `details` lists each finding)",
        );
    }
    if op.name == "delete" {
        add(412, "?confirm=true is missing");
    }
    if op.long {
        add(
            499,
            "OP_CANCELLED: the caller left, and the op stopped between two whole steps (told as op.cancelled; nobody reads this answer)",
        );
    }
    if op.name == "accept" {
        add(
            426,
            "UPGRADE_REQUIRED: connect with a WebSocket client; `details` holds the endpoint",
        );
    }
    for t in types.all().filter(|t| names.contains(&t.name())) {
        for code in &t.def.error_codes {
            add(
                code.status,
                &format!("{} ({}): {}", code.code, t.name(), code.description),
            );
        }
    }
    for (status, why) in errors {
        let mut why = why;
        why.dedup();
        r.insert(status.to_string(), error_ref(&why.join("; ")));
    }
    Value::Object(r)
}

/// Every code an op may answer: those of the way in, of its own checks
/// and service work, and those its types declare.
fn error_codes(op: &OpDef, types: &[&ElementType], has_body: bool) -> Vec<&'static str> {
    use crate::api::ops::codes;
    let mut out: Vec<ErrorCode> = codes::EVERY_OP.to_vec();
    if !op.unlimited {
        out.extend(codes::RATED);
    }
    if has_body {
        out.extend(codes::BODY);
    }
    out.extend(codes::own(&op.name));
    for t in types {
        for c in &t.def.error_codes {
            out.extend(ErrorCode::ALL.iter().filter(|k| k.as_str() == c.code));
        }
    }
    let mut names: Vec<&'static str> = out.iter().map(|c| c.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}
