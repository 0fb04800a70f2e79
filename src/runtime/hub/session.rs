//! A connection's life in its hub: a slot under `max_connections`, then
//! registration before the 101 goes out, then serving until it closes.

use super::history::joined_frame;
use super::Hub;
use crate::error::Result;
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::limits::MessageGate;
use crate::runtime::conn::{CloseReq, Conn, SendOutcome};
use crate::runtime::errors;
use crate::runtime::frame::{Frame, CLOSE_GOING_AWAY};
use crate::runtime::position::Position;
use crate::runtime::socket::{self, ReadError, Timing};
use crate::runtime::wire::WireWatch;
use crate::sync::{lock, write};
use futures::future::{Either, FutureExt};
use futures::{Sink, Stream};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// A reserved place under `max_connections` for the connection `id`,
/// given back on drop (with its presence row, when other nodes share the
/// database).
pub struct Slot {
    hub: Arc<Hub>,
    pub id: String,
    /// Its place under the node's websocket cap.
    _node: OwnedSemaphorePermit,
}

/// A registered connection waiting for (or holding) its socket. Dropped
/// before `serve` took it (the upgrade failed), it takes itself back out.
pub struct Opened {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    /// `serve` took it: the connection's end is its to report.
    served: bool,
    slot: Option<Slot>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let (hub, conn, slot) = (self.hub.clone(), self.conn.clone(), self.slot.take());
        let gone = async move {
            hub.closed(&conn, 1006, "upgrade failed", "client", None)
                .await;
            drop(slot);
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(gone);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.admitted.fetch_sub(1, Ordering::AcqRel);
        self.hub.peers.presence.gone(&self.id);
    }
}

impl Hub {
    /// Reserves a connection under `max_connections`: on this node, then
    /// (through presence) across every live node sharing the database.
    pub async fn admit(
        self: &Arc<Self>,
        id: String,
        rooms: &[String],
        remote: &str,
        user: Option<(&str, Option<&serde_json::Value>)>,
    ) -> Result<Slot> {
        let node = self.budget.connection().ok_or_else(errors::node_full)?;
        let max = self
            .budget
            .per_element(self.spec().connection.max_connections);
        let r = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if r.is_err() {
            return Err(errors::max_connections(max));
        }
        let slot = Slot {
            hub: self.clone(),
            id,
            _node: node,
        };
        // Alone, there is nobody to ask (and no future to box).
        if self.peers.shared()
            && !self
                .peers
                .presence
                .admit(&self.key, &slot.id, max, rooms, remote, user)
                .await?
        {
            return Err(errors::max_connections(max));
        }
        Ok(slot)
    }

