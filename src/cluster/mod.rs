//! Several nodes on one PostgreSQL database (SPEC §9), over PostgreSQL's
//! own LISTEN/NOTIFY on the channel `elementd`. With SQLite the cluster is
//! disabled and every call here is a no-op.
//!
//! - Each node has a random id and a `cluster_nodes` row it refreshes every
//!   [`HEARTBEAT`]; a node silent for [`STALE_MS`] is dead: its presence
//!   rows are ignored at once and deleted by the next sweep of any node.
//! - `ws_connections` holds one row per client connection, written at
//!   upgrade (inside a transaction holding an advisory lock per element, so
//!   `max_connections` holds across nodes), on join/leave and at close.
//!   Client messages never touch the database.
//! - Messages are small JSON envelopes. A payload over [`NOTIFY_MAX`] bytes
//!   is stored in `cluster_payloads` and only its id is notified; receivers
//!   read it from there. Events are cut instead (their message preview is
//!   dropped), since they go out per message.
//! - Events go out, batched, from a forwarder that reads the local live bus, so the
//!   per-message path only touches memory; when it falls behind, remote
//!   subscribers miss live events (they remain in `activity`). Message
//!   events (`ws.message.*`) go only while another node has live listeners
//!   (announced with `Listening`), so with none a client message builds no
//!   event and costs no NOTIFY.

mod tasks;

use tasks::{announce_loop, forward_loop, heartbeat_loop, listen_loop, relay_loop, write_loop};

use crate::error::{Error, Result};
use crate::events::{Bus, Event};
use crate::runtime::Runtime;
use crate::store::presence::{Presence, RemoteConnection, STALE_MS};
use crate::store::Db;
use axum::extract::ws::Message;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "elementd";
/// NOTIFY refuses payloads of 8000 bytes or more; keep a margin.
pub const NOTIFY_MAX: usize = 7000;
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Relayed client messages waiting for their NOTIFY.
const RELAY_QUEUE: usize = 4096;
/// Messages (send, close, broadcast, …) waiting for their NOTIFY; a
/// caller that finds it full is told to retry.
const OUT_QUEUE: usize = 1024;

#[derive(Clone, Default)]
pub struct Cluster {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    node_id: String,
    /// For NOTIFY and the listener.
    pool: PgPool,
    /// The presence tables, through storage.
    presence: Presence,
    out: mpsc::Sender<Msg>,
    /// Presence and element changes, coalesced: bounded by the number of
    /// connections and elements, however fast they change.
    pending: std::sync::Mutex<Pending>,
    wake: tokio::sync::Notify,
    /// Client messages relayed by `on_message`: bounded, dropped when full.
    relay: mpsc::Sender<FanOut>,
    stop: CancellationToken,
    /// Other nodes with live listeners, each until its claim goes stale.
    listening: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Whether another live node exists: with none, client messages are
    /// not relayed at all. Set by any message from another node, and
    /// recomputed every heartbeat.
    others: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Drops stale listener claims, notes another node's `Listening` if
    /// one came, and sets the bus flag that gates forwarding.
    fn note_listening(&self, claim: Option<(&str, bool)>, flag: &crate::events::Listening) {
        let now = crate::model::now_ms();
        let mut map = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| *until > now);
        match claim {
            Some((node, true)) => {
                map.insert(node.to_string(), now + STALE_MS);
            }
            Some((node, false)) => {
                map.remove(node);
            }
            None => {}
        }
        flag.set_remote(!map.is_empty());
    }

    /// How many other nodes have live listeners.
    pub fn listening_nodes(&self) -> usize {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Changes the writer sends next; a later change of the same thing
/// replaces an earlier one.
#[derive(Default)]
struct Pending {
    changed: std::collections::HashSet<String>,
    rooms: std::collections::HashMap<String, Vec<String>>,
    gone: std::collections::HashSet<String>,
}

impl Inner {
    fn pend(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.wake.notify_one();
    }

    /// Queues a message; false (and logged) when the queue is full.
    fn send(&self, msg: Msg) -> bool {
        match self.out.try_send(msg) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cluster queue full; message not sent");
                false
            }
        }
    }
}

