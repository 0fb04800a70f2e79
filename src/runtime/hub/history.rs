//! Room history on this node, in memory: every publication to a room
//! (or to no room: the stream `""`) gets the next offset of the room's
//! stream, is kept (bounded by `history.size`, `history.ttl_s` and the
//! operator's bytes per element) and reaches `elementd.v1` clients as an
//! envelope built once. A stream's epoch is made when the stream is, so a
//! restart (or a stream forgotten) tells recovering clients that their
//! position is from a history that is gone.
//!
//! Publishing, joining and recovering take the hub's streams lock, and
//! delivery (which never waits) happens under it: a client sees each
//! stream's offsets in order, and a publication during a recovery comes
//! after the replay, never before it, never twice.

use super::{Audience, Delivery, Hub};
use crate::model::now_ms;
use crate::runtime::conn::{Conn, SendOutcome};
use crate::runtime::frame::Frame;
use crate::sync::lock;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<String, Stream>,
    bytes: usize,
    swept_at: i64,
}

struct Stream {
    epoch: Arc<str>,
    top: u64,
    items: VecDeque<Item>,
    touched: i64,
}

struct Item {
    offset: u64,
    msg: Frame,
    at: i64,
}

fn item_bytes(m: &Frame) -> usize {
    m.len() + 64
}

fn new_epoch() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string()[..16].into()
}

impl Stream {
    fn new(now: i64) -> Stream {
        Stream {
            epoch: new_epoch(),
            top: 0,
            items: VecDeque::new(),
            touched: now,
        }
    }
}

/// A stream's place: its epoch and its last offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// An epoch is what this node makes: 1-32 of `[0-9a-z]`.
pub fn check_position(p: &Position) -> crate::error::Result<()> {
    let e = &p.epoch;
    if e.is_empty()
        || e.len() > 32
        || !e
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(crate::error::Error::bad_request(
            crate::error_codes::ErrorCode::InvalidRecover,
            "an epoch is 1-32 characters of 0-9 and a-z, as a message or joined answer gave it",
        ));
    }
    Ok(())
}

/// A message as the history op and replays show it.
pub fn data_json(msg: &Frame) -> Value {
    match msg {
        Frame::Text(t) => json!(t.as_str()),
        Frame::Binary(b) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
        _ => Value::Null,
    }
}

/// The envelope an `elementd.v1` client gets, serialized once.
fn envelope(room: &str, offset: u64, epoch: &str, msg: &Frame) -> Frame {
    let v = json!({"room": room, "offset": offset, "epoch": epoch, "data": data_json(msg)});
    Frame::text(v.to_string())
}

/// What `history` answers.
pub struct Page {
    /// None: the room has no stream (nothing was published or joined).
    pub position: Option<Position>,
    /// (offset, message, published_at ms)
    pub items: Vec<(u64, Frame, i64)>,
}

impl Streams {
    fn stream(&mut self, room: &str, now: i64) -> &mut Stream {
        self.map
            .entry(room.to_string())
            .or_insert_with(|| Stream::new(now))
    }

    /// Drops what is past `ttl_ms`, then what is over `size`, in `room`;
    /// then the oldest of any room while over `cap` bytes.
    fn trim(&mut self, room: &str, size: usize, ttl_ms: i64, cap: usize, now: i64) {
        let mut freed = 0;
        if let Some(s) = self.map.get_mut(room) {
            while s
                .items
                .front()
                .is_some_and(|i| i.at < now - ttl_ms || s.items.len() > size)
            {
                freed += s.items.pop_front().map_or(0, |i| item_bytes(&i.msg));
            }
        }
        self.bytes -= freed;
        while self.bytes > cap {
            let oldest = self
                .map
                .iter()
                .filter_map(|(r, s)| s.items.front().map(|i| (i.at, r.clone())))
                .min();
            let Some((_, r)) = oldest else { break };
            if let Some(i) = self.map.get_mut(&r).and_then(|s| s.items.pop_front()) {
                self.bytes -= item_bytes(&i.msg);
            }
        }
    }

    /// Forgets streams with nothing kept and no use for `ttl_ms` (their
    /// epoch goes with them), at most once per `ttl_ms`.
    fn sweep(&mut self, ttl_ms: i64, now: i64) {
        if now - self.swept_at < ttl_ms {
            return;
        }
        self.swept_at = now;
        let mut freed = 0;
        self.map.retain(|_, s| {
            while s.items.front().is_some_and(|i| i.at < now - ttl_ms) {
                freed += s.items.pop_front().map_or(0, |i| item_bytes(&i.msg));
            }
            !s.items.is_empty() || now - s.touched < ttl_ms
        });
        self.bytes -= freed;
    }
}

/// What a client's recovery found.
pub struct Recovery {
    pub recovered: bool,
    pub position: Position,
}

impl Hub {
    fn ttl_ms(&self) -> i64 {
        (self.spec().history.ttl_s as i64).saturating_mul(1000)
    }

