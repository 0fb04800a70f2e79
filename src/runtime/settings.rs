//! A websocket element's spec as the runtime reads it. Defaults come from
//! the type's schema (`check_spec` fills them), so nothing here repeats
//! them.

use super::jwt::{check_pem, JwtSpec};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::types::ElementType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WsSpec {
    pub path: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Sent by the driven link; values may hold `{{ vars.slug }}`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub auth: AuthSpec,
    pub connection: ConnSpec,
    pub heartbeat: HeartbeatSpec,
    pub rooms: RoomsSpec,
    pub on_message: OnMessage,
    #[serde(default)]
    pub history: HistorySpec,
    #[serde(default)]
    pub hooks: Option<HooksSpec>,
}

/// `hooks`: the application's backend (SPEC 10.2).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HooksSpec {
    pub url: String,
    pub secret: String,
    #[serde(default)]
    pub connect: bool,
    #[serde(default = "hook_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "hook_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "hook_queue")]
    pub queue_per_connection: usize,
}

fn hook_timeout() -> u64 {
    3000
}

fn hook_in_flight() -> usize {
    256
}

fn hook_queue() -> usize {
    32
}

/// `history`: how many messages each room keeps, and for how long (0:
/// off). Defaults here, not in the schema, so specs without it stay as
/// they were.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct HistorySpec {
    #[serde(default)]
    pub size: usize,
    #[serde(default = "ttl_default")]
    pub ttl_s: u64,
}

impl Default for HistorySpec {
    fn default() -> Self {
        HistorySpec {
            size: 0,
            ttl_s: ttl_default(),
        }
    }
}

fn ttl_default() -> u64 {
    300
}

impl HistorySpec {
    pub fn on(&self) -> bool {
        self.size > 0
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AuthSpec {
    pub mode: AuthMode,
    pub query_param: String,
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Token,
    Jwt,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConnSpec {
    pub max_connections: usize,
    pub max_message_bytes: usize,
    /// 0 turns the idle timeout off.
    pub idle_timeout_ms: u64,
    pub send_queue: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HeartbeatSpec {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RoomsSpec {
    pub enabled: bool,
    pub max_rooms_per_connection: usize,
    #[serde(default)]
    pub presence_events: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnMessage {
    Emit,
    Echo,
    Broadcast,
    Room,
    Hook,
}

impl WsSpec {
    /// Fills defaults, validates against the type and reads the spec. A
    /// limit stored before the schema had its maximum is read as that
    /// maximum (writes past it are refused), so the element stays served.
    pub fn parse(ty: &ElementType, spec: &Value) -> Result<WsSpec> {
        let mut spec = spec.clone();
        clamp_to_maxima(&ty.def.properties, &mut spec);
        let checked = ty.check_spec(spec)?;
        let spec: WsSpec = serde_json::from_value(checked.spec).map_err(|e| {
            Error::unprocessable(ErrorCode::SpecInvalid, format!("websocket spec: {e}"))
        })?;
        spec.check_auth()?;
        if spec.on_message == OnMessage::Hook && spec.hooks.is_none() {
            return Err(Error::unprocessable(
                ErrorCode::SpecInvalid,
                "on_message hook needs hooks (url and secret)",
            ));
        }
        Ok(spec)
    }

    /// `mode: jwt` needs `auth.jwt` with exactly one key that fits every
    /// listed algorithm.
    fn check_auth(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::unprocessable(ErrorCode::SpecInvalid, m.to_string()));
        let Some(j) = &self.auth.jwt else {
            return match self.auth.mode {
                AuthMode::Jwt => bad("auth.mode jwt needs auth.jwt (algorithms and a key)"),
                _ => Ok(()),
            };
        };
        let keys = [
            j.secret.is_some(),
            j.public_key.is_some(),
            j.jwks_url.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() != 1 {
            return bad("auth.jwt needs exactly one of secret, public_key or jwks_url");
        }
        let hmac = j.algorithms.iter().filter(|a| a.starts_with("HS")).count();
        if j.secret.is_some() && hmac != j.algorithms.len() {
            return bad("auth.jwt.secret is an HMAC key: list only HS256, HS384 or HS512");
        }
        if j.secret.is_none() && hmac > 0 {
            return bad(
                "auth.jwt: HS algorithms need secret; public_key and jwks_url take RS, ES or EdDSA",
            );
        }
        if let Some(pem) = &j.public_key {
            check_pem(pem, &j.algorithms).or_else(|e| bad(&e))?;
        }
        Ok(())
    }

    /// Driven mode: the element keeps an outbound link instead of exposing
    /// a path.
    pub fn is_driven(&self) -> bool {
        self.url.is_some()
    }
}

/// Lowers the integers of `connection` and `heartbeat` that are over
/// their schema maximum to it.
fn clamp_to_maxima(schema: &Value, spec: &mut Value) {
    for group in ["connection", "heartbeat"] {
        let Some(Value::Object(fields)) = spec.get_mut(group) else {
            continue;
        };
        for (k, v) in fields.iter_mut() {
            let max = schema
                .pointer(&format!("/properties/{group}/properties/{k}/maximum"))
                .and_then(Value::as_u64);
            if let (Some(max), Some(n)) = (max, v.as_u64()) {
                if n > max {
                    *v = Value::from(max);
                }
            }
        }
    }
}
