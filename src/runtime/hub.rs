//! One hub per live websocket element: its connections, a room index,
//! counters, and (in driven mode) its outbound link. What a message does
//! is in `hub/messages.rs`, a connection's life in `hub/session.rs`, the
//! link in `hub/link.rs`.

use super::budget::Budget;
use super::conn::{Changes, CloseReq, Conn, SendOutcome};
use super::driven::{Link, LinkEnv};
use super::errors;
use super::frame::Frame;
use super::key::HubKey;
use super::metrics::ElementMetrics;
use super::peers::Peers;
use super::series::{Reading, Sample, Series};
use super::settings::WsSpec;
use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::events::Bus;
use crate::events::Sampler;
use crate::ids::{CircleId, ElementId};
use crate::model::Element;
use crate::model::Env;
use crate::model::{Event, Json};
use crate::sync::{lock, read, write};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;

/// Who a message goes to.
pub enum Audience<'a> {
    All,
    Room(&'a str),
    /// The members of any of these rooms.
    Rooms(&'a [String]),
    /// Everyone but this connection (the sender).
    AllExcept(&'a Conn),
    /// The members of the sender's rooms, except the sender.
    RoomsOf(&'a Conn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub delivered_to: usize,
    pub subscriber_count: usize,
}

mod answers;
mod backend;
mod history;
mod link;
mod messages;
mod roster;
mod session;
mod streams;
mod users;
pub use answers::write as write_presence;
pub use backend::Asking;
pub use history::{data_json, Page};
pub use roster::{presence_frame, presence_json, Presence};
pub use session::{Opened, Slot};
pub use users::JwtAuth;

/// Connection ids are made here, never chosen by a client: a fast hash
/// (foldhash, seeded per process) instead of std's SipHash, which was a
/// tenth of a `presence` of 100 users.
type Ids = foldhash::fast::RandomState;

/// Which of a hub's sampled events a circle's enabled webhooks take:
/// those go to the outbox even when activity leaves them out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookWants {
    pub messages: bool,
    pub connections: bool,
}

impl HookWants {
    pub fn any(self) -> bool {
        self.messages || self.connections
    }

    pub fn or(self, other: HookWants) -> HookWants {
        HookWants {
            messages: self.messages || other.messages,
            connections: self.connections || other.connections,
        }
    }
}

pub struct Hub {
    pub element_id: ElementId,
    /// The environment this hub runs (each runtime element runs once per
    /// environment).
    pub env: Env,
    /// The hub's name in the runtime's index and towards other nodes.
    pub key: HubKey,
    pub circle: String,
    pub circle_id: CircleId,
    pub slug: String,
    spec: RwLock<Arc<WsSpec>>,
    /// Checks end users' tokens (mode jwt).
    jwt: RwLock<Option<Arc<JwtAuth>>>,
    /// The application's backend (`hooks`).
    hooks: RwLock<Option<Arc<crate::runtime::hooks::Hooks>>>,
    /// This hub, for the tasks it starts (they never keep it alive).
    me: std::sync::Weak<Hub>,
    /// A webhook of the circle may take message events: each one goes to
    /// the outbox (batched by the recorder), sampled or not.
    message_hooks: std::sync::atomic::AtomicBool,
    /// The same for connection events past the node's budget.
    connection_hooks: std::sync::atomic::AtomicBool,
    rev: AtomicI64,
    conns: RwLock<HashMap<String, Arc<Conn>, Ids>>,
    /// Room names come from clients: their map keeps std's keyed hash.
    rooms: Mutex<HashMap<String, HashSet<String, Ids>>>,
    roster: Mutex<roster::Roster>,
    /// Who is where changed: `presence` answers kept hold until it counts on.
    changes: Arc<Changes>,
    answers: Mutex<answers::Answers>,
    /// Room history (with `history.size` > 0).
    streams: Mutex<streams::Streams>,
    /// Woken when a shared history's publication was delivered here.
    placed: tokio::sync::Notify,
    admitted: AtomicUsize,
    pub metrics: ElementMetrics,
    bus: Bus,
    received: Sampler,
    sent: Sampler,
    opened: Sampler,
    closed: Sampler,
    /// The last 15 minutes, sampled by the runtime's ticker.
    series: Mutex<Series>,
    stopped: CancellationToken,
    link: Mutex<Option<Arc<Link>>>,
    /// Other nodes: presence changes and relayed messages go there.
    peers: Peers,
    /// The node's limits, shared by every hub.
    budget: Arc<Budget>,
    links: LinkEnv,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.link).take() {
            l.stop();
        }
    }
}

