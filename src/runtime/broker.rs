//! The publish/subscribe part of the cluster (as Centrifuge's `Broker`
//! and `BrokerEventHandler`): the runtime calls a [`Broker`] with what
//! other nodes must know or do, and implements [`BrokerHandler`], which
//! the broker calls with what arrives from them. Every call only queues:
//! it never waits and never touches the database. Who holds what is the
//! presence part's to say (`presence.rs`).

use super::frame::Frame;
use super::key::HubKey;
use crate::error::Result;
use crate::ids::ElementId;
use crate::model::Event;
use crate::store::presence::Held;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// What a node asks the holder of a connection to do: `send` to it,
/// `receive` as it (the holder runs `on_message`), or `close` it.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ConnAction {
    Send {
        text: String,
    },
    /// `actor`: the caller of `receive`, recorded as the event's actor.
    Receive {
        text: String,
        #[serde(default)]
        actor: crate::model::Json,
    },
    Close {
        code: u16,
        reason: String,
    },
}

pub trait Broker: Send + Sync + 'static {
    /// This node's id while it may share the database; None when alone.
    fn node_id(&self) -> Option<&str>;

    /// Other nodes that have live listeners now (for `/readyz`).
    fn listening_nodes(&self) -> Option<usize>;

    /// An element's committed change: other nodes reload it.
    fn element_changed(&self, element_id: &ElementId);

    /// A client message `on_message` fans out: to every connection of the
    /// hub on the other nodes, or to the members of `rooms`. When its
    /// queue is full the message is dropped and logged.
    fn relay(&self, hub: &HubKey, msg: &Frame, rooms: Option<Vec<String>>);

    /// A `broadcast` op's message for the other nodes' connections (all,
    /// or the members of `room`). A full queue is an error the caller may
    /// retry.
    fn fan_out(&self, hub: &HubKey, text: String, room: Option<&str>) -> Result<()>;

    /// Hands `action` to `node`, which holds the connection. A full queue
    /// is an error the caller may retry.
    fn to_connection(
        &self,
        node: &str,
        hub: &HubKey,
        connection_id: &str,
        action: ConnAction,
    ) -> Result<()>;

    /// Hands `send` or `close` of a user's connections to every other
    /// node. A full queue is an error the caller may retry.
    fn to_user(&self, hub: &HubKey, user: &str, action: ConnAction) -> Result<()>;
}

/// What arrives from other nodes. The runtime implements it; the broker
/// calls it and knows nothing of hubs.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A fan-out for this node's connections of the hub: a publication
    /// (kept in history when the hub keeps one), or a `control` frame.
    fn fan_out(&self, hub: &HubKey, msg: Frame, rooms: Option<&[String]>, control: bool);

    /// Publications placed in the shared history (by any node, this one
    /// too), in the order their offsets were given.
    fn published(&self, batch: Vec<super::shared_history::Published>);

    /// Another node's `send`, `receive` or `close` for a connection this
    /// node holds.
    fn to_connection<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
        action: ConnAction,
    ) -> BoxFuture<'a, ()>;

    /// Another node's `send` or `close` for a user: done to this node's
    /// connections of the user.
    fn to_user(&self, hub: &HubKey, user: &str, action: ConnAction);

    /// An element changed on another node: reload it.
    fn element_changed<'a>(&'a self, element_id: &'a ElementId) -> BoxFuture<'a, ()>;

    /// Messages may have been missed (the broker lost its connection):
    /// reload every element.
    fn resync(&self) -> BoxFuture<'_, ()>;

    /// Live events another node published (already recorded there).
    fn live_events(&self, events: Vec<Event>);

    /// This node's open connections, to write their presence again after
    /// other nodes swept this one as dead.
    fn held(&self) -> Vec<Held>;

    /// Message counters (in, out) of this node's open connections.
    fn counters(&self) -> Vec<(String, u64, u64)>;
}
