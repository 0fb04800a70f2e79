//! The cluster's writing tasks: heartbeat and sweep, the ordered writer
//! and the relay of client messages.

use super::node::{Inner, Pending, UserKey, CHANNEL, HEARTBEAT, NOTIFY_MAX};
use super::wire::{Envelope, FanOut, Msg};
use crate::runtime::{presence_frame, BrokerHandler, Frame, HubKey};
use crate::store::room_users::RoomUser;
use crate::sync::lock;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Writes the presence rows of this node's connections again, after a
/// stall long enough for other nodes to sweep them.
async fn restore_presence(
    inner: &Inner,
    handler: &dyn BrokerHandler,
) -> crate::store::Result<usize> {
    let held = handler.held();
    for c in &held {
        inner.presence.restore(c).await?;
    }
    // The room users' rows too: what this node wrote may have been reaped.
    lock(&inner.written_users).clear();
    inner.pend(|p| {
        for c in held.iter().filter(|c| c.presence_events) {
            let Some(user) = &c.user else { continue };
            for room in &c.rooms {
                let key = (
                    HubKey::stored(c.hub_key.clone()),
                    room.clone(),
                    user.clone(),
                );
                p.users.entry(key).or_insert((true, c.info.clone()));
            }
        }
    });
    Ok(held.len())
}

/// Tells a room's members on every node that a user arrived or left.
pub(super) async fn tell_presence(inner: &Inner, u: RoomUser, joined: bool) {
    let info = u.info.and_then(|i| serde_json::from_str::<Value>(&i).ok());
    let text = presence_frame(&u.room, &u.user, info.as_ref(), joined);
    let hub = HubKey::stored(u.hub_key);
    let rooms = vec![u.room];
    if let Some(h) = inner.handler.get().and_then(Weak::upgrade) {
        h.fan_out(&hub, Frame::text(text.clone()), Some(&rooms), true);
    }
    let batch = vec![FanOut::control(&hub, text, rooms)];
    if let Err(e) = notify(inner, Msg::FanOut { batch }).await {
        tracing::warn!(error = %e, "telling a presence change failed");
    }
}

/// Refreshes this node and sweeps what dead nodes left behind.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>, handler: Arc<dyn BrokerHandler>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut written: HashMap<String, (u64, u64)> = HashMap::new();
    let mut round: u32 = 0;
    loop {
        round = round.wrapping_add(1);
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match inner.presence.heartbeat().await {
            Ok(false) => {}
            Ok(true) => {
                let restored = restore_presence(&inner, &*handler).await;
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
        if let Err(e) = write_counters(&inner, &*handler, &mut written).await {
            tracing::warn!(error = %e, "writing connection counters failed");
        }
        match inner.presence.reap_dead().await {
            Ok(gone) => {
                for g in gone {
                    tell_presence(&inner, g, false).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaping dead nodes' room users failed"),
        }
        if let Err(e) = inner.presence.sweep().await {
            tracing::warn!(error = %e, "cluster sweep failed");
        }
        super::history::sweep(&inner, round).await;
    }
}

/// Writes the message counters that changed since the last heartbeat, in
/// one statement, so other nodes' `connections` show them.
async fn write_counters(
    inner: &Inner,
    handler: &dyn BrokerHandler,
    written: &mut HashMap<String, (u64, u64)>,
) -> crate::store::Result<()> {
    let now: HashMap<String, (u64, u64)> = handler
        .counters()
        .into_iter()
        .map(|(id, i, o)| (id, (i, o)))
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
pub(super) async fn notify(inner: &Inner, msg: Msg) -> crate::store::Result<()> {
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
            msg: Msg::Stored {
                id,
                published: false,
            },
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
    let p = std::mem::take(&mut *lock(&inner.pending));
    let mut retry = Pending::default();
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
    for (key, (joined, info)) in p.users {
        if let Err(e) = move_user(inner, &key, joined, info.clone()).await {
            tracing::warn!(error = %e, "cluster write failed");
            retry.users.insert(key, (joined, info));
        }
    }
    for id in p.changed {
        let r = notify(inner, Msg::ElementChanged { id: id.clone() }).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cluster write failed");
            retry.changed.insert(id);
        }
    }
    let nothing = retry.rooms.is_empty()
        && retry.gone.is_empty()
        && retry.changed.is_empty()
        && retry.users.is_empty();
    if !nothing {
        tokio::time::sleep(Duration::from_millis(200)).await;
        inner.pend(|p| {
            for (id, rooms) in retry.rooms {
                p.rooms.entry(id).or_insert(rooms);
            }
            p.gone.extend(retry.gone);
            p.changed.extend(retry.changed);
            // A newer change of the same user wins over the failed one.
            for (key, v) in retry.users {
                p.users.entry(key).or_insert(v);
            }
        });
    }
}

/// Writes one user's presence change in a room, unless this node's row
/// already says so (a join and leave that met in the queue tell nothing),
/// and tells the members when it was the user's arrival or leaving.
async fn move_user(
    inner: &Inner,
    key: &UserKey,
    joined: bool,
    info: Option<String>,
) -> crate::store::Result<()> {
    if lock(&inner.written_users).contains(key) == joined {
        return Ok(());
    }
    let (hub, room, user) = key;
    let told = inner
        .presence
        .move_user(hub.as_str(), room, user, info.as_deref(), joined)
        .await?;
    {
        let mut written = lock(&inner.written_users);
        if joined {
            written.insert(key.clone());
        } else {
            written.remove(key);
        }
    }
    if told {
        let u = RoomUser {
            hub_key: hub.to_string(),
            room: room.clone(),
            user: user.clone(),
            info,
        };
        tell_presence(inner, u, joined).await;
    }
    Ok(())
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
