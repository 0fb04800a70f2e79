//! `GET /api/openapi.json`: an OpenAPI 3.1 document of the REST API built
//! from the type registry at start, so it cannot drift from what the
//! pipeline serves. Every op of every type becomes an operation
//! (`operation.rs`) with its method, path, auth level, body limit, the
//! shapes of its body, query and answer (the op's `body`, `query` and
//! `answer` in the YAML, shared ones from schemas.yaml) and the statuses
//! and codes it may answer; each type's `properties` is the schema of its
//! spec. Routes that are not ops (probes, types, events, git) come from
//! the short table in `fixed.rs`, which a test calls one by one.

mod fixed;
mod operation;

pub use fixed::fixed_routes;

use crate::error_codes::ErrorCode;
use crate::types::Registry;
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
    for (path, method, op) in operation::registry_ops(types) {
        paths.entry(path).or_default().insert(method, op);
    }
    let mut schemas = types.schemas().clone();
    schemas.insert("Error".into(), error_schema());
    for t in types.all() {
        schemas.insert(spec_schema_name(t.name()), t.def.properties.clone());
    }
    let mut tags =
        vec![json!({"name": "platform", "description": "Probes, types, circles and tokens"})];
    tags.extend(types.groups().into_iter().map(|g| {
        json!({"name": g, "description": format!("The {g} ops every type of that group has (x-element-types lists them)")})
    }));
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
                (GET /api/types); every error answers the Error envelope, and each operation \
                lists the codes it may answer in x-error-codes. An op is also reachable by its \
                name (`source_promote` for `source/promote`).",
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

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{}{name}", crate::types::schemas::PREFIX)})
}

fn error_ref(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": schema_ref("Error")}}})
}

fn json_answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The error envelope; `code` is one of the server's codes.
fn error_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "class", "retryable", "message"],
            "properties": {
                "code": {"anyOf": [
                    {"type": "string", "enum": codes},
                    {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{1,63}$",
                     "description": "a rate-limit's own response.code"},
                ]},
                "class": {"type": "string", "enum": ["validation", "limit", "auth", "not_found",
                    "conflict", "precondition", "internal"]},
                "retryable": {"type": "boolean"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"},
                    "description": "findings, e.g. every schema finding of a 422 as `spec/path: …`"},
                "reason": {"type": "string",
                    "description": "why a token was refused (WS_TOKEN_INVALID: expired, signature, issuer, …)"},
                "retry_after_ms": {"type": "integer", "minimum": 0,
                    "description": "a rate limit's wait (Retry-After has it in seconds)"},
            },
        }},
    })
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

    /// Generated clients name their methods after these.
    #[test]
    fn operation_ids_are_stable() {
        let doc = build(&Registry::load().unwrap());
        let id = |path: &str, method: &str| doc["paths"][path][method]["operationId"].clone();
        assert_eq!(
            id("/api/{circle}/{slug}/ops/source/promote", "post"),
            "source_promote_post"
        );
        assert_eq!(
            id("/api/{circle}/{slug}/ops/broadcast", "post"),
            "broadcast_post"
        );
        assert_eq!(id("/api/{circle}/ops/list", "get"), "circle_list_get");
        assert_eq!(
            id("/api/{circle}/{slug}/ops/remove-modifier", "post"),
            "remove_modifier_post"
        );
        let broadcast = &doc["paths"]["/api/{circle}/{slug}/ops/broadcast"]["post"];
        assert_eq!(broadcast["tags"], json!(["websocket"]));
        let body = &broadcast["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["additionalProperties"], false);
        assert!(body["properties"]["room"].is_object());
    }

    /// Every op that takes a body describes it, and every op that can
    /// succeed types its answer: a generated client has no `{}` to guess at.
    #[test]
    fn every_body_and_answer_is_typed() {
        let types = Registry::load().unwrap();
        let doc = build(&types);
        let mut bodies = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(b) = op.get("requestBody") {
                    let s = &b["content"]["application/json"]["schema"];
                    assert!(
                        s.get("$ref").is_some()
                            || s.get("properties").is_some()
                            || s["description"] == "not read",
                        "{method} {path}: untyped body {s}"
                    );
                    bodies += 1;
                }
                let answers = op["responses"].as_object().unwrap();
                for (status, r) in answers.iter().filter(|(s, _)| s.starts_with('2')) {
                    for (ct, c) in r["content"].as_object().into_iter().flatten() {
                        assert_ne!(c["schema"], json!({}), "{method} {path} {status} {ct}");
                    }
                }
            }
        }
        assert!(bodies >= 38, "{bodies} bodies");
    }
}
