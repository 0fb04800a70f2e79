//! Presence of several nodes on one PostgreSQL database: each
//! node's heartbeat (`cluster_nodes`), one row per client connection
//! (`ws_connections`) and messages too big for one NOTIFY
//! (`cluster_payloads`). Times are the database's clock, in ms, so nodes
//! need not agree on theirs. The LISTEN/NOTIFY plumbing is the cluster's;
//! this is only its SQL. Nothing here runs per client message. A row's
//! `element_id` column holds the key of the hub the connection is on
//! (the element id, with `~demo` or `~draft` for those environments).

use super::Result;
use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::Row;
use std::sync::LazyLock;

/// A node whose heartbeat is older than this is dead.
pub const STALE_MS: i64 = 10_000;
/// Dead nodes' rows are deleted once their heartbeat is this old.
const SWEEP_MS: i64 = 3 * STALE_MS;
/// Stored payloads are read within moments; older ones are swept.
const PAYLOAD_TTL_MS: i64 = 60_000;
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The one test of a live node, on a `cluster_nodes` row named `n`.
pub(super) static ALIVE: LazyLock<String> =
    LazyLock::new(|| format!("n.heartbeat_at > {NOW_MS} - {STALE_MS}"));

/// Presence rows (`c`) of live nodes only.
static LIVE_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "ws_connections c JOIN cluster_nodes n ON n.node_id = c.node_id AND {}",
        *ALIVE
    )
});

/// A connection held by another live node, as its row says.
#[derive(Debug, Clone)]
pub struct RemoteConnection {
    pub connection_id: String,
    pub node_id: String,
    pub rooms: Vec<String>,
    pub remote: String,
    pub connected_at: i64,
    pub messages_in: i64,
    pub messages_out: i64,
    /// When its node last wrote the counters (None: never).
    pub counted_at: Option<i64>,
    pub user: Option<String>,
    /// The user's info, as JSON text.
    pub info: Option<String>,
}

/// One of this node's connections, written again after a stall.
pub struct Held {
    pub connection_id: String,
    pub hub_key: String,
    pub rooms: Vec<String>,
    pub remote: String,
    pub connected_at: i64,
    pub user: Option<String>,
    /// As JSON text.
    pub info: Option<String>,
    /// Whether its hub tells presence events (its room users are written).
    pub presence_events: bool,
}

/// This node's view of the presence tables.
#[derive(Clone)]
pub struct Presence {
    pool: PgPool,
    node_id: String,
}

impl Presence {
    pub fn new(pool: PgPool, node_id: String) -> Presence {
        Presence { pool, node_id }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Refreshes this node's heartbeat; true when its presence must be
    /// written again: its row had to be created (first start, or other
    /// nodes swept it as dead), or another node reaped its room users.
    pub async fn heartbeat(&self) -> Result<bool> {
        let again = sqlx::query_scalar(&format!(
            "WITH old AS (SELECT reaped_by FROM cluster_nodes WHERE node_id = $1) \
             INSERT INTO cluster_nodes (node_id, heartbeat_at) VALUES ($1, {NOW_MS}) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, reaped_by = NULL \
             RETURNING (xmax = 0) OR EXISTS (SELECT 1 FROM old WHERE reaped_by IS NOT NULL)"
        ))
        .bind(&self.node_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(again)
    }

    /// Whether another live node exists.
    pub async fn others_alive(&self) -> Result<bool> {
        let any = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id <> $1 AND {})",
            *ALIVE
        ))
        .bind(&self.node_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(any)
    }

    /// Deletes what dead nodes left behind and old stored payloads. Every
    /// statement runs; the first failure is answered.
    pub async fn sweep(&self) -> Result<()> {
        let sweep = [
            format!("DELETE FROM cluster_nodes WHERE heartbeat_at < {NOW_MS} - {SWEEP_MS}"),
            "DELETE FROM ws_connections c WHERE NOT EXISTS \
             (SELECT 1 FROM cluster_nodes n WHERE n.node_id = c.node_id)"
                .to_string(),
            "DELETE FROM ws_room_users u WHERE NOT EXISTS \
             (SELECT 1 FROM cluster_nodes n WHERE n.node_id = u.node_id)"
                .to_string(),
            format!("DELETE FROM cluster_payloads WHERE created_at < {NOW_MS} - {PAYLOAD_TTL_MS}"),
        ];
        let mut first = Ok(());
        for q in sweep {
            if let Err(e) = sqlx::query(&q).execute(&self.pool).await {
                if first.is_ok() {
                    first = Err(e.into());
                }
            }
        }
        first
    }