impl Hub {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        el: &Element,
        env: Env,
        spec: WsSpec,
        bus: Bus,
        metrics: ElementMetrics,
        peers: Peers,
        budget: Arc<Budget>,
        links: LinkEnv,
    ) -> Arc<Hub> {
        let hub = Arc::new_cyclic(|me| Hub {
            element_id: el.id.clone(),
            env,
            key: HubKey::new(&el.id, env),
            circle: el.circle().to_string(),
            circle_id: el.circle_id.clone(),
            slug: el.slug.clone(),
            spec: RwLock::new(Arc::new(spec)),
            jwt: RwLock::new(None),
            hooks: RwLock::new(None),
            me: me.clone(),
            message_hooks: Default::default(),
            connection_hooks: Default::default(),
            rev: AtomicI64::new(el.rev),
            conns: RwLock::new(HashMap::default()),
            rooms: Mutex::new(HashMap::new()),
            roster: Mutex::default(),
            changes: Arc::default(),
            answers: Mutex::default(),
            streams: Mutex::default(),
            placed: tokio::sync::Notify::new(),
            admitted: AtomicUsize::new(0),
            metrics,
            bus,
            received: Sampler::default(),
            sent: Sampler::default(),
            opened: Sampler::default(),
            closed: Sampler::default(),
            series: Mutex::new(Series::new(Reading::default())),
            stopped: CancellationToken::new(),
            link: Mutex::new(None),
            peers,
            budget,
            links,
        });
        *lock(&hub.series) = Series::new(hub.reading(crate::model::now_ms()));
        hub.rekey();
        hub.rehook();
        hub.restart_link();
        hub
    }

    /// Connections and message counters now, for the series.
    fn reading(&self, at: i64) -> Reading {
        Reading {
            at,
            connections: self.live_connections() as u64,
            messages_in: self.metrics.message_received_count.get(),
            messages_out: self.metrics.message_sent_count.get(),
        }
    }

    /// Takes the series' next sample (the runtime's ticker calls it).
    pub fn sample(&self, at: i64) {
        let now = self.reading(at);
        lock(&self.series).record(now);
    }

    /// The samples kept, oldest first, and the interval under way.
    pub fn series(&self, at: i64) -> (Vec<Sample>, Sample) {
        let now = self.reading(at);
        let s = lock(&self.series);
        (s.samples().copied().collect(), s.current(now))
    }

    pub fn spec(&self) -> Arc<WsSpec> {
        read(&self.spec).clone()
    }

    pub fn rev(&self) -> i64 {
        self.rev.load(Ordering::Acquire)
    }

    /// Takes a changed spec. Connections keep the limits and timings they
    /// connected with; a new `url` restarts the driven link.
    pub fn update(self: &Arc<Self>, rev: i64, spec: WsSpec) {
        self.rev.store(rev, Ordering::Release);
        let old = std::mem::replace(&mut *write(&self.spec), Arc::new(spec.clone()));
        self.rekey();
        self.rehook();
        if old.url != spec.url || old.protocols != spec.protocols || old.headers != spec.headers {
            self.restart_link();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }

    /// Closes every connection (and the link) and refuses new ones.
    pub fn shutdown(&self, code: u16, reason: &str) {
        self.stopped.cancel();
        let conns: Vec<_> = self.all_conns();
        for c in conns {
            c.request_close(CloseReq::soft(code, reason));
        }
        if let Some(l) = lock(&self.link).take() {
            l.stop();
        }
    }

    fn all_conns(&self) -> Vec<Arc<Conn>> {
        read(&self.conns).values().cloned().collect()
    }

    pub fn live_connections(&self) -> usize {
        read(&self.conns).len()
    }

    /// Connections not yet closing.
    pub fn open_conns(&self) -> Vec<Arc<Conn>> {
        let mut conns = self.all_conns();
        conns.retain(|c| !c.is_closing());
        conns
    }

    /// An event of this hub, numbered when the bus publishes it (every
    /// way out of a hub goes through the bus).
    pub fn event(&self, kind: EventKind, data: Value) -> Event {
        self.event_by(kind, crate::model::Actor::system_json(), data)
    }

    /// An event of this hub caused by `actor` (a connection's).
    pub fn event_by(&self, kind: EventKind, actor: Json, mut data: Value) -> Event {
        if let Value::Object(d) = &mut data {
            d.insert("env".into(), Value::String(self.env.as_str().into()));
        }
        self.event_with(kind, actor, data.into())
    }

    /// As [`Hub::event_by`], with the data written as text at once: for
    /// events that come with every connection. `data` names the hub's
    /// environment itself (`env`), last, as `event_by` adds it: flattened
    /// in here, every field went through a map serializer.
    pub fn event_text(&self, kind: EventKind, actor: Json, data: &impl Serialize) -> Event {
        self.event_with(kind, actor, Json::text_of(data))
    }

    fn event_with(&self, kind: EventKind, actor: Json, data: Json) -> Event {
        let mut e = Event::unnumbered_by(&self.circle, &self.circle_id, kind, actor);
        e.element_id = Some(self.element_id.clone());
        e.slug = Some(self.slug.clone());
        e.data = data;
        e
    }

    /// Emits a `ws.message.*` event: live always, persisted as sampled.
    pub async fn emit_message(&self, e: Event) {
        let sent = e.kind == EventKind::WsMessageSent;
        self.emit_message_with(sent, || e).await;
    }

    /// Like `emit_message`, but builds the event only when someone will
    /// see it: the sampler keeps it, a webhook takes it, or a live
    /// subscriber listens. With none, a message costs no event at all.
    pub async fn emit_message_with(&self, sent: bool, build: impl FnOnce() -> Event) {
        let sampler = if sent { &self.sent } else { &self.received };
        // A written message event always says how many went unwritten.
        let kept = sampler.take().map(Some);
        self.hand_on(kept, &self.message_hooks, build).await;
    }

    /// Emits a `ws.connection.opened` or `.closed` event: live always,
    /// written to activity up to the node's budget a second (the first
    /// written after a gap says how many were not); past it, built only
    /// for a webhook that takes it or a live listener.
    pub async fn emit_connection(&self, kind: EventKind, build: impl FnOnce() -> Event) {
        let sampler = match kind {
            EventKind::WsConnectionOpened => &self.opened,
            _ => &self.closed,
        };
        let kept = match self.budget.limits.connection_events {
            0 => Some(0),
            budget => sampler.take_within(budget),
        };
        let kept = kept.map(|skipped| (skipped > 0).then_some(skipped));
        self.hand_on(kept, &self.connection_hooks, build).await;
    }

    /// An event of a sampled stream: a kept one is written to activity
    /// (with `unpersisted_before` when given); the others are built only
    /// when the circle's webhooks take them (`hooked`: every one reaches
    /// them) or a live subscriber listens.
    async fn hand_on(
        &self,
        kept: Option<Option<u64>>,
        hooked: &std::sync::atomic::AtomicBool,
        build: impl FnOnce() -> Event,
    ) {
        match kept {
            Some(skipped) => {
                let mut e = build();
                if let Some(n) = skipped {
                    e.data.insert("unpersisted_before", json!(n));
                }
                self.bus.emit(e).await;
            }
            None if hooked.load(Ordering::Relaxed) => self.bus.to_outbox(build()).await,
            None if self.bus.has_live_listeners() => self.bus.publish_live(build()),
            None => {}
        }
    }

    pub fn set_hooks(&self, wants: HookWants) {
        self.message_hooks.store(wants.messages, Ordering::Relaxed);
        self.connection_hooks
            .store(wants.connections, Ordering::Relaxed);
    }

    pub async fn emit(&self, e: Event) {
        self.bus.emit(e).await;
    }

    /// Records a refused upgrade: counted always, persisted as sampled,
    /// since anyone can send refused upgrades at any rate.
    pub async fn rejected(&self, err: &Error, status: u16, remote: &str) {
        self.metrics.rejected_count.inc();
        // A code the element's owner or its backend chose is what the
        // client got.
        let code = err
            .chosen
            .as_ref()
            .and_then(|c| c.code.clone())
            .unwrap_or_else(|| err.code.to_string());
        let mut data =
            json!({"status": status, "code": code, "reason": err.message, "remote_addr": remote});
        if let Some(r) = err.reason {
            // Why a token was refused, as the client's envelope says it.
            data["error"] = json!({"code": err.code, "reason": r});
        }
        let e = self.event(EventKind::WsConnectionRejected, data);
        self.bus.emit_sampled(e).await;
    }

    pub fn find(&self, id: &str) -> Option<Arc<Conn>> {
        read(&self.conns)
            .get(id)
            .cloned()
            .filter(|c| !c.is_closing())
    }

    /// Hands `msg` to every target's queue; the bytes are shared, not copied.
    pub fn deliver(&self, msg: &Frame, audience: Audience<'_>) -> Delivery {
        let mut d = Delivery {
            delivered_to: 0,
            subscriber_count: 0,
        };
        let mut send = |t: &Conn| {
            d.subscriber_count += 1;
            match t.try_send(msg.clone()) {
                SendOutcome::Queued => d.delivered_to += 1,
                SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                SendOutcome::Gone => {}
            }
        };
        match audience {
            // Straight from the index, under its read lock (a send never
            // waits): cloning 10,000 handles and comparing 10,000 ids
            // touched two more cold cache lines a target.
            Audience::All => read(&self.conns).values().for_each(|t| send(t)),
            Audience::AllExcept(sender) => {
                for t in read(&self.conns).values() {
                    if !std::ptr::eq(&**t, sender) {
                        send(t);
                    }
                }
            }
            Audience::Room(room) => self
                .members(std::iter::once(room.to_string()), None)
                .iter()
                .for_each(|t| send(t)),
            Audience::Rooms(rooms) => self
                .members(rooms.iter().cloned(), None)
                .iter()
                .for_each(|t| send(t)),
            Audience::RoomsOf(c) => self
                .members(c.rooms().into_iter(), Some(&c.id))
                .iter()
                .for_each(|t| send(t)),
        }
        self.metrics
            .message_sent_count
            .inc_by(d.delivered_to as u64);
        d
    }

    /// The connections in `rooms`, but `except`. The index stays locked
    /// while they are looked up, so no id is copied (a room's ids were
    /// cloned on every broadcast and `presence`); this is the one place
    /// both are held, always the index first.
    fn members(&self, rooms: impl Iterator<Item = String>, except: Option<&str>) -> Vec<Arc<Conn>> {
        let index = lock(&self.rooms);
        let conns = read(&self.conns);
        let found = |id: &String| match Some(id.as_str()) == except {
            true => None,
            false => conns.get(id).cloned(),
        };
        let mut rooms = rooms.peekable();
        let first = rooms.next();
        if let (Some(room), None) = (&first, rooms.peek()) {
            // One room's members are distinct already: no set to build.
            return index
                .get(room)
                .into_iter()
                .flatten()
                .filter_map(found)
                .collect();
        }
        let ids: HashSet<&String, Ids> = first
            .into_iter()
            .chain(rooms)
            .filter_map(|r| index.get(&r))
            .flatten()
            .collect();
        ids.into_iter().filter_map(found).collect()
    }

    /// `send` to one connection.
    pub fn send_to(&self, id: &str, msg: Frame) -> Result<()> {
        let c = self
            .find(id)
            .ok_or_else(|| errors::connection_not_found(id))?;
        match c.try_send(msg) {
            SendOutcome::Queued => {
                self.metrics.message_sent_count.inc();
                Ok(())
            }
            SendOutcome::Overflow => {
                self.metrics.slow_client_count.inc();
                Err(errors::queue_full(id))
            }
            SendOutcome::Gone => Err(errors::connection_not_found(id)),
        }
    }

    pub fn close(&self, id: &str, code: u16, reason: &str) -> Result<()> {
        let c = self
            .find(id)
            .ok_or_else(|| errors::connection_not_found(id))?;
        c.request_close(CloseReq::soft(code, reason));
        Ok(())
    }

    /// Presence: client connections (optionally of one room, or of one
    /// user), oldest first, then the driven link.
    pub fn connections(&self, room: Option<&str>, user: Option<&str>) -> Vec<Value> {
        let mut conns = match room {
            Some(r) => self.members(std::iter::once(r.to_string()), None),
            None => self.all_conns(),
        };
        conns.retain(|c| !c.is_closing() && user.is_none_or(|u| c.user.as_deref() == Some(u)));
        conns.sort_by(|a, b| (a.connected_at, &a.id).cmp(&(b.connected_at, &b.id)));
        let mut out: Vec<Value> = conns.iter().map(|c| c.json()).collect();
        if room.is_none() && user.is_none() {
            if let Some(l) = self.link() {
                out.push(l.json());
            }
        }
        out
    }
}
