//! Live events between nodes: this node's go out batched, and whether
//! anyone elsewhere listens is announced, so message events are built
//! and sent only while someone will read them.

use super::node::{Inner, HEARTBEAT, NOTIFY_MAX};
use super::tasks::notify;
use super::wire::Msg;
use crate::event_kind::EventKind;
use crate::events::{Bus, Listening};
use crate::model::Event;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// How long the forwarder waits after an event for the ones that follow
/// it, so they go out together.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Cuts an event to fit one NOTIFY: the message preview goes first.
fn fit(mut event: Event) -> Event {
    let size = |e: &Event| serde_json::to_string(e).map_or(usize::MAX, |s| s.len());
    if size(&event) + 200 > NOTIFY_MAX {
        if let Some(d) = event.data.value_mut().as_object_mut() {
            d.shift_remove("message");
            d.shift_remove("message_base64");
            d.insert("truncated".into(), json!(true));
        }
        if size(&event) + 200 > NOTIFY_MAX {
            event.data = json!({"truncated": true}).into();
        }
    }
    event
}

fn json_len(e: &Event) -> usize {
    serde_json::to_string(e).map_or(usize::MAX, |s| s.len())
}

/// Announces whether this node has live listeners: at once on a change,
/// and again every heartbeat while it has; drops other nodes' stale claims.
pub(super) async fn announce_loop(inner: Arc<Inner>, flag: Listening) {
    let mut changes = flag.local_changes();
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        let repeat = tokio::select! {
            _ = inner.stop.cancelled() => return,
            r = changes.changed() => match r {
                Ok(()) => false,
                Err(_) => return,
            },
            _ = tick.tick() => true,
        };
        let on = *changes.borrow_and_update();
        if on || !repeat {
            inner.send(Msg::Listening { on });
        }
        inner.note_listening(None, &flag);
    }
}

/// High-rate events, forwarded only while another node has live listeners.
fn is_message(e: &Event) -> bool {
    e.kind == EventKind::WsMessageReceived || e.kind == EventKind::WsMessageSent
}

/// Publishes this node's live events to the other nodes, batching what is
/// queued into one NOTIFY (a storm costs few round trips, not one each).
/// Message events go only while another node has live listeners: nobody
/// else would read them, and they are the storm.
pub(super) async fn forward_loop(inner: Arc<Inner>, bus: Bus) {
    let stop = inner.stop.clone();
    let mut live = bus.subscribe();
    let wanted = bus.listening();
    drop(bus);
    let mut pending: Option<Event> = None;
    loop {
        let first = match pending.take() {
            Some(e) => e,
            None => {
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = live.recv() => r,
                };
                match r {
                    Ok(ev) if ev.remote || (is_message(&ev) && !wanted.remote()) => continue,
                    Ok(ev) => fit((*ev).clone()),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "cluster forwarder fell behind; events not forwarded"
                        );
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        };
        // An op's events come a moment apart (started, updated,
        // completed): gathered, they cost one NOTIFY, not one each. With
        // more already queued (a storm, or a batch's carried-over event)
        // there is nothing to wait for.
        if live.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(GATHER) => {}
            }
        }
        let mut size = json_len(&first);
        let mut events = vec![first];
        loop {
            match live.try_recv() {
                Ok(ev) if ev.remote || (is_message(&ev) && !wanted.remote()) => continue,
                Ok(ev) => {
                    let e = fit((*ev).clone());
                    let n = json_len(&e);
                    if size + n + 200 > NOTIFY_MAX {
                        pending = Some(e);
                        break;
                    }
                    size += n + 1;
                    events.push(e);
                }
                Err(TryRecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "cluster forwarder fell behind; events not forwarded"
                    );
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if let Err(e) = notify(&inner, Msg::Events { events }).await {
            tracing::warn!(error = %e, "forwarding events failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_too_big_for_notify_loses_its_preview() {
        let mut e = Event::new(
            "acme",
            &crate::ids::CircleId::stored("c1"),
            EventKind::WsMessageReceived,
        );
        // As text, as connection events carry it: cut all the same.
        e.data = crate::model::Json::text_of(
            &json!({"kind": "text", "bytes": 9000, "message": "x".repeat(9000), "connection_id": "c_1"}),
        );
        let cut = fit(e);
        assert_eq!(
            cut.data,
            json!({"kind": "text", "bytes": 9000, "connection_id": "c_1", "truncated": true})
        );
        let mut e = Event::new(
            "acme",
            &crate::ids::CircleId::stored("c1"),
            EventKind::OpCompleted,
        );
        e.data = json!({"other": "y".repeat(9000)}).into();
        assert_eq!(fit(e).data, json!({"truncated": true}));
        let mut small = Event::new(
            "acme",
            &crate::ids::CircleId::stored("c1"),
            EventKind::WsMessageReceived,
        );
        small.data = json!({"message": "hi"}).into();
        assert_eq!(fit(small).data, json!({"message": "hi"}));
    }
}
