//! The application's backend as elementd asks it (SPEC 10.2): the
//! connect hook admits, refuses or names a client; the message hook
//! answers each client message. Each request is a POST of JSON signed the
//! Standard Webhooks way (`sign.rs`), to `hooks.url` through the outbound
//! policy, within `timeout_ms`, its answer read up to [`ANSWER_MAX`], and
//! at most `max_in_flight` at once per element. What the answers mean is
//! read here; the hub acts on them (`hub/backend.rs`).

use super::settings::HooksSpec;
use super::sign::SigningKey;
use crate::sync::lock;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// At most this much of a backend's answer is read.
pub const ANSWER_MAX: usize = 1 << 20;
/// An `info` the backend sets is held to the JWT claim's bound.
const INFO_MAX: usize = 1024;
const REASON_MAX: usize = 256;

/// One hub's link to its backend, made again when `hooks` changes.
pub struct Hooks {
    pub spec: HooksSpec,
    pub permits: Arc<Semaphore>,
    /// The filled url (with what errors name instead when a variable
    /// filled it) and the signing key, read from the variables once
    /// (forgotten when one of them changes).
    #[allow(clippy::type_complexity)]
    pub target: Mutex<Option<(String, Option<String>, SigningKey)>>,
}

impl Hooks {
    pub fn new(spec: &HooksSpec) -> Hooks {
        Hooks {
            spec: spec.clone(),
            permits: Arc::new(Semaphore::new(spec.max_in_flight)),
            target: Mutex::new(None),
        }
    }

    /// The variables its url and secret name.
    pub fn slugs(&self) -> Vec<String> {
        let mut s = crate::vars::refs(&self.spec.url);
        s.extend(crate::vars::refs(&self.spec.secret));
        s
    }

    pub fn forget_key(&self) {
        *lock(&self.target) = None;
    }
}

/// Why a hook call failed: the `why` of `ws.hook.failed`, and words for
/// the client (never a secret, nor a url filled from a variable).
#[derive(Debug)]
pub struct Failure {
    pub why: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(why: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            why,
            message: message.into(),
        }
    }

    /// What the client may be told: an unreachable backend or a broken
    /// configuration is named by kind only (its address, or a variable's
    /// name, is the element owner's business: events and logs say it).
    pub fn public(&self) -> String {
        match self.why {
            "connect" => "the backend cannot be reached".into(),
            "config" => "the hooks are not configured correctly".into(),
            _ => self.message.clone(),
        }
    }
}

fn garbage(m: impl Into<String>) -> Failure {
    Failure::new("body", m)
}

/// The connect hook's verdict.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Allow {
        user: Option<String>,
        rooms: Option<Vec<String>>,
        info: Option<Value>,
    },
    Refuse {
        status: u16,
        code: String,
        reason: Option<String>,
    },
}

fn object(status: u16, body: &[u8]) -> Result<Map<String, Value>, Failure> {
    if status != 200 {
        return Err(Failure::new(
            "status",
            format!("the backend answered HTTP {status}"),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(garbage("the backend's answer is not a JSON object")),
        Err(_) => Err(garbage("the backend's answer is not JSON")),
    }
}

/// A user the backend names: 1-256 characters, no control characters.
fn user_of(v: &Value) -> Result<String, Failure> {
    match v.as_str() {
        Some(u)
            if !u.is_empty() && u.chars().count() <= 256 && !u.chars().any(char::is_control) =>
        {
            Ok(u.to_string())
        }
        _ => Err(garbage("user must be a string of 1-256 characters")),
    }
}

/// Reads a connect hook's answer.
pub fn verdict(status: u16, body: &[u8]) -> Result<Verdict, Failure> {
    let m = object(status, body)?;
    match m.get("allow") {
        Some(Value::Bool(true)) => {
            let user = m.get("user").map(user_of).transpose()?;
            let rooms = match m.get("rooms") {
                None => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .map(|r| r.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| garbage("rooms must be an array of strings"))?,
                ),
                Some(_) => return Err(garbage("rooms must be an array of strings")),
            };
            let info = match m.get("info") {
                None => None,
                Some(i @ Value::Object(_)) if i.to_string().len() <= INFO_MAX => Some(i.clone()),
                Some(_) => return Err(garbage("info must be an object of at most 1 KiB")),
            };
            Ok(Verdict::Allow { user, rooms, info })
        }
        Some(Value::Bool(false)) => {
            let status = match m.get("status").map(|s| s.as_u64()) {
                None => 403,
                Some(Some(s @ (401 | 403))) => s as u16,
                Some(_) => return Err(garbage("a refusal's status must be 401 or 403")),
            };
            let code = match m.get("code") {
                None => "WS_HOOK_REFUSED".to_string(),
                Some(Value::String(c)) if valid_code(c) => c.clone(),
                Some(_) => {
                    return Err(garbage(
                        "a refusal's code must match ^[A-Z][A-Z0-9_]{0,63}$",
                    ))
                }
            };
            let reason = match m.get("reason") {
                None => None,
                Some(Value::String(r)) if r.chars().count() <= REASON_MAX => Some(r.clone()),
                Some(_) => {
                    return Err(garbage(
                        "a refusal's reason must be a string of at most 256 characters",
                    ))
                }
            };
            Ok(Verdict::Refuse {
                status,
                code,
                reason,
            })
        }
        _ => Err(garbage("the answer needs allow: true or false")),
    }
}

fn valid_code(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || *x == b'_')
}

