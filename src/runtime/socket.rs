//! A client connection's socket, served by one task (the upgrade's own):
//! it reads, drains the connection's send queue into the socket, pings
//! and closes. The socket is anything that carries [`Frame`]s (the edge
//! that upgraded it converts); what a client sends goes to an [`Inbound`].

use super::conn::{CloseReq, Conn, ForWriter};
use super::frame::{
    Frame, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_INVALID_DATA, CLOSE_NORMAL, CLOSE_POLICY,
    CLOSE_PROTOCOL, CLOSE_TOO_BIG,
};
use super::wire::WireWatch;
use crate::error_codes::ErrorCode;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// How long a close handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long writing the close frame may take.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// Where a connection's text and binary messages go: its hub.
pub trait Inbound: Send + Sync + 'static {
    fn message(&self, conn: &Conn, msg: Frame) -> impl Future<Output = ()> + Send;
}

/// Why a socket could not be read, as its edge tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer is simply gone.
    Gone,
    InvalidUtf8,
    /// Over the message or frame size limit.
    TooBig,
    Protocol,
    Other,
}

/// How a connection ended, for its `ws.connection.closed` event.
#[derive(Debug)]
pub struct Ended {
    pub code: u16,
    pub reason: String,
    pub by: &'static str,
    pub error: Option<ErrorCode>,
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
pub fn run<H, S>(
    hub: Arc<H>,
    conn: Arc<Conn>,
    socket: S,
    timing: Timing,
    wire: Option<Arc<WireWatch>>,
) -> impl Future<Output = Ended> + Send + 'static
where
    H: Inbound,
    S: Stream<Item = Result<Frame, ReadError>> + Sink<Frame> + Send + 'static,
{
    let (sink, stream) = socket.split();
    // Built here, not in `drive`: its arguments are stored in its state
    // anyway, and values made from them would take a second place there.
    drive(hub, conn, Out::new(sink), stream, Clocks::new(timing, wire))
}

/// The write half's state: at most one frame waiting for the sink,
/// whether what the sink took is still to be flushed, and what a close
/// still owes the peer.
struct Out<W> {
    sink: W,
    pending: Option<Frame>,
    unflushed: bool,
    ping_owed: bool,
    /// Set once a close we started is under way.
    closing: Option<CloseReq>,
    close_queued: bool,
    /// The sink failed: nothing more is written.
    broken: bool,
}

impl<W: Sink<Frame> + Unpin> Out<W> {
    fn new(sink: W) -> Out<W> {
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
    fn refill(&mut self, conn: &Conn) {
        let Some(req) = &self.closing else { return };
        if self.broken || self.busy() || self.close_queued {
            return;
        }
        if req.drain {
            if let Some(m) = conn.next_queued() {
                self.pending = Some(m);
                return;
            }
        }
        self.close_queued = true;
        self.pending = Some(req.frame());
    }

    /// Hands the pending frame (or an owed ping) to the sink and flushes.
    /// Cancel-safe: a frame leaves `pending` only when the sink took it.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.is_none() && self.ping_owed {
            self.ping_owed = false;
            self.pending = Some(Frame::Ping(Default::default()));
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
    async fn finish(&mut self, conn: &Conn) {
        let Some(req) = self.closing.clone() else {
            return;
        };
        self.ping_owed = false;
        if !req.drain {
            self.pending = None;
        }
        let _ = tokio::time::timeout(CLOSE_WRITE, async {
            loop {
                self.refill(conn);
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
            self.pending = Some(req.frame());
        }
        let _ = tokio::time::timeout(CLOSE_WRITE, async {
            while self.busy() {
                std::future::poll_fn(|cx| self.poll_write(cx)).await;
            }
        })
        .await;
    }
}

async fn drive<H, W, R>(
    hub: Arc<H>,
    conn: Arc<Conn>,
    mut out: Out<W>,
    mut stream: R,
    mut clocks: Clocks,
) -> Ended
where
    H: Inbound,
    W: Sink<Frame> + Unpin,
    R: Stream<Item = Result<Frame, ReadError>> + Unpin,
{
    let mut peer_close: Option<(u16, String)> = None;
    let deadline = tokio::time::sleep_until(clocks.next_deadline());
    tokio::pin!(deadline);
    let others = Waker::from(conn.clone());
    // Only what comes in (and the timer, and a close) moves the deadline:
    // a turn that only sends skips working it out again.
    let mut moved = true;
    loop {
        out.refill(&conn);
        if std::mem::take(&mut moved) {
            deadline.as_mut().reset(
                token_expiry(&conn)
                    .map_or(clocks.next_deadline(), |e| e.min(clocks.next_deadline())),
            );
            conn.look_again();
        }
        let take = out.takes_queue();
        tokio::select! {
            biased;
            // Closing first, then a queued frame (when one may be taken).
            w = std::future::poll_fn(|cx| conn.poll_writer(take, cx)), if !clocks.closing() => match w {
                ForWriter::Closing => {
                    clocks.start_grace(&conn);
                    out.closing = conn.close_req();
                    moved = true;
                }
                ForWriter::Frame(m) => {
                    out.pending = Some(m);
                    // Written in this same turn: going round the loop for
                    // it polled every branch once more.
                    std::future::poll_fn(|cx| {
                        let _ = out.poll_write(cx);
                        Poll::Ready(())
                    })
                    .await;
                }
            },
            _ = std::future::poll_fn(|cx| out.poll_write(cx)), if out.busy() => {}
            woke = std::future::poll_fn(|cx| poll_others(&conn, clocks.closing(), cx, &others, &mut stream, deadline.as_mut())) => match woke {
                Woke::Deadline => {
                    moved = true;
                    if clocks.ping_due() {
                        out.ping_owed = !conn.is_closing();
                    }
                    if clocks.expired(&conn) {
                        break;
                    }
                    if token_expiry(&conn).is_some_and(|e| e <= Instant::now()) {
                        conn.request_close(CloseReq {
                            error: Some(ErrorCode::WsTokenExpired),
                            ..CloseReq::soft(CLOSE_TOKEN_EXPIRED, "token expired")
                        });
                    }
                }
                Woke::Read(None) => break,
                Woke::Read(Some(Ok(msg))) => {
                    moved = true;
                    clocks.saw(&msg);
                    match msg {
                        Frame::Text(_) | Frame::Binary(_) => {
                            if !conn.is_closing() {
                                // Boxed: its state would otherwise sit in every idle connection's task.
                                Box::pin(hub.message(&conn, msg)).await;
                            }
                        }
                        Frame::Close(f) => {
                            peer_close = Some(f.map_or((1005, String::new()), |f| (f.code, f.reason.as_str().to_string())));
                        }
                        Frame::Ping(_) | Frame::Pong(_) => {}
                    }
                }
                Woke::Read(Some(Err(e))) => {
                    if let Some(req) = protocol_failure(e) {
                        conn.request_close(req);
                    }
                    break;
                }
            },
        }
    }
    conn.mark_closing();
    // The peer's own close is answered by the protocol layer; we send one
    // only for closes we started.
    if out.closing.is_none() {
        out.closing = conn.close_req();
    }
    if out.closing.is_some() {
        Box::pin(out.finish(&conn)).await;
    }
    // What was never sent is freed now, not when the last handle goes.
    conn.drop_queued();
    ended(conn.close_req(), peer_close)
}

/// What woke the loop besides the send queue.
enum Woke {
    Read(Option<Result<Frame, ReadError>>),
    Deadline,
}

/// Polls the read side, then the timer, with the connection's own waker,
/// when either woke the task since they were last polled (see `Conn`'s
/// `Wake`). `writer_idle`: the writer branch did not run this turn.
fn poll_others<R>(
    conn: &Conn,
    writer_idle: bool,
    cx: &mut Context<'_>,
    waker: &Waker,
    stream: &mut R,
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Poll<Woke>
where
    R: Stream<Item = Result<Frame, ReadError>> + Unpin,
{
    if !conn.take_others(cx, writer_idle) {
        return Poll::Pending;
    }
    let mut ours = Context::from_waker(waker);
    let woke = match stream.poll_next_unpin(&mut ours) {
        Poll::Ready(m) => Woke::Read(m),
        Poll::Pending => match deadline.poll(&mut ours) {
            Poll::Ready(()) => Woke::Deadline,
            Poll::Pending => return Poll::Pending,
        },
    };
    conn.look_again();
    Poll::Ready(woke)
}

/// The end user's token ran out: the application's close code for it.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// When the end user's token expires, while no close is under way.
fn token_expiry(conn: &Conn) -> Option<Instant> {
    let at = conn.expires_at.load(std::sync::atomic::Ordering::Acquire);
    if at == 0 || conn.is_closing() {
        return None;
    }
    let left = at - crate::model::now_ms();
    Some(Instant::now() + Duration::from_millis(left.max(0) as u64))
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
    fn saw(&mut self, msg: &Frame) {
        self.last_frame = Instant::now();
        if msg.is_data() {
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
                error: Some(ErrorCode::WsMessageIncomplete),
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

/// The close a read error calls for; None when the peer is simply gone.
fn protocol_failure(e: ReadError) -> Option<CloseReq> {
    let (code, reason, error) = match e {
        ReadError::Gone => return None,
        ReadError::InvalidUtf8 => (CLOSE_INVALID_DATA, "invalid UTF-8 in a text message", None),
        ReadError::TooBig => (
            CLOSE_TOO_BIG,
            "message exceeds max_message_bytes",
            Some(ErrorCode::WsMessageTooLarge),
        ),
        ReadError::Protocol => (CLOSE_PROTOCOL, "protocol error", None),
        ReadError::Other => (CLOSE_INTERNAL, "unexpected error", None),
    };
    Some(CloseReq {
        code,
        reason: reason.into(),
        hard: true,
        error,
        drain: true,
    })
}
