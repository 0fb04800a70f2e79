//! The live part of websocket elements. Every element whose type
//! has the `runtime` capability and is `ready` gets a [`Hub`]; the write
//! path tells the runtime about each committed change through
//! [`Runtime::apply`], which never blocks. Other nodes sharing the
//! database are reached only through [`Peers`] (`peers.rs`): a
//! [`Broker`] carries messages and a [`PresenceManager`] knows who is
//! connected where; what other nodes send lands through the runtime's
//! [`BrokerHandler`] (`arrivals.rs`), and `reach.rs` finds a connection
//! wherever it is held.
//!
//! Events: the live bus carries every `ws.*` event with message payloads
//! cut to [`frame::PREVIEW_BYTES`]. Persisted activity of `ws.message.*` is
//! sampled: per element and kind at most one event a second is written,
//! carrying how many went unpersisted before it (`unpersisted_before`), so
//! a message storm costs at most a few rows a second. Connection events
//! (`opened`, `closed`, `rejected`) and `ws.broadcast.completed` are all
//! persisted. No message touches the database or git.

mod arrivals;
mod broker;
mod budget;
mod checks;
mod conn;
mod dial;
mod driven;
mod edge;
pub mod errors;
pub mod fetch;
mod frame;
pub mod hooks;
mod hub;
mod inputs;
pub mod jwks;
pub mod jwt;
mod key;
mod metrics;
mod outbound;
mod peers;
mod placement;
mod pool;
mod position;
mod presence;
mod reach;
pub mod series;
mod settings;
mod shared_history;
pub mod sign;
mod socket;
pub mod wire;

use crate::ids::{CircleId, ElementId};
use crate::types::Capability;
pub use broker::{Broker, BrokerHandler, ConnAction};
pub use budget::{Budget, WsLimits};
pub use conn::{new_id as new_connection_id, V1};
pub use dial::{frame_of as tungstenite_frame, message_of as tungstenite_message};
pub use driven::{Resolve, LINK_ID};
pub use edge::{Edge, Framed};
pub use frame::{Close, Frame, Text};
pub use hooks::Verdict;
pub use hub::{
    data_json, presence_frame, Asking, Audience, Delivery, Hub, Opened, Page, Presence, Slot,
};
pub use inputs::{check_close, check_room};
pub use jwt::JwtSpec;
pub use key::HubKey;
pub use metrics::Metrics;
pub use outbound::Outbound;
pub use peers::{Alone, Peers};
pub use position::{check_position, Position};
pub use presence::PresenceManager;
pub use settings::{AuthMode, OnMessage, WsSpec};
pub use shared_history::{Append, Published, SharedHistory, Stored};
pub use socket::ReadError;
pub use socket::CLOSE_TOKEN_EXPIRED;

use crate::error::Result;
use crate::events::Bus;
use crate::model;
use crate::model::{Element, Env};
use crate::store::Db;
use crate::sync::{read, write};
use crate::types::Registry;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    types: Registry,
    bus: Bus,
    /// The other nodes sharing the database ([`Alone`] on SQLite).
    peers: Peers,
    outbound: Arc<Outbound>,
    /// Hooks, webhooks and JWKS fetches: checked against `outbound`,
    /// connections kept alive.
    http: Arc<fetch::Client>,
    resolve: Arc<dyn Resolve>,
    clock: crate::clock::Clock,
    metrics: Metrics,
    /// Connections and queued bytes of all hubs together.
    budget: Arc<Budget>,
    state: RwLock<State>,
    tasks: TaskTracker,
    /// Set by shutdown: late changes start nothing.
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    by_key: HashMap<HubKey, Arc<Hub>>,
    /// (circle, environment, path) → the exposed hub serving it.
    by_path: HashMap<(String, Env, String), Arc<Hub>>,
    /// Per hub key, the element `rev` and release time last applied, so
    /// late, older news cannot undo newer (also after the hub is gone).
    stamps: HashMap<HubKey, (i64, i64)>,
    /// Per variable id, the `rev` last applied and what each environment
    /// ran then, so a change relinks only where it changes something.
    vars: HashMap<ElementId, (i64, [VarRun; 3])>,
    /// Per circle id, its enabled webhooks that take sampled events, and
    /// which: its hubs hand every such event to the outbox.
    webhooks: HashMap<CircleId, HashMap<ElementId, hub::HookWants>>,
}

