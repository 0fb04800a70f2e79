//! One client connection as its hub holds it: who it is, its rooms and
//! its bounded send queue (`socket.rs` drains it into the socket). A slow
//! client fills only its own queue; when it overflows (in count or in
//! bytes), or the node's byte budget would, the client is closed, never
//! buffered without bound.

use super::budget::Budget;
use super::frame::{Close, Frame, CLOSE_TRY_AGAIN};
use super::jwt::EndUser;
use crate::error_codes::ErrorCode;
use crate::limits::MessageGate;
use crate::model::{now_ms, Actor, ActorKind, Json, Role};
use crate::sync::lock;
use futures::task::AtomicWaker;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Counts the changes to what `presence` answers (who is connected, in
/// which rooms, with what info, and not closing): an answer kept while
/// the count stands is still true.
#[derive(Default)]
pub struct Changes(AtomicU64);

impl Changes {
    /// After the change is made (so a count read before it misses).
    pub fn note(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    pub fn seen(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What woke the writer loop.
pub(super) enum ForWriter {
    Closing,
    Frame(Frame),
}

/// Why a connection is being closed, first request wins.
#[derive(Debug, Clone)]
pub struct CloseReq {
    pub code: u16,
    pub reason: String,
    /// Drop the socket without waiting for the peer's close reply.
    pub hard: bool,
    /// An error code for the activity record (e.g. WS_MESSAGE_TOO_LARGE).
    pub error: Option<ErrorCode>,
    /// Send what is already queued (replies to frames read before a
    /// protocol error) before the close frame.
    pub drain: bool,
}

impl CloseReq {
    /// The frame that tells the peer.
    pub fn frame(&self) -> Frame {
        Frame::Close(Some(Close {
            code: self.code,
            reason: self.reason.as_str().into(),
        }))
    }

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

/// The subprotocol whose clients get publications as envelopes with
/// their room, offset and epoch.
pub const V1: &str = "elementd.v1";

/// A new connection id (time-ordered, unique across nodes).
pub fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
    let mut out = String::with_capacity(2 + id.len());
    out.push_str("c_");
    out.push_str(id);
    out
}

/// What a queued message is counted as: its payload and the queue
/// entry's own size, so a flood of empty messages counts too.
fn queued_size(m: &Frame) -> usize {
    m.len() + std::mem::size_of::<Frame>()
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
    /// It negotiated `elementd.v1`: publications come as envelopes.
    pub v1: bool,
    /// Who connected: the token's identity, or external (typed, not JSON:
    /// an external caller's costs an idle connection no allocation).
    pub actor: Actor,
    /// The user: an end user's `sub` (mode jwt) or the token's id (mode
    /// token); none in mode none.
    pub user: Option<Arc<str>>,
    /// What the end user's current token says (rooms, info, exp).
    pub end_user: Mutex<Option<EndUser>>,
    /// When the end user's token expires (unix ms; 0: never).
    pub expires_at: AtomicI64,
    pub rooms: Mutex<BTreeSet<String>>,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    /// Attached rate limits on inbound messages, if any.
    pub gate: Option<MessageGate>,
    /// Messages waiting for the message hook's worker, while one runs.
    pub hook: Mutex<Option<tokio::sync::mpsc::Sender<Frame>>>,
    /// The send queue, for the writer loop, which holds the connection
    /// anyway. A lock and a deque: a channel's two ends (flume's) took
    /// about 390 instructions a delivery, these about 210.
    queue: Mutex<VecDeque<Frame>>,
    /// Frames the queue may hold, a recovery's replay included.
    capacity: usize,
    /// Messages the send queue may hold; its capacity beyond that is for
    /// a recovery's replay.
    limit: usize,
    /// Replayed messages not yet taken: the queue holds them beyond
    /// `limit` (FIFO, so counting them off as any message leaves is off
    /// by at most what was queued before the replay).
    replaying: AtomicUsize,
    /// Bytes in the send queue (see [`queued_size`]).
    queued: AtomicUsize,
    budget: Arc<Budget>,
    /// The hub's, told when this connection starts closing.
    changes: Arc<Changes>,
    close: Mutex<Option<CloseReq>>,
    /// For the hook calls that race a close; the token takes a lock to
    /// read, so sends and the writer loop read the flag below instead.
    pub(super) closing: CancellationToken,
    closing_now: AtomicBool,
    /// The writer loop's, woken when closing starts or a frame is queued.
    writer: AtomicWaker,
    /// The socket's read side or the timer woke the task (see the `Wake`
    /// impl below).
    others_woken: AtomicBool,
}

/// A connection is the waker its socket's read side and timer are polled
/// with: waking it raises a flag and wakes the task through the writer's
/// registration. A turn woken only by the send queue finds the flag down
/// and leaves both unpolled, as a relay's separate writer task never
/// touches its reader (they were a fifth of a broadcast's work a
/// delivery). The flag and the registration live here, beside what the
/// writer reads anyway, not in an allocation of their own.
impl std::task::Wake for Conn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.others_woken.store(true, Ordering::Release);
        self.writer.wake();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // What was queued after the writer's last drain goes with us.
        self.budget.release(*self.queued.get_mut());
    }
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        remote: String,
        protocol: Option<String>,
        queue: usize,
        replay: usize,
        actor: Actor,
        user: Option<String>,
        end_user: Option<EndUser>,
        gate: Option<MessageGate>,
        budget: Arc<Budget>,
        changes: Arc<Changes>,
    ) -> Arc<Conn> {
        let now = now_ms();
        let conn = Conn {
            id,
            connected_at: now,
            remote,
            v1: protocol.as_deref() == Some(V1),
            protocol,
            user: user.map(Arc::from),
            expires_at: AtomicI64::new(end_user.as_ref().map_or(0, |u| u.exp * 1000)),
            end_user: Mutex::new(end_user),
            actor,
            rooms: Mutex::new(BTreeSet::new()),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            gate,
            queue: Mutex::new(VecDeque::new()),
            capacity: queue.max(1) + replay,
            hook: Mutex::new(None),
            limit: queue.max(1),
            replaying: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            budget,
            changes,
            close: Mutex::new(None),
            closing: CancellationToken::new(),
            closing_now: AtomicBool::new(false),
            writer: AtomicWaker::new(),
            // Up: the first turn polls the read side and the timer.
            others_woken: AtomicBool::new(true),
        };
        Arc::new(conn)
    }

    /// Queues a frame without waiting; a full queue (or node budget)
    /// closes the client.
    pub fn try_send(&self, msg: Frame) -> SendOutcome {
        if self.is_closing() {
            return SendOutcome::Gone;
        }
        let size = queued_size(&msg);
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        // A message that finds the queue empty goes whatever its size.
        if before > 0 && before + size > self.budget.limits.buffer_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return self.overflow(
                "send buffer over its byte limit: client too slow",
                ErrorCode::WsSendQueueFull,
            );
        }
        // Every queued frame counts in `queued`: found at 0, the queue is
        // empty and its count need not be asked.
        let limit = match before {
            0 => self.capacity,
            _ => self.limit + self.replaying.load(Ordering::Acquire),
        };
        self.enqueue(msg, size, limit)
    }

    /// Queues a recovery's replay, ahead of what is published after it:
    /// beyond the queue's count and byte limits (the history bounds it),
    /// but not beyond the node's budget.
    pub fn replay(&self, frames: impl IntoIterator<Item = Frame>) -> SendOutcome {
        if self.is_closing() {
            return SendOutcome::Gone;
        }
        for msg in frames {
            let size = queued_size(&msg);
            self.queued.fetch_add(size, Ordering::AcqRel);
            match self.enqueue(msg, size, self.capacity) {
                SendOutcome::Queued => {
                    self.replaying.fetch_add(1, Ordering::AcqRel);
                }
                out => return out,
            }
        }
        SendOutcome::Queued
    }

    /// Queues the frame while the queue holds fewer than `limit`, taking
    /// `size` (already counted in `queued`) from the node's budget.
    fn enqueue(&self, msg: Frame, size: usize, limit: usize) -> SendOutcome {
        let refused = {
            let mut q = lock(&self.queue);
            if q.len() >= limit.min(self.capacity) {
                Some((
                    "send queue overflow: client too slow",
                    ErrorCode::WsSendQueueFull,
                ))
            } else if !self.budget.take(size) {
                Some((
                    "the server's send buffers are full",
                    ErrorCode::WsServerBuffersFull,
                ))
            } else {
                q.push_back(msg);
                None
            }
        };
        if let Some((reason, code)) = refused {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return self.overflow(reason, code);
        }
        self.msgs_out.fetch_add(1, Ordering::Relaxed);
        self.writer.wake();
        SendOutcome::Queued
    }

    fn overflow(&self, reason: &str, error: ErrorCode) -> SendOutcome {
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

    /// The next queued frame, if any, counted out.
    pub(super) fn next_queued(&self) -> Option<Frame> {
        // Every queued frame is counted in `queued` before it is pushed
        // and after it is taken: at 0 the queue is empty, no lock needed
        // (the writer looks twice each time it finds nothing).
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let m = lock(&self.queue).pop_front()?;
        Some(self.take(m))
    }

    /// Drops what was never sent, counted out.
    pub(super) fn drop_queued(&self) {
        let rest = std::mem::take(&mut *lock(&self.queue));
        for m in rest {
            self.take(m);
        }
    }

    /// A frame that left the send queue, counted out.
    fn take(&self, m: Frame) -> Frame {
        self.dequeued(queued_size(&m));
        let _ = self
            .replaying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        m
    }

    pub fn request_close(&self, req: CloseReq) {
        {
            let mut g = lock(&self.close);
            if g.is_none() {
                *g = Some(req);
            }
        }
        self.mark_closing();
    }

    /// Starts closing: sends see it at once, the writer loop wakes, and so
    /// does whoever waits on the token.
    pub(super) fn mark_closing(&self) {
        if !self.closing_now.swap(true, Ordering::AcqRel) {
            // A closing connection is no longer present.
            self.changes.note();
        }
        self.writer.wake();
        self.closing.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.closing_now.load(Ordering::Acquire)
    }

    /// For the writer loop (the one waiter): Ready once closing starts,
    /// else with the next queued frame (counted out) when `take`; Pending
    /// until either happens. One waker serves both.
    pub(super) fn poll_writer(
        &self,
        take: bool,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ForWriter> {
        use std::task::Poll;
        let look = || {
            if self.is_closing() {
                return Some(ForWriter::Closing);
            }
            if !take {
                return None;
            }
            self.next_queued().map(ForWriter::Frame)
        };
        if let Some(w) = look() {
            return Poll::Ready(w);
        }
        self.writer.register(cx.waker());
        // Again: what happened before the waker was in place woke nobody.
        look().map_or(Poll::Pending, Poll::Ready)
    }

    /// For the writer loop: whether the read side or the timer woke the
    /// task since this was last asked (or asked for a look: see
    /// [`Conn::look_again`]). `register`: the writer branch did not run
    /// this turn, so the task's waker is put in place here.
    pub(super) fn take_others(&self, cx: &std::task::Context<'_>, register: bool) -> bool {
        if register {
            self.writer.register(cx.waker());
        }
        self.others_woken.swap(false, Ordering::AcqRel)
    }

    /// The read side and the timer are polled on the next turn: a Ready
    /// registered no waker, and a reset timer must be armed.
    pub(super) fn look_again(&self) {
        self.others_woken.store(true, Ordering::Release);
    }

    pub(super) fn close_req(&self) -> Option<CloseReq> {
        lock(&self.close).clone()
    }

    pub fn rooms(&self) -> Vec<String> {
        lock(&self.rooms).iter().cloned().collect()
    }

    /// The actor as events carry it, with the user (and info) when known.
    pub fn actor_json(&self) -> Json {
        // Actor's fields spelled out: flattened, they went through a map.
        #[derive(Serialize)]
        struct Of<'a> {
            kind: ActorKind,
            #[serde(skip_serializing_if = "Option::is_none")]
            token_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            role: Option<Role>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            info: Option<&'a Value>,
        }
        let info = self.user.as_ref().and_then(|_| self.info());
        Json::text_of(&Of {
            kind: self.actor.kind,
            token_id: self.actor.token_id.as_deref(),
            role: self.actor.role,
            user: self.user.as_deref(),
            info: info.as_deref(),
        })
    }

    pub fn info(&self) -> Option<std::sync::Arc<Value>> {
        lock(&self.end_user).as_ref().and_then(|u| u.info.clone())
    }

    /// Whether the end user's rooms claim admits `room` (no claim: yes).
    pub fn may_join(&self, room: &str) -> bool {
        lock(&self.end_user)
            .as_ref()
            .is_none_or(|u| u.may_join(room))
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
            "user": self.user,
            "info": self.info(),
        })
    }
}
