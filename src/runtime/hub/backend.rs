//! The hub's side of the application's backend (SPEC 10.2): calls to
//! `hooks.url` (`runtime/hooks.rs` reads the answers), the connect hook at
//! upgrade, and the message hook: each connection's messages wait in a
//! bounded queue for one worker that sends them one at a time, in order.
//! The worker starts with the first message and ends after a quiet
//! `IDLE`, so idle connections hold no task.

use super::{Audience, Hub};
use crate::error::{Chosen, Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::runtime::broker::ConnAction;
use crate::runtime::conn::{CloseReq, Conn, SendOutcome};
use crate::runtime::frame::Frame;
use crate::runtime::hooks::{self, Actions, Failure, Hooks, To, Verdict};
use crate::runtime::hub::history::data_json;
use crate::runtime::sign::SigningKey;
use crate::sync::{lock, read, write};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// A message worker with nothing to do this long ends.
const IDLE: Duration = Duration::from_secs(30);

/// What the connect hook is told of a client.
pub struct Asking<'a> {
    pub connection_id: &'a str,
    pub user: Option<&'a str>,
    pub info: Option<&'a Value>,
    pub rooms: &'a [String],
    pub remote: &'a str,
    pub query: Value,
    pub user_agent: Option<&'a str>,
    pub origin: Option<&'a str>,
}

impl Hub {
    /// Makes the backend's link again when `hooks` changed.
    pub(super) fn rehook(&self) {
        let spec = self.spec();
        let mut slot = write(&self.hooks);
        if slot.as_ref().map(|h| &h.spec) == spec.hooks.as_ref() {
            return;
        }
        *slot = spec.hooks.as_ref().map(|h| Arc::new(Hooks::new(h)));
    }

    pub(super) fn hooks_use(&self, slug: &str) -> bool {
        read(&self.hooks)
            .as_ref()
            .is_some_and(|h| h.slugs().iter().any(|s| s == slug))
    }

    pub fn forget_hook_key(&self) {
        if let Some(h) = read(&self.hooks).as_ref() {
            h.forget_key();
        }
    }

    fn hooks(&self) -> Option<Arc<Hooks>> {
        read(&self.hooks).clone()
    }

    /// The url (filled; with what an error may name instead when a
    /// variable filled it) and the signing key, read once.
    async fn target(
        &self,
        h: &Hooks,
    ) -> std::result::Result<(String, Option<String>, SigningKey), Failure> {
        if let Some((url, shown, key)) = lock(&h.target).clone() {
            return Ok((url, shown, key));
        }
        let slugs = h.slugs();
        let values = self
            .links
            .resolve
            .values(&self.circle_id, self.env, slugs)
            .await
            .map_err(|e| {
                Failure::new(
                    "config",
                    format!("the hook's variables cannot be read: {e}"),
                )
            })?;
        let url = crate::vars::fill(&h.spec.url, &values);
        let shown = crate::vars::fills_secret(&h.spec.url, &values).then(|| h.spec.url.clone());
        let slug = crate::vars::refs(&h.spec.secret)
            .into_iter()
            .next()
            .unwrap_or_default();
        let secret = values.get(&slug).map(|v| v.text.as_str()).unwrap_or("");
        let key = SigningKey::parse(secret).map_err(|why| {
            Failure::new("config", format!("hooks.secret (variable '{slug}'): {why}"))
        })?;
        *lock(&h.target) = Some((url.clone(), shown.clone(), key.clone()));
        Ok((url, shown, key))
    }

