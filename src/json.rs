//! JSON an event carries (its `actor` and `data`): a `Value` where code
//! builds or inspects it, or text written once where events come at the
//! rate of connections. A map built per event, serialized by the recorder
//! and dropped cost more than the row it became.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Clone, Debug)]
pub enum Json {
    Value(Value),
    Text(Box<RawValue>),
}

impl Json {
    /// `v` serialized now; a `Value` if it cannot be (it always can for
    /// the derived structs this is given).
    pub fn text_of(v: &impl Serialize) -> Json {
        match serde_json::value::to_raw_value(v) {
            Ok(raw) => Json::Text(raw),
            Err(_) => Json::Value(serde_json::to_value(v).unwrap_or_default()),
        }
    }

    /// The JSON text, borrowed when it is already text.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Json::Text(raw) => Cow::Borrowed(raw.get()),
            Json::Value(v) => Cow::Owned(serde_json::to_string(v).unwrap_or_default()),
        }
    }

    /// As a `Value`, parsed when it is text.
    pub fn value(&self) -> Cow<'_, Value> {
        match self {
            Json::Value(v) => Cow::Borrowed(v),
            Json::Text(raw) => Cow::Owned(serde_json::from_str(raw.get()).unwrap_or_default()),
        }
    }

    /// The `Value`, to change in place (text is parsed first).
    pub fn value_mut(&mut self) -> &mut Value {
        if let Json::Text(raw) = self {
            *self = Json::Value(serde_json::from_str(raw.get()).unwrap_or_default());
        }
        match self {
            Json::Value(v) => v,
            Json::Text(_) => unreachable!("made a value above"),
        }
    }

    /// Sets `key` when this is an object; anything else is left as it is.
    pub fn insert(&mut self, key: &str, v: Value) {
        if let Value::Object(m) = self.value_mut() {
            m.insert(key.into(), v);
        }
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::Value(Value::Object(Default::default()))
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json::Value(v)
    }
}

// Tests compare events' data with `json!` literals.
#[cfg(test)]
impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        *self.value() == *other
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Value(v) => v.serialize(s),
            Json::Text(raw) => raw.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Json::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Opened<'a> {
        id: &'a str,
        n: u64,
        user: Option<&'a str>,
    }

    #[test]
    fn text_and_value_read_and_write_alike() {
        let t = Json::text_of(&Opened {
            id: "c_\"1\"",
            n: 7,
            user: None,
        });
        assert!(matches!(t, Json::Text(_)));
        let want = json!({"id": "c_\"1\"", "n": 7, "user": null});
        assert_eq!(t.text(), want.to_string());
        assert!(t == want);
        let v = Json::from(want.clone());
        assert_eq!(v.text(), t.text());
        // Inside a larger value, text goes out as its JSON, not a string.
        assert_eq!(json!({"data": t}), json!({"data": want}));
        assert_eq!(
            serde_json::to_string(&json!({"a": 1})).unwrap(),
            serde_json::to_string(&Json::from(json!({"a": 1}))).unwrap()
        );
    }

    #[test]
    fn insert_turns_text_into_a_value() {
        let mut t = Json::text_of(&json!({"a": 1}));
        t.insert("b", json!(2));
        assert!(matches!(t, Json::Value(_)));
        assert!(t == json!({"a": 1, "b": 2}));
        let mut s = Json::from(json!("x"));
        s.insert("b", json!(2));
        assert!(s == json!("x"));
    }

    #[test]
    fn read_back_as_a_value() {
        let back: Json = serde_json::from_str(r#"{"a":[1,2]}"#).unwrap();
        assert!(matches!(back, Json::Value(_)));
        assert_eq!(back.value()["a"][1], 2);
    }
}