/// What a variable gives one environment: its state, whether it is
/// sensitive, and the stored value that environment runs.
type VarRun = (model::State, bool, Value);

impl Runtime {
    pub fn new(
        types: Registry,
        bus: Bus,
        peers: Peers,
        outbound: Outbound,
        resolve: Arc<dyn Resolve>,
        limits: WsLimits,
        clock: crate::clock::Clock,
    ) -> Runtime {
        let outbound = Arc::new(outbound);
        let rt = Runtime {
            inner: Arc::new(Inner {
                types,
                bus,
                peers,
                http: Arc::new(fetch::Client::new(outbound.clone())),
                outbound,
                resolve,
                clock,
                metrics: Metrics::new(),
                budget: Budget::new(limits),
                state: RwLock::new(State::default()),
                tasks: TaskTracker::new(),
                closed: Default::default(),
            }),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(sample_hubs(Arc::downgrade(&rt.inner)));
        }
        rt
    }

    /// Where driven links may connect.
    pub fn outbound(&self) -> &Outbound {
        &self.inner.outbound
    }

    /// The outbound HTTP client: hooks, webhooks, JWKS.
    pub fn http(&self) -> &fetch::Client {
        &self.inner.http
    }

    /// The other nodes sharing the database ([`Alone`] on SQLite).
    pub fn broker(&self) -> &dyn Broker {
        &*self.inner.peers.broker
    }

    /// Type names whose elements have a runtime.
    pub fn types(&self) -> Vec<String> {
        self.inner
            .types
            .all()
            .filter(|t| t.has_capability(Capability::Runtime))
            .map(|t| t.name().to_string())
            .collect()
    }

    pub fn has_runtime(&self, element_type: &str) -> bool {
        self.inner
            .types
            .get(element_type)
            .is_ok_and(|t| t.has_capability(Capability::Runtime))
    }

    /// Starts hubs for every ready element with a runtime: draft from the
    /// element, demo and live from their releases.
    pub async fn load(&self, db: &Db) -> Result<usize> {
        let hooks = [crate::store::outbox::WEBHOOK_TYPE.to_string()];
        for el in db.elements_of_types(None, &hooks).await? {
            self.note_webhook(&el);
        }
        // What each variable gives each environment now, before any hub
        // runs: the first change after a start relinks only where it
        // changes something, as every later one does.
        let resources: Vec<String> = (self.inner.types.all())
            .filter(|t| t.has_capability(Capability::Resource))
            .map(|t| t.name().to_string())
            .collect();
        for var in db.elements_of_types(None, &resources).await? {
            self.relink_users(&var);
        }
        let els = db.elements_of_types(None, &self.types()).await?;
        let mut n = 0;
        for el in els.iter().filter(|e| e.state == model::State::Ready) {
            let releases = db.deployments(&el.id).await?;
            self.apply(el, &releases);
            n += 1;
        }
        Ok(n)
    }

    /// Catches up with every change missed (a cluster listener that lost
    /// its connection): disabled elements stop, deleted ones go.
    pub async fn resync(&self, db: &Db) -> Result<()> {
        let els = db.elements_of_types(None, &self.types()).await?;
        let seen: std::collections::HashSet<&ElementId> = els.iter().map(|e| &e.id).collect();
        for el in &els {
            self.apply(el, &db.deployments(&el.id).await?);
        }
        for hub in self.hubs() {
            if !seen.contains(&hub.element_id) {
                if let Some(el) = db.element_by_id(&hub.element_id).await? {
                    self.apply(&el, &db.deployments(&el.id).await?);
                }
            }
        }
        Ok(())
    }

    pub fn hub(&self, key: &HubKey) -> Option<Arc<Hub>> {
        let st = read(&self.inner.state);
        st.by_key.get(key).cloned()
    }

    /// The element's hub in one environment.
    pub fn hub_in(&self, element_id: &ElementId, env: Env) -> Option<Arc<Hub>> {
        self.hub(&HubKey::new(element_id, env))
    }

