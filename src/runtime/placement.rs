//! What a committed change does to the hubs: an element's start,
//! reconfigure or stop in each environment, the index of exposed paths,
//! and the webhooks and variables that running hubs depend on.

use super::driven::LinkEnv;
use super::hub::HookWants;
use super::{frame, Hub, HubKey, Runtime, State, WsSpec};
use crate::model::{self, Element, Env};
use crate::store::deployments::Deployment;
use crate::sync::write;
use crate::types::Capability;
use serde_json::Value;
use std::sync::Arc;

impl State {
    /// What the circle's webhooks together take.
    fn hook_wants(&self, circle: &crate::ids::CircleId) -> HookWants {
        (self.webhooks.get(circle).into_iter())
            .flat_map(|hooks| hooks.values())
            .fold(HookWants::default(), |all, w| all.or(*w))
    }

    /// Takes the hub's paths back. A path let go may be one another hub
    /// waits for (members that swap paths in one promotion are placed one
    /// after the other): it goes to that hub.
    fn unindex(&mut self, hub: &Arc<Hub>) {
        let freed: Vec<_> = (self.by_path.iter())
            .filter(|(_, h)| Arc::ptr_eq(h, hub))
            .map(|(k, _)| k.clone())
            .collect();
        self.by_path.retain(|_, h| !Arc::ptr_eq(h, hub));
        for key in freed {
            let waiting = self.by_key.values().find(|h| {
                let s = h.spec();
                !Arc::ptr_eq(h, hub)
                    && (h.circle == key.0 && h.env == key.1)
                    && (!s.is_driven() && s.path == key.2)
            });
            if let Some(w) = waiting.cloned() {
                self.by_path.insert(key, w);
            }
        }
    }
    fn index(&mut self, hub: &Arc<Hub>, spec: &WsSpec) {
        self.unindex(hub);
        if !spec.is_driven() {
            self.expose(hub, spec);
        }
    }
    fn expose(&mut self, hub: &Arc<Hub>, spec: &WsSpec) {
        let key = (hub.circle.clone(), hub.env, spec.path.clone());
        match self.by_path.get(&key) {
            // The write path refuses duplicates; a race leaves the first.
            Some(other) => tracing::warn!(
                circle = %hub.circle, path = %spec.path, holder = %other.slug, slug = %hub.slug,
                "websocket path already served; not exposing"
            ),
            None => {
                self.by_path.insert(key, hub.clone());
            }
        }
    }
}

