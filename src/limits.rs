//! Rate limiting (GCRA, the `governor` crate): the counters every op and
//! every inbound WebSocket message is charged to. Which limits apply is
//! the service's business (`service::policy`); this only counts, and
//! remembers when each counter is whole again for `status`.

use crate::model::Role;
use crate::modifiers::{ActiveModifier, RateKey, RateRules, Refusal, Traffic, Window};
use crate::sync::lock;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Who is asking, for the checks.
pub struct Asker<'a> {
    pub role: Option<Role>,
    pub token_id: Option<&'a str>,
    pub ip: Option<String>,
    pub origin: Option<&'a str>,
    /// A WebSocket connection id, for `key: connection`.
    pub connection: Option<&'a str>,
    /// The element asked for, for counters kept per element.
    pub element: Option<&'a str>,
    /// How the caller proved who it is, for an auth-policy's `methods`.
    pub credential: Option<Credential>,
    /// An api-token's scopes by name (None: not an api-token).
    pub scopes: Option<Vec<&'static str>>,
}

/// The kinds of credential an auth-policy's `methods` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A platform token sent as a bearer token (or git's password).
    Token,
    /// An api-token of `token_type: api-key`.
    ApiKey,
    /// An end user's JWT, signed by the application.
    Jwt,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Token => "token",
            Credential::ApiKey => "api_key",
            Credential::Jwt => "jwt",
        }
    }
}

/// Which counter a request is charged to: the limit's `key`, and the
/// element when the counter is kept per element.
fn limit_key(r: &RateRules, who: &Asker<'_>) -> String {
    let base = match r.key {
        RateKey::Ip => who.ip.clone(),
        RateKey::Connection => who
            .connection
            .map(str::to_string)
            .or_else(|| who.token_id.map(str::to_string)),
        RateKey::Token => who.token_id.map(str::to_string).or_else(|| who.ip.clone()),
    }
    .unwrap_or_else(|| "anonymous".into());
    match (r.shared, who.element) {
        (false, Some(el)) => format!("{base}{ELEMENT_SEP}{el}"),
        _ => base,
    }
}

/// Splits a key kept per element back into its parts.
const ELEMENT_SEP: char = '|';

/// The rate limits a WebSocket connection's inbound messages are held to,
/// fixed when it connects (no database call per message).
pub struct MessageGate {
    limits: Arc<RateLimits>,
    rules: Vec<ActiveModifier>,
    token_id: Option<String>,
    ip: Option<String>,
    element: String,
}

impl MessageGate {
    pub fn new(
        limits: Arc<RateLimits>,
        mods: &[ActiveModifier],
        token_id: Option<String>,
        ip: Option<String>,
        element: String,
    ) -> Option<MessageGate> {
        let rules: Vec<_> = mods
            .iter()
            .filter(|m| m.rate.as_ref().is_some_and(|r| r.messages))
            .cloned()
            .collect();
        (!rules.is_empty()).then_some(MessageGate {
            limits,
            rules,
            token_id,
            ip,
            element,
        })
    }

    /// Charges one message; Err says which limit refused it and for how long.
    pub fn check(&self, connection_id: &str) -> std::result::Result<(), Refusal> {
        let who = Asker {
            role: None,
            token_id: self.token_id.as_deref(),
            ip: self.ip.clone(),
            origin: None,
            connection: Some(connection_id),
            element: Some(&self.element),
            credential: None,
            scopes: None,
        };
        self.limits
            .charge(self.rules.iter(), &who, Traffic::Messages)
            .map_or(Ok(()), Err)
    }
}

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The counters of one window of one modifier.
struct Counter {
    limiter: Limiter,
    window: Window,
    /// When each key's quota is whole again, for `status`.
    full_at: Mutex<HashMap<String, Instant>>,
}

impl Counter {
    fn new(window: Window) -> Counter {
        let quota = Quota::with_period(window.period())
            .expect("period is positive")
            .allow_burst(NonZeroU32::new(window.limit).expect("limit is at least 1"));
        Counter {
            limiter: RateLimiter::keyed(quota).with_middleware(),
            window,
            full_at: Mutex::new(HashMap::new()),
        }
    }

    fn charge(&self, key: String) -> std::result::Result<(), Duration> {
        let now = Instant::now();
        let period = self.window.period();
        let (outcome, full) = match self.limiter.check_key(&key) {
            Ok(snap) => {
                let used = self.window.limit - snap.remaining_burst_capacity();
                (Ok(()), now + period * used)
            }
            Err(nu) => {
                let wait = nu.wait_time_from(DefaultClock::default().now());
                (Err(wait), now + wait + period * (self.window.limit - 1))
            }
        };
        // In place when the key is known: no new entry per message.
        let mut map = lock(&self.full_at);
        match map.get_mut(&key) {
            Some(at) => *at = full,
            None => {
                map.insert(key, full);
            }
        }
        outcome
    }

