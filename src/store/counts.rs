//! What a circle holds, counted for its quotas.

use super::{Db, Result};
use crate::ids::CircleId;
use sqlx::Row;

impl Db {
    /// Elements of a circle that are not deleted (the circle not counted).
    pub async fn count_elements(&self, circle_id: &CircleId) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM elements \
             WHERE circle_id = $1 AND id <> $1 AND state <> 'deleted'",
        )
        .bind(circle_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Versions of every element of a circle, the circle's own included.
    pub async fn count_versions(&self, circle_id: &CircleId) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM element_versions v \
             JOIN elements e ON e.id = v.element_id WHERE e.circle_id = $1",
        )
        .bind(circle_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Ids of every element of a circle, deleted ones too (their
    /// repositories stay on disk).
    pub async fn element_ids_in(&self, circle_id: &CircleId) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM elements WHERE circle_id = $1")
            .bind(circle_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
