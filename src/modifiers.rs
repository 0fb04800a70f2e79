//! What the modifiers attached to an element say, read once: the rules
//! the policy checks and the rate counters apply.

use crate::types::Capability;
use serde_json::Value;
use std::time::Duration;

/// One modifier in effect on an element, with the spec in effect (its
/// pinned version's, or its current one).
#[derive(Debug, Clone)]
pub struct ActiveModifier {
    pub id: String,
    pub slug: String,
    pub capabilities: Vec<Capability>,
    pub spec: Value,
    /// The element above it is inherited from (None: attached here).
    pub from: Option<String>,
    /// A rate-limit's rules, read once.
    pub rate: Option<RateRules>,
}

impl ActiveModifier {
    pub fn new(
        id: String,
        slug: String,
        capabilities: Vec<Capability>,
        spec: Value,
        from: Option<String>,
    ) -> ActiveModifier {
        let rate = capabilities
            .contains(&Capability::RateLimit)
            .then(|| RateRules::of(&spec));
        ActiveModifier {
            id,
            slug,
            capabilities,
            spec,
            from,
            rate,
        }
    }

    pub fn has(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }

    /// How errors name it: `'slug'`, with where it is inherited from.
    pub fn named(&self) -> String {
        match &self.from {
            Some(from) => format!("'{}' (from '{from}')", self.slug),
            None => format!("'{}'", self.slug),
        }
    }
}

/// What a counter is charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// REST ops and WebSocket upgrades.
    Ops,
    /// Inbound WebSocket messages.
    Messages,
}

/// One window: `limit` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub window_seconds: u64,
}

impl Window {
    pub fn period(self) -> Duration {
        Duration::from_secs_f64(self.window_seconds as f64 / self.limit as f64)
    }
}

/// What a rate limit counts callers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey {
    /// The token (an anonymous caller: the address).
    Token,
    Ip,
    /// The WebSocket connection (a REST call: the token).
    Connection,
}

impl RateKey {
    pub fn as_str(self) -> &'static str {
        match self {
            RateKey::Token => "token",
            RateKey::Ip => "ip",
            RateKey::Connection => "connection",
        }
    }
}

/// A rate-limit spec as the counters read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRules {
    pub windows: Vec<Window>,
    pub key: RateKey,
    /// One counter per key across every element the modifier covers, or
    /// one per key and element.
    pub shared: bool,
    pub ops: bool,
    pub messages: bool,
    /// What a limited caller gets, where the spec says (`response`).
    pub response: LimitResponse,
}

/// A rate-limit's `response`: every part optional, the defaults are
/// 429 `RATE_LIMITED` and a message naming the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitResponse {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl LimitResponse {
    fn of(spec: Option<&Value>) -> LimitResponse {
        let Some(r) = spec else {
            return LimitResponse::default();
        };
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        LimitResponse {
            status: r
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            code: text("code"),
            message: text("message"),
            headers: r
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A refused request or message: which limit said no, in which window,
/// and for how long.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub wait: Duration,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    pub headers: Vec<(String, String)>,
}

impl ActiveModifier {
    /// What a caller refused by this rate-limit's `window` is told.
    pub fn refusal(&self, window: Window, wait: Duration, traffic: Traffic) -> Refusal {
        let r = self.rate.as_ref().map(|r| &r.response);
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let what = match traffic {
            Traffic::Ops => "requests",
            Traffic::Messages => "messages",
        };
        let from = match &self.from {
            Some(f) => format!(", inherited from '{f}',"),
            None => String::new(),
        };
        let message = r.and_then(|r| r.message.clone()).unwrap_or_else(|| {
            format!(
                "rate limit '{}'{from} reached: {} {what} per {} s; retry in {secs} s",
                self.slug, window.limit, window.window_seconds
            )
        });
        Refusal {
            wait,
            status: r.and_then(|r| r.status),
            code: r.and_then(|r| r.code.clone()),
            message,
            headers: r.map(|r| r.headers.clone()).unwrap_or_default(),
        }
    }
}

impl RateRules {
    pub fn of(spec: &Value) -> RateRules {
        let window = |v: &Value| {
            Some(Window {
                limit: v.get("limit")?.as_u64()?.clamp(1, u32::MAX as u64) as u32,
                window_seconds: v.get("window_seconds")?.as_u64()?.max(1),
            })
        };
        let mut windows: Vec<Window> = window(spec).into_iter().collect();
        if let Some(list) = spec.get("limits").and_then(Value::as_array) {
            windows.extend(list.iter().filter_map(window));
        }
        windows.dedup();
        if windows.is_empty() {
            windows.push(Window {
                limit: 60,
                window_seconds: 60,
            });
        }
        let scope = spec.get("scope");
        let traffic: Vec<&str> = scope
            .and_then(|s| s.get("traffic"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_else(|| vec!["ops", "messages"]);
        RateRules {
            windows,
            key: match spec.get("key").and_then(Value::as_str) {
                Some("ip") => RateKey::Ip,
                Some("connection") => RateKey::Connection,
                _ => RateKey::Token,
            },
            shared: scope.and_then(|s| s.get("counter")).and_then(Value::as_str) != Some("element"),
            ops: traffic.contains(&"ops"),
            messages: traffic.contains(&"messages"),
            response: LimitResponse::of(spec.get("response")),
        }
    }

    pub fn counts(&self, traffic: Traffic) -> bool {
        match traffic {
            Traffic::Ops => self.ops,
            Traffic::Messages => self.messages,
        }
    }
}
