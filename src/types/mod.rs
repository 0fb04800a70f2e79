//! The element type registry. Types are data: one YAML file each, embedded
//! in the binary and parsed at start. Code asks the registry for ops,
//! schemas and rules; it never branches on a type's name.

mod capability;
pub mod schemas;
mod spec;

pub use capability::Capability;
pub use spec::{deep_merge, SpecCheck};

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const OP_GROUPS: &str = include_str!("ops.yaml");
const TYPE_FILES: &[&str] = &[
    include_str!("circle.yaml"),
    include_str!("project.yaml"),
    include_str!("app.yaml"),
    include_str!("websocket.yaml"),
    include_str!("rate-limit.yaml"),
    include_str!("auth-policy.yaml"),
    include_str!("variable.yaml"),
    include_str!("api-token.yaml"),
    include_str!("webhook.yaml"),
];

/// Auth level an op declares (seed: Read, Write, Execute, Admin, None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    None,
    Read,
    Write,
    Execute,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpDef {
    pub name: String,
    /// URL path under `ops/` when it differs from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub method: String,
    pub auth: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<usize>,
    /// Attached rate limits do not apply (auth-policies still do), so a
    /// limit never locks callers out of seeing or removing modifiers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlimited: bool,
    /// Runs in steps, tells `op.progress` between them, and stops at the
    /// next step when its caller goes away (`op.cancelled`).
    #[serde(default, skip_serializing)]
    pub long: bool,
    pub summary: String,
    /// JSON Schemas of the op's body, query and success answer, for the
    /// OpenAPI document; `$ref: Name` points into schemas.yaml.
    #[serde(default, skip_serializing)]
    pub body: Option<Value>,
    #[serde(default, skip_serializing)]
    pub query: Option<Value>,
    #[serde(default, skip_serializing)]
    pub answer: Option<Value>,
    /// The success status when it is not 200.
    #[serde(default, skip_serializing)]
    pub status: Option<u16>,
    /// The op group of ops.yaml it comes from (set at load).
    #[serde(skip)]
    pub group: Option<String>,
}

impl OpDef {
    pub fn url_path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt_field: Option<String>,
    pub severity: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCodeDef {
    pub code: String,
    pub class: String,
    pub status: u16,
    pub retryable: bool,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDef {
    pub name: String,
    pub kind: String,
    pub required: bool,
    pub schema: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub inputs: Vec<PortDef>,
    pub outputs: Vec<PortDef>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relationships {
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub contained_by: Vec<String>,
    #[serde(default)]
    pub attaches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attaches_to: Vec<String>,
    #[serde(default)]
    pub uses: Vec<String>,
}

/// One element type as its YAML file declares it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    pub name: String,
    pub display_name: String,
    pub category: String,
    pub form: String,
    pub symbol: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root: bool,
    pub description: String,
    pub intention: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guide: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_model: Option<String>,
    pub capabilities: Vec<Capability>,
    pub relationships: Relationships,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    #[serde(default, skip_serializing)]
    pub op_groups: Vec<String>,
    #[serde(default)]
    pub ops: Vec<OpDef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
    /// Server-owned spec keys: shown by `get`, never written by a client
    /// (a manifest's environments live in their own table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<String>,
    pub properties: Value,
    pub ports: Ports,
    pub validation_rules: Vec<Rule>,
    pub error_codes: Vec<ErrorCodeDef>,
    pub metrics: Vec<String>,
    pub events: Vec<String>,
    pub costs: BTreeMap<String, i64>,
}

/// A type ready for use: its definition with op groups merged in and its
/// schema compiled.
pub struct ElementType {
    pub def: TypeDef,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElementType")
            .field("name", &self.def.name)
            .finish()
    }
}

impl ElementType {
    pub fn name(&self) -> &str {
        &self.def.name
    }
    pub fn has_capability(&self, cap: Capability) -> bool {
        self.def.capabilities.contains(&cap)
    }
    /// The ops at a URL path under `ops/` (one per method).
    pub fn ops_at(&self, path: &str) -> Vec<&OpDef> {
        let by_path: Vec<&OpDef> = self
            .def
            .ops
            .iter()
            .filter(|o| o.url_path() == path)
            .collect();
        if by_path.is_empty() {
            self.def.ops.iter().filter(|o| o.name == path).collect()
        } else {
            by_path
        }
    }