    /// Registers a connection before the handshake answer goes out, so it
    /// is listed and reachable as soon as the client sees 101.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        self: &Arc<Self>,
        slot: Slot,
        remote: String,
        protocol: Option<String>,
        rooms: Vec<String>,
        actor: crate::model::Actor,
        user: Option<String>,
        end_user: Option<crate::runtime::jwt::EndUser>,
        gate: Option<MessageGate>,
        recover: Vec<(String, Position)>,
    ) -> Opened {
        let spec = self.spec();
        let conn = Conn::new(
            slot.id.clone(),
            remote,
            protocol,
            spec.connection.send_queue,
            spec.history.size,
            actor,
            user,
            end_user,
            gate,
            self.budget.clone(),
            self.changes.clone(),
        );
        lock(&conn.rooms).extend(rooms.iter().cloned());
        let mut reads = Vec::with_capacity(recover.len());
        for (room, since) in &recover {
            // Boxed: only a recovering handshake waits here.
            reads.push(Box::pin(self.prefetch(room, Some(since))).await);
        }
        // With history, the replays are queued and the connection made
        // visible under the streams lock: what is published next comes
        // after the replays.
        self.with_streams(|st| {
            if let Some(st) = st {
                for ((room, since), read) in recover.iter().zip(&reads) {
                    let r = self.recover(st, &conn, room, Some(since), read.as_ref());
                    let ack = joined_frame(room, conn.rooms(), &r, true);
                    if let SendOutcome::Overflow = conn.try_send(Frame::text(ack.to_string())) {
                        self.metrics.slow_client_count.inc();
                    }
                }
            }
            write(&self.conns).insert(conn.id.clone(), conn.clone());
            let mut index = lock(&self.rooms);
            for r in &rooms {
                index.entry(r.clone()).or_default().insert(conn.id.clone());
            }
        });
        self.changes.note();
        self.user_arrived(&conn);
        // Disabled while upgrading: close at once.
        if self.is_stopped() {
            conn.request_close(CloseReq::soft(
                CLOSE_GOING_AWAY,
                "element is no longer live",
            ));
        }
        self.metrics.connection_count.inc();
        self.metrics.active_connections.inc();
        let data = OpenedData {
            connection_id: &conn.id,
            remote_addr: &conn.remote,
            rooms: &rooms,
            protocol: conn.protocol.as_deref(),
            user: conn.user.as_deref(),
            env: self.env.as_str(),
        };
        let kind = EventKind::WsConnectionOpened;
        self.emit_connection(kind, || self.event_text(kind, conn.actor_json(), &data))
            .await;
        Opened {
            hub: self.clone(),
            conn,
            served: false,
            slot: Some(slot),
        }
    }

    /// Serves an upgraded connection until it ends. Not an `async fn`: its
    /// arguments would stay in the task's state for the connection's life.
    pub fn serve<S>(
        self: Arc<Self>,
        mut opened: Opened,
        socket: S,
        wire: Option<Arc<WireWatch>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: Stream<Item = std::result::Result<Frame, ReadError>> + Sink<Frame> + Send + 'static,
    {
        let spec = self.spec();
        let timing = Timing {
            ping_every: Duration::from_millis(spec.heartbeat.interval_ms),
            silence: Duration::from_millis(
                spec.heartbeat.timeout_ms.max(spec.heartbeat.interval_ms),
            ),
            idle: (spec.connection.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(spec.connection.idle_timeout_ms)),
        };
        if std::mem::replace(&mut opened.served, true) {
            return Either::Left(std::future::ready(()));
        }
        let conn = opened.conn.clone();
        let hub = self.clone();
        // A combinator, not an async block: an async block kept the
        // connection's future twice (as captured, and as awaited), which
        // doubled every idle connection's task.
        let running = socket::run(self, conn.clone(), socket, timing, wire);
        Either::Right(running.then(move |ended| {
            let mut opened = opened;
            // The place is free before the close is reported, so a client
            // that saw the count drop is admitted.
            drop(opened.slot.take());
            Box::pin(async move {
                let by = ended.by;
                hub.closed(&conn, ended.code, &ended.reason, by, ended.error)
                    .await;
                drop(opened);
            })
        }))
    }

    async fn closed(
        &self,
        conn: &Conn,
        code: u16,
        reason: &str,
        by: &str,
        error: Option<ErrorCode>,
    ) {
        self.unregister(conn);
        self.metrics.active_connections.dec();
        self.metrics.disconnect_count.inc();
        let data = ClosedData {
            connection_id: &conn.id,
            code,
            reason,
            closed_by: by,
            duration_ms: crate::model::now_ms() - conn.connected_at,
            messages_in: conn.msgs_in.load(Ordering::Relaxed),
            messages_out: conn.msgs_out.load(Ordering::Relaxed),
            user: conn.user.as_deref(),
            error: error.map(|code| ErrorOf { code }),
            env: self.env.as_str(),
        };
        let kind = EventKind::WsConnectionClosed;
        self.emit_connection(kind, || self.event_text(kind, conn.actor_json(), &data))
            .await;
    }

    fn unregister(&self, conn: &Conn) {
        write(&self.conns).remove(&conn.id);
        {
            let mut index = lock(&self.rooms);
            for r in conn.rooms() {
                if let Some(set) = index.get_mut(&r) {
                    set.remove(&conn.id);
                    if set.is_empty() {
                        index.remove(&r);
                    }
                }
            }
        }
        self.changes.note();
        // After the index: the leave goes to the members that stay.
        self.user_went(conn);
    }
}

/// `ws.connection.opened`'s data (SPEC §5), written as text at once.
#[derive(Serialize)]
struct OpenedData<'a> {
    connection_id: &'a str,
    remote_addr: &'a str,
    rooms: &'a [String],
    protocol: Option<&'a str>,
    user: Option<&'a str>,
    env: &'static str,
}

/// `ws.connection.closed`'s data; `error` only when one ended it.
#[derive(Serialize)]
struct ClosedData<'a> {
    connection_id: &'a str,
    code: u16,
    reason: &'a str,
    closed_by: &'a str,
    duration_ms: i64,
    messages_in: u64,
    messages_out: u64,
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOf>,
    env: &'static str,
}

#[derive(Serialize)]
struct ErrorOf {
    code: ErrorCode,
}