    /// The exposed hub of an environment at `/ws/{circle}{path}` (live),
    /// `/ws/{circle}/~demo{path}` or `/ws/{circle}/~draft{path}`.
    pub fn endpoint(&self, circle: &str, env: Env, path: &str) -> Option<Arc<Hub>> {
        let st = read(&self.inner.state);
        st.by_path
            .get(&(circle.to_string(), env, path.to_string()))
            .cloned()
    }

    /// Every live hub of this node.
    pub fn hubs(&self) -> Vec<Arc<Hub>> {
        let st = read(&self.inner.state);
        st.by_key.values().cloned().collect()
    }

    /// Open client connections of an element, all environments together
    /// (0 when it is not running).
    pub fn live_connections(&self, element_id: &ElementId) -> usize {
        Env::ALL
            .iter()
            .filter_map(|env| self.hub_in(element_id, *env))
            .map(|h| h.live_connections())
            .sum()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The node's websocket limits and what they hold now.
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// The seed's metrics of one element, for `stats`. A deleted element's
    /// series are gone; reading them must not bring them back.
    pub fn element_metrics(&self, el: &Element, env: Env) -> Value {
        if let Some(h) = self.hub_in(&el.id, env) {
            return h.metrics.snapshot();
        }
        let m = self
            .inner
            .metrics
            .element(el.circle(), &el.slug, env.as_str());
        let snapshot = m.snapshot();
        if el.state == model::State::Deleted {
            self.inner
                .metrics
                .remove(el.circle(), &el.slug, env.as_str());
        }
        snapshot
    }

    /// Tracks a connection's future so shutdown can wait for it.
    pub fn track<F: std::future::Future>(
        &self,
        fut: F,
    ) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.inner.tasks.track_future(fut)
    }

    /// Where clients reach an element's runtime in an environment: live
    /// at `/ws/{circle}{path}`, demo and draft under `/~demo` and
    /// `/~draft`. None without a runtime or an exposed path.
    pub fn endpoint_url(
        &self,
        host: &str,
        el: &Element,
        spec: &Value,
        env: crate::model::Env,
    ) -> Option<String> {
        if !self.has_runtime(&el.element_type) {
            return None;
        }
        let path = exposed_path(spec)?;
        let prefix = match env {
            crate::model::Env::Live => "",
            crate::model::Env::Demo => "/~demo",
            crate::model::Env::Draft => "/~draft",
        };
        Some(format!("ws://{host}/ws/{}{prefix}{path}", el.circle()))
    }

    /// A warning for a write whose driven link the outbound policy will
    /// refuse, where that is known without resolving a name.
    pub fn outbound_warning(&self, el: &Element) -> Option<String> {
        if el.state == model::State::Deleted || !self.has_runtime(&el.element_type) {
            return None;
        }
        let probe = crate::vars::neutral(&el.spec);
        let url = probe.get("url").and_then(Value::as_str)?;
        self.inner.outbound.check_without_network(url)
    }

    /// Closes every connection with 1001 and waits (boundedly) for them.
    pub async fn shutdown(&self, wait: Duration) {
        let hubs: Vec<Arc<Hub>> = {
            let mut st = write(&self.inner.state);
            self.inner
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
            st.by_path.clear();
            st.by_key.drain().map(|(_, h)| h).collect()
        };
        for h in &hubs {
            h.shutdown(frame::CLOSE_GOING_AWAY, "server shutting down");
        }
        self.inner.tasks.close();
        let _ = tokio::time::timeout(wait, self.inner.tasks.wait()).await;
    }
}

/// Samples every hub's series each [`series::EVERY_MS`], until the
/// runtime shuts down or is dropped (it holds the runtime only while it
/// samples).
async fn sample_hubs(inner: std::sync::Weak<Inner>) {
    let every = Duration::from_millis(series::EVERY_MS as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let hubs: Vec<Arc<Hub>> = read(&inner.state).by_key.values().cloned().collect();
        let now = crate::model::now_ms();
        for h in hubs {
            h.sample(now);
        }
    }
}

/// The path an element exposes; None in driven mode.
pub(crate) fn exposed_path(spec: &Value) -> Option<&str> {
    if spec.get("url").is_some_and(|u| !u.is_null()) {
        return None;
    }
    Some(spec.get("path").and_then(Value::as_str).unwrap_or("/ws"))
}