    /// What is left of a key's quota now, and when it is whole again.
    fn left(&self, full_at: Option<Instant>, now: Instant) -> (u32, Instant) {
        match full_at.filter(|f| *f > now) {
            None => (self.window.limit, now),
            Some(f) => {
                let owed = ((f - now).as_secs_f64() / self.window.period().as_secs_f64()).ceil();
                (self.window.limit.saturating_sub(owed as u32), f)
            }
        }
    }
}

/// One key's quota in one window, as `status` shows it.
#[derive(Debug, Clone)]
pub struct Left {
    pub window: Window,
    pub remaining: u32,
    /// When the quota is whole again (now when it already is).
    pub reset_at: std::time::SystemTime,
}

/// One key's quotas, as `status` shows them.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub key: String,
    /// The element the counter is kept for, when kept per element.
    pub element_id: Option<String>,
    pub windows: Vec<Left>,
}

#[derive(Default)]
pub struct RateLimits {
    counters: Mutex<HashMap<String, Arc<Counter>>>,
    /// Charges since the last prune.
    charges: std::sync::atomic::AtomicU64,
}

/// Every this many charges, keys whose quota is whole again are dropped,
/// and counters left with no key (a changed spec's old one) go.
const PRUNE_EVERY: u64 = 4096;

/// How many keys `status` lists at most.
const STATUS_KEYS: usize = 100;

