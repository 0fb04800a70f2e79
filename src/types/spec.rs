//! Spec handling that every type shares: alias keys, defaults from the
//! JSON Schema, schema validation and the type's validation rules.

use super::Capability;
use super::ElementType;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::secrets::Secrets;
use crate::var_types::{self, SLOTS};
use serde_json::{Map, Value};

/// What `redact` shows in place of a sensitive value.
pub const REDACTED: &str = "[redacted]";

/// The outcome of checking a spec: the filled spec and its warnings.
#[derive(Debug)]
pub struct SpecCheck {
    pub spec: Value,
    pub warnings: Vec<String>,
}

/// Merges `patch` into `base`: objects merge key by key, anything else
/// (lists included) replaces, and `null` removes the key.
pub fn deep_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    deep_merge(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn pointer_path(dotted: &str) -> String {
    format!("/{}", dotted.replace('.', "/"))
}

impl ElementType {
    /// Moves flat alias keys (`max_connections`) to their nested place; a
    /// nested value given in the same document wins. An update lifts its
    /// patch first, so an alias there overrides the stored nested value.
    pub fn lift_aliases(&self, mut map: Map<String, Value>) -> Map<String, Value> {
        for (alias, target) in &self.def.aliases {
            if let Some(v) = map.remove(alias) {
                let mut nested = Value::Object(Map::new());
                let mut cur = &mut nested;
                let parts: Vec<&str> = target.split('.').collect();
                for (i, p) in parts.iter().enumerate() {
                    if i + 1 == parts.len() {
                        cur[*p] = v.clone();
                    } else {
                        cur[*p] = Value::Object(Map::new());
                        cur = &mut cur[*p];
                    }
                }
                let mut merged = nested;
                deep_merge(&mut merged, &Value::Object(map));
                map = match merged {
                    Value::Object(m) => m,
                    _ => unreachable!("merge of objects is an object"),
                };
            }
        }
        map
    }

    /// Moves alias keys to their nested place, fills defaults and validates.
    /// A spec that fails the schema answers 422 with every finding.
    /// 422 when client input sets a server-owned key.
    pub fn check_writable(&self, spec: &Value) -> Result<()> {
        if let Some(k) = self
            .def
            .read_only
            .iter()
            .find(|k| spec.get(k.as_str()).is_some())
        {
            return Err(Error::unprocessable(
                ErrorCode::ReadOnlyField,
                format!(
                    "spec.{k} is kept by the server (see ops/environments and ops/promote); \
                     leave it out"
                ),
            ));
        }
        Ok(())
    }

    pub fn check_spec(&self, spec: Value) -> Result<SpecCheck> {
        let Value::Object(map) = spec else {
            return Err(Error::bad_request(
                ErrorCode::InvalidSpec,
                "spec must be a JSON object",
            ));
        };
        let mut map = self.lift_aliases(map);
        // Server-owned keys never live in a spec (older rows had them).
        for k in &self.def.read_only {
            map.remove(k);
        }
        if self.has_capability(Capability::Resource) {
            infer_type(&mut map);
        }
        let mut spec = Value::Object(map);
        fill_defaults(&mut spec, &self.def.properties);
        // Variable references are checked as the word a value will fill.
        let probe = if self.has_capability(Capability::Websocket) {
            std::borrow::Cow::Owned(crate::vars::neutral(&spec))
        } else {
            std::borrow::Cow::Borrowed(&spec)
        };
        let findings: Vec<String> = self
            .validator
            .iter_errors(&probe)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    format!("spec: {e}")
                } else {
                    format!("spec{at}: {e}")
                }
            })
            .collect();
        if !findings.is_empty() {
            return Err(Error::unprocessable(
                ErrorCode::SpecInvalid,
                format!(
                    "spec does not match the {} schema: {}",
                    self.def.name,
                    findings.join("; ")
                ),
            )
            .with_details(findings));
        }
        let warnings = self.rule_warnings(&spec);
        Ok(SpecCheck { spec, warnings })
    }

    fn rule_warnings(&self, spec: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.def.validation_rules {
            let Some(v) = spec
                .pointer(&pointer_path(&rule.field))
                .and_then(Value::as_f64)
            else {
                continue;
            };
            let other = rule
                .lt_field
                .as_deref()
                .and_then(|f| spec.pointer(&pointer_path(f)))
                .and_then(Value::as_f64);
            let hit = rule.gt.is_some_and(|g| v > g)
                || rule.lt.is_some_and(|l| v < l)
                || other.is_some_and(|o| v < o);
            if hit {
                out.push(rule.message.clone());
            }
        }
        out
    }

    /// A copy of the spec for places that must never hold a secret (git
    /// files, bundles): each sensitive value is left out.
    pub fn without_secrets(&self, spec: &Value) -> Value {
        let mut s = spec.clone();
        if self.is_sensitive(spec) {
            for slot in SLOTS {
                if var_types::slot(spec, slot).is_some() {
                    if let Some((obj, key)) = var_types::slot_parent_mut(&mut s, slot) {
                        obj.remove(&key);
                    }
                }
            }
        }
        s
    }

    /// A spec from git lacks the secrets `without_secrets` left out;
    /// they carry over from the current spec (an environment's only where
    /// the incoming spec still has that environment).
    pub fn keep_secrets(&self, incoming: &Value, current: &Value) -> Value {
        let mut s = incoming.clone();
        if !self.is_sensitive(current) {
            return s;
        }
        for slot in SLOTS {
            let Some(v) = var_types::slot(current, slot) else {
                continue;
            };
            if let Some((obj, key)) = var_types::slot_parent_mut(&mut s, slot) {
                obj.entry(key).or_insert_with(|| v.clone());
            }
        }
        s
    }

    /// Seals each sensitive value of the element `owner` for storage. A
    /// sealed value whose element is no longer sensitive is dropped, never
    /// opened: turning `sensitive` off reveals nothing, and the change
    /// brings its own new value or leaves none.
    pub fn seal_secrets(&self, spec: &mut Value, secrets: &Secrets, owner: &str) {
        if !self.has_capability(Capability::Resource) {
            return;
        }
        let sensitive = self.is_sensitive(spec);
        for slot in SLOTS {
            let Some((obj, key)) = var_types::slot_parent_mut(spec, slot) else {
                continue;
            };
            let Some(value) = obj.get_mut(&key).filter(|v| !v.is_null()) else {
                continue;
            };
            let sealed = Secrets::is_sealed(value);
            // A seal with plain keys merged beside it (rows written before
            // updates replaced sealed values) holds the value meant in the open.
            let merged = Secrets::merged_into_seal(value);
            if sensitive && !sealed {
                *value = secrets.seal(merged.as_ref().unwrap_or(value), owner);
            } else if !sensitive && (sealed || merged.is_some()) {
                obj.remove(&key);
            }
        }
    }

    /// An update's deep merge of `patch` (aliases lifted) into `current`.
    /// A sealed value is opaque, so a new value replaces it whole: merged
    /// beside the seal it would be stored in the open, and lost.
    pub fn merge_patch(&self, current: &Value, patch: Map<String, Value>) -> Value {
        let patch = Value::Object(self.lift_aliases(patch));
        let mut spec = current.clone();
        if self.has_capability(Capability::Resource) {
            for slot in SLOTS {
                let opaque = spec.pointer(slot).is_some_and(|v| {
                    Secrets::is_sealed(v) || Secrets::merged_into_seal(v).is_some()
                });
                if opaque && patch.pointer(slot).is_some() {
                    if let Some((obj, key)) = var_types::slot_parent_mut(&mut spec, slot) {
                        obj.remove(&key);
                    }
                }
            }
        }
        deep_merge(&mut spec, &patch);
        spec
    }

    /// `redact` shows a sensitive value as [`REDACTED`]; a write that
    /// sends it back means "unchanged", so the stored value stays. With no
    /// sensitive value to keep (a create, say) it is refused: storing the
    /// placeholder would silently replace the secret.
    pub fn keep_redacted(&self, spec: &mut Value, current: Option<&Value>) -> Result<()> {
        if !self.has_capability(Capability::Resource) {
            return Ok(());
        }
        for slot in SLOTS {
            if spec.pointer(slot).and_then(Value::as_str) != Some(REDACTED) {
                continue;
            }
            let kept = current
                .filter(|c| self.is_sensitive(c))
                .and_then(|c| var_types::slot(c, slot));
            match (kept, var_types::slot_parent_mut(spec, slot)) {
                (Some(v), Some((obj, key))) => {
                    obj.insert(key, v.clone());
                }
                _ => {
                    return Err(Error::unprocessable(
                        ErrorCode::RedactedValue,
                        format!(
                            "spec.{} '{REDACTED}' stands for a sensitive value the server keeps, \
                             and there is none to keep here; send the value itself",
                            var_types::slot_name(slot)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    pub fn is_sensitive(&self, spec: &Value) -> bool {
        self.has_capability(Capability::Resource)
            && spec.get("sensitive").and_then(Value::as_bool) == Some(true)
    }

    /// A copy of the spec safe to show: sensitive values are withheld.
    pub fn redact(&self, spec: &Value) -> Value {
        self.redacted(spec).into_owned()
    }

    /// [`Self::redact`], borrowing a spec that holds nothing to hide.
    pub fn redacted<'v>(&self, spec: &'v Value) -> std::borrow::Cow<'v, Value> {
        if !self.is_sensitive(spec) {
            return std::borrow::Cow::Borrowed(spec);
        }
        let mut s = spec.clone();
        for slot in SLOTS {
            if var_types::slot(spec, slot).is_some() {
                if let Some((obj, key)) = var_types::slot_parent_mut(&mut s, slot) {
                    obj.insert(key, Value::String(REDACTED.into()));
                }
            }
        }
        std::borrow::Cow::Owned(s)
    }
}

/// Fills missing keys from the schema's `default`s; an object property
/// without a default is created when its own properties have defaults.
/// A spec without `type` takes it from its first value, so variables
/// written before types (a number, an object) keep working; with no value
/// the schema's default (`string`) applies. A sealed value cannot be
/// looked at: it makes `json`, which takes any value.
fn infer_type(spec: &mut Map<String, Value>) {
    if spec.contains_key("type") {
        return;
    }
    let doc = Value::Object(spec.clone());
    let Some(v) = SLOTS.iter().find_map(|s| var_types::slot(&doc, s)) else {
        return;
    };
    let ty = match v {
        _ if Secrets::is_sealed(v) || Secrets::merged_into_seal(v).is_some() => "json",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        _ => "json",
    };
    spec.insert("type".into(), Value::String(ty.into()));
}

fn fill_defaults(value: &mut Value, schema: &Value) {
    let (Some(obj), Some(props)) = (
        value.as_object_mut(),
        schema.get("properties").and_then(Value::as_object),
    ) else {
        return;
    };
    for (key, sub) in props {
        if !obj.contains_key(key) {
            if let Some(d) = sub.get("default") {
                obj.insert(key.clone(), d.clone());
            } else if sub.get("type").and_then(Value::as_str) == Some("object")
                && sub
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.values().any(|s| s.get("default").is_some()))
            {
                obj.insert(key.clone(), Value::Object(Map::new()));
            }
        }
        if let Some(child) = obj.get_mut(key) {
            fill_defaults(child, sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Registry;
    use serde_json::json;

    #[test]
    fn a_type_left_out_comes_from_the_value() {
        for (spec, ty) in [
            (json!({"value": 3}), Some("number")),
            (json!({"value": null, "default": true}), Some("boolean")),
            (
                json!({"environments": {"demo": {"value": [1]}}}),
                Some("json"),
            ),
            (json!({"value": {"$sealed": "v2:x"}}), Some("json")),
            (json!({"value": "x", "type": "json"}), Some("json")),
            (json!({"sensitive": true}), None),
        ] {
            let Value::Object(mut m) = spec.clone() else {
                unreachable!()
            };
            infer_type(&mut m);
            assert_eq!(m.get("type").and_then(Value::as_str), ty, "{spec}");
        }
    }

    #[test]
    fn merge_replaces_lists_and_removes_nulls() {
        let mut a = json!({"a":{"b":1,"c":[1,2]},"d":1});
        deep_merge(&mut a, &json!({"a":{"c":[3]},"d":null}));
        assert_eq!(a, json!({"a":{"b":1,"c":[3]}}));
    }

    fn patch(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_new_value_replaces_a_sealed_one() {
        let r = Registry::load().unwrap();
        let var = r.get("variable").unwrap();
        let cur = json!({"value": {"$sealed": "v2:AAAA"}, "sensitive": true});
        let s = var.merge_patch(&cur, patch(json!({"value": {"a": 1}})));
        assert_eq!(s["value"], json!({"a": 1}));
        // A plain object value still merges.
        let plain = json!({"value": {"b": 2}});
        let s = var.merge_patch(&plain, patch(json!({"value": {"a": 1}})));
        assert_eq!(s["value"], json!({"a": 1, "b": 2}));
    }

    #[test]
    fn the_placeholder_keeps_a_sensitive_value_or_is_refused() {
        let r = Registry::load().unwrap();
        let var = r.get("variable").unwrap();
        let seal = json!({"$sealed": "v2:AAAA"});
        let cur = json!({"value": seal, "sensitive": true});
        let plain = json!({"value": {"b": 2}});
        let mut s = var.merge_patch(&cur, patch(json!({"value": REDACTED})));
        var.keep_redacted(&mut s, Some(&cur)).unwrap();
        assert_eq!(s["value"], seal);
        for before in [None, Some(&plain), Some(&json!({"sensitive": true}))] {
            let mut s = json!({"value": REDACTED, "sensitive": true});
            let e = var.keep_redacted(&mut s, before).unwrap_err();
            assert_eq!(e.code, "REDACTED_VALUE");
            assert_eq!(e.kind, crate::error::Kind::Unprocessable);
        }
    }

    #[test]
    fn websocket_defaults_aliases_and_warnings() {
        let r = Registry::load().unwrap();
        let ws = r.get("websocket").unwrap();
        let c = ws.check_spec(json!({"max_connections": 20000})).unwrap();
        assert_eq!(c.spec["path"], "/ws");
        assert_eq!(c.spec["connection"]["max_connections"], 20000);
        assert_eq!(c.spec["heartbeat"]["interval_ms"], 30000);
        assert!(c.spec.get("max_connections").is_none());
        assert_eq!(c.warnings.len(), 1);
        let err = ws.check_spec(json!({"path": "no-slash"})).unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Unprocessable);
        assert!(ws.check_spec(json!({"bogus": 1})).is_err());
    }
}
