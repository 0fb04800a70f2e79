//! `GET /api/openapi.json`: an OpenAPI 3.1 document of the REST API built
//! from the type registry at start, so it cannot drift from what the
//! pipeline serves. Every op of every type becomes an operation with its
//! method, path, auth level, body limit and the statuses it may answer;
//! each type's `properties` is the schema of its spec. Routes that are not
//! ops (probes, types, events, git) come from the short table in
//! `fixed_routes`, which a test calls one by one.

use crate::config::BODY_LIMIT;
use crate::error_codes::ErrorCode;
use crate::types::{ElementType, Level, OpDef, Registry};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";

/// The document, serialized once: the registry is embedded in the binary,
/// so every server of this process has the same one.
pub fn document(types: &Registry) -> bytes::Bytes {
    static DOC: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_vec(&build(types))
            .expect("a JSON value serializes")
            .into()
    })
    .clone()
}

pub fn build(types: &Registry) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (path, method, op) in fixed_routes(types) {
        paths.entry(path).or_default().insert(method.into(), op);
    }
    for (path, method, op) in registry_ops(types) {
        paths.entry(path).or_default().insert(method, op);
    }
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema(types));
    schemas.insert("Element".into(), element_schema(types));
    for t in types.all() {
        schemas.insert(spec_schema_name(t.name()), t.def.properties.clone());
    }
    let mut tags =
        vec![json!({"name": "platform", "description": "Probes, types, circles and tokens"})];
    tags.extend(types.all().map(|t| {
        json!({"name": t.name(), "description": format!("{} ({} {}): {}",
            t.def.display_name, t.def.category, t.def.form, t.def.description)})
    }));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "elementd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Git-backed element platform service. Generated from the type registry \
                (GET /api/types); every error answers the Error envelope. An op is also reachable \
                by its name (`source_promote` for `source/promote`).",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "An elementd token (`elementd token create`)"},
                "basic": {"type": "http", "scheme": "basic",
                    "description": "Git only: any user name, the token as password"},
            },
            "parameters": {
                "circle": path_param("circle", "The circle's slug"),
                "slug": path_param("slug", "The element's slug, unique in its circle"),
            },
            "schemas": schemas,
        },
    })
}

fn spec_schema_name(ty: &str) -> String {
    format!("spec.{ty}")
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string", "pattern": SLUG_PATTERN}})
}

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

/// Every op of every type, merged by path and method: ops of the root
/// type (circle) sit at `/api/{circle}/ops/…`, all others at
/// `/api/{circle}/{slug}/ops/…`. Types sharing an op share its operation.
fn registry_ops(types: &Registry) -> Vec<(String, String, Value)> {
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
            let op = operation(types, root, &users);
            (url, method, op)
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
    let mut out = json!({
        "operationId": format!("{}{}_{}", if root { "circle_" } else { "" },
            op.name.replace('-', "_"), op.method.to_lowercase()),
        "summary": op.summary,
        "description": format!("Level {}. Types: {}.{}", level_text(op.auth), names.join(", "),
            if op.unlimited { " Attached rate limits do not apply." } else { "" }),
        "tags": names,
        "parameters": params,
        "x-op-name": op.name,
        "x-auth-level": level_name(op.auth),
        "x-element-types": names,
        "x-rate-limited": !op.unlimited,
        "x-error-codes": error_codes(op, &users.iter().map(|(t, _)| *t).collect::<Vec<_>>(), has_body),
        "responses": responses(types, op, &names, has_body),
    });
    if op.auth == Level::None {
        // A public op takes a token when one is given (element auth).
        out["security"] = json!([{}, {"bearer": []}]);
    }
    if let Some(cost) = &op.cost {
        out["x-cost"] = json!(cost);
    }
    if has_body {
        out["x-body-limit"] = json!(limit);
        out["requestBody"] = json!({
            "required": false,
            "description": format!("A JSON object (an empty body reads as {{}}); unknown fields \
                answer 400; at most {limit} bytes."),
            "content": {"application/json": {"schema": request_schema(types, op)}},
        });
    }
    if op.name == "delete" {
        if let Some(p) = out["parameters"].as_array_mut() {
            p.push(json!({"name": "confirm", "in": "query", "required": true,
                "description": "must be true (else 412)", "schema": {"type": "boolean"}}));
        }
    }
    out
}

