//! The demo's stand-in for an application's backend (served only with
//! `--demo`): the chat's hooks call `POST /demo/backend/hook`, the
//! `backend-events` webhook delivers to `POST /demo/backend/webhook`, and
//! the chat page shows what arrived from `GET /demo/backend/received`.
//! Both POSTs verify the Standard Webhooks signature with the key made
//! at load (`data/demo-backend.key`), as a real backend would.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::runtime::sign::SigningKey;
use crate::sync::lock;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the page's panel can show: the newest this many.
pub const KEPT: usize = 50;
/// Hook requests and deliveries are small; this is plenty.
const BODY_MAX: usize = 256 * 1024;
/// A request signed longer ago (or ahead) than this is refused.
const TOLERANCE_S: i64 = 300;
/// The word the demo's backend refuses, so a newcomer sees a refusal.
pub const BANNED: &str = "spoiler";
const SUMMARY_MAX: usize = 120;
const COLOURS: [&str; 6] = [
    "#c0392b", "#1f7a4d", "#2457c5", "#8e44ad", "#b9770e", "#117a8b",
];

struct Backend {
    /// None when the key file is unreadable: every POST is then a 500.
    key: Option<SigningKey>,
    within: Duration,
    received: Mutex<VecDeque<Value>>,
}

/// The backend's routes, with their own state.
pub fn routes<S: Clone + Send + Sync + 'static>(
    key_file: &std::path::Path,
    within: Duration,
) -> Router<S> {
    let key = match std::fs::read_to_string(key_file) {
        Ok(k) => SigningKey::parse(k.trim()).ok(),
        Err(e) => {
            tracing::warn!(file = %key_file.display(), error = %e, "the demo backend's key is unreadable");
            None
        }
    };
    let state = Arc::new(Backend {
        key,
        within,
        received: Mutex::new(VecDeque::with_capacity(KEPT)),
    });
    Router::new()
        .route("/demo/backend/hook", post(hook).fallback(only_post))
        .route("/demo/backend/webhook", post(webhook).fallback(only_post))
        .route("/demo/backend/received", get(received))
        .with_state(state)
}

/// The server's own fallback names GET, the other routes' method.
async fn only_post() -> Error {
    Error::method_not_allowed("POST", "this endpoint takes POST")
}

impl Backend {
    /// The body, once its signature verifies and is fresh.
    async fn verified(&self, headers: &HeaderMap, body: Body) -> Result<Value> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::internal("the demo backend has no key"))?;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let (id, ts, sig) = (
            text("webhook-id"),
            text("webhook-timestamp"),
            text("webhook-signature"),
        );
        let refused = || {
            Error::unauthorized(
                "a request to the backend needs webhook-id, webhook-timestamp and a webhook-signature \
                 made with the demo's key, signed within 5 minutes",
            )
        };
        let ts: i64 = ts.parse().map_err(|_| refused())?;
        let now = chrono::Utc::now().timestamp();
        if id.is_empty() || id.len() > 256 || (now - ts).abs() > TOLERANCE_S {
            return Err(refused());
        }
        let body = super::input::read_body(headers, body, BODY_MAX, self.within).await?;
        if !key.verify(id, ts, &body, sig) {
            return Err(refused());
        }
        serde_json::from_slice(&body)
            .map_err(|_| Error::bad_request(ErrorCode::InvalidBody, "the body is not JSON"))
    }

    fn keep(&self, via: &str, kind: &str, summary: String) {
        let mut summary = summary;
        if summary.chars().count() > SUMMARY_MAX {
            summary = summary.chars().take(SUMMARY_MAX).collect::<String>() + "…";
        }
        let entry = json!({"at": crate::model::rfc3339(crate::model::now_ms()), "via": via,
                           "type": kind, "summary": summary});
        let mut r = lock(&self.received);
        if r.len() == KEPT {
            r.pop_back();
        }
        r.push_front(entry);
    }
}