    /// Publishes `msg`: with history off, delivers it as always; with
    /// history on, each room's stream (no room: `""`) takes it at its next
    /// offset, `elementd.v1` clients get the envelope (a v1 sender too,
    /// so its offsets have no hole), and the others the message itself,
    /// once however many of their rooms it went to.
    pub fn publish(&self, msg: &Frame, audience: Audience<'_>) -> Delivery {
        let spec = self.spec();
        if !spec.history.on() {
            return self.deliver(msg, audience);
        }
        let (rooms, except): (Vec<String>, Option<&str>) = match &audience {
            Audience::All => (vec![String::new()], None),
            Audience::AllExcept(id) => (vec![String::new()], Some(id)),
            Audience::Room(r) => (vec![r.to_string()], None),
            Audience::Rooms(rs) => (rs.to_vec(), None),
            Audience::RoomsOf(c) => (c.rooms(), Some(c.id.as_str())),
        };
        let now = now_ms();
        let ttl = self.ttl_ms();
        let cap = self.budget.limits.history_bytes;
        let several = rooms.len() > 1;
        let mut reached: HashSet<String> = HashSet::new();
        let (mut delivered, mut subscribers) = (0, 0);
        let mut st = lock(&self.streams);
        st.sweep(ttl, now);
        for room in &rooms {
            let s = st.stream(room, now);
            s.top += 1;
            s.touched = now;
            let offset = s.top;
            let env = envelope(room, offset, &s.epoch, msg);
            s.items.push_back(Item {
                offset,
                msg: msg.clone(),
                at: now,
            });
            st.bytes += item_bytes(msg);
            st.trim(room, spec.history.size, ttl, cap, now);
            let targets = if room.is_empty() {
                self.all_conns()
            } else {
                self.members(std::iter::once(room.clone()), None)
            };
            for t in &targets {
                // A client in several of the rooms is counted (and, raw,
                // sent the message) once.
                let first = !several || reached.insert(t.id.clone());
                let frame = if t.v1 {
                    env.clone()
                } else if Some(t.id.as_str()) == except || !first {
                    continue;
                } else {
                    msg.clone()
                };
                match t.try_send(frame) {
                    SendOutcome::Queued if first => delivered += 1,
                    SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                    _ => {}
                }
                if first {
                    subscribers += 1;
                }
            }
        }
        drop(st);
        self.metrics.message_sent_count.inc_by(delivered as u64);
        Delivery {
            delivered_to: delivered,
            subscriber_count: subscribers,
        }
    }

    /// Under the streams lock (history on), or not at all (off): `f` sees
    /// no publication happen while it runs.
    pub(super) fn with_streams<T>(&self, f: impl FnOnce(Option<&mut Streams>) -> T) -> T {
        if !self.spec().history.on() {
            return f(None);
        }
        let mut st = lock(&self.streams);
        f(Some(&mut st))
    }

    /// Replays `room` after `since` to `conn` (the caller holds the
    /// streams lock and then makes `conn` a member): recovered when the
    /// epoch is the stream's and nothing after `since` is gone.
    pub(super) fn recover(
        &self,
        st: &mut Streams,
        conn: &Conn,
        room: &str,
        since: Option<&Position>,
    ) -> Recovery {
        let now = now_ms();
        let s = st.stream(room, now);
        s.touched = now;
        let position = Position {
            epoch: s.epoch.to_string(),
            offset: s.top,
        };
        let Some(since) = since else {
            return Recovery {
                recovered: false,
                position,
            };
        };
        let ttl = self.ttl_ms();
        let first = s
            .items
            .iter()
            .find(|i| i.at >= now - ttl)
            .map_or(s.top + 1, |i| i.offset);
        let ok = *s.epoch == *since.epoch && since.offset <= s.top && first <= since.offset + 1;
        if ok && since.offset < s.top {
            let frames = s
                .items
                .iter()
                .filter(|i| i.offset > since.offset)
                .map(|i| {
                    if conn.v1 {
                        envelope(room, i.offset, &s.epoch, &i.msg)
                    } else {
                        i.msg.clone()
                    }
                })
                .collect::<Vec<_>>();
            if let SendOutcome::Overflow = conn.replay(frames) {
                self.metrics.slow_client_count.inc();
            }
        }
        Recovery {
            recovered: ok,
            position,
        }
    }

    /// `history`: what `room` keeps after `since`, at most `limit`.
    pub fn history(&self, room: &str, since: Option<u64>, limit: usize) -> Option<Page> {
        if !self.spec().history.on() {
            return None;
        }
        let now = now_ms();
        let ttl = self.ttl_ms();
        // Read only: a reader makes no stream.
        let st = lock(&self.streams);
        let Some(s) = st.map.get(room) else {
            return Some(Page {
                position: None,
                items: Vec::new(),
            });
        };
        let items = s
            .items
            .iter()
            .filter(|i| i.at >= now - ttl && since.is_none_or(|n| i.offset > n))
            .take(limit)
            .map(|i| (i.offset, i.msg.clone(), i.at))
            .collect();
        Some(Page {
            position: Some(Position {
                epoch: s.epoch.to_string(),
                offset: s.top,
            }),
            items,
        })
    }
}

/// The `joined` answer with history on: the room's position, and
/// whether a recovery asked for was whole.
pub fn joined_frame(room: &str, rooms: Vec<String>, r: &Recovery, asked: bool) -> Value {
    let mut v = json!({"op": "joined", "room": room, "rooms": rooms,
                       "offset": r.position.offset, "epoch": r.position.epoch});
    if asked {
        v["recovered"] = json!(r.recovered);
    }
    v
}
