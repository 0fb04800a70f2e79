//! The cluster's background tasks: heartbeat and sweep, the ordered
//! writer, the event forwarder and the listener.

use super::{ConnAction, Envelope, FanOut, Inner, Msg, CHANNEL, HEARTBEAT, NOTIFY_MAX};
use crate::events::{Bus, Event, Listening};
use crate::runtime::{Audience, Runtime};
use crate::store::presence::Held;
use crate::store::Db;
use axum::extract::ws::Message;
use base64::Engine;
use serde_json::json;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Writes the presence rows of this node's connections again, after a
/// stall long enough for other nodes to sweep them.
async fn restore_presence(inner: &Inner, runtime: &Runtime) -> crate::store::Result<usize> {
    let mut n = 0;
    for hub in runtime.hubs() {
        for c in hub.open_conns() {
            let held = Held {
                connection_id: &c.id,
                element_id: &hub.element_id,
                rooms: c.rooms(),
                remote: &c.remote,
                connected_at: c.connected_at,
            };
            inner.presence.restore(held).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Refreshes this node and sweeps what dead nodes left behind.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>, runtime: Runtime) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut written: HashMap<String, (u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match inner.presence.heartbeat().await {
            Ok(false) => {}
            Ok(true) => {
                let restored = restore_presence(&inner, &runtime).await;
                tracing::warn!(?restored, "this node was swept as dead; presence restored");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                continue;
            }
        }
        let others = inner.presence.others_alive().await;
        match others {
            Ok(b) => inner.others.store(b, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "counting other nodes failed"),
        }
        if let Err(e) = write_counters(&inner, &runtime, &mut written).await {
            tracing::warn!(error = %e, "writing connection counters failed");
        }
        if let Err(e) = inner.presence.sweep().await {
            tracing::warn!(error = %e, "cluster sweep failed");
        }
    }
}

/// Writes the message counters that changed since the last heartbeat, in
/// one statement, so other nodes' `connections` show them.
async fn write_counters(
    inner: &Inner,
    runtime: &Runtime,
    written: &mut HashMap<String, (u64, u64)>,
) -> crate::store::Result<()> {
    let now: HashMap<String, (u64, u64)> = runtime
        .hubs()
        .iter()
        .flat_map(|h| h.open_conns())
        .map(|c| {
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            (c.id.clone(), (n(&c.msgs_in), n(&c.msgs_out)))
        })
        .collect();
    let (mut ids, mut ins, mut outs) = (Vec::new(), Vec::new(), Vec::new());
    for (id, &(i, o)) in &now {
        if written.get(id) != Some(&(i, o)) {
            ids.push(id.clone());
            ins.push(i as i64);
            outs.push(o as i64);
        }
    }
    *written = now;
    if ids.is_empty() {
        return Ok(());
    }
    inner.presence.write_counters(&ids, &ins, &outs).await
}

/// Sends one envelope; one too big for NOTIFY goes through the table.
async fn notify(inner: &Inner, msg: Msg) -> crate::store::Result<()> {
    let from = inner.node_id.as_str();
    let mut body = serde_json::to_string(&Envelope {
        from: from.into(),
        msg,
    })
    .unwrap_or_default();
    if body.len() > NOTIFY_MAX {
        let id = inner.presence.store_payload(&body).await?;
        body = serde_json::to_string(&Envelope {
            from: from.into(),
            msg: Msg::Stored { id },
        })
        .unwrap_or_default();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(body)
        .execute(&inner.pool)
        .await?;
    Ok(())
}

/// Sends queued messages and coalesced changes, until the node leaves.
pub(super) async fn write_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Msg>) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = inner.wake.notified() => None,
            _ = inner.stop.cancelled() => break,
        };
        if let Some(m) = msg {
            if let Err(e) = notify(&inner, m).await {
                tracing::warn!(error = %e, "cluster write failed");
            }
        }
        write_pending(&inner).await;
    }
}

/// Writes the coalesced changes; what fails is kept for the next round
/// (a lost deletion would leave a presence row counting against limits).
async fn write_pending(inner: &Inner) {
    let p = std::mem::take(&mut *inner.pending.lock().unwrap_or_else(|p| p.into_inner()));
    let mut retry = super::Pending::default();
    for (id, rooms) in p.rooms {
        let r = inner.presence.set_rooms(&id, &rooms).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cluster write failed");
            retry.rooms.insert(id, rooms);
        }
    }
    if !p.gone.is_empty() {
        let ids: Vec<String> = p.gone.into_iter().collect();
        let r = inner.presence.delete(&ids).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cluster write failed");
            retry.gone.extend(ids);
        }
    }
    for id in p.changed {
        let r = notify(inner, Msg::ElementChanged { id: id.clone() }).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cluster write failed");
            retry.changed.insert(id);
        }
    }
    if !(retry.rooms.is_empty() && retry.gone.is_empty() && retry.changed.is_empty()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        inner.pend(|p| {
            for (id, rooms) in retry.rooms {
                p.rooms.entry(id).or_insert(rooms);
            }
            p.gone.extend(retry.gone);
            p.changed.extend(retry.changed);
        });
    }
}

