//! One client connection, served by one task (the upgrade's own): it
//! reads, drains a bounded send queue into the socket, pings and closes.
//! A slow client fills only its own queue; when it overflows (in count
//! or in bytes), or the node's byte budget would, the client is closed,
//! never buffered without bound.

use super::budget::Budget;
use super::hub::{msg_len, Hub};
use super::wire::WireWatch;
use crate::limits::MessageGate;
use crate::model::{now_ms, Actor};
use crate::sync::lock;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::CancellationToken;

/// How long a close handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long writing the close frame may take.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// Why a connection is being closed, first request wins.
#[derive(Debug, Clone)]
pub struct CloseReq {
    pub code: u16,
    pub reason: String,
    /// Drop the socket without waiting for the peer's close reply.
    pub hard: bool,
    /// An error code for the activity record (e.g. WS_MESSAGE_TOO_LARGE).
    pub error: Option<&'static str>,
    /// Send what is already queued (replies to frames read before a
    /// protocol error) before the close frame.
    pub drain: bool,
}

impl CloseReq {
    /// A close we start on purpose: what is queued goes out first, then
    /// the close frame, then we wait for the peer's reply.
    pub fn soft(code: u16, reason: &str) -> CloseReq {
        CloseReq {
            code,
            reason: reason.into(),
            hard: false,
            error: None,
            drain: true,
        }
    }
}

/// A new connection id (time-ordered, unique across nodes).
pub fn new_id() -> String {
    format!("c_{}", uuid::Uuid::now_v7().simple())
}

/// What a queued message is counted as: its payload and the queue
/// entry's own size, so a flood of empty messages counts too.
fn queued_size(m: &Message) -> usize {
    msg_len(m) + std::mem::size_of::<Message>()
}

pub enum SendOutcome {
    Queued,
    /// The queue was full (in count or bytes, or the node's budget): the
    /// client is being closed (1013).
    Overflow,
    Gone,
}

pub struct Conn {
    pub id: String,
    pub connected_at: i64,
    pub remote: String,
    pub protocol: Option<String>,
    /// Who connected: the token's identity, or external (typed, not JSON:
    /// an external caller's costs an idle connection no allocation).
    pub actor: Actor,
    pub rooms: Mutex<BTreeSet<String>>,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    /// Attached rate limits on inbound messages, if any.
    pub gate: Option<MessageGate>,
    tx: flume::Sender<Message>,
    /// Bytes in the send queue (see [`queued_size`]).
    queued: AtomicUsize,
    budget: Arc<Budget>,
    close: Mutex<Option<CloseReq>>,
    closing: CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // What was queued after the writer's last drain goes with us.
        self.budget.release(*self.queued.get_mut());
    }
}

impl Conn {
    pub fn new(
        id: String,
        remote: String,
        protocol: Option<String>,
        queue: usize,
        actor: Actor,
        gate: Option<MessageGate>,
        budget: Arc<Budget>,
    ) -> (Arc<Conn>, flume::Receiver<Message>) {
        let (tx, rx) = flume::bounded(queue.max(1));
        let now = now_ms();
        let conn = Conn {
            id,
            connected_at: now,
            remote,
            protocol,
            actor,
            rooms: Mutex::new(BTreeSet::new()),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            gate,
            tx,
            queued: AtomicUsize::new(0),
            budget,
            close: Mutex::new(None),
            closing: CancellationToken::new(),
        };
        (Arc::new(conn), rx)
    }

