//! A `webhook` element's spec as the outbox and the delivery worker read
//! it, event globs, and the retry schedule (SPEC 10.2).

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Pending deliveries kept per webhook; past it the oldest pending are
/// dropped and counted, so a receiver that is down for days cannot fill
/// the database.
pub const MAX_PENDING: i64 = 10_000;

fn yes() -> bool {
    true
}
fn fifteen() -> i64 {
    15
}
fn ten_minutes() -> i64 {
    600
}

/// The spec, with the type's defaults. The schema has bounded each field
/// before it is stored.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSpec {
    #[serde(default)]
    pub url: String,
    /// `{{ vars.slug }}`: never a value.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "fifteen")]
    pub max_attempts: i64,
    #[serde(default = "ten_minutes")]
    pub max_backoff_s: i64,
}

impl WebhookSpec {
    /// None for a spec that does not parse (it never reaches the store).
    pub fn of(spec: &Value) -> Option<WebhookSpec> {
        serde_json::from_value(spec.clone()).ok()
    }

    /// Whether an event of this kind is wanted.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|p| glob(p, kind))
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failed:
    /// 1 s doubling to `max_backoff_s`, then scaled by `jitter` (0.5..=1.0
    /// from the caller's random source) so receivers that come back are
    /// not hit by every sender in the same second.
    pub fn backoff(&self, attempts: i64, jitter: f64) -> Duration {
        let cap = self.max_backoff_s.max(1) as f64;
        let base = 2f64.powi((attempts.max(1) - 1).min(30) as i32).min(cap);
        Duration::from_secs_f64((base * jitter.clamp(0.5, 1.0)).max(0.5))
    }
}

/// `*` stands for any run of characters (dots too): `ws.connection.*`,
/// `element.*`, `*`. Everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_kinds() {
        assert!(glob("ws.connection.*", "ws.connection.opened"));
        assert!(glob("*", "element.updated"));
        assert!(glob("element.updated", "element.updated"));
        assert!(glob("ws.*.opened", "ws.connection.opened"));
        assert!(!glob("ws.connection.*", "ws.message.received"));
        assert!(!glob("element.updated", "element.updated.x"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let spec = WebhookSpec::of(&json!({"max_backoff_s": 5})).unwrap();
        let secs: Vec<u64> = (1..=5).map(|a| spec.backoff(a, 1.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
        assert_eq!(spec.max_attempts, 15);
        assert!(spec.backoff(3, 0.5) < spec.backoff(3, 1.0));
    }
}
