//! Room history: every publication to a room (or to no room: the stream
//! `""`) gets the next offset of the room's stream, is kept
//! (`streams.rs`) and reaches `elementd.v1` clients as an envelope built
//! once. Alone, the streams live in this node's memory and a stream's
//! epoch is made with it, so a restart (or a stream forgotten) tells
//! recovering clients that their position is from a history that is gone.
//!
//! Publishing, joining and recovering take the hub's streams lock, and
//! delivery (which never waits) happens under it: a client sees each
//! stream's offsets in order, and a publication during a recovery comes
//! after the replay, never before it, never twice.
//!
//! With a shared history (PostgreSQL, `peers.history`), the store gives
//! offsets and epochs: a publication is appended there and comes back,
//! placed, to every node in commit order (`published`). The streams here
//! are then a mirror of the newest messages; a recovery older than the
//! mirror reads the store first (`prefetch`). A stream made from such a
//! read may still get notifications up to the read's offset (`late`):
//! they go to every member except the connections whose position was past
//! them (`fresh`).

use super::streams::{item_bytes, Item, Streams};
use super::{Audience, Delivery, Hub};
use crate::model::now_ms;
use crate::runtime::conn::{CloseReq, Conn, SendOutcome};
use crate::runtime::errors;
use crate::runtime::frame::{Frame, CLOSE_RESTART};
use crate::runtime::position::Position;
use crate::runtime::shared_history::{Append, Published, Stored};
use crate::sync::lock;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

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

/// What a client's recovery found.
pub struct Recovery {
    pub recovered: bool,
    pub position: Position,
}

impl Hub {
    fn ttl_ms(&self) -> i64 {
        (self.spec().history.ttl_s as i64).saturating_mul(1000)
    }

    /// Whether publications go through the shared history (then they are
    /// delivered when they come back placed, on every node alike).
    pub fn history_shared(&self) -> bool {
        self.spec().history.on() && self.peers.history.shared()
    }

    /// [`Hub::try_publish`], where a full queue towards the shared history
    /// is logged (a client's message has no caller to answer).
    pub fn publish(&self, msg: &Frame, audience: Audience<'_>) -> Delivery {
        self.try_publish(msg, audience).unwrap_or_else(|e| {
            tracing::warn!(hub = %self.key, error = %e, "publication dropped");
            Delivery {
                delivered_to: 0,
                subscriber_count: 0,
            }
        })
    }