/// Sends relayed client messages, in order, off the message path, until
/// the node leaves.
pub(super) async fn relay_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<FanOut>) {
    let mut pending: Option<FanOut> = None;
    loop {
        let first = match pending.take() {
            Some(r) => r,
            None => tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = inner.stop.cancelled() => return,
            },
        };
        // What is queued joins the batch while it fits one NOTIFY; a
        // single message too big for one goes through the payload table.
        let mut size = first.json_len();
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            if size + r.json_len() > NOTIFY_MAX {
                pending = Some(r);
                break;
            }
            size += r.json_len();
            batch.push(r);
        }
        if let Err(e) = notify(&inner, Msg::FanOut { batch }).await {
            tracing::warn!(error = %e, "relaying messages failed");
        }
    }
}

/// Cuts an event to fit one NOTIFY: the message preview goes first.
fn fit(mut event: Event) -> Event {
    let size = |e: &Event| serde_json::to_string(e).map_or(usize::MAX, |s| s.len());
    if size(&event) + 200 > NOTIFY_MAX {
        if let Some(d) = event.data.as_object_mut() {
            d.remove("message");
            d.remove("message_base64");
            d.insert("truncated".into(), json!(true));
        }
        if size(&event) + 200 > NOTIFY_MAX {
            event.data = json!({"truncated": true});
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
    e.kind.starts_with("ws.message.")
}

/// Publishes this node's live events to the other nodes, batching what is
/// queued into one NOTIFY (a storm costs few round trips, not one each).
/// Message events go only while another node has live listeners: nobody
/// else would read them, and they are the storm.
pub(super) async fn forward_loop(inner: Arc<Inner>, bus: Bus, stop: CancellationToken) {
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

pub(super) async fn listen_loop(
    inner: Arc<Inner>,
    mut listener: PgListener,
    runtime: Runtime,
    db: Db,
    bus: Bus,
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
                if let Err(e) = runtime.resync(&db).await {
                    tracing::warn!(error = %e, "reload failed");
                }
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
        if env.from == inner.node_id {
            continue;
        }
        inner.others.store(true, Ordering::Release);
        if let Msg::Listening { on } = env.msg {
            inner.note_listening(Some((&env.from, on)), &bus.listening());
            continue;
        }
        if let Msg::Stored { id } = env.msg {
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
        apply(&inner.node_id, env.msg, &runtime, &db, &bus).await;
    }
}

/// Delivers one fan-out to this node's connections.
fn fan_out(runtime: &Runtime, r: FanOut) {
    let Some(h) = runtime.hub(&r.element_id) else {
        return;
    };
    let msg = match (r.text, r.binary_base64) {
        (Some(t), _) => Message::Text(t.into()),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(b) => Message::Binary(b.into()),
            Err(_) => return,
        },
        (None, None) => return,
    };
    let audience = match &r.rooms {
        Some(rooms) => Audience::Rooms(rooms),
        None => Audience::All,
    };
    h.deliver(&msg, audience);
}

/// What another node asks of this one.
async fn apply(me: &str, msg: Msg, runtime: &Runtime, db: &Db, bus: &Bus) {
    match msg {
        Msg::ElementChanged { id } => match db.element_by_id(&id).await {
            Ok(Some(el)) => runtime.element_changed(&el),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, id, "reloading a changed element failed"),
        },
        Msg::Events { events } => {
            for mut event in events {
                event.remote = true;
                bus.publish_remote(event);
            }
        }
        Msg::ToConnection {
            to,
            element_id,
            connection_id,
            action,
        } if to == me => {
            let Some(h) = runtime.hub(&element_id) else {
                return;
            };
            let id = connection_id.as_str();
            let done = match action {
                ConnAction::Send { text } => h.send_to(id, Message::Text(text.into())),
                ConnAction::Receive { text, actor } => h
                    .receive(Message::Text(text.into()), Some(id), None, actor)
                    .await
                    .map(drop),
                ConnAction::Close { code, reason } => h.close(id, code, &reason),
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, "cluster connection action not done");
            }
        }
        Msg::FanOut { batch } => {
            for f in batch {
                fan_out(runtime, f);
            }
        }
        Msg::ToConnection { .. } | Msg::Stored { .. } | Msg::Listening { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_too_big_for_notify_loses_its_preview() {
        let mut e = Event::new("acme", "c1", "ws.message.received");
        e.data = json!({"kind": "text", "bytes": 9000, "message": "x".repeat(9000), "connection_id": "c_1"});
        let cut = fit(e);
        assert_eq!(
            cut.data,
            json!({"kind": "text", "bytes": 9000, "connection_id": "c_1", "truncated": true})
        );
        let mut e = Event::new("acme", "c1", "op.completed");
        e.data = json!({"other": "y".repeat(9000)});
        assert_eq!(fit(e).data, json!({"truncated": true}));
        let mut small = Event::new("acme", "c1", "ws.message.received");
        small.data = json!({"message": "hi"});
        assert_eq!(fit(small).data, json!({"message": "hi"}));
    }
}
