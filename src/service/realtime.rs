//! Real-time fan-out: what the websocket ops ask of an
//! element's connections, wherever they are held. The runtime finds them:
//! this node's hub, or (through its broker) the node that holds them;
//! this module checks what is asked, picks the driven link when that is
//! the target, and records the events of the op.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::{Element, Env};
use crate::runtime::{
    check_close, check_room, errors, Delivery, Frame, Hub, HubKey, WsSpec, LINK_ID,
};
use crate::service::ctx::OpCtx;
use crate::service::App;
use crate::types::Capability;
use serde_json::{json, Value};
use std::sync::Arc;

/// What `send` did: where the message went, and its size.
pub struct Sent {
    pub connection_id: String,
    pub bytes: usize,
}

impl App {
    /// After a committed change of `el` or its releases: this node's
    /// runtime starts, moves, reconfigures or stops its hubs (one per
    /// environment), and the other nodes reload it.
    pub async fn realtime_changed(&self, el: &Element) {
        self.db.forget(el);
        if self.runtime.has_runtime(&el.element_type) {
            match self.db.deployments(&el.id).await {
                Ok(releases) => self.runtime.apply(el, &releases),
                Err(e) => {
                    tracing::error!(element = %el.id, error = %e, "releases not read; runtime not updated")
                }
            }
        } else {
            // A variable's links connect again.
            self.runtime.apply(el, &[]);
        }
        self.runtime.broker().element_changed(&el.id);
    }

    /// A change that moves nothing around the element: same place, name
    /// and state (ready), of a type that nothing attaches and that holds
    /// nothing below it. No attachment list, inherited modifier or release
    /// can differ after it.
    pub fn is_light_change(&self, before: &Element, after: &Element) -> bool {
        let kind = &after.element_type;
        before.element_type == *kind
            && before.slug == after.slug
            && before.circle_id == after.circle_id
            && before.parent_id == after.parent_id
            && before.state == crate::model::State::Ready
            && after.state == crate::model::State::Ready
            && !self.types.is_attachable(kind)
            && self
                .types
                .get(kind)
                .is_ok_and(|t| !t.has_capability(Capability::Contains))
    }

    /// [`App::realtime_changed`] for a light change: only the draft hub
    /// takes the new spec (demo and live run releases, which it did not
    /// touch), so the releases are not read again.
    pub fn realtime_spec_changed(&self, el: &Element) {
        self.db.remember_element(el);
        self.runtime.apply(el, &[]);
        self.runtime.broker().element_changed(&el.id);
    }

    /// `send`: to one client connection on any node, or to the driven
    /// link (no `to`, or `"link"`).
    pub async fn realtime_send(
        &self,
        ctx: &OpCtx,
        el: &Element,
        env: Env,
        to: Option<String>,
        message: Option<Value>,
    ) -> Result<Sent> {
        let hub = self.env_hub(el, env)?;
        let text = message_text(message, &hub.spec())?;
        let bytes = text.len();
        let target = match (to, hub.link()) {
            (None, Some(link)) => {
                link.send(Frame::text(text))?;
                LINK_ID.to_string()
            }
            (Some(id), Some(link)) if id == LINK_ID => {
                link.send(Frame::text(text))?;
                id
            }
            (None, None) => {
                return Err(Error::bad_request(
                    ErrorCode::MissingField,
                    "connection_id is required (this element has no driven link)",
                ))
            }
            (Some(id), _) => {
                self.runtime.send_to(&hub, &id, text).await?;
                id
            }
        };
        let e = ctx.event(
            el,
            EventKind::WsMessageSent,
            json!({"connection_id": target, "bytes": bytes, "kind": "text"}),
        );
        hub.emit_message(with_env(e, env)).await;
        Ok(Sent {
            connection_id: target,
            bytes,
        })
    }