    /// Publishes `msg`: with history off, delivers it as always; with
    /// history on, each room's stream (no room: `""`) takes it at its next
    /// offset, `elementd.v1` clients get the envelope (a v1 sender too,
    /// so its offsets have no hole), and the others the message itself,
    /// once however many of their rooms it went to. With a shared history
    /// it is queued for the store, and the answer counts this node's
    /// recipients now.
    pub fn try_publish(
        &self,
        msg: &Frame,
        audience: Audience<'_>,
    ) -> crate::error::Result<Delivery> {
        let spec = self.spec();
        if !spec.history.on() {
            return Ok(self.deliver(msg, audience));
        }
        let (rooms, except) = streams_of(&audience);
        if self.peers.history.shared() {
            let n = self.append(msg, rooms, except, None)?;
            return Ok(Delivery {
                delivered_to: n,
                subscriber_count: n,
            });
        }
        let now = now_ms();
        let ttl = self.ttl_ms();
        let cap = self.budget.limits.history_bytes;
        let mut fan = Fan::new(rooms.len() > 1, except);
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
            self.fan(&mut fan, room, &env, msg, &[]);
        }
        drop(st);
        Ok(self.sent(fan))
    }

    /// [`Hub::try_publish`] for an operator's call (`broadcast`,
    /// `receive`): with a shared history it answers once the message is
    /// placed and delivered here, so what the caller asks next (the
    /// `history` op, a recovery on this node) sees it.
    pub async fn publish_placed(
        &self,
        msg: &Frame,
        audience: Audience<'_>,
    ) -> crate::error::Result<Delivery> {
        if !self.history_shared() {
            return self.try_publish(msg, audience);
        }
        let (rooms, except) = streams_of(&audience);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let n = self.append(msg, rooms.clone(), except, Some(tx))?;
        let placed = match tokio::time::timeout(PLACE_WAIT, rx).await {
            Ok(Ok(p)) => p,
            _ => return Err(errors::history_unavailable()),
        };
        let here = |st: &Streams| {
            rooms.iter().zip(&placed).all(|(r, p)| {
                st.map
                    .get(r)
                    .is_some_and(|s| *s.epoch != *p.epoch || s.top >= p.offset)
            })
        };
        let until = tokio::time::Instant::now() + PLACE_WAIT;
        loop {
            let woken = self.placed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if here(&lock(&self.streams)) {
                break;
            }
            if tokio::time::timeout_at(until, woken).await.is_err() {
                tracing::warn!(hub = %self.key, "a placed publication did not come back in time");
                break;
            }
        }
        Ok(Delivery {
            delivered_to: n,
            subscriber_count: n,
        })
    }

    /// Queues a publication for the shared store; answers how many of
    /// this node's connections it will reach.
    fn append(
        &self,
        msg: &Frame,
        rooms: Vec<String>,
        except: Option<&str>,
        placed: Option<tokio::sync::oneshot::Sender<Vec<Position>>>,
    ) -> crate::error::Result<usize> {
        let n = self.recipients(&rooms, except);
        self.peers.history.append(Append {
            hub: self.key.clone(),
            rooms,
            except: except.map(str::to_string),
            msg: msg.clone(),
            size: self.spec().history.size as u64,
            ttl_ms: self.ttl_ms(),
            placed,
        })?;
        Ok(n)
    }

    /// A publication the shared store placed, from any node: kept in the
    /// mirror and delivered, once per offset.
    pub fn published(&self, p: &Published) {
        let spec = self.spec();
        let now = now_ms();
        let ttl = self.ttl_ms();
        let cap = self.budget.limits.history_bytes;
        let mut fan = Fan::new(p.streams.len() > 1, p.except.as_deref());
        let mut st = lock(&self.streams);
        st.sweep(ttl, now);
        for (room, pos) in &p.streams {
            let Some((skip, hole)) = st.place(room, pos, &p.msg, p.at, now) else {
                continue;
            };
            st.trim(room, spec.history.size, ttl, cap, now);
            if hole {
                // This node missed notifications (its listener reconnected):
                // its v1 members would see a gap, so they reconnect and
                // recover from the store instead.
                self.missed(room, &skip);
            }
            let env = envelope(room, pos.offset, &pos.epoch, &p.msg);
            self.fan(&mut fan, room, &env, &p.msg, &skip);
        }
        drop(st);
        self.placed.notify_waiters();
        self.sent(fan);
    }

    /// Closes `room`'s `elementd.v1` members (1012) but `skip`: they
    /// missed messages this node never got; their recovery reads them.
    fn missed(&self, room: &str, skip: &[String]) {
        let targets = if room.is_empty() {
            self.all_conns()
        } else {
            self.members(std::iter::once(room.to_string()), None)
        };
        for t in targets.iter().filter(|t| t.v1 && !skip.contains(&t.id)) {
            t.request_close(CloseReq::soft(
                CLOSE_RESTART,
                "messages were missed: reconnect to recover",
            ));
        }
    }

    /// How many of this node's connections a publication reaches.
    fn recipients(&self, rooms: &[String], except: Option<&str>) -> usize {
        let mut ids: HashSet<String> = HashSet::new();
        for room in rooms {
            let targets = if room.is_empty() {
                self.all_conns()
            } else {
                self.members(std::iter::once(room.clone()), None)
            };
            ids.extend(
                targets
                    .iter()
                    .filter(|t| t.v1 || Some(t.id.as_str()) != except)
                    .map(|t| t.id.clone()),
            );
        }
        ids.len()
    }

    /// Sends one stream's publication to its members (under the streams
    /// lock): `elementd.v1` clients the envelope, the others the message
    /// once, however many of the rooms they are in; none to `skip`.
    fn fan(&self, fan: &mut Fan, room: &str, env: &Frame, msg: &Frame, skip: &[String]) {
        let targets = if room.is_empty() {
            self.all_conns()
        } else {
            self.members(std::iter::once(room.to_string()), None)
        };
        for t in &targets {
            if skip.contains(&t.id) {
                continue;
            }
            // A client in several of the rooms is counted (and, raw,
            // sent the message) once.
            let first = !fan.several || fan.reached.insert(t.id.clone());
            let frame = if t.v1 {
                env.clone()
            } else if Some(t.id.as_str()) == fan.except.as_deref() || !first {
                continue;
            } else {
                msg.clone()
            };
            match t.try_send(frame) {
                SendOutcome::Queued if first => fan.delivered += 1,
                SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                _ => {}
            }
            if first {
                fan.subscribers += 1;
            }
        }
    }

    fn sent(&self, fan: Fan) -> Delivery {
        self.metrics.message_sent_count.inc_by(fan.delivered as u64);
        Delivery {
            delivered_to: fan.delivered,
            subscriber_count: fan.subscribers,
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

    /// With a shared history, what a join or recovery of `room` needs from
    /// the store before taking the streams lock: the stream's position
    /// when this node has no mirror of it, and the messages after `since`
    /// when the mirror does not keep them all.
    pub(super) async fn prefetch(&self, room: &str, since: Option<&Position>) -> Option<Stored> {
        if !self.history_shared() {
            return None;
        }
        let now = now_ms();
        let ttl = self.ttl_ms();
        let need = match lock(&self.streams).map.get(room) {
            None => true,
            Some(s) => since.is_some_and(|p| *s.epoch == *p.epoch && !s.covers(p.offset, ttl, now)),
        };
        if !need {
            return None;
        }
        let size = self.spec().history.size;
        let read = self
            .peers
            .history
            .read(&self.key, room, since.map(|p| p.offset), size, true);
        match read.await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(hub = %self.key, room, error = %e, "reading the shared history failed");
                None
            }
        }
    }

    /// Replays `room` after `since` to `conn` (the caller holds the
    /// streams lock and then makes `conn` a member): recovered when the
    /// epoch is the stream's and every message after `since` is kept
    /// (here, or in `read` from the shared store).
    pub(super) fn recover(
        &self,
        st: &mut Streams,
        conn: &Conn,
        room: &str,
        since: Option<&Position>,
        read: Option<&Stored>,
    ) -> Recovery {
        let now = now_ms();
        let ttl = self.ttl_ms();
        if let Some(r) = read {
            st.adopt(room, r, ttl, now);
        }
        let shared = self.peers.history.shared();
        let s = st.stream(room, now);
        s.touched = now;
        let mut position = Position {
            epoch: s.epoch.to_string(),
            offset: s.top,
        };
        let mut ok = false;
        if let Some(since) = since.filter(|p| *s.epoch == *p.epoch) {
            // Shared: this node's mirror may be behind what the client saw
            // elsewhere; the store's position says whether it is real.
            let known = read.map_or(s.top, |r| r.position.offset.max(s.top));
            if since.offset >= s.top && since.offset <= known {
                ok = true;
                position.offset = since.offset;
            } else if since.offset < s.top {
                let mut kept: BTreeMap<u64, &Frame> = BTreeMap::new();
                let from_store = read
                    .into_iter()
                    .flat_map(|r| r.items.iter().map(|(o, m, at)| (*o, m, *at)));
                let here = s.items.iter().map(|i| (i.offset, &i.msg, i.at));
                for (o, m, at) in from_store.chain(here) {
                    if o > since.offset && o <= s.top && at >= now - ttl {
                        kept.insert(o, m);
                    }
                }
                ok = kept.len() as u64 == s.top - since.offset;
                if ok {
                    let frames = kept
                        .iter()
                        .map(|(o, m)| {
                            if conn.v1 {
                                envelope(room, *o, &s.epoch, m)
                            } else {
                                (*m).clone()
                            }
                        })
                        .collect::<Vec<_>>();
                    if let SendOutcome::Overflow = conn.replay(frames) {
                        self.metrics.slow_client_count.inc();
                    }
                }
            }
        }
        // Notifications up to the client's position may still come.
        if shared && (s.late > 0 || position.offset > s.top) {
            s.fresh.insert(conn.id.clone(), position.offset);
        }
        Recovery {
            recovered: ok,
            position,
        }
    }

    /// `history`: what `room` keeps after `since`, at most `limit`; None
    /// when the element keeps no history.
    pub async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> crate::error::Result<Option<Page>> {
        if !self.spec().history.on() {
            return Ok(None);
        }
        if self.peers.history.shared() {
            let read = self
                .peers
                .history
                .read(&self.key, room, since, limit, false)
                .await?;
            return Ok(Some(match read {
                Some(r) => Page {
                    position: Some(r.position),
                    items: r.items,
                },
                None => Page {
                    position: None,
                    items: Vec::new(),
                },
            }));
        }
        let now = now_ms();
        let ttl = self.ttl_ms();
        // Read only: a reader makes no stream.
        let st = lock(&self.streams);
        let Some(s) = st.map.get(room) else {
            return Ok(Some(Page {
                position: None,
                items: Vec::new(),
            }));
        };
        let items = s
            .items
            .iter()
            .filter(|i| i.at >= now - ttl && since.is_none_or(|n| i.offset > n))
            .take(limit)
            .map(|i| (i.offset, i.msg.clone(), i.at))
            .collect();
        Ok(Some(Page {
            position: Some(Position {
                epoch: s.epoch.to_string(),
                offset: s.top,
            }),
            items,
        }))
    }
}

/// How long an operator's publication may take to be placed.
const PLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A publication's streams (`""`: no room), and the connection that gets
/// it only as an envelope.
fn streams_of<'a>(audience: &'a Audience<'_>) -> (Vec<String>, Option<&'a str>) {
    match audience {
        Audience::All => (vec![String::new()], None),
        Audience::AllExcept(c) => (vec![String::new()], Some(c.id.as_str())),
        Audience::Room(r) => (vec![r.to_string()], None),
        Audience::Rooms(rs) => (rs.to_vec(), None),
        Audience::RoomsOf(c) => (c.rooms(), Some(c.id.as_str())),
    }
}

/// One publication's delivery across its streams.
struct Fan {
    several: bool,
    except: Option<String>,
    reached: HashSet<String>,
    delivered: usize,
    subscribers: usize,
}

impl Fan {
    fn new(several: bool, except: Option<&str>) -> Fan {
        Fan {
            several,
            except: except.map(str::to_string),
            reached: HashSet::new(),
            delivered: 0,
            subscribers: 0,
        }
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
