//! Aggregates over op runs for `stats` and `batch_stats`.

use super::Db;
use super::Result;
use crate::ids::{CircleId, ElementId};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTotals {
    pub runs: i64,
    /// Runs that failed by the element's or the server's fault.
    pub errors: i64,
    /// Runs refused for the caller's mistakes.
    pub client_errors: i64,
    pub avg_duration_us: f64,
    pub cost_micro_au: i64,
}

// A row may fold several runs (`count`), with summed duration and cost.
const AGG: &str = "CAST(COALESCE(SUM(r.count), 0) AS BIGINT) AS runs, \
    CAST(COALESCE(SUM(CASE WHEN r.status = 'error' THEN r.count ELSE 0 END), 0) AS BIGINT) \
    AS errors, \
    CAST(COALESCE(SUM(CASE WHEN r.status = 'client_error' THEN r.count ELSE 0 END), 0) AS BIGINT) \
    AS client_errors, \
    CAST(COALESCE(SUM(r.duration_us), 0) AS DOUBLE PRECISION) \
    / CAST(COALESCE(NULLIF(SUM(r.count), 0), 1) AS DOUBLE PRECISION) AS avg_us, \
    CAST(COALESCE(SUM(r.cost_micro_au), 0) AS BIGINT) AS cost";

fn totals(r: &AnyRow) -> sqlx::Result<RunTotals> {
    Ok(RunTotals {
        runs: r.try_get("runs")?,
        errors: r.try_get("errors")?,
        client_errors: r.try_get("client_errors")?,
        avg_duration_us: r.try_get("avg_us")?,
        cost_micro_au: r.try_get("cost")?,
    })
}

impl Db {
    pub async fn run_totals(&self, element_id: &ElementId, since_ms: i64) -> Result<RunTotals> {
        let sql =
            format!("SELECT {AGG} FROM runs r WHERE r.element_id = $1 AND r.created_at >= $2");
        let row = sqlx::query(&sql)
            .bind(element_id)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(totals(&row)?)
    }

    /// Totals per live child of an element (for a circle, every element in
    /// it), in one GROUP BY query. Children without runs are absent.
    pub async fn child_run_totals(
        &self,
        parent_id: &ElementId,
        circle_id: Option<&CircleId>,
        since_ms: i64,
    ) -> Result<Vec<(ElementId, RunTotals)>> {
        let sql = format!(
            "SELECT r.element_id AS element_id, {AGG} FROM runs r \
             JOIN elements e ON e.id = r.element_id \
             WHERE e.state <> 'deleted' AND (e.parent_id = $1 OR ($2 <> '' AND e.circle_id = $2 AND e.namespace <> '')) \
             AND r.created_at >= $3 GROUP BY r.element_id"
        );
        let rows = sqlx::query(&sql)
            .bind(parent_id)
            .bind(circle_id.map_or("", CircleId::as_str))
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("element_id")?, totals(r)?)))
            .collect()
    }
}
