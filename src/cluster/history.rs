//! The shared history's writer: one appender task per node takes queued
//! publications in batches, and in one transaction gives them their
//! offsets (`store/history.rs`), keeps them, and notifies them as
//! `Published`. PostgreSQL delivers notifications in commit order, and
//! the stream rows stay locked until commit, so every node sees each
//! stream's offsets rise one by one.

use super::node::{Inner, CHANNEL, NOTIFY_MAX};
use super::wire::{Envelope, Msg, Pub};
use super::PgBroker;
use crate::error::Result;
use crate::model::now_ms;
use crate::runtime::{Append, Frame, HubKey, Position, SharedHistory, Stored};
use crate::store::history::{self, NewMessage};
use crate::store::presence::store_payload_in;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Publications waiting for the appender; beyond, publishing is refused.
pub(super) const APPEND_QUEUE: usize = 8192;
/// At most this many publications, or bytes, per transaction.
const BATCH: usize = 512;
const BATCH_BYTES: usize = 4 << 20;
/// Tries per batch before its publications are dropped (and logged).
const TRIES: u32 = 4;

fn body(msg: &Frame) -> Option<(&[u8], bool)> {
    match msg {
        Frame::Text(t) => Some((t.as_str().as_bytes(), false)),
        Frame::Binary(b) => Some((b, true)),
        _ => None,
    }
}

/// Places queued publications, batch by batch, until the node leaves.
pub(super) async fn append_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Append>) {
    let mut next: Option<Append> = None;
    loop {
        let first = match next.take() {
            Some(a) => a,
            None => tokio::select! {
                a = rx.recv() => match a {
                    Some(a) => a,
                    None => return,
                },
                _ = inner.stop.cancelled() => return,
            },
        };
        let mut bytes = first.msg.len();
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let Ok(a) = rx.try_recv() else { break };
            if bytes + a.msg.len() > BATCH_BYTES {
                next = Some(a);
                break;
            }
            bytes += a.msg.len();
            batch.push(a);
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match place(&inner, &batch).await {
                Ok(placed) => {
                    for (a, p) in batch.iter_mut().zip(placed) {
                        if let Some(tx) = a.placed.take() {
                            let _ = tx.send(p);
                        }
                    }
                    break;
                }
                Err(e) if tries < TRIES => {
                    tracing::warn!(error = %e, tries, "placing publications failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, lost = batch.len(), "placing publications failed; dropped");
                    break;
                }
            }
        }
    }
}

/// One transaction: offsets, rows, trims and the notifications.
async fn place(inner: &Inner, batch: &[Append]) -> crate::store::Result<Vec<Vec<Position>>> {
    let now = now_ms();
    let keys: Vec<&str> = batch.iter().map(|a| a.hub.as_str()).collect();
    let msgs: Vec<NewMessage> = batch
        .iter()
        .zip(&keys)
        .filter_map(|(a, k)| {
            let (body, binary) = body(&a.msg)?;
            Some(NewMessage {
                hub_key: k,
                streams: &a.rooms,
                body,
                binary,
                size: a.size,
                ttl_ms: a.ttl_ms,
            })
        })
        .collect();
    let mut tx = inner.pool.begin().await?;
    let placed = history::append(&mut tx, &msgs, now).await?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut placed = placed.into_iter();
    let mut pubs = Vec::with_capacity(batch.len());
    for a in batch {
        let here = if body(&a.msg).is_some() {
            placed.next().unwrap_or_default()
        } else {
            Vec::new()
        };
        answers.push(
            here.iter()
                .map(|p| Position {
                    epoch: p.epoch.clone(),
                    offset: p.offset,
                })
                .collect(),
        );
        pubs.push((a, here));
    }
    let pubs = pubs
        .into_iter()
        .filter(|(a, _)| body(&a.msg).is_some())
        .filter_map(|(a, at)| {
            let streams = a
                .rooms
                .iter()
                .zip(at)
                .map(|(r, p)| (r.clone(), p.epoch, p.offset))
                .collect();
            Pub::new(&a.hub, &a.msg, a.except.clone(), now, streams)
        });
    // As many as fit one NOTIFY; one too big alone goes through the
    // payload table, written in this same transaction.
    let mut chunk: Vec<Pub> = Vec::new();
    let mut size = 0;
    for p in pubs {
        if !chunk.is_empty() && size + p.json_len() > NOTIFY_MAX {
            notify_in(inner, &mut tx, std::mem::take(&mut chunk)).await?;
            size = 0;
        }
        size += p.json_len();
        chunk.push(p);
    }
    if !chunk.is_empty() {
        notify_in(inner, &mut tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(answers)
}

async fn notify_in(
    inner: &Inner,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: Vec<Pub>,
) -> crate::store::Result<()> {
    let from = inner.node_id.clone();
    let mut body = serde_json::to_string(&Envelope {
        from: from.clone(),
        msg: Msg::Published { batch },
    })
    .unwrap_or_default();
    if body.len() > NOTIFY_MAX {
        let id = store_payload_in(tx, &body).await?;
        body = serde_json::to_string(&Envelope {
            from,
            msg: Msg::Stored {
                id,
                published: true,
            },
        })
        .unwrap_or_default();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Expiry every heartbeat; the bytes cap every `CAP_EVERY` heartbeats
/// (it sums every hub's history).
pub(super) const CAP_EVERY: u32 = 15;

pub(super) async fn sweep(inner: &Inner, round: u32) {
    if let Err(e) = history::expire(&inner.pool, now_ms()).await {
        tracing::warn!(error = %e, "expiring history failed");
    }
    if round % CAP_EVERY == 0 {
        match history::cap_bytes(&inner.pool, inner.history_cap).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(dropped = n, "history over the bytes cap: oldest dropped"),
            Err(e) => tracing::warn!(error = %e, "capping history failed"),
        }
    }
}

impl SharedHistory for PgBroker {
    fn shared(&self) -> bool {
        true
    }

    fn append(&self, a: Append) -> Result<()> {
        self.inner
            .appends
            .try_send(a)
            .map_err(|_| super::node::busy())
    }

    fn read<'a>(
        &'a self,
        hub: &'a HubKey,
        room: &'a str,
        since: Option<u64>,
        limit: usize,
        make: bool,
    ) -> BoxFuture<'a, Result<Option<Stored>>> {
        Box::pin(async move {
            let pool = &self.inner.pool;
            let now = now_ms();
            let Some(p) = history::position(pool, hub.as_str(), room, make, now).await? else {
                return Ok(None);
            };
            let since = since.unwrap_or(0);
            let items = if since < p.offset {
                history::read(pool, hub.as_str(), room, since, limit as i64, now).await?
            } else {
                Vec::new()
            };
            Ok(Some(Stored {
                position: Position {
                    epoch: p.epoch,
                    offset: p.offset,
                },
                items: items
                    .into_iter()
                    .map(|(o, b, bin, at)| {
                        let msg = if bin {
                            Frame::Binary(b.into())
                        } else {
                            Frame::text(String::from_utf8_lossy(&b).into_owned())
                        };
                        (o, msg, at)
                    })
                    .collect(),
            }))
        })
    }
}
