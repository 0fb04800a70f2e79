//! A variable's type and validation rules, and the places its values
//! live: `value`, `default` and one `value` per environment. Every value
//! is checked on every write; a sensitive one is checked opened but never
//! quoted.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Where a variable keeps a value (JSON pointers); each is sealed, hidden
/// and checked alike.
pub const SLOTS: [&str; 5] = [
    "/value",
    "/default",
    "/environments/draft/value",
    "/environments/demo/value",
    "/environments/live/value",
];

pub const TYPES: [&str; 4] = ["string", "number", "boolean", "json"];
const MAX_PATTERN: usize = 512;
// Bounds what a hostile pattern may cost to compile and to run.
const REGEX_SIZE: usize = 256 * 1024;

/// `environments.demo.value` for `/environments/demo/value`.
pub fn slot_name(slot: &str) -> String {
    slot.trim_start_matches('/').replace('/', ".")
}

/// The object holding a slot's key, and the key.
pub fn slot_parent_mut<'a>(
    spec: &'a mut Value,
    slot: &str,
) -> Option<(&'a mut Map<String, Value>, String)> {
    let (parent, key) = slot.rsplit_once('/')?;
    let obj = spec.pointer_mut(parent)?.as_object_mut()?;
    Some((obj, key.to_string()))
}

/// A slot's value; `null` counts as none.
pub fn slot<'a>(spec: &'a Value, slot: &str) -> Option<&'a Value> {
    spec.pointer(slot).filter(|v| !v.is_null())
}

/// The slot environment `env` (`draft`, `demo`, `live`) runs: its own
/// value, then `value`, then `default`.
pub fn slot_for(spec: &Value, env: &str) -> Option<&'static str> {
    let own = format!("/environments/{env}/value");
    let own = SLOTS.into_iter().find(|s| *s == own)?;
    [own, SLOTS[0], SLOTS[1]]
        .into_iter()
        .find(|s| slot(spec, s).is_some())
}

/// A variable's type and rules, themselves checked.
#[derive(Debug)]
pub struct Rules {
    ty: String,
    pattern: Option<(String, Regex)>,
    min: Option<f64>,
    max: Option<f64>,
    one_of: Option<Vec<Value>>,
    max_length: Option<u64>,
}