    /// One signed request; `wait`: queue for a permit up to the timeout
    /// (a message), else none free is `busy` (a connect).
    async fn call(
        &self,
        h: &Hooks,
        body: Value,
        wait: bool,
    ) -> std::result::Result<(u16, Bytes), Failure> {
        let timeout = Duration::from_millis(h.spec.timeout_ms);
        let _permit = if wait {
            match tokio::time::timeout(timeout, h.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return Err(Failure::new("busy", "too many hook requests are in flight")),
            }
        } else {
            h.permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| Failure::new("busy", "too many hook requests are in flight"))?
        };
        let (url, shown, key) = self.target(h).await?;
        let body = Bytes::from(body.to_string());
        let id = format!("hk_{}", uuid::Uuid::now_v7().simple());
        let headers = key.headers(&id, &body);
        let answer = self
            .links
            .http
            .post(
                &url,
                shown.as_deref(),
                &headers,
                body,
                hooks::ANSWER_MAX,
                timeout,
            )
            .await
            .map_err(|e| {
                let why = if e.starts_with("no answer within") {
                    "timeout"
                } else {
                    "connect"
                };
                Failure::new(why, e)
            })?;
        if answer.truncated {
            return Err(Failure::new("body", "the backend's answer is over 1 MiB"));
        }
        Ok((answer.status, answer.body))
    }

    fn base(&self, kind: &str) -> Value {
        json!({"type": kind, "circle": self.circle, "element": self.slug, "env": self.env})
    }

    /// The connect hook (`hooks.connect`): the backend's verdict, or 503
    /// `WS_HOOK_BUSY` / `WS_HOOK_FAILED` when there is none to be had.
    pub async fn connect_hook(&self, a: Asking<'_>) -> Result<Option<Verdict>> {
        let Some(h) = self.hooks().filter(|h| h.spec.connect) else {
            return Ok(None);
        };
        let mut body = self.base("connect");
        body["connection_id"] = json!(a.connection_id);
        body["user"] = json!(a.user);
        body["info"] = json!(a.info);
        body["rooms"] = json!(a.rooms);
        body["remote_addr"] = json!(a.remote);
        body["query"] = a.query;
        body["headers"] = json!({"user-agent": a.user_agent, "origin": a.origin});
        let failed = |f: Failure| {
            if matches!(f.why, "connect" | "config") {
                tracing::warn!(hub = %self.key, why = f.why, detail = %f.message, "connect hook failed");
            }
            let (code, message) = match f.why {
                "busy" => (ErrorCode::WsHookBusy, f.public()),
                _ => (
                    ErrorCode::WsHookFailed,
                    format!("the connect hook failed: {}", f.public()),
                ),
            };
            Error::new(
                crate::error::Kind::Unavailable,
                crate::error::Class::Limit,
                code,
                message,
            )
            .retry_after(1)
        };
        // Boxed: inline, the HTTP call's state sat in every handshake's
        // future, hook or none.
        let (status, answer) = Box::pin(self.call(&h, body, false)).await.map_err(failed)?;
        hooks::verdict(status, &answer).map(Some).map_err(failed)
    }

    /// A refusal the backend chose, as the client gets it.
    pub fn refused_by_hook(status: u16, code: String, reason: Option<String>) -> Error {
        let message = reason.unwrap_or_else(|| "the application refused this connection".into());
        let e = if status == 401 {
            Error::unauthorized(message)
        } else {
            Error::forbidden(message)
        };
        let mut e = e.with_code(ErrorCode::WsHookRefused);
        e.chosen = Some(Box::new(Chosen {
            status: Some(status),
            code: Some(code),
            ..Chosen::default()
        }));
        e
    }

    /// `on_message: hook`: queues `msg` for the connection's worker; a
    /// full queue tells the client `WS_HOOK_BUSY` and drops it.
    pub(super) fn to_hook(&self, conn: &Conn, msg: Frame) {
        let Some(h) = self.hooks() else { return };
        let mut slot = lock(&conn.hook);
        let tx = match slot.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let Some(c) = self.find(&conn.id) else { return };
                let (tx, rx) = mpsc::channel(h.spec.queue_per_connection);
                *slot = Some(tx.clone());
                tokio::spawn(worker(self.me.clone(), c, rx));
                tx
            }
        };
        if tx.try_send(msg).is_err() {
            drop(slot);
            let busy = json!({"op": "error", "code": ErrorCode::WsHookBusy, "retryable": true,
                              "message": "too many messages are waiting for the application's backend"});
            if let SendOutcome::Overflow = conn.try_send(Frame::text(busy.to_string())) {
                self.metrics.slow_client_count.inc();
            }
        }
    }

    /// Hands one client message to the backend and does what it answers.
    async fn hand(&self, conn: &Conn, msg: &Frame) {
        let Some(h) = self.hooks() else { return };
        let mut body = self.base("message");
        body["connection_id"] = json!(conn.id);
        body["user"] = json!(conn.user);
        body["rooms"] = json!(conn.rooms());
        body["message"] = data_json(msg);
        let done = match self.call(&h, body, true).await {
            Ok((status, answer)) => hooks::actions(status, &answer),
            Err(f) => Err(f),
        };
        match done {
            Ok(a) => self.act(conn, a).await,
            Err(f) => self.hook_failed(conn, f).await,
        }
    }

    async fn hook_failed(&self, conn: &Conn, f: Failure) {
        let frame = json!({"op": "error", "code": ErrorCode::WsHookFailed, "retryable": true,
                           "message": format!("the application's backend failed: {}", f.public())});
        if let SendOutcome::Overflow = conn.try_send(Frame::text(frame.to_string())) {
            self.metrics.slow_client_count.inc();
        }
        let data = json!({"connection_id": conn.id, "why": f.why, "message": f.message});
        self.emit(self.event(EventKind::WsHookFailed, data)).await;
    }

    /// Does what a message hook answered: reply, broadcast, send, close.
    async fn act(&self, conn: &Conn, a: Actions) {
        if let Some(r) = a.reply {
            match conn.try_send(hooks::frame_of(&r)) {
                SendOutcome::Queued => self.metrics.message_sent_count.inc(),
                SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                SendOutcome::Gone => {}
            }
        }
        if let Some((message, room)) = a.broadcast {
            let msg = hooks::frame_of(&message);
            let audience = room.as_deref().map_or(Audience::All, Audience::Room);
            if !self.history_shared() {
                let rooms = room.clone().map(|r| vec![r]);
                self.peers.broker.relay(&self.key, &msg, rooms);
            }
            self.publish(&msg, audience);
        }
        if let Some((to, message)) = a.send {
            let msg = hooks::frame_of(&message);
            let text = match &msg {
                Frame::Text(t) => t.as_str().to_string(),
                _ => String::new(),
            };
            match to {
                To::User(u) => {
                    self.send_to_user(&u, &msg);
                    if self.peers.shared() {
                        let _ = self
                            .peers
                            .broker
                            .to_user(&self.key, &u, ConnAction::Send { text });
                    }
                }
                To::Connection(id) => {
                    if self.send_to(&id, msg).is_err() && self.peers.shared() {
                        if let Ok(Some(node)) = self.peers.presence.holder(&self.key, &id).await {
                            let action = ConnAction::Send { text };
                            let _ = self
                                .peers
                                .broker
                                .to_connection(&node, &self.key, &id, action);
                        }
                    }
                }
            }
        }
        if let Some((code, reason)) = a.close {
            conn.request_close(CloseReq::soft(code, &reason));
        }
    }
}

/// One connection's message worker: one request at a time, in order,
/// until the connection closes or nothing comes for `IDLE`.
async fn worker(hub: Weak<Hub>, conn: Arc<Conn>, mut rx: mpsc::Receiver<Frame>) {
    let closing = conn.closing.clone();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = closing.cancelled() => return,
            _ = tokio::time::sleep(IDLE) => {
                let mut slot = lock(&conn.hook);
                // Under the slot's lock nothing more arrives: end, and the
                // next message starts a new worker.
                if rx.is_empty() {
                    *slot = None;
                    return;
                }
                continue;
            }
        };
        let (Some(msg), Some(h)) = (msg, hub.upgrade()) else {
            return;
        };
        h.hand(&conn, &msg).await;
    }
}
