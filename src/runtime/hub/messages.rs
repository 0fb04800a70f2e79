//! What a message does in its hub: a client's (room control, the
//! event, then `on_message`) and one that `receive` hands in.

use super::{Audience, Hub};
use crate::error::Result;
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::runtime::conn::{Conn, SendOutcome};
use crate::runtime::errors;
use crate::runtime::frame::{Frame, Text};
use crate::runtime::settings::{check_room, OnMessage};
use crate::runtime::socket::Inbound;
use crate::sync::lock;
use serde::Deserialize;
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
    pub async fn client_message(&self, conn: &Conn, msg: Frame, actor: Option<&Value>) {
        let spec = self.spec();
        if spec.rooms.enabled {
            if let Frame::Text(t) = &msg {
                if let Some(ctl) = Control::parse(t) {
                    let reply = self.control(conn, ctl, spec.rooms.max_rooms_per_connection);
                    if let SendOutcome::Overflow = conn.try_send(Frame::text(reply.to_string())) {
                        self.metrics.slow_client_count.inc();
                    }
                    return;
                }
            }
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
        let received = |delivered_to: Option<usize>| {
            let mut data = msg.event_data();
            data["connection_id"] = json!(conn.id);
            data["on_message"] = json!(spec.on_message);
            if let Some(d) = delivered_to {
                data["delivered_to"] = json!(d);
            }
            let mut e = self.event(EventKind::WsMessageReceived, data);
            e.actor = actor.cloned().unwrap_or_else(|| conn.actor_json());
            e
        };
        match spec.on_message {
            OnMessage::Emit => self.emit_message_with(false, || received(None)).await,
            OnMessage::Echo => {
                self.emit_message_with(false, || received(None)).await;
                let size = msg.len();
                match conn.try_send(msg) {
                    SendOutcome::Queued => {
                        self.metrics.message_sent_count.inc();
                        self.emit_message_with(true, || {
                            self.event(
                                EventKind::WsMessageSent,
                                json!({"connection_id": conn.id, "bytes": size, "reason": "echo"}),
                            )
                        })
                        .await;
                    }
                    SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                    SendOutcome::Gone => {}
                }
            }
            OnMessage::Broadcast | OnMessage::Room => {
                let audience = if spec.on_message == OnMessage::Broadcast {
                    Audience::AllExcept(&conn.id)
                } else {
                    Audience::RoomsOf(conn)
                };
                let d = self.deliver(&msg, audience);
                // Other nodes' connections get it too; delivered_to counts
                // this node's.
                let rooms = (spec.on_message == OnMessage::Room).then(|| conn.rooms());
                if rooms.as_ref().is_none_or(|r| !r.is_empty()) {
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
        actor: Value,
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
                self.peers.broker.relay(&self.key, &msg, None);
                Some(self.deliver(&msg, Audience::All))
            }
            (OnMessage::Room, Some(r)) => {
                self.peers
                    .broker
                    .relay(&self.key, &msg, Some(vec![r.to_string()]));
                Some(self.deliver(&msg, Audience::Room(r)))
            }
            _ => None,
        };
        if let Some(d) = d {
            data["delivered_to"] = json!(d.delivered_to);
        }
        let mut e = self.event(EventKind::WsMessageReceived, data);
        e.actor = actor;
        self.emit_message(e).await;
        Ok(json!({"received": true, "delivered_to": d.map_or(0, |d| d.delivered_to)}))
    }

    fn control(&self, conn: &Conn, ctl: Control, max_rooms: usize) -> Value {
        if let Err(e) = check_room(&ctl.room) {
            return json!({"op": "error", "code": e.code, "message": e.message});
        }
        let joined = ctl.op == "join";
        {
            let mut mine = lock(&conn.rooms);
            if joined && !mine.contains(&ctl.room) && mine.len() >= max_rooms {
                return json!({"op": "error", "code": ErrorCode::TooManyRooms,
                    "message": format!("at most {max_rooms} rooms per connection")});
            }
            if joined {
                mine.insert(ctl.room.clone());
            } else {
                mine.remove(&ctl.room);
            }
        }
        let mut index = lock(&self.rooms);
        if joined {
            index
                .entry(ctl.room.clone())
                .or_default()
                .insert(conn.id.clone());
        } else if let Some(set) = index.get_mut(&ctl.room) {
            set.remove(&conn.id);
            if set.is_empty() {
                index.remove(&ctl.room);
            }
        }
        drop(index);
        self.peers.presence.rooms(&conn.id, conn.rooms());
        json!({"op": if joined { "joined" } else { "left" }, "room": ctl.room, "rooms": conn.rooms()})
    }
}

/// `{"op":"join","room":"x"}` or `{"op":"leave","room":"x"}` from a client.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    op: String,
    room: String,
}

impl Control {
    fn parse(t: &Text) -> Option<Control> {
        let s = t.as_str();
        if s.len() > 1024 || !s.trim_start().starts_with('{') || !s.contains("\"op\"") {
            return None;
        }
        serde_json::from_str::<Control>(s)
            .ok()
            .filter(|c| c.op == "join" || c.op == "leave")
    }
}