impl Runtime {
    /// A committed change of an element or of its releases: start,
    /// reconfigure or stop its hubs, one per environment (draft runs the
    /// element, demo and live their releases). Never awaits; stale news
    /// is ignored.
    pub fn apply(&self, el: &Element, releases: &[Deployment]) {
        if el.element_type == crate::store::outbox::WEBHOOK_TYPE {
            return self.note_webhook(el);
        }
        if self.inner.types.has(&el.element_type, Capability::Resource) {
            return self.relink_users(el);
        }
        let Ok(ty) = self.inner.types.get(&el.element_type) else {
            return;
        };
        if !ty.has_capability(Capability::Runtime) {
            return;
        }
        let mut st = write(&self.inner.state);
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let ready = el.state == model::State::Ready;
        for env in Env::ALL {
            let (spec, released_at) = match env {
                Env::Draft => (&el.spec, 0),
                _ => match releases.iter().find(|d| d.env == env) {
                    Some(d) => (&d.spec, d.promoted_at),
                    // Not released here (yet): leave it, unless stopping.
                    None if ready => continue,
                    None => (&el.spec, 0),
                },
            };
            let key = HubKey::new(&el.id, env);
            let stamp = (el.rev, released_at);
            if let Some(old) = st.stamps.get(&key) {
                if stamp == *old || stamp.0 < old.0 || stamp.1 < old.1 {
                    continue;
                }
            }
            st.stamps.insert(key.clone(), stamp);
            let parsed = ready.then(|| WsSpec::parse(ty, spec)).and_then(|r| match r {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(slug = %el.slug, env = env.as_str(), error = %e, "websocket spec unusable; not served");
                    None
                }
            });
            self.place(&mut st, el, env, &key, parsed);
            if el.state == model::State::Deleted {
                self.inner
                    .metrics
                    .remove(el.circle(), &el.slug, env.as_str());
            }
        }
    }

    /// Runs `spec` as the element's hub in `env` (None stops it): in place
    /// while the endpoint stays, so clients stay connected (keeping the
    /// limits they connected with); a moved path or a changed mode starts
    /// over, closing them with 1001.
    fn place(&self, st: &mut State, el: &Element, env: Env, key: &HubKey, spec: Option<WsSpec>) {
        let existing = st.by_key.get(key).cloned();
        let moved = |h: &Arc<Hub>, s: &WsSpec| {
            let old = h.spec();
            old.is_driven() != s.is_driven() || (!s.is_driven() && old.path != s.path)
        };
        match (existing, spec) {
            (Some(h), Some(s)) if !moved(&h, &s) => {
                st.index(&h, &s);
                h.update(el.rev, s);
            }
            (existing, spec) => {
                if let Some(h) = existing {
                    st.unindex(&h);
                    st.by_key.remove(key);
                    let why = match el.state {
                        model::State::Deleted => "element deleted",
                        model::State::Disabled => "element disabled",
                        model::State::Ready => "endpoint moved",
                    };
                    h.shutdown(frame::CLOSE_GOING_AWAY, why);
                }
                if let Some(s) = spec {
                    let m = self
                        .inner
                        .metrics
                        .element(el.circle(), &el.slug, env.as_str());
                    let hub = Hub::start(
                        el,
                        env,
                        s.clone(),
                        self.inner.bus.clone(),
                        m,
                        self.inner.peers.clone(),
                        self.inner.budget.clone(),
                        LinkEnv {
                            outbound: self.inner.outbound.clone(),
                            http: self.inner.http.clone(),
                            resolve: self.inner.resolve.clone(),
                            clock: self.inner.clock.clone(),
                            circle_id: el.circle_id.clone(),
                            env,
                        },
                    );
                    hub.set_hooks(st.hook_wants(&el.circle_id));
                    st.index(&hub, &s);
                    st.by_key.insert(key.clone(), hub);
                }
            }
        }
    }

    /// A webhook changed: whether its circle's hubs hand message and
    /// connection events to the outbox (the outbox matches each event
    /// exactly; this only spares circles without such a webhook the work).
    pub(super) fn note_webhook(&self, el: &Element) {
        let wants = crate::webhook::WebhookSpec::of(&el.spec)
            .filter(|w| el.state == model::State::Ready && w.enabled)
            .map(|w| HookWants {
                messages: w.wants("ws.message.received") || w.wants("ws.message.sent"),
                connections: w.wants("ws.connection.opened") || w.wants("ws.connection.closed"),
            })
            .unwrap_or_default();
        let mut st = write(&self.inner.state);
        let hooks = st.webhooks.entry(el.circle_id.clone()).or_default();
        match wants.any() {
            true => hooks.insert(el.id.clone(), wants),
            false => hooks.remove(&el.id),
        };
        if hooks.is_empty() {
            st.webhooks.remove(&el.circle_id);
        }
        let on = st.hook_wants(&el.circle_id);
        for h in st.by_key.values().filter(|h| h.circle_id == el.circle_id) {
            h.set_hooks(on);
        }
    }

    /// A variable changed: the links that use it connect again with it,
    /// in the environments whose value (or the variable's state) changed.
    /// News of a variable not seen since start (one made on another
    /// node) relinks them all; older news than what was applied is
    /// ignored.
    pub(super) fn relink_users(&self, var: &Element) {
        let sensitive = var.spec.get("sensitive").and_then(Value::as_bool) == Some(true);
        let runs = Env::ALL.map(|env| {
            let value = crate::var_types::slot_for(&var.spec, env.as_str())
                .and_then(|s| var.spec.pointer(s))
                .cloned()
                .unwrap_or(Value::Null);
            (var.state, sensitive, value)
        });
        let users: Vec<Arc<Hub>> = {
            let mut st = write(&self.inner.state);
            // Values compare as JSON (object key order aside); a value
            // sealed again compares as changed.
            let changed: Vec<Env> = match st.vars.get(&var.id) {
                Some((rev, _)) if *rev > var.rev => return,
                Some((_, before)) => (Env::ALL.iter().zip(before.iter().zip(runs.iter())))
                    .filter(|(_, (b, n))| b != n)
                    .map(|(env, _)| *env)
                    .collect(),
                None => Env::ALL.to_vec(),
            };
            if var.state == model::State::Deleted {
                st.vars.remove(&var.id);
            } else {
                st.vars.insert(var.id.clone(), (var.rev, runs));
            }
            st.by_key
                .values()
                .filter(|h| {
                    h.circle_id == var.circle_id
                        && changed.contains(&h.env)
                        && h.uses_variable(&var.slug)
                })
                .cloned()
                .collect()
        };
        for h in &users {
            h.forget_secret(&var.slug);
            h.forget_hook_key();
            h.relink();
        }
    }
}