/// Bodies the registry can describe: create and update carry a spec of a
/// known type; the others are objects whose fields README.md lists.
fn request_schema(types: &Registry, op: &OpDef) -> Value {
    let spec_of = |t: &ElementType| json!({"$ref": format!("#/components/schemas/{}", spec_schema_name(t.name()))});
    match op.name.as_str() {
        "create" => {
            let choices: Vec<Value> = types
                .all()
                .filter(|t| !t.def.root)
                .map(|t| {
                    json!({"properties": {
                        "element_type": {"const": t.name()},
                        "spec": spec_of(t),
                    }})
                })
                .collect();
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["element_type", "slug"],
                "properties": {
                    "element_type": {"type": "string"},
                    "slug": {"type": "string", "pattern": SLUG_PATTERN},
                    "name": {"type": "string", "description": "defaults from the slug"},
                    "intention": {"type": ["string", "null"]},
                    "spec": {"type": "object", "description": "filled with the type's defaults"},
                },
                "oneOf": choices,
            })
        }
        "update" => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "spec": {"type": "object", "description": "deep-merged into the spec (lists \
                    replace, null removes a key) unless deep is false; see the type's spec schema"},
                "name": {"type": "string"},
                "intention": {"type": ["string", "null"]},
                "deep": {"type": "boolean", "default": true},
            },
        }),
        _ => json!({"type": "object"}),
    }
}

fn error_ref(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The statuses an op may answer: success, the errors every op can meet
/// (token, role, addressing, state, rate limits) and the codes its types
/// declare with their statuses.
fn responses(types: &Registry, op: &OpDef, names: &[&str], has_body: bool) -> Value {
    let mut r = Map::new();
    let element = matches!(
        op.name.as_str(),
        "get" | "update" | "create" | "enable" | "disable" | "restore" | "update_meta"
    );
    let ok = if element {
        json!({"description": "The element (write ops add `warnings`)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Element"}}}})
    } else if op.name == "export_bundle" {
        json!({"description": "A git bundle (v2); on a circle, JSON with one base64 bundle per element",
        "content": {
            "application/x-git-bundle": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        }})
    } else {
        json!({"description": "Success", "content": {"application/json": {"schema": {}}}})
    };
    r.insert(if op.name == "create" { "201" } else { "200" }.into(), ok);
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

/// The error envelope; `code` is one of the server's codes.
fn error_schema(_types: &Registry) -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "class", "retryable", "message"],
            "properties": {
                "code": {"type": "string", "enum": codes},
                "class": {"type": "string", "enum": ["validation", "limit", "auth", "not_found",
                    "conflict", "precondition", "internal"]},
                "retryable": {"type": "boolean"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"},
                    "description": "findings, e.g. every schema finding of a 422 as `spec/path: …`"},
            },
        }},
    })
}

/// The element JSON the ops answer with.
fn element_schema(types: &Registry) -> Value {
    let names: Vec<&str> = types.names();
    let string = json!({"type": "string"});
    let maybe = json!({"type": ["string", "null"]});
    json!({
        "type": "object",
        "required": ["id", "circle", "slug", "element_type", "state", "spec", "version"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "circle": string, "slug": {"type": "string", "pattern": SLUG_PATTERN},
            "name": string,
            "element_type": {"type": "string", "enum": names},
            "category": maybe, "form": maybe, "symbol": maybe, "parent": maybe,
            "state": {"type": "string", "enum": ["ready", "disabled", "deleted"]},
            "state_reason": maybe, "intention": maybe,
            "spec": {"type": "object", "description": "matches components/schemas/spec.{element_type}"},
            "meta": {"type": "object"},
            "version": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    })
}

/// A route that is not an op: `(path, method, operationId, tag, public,
/// content type, summary)`.
type Fixed = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static str,
    &'static str,
);

