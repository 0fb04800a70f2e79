//! What a message does in its hub: a client's (room control, the
//! event, then `on_message`) and one that `receive` hands in.

use super::history::joined_frame;
use super::{Audience, Hub};
use crate::error::Result;
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::Json;
use crate::runtime::conn::{Conn, SendOutcome};
use crate::runtime::errors;
use crate::runtime::frame::{Frame, Preview, Text};
use crate::runtime::inputs::check_room;
use crate::runtime::position::{check_position, Position};
use crate::runtime::settings::{AuthMode, OnMessage};
use crate::runtime::shared_history::Stored;
use crate::runtime::socket::Inbound;
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

impl Inbound for Hub {
    async fn message(&self, conn: &Conn, msg: Frame) {
        self.client_message(conn, msg, None).await
    }
}

impl Hub {
    /// A client's text or binary message: room control frames, the event,
    /// then what `on_message` asks for.
    /// A message from `conn`, or entering as if `conn` sent it (`receive`,
    /// whose caller is then the event's actor: never the client's own).
    pub async fn client_message(&self, conn: &Conn, msg: Frame, actor: Option<&Json>) {
        let spec = self.spec();
        let ctl = match &msg {
            Frame::Text(t) if spec.rooms.enabled || conn.user.is_some() => Control::parse(t),
            _ => None,
        };
        let handled = match ctl {
            Some(Control {
                token: Some(token), ..
            }) if spec.auth.mode == AuthMode::Jwt => Some((self.refresh(conn, &token).await, None)),
            Some(Control {
                op,
                room: Some(room),
                ..
            }) if op == "presence" && spec.rooms.enabled => {
                Some((vec![self.presence_answer(conn, &room).await], None))
            }
            Some(Control {
                op,
                room: Some(room),
                since,
                ..
            }) if spec.rooms.enabled => {
                let max = spec.rooms.max_rooms_per_connection;
                let read = match op.as_str() {
                    "join" if check_room(&room).is_ok() && conn.may_join(&room) => {
                        self.prefetch(&room, since.as_ref()).await
                    }
                    _ => None,
                };
                let (reply, joined) = self.control(conn, &op, room, since, max, read);
                Some((reply.into_iter().collect::<Vec<_>>(), joined))
            }
            _ => None,
        };
        if let Some((replies, joined)) = handled {
            for reply in &replies {
                if let SendOutcome::Overflow = conn.try_send(Frame::text(reply.to_string())) {
                    self.metrics.slow_client_count.inc();
                }
            }
            // A join is told to the room after the joiner has its answer.
            if let Some(room) = joined {
                self.user_moved(conn, &room, true);
            }
            return;
        }
        if let Some(Err(r)) = conn.gate.as_ref().map(|g| g.check(&conn.id)) {
            // Over an attached rate limit: the message is dropped and the
            // client told why, in the limit's own words; the connection stays.
            let code = r.code.as_deref().unwrap_or(ErrorCode::RateLimited.as_str());
            let reply = json!({"error": {
                "code": code, "class": "limit", "retryable": true,
                "message": format!("{}; this message was dropped", r.message),
                "retry_after_ms": r.wait.as_millis() as u64,
            }});
            if let SendOutcome::Overflow = conn.try_send(Frame::text(reply.to_string())) {
                self.metrics.slow_client_count.inc();
            }
            return;
        }
        conn.msgs_in.fetch_add(1, Ordering::Relaxed);
        self.metrics.message_received_count.inc();
        // Written as text: with hooks or webhooks on messages, or someone
        // watching, every message makes one.
        let received = |delivered_to: Option<usize>| {
            let data = ReceivedData {
                preview: msg.preview(),
                connection_id: &conn.id,
                on_message: spec.on_message,
                delivered_to,
                env: self.env.as_str(),
            };
            let actor = actor.cloned().unwrap_or_else(|| conn.actor_json());
            self.event_text(EventKind::WsMessageReceived, actor, &data)
        };
        match spec.on_message {
            OnMessage::Emit => self.emit_message_with(false, || received(None)).await,
            OnMessage::Hook => {
                self.emit_message_with(false, || received(None)).await;
                self.to_hook(conn, msg);
            }
            OnMessage::Echo => {
                self.emit_message_with(false, || received(None)).await;
                let size = msg.len();
                match conn.try_send(msg) {
                    SendOutcome::Queued => {
                        self.metrics.message_sent_count.inc();
                        self.emit_message_with(true, || {
                            let data = SentData {
                                connection_id: &conn.id,
                                bytes: size,
                                reason: "echo",
                                env: self.env.as_str(),
                            };
                            let system = crate::model::Actor::system_json();
                            self.event_text(EventKind::WsMessageSent, system, &data)
                        })
                        .await;
                    }
                    SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                    SendOutcome::Gone => {}
                }
            }
            OnMessage::Broadcast | OnMessage::Room => {
                let audience = if spec.on_message == OnMessage::Broadcast {
                    Audience::AllExcept(conn)
                } else {
                    Audience::RoomsOf(conn)
                };
                let d = self.publish(&msg, audience);
                // Other nodes' connections get it too; delivered_to counts
                // this node's.
                let rooms = (spec.on_message == OnMessage::Room).then(|| conn.rooms());
                // A shared history delivers on every node itself.
                if !self.history_shared() && rooms.as_ref().is_none_or(|r| !r.is_empty()) {
                    self.peers.broker.relay(&self.key, &msg, rooms);
                }
                self.emit_message_with(false, || received(Some(d.delivered_to)))
                    .await;
            }
        }
    }

