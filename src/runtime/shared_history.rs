//! Room history shared by the nodes: the third part of [`Peers`](super::Peers),
//! beside the broker and presence. With it, a hub publishes by handing the
//! message to [`SharedHistory::append`]; the store gives it its offsets and
//! every node, this one too, gets it back placed through
//! [`BrokerHandler::published`](super::BrokerHandler::published), in
//! commit order, and delivers it from its in-memory mirror. Without it
//! (a node alone), each hub keeps its history in memory.

use super::frame::Frame;
use super::key::HubKey;
use super::position::Position;
use crate::error::Result;
use futures::future::BoxFuture;

/// A publication to place.
pub struct Append {
    pub hub: HubKey,
    /// Its streams: rooms, or `""` for no room.
    pub rooms: Vec<String>,
    /// A connection that gets it only as an `elementd.v1` envelope (the
    /// raw sender of a relayed message).
    pub except: Option<String>,
    pub msg: Frame,
    pub size: u64,
    pub ttl_ms: i64,
    /// Told the message's place in each of its streams once committed.
    pub placed: Option<tokio::sync::oneshot::Sender<Vec<Position>>>,
}

/// A publication as placed: its offset in each of its streams.
pub struct Published {
    pub hub: HubKey,
    pub msg: Frame,
    pub except: Option<String>,
    /// ms since the epoch.
    pub at: i64,
    pub streams: Vec<(String, Position)>,
}

/// What a stream keeps: its position, and messages (offset, message,
/// published_at ms) oldest first.
pub struct Stored {
    pub position: Position,
    pub items: Vec<(u64, Frame, i64)>,
}

pub trait SharedHistory: Send + Sync + 'static {
    /// Whether history lives here; when not, each hub keeps its own.
    fn shared(&self) -> bool;

    /// Queues a publication. A full queue is an error the caller may retry.
    fn append(&self, a: Append) -> Result<()>;

    /// A stream's position and what it keeps after `since` (at most
    /// `limit`); the stream is made when `make` (else None when missing).
    fn read<'a>(
        &'a self,
        hub: &'a HubKey,
        room: &'a str,
        since: Option<u64>,
        limit: usize,
        make: bool,
    ) -> BoxFuture<'a, Result<Option<Stored>>>;
}