impl Rules {
    /// Err names what is wrong with the rules (a pattern that is no
    /// regex, a rule the type has no use for).
    pub fn parse(spec: &Value) -> Result<Rules, String> {
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string")
            .to_string();
        if !TYPES.contains(&ty.as_str()) {
            return Err(format!("type '{ty}' is not one of {}", TYPES.join(", ")));
        }
        let v = spec.get("validation").cloned().unwrap_or(Value::Null);
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        let mut rules = Rules {
            ty,
            pattern: None,
            min: get("min").and_then(Value::as_f64),
            max: get("max").and_then(Value::as_f64),
            one_of: get("enum").and_then(Value::as_array).cloned(),
            max_length: get("max_length").and_then(Value::as_u64),
        };
        if let Some(p) = get("pattern").and_then(Value::as_str) {
            if p.chars().count() > MAX_PATTERN {
                return Err(format!(
                    "validation.pattern is longer than {MAX_PATTERN} characters"
                ));
            }
            let re = RegexBuilder::new(p)
                .size_limit(REGEX_SIZE)
                .dfa_size_limit(REGEX_SIZE)
                .build()
                .map_err(|e| {
                    let first = e.to_string();
                    let first = first.lines().last().unwrap_or_default().trim().to_string();
                    format!("validation.pattern '{p}' is not a usable regular expression: {first}")
                })?;
            rules.pattern = Some((p.to_string(), re));
        }
        let string_only = [
            ("pattern", rules.pattern.is_some()),
            ("max_length", rules.max_length.is_some()),
        ];
        let number_only = [("min", rules.min.is_some()), ("max", rules.max.is_some())];
        for (rule, set) in string_only {
            if set && rules.ty != "string" {
                return Err(format!(
                    "validation.{rule} applies to string variables, not to type {}",
                    rules.ty
                ));
            }
        }
        for (rule, set) in number_only {
            if set && rules.ty != "number" {
                return Err(format!(
                    "validation.{rule} applies to number variables, not to type {} \
                     (a string's length is bounded by max_length)",
                    rules.ty
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (rules.min, rules.max) {
            if lo > hi {
                return Err(format!("validation.min {lo} is above validation.max {hi}"));
            }
        }
        if let Some(list) = &rules.one_of {
            for (i, entry) in list.iter().enumerate() {
                if !rules.has_type(entry) {
                    return Err(format!(
                        "validation.enum entry {i} ({}) is not a {}",
                        short(entry),
                        rules.ty
                    ));
                }
            }
        }
        Ok(rules)
    }

    fn has_type(&self, v: &Value) -> bool {
        match self.ty.as_str() {
            "string" => v.is_string(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => !v.is_null(),
        }
    }

    /// Err names the broken rule. `name` says which value (`value`,
    /// `environments.demo.value`); it is quoted only when `shown`.
    pub fn check(&self, name: &str, v: &Value, shown: bool) -> Result<(), String> {
        let what = match shown {
            true => format!("{name} {}", short(v)),
            false => name.to_string(),
        };
        if !self.has_type(v) {
            return Err(format!("{what} does not have type {}", self.ty));
        }
        if let Some(list) = &self.one_of {
            if !list.contains(v) {
                let allowed: Vec<String> = list.iter().map(short).collect();
                return Err(format!(
                    "{what} is not one of enum [{}]",
                    allowed.join(", ")
                ));
            }
        }
        if let (Some(s), Some((src, re))) = (v.as_str(), &self.pattern) {
            if !re.is_match(s) {
                return Err(format!("{what} does not match pattern '{src}'"));
            }
        }
        if let (Some(s), Some(n)) = (v.as_str(), self.max_length) {
            let len = s.chars().count() as u64;
            if len > n {
                return Err(format!(
                    "{what} is longer than max_length {n} ({len} characters)"
                ));
            }
        }
        if let Some(x) = v.as_f64() {
            if let Some(lo) = self.min.filter(|lo| x < *lo) {
                return Err(format!("{what} is below min {lo}"));
            }
            if let Some(hi) = self.max.filter(|hi| x > *hi) {
                return Err(format!("{what} is above max {hi}"));
            }
        }
        Ok(())
    }
}

/// A value as a message quotes it: a string in quotes, else its JSON,
/// cut short.
fn short(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    match v {
        Value::String(_) => format!("'{cut}'"),
        _ => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(spec: Value) -> Result<Rules, String> {
        Rules::parse(&spec)
    }

    #[test]
    fn each_rule_is_named_when_broken() {
        let r = rules(json!({"validation": {"pattern": "^[0-9]+$", "max_length": 3}})).unwrap();
        assert_eq!(
            r.check("value", &json!("abc"), true).unwrap_err(),
            "value 'abc' does not match pattern '^[0-9]+$'"
        );
        assert!(r
            .check("value", &json!("1234"), true)
            .unwrap_err()
            .contains("max_length 3"));
        assert!(r
            .check("value", &json!(12), true)
            .unwrap_err()
            .contains("type string"));
        assert!(r.check("value", &json!("123"), true).is_ok());
        // A sensitive value is never quoted.
        let e = r.check("value", &json!("s3cret"), false).unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("pattern"), "{e}");
        let n =
            rules(json!({"type": "number", "validation": {"min": 1, "max": 5, "enum": [1, 2, 9]}}))
                .unwrap();
        assert!(n
            .check("default", &json!(0), true)
            .unwrap_err()
            .contains("enum"));
        assert!(n
            .check("default", &json!(9), true)
            .unwrap_err()
            .contains("above max 5"));
        assert!(n
            .check("v", &json!("2"), true)
            .unwrap_err()
            .contains("type number"));
        assert!(n.check("v", &json!(2), true).is_ok());
        let b = rules(json!({"type": "boolean"})).unwrap();
        assert!(b.check("v", &json!("true"), true).is_err());
        let j = rules(json!({"type": "json", "validation": {"enum": [{"a": [1]}]}})).unwrap();
        assert!(j.check("v", &json!({"a": [1]}), true).is_ok());
        assert!(j.check("v", &json!({"a": [2]}), true).is_err());
    }

    #[test]
    fn rules_themselves_are_checked() {
        for (spec, says) in [
            (
                json!({"validation": {"pattern": "("}}),
                "not a usable regular expression",
            ),
            (
                json!({"validation": {"pattern": "a".repeat(513)}}),
                "longer than 512",
            ),
            (
                json!({"validation": {"pattern": "(a{1000}){1000}"}}),
                "not a usable",
            ),
            (json!({"validation": {"min": 1}}), "applies to number"),
            (
                json!({"type": "number", "validation": {"pattern": "x"}}),
                "applies to string",
            ),
            (
                json!({"type": "number", "validation": {"min": 3, "max": 1}}),
                "above",
            ),
            (json!({"validation": {"enum": ["a", 1]}}), "entry 1"),
            (json!({"type": "text"}), "type 'text'"),
        ] {
            let e = rules(spec.clone()).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn an_environment_runs_its_own_value_then_value_then_default() {
        let spec = json!({"value": "v", "default": "d", "environments": {"demo": {"value": "dv"}}});
        assert_eq!(slot_for(&spec, "demo"), Some("/environments/demo/value"));
        assert_eq!(slot_for(&spec, "live"), Some("/value"));
        let spec = json!({"value": null, "default": "d", "environments": {}});
        assert_eq!(slot_for(&spec, "draft"), Some("/default"));
        assert_eq!(slot_for(&json!({}), "draft"), None);
        assert_eq!(
            slot_name("/environments/live/value"),
            "environments.live.value"
        );
    }
}
