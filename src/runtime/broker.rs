//! How the runtime reaches other nodes sharing its database, without
//! knowing what carries the messages (as Centrifuge's `Broker` and
//! `BrokerEventHandler`): it calls a [`Broker`] with what other nodes
//! must know or do, and implements [`BrokerHandler`], which the broker
//! calls with what arrives from them. `cluster/` implements `Broker` over
//! PostgreSQL LISTEN/NOTIFY; alone (SQLite) the runtime uses [`Alone`].
//!
//! Calls on a client message's path ([`Broker::relay`], presence changes)
//! are plain methods that only queue: they never wait and never touch the
//! database. Calls that answer after another node or the database did
//! (admission, `send`/`close`/`receive` for a connection held elsewhere,
//! a `broadcast`'s remote audience, listing) return a boxed future: the
//! trait must be usable as `dyn Broker` (the engine is chosen at start),
//! `async fn` in a trait is not, and these calls come from REST ops and
//! upgrades that already make a database round trip, so one allocation
//! per call is noise. The runtime skips them entirely when alone.

use super::frame::Frame;
use super::{Hub, Runtime};
use crate::error::Result;
use crate::model::Event;
use crate::store::presence::{Held, RemoteConnection};
use crate::store::Db;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
        actor: serde_json::Value,
    },
    Close {
        code: u16,
        reason: String,
    },
}

/// The other nodes, as the runtime sees them.
pub trait Broker: Send + Sync + 'static {
    /// This node's id while it may share the database; None when alone.
    fn node_id(&self) -> Option<&str>;

    /// Other nodes that have live listeners now (for `/readyz`).
    fn listening_nodes(&self) -> Option<usize>;

    /// An element's committed change: other nodes reload it. Never waits.
    fn element_changed(&self, element_id: &str);

    /// Reserves a presence row for a new connection under `max`
    /// connections of the element on every live node; false when they
    /// already hold `max`.
    fn admit<'a>(
        &'a self,
        element_id: &'a str,
        connection_id: &'a str,
        max: usize,
        rooms: &'a [String],
        remote: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// A connection's rooms changed (join/leave). Never waits.
    fn rooms(&self, connection_id: &str, rooms: Vec<String>);

    /// A connection (or a reservation that never became one) ended.
    fn gone(&self, connection_id: &str);

    /// A client message `on_message` fans out: to every connection of the
    /// element on the other nodes, or to the members of `rooms`. Never
    /// waits: when its queue is full the message is dropped and logged.
    fn relay(&self, element_id: &str, msg: &Frame, rooms: Option<Vec<String>>);

    /// A `broadcast` op's message for the other nodes' connections (all,
    /// or the members of `room`); answers how many they hold in its
    /// audience. A full queue is an error the caller may retry.
    fn fan_out<'a>(
        &'a self,
        element_id: &'a str,
        text: String,
        room: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize>>;

    /// Hands `action` to the other node holding the connection; false when
    /// no live node holds it.
    fn to_connection<'a>(
        &'a self,
        element_id: &'a str,
        connection_id: &'a str,
        action: ConnAction,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Connections of the element held by other live nodes (optionally
    /// members of `room`), oldest first.
    fn remote_connections<'a>(
        &'a self,
        element_id: &'a str,
        room: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RemoteConnection>>>;
}

/// What arrives from other nodes. The runtime implements it; the broker
/// calls it and knows nothing of hubs.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A fan-out for this node's connections of the element.
    fn fan_out(&self, element_id: &str, msg: Frame, rooms: Option<&[String]>);

    /// Another node's `send`, `receive` or `close` for a connection this
    /// node holds.
    fn to_connection<'a>(
        &'a self,
        element_id: &'a str,
        connection_id: &'a str,
        action: ConnAction,
    ) -> BoxFuture<'a, ()>;

    /// An element changed on another node: reload it.
    fn element_changed<'a>(&'a self, element_id: &'a str) -> BoxFuture<'a, ()>;

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

/// A node alone (SQLite): nobody to tell, nothing held elsewhere.
pub struct Alone;