    /// Finds an op by its URL path under `ops/`.
    pub fn op(&self, path: &str) -> Option<&OpDef> {
        // The op's name (`source_promote`, as types and activity show it)
        // is accepted beside its URL path (`source/promote`).
        self.def
            .ops
            .iter()
            .find(|o| o.url_path() == path)
            .or_else(|| self.def.ops.iter().find(|o| o.name == path))
    }
    pub fn cost_of(&self, op: &OpDef) -> i64 {
        op.cost
            .as_deref()
            .and_then(|c| self.def.costs.get(c))
            .copied()
            .unwrap_or(0)
    }
    pub fn can_contain(&self, child: &str) -> bool {
        self.def.relationships.contains.iter().any(|c| c == child)
    }
}

/// One op of a type, held with the type: an invocation carries it without
/// copying the op's schemas.
#[derive(Clone)]
pub struct OpRef {
    ty: Arc<ElementType>,
    at: usize,
}

impl OpRef {
    /// `op` must be one of `ty`'s own ops.
    pub fn of(ty: &Arc<ElementType>, op: &OpDef) -> Option<OpRef> {
        let at = ty.def.ops.iter().position(|o| std::ptr::eq(o, op))?;
        Some(OpRef { ty: ty.clone(), at })
    }
}

impl std::ops::Deref for OpRef {
    type Target = OpDef;
    fn deref(&self) -> &OpDef {
        &self.ty.def.ops[self.at]
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    types: Arc<BTreeMap<String, Arc<ElementType>>>,
    /// `GET /api/types` and `/api/types/{type}`, serialized once.
    listing: bytes::Bytes,
    each: Arc<BTreeMap<String, bytes::Bytes>>,
    /// Shared schemas of op bodies and answers (schemas.yaml).
    schemas: Arc<serde_json::Map<String, Value>>,
}

impl Registry {
    pub fn load() -> anyhow::Result<Self> {
        let schemas = schemas::load()?;
        let mut groups: BTreeMap<String, Vec<OpDef>> = yaml_serde::from_str(OP_GROUPS)?;
        for (name, ops) in groups.iter_mut() {
            for op in ops {
                schemas::resolve_op(&schemas, "ops.yaml", op)?;
                op.group = Some(name.clone());
            }
        }
        let mut types = BTreeMap::new();
        for src in TYPE_FILES {
            let mut def: TypeDef = yaml_serde::from_str(src)?;
            for op in &mut def.ops {
                schemas::resolve_op(&schemas, &def.name, op)?;
            }
            for g in &def.op_groups {
                let ops = groups
                    .get(g)
                    .ok_or_else(|| anyhow::anyhow!("type {}: unknown op group {g}", def.name))?;
                def.ops.extend(ops.iter().cloned());
            }
            def.ops.sort_by(|a, b| a.name.cmp(&b.name));
            // Formats are checked, not just annotated (`url: format: uri`).
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&def.properties)
                .map_err(|e| anyhow::anyhow!("type {}: bad schema: {e}", def.name))?;
            types.insert(def.name.clone(), Arc::new(ElementType { def, validator }));
        }
        let defs: Vec<&TypeDef> = types.values().map(|t| &t.def).collect();
        let listing = serde_json::to_vec(&serde_json::json!({ "types": defs }))?.into();
        let each = types
            .iter()
            .map(|(n, t)| Ok((n.clone(), serde_json::to_vec(&t.def)?.into())))
            .collect::<serde_json::Result<BTreeMap<_, _>>>()?;
        Ok(Registry {
            types: Arc::new(types),
            listing,
            each: Arc::new(each),
            schemas: Arc::new(schemas),
        })
    }

    /// The shared schemas op bodies and answers refer to.
    pub fn schemas(&self) -> &serde_json::Map<String, Value> {
        &self.schemas
    }

    /// Whether the named type has `cap` (an unknown type has none).
    pub fn has(&self, type_name: &str, cap: Capability) -> bool {
        self.get(type_name).is_ok_and(|t| t.has_capability(cap))
    }

    pub fn get(&self, name: &str) -> Result<&Arc<ElementType>> {
        self.types.get(name).ok_or_else(|| {
            Error::bad_request(
                ErrorCode::UnknownType,
                format!(
                    "unknown element_type '{name}'; known types: {}",
                    self.names().join(", ")
                ),
            )
        })
    }

    /// Every type as `GET /api/types` answers it (JSON, built at load).
    pub fn listing(&self) -> bytes::Bytes {
        self.listing.clone()
    }

    /// One type as `GET /api/types/{type}` answers it.
    pub fn json_of(&self, name: &str) -> Option<bytes::Bytes> {
        self.each.get(name).cloned()
    }

    /// Whether some type attaches elements of type `name` (a change of
    /// one may change what its targets run with).
    pub fn is_attachable(&self, name: &str) -> bool {
        self.types
            .values()
            .any(|t| t.def.relationships.attaches.iter().any(|a| a == name))
    }

    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ElementType>> {
        self.types.values()
    }

    /// The op groups of ops.yaml, in order.
    pub fn groups(&self) -> Vec<&str> {
        let mut g: Vec<&str> = self
            .all()
            .flat_map(|t| t.def.ops.iter().filter_map(|o| o.group.as_deref()))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }

    /// Whether any type has an op at `path` that needs no platform token;
    /// without one, anything else is refused before the element is read.
    pub fn is_public_op(&self, path: &str) -> bool {
        self.all()
            .filter_map(|t| t.op(path))
            .any(|o| o.auth == Level::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_loads_all_nine_types() {
        let r = Registry::load().unwrap();
        assert_eq!(
            r.names(),
            [
                "api-token",
                "app",
                "auth-policy",
                "circle",
                "project",
                "rate-limit",
                "variable",
                "webhook",
                "websocket"
            ]
        );
        let ws = r.get("websocket").unwrap();
        assert_eq!(ws.op("test-connection").unwrap().name, "test_connection");
        assert_eq!(ws.op("receive").unwrap().auth, Level::None);
        assert_eq!(ws.cost_of(ws.op("send").unwrap()), 10000);
        assert!(r.get("circle").unwrap().op("promote").is_none());
    }
}
