//! This node's side of the cluster as the broker's calls and its
//! background tasks share it: queues, coalesced changes, who listens.

use super::wire::{FanOut, Msg};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::runtime::{Append, BrokerHandler, HubKey};
use crate::store::presence::{Presence, STALE_MS};
use crate::sync::lock;
use sqlx::postgres::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(super) const CHANNEL: &str = "elementd";
/// NOTIFY refuses payloads of 8000 bytes or more; keep a margin.
pub(super) const NOTIFY_MAX: usize = 7000;
pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);

pub(super) struct Inner {
    pub(super) node_id: String,
    /// For NOTIFY and the listener.
    pub(super) pool: PgPool,
    /// The presence tables, through storage.
    pub(super) presence: Presence,
    pub(super) out: mpsc::Sender<Msg>,
    /// Presence and element changes, coalesced: bounded by the number of
    /// connections and elements, however fast they change.
    pub(super) pending: Mutex<Pending>,
    pub(super) wake: tokio::sync::Notify,
    /// Client messages relayed by `on_message`: bounded, dropped when full.
    pub(super) relay: mpsc::Sender<FanOut>,
    /// Publications for the shared history's appender.
    pub(super) appends: mpsc::Sender<Append>,
    /// The operator's history bytes per element.
    pub(super) history_cap: usize,
    pub(super) stop: CancellationToken,
    /// Other nodes with live listeners, each until its claim goes stale.
    pub(super) listening: Mutex<HashMap<String, i64>>,
    /// Whether another live node exists: with none, client messages are
    /// not relayed at all. Set by any message from another node, and
    /// recomputed every heartbeat.
    pub(super) others: AtomicBool,
    /// The runtime, for presence events this node tells its own members.
    /// Weak: the runtime holds this node's broker (the listening tasks
    /// hold the handler while the node runs).
    pub(super) handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// The room users this node's rows say it has (hub, room, user).
    pub(super) written_users: Mutex<HashSet<UserKey>>,
}

/// (hub, room, user).
pub(super) type UserKey = (HubKey, String, String);

/// Changes the writer sends next; a later change of the same thing
/// replaces an earlier one.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) changed: HashSet<crate::ids::ElementId>,
    pub(super) rooms: HashMap<String, Vec<String>>,
    pub(super) gone: HashSet<String>,
    /// A user's presence in a room on this node: joined (with info) or not.
    pub(super) users: HashMap<UserKey, (bool, Option<String>)>,
}

impl Inner {
    /// Drops stale listener claims, notes another node's `Listening` if
    /// one came, and sets the bus flag that gates forwarding.
    pub(super) fn note_listening(
        &self,
        claim: Option<(&str, bool)>,
        flag: &crate::events::Listening,
    ) {
        let now = crate::model::now_ms();
        let mut map = lock(&self.listening);
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

    pub(super) fn pend(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut lock(&self.pending));
        self.wake.notify_one();
    }

    /// Queues a message; false (and logged) when the queue is full.
    pub(super) fn send(&self, msg: Msg) -> bool {
        match self.out.try_send(msg) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cluster queue full; message not sent");
                false
            }
        }
    }

    /// Queues a message a caller waits on: a full queue is an error the
    /// caller may retry.
    pub(super) fn send_or_busy(&self, msg: Msg) -> Result<()> {
        if self.send(msg) {
            Ok(())
        } else {
            Err(busy())
        }
    }
}

pub(super) fn busy() -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        crate::error::Class::Limit,
        ErrorCode::ClusterBusy,
        "too many messages are waiting for other nodes; try again",
    )
    .retryable()
}