    /// This node leaves: its presence rows and its node row go.
    pub async fn leave(&self) -> Result<()> {
        for q in [
            "DELETE FROM ws_connections WHERE node_id = $1",
            "DELETE FROM ws_room_users WHERE node_id = $1",
            "DELETE FROM cluster_nodes WHERE node_id = $1",
        ] {
            sqlx::query(q)
                .bind(&self.node_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Reserves a presence row under `max` connections of the hub on all
    /// live nodes; false when they already hold `max`. Race-safe: one
    /// transaction per hub at a time.
    pub async fn admit(
        &self,
        hub_key: &str,
        connection_id: &str,
        max: usize,
        rooms: &[String],
        remote: &str,
        user: Option<(&str, Option<&serde_json::Value>)>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
            .bind(hub_key)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {} WHERE c.element_id = $1",
            *LIVE_ROWS
        ))
        .bind(hub_key)
        .fetch_one(&mut *tx)
        .await?;
        if n as usize >= max {
            return Ok(false);
        }
        sqlx::query(&format!(
            "INSERT INTO ws_connections (connection_id, element_id, node_id, rooms, remote, connected_at, user_id, info) \
             VALUES ($1, $2, $3, $4, $5, {NOW_MS}, $6, $7)"
        ))
        .bind(connection_id)
        .bind(hub_key)
        .bind(&self.node_id)
        .bind(json!(rooms).to_string())
        .bind(remote)
        .bind(user.map(|(u, _)| u))
        .bind(user.and_then(|(_, i)| i).map(|i| i.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Writes a connection's row again (after this node was swept).
    pub async fn restore(&self, c: &Held) -> Result<()> {
        sqlx::query(
            "INSERT INTO ws_connections (connection_id, element_id, node_id, rooms, remote, connected_at, user_id, info) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (connection_id) DO NOTHING",
        )
        .bind(&c.connection_id)
        .bind(&c.hub_key)
        .bind(&self.node_id)
        .bind(json!(c.rooms).to_string())
        .bind(&c.remote)
        .bind(c.connected_at)
        .bind(&c.user)
        .bind(&c.info)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_rooms(&self, connection_id: &str, rooms: &[String]) -> Result<()> {
        sqlx::query("UPDATE ws_connections SET rooms = $2 WHERE connection_id = $1")
            .bind(connection_id)
            .bind(json!(rooms).to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete(&self, connection_ids: &[String]) -> Result<()> {
        sqlx::query("DELETE FROM ws_connections WHERE connection_id = ANY($1)")
            .bind(connection_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes message counters of this node's connections in one statement.
    pub async fn write_counters(&self, ids: &[String], ins: &[i64], outs: &[i64]) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE ws_connections c SET messages_in = u.i, messages_out = u.o, counted_at = {NOW_MS} \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS u(id, i, o) \
             WHERE c.connection_id = u.id AND c.node_id = $4"
        ))
        .bind(ids)
        .bind(ins)
        .bind(outs)
        .bind(&self.node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The other live node holding a connection of the hub, if any.
    /// This node's rows are not asked: its hub knows better (a row may
    /// outlive its connection by the moment its deletion takes).
    pub async fn holder(&self, hub_key: &str, connection_id: &str) -> Result<Option<String>> {
        let node = sqlx::query_scalar(&format!(
            "SELECT c.node_id FROM {} \
             WHERE c.element_id = $1 AND c.connection_id = $2 AND c.node_id <> $3",
            *LIVE_ROWS
        ))
        .bind(hub_key)
        .bind(connection_id)
        .bind(&self.node_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(node)
    }

    /// Connections of the hub held by other live nodes (optionally
    /// members of `room`, or of `user`), oldest first.
    pub async fn remote(
        &self,
        hub_key: &str,
        room: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<RemoteConnection>> {
        let rows = sqlx::query(&format!(
            "SELECT c.connection_id, c.node_id, c.rooms, c.remote, c.connected_at, \
             c.messages_in, c.messages_out, c.counted_at, c.user_id, c.info FROM {} \
             WHERE c.element_id = $1 AND c.node_id <> $2 \
             AND ($3::text IS NULL OR c.rooms::jsonb ? $3) \
             AND ($4::text IS NULL OR c.user_id = $4) \
             ORDER BY c.connected_at, c.connection_id",
            *LIVE_ROWS
        ))
        .bind(hub_key)
        .bind(&self.node_id)
        .bind(room)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let conns = rows
            .iter()
            .map(|r| {
                let rooms: String = r.try_get("rooms")?;
                Ok(RemoteConnection {
                    connection_id: r.try_get("connection_id")?,
                    node_id: r.try_get("node_id")?,
                    rooms: serde_json::from_str(&rooms).unwrap_or_default(),
                    remote: r.try_get("remote")?,
                    connected_at: r.try_get("connected_at")?,
                    messages_in: r.try_get("messages_in")?,
                    messages_out: r.try_get("messages_out")?,
                    counted_at: r.try_get("counted_at")?,
                    user: r.try_get("user_id")?,
                    info: r.try_get("info")?,
                })
            })
            .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(conns)
    }

    /// How many connections of the hub other live nodes hold
    /// (optionally members of `room`).
    pub async fn remote_count(&self, hub_key: &str, room: Option<&str>) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {} WHERE c.element_id = $1 AND c.node_id <> $2 \
             AND ($3::text IS NULL OR c.rooms::jsonb ? $3)",
            *LIVE_ROWS
        ))
        .bind(hub_key)
        .bind(&self.node_id)
        .bind(room)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as usize)
    }

    /// Stores a message too big for one NOTIFY; answers its id.
    pub async fn store_payload(&self, body: &str) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        store_payload_in(&mut conn, body).await
    }

    pub async fn payload(&self, id: i64) -> Result<String> {
        let body = sqlx::query_scalar("SELECT body FROM cluster_payloads WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(body)
    }
}

/// Stores a payload too big for NOTIFY (inside the caller's transaction
/// when it holds one); answers its id.
pub async fn store_payload_in(conn: &mut sqlx::PgConnection, body: &str) -> Result<i64> {
    let id = sqlx::query_scalar(&format!(
        "INSERT INTO cluster_payloads (body, created_at) VALUES ($1, {NOW_MS}) RETURNING id"
    ))
    .bind(body)
    .fetch_one(conn)
    .await?;
    Ok(id)
}