async fn hook(State(b): State<Arc<Backend>>, headers: HeaderMap, body: Body) -> Response {
    let ask = match b.verified(&headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let user = ask["user"].as_str().unwrap_or("someone").to_string();
    match ask["type"].as_str() {
        Some("connect") => {
            b.keep("hook", "connect", user.clone());
            Json(connect(&user)).into_response()
        }
        Some("message") => {
            let said = said(&ask["message"]);
            let room = ask["rooms"][0].as_str();
            let a = answer(&user, room, &said);
            let outcome = match (&a["reply"], room) {
                (r, _) if r["code"].is_string() => "refused".to_string(),
                (r, _) if r.is_object() => format!("answered to {user} alone"),
                (_, Some(room)) => format!("passed to {room}"),
                (_, None) => "passed to everyone".to_string(),
            };
            b.keep(
                "hook",
                "message",
                format!("{user}: {} → {outcome}", said.text),
            );
            Json(a).into_response()
        }
        _ => Error::bad_request(ErrorCode::InvalidBody, "type must be connect or message")
            .into_response(),
    }
}

async fn webhook(State(b): State<Arc<Backend>>, headers: HeaderMap, body: Body) -> Response {
    match b.verified(&headers, body).await {
        Ok(event) => {
            let kind = event["type"].as_str().unwrap_or("?");
            let d = &event["data"]["data"];
            let who = d["user"].as_str();
            let mut summary = who
                .or(event["data"]["actor"]["user"].as_str())
                .unwrap_or("someone")
                .to_string();
            if let Some(env) = d["env"].as_str() {
                summary += &format!(" on {env}");
            }
            if let Some(n) = d["bytes"].as_u64() {
                summary += &format!(", {n} bytes");
            }
            b.keep("webhook", kind, summary);
            axum::http::StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn received(State(b): State<Arc<Backend>>) -> Response {
    let list: Vec<Value> = lock(&b.received).iter().cloned().collect();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"received": list})),
    )
        .into_response()
}

/// A user's colour, the same on every connect.
fn colour(user: &str) -> &'static str {
    let h = user
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    COLOURS[h as usize % COLOURS.len()]
}

/// The connect hook: everyone is let in, with a colour.
fn connect(user: &str) -> Value {
    json!({"allow": true, "info": {"name": user, "color": colour(user)}})
}

/// What the page sent: `{"text","from"}` as JSON, or plain text.
struct Said {
    text: String,
    from: Value,
}

fn said(message: &Value) -> Said {
    let raw = message.as_str().unwrap_or("");
    match serde_json::from_str::<Value>(raw) {
        Ok(v) if v["text"].is_string() => Said {
            text: v["text"].as_str().unwrap_or("").to_string(),
            from: v["from"].clone(),
        },
        _ => Said {
            text: raw.to_string(),
            from: Value::Null,
        },
    }
}

/// The message hook: a banned word is refused, a command is answered to
/// the sender alone, anything else goes to the room under the sender's
/// verified name.
fn answer(user: &str, room: Option<&str>, said: &Said) -> Value {
    let text = said.text.trim();
    if text.to_lowercase().contains(BANNED) {
        return json!({"reply": {"op": "error", "code": "DEMO_WORD_REFUSED",
            "message": format!("the backend refuses messages with the word '{BANNED}'; nobody saw it")}});
    }
    if let Some(cmd) = text.strip_prefix('/') {
        let said = match cmd.split_whitespace().next().unwrap_or("") {
            "roll" => format!("you rolled {} (1-6)", rand::random_range(1..=6)),
            "time" => format!(
                "the backend's clock says {}",
                chrono::Utc::now().format("%H:%M:%S UTC")
            ),
            _ => "the backend knows /roll and /time".to_string(),
        };
        return json!({"reply": {"name": "backend", "text": said, "from": "backend"}});
    }
    let msg = json!({"name": user, "text": said.text, "from": said.from, "color": colour(user)});
    json!({"broadcast": {"message": msg, "room": room}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn says(text: &str) -> Said {
        said(&json!(json!({"text": text, "from": "p1"}).to_string()))
    }

    #[test]
    fn the_backend_refuses_answers_or_passes_on() {
        let refused = answer("ann", Some("lobby"), &says("no Spoiler please"));
        assert_eq!(refused["reply"]["code"], "DEMO_WORD_REFUSED");
        assert!(refused.get("broadcast").is_none());
        let roll = answer("ann", Some("lobby"), &says("/roll"));
        assert!(roll["reply"]["text"]
            .as_str()
            .unwrap()
            .starts_with("you rolled "));
        assert!(roll.get("broadcast").is_none());
        let on = answer("ann", Some("lobby"), &says("hello"));
        assert_eq!(on["broadcast"]["room"], "lobby");
        assert_eq!(on["broadcast"]["message"]["name"], "ann");
        assert_eq!(on["broadcast"]["message"]["from"], "p1");
        let plain = said(&json!("just text"));
        assert_eq!(plain.text, "just text");
        assert_eq!(connect("bea")["info"]["color"], colour("bea"));
    }
}
