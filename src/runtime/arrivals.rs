//! The runtime's side of the broker: what other nodes send lands in
//! this node's hubs.

use super::broker::{BrokerHandler, ConnAction};
use super::frame::Frame;
use super::hub::{Audience, Hub};
use super::key::HubKey;
use super::shared_history::Published;
use super::Runtime;
use crate::error::Result;
use crate::ids::ElementId;
use crate::model::Event;
use crate::store::presence::Held;
use crate::store::Db;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Reloading a changed element reads it from `db`.
pub struct Arrivals {
    runtime: Runtime,
    db: Db,
}

impl Runtime {
    /// The handler a broker calls with what arrives from other nodes.
    pub fn arrivals(&self, db: Db) -> Arc<dyn BrokerHandler> {
        Arc::new(Arrivals {
            runtime: self.clone(),
            db,
        })
    }
}

impl Arrivals {
    /// Drops the read caches' stale copies of `el`, then reads its
    /// releases.
    async fn forget_then_releases(
        &self,
        el: &crate::model::Element,
    ) -> Result<Vec<crate::store::deployments::Deployment>> {
        self.db.forget(el);
        Ok(self.db.deployments(&el.id).await?)
    }
}

impl BrokerHandler for Arrivals {
    fn fan_out(&self, hub: &HubKey, msg: Frame, rooms: Option<&[String]>, control: bool) {
        if let Some(h) = self.runtime.hub(hub) {
            let audience = match rooms {
                Some(rooms) => Audience::Rooms(rooms),
                None => Audience::All,
            };
            if control {
                h.deliver(&msg, audience);
            } else {
                h.publish(&msg, audience);
            }
        }
    }

    fn published(&self, batch: Vec<Published>) {
        for p in batch {
            if let Some(h) = self.runtime.hub(&p.hub) {
                h.published(&p);
            }
        }
    }

    fn to_connection<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
        action: ConnAction,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(h) = self.runtime.hub(hub) else {
                return;
            };
            if let Err(e) = act(&h, connection_id, action).await {
                tracing::debug!(error = %e, "connection action from another node not done");
            }
        })
    }

    fn to_user(&self, hub: &HubKey, user: &str, action: ConnAction) {
        let Some(h) = self.runtime.hub(hub) else {
            return;
        };
        match action {
            ConnAction::Send { text } => {
                h.send_to_user(user, &Frame::text(text));
            }
            ConnAction::Close { code, reason } => {
                h.close_user(user, code, &reason);
            }
            ConnAction::Receive { .. } => {
                tracing::debug!("a user is no sender of receive; ignored")
            }
        }
    }

    fn element_changed<'a>(&'a self, element_id: &'a ElementId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.db.element_by_id(element_id).await {
                Ok(Some(el)) => match self.forget_then_releases(&el).await {
                    Ok(releases) => self.runtime.apply(&el, &releases),
                    Err(e) => tracing::warn!(error = %e, %element_id, "reloading releases failed"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %element_id, "reloading a changed element failed")
                }
            }
        })
    }

    fn resync(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.db.forget_all();
            if let Err(e) = self.runtime.resync(&self.db).await {
                tracing::warn!(error = %e, "reload failed");
            }
        })
    }

    fn live_events(&self, events: Vec<Event>) {
        for mut event in events {
            event.remote = true;
            self.runtime.inner.bus.publish_remote(event);
        }
    }

    fn held(&self) -> Vec<Held> {
        let mut held = Vec::new();
        for hub in self.runtime.hubs() {
            held.extend(hub.open_conns().iter().map(|c| Held {
                connection_id: c.id.clone(),
                hub_key: hub.key.to_string(),
                rooms: c.rooms(),
                remote: c.remote.clone(),
                connected_at: c.connected_at,
                user: c.user.as_deref().map(str::to_string),
                info: c.info().map(|i| i.to_string()),
                presence_events: hub.spec().rooms.presence_events,
            }));
        }
        held
    }

    fn counters(&self) -> Vec<(String, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.runtime
            .hubs()
            .iter()
            .flat_map(|h| h.open_conns())
            .map(|c| {
                (
                    c.id.clone(),
                    c.msgs_in.load(Relaxed),
                    c.msgs_out.load(Relaxed),
                )
            })
            .collect()
    }
}

/// Does what another node asked of a connection this one holds.
async fn act(hub: &Hub, id: &str, action: ConnAction) -> Result<()> {
    match action {
        ConnAction::Send { text } => hub.send_to(id, Frame::text(text)),
        ConnAction::Receive { text, actor } => hub
            .receive(Frame::text(text), Some(id), None, actor)
            .await
            .map(drop),
        ConnAction::Close { code, reason } => hub.close(id, code, &reason),
    }
}
