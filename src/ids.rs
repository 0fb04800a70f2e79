//! The ids that name elements and circles. Both are UUIDs the store gives
//! out as text; a circle is an element too, so a circle's id is also an
//! element id. Keeping them apart in the types means a function asking for
//! a circle cannot be handed an element, nor the other way round.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// An id read back from where it was stored (a row, a key,
            /// a token's claims): taken as it is.
            pub fn stored(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

text_id!(
    /// An element's id (circles included).
    ElementId
);

text_id!(
    /// The id of a circle: what tenancy is bound to, since a deleted
    /// circle's slug can be taken again.
    CircleId
);

impl ElementId {
    /// A new id: a UUIDv7, so ids sort by when they were made.
    pub fn generate() -> ElementId {
        ElementId(uuid::Uuid::now_v7().to_string())
    }
}

impl CircleId {
    /// The circle a circle element is: its own id.
    pub fn of_circle(id: &ElementId) -> CircleId {
        CircleId(id.0.clone())
    }

    /// The circle as an element, to read its row.
    pub fn as_element(&self) -> ElementId {
        ElementId(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_text_on_the_wire_and_apart_in_the_types() {
        let id = ElementId::stored("0190-a");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"0190-a\"");
        let back: CircleId = serde_json::from_str("\"0190-a\"").unwrap();
        assert_eq!(back, "0190-a");
        assert_eq!(CircleId::of_circle(&id), back);
        assert_eq!(back.as_element(), id);
        assert_ne!(ElementId::generate(), ElementId::generate());
    }
}