fn busy() -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        crate::error::Class::Limit,
        "CLUSTER_BUSY",
        "too many messages are waiting for other nodes; try again",
    )
    .retryable()
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    msg: Msg,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Msg {
    ElementChanged {
        id: String,
    },
    /// Whether the sender has live listeners (SSE streams); repeated every
    /// heartbeat while true, so a node that joins later learns it.
    Listening {
        on: bool,
    },
    /// Live events, as many as fit one NOTIFY.
    Events {
        events: Vec<Event>,
    },
    /// Something for the node holding a connection to do with it.
    ToConnection {
        to: String,
        element_id: String,
        connection_id: String,
        action: ConnAction,
    },
    /// Messages for the receivers' connections: a `broadcast` op's (one),
    /// or client messages that `on_message` relays, as many as fit one
    /// NOTIFY (a storm costs few round trips, not one per message).
    FanOut {
        batch: Vec<FanOut>,
    },
    /// The real envelope is in `cluster_payloads`.
    Stored {
        id: i64,
    },
}

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

/// One message for the receiving node's connections of the element: all
/// of them, or the members of `rooms`. The sender of a relayed client
/// message is never among them: it is on the node that relays.
#[derive(Serialize, Deserialize, Debug)]
struct FanOut {
    element_id: String,
    text: Option<String>,
    binary_base64: Option<String>,
    rooms: Option<Vec<String>>,
}

impl FanOut {
    /// About what it adds to a NOTIFY body.
    fn json_len(&self) -> usize {
        let rooms: usize = self.rooms.iter().flatten().map(|r| r.len() + 3).sum();
        80 + self.element_id.len()
            + self.text.as_ref().map_or(0, |t| t.len() + t.len() / 8)
            + self.binary_base64.as_ref().map_or(0, String::len)
            + rooms
    }
}

impl Cluster {
    /// Joins the cluster when `url` is PostgreSQL: registers this node and
    /// starts its writer. SQLite answers a disabled cluster.
    pub async fn connect(url: &str) -> anyhow::Result<Cluster> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(Cluster::default());
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let node_id = uuid::Uuid::new_v4().to_string();
        let presence = Presence::new(pool.clone(), node_id.clone());
        presence.heartbeat().await?;
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let inner = Arc::new(Inner {
            node_id,
            pool,
            presence,
            out,
            pending: Default::default(),
            wake: Default::default(),
            relay,
            stop: CancellationToken::new(),
            listening: Default::default(),
            others: Default::default(),
        });
        tokio::spawn(write_loop(inner.clone(), rx));
        tokio::spawn(relay_loop(inner.clone(), relay_rx));
        tracing::info!(node_id = %inner.node_id, "joined the cluster");
        Ok(Cluster { inner: Some(inner) })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn node_id(&self) -> Option<&str> {
        self.inner.as_ref().map(|i| i.node_id.as_str())
    }

    /// Starts listening, the heartbeat and the event forwarder.
    pub async fn start(&self, runtime: Runtime, db: Db, bus: Bus) -> anyhow::Result<()> {
        let Some(inner) = self.inner.clone() else {
            return Ok(());
        };
        let mut listener = PgListener::connect_with(&inner.pool).await?;
        listener.listen(CHANNEL).await?;
        let stop = inner.stop.clone();
        tokio::spawn(heartbeat_loop(inner.clone(), runtime.clone()));
        tokio::spawn(listen_loop(
            inner.clone(),
            listener,
            runtime,
            db,
            bus.clone(),
        ));
        tokio::spawn(announce_loop(inner.clone(), bus.listening()));
        // Tells the other nodes at once that this one is here.
        inner.send(Msg::Listening { on: false });
        tokio::spawn(forward_loop(inner, bus, stop));
        Ok(())
    }

    /// Other nodes that have live listeners right now (for `/readyz`).
    pub fn listening_nodes(&self) -> Option<usize> {
        self.inner.as_ref().map(|i| i.listening_nodes())
    }

    /// Leaves the cluster: this node's presence rows and node row go.
    pub async fn stop(&self) {
        let Some(inner) = &self.inner else { return };
        inner.stop.cancel();
        if let Err(e) = inner.presence.leave().await {
            tracing::warn!(error = %e, "leaving the cluster");
        }
    }

    fn pend(&self, f: impl FnOnce(&mut Pending)) {
        if let Some(i) = &self.inner {
            i.pend(f);
        }
    }

    /// Other nodes reload the element from the database.
    pub fn element_changed(&self, id: &str) {
        self.pend(|p| {
            p.changed.insert(id.into());
        });
    }