    /// Queues a frame without waiting; a full queue (or node budget)
    /// closes the client.
    pub fn try_send(&self, msg: Message) -> SendOutcome {
        if self.closing.is_cancelled() {
            return SendOutcome::Gone;
        }
        let size = queued_size(&msg);
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        // A message that finds the queue empty goes whatever its size.
        if before > 0 && before + size > self.budget.limits.buffer_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return self.overflow(
                "send buffer over its byte limit: client too slow",
                "WS_SEND_QUEUE_FULL",
            );
        }
        if !self.budget.take(size) {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return self.overflow(
                "the server's send buffers are full",
                "WS_SERVER_BUFFERS_FULL",
            );
        }
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.msgs_out.fetch_add(1, Ordering::Relaxed);
                SendOutcome::Queued
            }
            Err(e) => {
                self.dequeued(size);
                match e {
                    flume::TrySendError::Full(_) => {
                        self.overflow("send queue overflow: client too slow", "WS_SEND_QUEUE_FULL")
                    }
                    flume::TrySendError::Disconnected(_) => SendOutcome::Gone,
                }
            }
        }
    }

    fn overflow(&self, reason: &str, error: &'static str) -> SendOutcome {
        self.request_close(CloseReq {
            code: CLOSE_TRY_AGAIN,
            reason: reason.into(),
            hard: true,
            error: Some(error),
            drain: false,
        });
        SendOutcome::Overflow
    }

    /// `size` bytes left the send queue.
    fn dequeued(&self, size: usize) {
        self.queued.fetch_sub(size, Ordering::AcqRel);
        self.budget.release(size);
    }

    /// The next frame from the send queue, counted out.
    fn take(&self, m: Message) -> Message {
        self.dequeued(queued_size(&m));
        m
    }

    pub fn request_close(&self, req: CloseReq) {
        {
            let mut g = lock(&self.close);
            if g.is_none() {
                *g = Some(req);
            }
        }
        self.closing.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    fn close_req(&self) -> Option<CloseReq> {
        lock(&self.close).clone()
    }

    pub fn rooms(&self) -> Vec<String> {
        lock(&self.rooms).iter().cloned().collect()
    }

    /// The actor as events carry it.
    pub fn actor_json(&self) -> Value {
        serde_json::to_value(&self.actor).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        json!({
            "connection_id": self.id,
            "kind": "client",
            "connected_at": crate::model::rfc3339(self.connected_at),
            "rooms": self.rooms(),
            "remote_addr": self.remote,
            "protocol": self.protocol,
            "messages_in": self.msgs_in.load(Ordering::Relaxed),
            "messages_out": self.msgs_out.load(Ordering::Relaxed),
        })
    }
}

/// How a connection ended, for its `ws.connection.closed` event.
#[derive(Debug)]
pub struct Ended {
    pub code: u16,
    pub reason: String,
    pub by: &'static str,
    pub error: Option<&'static str>,
}

/// Timing settings a connection keeps from the spec it connected under.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ping_every: Duration,
    /// Also how long a client may leave a message unfinished.
    pub silence: Duration,
    pub idle: Option<Duration>,
}

/// Runs a connection to its end in one task: reads, the send queue, the
/// heartbeat and the close handshake share one loop and one timer. The
/// socket is split here, before that future exists, so an idle
/// connection's task does not carry the socket's bytes in its state.
pub fn run(
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    socket: WebSocket,
    rx: flume::Receiver<Message>,
    timing: Timing,
    wire: Option<Arc<WireWatch>>,
) -> impl std::future::Future<Output = Ended> + Send + 'static {
    let (sink, stream) = socket.split();
    // Built here, not in `drive`: its arguments are stored in its state
    // anyway, and values made from them would take a second place there.
    drive(
        hub,
        conn,
        Out::new(sink),
        stream,
        rx,
        Clocks::new(timing, wire),
    )
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// The write half's state: at most one frame waiting for the sink,
/// whether what the sink took is still to be flushed, and what a close
/// still owes the peer.
struct Out {
    sink: Sink,
    pending: Option<Message>,
    unflushed: bool,
    ping_owed: bool,
    /// Set once a close we started is under way.
    closing: Option<CloseReq>,
    close_queued: bool,
    /// The sink failed: nothing more is written.
    broken: bool,
}

impl Out {
    fn new(sink: Sink) -> Out {
        Out {
            sink,
            pending: None,
            unflushed: false,
            ping_owed: false,
            closing: None,
            close_queued: false,
            broken: false,
        }
    }

    /// Whether a frame is on its way (or owed) and the sink should be
    /// polled.
    fn busy(&self) -> bool {
        !self.broken && (self.pending.is_some() || self.unflushed || self.ping_owed)
    }

    /// Whether the next frame may come from the send queue.
    fn takes_queue(&self) -> bool {
        !self.broken && !self.busy() && self.closing.is_none()
    }

    /// During a close: the next owed frame (a queued one when the close
    /// drains, then the close frame).
    fn refill(&mut self, rx: &flume::Receiver<Message>, conn: &Conn) {
        let Some(req) = &self.closing else { return };
        if self.broken || self.busy() || self.close_queued {
            return;
        }
        if req.drain {
            if let Ok(m) = rx.try_recv() {
                self.pending = Some(conn.take(m));
                return;
            }
        }
        self.close_queued = true;
        self.pending = Some(close_frame(req));
    }

