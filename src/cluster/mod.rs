//! Several nodes on one PostgreSQL database, over PostgreSQL's
//! own LISTEN/NOTIFY on the channel `elementd`. [`PgBroker`] is both
//! parts of the runtime's peers: its [`Broker`] (messages, handing what
//! arrives to the runtime's [`BrokerHandler`]) and its
//! [`PresenceManager`] (the presence rows); it knows nothing of hubs. With SQLite there is no
//! broker here: the runtime uses its own `Alone`.
//!
//! - Each node has a random id and a `cluster_nodes` row it refreshes every
//!   [`HEARTBEAT`](node::HEARTBEAT); a node silent for [`STALE_MS`](crate::store::presence::STALE_MS) is dead: its presence
//!   rows are ignored at once and deleted by the next sweep of any node.
//! - `ws_connections` holds one row per client connection, written at
//!   upgrade (inside a transaction holding an advisory lock per hub, so
//!   `max_connections` holds across nodes), on join/leave and at close.
//!   Client messages never touch the database. The SQL is in
//!   `store/presence.rs`; the channel's plumbing is here.
//! - Messages are small JSON envelopes (`wire.rs`). A payload over
//!   [`NOTIFY_MAX`](node::NOTIFY_MAX) bytes is stored in `cluster_payloads` and only its id
//!   is notified; receivers read it from there. Events are cut instead
//!   (their message preview is dropped), since they go out per message.
//! - Events go out, batched, from a forwarder that reads the local live
//!   bus, so the per-message path only touches memory; when it falls
//!   behind, remote subscribers miss live events (they remain in
//!   `activity`). Message events (`ws.message.*`) go only while another
//!   node has live listeners (announced with `Listening`), so with none a
//!   client message builds no event and costs no NOTIFY.

mod forward;
mod history;
mod listen;
mod node;
mod tasks;
mod wire;

use crate::ids::ElementId;
use crate::sync::lock;
use forward::{announce_loop, forward_loop};
use listen::listen_loop;
use node::{Inner, CHANNEL};
use tasks::{heartbeat_loop, relay_loop, tell_presence, write_loop};
use wire::{FanOut, Msg};

use crate::error::Result;
use crate::events::Bus;
use crate::runtime::{Broker, BrokerHandler, ConnAction, Frame, HubKey, PresenceManager};
use crate::store::presence::{Presence, RemoteConnection};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPoolOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Relayed client messages waiting for their NOTIFY.
const RELAY_QUEUE: usize = 4096;
/// Messages (send, close, broadcast, …) waiting for their NOTIFY; a
/// caller that finds it full is told to retry.
const OUT_QUEUE: usize = 1024;

/// This node's link to the others sharing its PostgreSQL database.
pub struct PgBroker {
    inner: Arc<Inner>,
}

impl PgBroker {
    /// Joins the nodes sharing the PostgreSQL database at `url`: registers
    /// this node and starts its writers.
    pub async fn connect(url: &str, history_cap: usize) -> anyhow::Result<PgBroker> {
        let pool = crate::store::ping_when_idle(PgPoolOptions::new())
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let node_id = uuid::Uuid::new_v4().to_string();
        let presence = Presence::new(pool.clone(), node_id.clone());
        presence.heartbeat().await?;
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let (appends, appends_rx) = mpsc::channel(history::APPEND_QUEUE);
        let inner = Arc::new(Inner {
            node_id,
            pool,
            presence,
            out,
            pending: Default::default(),
            wake: Default::default(),
            relay,
            appends,
            history_cap,
            stop: CancellationToken::new(),
            listening: Default::default(),
            others: Default::default(),
            handler: Default::default(),
            written_users: Default::default(),
        });
        tokio::spawn(write_loop(inner.clone(), rx));
        tokio::spawn(relay_loop(inner.clone(), relay_rx));
        tokio::spawn(history::append_loop(inner.clone(), appends_rx));
        tracing::info!(node_id = %inner.node_id, "joined the cluster");
        Ok(PgBroker { inner })
    }

    /// Starts listening (what arrives goes to `handler`), the heartbeat,
    /// and the forwarder of `bus`'s live events.
    pub async fn start(&self, handler: Arc<dyn BrokerHandler>, bus: Bus) -> anyhow::Result<()> {
        let inner = self.inner.clone();
        let _ = inner.handler.set(Arc::downgrade(&handler));
        let mut listener = PgListener::connect_with(&inner.pool).await?;
        listener.listen(CHANNEL).await?;
        tokio::spawn(heartbeat_loop(inner.clone(), handler.clone()));
        tokio::spawn(listen_loop(
            inner.clone(),
            listener,
            handler,
            bus.listening(),
        ));
        tokio::spawn(announce_loop(inner.clone(), bus.listening()));
        // Tells the other nodes at once that this one is here.
        inner.send(Msg::Listening { on: false });
        tokio::spawn(forward_loop(inner, bus));
        Ok(())
    }