    /// Reserves a presence row under `max` connections of the element on
    /// all live nodes. Race-safe: one transaction per element at a time.
    pub async fn admit(
        &self,
        element_id: &str,
        connection_id: &str,
        max: usize,
        rooms: &[String],
        remote: &str,
    ) -> Result<()> {
        let Some(i) = &self.inner else { return Ok(()) };
        if i.presence
            .admit(element_id, connection_id, max, rooms, remote)
            .await?
        {
            Ok(())
        } else {
            Err(crate::runtime::errors::max_connections(max))
        }
    }

    /// Relays a client message to the other nodes' connections (all of
    /// them, or members of `rooms`). Never waits: when the queue is full
    /// the relay is dropped and logged.
    pub fn relay(&self, element_id: &str, msg: &Message, rooms: Option<Vec<String>>) {
        let Some(i) = &self.inner else { return };
        if !i.others.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let (text, binary_base64) = match msg {
            Message::Text(t) => (Some(t.to_string()), None),
            Message::Binary(b) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(b)),
            ),
            _ => return,
        };
        let m = FanOut {
            element_id: element_id.into(),
            text,
            binary_base64,
            rooms,
        };
        if i.relay.try_send(m).is_err() {
            tracing::warn!(
                element_id,
                "cluster relay queue full; message not relayed to other nodes"
            );
        }
    }

    /// A connection's rooms changed (join/leave).
    pub fn rooms(&self, connection_id: &str, rooms: Vec<String>) {
        self.pend(|p| {
            p.rooms.insert(connection_id.into(), rooms);
        });
    }

    /// A connection (or a reservation that never became one) ended.
    pub fn gone(&self, connection_id: &str) {
        self.pend(|p| {
            p.rooms.remove(connection_id);
            p.gone.insert(connection_id.into());
        });
    }

    /// The other live node holding a connection of the element, if any.
    /// This node's rows are not asked: its hub knows better (a row may
    /// outlive its connection by the moment its deletion takes).
    pub async fn holder(&self, element_id: &str, connection_id: &str) -> Result<Option<String>> {
        let Some(i) = &self.inner else {
            return Ok(None);
        };
        Ok(i.presence.holder(element_id, connection_id).await?)
    }

    /// Connections of the element held by other live nodes, oldest first.
    pub async fn remote_connections(
        &self,
        element_id: &str,
        room: Option<&str>,
    ) -> Result<Vec<Value>> {
        let Some(i) = &self.inner else {
            return Ok(Vec::new());
        };
        let rows = i.presence.remote(element_id, room).await?;
        Ok(rows.iter().map(remote_json).collect())
    }

    /// Hands `action` to the other live node holding the connection;
    /// false when none holds it.
    pub async fn to_connection(
        &self,
        element_id: &str,
        connection_id: &str,
        action: ConnAction,
    ) -> Result<bool> {
        let Some(to) = self.holder(element_id, connection_id).await? else {
            return Ok(false);
        };
        let Some(i) = &self.inner else {
            return Ok(false);
        };
        let sent = i.send(Msg::ToConnection {
            to,
            element_id: element_id.into(),
            connection_id: connection_id.into(),
            action,
        });
        if sent {
            Ok(true)
        } else {
            Err(busy())
        }
    }

    /// Hands a broadcast to the other nodes; answers how many connections
    /// they hold in its audience (live presence rows).
    pub async fn broadcast(
        &self,
        element_id: &str,
        text: String,
        room: Option<&str>,
    ) -> Result<usize> {
        let Some(i) = &self.inner else { return Ok(0) };
        let n = i.presence.remote_count(element_id, room).await?;
        let sent = n == 0
            || i.send(Msg::FanOut {
                batch: vec![FanOut {
                    element_id: element_id.into(),
                    text: Some(text),
                    binary_base64: None,
                    rooms: room.map(|r| vec![r.to_string()]),
                }],
            });
        if sent {
            Ok(n)
        } else {
            Err(busy())
        }
    }
}

/// A connection another node holds, as `connections` lists it.
fn remote_json(c: &RemoteConnection) -> Value {
    json!({
        "connection_id": c.connection_id,
        "kind": "client",
        "connected_at": crate::model::rfc3339(c.connected_at),
        "rooms": c.rooms,
        "remote_addr": c.remote,
        "node_id": c.node_id,
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
        // As of the holder's last heartbeat that saw a change.
        "counted_at": c.counted_at.map(crate::model::rfc3339),
    })
}