impl Broker for Alone {
    fn node_id(&self) -> Option<&str> {
        None
    }
    fn listening_nodes(&self) -> Option<usize> {
        None
    }
    fn element_changed(&self, _: &str) {}
    fn admit<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: usize,
        _: &'a [String],
        _: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn rooms(&self, _: &str, _: Vec<String>) {}
    fn gone(&self, _: &str) {}
    fn relay(&self, _: &str, _: &Frame, _: Option<Vec<String>>) {}
    fn fan_out<'a>(
        &'a self,
        _: &'a str,
        _: String,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async { Ok(0) })
    }
    fn to_connection<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: ConnAction,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    fn remote_connections<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RemoteConnection>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The runtime's side of a broker: what other nodes send lands in this
/// node's hubs. Reloading a changed element reads it from `db`.
pub struct Arrivals {
    runtime: Runtime,
    db: Db,
}

impl Runtime {
    /// The handler a broker calls with what arrives from other nodes.
    pub fn arrivals(&self, db: Db) -> Arc<dyn BrokerHandler> {
        Arc::new(Arrivals {
            runtime: self.clone(),
            db,
        })
    }
}

impl Arrivals {
    /// Drops the read caches' stale copies of `el`, then reads its
    /// releases.
    async fn forget_then_releases(
        &self,
        el: &crate::model::Element,
    ) -> Result<Vec<crate::store::deployments::Deployment>> {
        self.db.forget(el);
        Ok(self.db.deployments(&el.id).await?)
    }
}

impl BrokerHandler for Arrivals {
    fn fan_out(&self, element_id: &str, msg: Frame, rooms: Option<&[String]>) {
        if let Some(h) = self.runtime.hub(element_id) {
            let audience = match rooms {
                Some(rooms) => super::Audience::Rooms(rooms),
                None => super::Audience::All,
            };
            h.deliver(&msg, audience);
        }
    }

    fn to_connection<'a>(
        &'a self,
        element_id: &'a str,
        connection_id: &'a str,
        action: ConnAction,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(h) = self.runtime.hub(element_id) else {
                return;
            };
            if let Err(e) = act(&h, connection_id, action).await {
                tracing::debug!(error = %e, "connection action from another node not done");
            }
        })
    }

    fn element_changed<'a>(&'a self, element_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.db.element_by_id(element_id).await {
                Ok(Some(el)) => match self.forget_then_releases(&el).await {
                    Ok(releases) => self.runtime.apply(&el, &releases),
                    Err(e) => tracing::warn!(error = %e, element_id, "reloading releases failed"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, element_id, "reloading a changed element failed")
                }
            }
        })
    }

    fn resync(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.db.forget_all();
            if let Err(e) = self.runtime.resync(&self.db).await {
                tracing::warn!(error = %e, "reload failed");
            }
        })
    }

    fn live_events(&self, events: Vec<Event>) {
        for mut event in events {
            event.remote = true;
            self.runtime.inner.bus.publish_remote(event);
        }
    }

    fn held(&self) -> Vec<Held> {
        let mut held = Vec::new();
        for hub in self.runtime.hubs() {
            held.extend(hub.open_conns().iter().map(|c| Held {
                connection_id: c.id.clone(),
                element_id: hub.key.clone(),
                rooms: c.rooms(),
                remote: c.remote.clone(),
                connected_at: c.connected_at,
            }));
        }
        held
    }

    fn counters(&self) -> Vec<(String, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.runtime
            .hubs()
            .iter()
            .flat_map(|h| h.open_conns())
            .map(|c| {
                (
                    c.id.clone(),
                    c.msgs_in.load(Relaxed),
                    c.msgs_out.load(Relaxed),
                )
            })
            .collect()
    }
}

/// Does what another node asked of a connection this one holds.
async fn act(hub: &Hub, id: &str, action: ConnAction) -> Result<()> {
    match action {
        ConnAction::Send { text } => hub.send_to(id, Frame::text(text)),
        ConnAction::Receive { text, actor } => hub
            .receive(Frame::text(text), Some(id), None, actor)
            .await
            .map(drop),
        ConnAction::Close { code, reason } => hub.close(id, code, &reason),
    }
}
