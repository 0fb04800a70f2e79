//! What arrives on the channel: envelopes of other nodes, read back from
//! the payload table when stored there, handed to the runtime's handler.

use super::node::Inner;
use super::wire::{Envelope, Msg};
use crate::events::Listening;
use crate::runtime::{BrokerHandler, Position, Published};
use sqlx::postgres::PgListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn listen_loop(
    inner: Arc<Inner>,
    mut listener: PgListener,
    handler: Arc<dyn BrokerHandler>,
    flag: Listening,
) {
    loop {
        let n = tokio::select! {
            _ = inner.stop.cancelled() => return,
            n = listener.try_recv() => n,
        };
        let payload = match n {
            Ok(Some(n)) => n.payload().to_string(),
            // The connection was lost and is re-established on the next
            // call; what was notified meanwhile is lost, so reload.
            Ok(None) => {
                tracing::warn!("cluster listener reconnected; reloading websocket elements");
                handler.resync().await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut env: Envelope = match serde_json::from_str(&payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable cluster message");
                continue;
            }
        };
        // Publications come back to the node that placed them: it
        // delivers them in commit order like every other node.
        let placed = matches!(
            env.msg,
            Msg::Published { .. }
                | Msg::Stored {
                    published: true,
                    ..
                }
        );
        if env.from == inner.node_id {
            if !placed {
                continue;
            }
        } else {
            inner.others.store(true, Ordering::Release);
        }
        if let Msg::Listening { on } = env.msg {
            inner.note_listening(Some((&env.from, on)), &flag);
            continue;
        }
        if let Msg::Stored { id, .. } = env.msg {
            let body = inner.presence.payload(id).await;
            match body.map(|b| serde_json::from_str::<Envelope>(&b)) {
                Ok(Ok(e)) => env = e,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, id, "unreadable stored cluster message");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, id, "stored cluster message unavailable");
                    continue;
                }
            }
        }
        apply(&inner.node_id, env.msg, &*handler).await;
    }
}

/// What another node asks of this one.
async fn apply(me: &str, msg: Msg, handler: &dyn BrokerHandler) {
    match msg {
        Msg::ElementChanged { id } => handler.element_changed(&id).await,
        Msg::Events { events } => handler.live_events(events),
        Msg::ToConnection {
            to,
            hub,
            connection_id,
            action,
        } if to == me => handler.to_connection(&hub, &connection_id, action).await,
        Msg::ToUser { hub, user, action } => handler.to_user(&hub, &user, action),
        Msg::FanOut { batch } => {
            for mut f in batch {
                if let Some(msg) = f.message() {
                    handler.fan_out(&f.hub, msg, f.rooms.as_deref(), f.control);
                }
            }
        }
        Msg::Published { batch } => {
            let placed = batch
                .into_iter()
                .filter_map(|mut p| {
                    let msg = p.message()?;
                    Some(Published {
                        hub: p.hub,
                        msg,
                        except: p.except,
                        at: p.at,
                        streams: p
                            .streams
                            .into_iter()
                            .map(|(room, epoch, offset)| (room, Position { epoch, offset }))
                            .collect(),
                    })
                })
                .collect();
            handler.published(placed);
        }
        Msg::ToConnection { .. } | Msg::Stored { .. } | Msg::Listening { .. } => {}
    }
}
