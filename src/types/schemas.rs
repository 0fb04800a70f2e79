//! Shapes of op bodies, queries and answers (schemas.yaml and the ops'
//! `body`, `query` and `answer`), for the OpenAPI document. A `$ref` names
//! a schema of schemas.yaml (`$ref: Element`) and is rewritten to its
//! place in the document; an unknown name fails the start.

use super::OpDef;
use serde_json::{Map, Value};

const SCHEMAS: &str = include_str!("schemas.yaml");

/// Where the shared schemas sit in the OpenAPI document.
pub const PREFIX: &str = "#/components/schemas/";

/// The shared schemas, their `$ref`s among themselves resolved.
pub fn load() -> anyhow::Result<Map<String, Value>> {
    parse(SCHEMAS)
}

fn parse(src: &str) -> anyhow::Result<Map<String, Value>> {
    let mut all: Map<String, Value> = yaml_serde::from_str(src)?;
    let names: Vec<String> = all.keys().cloned().collect();
    for (name, schema) in all.iter_mut() {
        resolve(&names, schema).map_err(|e| anyhow::anyhow!("schemas.yaml {name}: {e}"))?;
    }
    Ok(all)
}

/// Resolves the `$ref`s of one op's schemas; `whose` names the file.
pub fn resolve_op(schemas: &Map<String, Value>, whose: &str, op: &mut OpDef) -> anyhow::Result<()> {
    let names: Vec<String> = schemas.keys().cloned().collect();
    for (part, s) in [
        ("body", &mut op.body),
        ("query", &mut op.query),
        ("answer", &mut op.answer),
    ] {
        if let Some(s) = s {
            resolve(&names, s).map_err(|e| anyhow::anyhow!("{whose} {} {part}: {e}", op.name))?;
        }
    }
    // A query is an object schema whose properties are the parameters.
    if let Some(q) = &op.query {
        anyhow::ensure!(
            q["properties"].is_object(),
            "{whose} {}: query needs properties",
            op.name
        );
    }
    Ok(())
}

fn resolve(names: &[String], v: &mut Value) -> anyhow::Result<()> {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                anyhow::ensure!(names.contains(r), "unknown $ref '{r}'");
                *r = format!("{PREFIX}{r}");
            }
            m.values_mut().try_for_each(|x| resolve(names, x))
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| resolve(names, x)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_ref_fails_the_start() {
        let err = parse("A: {type: object, properties: {b: {$ref: Nope}}}\n").unwrap_err();
        assert!(err.to_string().contains("unknown $ref 'Nope'"), "{err}");
        let ok = parse("A: {type: string}\nB: {items: {$ref: A}}\n").unwrap();
        assert_eq!(ok["B"]["items"]["$ref"], "#/components/schemas/A");
        let mut op: OpDef = yaml_serde::from_str(
            "{name: x, method: POST, auth: read, summary: s, body: {$ref: Missing}}",
        )
        .unwrap();
        let err = resolve_op(&ok, "t", &mut op).unwrap_err();
        assert!(err.to_string().contains("'Missing'"), "{err}");
    }

    #[test]
    fn every_op_schema_of_the_registry_resolves() {
        let r = crate::types::Registry::load().unwrap();
        assert!(r.schemas().contains_key("Element"));
        let ws = r.get("websocket").unwrap();
        let b = ws.op("broadcast").unwrap();
        assert_eq!(b.body.as_ref().unwrap()["additionalProperties"], false);
    }
}