const FIXED: &[Fixed] = &[
    ("/healthz", "get", "healthz", "platform", true, JSON, "Process up"),
    ("/readyz", "get", "readyz", "platform", true, JSON, "Database and repositories reachable"),
    ("/metrics", "get", "metrics", "platform", false, "text/plain", "Prometheus metrics (needs a platform token, circle *)"),
    ("/api/openapi.json", "get", "openapi", "platform", true, JSON, "This document"),
    ("/api/types", "get", "types_list", "platform", true, JSON, "The type registry"),
    ("/api/types/{type}", "get", "type_get", "platform", true, JSON, "One element type"),
    ("/api/ops/create", "post", "circle_create", "platform", false, JSON, "Create a circle (platform admin): {\"element_type\":\"circle\",\"slug\"} → 201"),
    ("/api/ops/list", "get", "circles_list", "platform", false, JSON, "Circles the token can see"),
    ("/api/ops/whoami", "get", "whoami", "platform", false, JSON, "The token's id, circle (* for a platform token) and role"),
    ("/api/{circle}", "get", "circle_read", "circle", false, JSON, "The circle"),
    ("/api/{circle}/{slug}", "get", "element_read", "platform", false, JSON, "The element, as ops/get"),
    ("/api/{circle}/ops/events", "get", "circle_events", "circle", false, SSE, EVENTS),
    ("/api/{circle}/{slug}/ops/events", "get", "element_events", "platform", false, SSE, EVENTS),
    ("/ws/{circle}/{path}", "get", "ws_upgrade", "websocket", true, JSON, "WebSocket endpoint of a websocket element: \
        connect at ws(s)://host/ws/{circle}{spec.path} (?rooms=a,b joins rooms; spec.auth decides the token); \
        101 on upgrade, 426 UPGRADE_REQUIRED to a plain GET, 503 WS_MAX_CONNECTIONS_REACHED"),
    ("/git/{circle}/{repo}/info/refs", "get", "git_info_refs", "platform", false, "application/x-git-upload-pack-advertisement",
        "Git smart HTTP ref advertisement: git clone http://host/git/{circle}/{slug}.git (fetch: viewer, push: member)"),
    ("/git/{circle}/{repo}/{service}", "post", "git_rpc", "platform", false, "application/x-git-upload-pack-result",
        "Git smart HTTP: git-upload-pack or git-receive-pack"),
];

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";
const EVENTS: &str = "Server-Sent Events: every op's started and completed/failed events and the \
    element events; Last-Event-ID resumes from activity; 429 TOO_MANY_STREAMS past the stream caps";

/// Parameters of a fixed route that are not a circle or a slug.
fn extra_param(name: &str, types: &Registry) -> Value {
    let schema = match name {
        "type" => json!({"type": "string", "enum": types.names()}),
        "service" => json!({"type": "string", "enum": ["git-upload-pack", "git-receive-pack"]}),
        _ => json!({"type": "string"}),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// Routes that are not ops of a type: probes, the registry, platform ops,
/// element reads by path, event streams, the websocket endpoint and git.
pub fn fixed_routes(types: &Registry) -> Vec<(String, &'static str, Value)> {
    FIXED
        .iter()
        .map(|&(path, method, id, tag, public, content, summary)| {
            let params: Vec<Value> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(|p| match p {
                    "circle" | "slug" => param_ref(p),
                    other => extra_param(other, types),
                })
                .collect();
            let mut op = json!({
                "operationId": id,
                "summary": summary,
                "tags": [tag],
                "parameters": params,
                "responses": {
                    "200": {"description": "Success", "content": {content: {"schema": {}}}},
                    "401": error_ref("no valid token"),
                    "403": error_ref("the token may not"),
                    "404": error_ref("not found"),
                },
            });
            if public {
                op["security"] = json!([]);
            }
            if path.starts_with("/git/") {
                op["security"] = json!([{"bearer": []}, {"basic": []}]);
            }
            if id == "circle_create" {
                op["x-body-limit"] = json!(BODY_LIMIT);
                op["requestBody"] = json!({"required": true, "content": {JSON: {"schema": {
                    "type": "object", "required": ["element_type", "slug"], "additionalProperties": false,
                    "properties": {"element_type": {"const": "circle"},
                        "slug": {"type": "string", "pattern": SLUG_PATTERN}, "name": {"type": "string"},
                        "intention": {"type": ["string", "null"]},
                        "spec": {"$ref": "#/components/schemas/spec.circle"}}}}}});
                if let Some(r) = op["responses"].as_object_mut() {
                    let ok = r.remove("200").unwrap_or_default();
                    r.insert("201".into(), ok);
                }
            }
            (path.to_string(), method, op)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_of_every_type_is_documented() {
        let types = Registry::load().unwrap();
        let doc = build(&types);
        for t in types.all() {
            for op in &t.def.ops {
                let path = if t.def.root {
                    format!("/api/{{circle}}/ops/{}", op.url_path())
                } else {
                    format!("/api/{{circle}}/{{slug}}/ops/{}", op.url_path())
                };
                let found = &doc["paths"][&path][op.method.to_lowercase()];
                assert_eq!(found["x-op-name"], op.name.as_str(), "{} {path}", t.name());
                assert!(found["x-element-types"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(t.name())));
            }
        }
    }
}