    /// Leaves: the tasks end, this node's presence rows and node row go.
    pub async fn stop(&self) {
        // What was published is placed before the node goes.
        let appends = &self.inner.appends;
        for _ in 0..200 {
            if appends.capacity() == history::APPEND_QUEUE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.stop.cancel();
        // This node's users leave the rooms no other node has them in.
        let me = self.inner.node_id.clone();
        match self.inner.presence.drop_room_users(&me).await {
            Ok(gone) => {
                for g in gone {
                    tell_presence(&self.inner, g, false).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "telling this node's users' leaves"),
        }
        if let Err(e) = self.inner.presence.leave().await {
            tracing::warn!(error = %e, "leaving the cluster");
        }
    }
}

impl Broker for PgBroker {
    fn node_id(&self) -> Option<&str> {
        Some(&self.inner.node_id)
    }

    fn listening_nodes(&self) -> Option<usize> {
        Some(lock(&self.inner.listening).len())
    }

    fn element_changed(&self, element_id: &ElementId) {
        self.inner.pend(|p| {
            p.changed.insert(element_id.clone());
        });
    }

    fn relay(&self, hub: &HubKey, msg: &Frame, rooms: Option<Vec<String>>) {
        // Alone in the cluster: nothing is built, nothing queued.
        if !self.inner.others.load(Ordering::Acquire) {
            return;
        }
        let Some(m) = FanOut::new(hub, msg, rooms) else {
            return;
        };
        if self.inner.relay.try_send(m).is_err() {
            tracing::warn!(
                hub = %hub,
                "cluster relay queue full; message not relayed to other nodes"
            );
        }
    }

    fn fan_out(&self, hub: &HubKey, text: String, room: Option<&str>) -> Result<()> {
        let rooms = room.map(|r| vec![r.to_string()]);
        let batch = vec![FanOut::text(hub, text, rooms)];
        self.inner.send_or_busy(Msg::FanOut { batch })
    }

    fn to_connection(
        &self,
        node: &str,
        hub: &HubKey,
        connection_id: &str,
        action: ConnAction,
    ) -> Result<()> {
        self.inner.send_or_busy(Msg::ToConnection {
            to: node.into(),
            hub: hub.clone(),
            connection_id: connection_id.into(),
            action,
        })
    }

    fn to_user(&self, hub: &HubKey, user: &str, action: ConnAction) -> Result<()> {
        self.inner.send_or_busy(Msg::ToUser {
            hub: hub.clone(),
            user: user.into(),
            action,
        })
    }
}

impl PresenceManager for PgBroker {
    fn admit<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
        max: usize,
        rooms: &'a [String],
        remote: &'a str,
        user: Option<(&'a str, Option<&'a Value>)>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let presence = &self.inner.presence;
            Ok(presence
                .admit(hub.as_str(), connection_id, max, rooms, remote, user)
                .await?)
        })
    }

    fn user_moved(&self, hub: &HubKey, room: &str, user: &str, info: Option<Value>, joined: bool) {
        let key = (hub.clone(), room.to_string(), user.to_string());
        let info = info.map(|i| i.to_string());
        self.inner.pend(|p| {
            p.users.insert(key, (joined, info));
        });
    }

    fn rooms(&self, connection_id: &str, rooms: Vec<String>) {
        self.inner.pend(|p| {
            p.rooms.insert(connection_id.into(), rooms);
        });
    }

    fn gone(&self, connection_id: &str) {
        self.inner.pend(|p| {
            p.rooms.remove(connection_id);
            p.gone.insert(connection_id.into());
        });
    }

    fn holder<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let presence = &self.inner.presence;
            Ok(presence.holder(hub.as_str(), connection_id).await?)
        })
    }

    fn remote_count<'a>(
        &'a self,
        hub: &'a HubKey,
        room: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move { Ok(self.inner.presence.remote_count(hub.as_str(), room).await?) })
    }

    fn remote_connections<'a>(
        &'a self,
        hub: &'a HubKey,
        room: Option<&'a str>,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RemoteConnection>>> {
        Box::pin(async move {
            let presence = &self.inner.presence;
            Ok(presence.remote(hub.as_str(), room, user).await?)
        })
    }
}
