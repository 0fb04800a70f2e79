//! Attached modifiers in effect: `auth-policy` first, then `rate-limit`
//! (the seed's validate_auth and check_rate_limit). Where several apply,
//! each must pass, so the strictest wins.

use crate::app::App;
use crate::error::{Class, Error, Result};
use crate::events::Actor;
use crate::model::Element;
use crate::model::State;
use crate::store::attachments::AttachmentRow;
use crate::store::tokens::Role;
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

/// 403 unless the actor holds `need`. The system itself (repair) may.
pub fn require_role(actor: &Actor, need: Role, what: impl FnOnce() -> String) -> Result<()> {
    if actor.kind == crate::model::ActorKind::System || actor.role.is_some_and(|r| r >= need) {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "{} needs the {} role: it guards other elements",
        what(),
        need.as_str()
    )))
}

impl App {
    /// The role that detaching attachment `a` (of modifier `m`) needs:
    /// admin for an auth-policy, else the role that attached it.
    pub fn detach_role(&self, m: &Element, a: &AttachmentRow) -> Result<Role> {
        let ty = self.types.get(&m.element_type)?;
        if !ty.has_capability("modifier") {
            return Ok(Role::Member);
        }
        if ty.has_capability("auth_policy") {
            return Ok(Role::Admin);
        }
        Ok(a.attached_role.unwrap_or(Role::Admin))
    }

    /// The role that weakening modifier `m` (changing its spec, disabling
    /// or deleting it) needs while it is attached: the strictest of what
    /// detaching each of its attachments needs. None when it guards nothing.
    pub async fn guard_role(&self, m: &Element) -> Result<Option<Role>> {
        let ty = self.types.get(&m.element_type)?;
        if !ty.has_capability("modifier") {
            return Ok(None);
        }
        let mut need = None;
        for a in self.db.attached_to(&m.id).await? {
            need = need.max(Some(self.detach_role(m, &a)?));
        }
        Ok(need)
    }

    /// The enabled modifiers attached to an element, strongest priority first.
    pub async fn active_modifiers(&self, el: &Element) -> Result<Vec<ActiveModifier>> {
        let mut out = Vec::new();
        for (pin, src) in self.db.attached_sources(&el.id).await? {
            let Ok(ty) = self.types.get(&src.element_type) else {
                continue;
            };
            if src.state != State::Ready || !ty.has_capability("modifier") {
                continue;
            }
            let spec = match pin {
                Some(v) => match self.db.version_of(&src.id, v).await? {
                    Some(row) => row.spec,
                    None => continue,
                },
                None => src.spec.clone(),
            };
            out.push(ActiveModifier {
                id: src.id,
                slug: src.slug,
                capabilities: ty.def.capabilities.clone(),
                spec,
            });
        }
        Ok(out)
    }

    /// Applies attached auth-policies, then rate-limits.
    pub fn enforce(&self, mods: &[ActiveModifier], who: &Asker<'_>) -> Result<()> {
        for m in mods.iter().filter(|m| m.has("auth_policy")) {
            let require_token = m.spec.get("require_token").and_then(Value::as_bool) == Some(true);
            let min_role = m
                .spec
                .get("min_role")
                .and_then(Value::as_str)
                .and_then(Role::parse);
            if who.role.is_none() && (require_token || min_role.is_some_and(|r| r > Role::Viewer)) {
                return Err(Error::unauthorized(format!(
                    "auth-policy '{}' requires a token",
                    m.slug
                )));
            }
            if let (Some(need), Some(have)) = (min_role, who.role) {
                if have < need {
                    return Err(Error::forbidden(format!(
                        "auth-policy '{}' requires the {} role",
                        m.slug,
                        need.as_str()
                    )));
                }
            }
            let allowed: Vec<&str> = m
                .spec
                .get("allowed_origins")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(origin) = who.origin {
                if !allowed.is_empty() && !allowed.contains(&origin) && !allowed.contains(&"*") {
                    return Err(Error::new(
                        crate::error::Kind::Forbidden,
                        Class::Auth,
                        "ORIGIN_NOT_ALLOWED",
                        format!("origin {origin} is not allowed by auth-policy '{}'", m.slug),
                    ));
                }
            }
        }
        let limits = mods.iter().filter(|m| m.has("rate_limit"));
        let wait = self.limits.charge(limits, who);
        if let Some(w) = wait {
            let secs = w.as_secs_f64().ceil().max(1.0) as u64;
            let mut e = Error::new(
                crate::error::Kind::TooMany,
                Class::Limit,
                "RATE_LIMITED",
                format!("rate limit reached; retry in {secs}s"),
            )
            .retryable();
            e.retry_after = Some(secs);
            return Err(e);
        }
        Ok(())
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
