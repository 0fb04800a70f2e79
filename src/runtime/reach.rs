//! Reaching connections wherever they are held: this node's hub when it
//! holds them, else the node that does (presence says which, the broker
//! carries the ask). What REST ops ask of an element's connections goes
//! through here, so they never need to know whether other nodes exist.

use super::broker::ConnAction;
use super::errors;
use super::frame::Frame;
use super::hub::{presence_json, write_presence, Audience, Delivery, Hub};
use super::key::HubKey;
use super::Runtime;
use crate::error::Result;
use crate::model::Env;
use crate::store::presence::RemoteConnection;
use bytes::Bytes;
use serde_json::{json, Value};

impl Runtime {
    /// A connection this node does not hold may be another node's: hands
    /// it `action` there and answers true, or 404 when no node holds it.
    /// False means the caller acts here.
    async fn elsewhere(
        &self,
        hub: &Hub,
        id: &str,
        action: impl FnOnce() -> ConnAction,
    ) -> Result<bool> {
        let peers = &self.inner.peers;
        if hub.find(id).is_some() || !peers.shared() {
            return Ok(false);
        }
        match peers.presence.holder(&hub.key, id).await? {
            Some(node) => {
                peers.broker.to_connection(&node, &hub.key, id, action())?;
                Ok(true)
            }
            None => Err(errors::connection_not_found(id)),
        }
    }

    /// `send` to one client connection, wherever it is held.
    pub async fn send_to(&self, hub: &Hub, id: &str, text: String) -> Result<()> {
        let there = || ConnAction::Send { text: text.clone() };
        if !self.elsewhere(hub, id, there).await? {
            hub.send_to(id, Frame::text(text))?;
        }
        Ok(())
    }

    /// `close` one client connection, wherever it is held.
    pub async fn close(&self, hub: &Hub, id: &str, code: u16, reason: &str) -> Result<()> {
        let there = || ConnAction::Close {
            code,
            reason: reason.to_string(),
        };
        if !self.elsewhere(hub, id, there).await? {
            hub.close(id, code, reason)?;
        }
        Ok(())
    }

    /// `receive`: the message enters as if a client sent it; `from` names
    /// that client, and the node holding it runs `on_message`.
    pub async fn receive(
        &self,
        hub: &Hub,
        text: String,
        from: Option<&str>,
        room: Option<&str>,
        actor: crate::model::Json,
    ) -> Result<Value> {
        if let Some(id) = from {
            let there = || ConnAction::Receive {
                text: text.clone(),
                actor: actor.clone(),
            };
            if self.elsewhere(hub, id, there).await? {
                return Ok(json!({"received": true, "connection_id": id}));
            }
        }
        hub.receive(Frame::text(text), from, room, actor).await
    }

    /// `broadcast` to every connection of the element (or the members of
    /// `room`) on every node. This node's get it now; the other nodes'
    /// are counted from their presence rows and get it from their node.
    pub async fn broadcast(&self, hub: &Hub, text: String, room: Option<&str>) -> Result<Delivery> {
        let peers = &self.inner.peers;
        let remote = if peers.shared() {
            peers.presence.remote_count(&hub.key, room).await?
        } else {
            0
        };
        // A shared history delivers on every node itself.
        if remote > 0 && !hub.history_shared() {
            peers.broker.fan_out(&hub.key, text.clone(), room)?;
        }
        let msg = Frame::text(text);
        let mut d = hub
            .publish_placed(&msg, room.map_or(Audience::All, Audience::Room))
            .await?;
        d.delivered_to += remote;
        d.subscriber_count += remote;
        hub.metrics.broadcast_count.inc();
        hub.metrics
            .broadcast_recipients
            .inc_by(d.delivered_to as u64);
        Ok(d)
    }

    /// `send {"user"}`: to every connection of the user on every node;
    /// answers how many (0 is a success: the user may be away).
    pub async fn send_to_user(&self, hub: &Hub, user: &str, text: String) -> Result<usize> {
        let remote = self.remote_of_user(hub, user).await?;
        if remote > 0 {
            let action = ConnAction::Send { text: text.clone() };
            self.inner.peers.broker.to_user(&hub.key, user, action)?;
        }
        Ok(hub.send_to_user(user, &Frame::text(text)) + remote)
    }

    /// `close {"user"}`: every connection of the user on every node.
    pub async fn close_user(
        &self,
        hub: &Hub,
        user: &str,
        code: u16,
        reason: &str,
    ) -> Result<usize> {
        let remote = self.remote_of_user(hub, user).await?;
        if remote > 0 {
            let action = ConnAction::Close {
                code,
                reason: reason.to_string(),
            };
            self.inner.peers.broker.to_user(&hub.key, user, action)?;
        }
        Ok(hub.close_user(user, code, reason) + remote)
    }

    async fn remote_of_user(&self, hub: &Hub, user: &str) -> Result<usize> {
        let peers = &self.inner.peers;
        if !peers.shared() {
            return Ok(0);
        }
        let rows = peers
            .presence
            .remote_connections(&hub.key, None, Some(user))
            .await?;
        Ok(rows.len())
    }

    /// `presence` of a hub on every node (none when it runs nothing).
    /// As the REST op answers it, written out (with `env`).
    pub async fn presence(&self, hub: &HubKey, env: Env, room: Option<&str>) -> Result<Bytes> {
        match self.hub(hub) {
            Some(h) => h.presence_written(room).await,
            None => {
                let mut p = presence_json(room, Default::default(), 0);
                p.env = Some(env);
                write_presence(&p)
            }
        }
    }

    /// `connections` of a hub on every node (optionally members of
    /// `room`, or of `user`): clients oldest first, then the driven link.
    /// With other nodes, each entry names its `node_id`.
    pub async fn connections(
        &self,
        hub: &HubKey,
        room: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut list = self
            .hub(hub)
            .map(|h| h.connections(room, user))
            .unwrap_or_default();
        let peers = &self.inner.peers;
        let Some(node) = peers.broker.node_id() else {
            return Ok(list);
        };
        for c in &mut list {
            c["node_id"] = json!(node);
        }
        let remote = peers.presence.remote_connections(hub, room, user).await?;
        list.extend(remote.iter().map(remote_json));
        // Clients of all nodes oldest first (RFC 3339 UTC sorts as text),
        // then the driven link.
        list.sort_by_cached_key(|c| {
            (
                c["kind"] != "client",
                c["connected_at"].as_str().unwrap_or_default().to_string(),
                c["connection_id"].as_str().unwrap_or_default().to_string(),
            )
        });
        Ok(list)
    }
}

/// A connection another node holds, as `connections` lists it: what its
/// presence row says.
fn remote_json(c: &RemoteConnection) -> Value {
    json!({
        "connection_id": c.connection_id,
        "kind": "client",
        "connected_at": crate::model::rfc3339(c.connected_at),
        "rooms": c.rooms,
        "remote_addr": c.remote,
        "node_id": c.node_id,
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
        // As of the holder's last heartbeat that saw a change.
        "counted_at": c.counted_at.map(crate::model::rfc3339),
        "user": c.user,
        "info": c.info.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
    })
}
