//! Rate limiting (GCRA, the `governor` crate): the counters every op and
//! every inbound WebSocket message is charged to. Which limits apply is
//! the service's business (`service::policy`); this only counts.

use crate::model::Role;
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One modifier attached to an element, with the spec in effect (its
/// pinned version's, or its current one).
#[derive(Debug, Clone)]
pub struct ActiveModifier {
    pub id: String,
    pub slug: String,
    pub capabilities: Vec<String>,
    pub spec: Value,
}

impl ActiveModifier {
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

/// Who is asking, for the checks.
pub struct Asker<'a> {
    pub role: Option<Role>,
    pub token_id: Option<&'a str>,
    pub ip: Option<String>,
    pub origin: Option<&'a str>,
    /// A WebSocket connection id, for `key: connection`.
    pub connection: Option<&'a str>,
}

/// Which counter a request is charged to, per the limit's `key`.
fn limit_key(m: &ActiveModifier, who: &Asker<'_>) -> String {
    match m.spec.get("key").and_then(Value::as_str).unwrap_or("token") {
        "ip" => who.ip.clone(),
        "connection" => who
            .connection
            .map(str::to_string)
            .or_else(|| who.token_id.map(str::to_string)),
        _ => who.token_id.map(str::to_string).or_else(|| who.ip.clone()),
    }
    .unwrap_or_else(|| "anonymous".into())
}

/// The rate limits a WebSocket connection's inbound messages are held to,
/// fixed when it connects (no database call per message).
pub struct MessageGate {
    limits: Arc<RateLimits>,
    rules: Vec<ActiveModifier>,
    token_id: Option<String>,
    ip: Option<String>,
}

impl MessageGate {
    pub fn new(
        limits: Arc<RateLimits>,
        mods: &[ActiveModifier],
        token_id: Option<String>,
        ip: Option<String>,
    ) -> Option<MessageGate> {
        let rules: Vec<_> = mods
            .iter()
            .filter(|m| m.has("rate_limit"))
            .cloned()
            .collect();
        (!rules.is_empty()).then_some(MessageGate {
            limits,
            rules,
            token_id,
            ip,
        })
    }

    /// Charges one message; Err carries how long to wait.
    pub fn check(&self, connection_id: &str) -> std::result::Result<(), Duration> {
        let who = Asker {
            role: None,
            token_id: self.token_id.as_deref(),
            ip: self.ip.clone(),
            origin: None,
            connection: Some(connection_id),
        };
        self.limits
            .charge(self.rules.iter(), &who)
            .map_or(Ok(()), Err)
    }
}

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<String, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// Charges since the last prune.
    charges: std::sync::atomic::AtomicU64,
}

/// Every this many charges, keys whose quota is whole again are dropped,
/// and limiters left with no key (a changed spec's old one) go.
const PRUNE_EVERY: u64 = 4096;

impl RateLimits {
    /// Charges one request to every limit; the longest wait if any is
    /// exhausted, so the strictest wins.
    pub fn charge<'m>(
        &self,
        limits: impl Iterator<Item = &'m ActiveModifier>,
        who: &Asker<'_>,
    ) -> Option<Duration> {
        limits
            .filter_map(|m| self.check(m, limit_key(m, who)).err())
            .max()
    }

    /// Counts one request against a limit; Err carries the wait.
    pub fn check(&self, m: &ActiveModifier, key: String) -> std::result::Result<(), Duration> {
        let limit = m
            .spec
            .get("limit")
            .and_then(Value::as_u64)
            .unwrap_or(60)
            .clamp(1, u32::MAX as u64) as u32;
        let window = m
            .spec
            .get("window_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(60)
            .max(1);
        // A changed spec gets a fresh limiter.
        let name = format!("{}:{limit}:{window}", m.id);
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name)
                .or_insert_with(|| {
                    let period = Duration::from_secs_f64(window as f64 / limit as f64);
                    let quota = Quota::with_period(period)
                        .expect("period is positive")
                        .allow_burst(NonZeroU32::new(limit).expect("limit is at least 1"));
                    Arc::new(RateLimiter::keyed(quota))
                })
                .clone()
        };
        let n = self
            .charges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        limiter
            .check_key(&key)
            .map_err(|nu| nu.wait_time_from(governor::clock::DefaultClock::default().now()))
    }

    /// Forgets keys that are back to a full quota: they would answer the
    /// same as a new key, so memory follows recent callers only.
    pub fn prune(&self) {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| {
            l.retain_recent();
            l.shrink_to_fit();
            !l.is_empty()
        });
    }

    /// Keys held across all limiters.
    pub fn keys(&self) -> usize {
        let map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Keys whose quota is whole again are forgotten; a limiter with
    /// none left (an old spec's) goes too.
    #[test]
    fn idle_keys_are_pruned() {
        let limits = RateLimits::default();
        let m = ActiveModifier {
            id: "rl".into(),
            slug: "rl".into(),
            capabilities: vec!["rate_limit".into()],
            spec: json!({"limit": 1000, "window_seconds": 1}),
        };
        for i in 0..3000 {
            assert!(limits.check(&m, format!("ip-{i}")).is_ok());
        }
        assert_eq!(limits.keys(), 3000);
        std::thread::sleep(Duration::from_millis(1100));
        // Pruning runs by itself as charges go on.
        for _ in 0..PRUNE_EVERY {
            let _ = limits.check(&m, "busy".into());
        }
        assert_eq!(limits.keys(), 1, "only the busy key is left");
        std::thread::sleep(Duration::from_millis(1100));
        limits.prune();
        assert_eq!(limits.keys(), 0);
        assert!(limits.limiters.lock().unwrap().is_empty());
    }
}
