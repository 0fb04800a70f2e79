//! Room history in PostgreSQL, shared by every node (SPEC 10.3): a
//! `ws_streams` row per (hub, room) holds the epoch and the last offset,
//! `ws_history` the messages kept. An append takes the stream rows'
//! locks for its transaction, so offsets rise in commit order; the
//! cluster notifies the publications inside the same transaction.
//! Times are ms since the epoch, given by the caller.

use super::Result;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use std::collections::BTreeMap;

/// Streams untouched this long, with nothing kept, are forgotten (and a
/// client's position in them with it): the longest `ttl_s` allowed.
const IDLE_STREAM_MS: i64 = 7 * 24 * 3600 * 1000;

/// One publication to append.
pub struct NewMessage<'a> {
    pub hub_key: &'a str,
    /// Its rooms' streams (`""`: no room).
    pub streams: &'a [String],
    pub body: &'a [u8],
    pub binary: bool,
    /// `history.size` and `history.ttl_s` of its hub.
    pub size: u64,
    pub ttl_ms: i64,
}

/// A stream's epoch and the offset a message got there.
#[derive(Debug, Clone)]
pub struct Placed {
    pub epoch: String,
    pub offset: u64,
}

/// A kept message: (offset, body, binary, published_at).
pub type Kept = (u64, Vec<u8>, bool, i64);

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Appends `msgs` in order inside `tx`: each gets the next offset of
/// each of its streams (one answer per message, per stream in its
/// order). Older messages past each stream's `size` are deleted.
pub async fn append(
    tx: &mut Transaction<'_, Postgres>,
    msgs: &[NewMessage<'_>],
    now: i64,
) -> Result<Vec<Vec<Placed>>> {
    // How many each stream takes, in key order (every node locks the
    // stream rows in the same order: no deadlock between appenders).
    let mut takes: BTreeMap<(&str, &str), (i64, u64)> = BTreeMap::new();
    for m in msgs {
        for s in m.streams {
            let e = takes.entry((m.hub_key, s.as_str())).or_insert((0, m.size));
            e.0 += 1;
            e.1 = m.size;
        }
    }
    let (mut keys, mut streams, mut epochs, mut counts) = (vec![], vec![], vec![], vec![]);
    for ((k, s), (n, _)) in &takes {
        keys.push(k.to_string());
        streams.push(s.to_string());
        epochs.push(new_epoch());
        counts.push(*n);
    }
    let rows = sqlx::query(
        "INSERT INTO ws_streams (hub_key, stream, epoch, top, touched_at) \
         SELECT k, s, e, n, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) \
         AS t(k, s, e, n) \
         ON CONFLICT (hub_key, stream) DO UPDATE \
         SET top = ws_streams.top + EXCLUDED.top, touched_at = EXCLUDED.touched_at \
         RETURNING hub_key, stream, epoch, top",
    )
    .bind(&keys)
    .bind(&streams)
    .bind(&epochs)
    .bind(&counts)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    // (hub, stream) -> (epoch, next offset to give)
    let mut next: BTreeMap<(String, String), (String, u64)> = BTreeMap::new();
    for r in rows {
        let (k, s): (String, String) = (r.get(0), r.get(1));
        let top: i64 = r.get(3);
        let n = takes.get(&(k.as_str(), s.as_str())).map_or(0, |t| t.0);
        next.insert((k, s), (r.get(2), (top - n + 1) as u64));
    }
    let mut placed = Vec::with_capacity(msgs.len());
    let (mut hk, mut st, mut pos, mut body, mut bin, mut exp) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for m in msgs {
        let mut here = Vec::with_capacity(m.streams.len());
        for s in m.streams {
            let Some((epoch, n)) = next.get_mut(&(m.hub_key.to_string(), s.clone())) else {
                continue;
            };
            here.push(Placed {
                epoch: epoch.clone(),
                offset: *n,
            });
            hk.push(m.hub_key.to_string());
            st.push(s.clone());
            pos.push(*n as i64);
            body.push(m.body.to_vec());
            bin.push(m.binary);
            exp.push(now.saturating_add(m.ttl_ms));
            *n += 1;
        }
        placed.push(here);
    }
    sqlx::query(
        "INSERT INTO ws_history (hub_key, stream, pos, body, is_binary, published_at, expires_at) \
         SELECT k, s, p, b, i, $7, x FROM UNNEST($1::text[], $2::text[], $3::bigint[], \
         $4::bytea[], $5::bool[], $6::bigint[]) AS t(k, s, p, b, i, x)",
    )
    .bind(&hk)
    .bind(&st)
    .bind(&pos)
    .bind(&body)
    .bind(&bin)
    .bind(&exp)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    // What each stream keeps: its last `size` offsets.
    let (mut tk, mut ts, mut below) = (vec![], vec![], vec![]);
    for ((k, s), (_, n)) in &next {
        let n = *n;
        let size = takes.get(&(k.as_str(), s.as_str())).map_or(0, |t| t.1);
        tk.push(k.clone());
        ts.push(s.clone());
        below.push(n as i64 - size as i64);
    }
    sqlx::query(
        "DELETE FROM ws_history h USING UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(k, s, p) \
         WHERE h.hub_key = t.k AND h.stream = t.s AND h.pos < t.p",
    )
    .bind(&tk)
    .bind(&ts)
    .bind(&below)
    .execute(&mut **tx)
    .await?;
    Ok(placed)
}

/// A stream's epoch and last offset; made (offset 0, a new epoch) when
/// `make` and it does not exist.
pub async fn position(
    pool: &PgPool,
    hub_key: &str,
    stream: &str,
    make: bool,
    now: i64,
) -> Result<Option<Placed>> {
    if make {
        sqlx::query(
            "INSERT INTO ws_streams (hub_key, stream, epoch, top, touched_at) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (hub_key, stream) DO NOTHING",
        )
        .bind(hub_key)
        .bind(stream)
        .bind(new_epoch())
        .bind(now)
        .execute(pool)
        .await?;
    }
    let row = sqlx::query("SELECT epoch, top FROM ws_streams WHERE hub_key = $1 AND stream = $2")
        .bind(hub_key)
        .bind(stream)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| Placed {
        epoch: r.get(0),
        offset: r.get::<i64, _>(1) as u64,
    }))
}

