//! The key a hub is found by: in the runtime's index, towards other
//! nodes and in presence rows.

use crate::ids::ElementId;
use crate::model::Env;
use serde::{Deserialize, Serialize};

/// The element id for live, `{id}~demo` and `{id}~draft` for the others
/// (each runtime element runs once per environment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HubKey(String);

impl HubKey {
    pub fn new(element_id: &ElementId, env: Env) -> HubKey {
        HubKey(match env {
            Env::Live => element_id.as_str().to_string(),
            other => format!("{element_id}~{}", other.as_str()),
        })
    }

    /// A key as presence rows store it.
    pub fn stored(key: String) -> HubKey {
        HubKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HubKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