    /// `broadcast`: to every connection of the element on every node, or
    /// to the members of `room`. An empty audience is a success.
    pub async fn realtime_broadcast(
        &self,
        ctx: &OpCtx,
        el: &Element,
        env: Env,
        message: Option<Value>,
        room: Option<&str>,
    ) -> Result<Delivery> {
        let hub = self.env_hub(el, env)?;
        let spec = hub.spec();
        let text = message_text(message, &spec)?;
        room_of(room, &spec)?;
        let bytes = text.len();
        let d = self.runtime.broadcast(&hub, text, room).await?;
        let data = json!({
            "broadcast": true,
            "delivered_to": d.delivered_to,
            "subscriber_count": d.subscriber_count,
            "room": room,
            "bytes": bytes,
        });
        hub.emit(with_env(
            ctx.event(el, EventKind::WsBroadcastCompleted, data),
            env,
        ))
        .await;
        Ok(d)
    }

    /// `close` one client connection, on whichever node holds it.
    pub async fn realtime_close(
        &self,
        el: &Element,
        env: Env,
        connection_id: &str,
        code: u16,
        reason: &str,
    ) -> Result<()> {
        check_close(code, reason)?;
        let hub = self.env_hub(el, env)?;
        if connection_id == LINK_ID && hub.link().is_some() {
            return Err(Error::conflict(
                ErrorCode::WsLinkManaged,
                "the driven link is kept open by the element; disable the element to close it",
            ));
        }
        self.runtime.close(&hub, connection_id, code, reason).await
    }

    /// `connections` of the element on every node (optionally members of
    /// `room`); none when it is not live.
    pub async fn realtime_connections(
        &self,
        el: &Element,
        env: Env,
        room: Option<&str>,
    ) -> Result<Vec<Value>> {
        if let Some(r) = room {
            check_room(r)?;
        }
        let mut list = self
            .runtime
            .connections(&HubKey::new(&el.id, env), room)
            .await?;
        for c in &mut list {
            c["env"] = json!(env);
        }
        Ok(list)
    }

    /// `receive`: the message enters as if a client sent it (as the client
    /// `from`, on whichever node holds it); `actor` is the op's caller.
    pub async fn realtime_receive(
        &self,
        ctx: &OpCtx,
        el: &Element,
        env: Env,
        message: Option<Value>,
        from: Option<&str>,
        room: Option<&str>,
    ) -> Result<Value> {
        let hub = self.env_hub(el, env)?;
        let spec = hub.spec();
        let text = message_text(message, &spec)?;
        room_of(room, &spec)?;
        let actor = serde_json::to_value(&ctx.actor)?;
        self.runtime.receive(&hub, text, from, room, actor).await
    }

    /// The element's running hub in `env`.
    pub fn env_hub(&self, el: &Element, env: Env) -> Result<Arc<Hub>> {
        self.runtime.hub_in(&el.id, env).ok_or_else(|| {
            Error::conflict(
                ErrorCode::WsNotLive,
                format!(
                    "'{}' runs nothing in {}; is it enabled?",
                    el.slug,
                    env.as_str()
                ),
            )
        })
    }
}

/// An op's event of an environment carries it.
fn with_env(mut e: crate::model::Event, env: Env) -> crate::model::Event {
    if let Value::Object(d) = &mut e.data {
        d.insert("env".into(), json!(env));
    }
    e
}

/// A string goes out as that text; any other JSON value as its JSON.
fn message_text(message: Option<Value>, spec: &WsSpec) -> Result<String> {
    let text = match message {
        None => {
            return Err(Error::bad_request(
                ErrorCode::MissingField,
                "message is required",
            ))
        }
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
    };
    let max = spec.connection.max_message_bytes;
    if text.len() > max {
        return Err(errors::message_too_large(text.len(), max));
    }
    Ok(text)
}

fn room_of(room: Option<&str>, spec: &WsSpec) -> Result<()> {
    if let Some(r) = room {
        if !spec.rooms.enabled {
            return Err(Error::bad_request(
                ErrorCode::RoomsDisabled,
                "this element has rooms.enabled false; omit room",
            ));
        }
        check_room(r)?;
    }
    Ok(())
}