/// Who a message hook's `send` is for.
#[derive(Debug, PartialEq)]
pub enum To {
    User(String),
    Connection(String),
}

/// What a message hook asks for, done in this order.
#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    pub reply: Option<Value>,
    /// (message, room)
    pub broadcast: Option<(Value, Option<String>)>,
    pub send: Option<(To, Value)>,
    pub close: Option<(u16, String)>,
}

/// Reads a message hook's answer: 204 is nothing to do.
pub fn actions(status: u16, body: &[u8]) -> Result<Actions, Failure> {
    if status == 204 {
        return Ok(Actions::default());
    }
    let m = object(status, body)?;
    let mut a = Actions {
        reply: m.get("reply").cloned(),
        ..Actions::default()
    };
    if let Some(b) = m.get("broadcast") {
        let message = b
            .get("message")
            .cloned()
            .ok_or_else(|| garbage("broadcast needs message"))?;
        let room = match b.get("room") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(_) => return Err(garbage("broadcast.room must be a string")),
        };
        a.broadcast = Some((message, room));
    }
    if let Some(s) = m.get("send") {
        let message = s
            .get("message")
            .cloned()
            .ok_or_else(|| garbage("send needs message"))?;
        let to = match (s.get("user"), s.get("connection_id")) {
            (Some(u), None) => To::User(user_of(u)?),
            (None, Some(Value::String(c))) if !c.is_empty() && c.len() <= 128 => {
                To::Connection(c.clone())
            }
            _ => return Err(garbage("send needs one of user or connection_id")),
        };
        a.send = Some((to, message));
    }
    if let Some(c) = m.get("close") {
        let code = c.get("code").and_then(Value::as_u64).unwrap_or(1000);
        let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
        let code = u16::try_from(code).map_err(|_| garbage("close.code is out of range"))?;
        super::inputs::check_close(code, reason).map_err(|e| garbage(e.message))?;
        a.close = Some((code, reason.to_string()));
    }
    Ok(a)
}

/// A message as a hook's body carries it, and a hook's message as a frame.
pub fn frame_of(v: &Value) -> super::Frame {
    match v {
        Value::String(s) => super::Frame::text(s.clone()),
        other => super::Frame::text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: Value) -> Result<Verdict, Failure> {
        verdict(200, j.to_string().as_bytes())
    }

    #[test]
    fn connect_answers_are_read_or_refused_as_garbage() {
        assert_eq!(
            v(json!({"allow": true})).unwrap(),
            Verdict::Allow {
                user: None,
                rooms: None,
                info: None
            }
        );
        assert_eq!(
            v(json!({"allow": true, "user": "u1", "rooms": ["a"], "info": {"n": 1}})).unwrap(),
            Verdict::Allow {
                user: Some("u1".into()),
                rooms: Some(vec!["a".into()]),
                info: Some(json!({"n": 1}))
            }
        );
        assert_eq!(
            v(json!({"allow": false, "status": 401, "code": "NOT_PAID", "reason": "pay"})).unwrap(),
            Verdict::Refuse {
                status: 401,
                code: "NOT_PAID".into(),
                reason: Some("pay".into())
            }
        );
        for bad in [
            json!({}),
            json!({"allow": "yes"}),
            json!({"allow": true, "user": ""}),
            json!({"allow": true, "user": "x".repeat(257)}),
            json!({"allow": true, "rooms": "a"}),
            json!({"allow": true, "info": {"x": "y".repeat(1100)}}),
            json!({"allow": false, "status": 500}),
            json!({"allow": false, "code": "lower"}),
            json!([1]),
        ] {
            assert_eq!(v(bad.clone()).unwrap_err().why, "body", "{bad}");
        }
        assert_eq!(verdict(200, b"not json").unwrap_err().why, "body");
        assert_eq!(verdict(500, b"{}").unwrap_err().why, "status");
    }

    #[test]
    fn message_answers_are_read_in_full() {
        assert_eq!(actions(204, b"").unwrap(), Actions::default());
        let a = actions(
            200,
            json!({"reply": "hi", "broadcast": {"message": {"a": 1}, "room": "r"},
                   "send": {"user": "u2", "message": "psst"}, "close": {"code": 4000, "reason": "bye"}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.reply, Some(json!("hi")));
        assert_eq!(a.broadcast, Some((json!({"a": 1}), Some("r".into()))));
        assert_eq!(a.send, Some((To::User("u2".into()), json!("psst"))));
        assert_eq!(a.close, Some((4000, "bye".into())));
        for bad in [
            json!({"broadcast": {}}),
            json!({"send": {"message": "x"}}),
            json!({"send": {"message": "x", "user": "a", "connection_id": "c"}}),
            json!({"close": {"code": 1006}}),
        ] {
            let body = bad.to_string();
            assert_eq!(
                actions(200, body.as_bytes()).unwrap_err().why,
                "body",
                "{bad}"
            );
        }
        assert_eq!(actions(502, b"").unwrap_err().why, "status");
    }
}
