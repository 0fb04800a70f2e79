//! Presence events exactly once across nodes: `ws_room_users` holds a
//! row per node that has a user's connection in a room. Each change runs
//! under one advisory lock per (hub, room, user): a join is the user's
//! arrival when this node's new row is the only live one; a leave is its
//! leaving when the deleted row was the last live one.

use super::presence::{Presence, ALIVE};
use super::Result;
use sqlx::{Postgres, Transaction};

/// A user's presence in a room, as a dead node left it.
pub struct RoomUser {
    pub hub_key: String,
    pub room: String,
    pub user: String,
    /// As JSON text.
    pub info: Option<String>,
}

async fn lock_user(
    tx: &mut Transaction<'_, Postgres>,
    hub_key: &str,
    room: &str,
    user: &str,
) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext($1 || chr(10) || $2 || chr(10) || $3))::text",
    )
    .bind(hub_key)
    .bind(room)
    .bind(user)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn live_rows(
    tx: &mut Transaction<'_, Postgres>,
    hub_key: &str,
    room: &str,
    user: &str,
) -> Result<i64> {
    let n = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM ws_room_users u JOIN cluster_nodes n \
         ON n.node_id = u.node_id AND {} \
         WHERE u.hub_key = $1 AND u.room = $2 AND u.user_id = $3",
        *ALIVE
    ))
    .bind(hub_key)
    .bind(room)
    .bind(user)
    .fetch_one(&mut **tx)
    .await?;
    Ok(n)
}

impl Presence {
    /// This node got its first connection of `user` in `room` (`joined`)
    /// or lost its last one; true when that is the user's arrival or
    /// leaving across every live node (the caller tells the members).
    pub async fn move_user(
        &self,
        hub_key: &str,
        room: &str,
        user: &str,
        info: Option<&str>,
        joined: bool,
    ) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        lock_user(&mut tx, hub_key, room, user).await?;
        let changed = if joined {
            sqlx::query(
                "INSERT INTO ws_room_users (hub_key, room, user_id, node_id, info) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(hub_key)
            .bind(room)
            .bind(user)
            .bind(self.node_id())
            .bind(info)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            self.delete_row(&mut tx, hub_key, room, user, self.node_id())
                .await?
        };
        let n = live_rows(&mut tx, hub_key, room, user).await?;
        tx.commit().await?;
        Ok(changed == 1 && if joined { n == 1 } else { n == 0 })
    }

    async fn delete_row(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        hub_key: &str,
        room: &str,
        user: &str,
        node: &str,
    ) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM ws_room_users \
             WHERE hub_key = $1 AND room = $2 AND user_id = $3 AND node_id = $4",
        )
        .bind(hub_key)
        .bind(room)
        .bind(user)
        .bind(node)
        .execute(&mut **tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Takes out the room users of `node` (a dead one, or this one
    /// leaving); answers those whose user is now nowhere in the room
    /// (the leaves to tell).
    pub async fn drop_room_users(&self, node: &str) -> Result<Vec<RoomUser>> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT hub_key, room, user_id, info FROM ws_room_users WHERE node_id = $1",
        )
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        let mut gone = Vec::new();
        for (hub_key, room, user, info) in rows {
            let mut tx = self.pool().begin().await?;
            lock_user(&mut tx, &hub_key, &room, &user).await?;
            let deleted = self
                .delete_row(&mut tx, &hub_key, &room, &user, node)
                .await?;
            let n = live_rows(&mut tx, &hub_key, &room, &user).await?;
            tx.commit().await?;
            if deleted == 1 && n == 0 {
                gone.push(RoomUser {
                    hub_key,
                    room,
                    user,
                    info,
                });
            }
        }
        Ok(gone)
    }

    /// Claims the dead nodes nobody reaped yet (one node wins each) and
    /// takes out their room users; answers the leaves to tell.
    pub async fn reap_dead(&self) -> Result<Vec<RoomUser>> {
        let dead: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE cluster_nodes AS n SET reaped_by = $1 \
             WHERE n.node_id <> $1 AND n.reaped_by IS NULL AND NOT ({}) \
             RETURNING n.node_id",
            *ALIVE
        ))
        .bind(self.node_id())
        .fetch_all(self.pool())
        .await?;
        let mut gone = Vec::new();
        for node in dead {
            gone.extend(self.drop_room_users(&node).await?);
        }
        Ok(gone)
    }
}