    /// `receive`: an external message enters as if a client sent it; with
    /// `connection_id`, as that client.
    pub async fn receive(
        &self,
        msg: Frame,
        from: Option<&str>,
        room: Option<&str>,
        actor: Json,
    ) -> Result<Value> {
        if let Some(id) = from {
            let c = self
                .find(id)
                .ok_or_else(|| errors::connection_not_found(id))?;
            self.client_message(&c, msg, Some(&actor)).await;
            return Ok(json!({"received": true, "connection_id": id}));
        }
        self.metrics.message_received_count.inc();
        let spec = self.spec();
        let mut data = msg.event_data();
        data["source"] = json!("receive");
        data["on_message"] = json!(spec.on_message);
        let d = match (spec.on_message, room) {
            (OnMessage::Broadcast, _) => {
                if !self.history_shared() {
                    self.peers.broker.relay(&self.key, &msg, None);
                }
                Some(self.publish_placed(&msg, Audience::All).await?)
            }
            (OnMessage::Room, Some(r)) => {
                if !self.history_shared() {
                    let rooms = Some(vec![r.to_string()]);
                    self.peers.broker.relay(&self.key, &msg, rooms);
                }
                Some(self.publish_placed(&msg, Audience::Room(r)).await?)
            }
            _ => None,
        };
        if let Some(d) = d {
            data["delivered_to"] = json!(d.delivered_to);
        }
        let e = self.event_by(EventKind::WsMessageReceived, actor, data);
        self.emit_message(e).await;
        Ok(json!({"received": true, "delivered_to": d.map_or(0, |d| d.delivered_to)}))
    }