    /// Hands the pending frame (or an owed ping) to the sink and flushes.
    /// Cancel-safe: a frame leaves `pending` only when the sink took it.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.is_none() && self.ping_owed {
            self.ping_owed = false;
            self.pending = Some(Message::Ping(Bytes::new()));
        }
        if self.pending.is_some() {
            if ready!(self.sink.poll_ready_unpin(cx)).is_err() {
                self.broken = true;
                return Poll::Ready(());
            }
            if let Some(m) = self.pending.take() {
                if self.sink.start_send_unpin(m).is_err() {
                    self.broken = true;
                    return Poll::Ready(());
                }
                self.unflushed = true;
            }
        }
        if ready!(self.sink.poll_flush_unpin(cx)).is_err() {
            self.broken = true;
        }
        self.unflushed = false;
        Poll::Ready(())
    }

    /// After the loop: what a close still owes, each step in bounded
    /// time: the queued frames (when the close drains), then its frame.
    async fn finish(&mut self, rx: &flume::Receiver<Message>, conn: &Conn) {
        let Some(req) = self.closing.clone() else {
            return;
        };
        self.ping_owed = false;
        if !req.drain {
            self.pending = None;
        }
        let _ = tokio::time::timeout(CLOSE_WRITE, async {
            loop {
                self.refill(rx, conn);
                if !self.busy() || self.close_queued {
                    break;
                }
                std::future::poll_fn(|cx| self.poll_write(cx)).await;
            }
        })
        .await;
        if !self.close_queued {
            // Draining ran out of time: what was not sent is dropped.
            self.close_queued = true;
            self.pending = Some(close_frame(&req));
        }
        let _ = tokio::time::timeout(CLOSE_WRITE, async {
            while self.busy() {
                std::future::poll_fn(|cx| self.poll_write(cx)).await;
            }
        })
        .await;
    }
}

fn close_frame(req: &CloseReq) -> Message {
    Message::Close(Some(CloseFrame {
        code: req.code,
        reason: Utf8Bytes::from(req.reason.clone()),
    }))
}