impl RateLimits {
    /// Charges one request to every window of every limit that counts
    /// this traffic; the longest wait if any is exhausted, so the
    /// strictest wins.
    pub fn charge<'m>(
        &self,
        limits: impl Iterator<Item = &'m ActiveModifier>,
        who: &Asker<'_>,
        traffic: Traffic,
    ) -> Option<Refusal> {
        // The longest wait says why.
        let mut worst: Option<(Duration, &'m ActiveModifier, Window)> = None;
        for m in limits {
            let Some(rules) = m.rate.as_ref().filter(|r| r.counts(traffic)) else {
                continue;
            };
            let key = limit_key(rules, who);
            for w in &rules.windows {
                if let Err(d) = self.check(&m.id, *w, key.clone()) {
                    if worst.is_none_or(|(longest, _, _)| d > longest) {
                        worst = Some((d, m, *w));
                    }
                }
            }
        }
        worst.map(|(d, m, w)| m.refusal(w, d, traffic))
    }

    fn counter(&self, modifier_id: &str, w: Window) -> Arc<Counter> {
        // A changed spec gets a fresh counter.
        let name = format!("{modifier_id}:{}:{}", w.limit, w.window_seconds);
        lock(&self.counters)
            .entry(name)
            .or_insert_with(|| Arc::new(Counter::new(w)))
            .clone()
    }

    /// Counts one request in one window; Err carries the wait.
    pub fn check(
        &self,
        modifier_id: &str,
        w: Window,
        key: String,
    ) -> std::result::Result<(), Duration> {
        let counter = self.counter(modifier_id, w);
        let n = self
            .charges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        counter.charge(key)
    }

    /// Each key's quota left in each window of a rate-limit, keys with
    /// the least left first (at most 100), or one key's (`only`), which
    /// is whole if it was never charged. Charges nothing.
    pub fn status(
        &self,
        modifier_id: &str,
        rules: &RateRules,
        only: Option<&str>,
    ) -> Vec<KeyStatus> {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let counters: Vec<Arc<Counter>> = rules
            .windows
            .iter()
            .map(|w| self.counter(modifier_id, *w))
            .collect();
        let mut keys: Vec<String> = counters
            .iter()
            .flat_map(|c| {
                lock(&c.full_at)
                    .iter()
                    .filter(|(k, f)| {
                        **f > now && only.is_none_or(|o| k.split(ELEMENT_SEP).next() == Some(o))
                    })
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys.dedup();
        if let (Some(o), true) = (only, keys.is_empty()) {
            keys.push(o.to_string());
        }
        let mut out: Vec<KeyStatus> = keys
            .drain(..)
            .map(|key| {
                let windows = counters
                    .iter()
                    .map(|c| {
                        let (remaining, at) = c.left(lock(&c.full_at).get(&key).copied(), now);
                        Left {
                            window: c.window,
                            remaining,
                            reset_at: wall + (at - now),
                        }
                    })
                    .collect();
                let (key, element_id) = match key.split_once(ELEMENT_SEP) {
                    Some((k, e)) => (k.to_string(), Some(e.to_string())),
                    None => (key, None),
                };
                KeyStatus {
                    key,
                    element_id,
                    windows,
                }
            })
            .collect();
        let least = |k: &KeyStatus| k.windows.iter().map(|w| w.remaining).min().unwrap_or(0);
        out.sort_by_key(least);
        out.truncate(STATUS_KEYS);
        out
    }

    /// Forgets keys that are back to a full quota: they would answer the
    /// same as a new key, so memory follows recent callers only.
    pub fn prune(&self) {
        let now = Instant::now();
        lock(&self.counters).retain(|_, c| {
            c.limiter.retain_recent();
            c.limiter.shrink_to_fit();
            let mut full = lock(&c.full_at);
            full.retain(|_, f| *f > now);
            full.shrink_to_fit();
            !c.limiter.is_empty()
        });
    }

    /// Keys held across all counters.
    pub fn keys(&self) -> usize {
        lock(&self.counters).values().map(|c| c.limiter.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Capability;
    use serde_json::json;

    fn modifier(spec: serde_json::Value) -> ActiveModifier {
        ActiveModifier::new(
            "rl".into(),
            "rl".into(),
            vec![Capability::Modifier, Capability::RateLimit],
            spec,
            None,
        )
    }

    fn asker<'a>(token: &'a str, element: &'a str) -> Asker<'a> {
        Asker {
            role: None,
            token_id: Some(token),
            ip: None,
            origin: None,
            connection: None,
            element: Some(element),
            credential: None,
            scopes: None,
        }
    }

    /// Keys whose quota is whole again are forgotten; a counter with
    /// none left (an old spec's) goes too.
    #[test]
    fn idle_keys_are_pruned() {
        let limits = RateLimits::default();
        let w = Window {
            limit: 1000,
            window_seconds: 1,
        };
        for i in 0..3000 {
            assert!(limits.check("rl", w, format!("ip-{i}")).is_ok());
        }
        assert_eq!(limits.keys(), 3000);
        std::thread::sleep(Duration::from_millis(1100));
        // Pruning runs by itself as charges go on.
        for _ in 0..PRUNE_EVERY {
            let _ = limits.check("rl", w, "busy".into());
        }
        assert_eq!(limits.keys(), 1, "only the busy key is left");
        std::thread::sleep(Duration::from_millis(1100));
        limits.prune();
        assert_eq!(limits.keys(), 0);
        assert!(limits.counters.lock().unwrap().is_empty());
    }

    /// Every window must pass; status reads what is left without
    /// charging; a per-element counter keeps elements apart.
    #[test]
    fn windows_scope_and_status() {
        let limits = RateLimits::default();
        let m = modifier(json!({
            "limits": [{"limit": 3, "window_seconds": 60}, {"limit": 5, "window_seconds": 3600}],
            "scope": {"counter": "element", "traffic": ["ops"]}
        }));
        let rules = m.rate.clone().unwrap();
        assert_eq!(rules.windows.len(), 2);
        assert!(!rules.shared && rules.ops && !rules.messages);
        for _ in 0..3 {
            assert!(limits
                .charge([&m].into_iter(), &asker("t1", "a"), Traffic::Ops)
                .is_none());
        }
        let refused = limits.charge([&m].into_iter(), &asker("t1", "a"), Traffic::Ops);
        assert!(
            refused
                .as_ref()
                .is_some_and(|r| r.wait > Duration::from_secs(10)),
            "{refused:?}"
        );
        // The message names the limit and the window that said no.
        let r = refused.unwrap();
        assert!(
            r.message
                .starts_with("rate limit 'rl' reached: 3 requests per 60 s; retry in "),
            "{}",
            r.message
        );
        assert_eq!((r.status, r.code), (None, None));
        // Messages are not counted by this one; another element has its own.
        assert!(limits
            .charge([&m].into_iter(), &asker("t1", "a"), Traffic::Messages)
            .is_none());
        assert!(limits
            .charge([&m].into_iter(), &asker("t1", "b"), Traffic::Ops)
            .is_none());
        let st = limits.status("rl", &rules, Some("t1"));
        assert_eq!(st.len(), 2, "{st:?}");
        let a = st
            .iter()
            .find(|k| k.element_id.as_deref() == Some("a"))
            .unwrap();
        assert_eq!(a.key, "t1");
        let left: Vec<u32> = a.windows.iter().map(|w| w.remaining).collect();
        assert_eq!(left, vec![0, 1], "the refused try charged the hour too");
        assert!(a.windows[0].reset_at > std::time::SystemTime::now());
        let b = st
            .iter()
            .find(|k| k.element_id.as_deref() == Some("b"))
            .unwrap();
        assert_eq!(b.windows[0].remaining, 2);
        // Asking again charged nothing; an unseen key is whole.
        assert_eq!(limits.status("rl", &rules, Some("t1")).len(), 2);
        let fresh = limits.status("rl", &rules, Some("t9"));
        assert_eq!(fresh[0].windows[1].remaining, 5);
        assert_eq!(limits.status("rl", &rules, None)[0].windows[0].remaining, 0);
    }

    /// A spec from before `limits` and `scope` reads as one shared window
    /// for all traffic.
    #[test]
    fn old_specs_read_as_before() {
        let r = RateRules::of(&json!({"limit": 5, "window_seconds": 60}));
        assert_eq!(
            r,
            RateRules {
                windows: vec![Window {
                    limit: 5,
                    window_seconds: 60
                }],
                key: RateKey::Token,
                shared: true,
                ops: true,
                messages: true,
                response: Default::default(),
            }
        );
    }
}
