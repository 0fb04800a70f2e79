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
    check_close, check_room, data_json, errors, Delivery, Frame, Hub, HubKey, WsSpec, LINK_ID,
};
use crate::service::ctx::OpCtx;
use crate::service::App;
use crate::types::Capability;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

/// What `send` did: where the message went, and its size.
pub struct Sent {
    /// The connection (or the driven link); None when sent to a user.
    pub connection_id: Option<String>,
    /// How many of the user's connections took it (sent to a user).
    pub delivered_to: Option<usize>,
    pub bytes: usize,
}

/// Who `send` and `close` address: one connection, or every connection
/// of a user.
pub enum Target {
    Connection(Option<String>),
    User(String),
}

impl Target {
    /// From an op's body: `connection_id` or `user`, not both.
    pub fn of(connection_id: Option<String>, user: Option<String>) -> Result<Target> {
        match (connection_id, user) {
            (Some(_), Some(_)) => Err(Error::bad_request(
                ErrorCode::InvalidBody,
                "give connection_id or user, not both",
            )),
            (c, None) => Ok(Target::Connection(c)),
            (None, Some(u)) => {
                check_user(&u)?;
                Ok(Target::User(u))
            }
        }
    }
}

/// A user id: 1-256 characters, as a token's `sub` is.
pub fn check_user(user: &str) -> Result<()> {
    let n = user.chars().count();
    if n == 0 || n > 256 || user.chars().any(char::is_control) {
        return Err(Error::bad_request(
            ErrorCode::InvalidUser,
            "a user is 1-256 characters with no control characters",
        ));
    }
    Ok(())
}

/// What `history` answers, written straight out.
#[derive(serde::Serialize)]
pub struct HistoryAnswer {
    room: String,
    epoch: Option<String>,
    offset: u64,
    messages: Vec<Kept>,
    env: Env,
}

#[derive(serde::Serialize)]
struct Kept {
    offset: u64,
    data: Data,
    published_at: crate::model::Rfc3339,
}

/// A kept message as `data`: text as a string, binary as
/// `{"base64": …}` (as `data_json` shows it).
struct Data(Frame);

impl serde::Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.0 {
            Frame::Text(t) => s.serialize_str(t.as_str()),
            other => data_json(other).serialize(s),
        }
    }
}

/// An element's live websocket hubs, driven and checked from the API.
pub struct Realtime<'a> {
    app: &'a App,
}

impl App {
    pub fn realtime(&self) -> Realtime<'_> {
        Realtime { app: self }
    }
}