async fn drive(
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    mut out: Out,
    mut stream: futures::stream::SplitStream<WebSocket>,
    rx: flume::Receiver<Message>,
    mut clocks: Clocks,
) -> Ended {
    let mut peer_close: Option<(u16, String)> = None;
    let deadline = tokio::time::sleep_until(clocks.next_deadline());
    tokio::pin!(deadline);
    loop {
        out.refill(&rx, &conn);
        deadline.as_mut().reset(clocks.next_deadline());
        tokio::select! {
            biased;
            _ = conn.closing.cancelled(), if !clocks.closing() => {
                clocks.start_grace(&conn);
                out.closing = conn.close_req();
            }
            _ = std::future::poll_fn(|cx| out.poll_write(cx)), if out.busy() => {}
            m = rx.recv_async(), if out.takes_queue() => match m {
                Ok(m) => out.pending = Some(conn.take(m)),
                Err(_) => out.broken = true,
            },
            m = stream.next() => match m {
                None => break,
                Some(Ok(msg)) => {
                    clocks.saw(&msg);
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            if !conn.is_closing() {
                                // Boxed: its state would otherwise sit in every idle connection's task.
                                Box::pin(hub.client_message(&conn, msg, None)).await;
                            }
                        }
                        Message::Close(f) => {
                            peer_close = Some(f.map_or((1005, String::new()), |f| (f.code, f.reason.to_string())));
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                Some(Err(e)) => {
                    if let Some(req) = protocol_failure(e) {
                        conn.request_close(req);
                    }
                    break;
                }
            },
            _ = &mut deadline => {
                if clocks.ping_due() {
                    out.ping_owed = !conn.is_closing();
                }
                if clocks.expired(&conn) {
                    break;
                }
            }
        }
    }
    conn.closing.cancel();
    // The peer's own close is answered by the protocol layer; we send one
    // only for closes we started.
    if out.closing.is_none() {
        out.closing = conn.close_req();
    }
    if out.closing.is_some() {
        Box::pin(out.finish(&rx, &conn)).await;
    }
    // What was never sent is freed now, not when the last handle goes.
    for m in rx.drain() {
        conn.take(m);
    }
    ended(conn.close_req(), peer_close)
}

/// A connection's clocks, all served by its one timer: the next ping,
/// the last frame (heartbeat), the last data message (idle timeout) and,
/// once a close is under way, when to give up on it.
struct Clocks {
    timing: Timing,
    next_ping: Instant,
    last_frame: Instant,
    last_data: Instant,
    grace: Option<Instant>,
    wire: Option<Arc<WireWatch>>,
}

impl Clocks {
    fn new(timing: Timing, wire: Option<Arc<WireWatch>>) -> Clocks {
        let now = Instant::now();
        Clocks {
            timing,
            next_ping: now + timing.ping_every,
            last_frame: now,
            last_data: now,
            grace: None,
            wire,
        }
    }

    /// When the message the client left unfinished runs out of time.
    fn unfinished_until(&self) -> Option<Instant> {
        let since = self.wire.as_ref()?.incomplete_since()?;
        Some(since + self.timing.silence)
    }

    /// The next moment something may be due.
    fn next_deadline(&self) -> Instant {
        let silent = self.last_frame + self.timing.silence;
        let idle = self.timing.idle.map(|d| self.last_data + d);
        let d = idle.map_or(silent, |i| i.min(silent)).min(self.next_ping);
        match self.grace {
            Some(g) => d.min(g),
            None => self.unfinished_until().map_or(d, |u| d.min(u)),
        }
    }

    /// Whether a ping is due; if so, the next one is a period away.
    fn ping_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_ping {
            return false;
        }
        self.next_ping = now + self.timing.ping_every;
        true
    }

    /// A frame came in; a data message also resets the idle clock.
    fn saw(&mut self, msg: &Message) {
        self.last_frame = Instant::now();
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            self.last_data = self.last_frame;
        }
    }

    fn closing(&self) -> bool {
        self.grace.is_some()
    }

    /// A close was asked for: the peer has a moment to answer it (none
    /// for a hard close).
    fn start_grace(&mut self, conn: &Conn) {
        let hard = conn.close_req().is_some_and(|r| r.hard);
        self.grace = Some(Instant::now() + if hard { Duration::ZERO } else { CLOSE_GRACE });
    }

    /// A deadline passed: asks for the close it calls for; true when the
    /// close grace is over and the reader should stop.
    fn expired(&mut self, conn: &Conn) -> bool {
        let now = Instant::now();
        if self.grace.is_some_and(|g| now >= g) {
            return true;
        }
        if self.unfinished_until().is_some_and(|u| now >= u) {
            conn.request_close(CloseReq {
                code: CLOSE_POLICY,
                reason: "message left unfinished".into(),
                hard: true,
                error: Some("WS_MESSAGE_INCOMPLETE"),
                drain: false,
            });
        } else if now >= self.last_frame + self.timing.silence {
            conn.request_close(CloseReq {
                code: CLOSE_GOING_AWAY,
                reason: "heartbeat timeout".into(),
                hard: true,
                error: None,
                drain: false,
            });
        } else if self.timing.idle.is_some_and(|d| now >= self.last_data + d) {
            conn.request_close(CloseReq::soft(CLOSE_NORMAL, "idle timeout"));
            // A client that ignores the close is still dropped.
            self.last_data = now + CLOSE_GRACE;
        }
        false
    }
}

/// How the connection ended: the close we asked for, else the peer's,
/// else a dropped connection.
fn ended(ours: Option<CloseReq>, peer_close: Option<(u16, String)>) -> Ended {
    match (ours, peer_close) {
        (Some(r), _) => Ended {
            code: r.code,
            reason: r.reason,
            by: "server",
            error: r.error,
        },
        (None, Some((code, reason))) => Ended {
            code,
            reason,
            by: "client",
            error: None,
        },
        (None, None) => Ended {
            code: 1006,
            reason: "connection dropped".into(),
            by: "client",
            error: None,
        },
    }
}

/// Maps a read error to the close it calls for; None when the peer is
/// simply gone.
fn protocol_failure(e: axum::Error) -> Option<CloseReq> {
    let inner = e.into_inner();
    let ws = inner.downcast_ref::<WsError>()?;
    let (code, reason, error) = match ws {
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => return None,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        WsError::Utf8(_) => (CLOSE_INVALID_DATA, "invalid UTF-8 in a text message", None),
        WsError::Capacity(_) => (
            CLOSE_TOO_BIG,
            "message exceeds max_message_bytes",
            Some("WS_MESSAGE_TOO_LARGE"),
        ),
        WsError::Protocol(_) => (CLOSE_PROTOCOL, "protocol error", None),
        _ => (CLOSE_INTERNAL, "unexpected error", None),
    };
    Some(CloseReq {
        code,
        reason: reason.into(),
        hard: true,
        error,
        drain: true,
    })
}
