//! `.triform/spec.yaml`: the element as its git source holds it. It names
//! the element (type and slug, both immutable) and carries its spec.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Element;
use crate::types::ElementType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SPEC_PATH: &str = ".triform/spec.yaml";
pub const README_PATH: &str = "README.md";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpecDoc {
    pub element_type: String,
    pub slug: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intention: Option<String>,
    #[serde(default = "empty_object")]
    pub spec: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl SpecDoc {
    /// The document for an element. Values the type marks sensitive never
    /// reach git.
    pub fn of(el: &Element, ty: &ElementType) -> SpecDoc {
        SpecDoc {
            element_type: el.element_type.clone(),
            slug: el.slug.clone(),
            name: el.name.clone(),
            intention: el.intention.clone(),
            spec: {
                // Server-owned keys (a manifest's environments) are not
                // the source's to hold.
                let mut spec = ty.without_secrets(&el.spec);
                if let Some(m) = spec.as_object_mut() {
                    for k in &ty.def.read_only {
                        m.remove(k);
                    }
                }
                spec
            },
        }
    }

    pub fn render(&self) -> String {
        let body = yaml_serde::to_string(self).unwrap_or_default();
        format!(
            "# elementd element source. Edit `spec`, `name` or `intention` and push to draft;\n\
             # element_type and slug cannot change.\n{body}"
        )
    }

    /// Parses the file at bounded cost (size, aliases, depth: see
    /// [`super::yaml`]), whoever sent it: a push, a bundle or git drift.
    pub fn parse(text: &str) -> Result<SpecDoc> {
        use super::yaml::{from_str, YamlError, BUDGET};
        from_str(text, &BUDGET).map_err(|e| {
            let said = match e {
                YamlError::OverBudget(m) => format!("{SPEC_PATH} is refused: {m}"),
                YamlError::Invalid(m) => format!("{SPEC_PATH} does not parse: {m}"),
            };
            Error::unprocessable(ErrorCode::SpecYamlInvalid, said)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let d = SpecDoc {
            element_type: "websocket".into(),
            slug: "chat".into(),
            name: "Chat".into(),
            intention: None,
            spec: json!({"path": "/ws", "rooms": {"enabled": true}, "protocols": ["a"]}),
        };
        assert_eq!(SpecDoc::parse(&d.render()).unwrap(), d);
        assert!(SpecDoc::parse("element_type: [").is_err());
        assert!(SpecDoc::parse("element_type: x\nslug: y\nname: z\nextra: 1").is_err());
    }

    #[test]
    fn alias_bomb_is_refused_with_the_reason() {
        let items = vec!["x"; 6000].join(",");
        let refs = vec!["*a"; 6000].join(",");
        let bomb = format!(
            "element_type: websocket\nslug: s\nname: n\nspec:\n  a: &a [{items}]\n  b: [{refs}]\n"
        );
        let e = SpecDoc::parse(&bomb).unwrap_err();
        assert_eq!(e.code, "SPEC_YAML_INVALID");
        assert!(
            e.message.starts_with(SPEC_PATH) && e.message.contains("more than 100000 values"),
            "{}",
            e.message
        );
    }
}
