//! YAML from users, read at bounded cost. An alias repeats its anchor
//! wherever it appears, so a few hundred bytes can stand for billions of
//! values; yaml_serde's own repetition limit counts alias jumps, not what
//! they expand to. Every document is first walked by a visitor that only
//! counts (no allocation) and stops at a budget of values, text and depth;
//! only a document within budget gets the real, typed parse.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use std::fmt;

/// What one YAML document may cost.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Size of the text itself.
    pub max_bytes: usize,
    /// Values (scalars, sequences, mappings, keys) with aliases expanded.
    pub max_nodes: usize,
    /// Text of all scalars and keys with aliases expanded; without aliases
    /// it never exceeds the file's size, so `max_bytes` is the natural cap.
    pub max_text_bytes: usize,
    /// Nesting of sequences and mappings.
    pub max_depth: usize,
}

/// The budget of every YAML file elementd reads from users
/// (`.triform/spec.yaml`): the REST body limit for the text, room for any
/// real spec, nothing for an alias bomb.
pub const BUDGET: Budget = Budget {
    max_bytes: crate::config::BODY_LIMIT,
    max_nodes: 100_000,
    max_text_bytes: crate::config::BODY_LIMIT,
    max_depth: 64,
};

/// Why a document was refused; both carry a sentence for the user (with
/// the position where yaml_serde knows it).
#[derive(Debug, Clone, PartialEq)]
pub enum YamlError {
    /// Over the budget: too big, too many values, too deep.
    OverBudget(String),
    /// Not YAML, or not the expected shape.
    Invalid(String),
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlError::OverBudget(m) | YamlError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Parses `text` as `T` once it is known to fit `budget`.
pub fn from_str<T: DeserializeOwned>(text: &str, budget: &Budget) -> Result<T, YamlError> {
    check(text, budget)?;
    yaml_serde::from_str(text).map_err(|e| YamlError::Invalid(e.to_string()))
}

/// Walks the document, aliases expanded, and fails as soon as it goes
/// over budget: time and memory stay proportional to the budget.
pub fn check(text: &str, budget: &Budget) -> Result<(), YamlError> {
    if text.len() > budget.max_bytes {
        return Err(YamlError::OverBudget(format!(
            "the file is {} bytes; at most {} are accepted",
            text.len(),
            budget.max_bytes
        )));
    }
    let mut spent = Spent::default();
    let counter = Counter {
        budget,
        spent: &mut spent,
        depth: 0,
    };
    match counter.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Ok(()) => Ok(()),
        Err(e) if spent.over => Err(YamlError::OverBudget(e.to_string())),
        Err(e) => Err(YamlError::Invalid(e.to_string())),
    }
}

#[derive(Default)]
struct Spent {
    nodes: usize,
    text: usize,
    /// Set when the budget, not the syntax, stopped the walk.
    over: bool,
}

struct Counter<'a> {
    budget: &'a Budget,
    spent: &'a mut Spent,
    depth: usize,
}

impl Counter<'_> {
    fn child(&mut self) -> Counter<'_> {
        Counter {
            budget: self.budget,
            spent: self.spent,
            depth: self.depth + 1,
        }
    }

    fn spend<E: de::Error>(&mut self, text: usize) -> Result<(), E> {
        self.spent.nodes += 1;
        self.spent.text = self.spent.text.saturating_add(text);
        if self.spent.nodes > self.budget.max_nodes {
            self.spent.over = true;
            return Err(E::custom(format_args!(
                "more than {} values (an alias counts its anchor's values \
                 each time it is used)",
                self.budget.max_nodes
            )));
        }
        if self.spent.text > self.budget.max_text_bytes {
            self.spent.over = true;
            return Err(E::custom(format_args!(
                "more than {} bytes of text (an alias counts its anchor's \
                 text each time it is used)",
                self.budget.max_text_bytes
            )));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.spend(0)?;
        if self.depth >= self.budget.max_depth {
            self.spent.over = true;
            return Err(E::custom(format_args!(
                "nested deeper than {} levels",
                self.budget.max_depth
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_i128<E: de::Error>(mut self, _: i128) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_u128<E: de::Error>(mut self, _: u128) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_bytes<E: de::Error>(mut self, v: &[u8]) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
    /// A tagged value (`!tag value`): counted like the value it carries.
    fn visit_enum<A: de::EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
        self.enter()?;
        let ((), variant) = data.variant_seed(self.child())?;
        de::VariantAccess::newtype_variant_seed(variant, self.child())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The bomb from the issue: one anchor of `n` items referenced `n`
    /// times (n² values from a file of a few KiB).
    fn alias_bomb(n: usize) -> String {
        let items = vec!["x"; n].join(",");
        let refs = vec!["*a"; n].join(",");
        format!(
            "element_type: websocket\nslug: s\nname: n\nspec:\n  a: &a [{items}]\n  b: [{refs}]\n"
        )
    }

    /// Nested anchors: each level repeats the previous one ten times.
    fn laughs(levels: usize) -> String {
        let mut s = String::from("l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..levels {
            let p = format!("*l{}", i - 1);
            s.push_str(&format!("l{i}: &l{i} [{}]\n", [p.as_str(); 10].join(",")));
        }
        s
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        let bomb = alias_bomb(6000);
        assert!(bomb.len() < 40_000, "a small file: {}", bomb.len());
        let e = from_str::<Value>(&bomb, &BUDGET).unwrap_err();
        assert!(
            matches!(&e, YamlError::OverBudget(m) if m.contains("100000 values")),
            "{e}"
        );
        let e = from_str::<Value>(&laughs(9), &BUDGET)
            .unwrap_err()
            .to_string();
        assert!(e.contains("each time it is used"), "{e}");
        // Text adds up too: one long string repeated.
        let long = "y".repeat(200_000);
        let text = format!("a: &a \"{long}\"\nb: [*a, *a, *a, *a, *a, *a]\n");
        let e = from_str::<Value>(&text, &BUDGET).unwrap_err().to_string();
        assert!(e.contains("bytes of text"), "{e}");
    }

    #[test]
    fn small_aliases_depth_and_size() {
        let v: Value = from_str("a: &a {x: 1}\nb: *a\n", &BUDGET).unwrap();
        assert_eq!(v["b"]["x"], 1, "a modest alias still works");
        let deep = format!("{}1{}", "[".repeat(70), "]".repeat(70));
        let e = from_str::<Value>(&deep, &BUDGET).unwrap_err().to_string();
        assert!(e.contains("deeper than 64"), "{e}");
        let big = format!("a: \"{}\"\n", "z".repeat(BUDGET.max_bytes));
        let e = from_str::<Value>(&big, &BUDGET).unwrap_err().to_string();
        assert!(e.contains("at most 1048576"), "{e}");
        let tight = Budget {
            max_nodes: 3,
            ..BUDGET
        };
        assert!(check("[1, 2]", &tight).is_ok());
        assert!(check("[1, 2, 3]", &tight).is_err());
        assert!(matches!(
            from_str::<Value>("a: [", &BUDGET),
            Err(YamlError::Invalid(_))
        ));
        // Tagged values are counted through, not refused by the counter.
        assert!(check("a: !t [1, 2]", &BUDGET).is_ok());
    }
}
