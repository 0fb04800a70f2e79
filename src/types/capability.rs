//! What a type can do. Code asks for a capability, never for a type's
//! name; a type file naming one this build does not know fails the start.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Holds child elements.
    #[serde(rename = "contains")]
    Contains,
    /// Its children are promoted together.
    #[serde(rename = "promote")]
    Promote,
    /// Its activity stream shows what its members did.
    #[serde(rename = "activity-scope-members")]
    ActivityScopeMembers,
    /// Its activity stream shows everything below it.
    #[serde(rename = "activity-scope-all")]
    ActivityScopeAll,
    /// Mints and guards platform tokens.
    #[serde(rename = "api_token")]
    ApiToken,
    #[serde(rename = "network")]
    Network,
    #[serde(rename = "observe")]
    Observe,
    #[serde(rename = "websocket")]
    Websocket,
    #[serde(rename = "rooms")]
    Rooms,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "presence")]
    Presence,
    #[serde(rename = "heartbeat")]
    Heartbeat,
    /// Served by the realtime runtime.
    #[serde(rename = "runtime")]
    Runtime,
    /// Holds a value others refer to (`{{ vars.slug }}`).
    #[serde(rename = "resource")]
    Resource,
    /// Attaches to other elements and changes how they are served.
    #[serde(rename = "modifier")]
    Modifier,
    /// A modifier that admits or refuses callers.
    #[serde(rename = "auth_policy")]
    AuthPolicy,
    /// A modifier that limits how often callers may call.
    #[serde(rename = "rate_limit")]
    RateLimit,
    /// A modifier that delivers the events of what it attaches to.
    #[serde(rename = "webhook")]
    Webhook,
}

#[cfg(test)]
mod tests {
    use super::Capability;

    #[test]
    fn an_unknown_capability_fails_to_parse() {
        let known: Vec<Capability> = yaml_serde::from_str("[contains, rate_limit]").unwrap();
        assert_eq!(known, [Capability::Contains, Capability::RateLimit]);
        let err = yaml_serde::from_str::<Vec<Capability>>("[contains, teleport]").unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
    }
}
