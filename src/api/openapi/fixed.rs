//! Routes that are not ops of a type: probes, the registry, platform ops,
//! element reads by path, event streams, the websocket endpoint and git.

use super::{error_ref, json_answer, param_ref, schema_ref, SLUG_PATTERN};
use crate::config::BODY_LIMIT;
use crate::types::Registry;
use serde_json::{json, Value};

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
    ("/readyz", "get", "readyz", "platform", true, JSON, "Database and repositories reachable (503 when not)"),
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

/// What a fixed route answers on success, by its operation id.
fn answer(id: &str, content: &str) -> Value {
    let object = json!({"type": "object"});
    let schema = match id {
        "healthz" => json!({"type": "object", "required": ["status"],
            "properties": {"status": {"const": "ok"}}}),
        "readyz" => json!({"type": "object", "required": ["status", "database", "repositories"],
            "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                "database": {"type": "string"}, "repositories": {"type": "string"},
                "cluster": object}}),
        "types_list" => json!({"type": "object", "required": ["types"],
            "properties": {"types": {"type": "array", "items": object}}}),
        "type_get" => json!({"type": "object", "required": ["name", "properties"],
            "properties": {"name": {"type": "string"}, "properties": object}}),
        "openapi" => json!({"type": "object", "required": ["openapi", "paths"]}),
        "circle_create" | "circle_read" | "element_read" => schema_ref("Element"),
        "circles_list" => schema_ref("Circles"),
        "whoami" => schema_ref("Whoami"),
        _ => json!({"type": "string", "description": "not JSON"}),
    };
    json!({"description": "Success", "content": {content: {"schema": schema}}})
}

/// Parameters that are not in the path: the events' resume point, the
/// websocket's rooms.
fn header_and_query(id: &str) -> Vec<Value> {
    match id {
        "circle_events" | "element_events" => vec![json!({"name": "Last-Event-ID", "in": "header",
            "required": false, "description": "resume after this event (an id the stream sent)",
            "schema": {"type": "string", "format": "uuid"}})],
        "ws_upgrade" => vec![json!({"name": "rooms", "in": "query", "required": false,
            "description": "comma-separated rooms to join (spec.rooms.enabled)",
            "schema": {"type": "string"}})],
        _ => Vec::new(),
    }
}

/// Routes that are not ops of a type, typed as far as they answer JSON.
pub fn fixed_routes(types: &Registry) -> Vec<(String, &'static str, Value)> {
    FIXED
        .iter()
        .map(|&(path, method, id, tag, public, content, summary)| {
            let mut params: Vec<Value> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(|p| match p {
                    "circle" | "slug" => param_ref(p),
                    other => extra_param(other, types),
                })
                .collect();
            params.extend(header_and_query(id));
            let ok = if id == "circle_create" { "201" } else { "200" };
            let mut op = json!({
                "operationId": id,
                "summary": summary,
                "tags": [tag],
                "parameters": params,
                "responses": {
                    ok: answer(id, content),
                    "401": error_ref("no valid token"),
                    "403": error_ref("the token may not"),
                    "404": error_ref("not found"),
                },
            });
            if id == "readyz" {
                op["responses"]["503"] = json_answer("Not ready", answer(id, JSON)["content"][JSON]["schema"].clone());
            }
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
            }
            (path.to_string(), method, op)
        })
        .collect()
}