impl App {
    /// After a committed change of `el` or its releases: this node's
    /// runtime starts, moves, reconfigures or stops its hubs (one per
    /// environment), and the other nodes reload it.
    pub(in crate::service) async fn realtime_changed(&self, el: &Element) {
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
    pub(in crate::service) fn is_light_change(&self, before: &Element, after: &Element) -> bool {
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
    pub(in crate::service) fn realtime_spec_changed(&self, el: &Element) {
        self.db.remember_element(el);
        self.runtime.apply(el, &[]);
        self.runtime.broker().element_changed(&el.id);
    }
}

impl<'a> Realtime<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }

    /// `send`: to one client connection on any node, to the driven link
    /// (no `to`, or `"link"`), or to every connection of a user.
    pub async fn send(
        &self,
        ctx: &OpCtx,
        el: &Element,
        env: Env,
        to: Target,
        message: Option<Value>,
    ) -> Result<Sent> {
        let hub = self.env_hub(el, env)?;
        let text = message_text(message, &hub.spec())?;
        let bytes = text.len();
        let to = match to {
            Target::Connection(c) => c,
            Target::User(user) => {
                let n = self.app.runtime.send_to_user(&hub, &user, text).await?;
                let e = ctx.event(
                    el,
                    EventKind::WsMessageSent,
                    json!({"user": user, "delivered_to": n, "bytes": bytes, "kind": "text"}),
                );
                hub.emit_message(with_env(e, env)).await;
                return Ok(Sent {
                    connection_id: None,
                    delivered_to: Some(n),
                    bytes,
                });
            }
        };
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
                self.app.runtime.send_to(&hub, &id, text).await?;
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
            connection_id: Some(target),
            delivered_to: None,
            bytes,
        })
    }

    /// `broadcast`: to every connection of the element on every node, or
    /// to the members of `room`. An empty audience is a success.
    pub async fn broadcast(
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
        let d = self.app.runtime.broadcast(&hub, text, room).await?;
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

    /// `close` one client connection, on whichever node holds it, or
    /// every connection of a user; answers how many.
    pub async fn close(
        &self,
        el: &Element,
        env: Env,
        target: &Target,
        code: u16,
        reason: &str,
    ) -> Result<usize> {
        check_close(code, reason)?;
        let hub = self.env_hub(el, env)?;
        let connection_id = match target {
            Target::User(user) => {
                return self.app.runtime.close_user(&hub, user, code, reason).await
            }
            Target::Connection(Some(c)) => c.as_str(),
            Target::Connection(None) => {
                return Err(Error::bad_request(
                    ErrorCode::MissingField,
                    "connection_id or user is required",
                ))
            }
        };
        if connection_id == LINK_ID && hub.link().is_some() {
            return Err(Error::conflict(
                ErrorCode::WsLinkManaged,
                "the driven link is kept open by the element; disable the element to close it",
            ));
        }
        self.app
            .runtime
            .close(&hub, connection_id, code, reason)
            .await?;
        Ok(1)
    }

    /// `connections` of the element on every node (optionally members of
    /// `room`, or of `user`); none when it is not live.
    pub async fn connections(
        &self,
        el: &Element,
        env: Env,
        room: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Value>> {
        if let Some(r) = room {
            check_room(r)?;
        }
        if let Some(u) = user {
            check_user(u)?;
        }
        let mut list = self
            .app
            .runtime
            .connections(&HubKey::new(&el.id, env), room, user)
            .await?;
        for c in &mut list {
            c["env"] = json!(env);
        }
        Ok(list)
    }

    /// `presence` of the element on every node: its users (of `room`, or
    /// all) with their connection counts and info.
    /// Written out as the REST op answers it.
    pub async fn presence(&self, el: &Element, env: Env, room: Option<&str>) -> Result<Bytes> {
        if let Some(r) = room {
            check_room(r)?;
        }
        let key = HubKey::new(&el.id, env);
        self.app.runtime.presence(&key, env, room).await
    }

    /// `history` of a room (no room: the messages to no room): what it
    /// keeps after `since`, at most `limit` (1-1000, default 100).
    pub async fn history(
        &self,
        el: &Element,
        env: Env,
        room: Option<&str>,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryAnswer> {
        if let Some(r) = room {
            check_room(r)?;
        }
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::bad_request(
                ErrorCode::InvalidLimit,
                format!("limit must be 1-1000, not {limit}"),
            ));
        }
        let hub = self.env_hub(el, env)?;
        let room = room.unwrap_or("");
        let page = hub.history(room, since, limit).await?.ok_or_else(|| {
            Error::conflict(
                ErrorCode::HistoryDisabled,
                format!(
                    "'{}' keeps no history in {} (history.size is 0)",
                    el.slug,
                    env.as_str()
                ),
            )
        })?;
        Ok(HistoryAnswer {
            room: room.to_string(),
            epoch: page.position.as_ref().map(|p| p.epoch.clone()),
            offset: page.position.as_ref().map_or(0, |p| p.offset),
            messages: (page.items.into_iter())
                .map(|(offset, data, at)| Kept {
                    offset,
                    data: Data(data),
                    published_at: crate::model::Rfc3339(at),
                })
                .collect(),
            env,
        })
    }

    /// `receive`: the message enters as if a client sent it (as the client
    /// `from`, on whichever node holds it); `actor` is the op's caller.
    pub async fn receive(
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
        let actor = crate::model::Json::text_of(&ctx.actor);
        self.app
            .runtime
            .receive(&hub, text, from, room, actor)
            .await
    }

    /// The element's running hub in `env`.
    pub fn env_hub(&self, el: &Element, env: Env) -> Result<Arc<Hub>> {
        self.app.runtime.hub_in(&el.id, env).ok_or_else(|| {
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
    e.data.insert("env", json!(env));
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
