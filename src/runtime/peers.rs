//! The other nodes sharing the database, as the runtime reaches them: in
//! parts, as Centrifuge splits them ([`Broker`] carries messages,
//! [`PresenceManager`] knows who is connected where, [`SharedHistory`]
//! keeps the rooms' history). `cluster/` implements them over PostgreSQL;
//! a node alone (SQLite) has [`Alone`].

use super::broker::{Broker, ConnAction};
use super::frame::Frame;
use super::key::HubKey;
use super::presence::PresenceManager;
use super::shared_history::{Append, SharedHistory, Stored};
use crate::error::Result;
use crate::store::presence::RemoteConnection;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

#[derive(Clone)]
pub struct Peers {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceManager>,
    pub history: Arc<dyn SharedHistory>,
}

impl Peers {
    pub fn alone() -> Peers {
        Peers {
            broker: Arc::new(Alone),
            presence: Arc::new(Alone),
            history: Arc::new(Alone),
        }
    }

    /// Whether other nodes may exist: when not, no part is asked
    /// anything that would wait (or box a future).
    pub fn shared(&self) -> bool {
        self.broker.node_id().is_some()
    }
}

/// Nobody to tell, nothing held elsewhere.
pub struct Alone;

impl Broker for Alone {
    fn node_id(&self) -> Option<&str> {
        None
    }
    fn listening_nodes(&self) -> Option<usize> {
        None
    }
    fn element_changed(&self, _: &crate::ids::ElementId) {}
    fn relay(&self, _: &HubKey, _: &Frame, _: Option<Vec<String>>) {}
    fn fan_out(&self, _: &HubKey, _: String, _: Option<&str>) -> Result<()> {
        Ok(())
    }
    fn to_connection(&self, _: &str, _: &HubKey, _: &str, _: ConnAction) -> Result<()> {
        Ok(())
    }
    fn to_user(&self, _: &HubKey, _: &str, _: ConnAction) -> Result<()> {
        Ok(())
    }
}

impl PresenceManager for Alone {
    fn admit<'a>(
        &'a self,
        _: &'a HubKey,
        _: &'a str,
        _: usize,
        _: &'a [String],
        _: &'a str,
        _: Option<(&'a str, Option<&'a Value>)>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn rooms(&self, _: &str, _: Vec<String>) {}
    fn gone(&self, _: &str) {}
    fn holder<'a>(&'a self, _: &'a HubKey, _: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    fn remote_count<'a>(
        &'a self,
        _: &'a HubKey,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async { Ok(0) })
    }
    fn remote_connections<'a>(
        &'a self,
        _: &'a HubKey,
        _: Option<&'a str>,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RemoteConnection>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    // Alone, the hub tells its members itself.
    fn user_moved(&self, _: &HubKey, _: &str, _: &str, _: Option<Value>, _: bool) {}
}

// Alone, each hub keeps its history in memory.
impl SharedHistory for Alone {
    fn shared(&self) -> bool {
        false
    }
    fn append(&self, _: Append) -> Result<()> {
        Ok(())
    }
    fn read<'a>(
        &'a self,
        _: &'a HubKey,
        _: &'a str,
        _: Option<u64>,
        _: usize,
        _: bool,
    ) -> BoxFuture<'a, Result<Option<Stored>>> {
        Box::pin(async { Ok(None) })
    }
}