/// What a stream keeps after `since` and before `now` expires it, oldest
/// first, at most `limit`.
pub async fn read(
    pool: &PgPool,
    hub_key: &str,
    stream: &str,
    since: u64,
    limit: i64,
    now: i64,
) -> Result<Vec<Kept>> {
    let rows = sqlx::query(
        "SELECT pos, body, is_binary, published_at FROM ws_history \
         WHERE hub_key = $1 AND stream = $2 AND pos > $3 AND expires_at > $4 \
         ORDER BY pos LIMIT $5",
    )
    .bind(hub_key)
    .bind(stream)
    .bind(since.min(i64::MAX as u64) as i64)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Deletes expired messages and long-idle empty streams.
pub async fn expire(pool: &PgPool, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM ws_history WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query(
        "DELETE FROM ws_streams s WHERE touched_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM ws_history h WHERE h.hub_key = s.hub_key AND h.stream = s.stream)",
    )
    .bind(now - IDLE_STREAM_MS)
    .execute(pool)
    .await?;
    Ok(())
}

/// Keeps each hub's history within `cap` bytes, dropping its oldest
/// messages first; answers how many went.
pub async fn cap_bytes(pool: &PgPool, cap: usize) -> Result<u64> {
    let cap = cap.min(i64::MAX as usize) as i64;
    let over: Vec<String> = sqlx::query_scalar(
        "SELECT hub_key FROM ws_history GROUP BY hub_key HAVING SUM(octet_length(body) + 64) > $1",
    )
    .bind(cap)
    .fetch_all(pool)
    .await?;
    let mut dropped = 0;
    for hub in over {
        let r = sqlx::query(
            "DELETE FROM ws_history h USING ( \
               SELECT stream, pos FROM ( \
                 SELECT stream, pos, SUM(octet_length(body) + 64) \
                   OVER (ORDER BY published_at DESC, pos DESC) AS kept \
                 FROM ws_history WHERE hub_key = $1) x \
               WHERE kept > $2) d \
             WHERE h.hub_key = $1 AND h.stream = d.stream AND h.pos = d.pos",
        )
        .bind(&hub)
        .bind(cap)
        .execute(pool)
        .await?;
        dropped += r.rows_affected();
    }
    Ok(dropped)
}