    /// A join or leave: the answer to send (None: already queued), and
    /// the room when newly joined.
    fn control(
        &self,
        conn: &Conn,
        op: &str,
        room: String,
        since: Option<Position>,
        max_rooms: usize,
        read: Option<Stored>,
    ) -> (Option<Value>, Option<String>) {
        let refused = |code: ErrorCode, message: String| {
            let v = json!({"op": "error", "code": code, "room": room, "message": message});
            (Some(v), None)
        };
        if let Err(e) = check_room(&room) {
            return refused(e.code, e.message);
        }
        if op == "leave" {
            return (Some(self.leave(conn, &room)), None);
        }
        if since.is_some() && !self.spec().history.on() {
            let why = "this element keeps no history (history.size is 0): join without since";
            return refused(ErrorCode::InvalidRecover, why.into());
        }
        if let Some(Err(e)) = since.as_ref().map(check_position) {
            return refused(e.code, e.message);
        }
        if !conn.may_join(&room) {
            let why = "your token's rooms claim does not include this room";
            return refused(ErrorCode::RoomForbidden, why.into());
        }
        let new = {
            let mut mine = lock(&conn.rooms);
            if !mine.contains(&room) && mine.len() >= max_rooms {
                let why = format!("at most {max_rooms} rooms per connection");
                return refused(ErrorCode::TooManyRooms, why);
            }
            mine.insert(room.clone())
        };
        // With history, the replay, membership and answer happen under the
        // streams lock: what is published next comes after them.
        let reply = self.with_streams(|st| {
            let r = st.map(|st| self.recover(st, conn, &room, since.as_ref(), read.as_ref()));
            lock(&self.rooms)
                .entry(room.clone())
                .or_default()
                .insert(conn.id.clone());
            match r {
                Some(r) => {
                    let ack = joined_frame(&room, conn.rooms(), &r, since.is_some());
                    if let SendOutcome::Overflow = conn.try_send(Frame::text(ack.to_string())) {
                        self.metrics.slow_client_count.inc();
                    }
                    None
                }
                None => Some(json!({"op": "joined", "room": room, "rooms": conn.rooms()})),
            }
        });
        self.changes.note();
        self.peers.presence.rooms(&conn.id, conn.rooms());
        (reply, new.then_some(room))
    }

    /// `{"op":"presence","room"}` from a member of the room: who is there,
    /// on every node (what the `presence` op answers).
    async fn presence_answer(&self, conn: &Conn, room: &str) -> Value {
        if !lock(&conn.rooms).contains(room) {
            return json!({"op": "error", "code": ErrorCode::RoomForbidden, "room": room,
                "message": "join the room to see who is in it"});
        }
        match self.presence(Some(room)).await {
            Ok(p) => {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["op"] = json!("presence");
                v
            }
            Err(e) => json!({"op": "error", "code": e.code, "room": room,
                "message": e.message, "retryable": e.retryable}),
        }
    }

    /// Takes `conn` out of `room`; answers the `left` frame.
    pub(super) fn leave(&self, conn: &Conn, room: &str) -> Value {
        let was = lock(&conn.rooms).remove(room);
        {
            let mut index = lock(&self.rooms);
            if let Some(set) = index.get_mut(room) {
                set.remove(&conn.id);
                if set.is_empty() {
                    index.remove(room);
                }
            }
        }
        self.changes.note();
        self.peers.presence.rooms(&conn.id, conn.rooms());
        if was {
            self.user_moved(conn, room, false);
        }
        json!({"op": "left", "room": room, "rooms": conn.rooms()})
    }
}

/// A refresh frame carries a token of up to 8 KiB.
const MAX_CONTROL: usize = 1024;
const MAX_REFRESH: usize = 9 * 1024;

/// `{"op":"join","room":"x"}` (with `"since":{"epoch","offset"}` to
/// recover), `{"op":"leave","room":"x"}` or `{"op":"refresh","token":"…"}`
/// from a client.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    op: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    since: Option<Position>,
}

impl Control {
    fn parse(t: &Text) -> Option<Control> {
        let s = t.as_str();
        if s.len() > MAX_REFRESH || !s.trim_start().starts_with('{') || !s.contains("\"op\"") {
            return None;
        }
        let c = serde_json::from_str::<Control>(s).ok()?;
        let fits = match c.op.as_str() {
            "join" => c.room.is_some() && c.token.is_none() && s.len() <= MAX_CONTROL,
            "leave" | "presence" => {
                c.room.is_some() && c.token.is_none() && c.since.is_none() && s.len() <= MAX_CONTROL
            }
            "refresh" => c.token.is_some() && c.room.is_none() && c.since.is_none(),
            _ => false,
        };
        fits.then_some(c)
    }
}

/// `ws.message.received`'s data: the message's preview, then who sent it
/// and what became of it.
#[derive(Serialize)]
struct ReceivedData<'a> {
    #[serde(flatten)]
    preview: Preview<'a>,
    connection_id: &'a str,
    on_message: OnMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_to: Option<usize>,
    env: &'static str,
}

/// `ws.message.sent`'s data for an echo.
#[derive(Serialize)]
struct SentData<'a> {
    connection_id: &'a str,
    bytes: usize,
    reason: &'static str,
    env: &'static str,
}
