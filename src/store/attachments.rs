//! Attachments: modifiers and resources attached to an element.

use super::Db;
use super::Result;
use crate::ids::{CircleId, ElementId};
use crate::model::{Cascade, Element, Role};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub id: String,
    pub element_id: ElementId,
    pub source_id: ElementId,
    pub priority: i64,
    pub pin_version: Option<i64>,
    /// The role of the token that attached it (None: before roles were
    /// kept, which counts as admin).
    pub attached_role: Option<Role>,
    /// How far below `element_id` it applies.
    pub cascade: Cascade,
    pub created_at: i64,
}

fn attachment(r: &AnyRow) -> sqlx::Result<AttachmentRow> {
    read(r, "")
}

/// An attachment's columns, each named with `prefix` first.
fn read(r: &AnyRow, prefix: &str) -> sqlx::Result<AttachmentRow> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(AttachmentRow {
        id: r.try_get(col("id").as_str())?,
        element_id: r.try_get(col("element_id").as_str())?,
        source_id: r.try_get(col("source_id").as_str())?,
        priority: r.try_get(col("priority").as_str())?,
        pin_version: r.try_get(col("pin_version").as_str())?,
        attached_role: r
            .try_get::<Option<String>, _>(col("attached_role").as_str())?
            .as_deref()
            .and_then(Role::parse),
        cascade: Cascade::parse(&r.try_get::<String, _>(col("cascade_policy").as_str())?)
            .unwrap_or(Cascade::None),
        created_at: r.try_get(col("created_at").as_str())?,
    })
}

const COLS: &str =
    "id, element_id, source_id, priority, pin_version, attached_role, cascade_policy, created_at";

impl Db {
    /// Attachments of an element, highest priority (lowest number) first.
    pub async fn attachments_of(&self, element_id: &ElementId) -> Result<Vec<AttachmentRow>> {
        let sql = format!("SELECT {COLS} FROM attachments WHERE element_id = $1 ORDER BY priority, created_at, id");
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(attachment).collect::<sqlx::Result<_>>()?)
    }

    /// The elements attached to an element, each with its version pin,
    /// highest priority first, in one query.
    pub async fn attached_sources(
        &self,
        element_id: &ElementId,
    ) -> Result<Vec<(Option<i64>, Element)>> {
        let cols: Vec<String> = super::elements::COLS
            .split(',')
            .map(|c| format!("e.{}", c.trim()))
            .collect();
        let sql = format!(
            "SELECT {}, a.pin_version FROM attachments a JOIN elements e ON e.id = a.source_id \
             WHERE a.element_id = $1 ORDER BY a.priority, a.created_at, a.id",
            cols.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("pin_version")?, super::elements::element(r)?)))
            .collect::<sqlx::Result<_>>()?)
    }

    /// The attachments of a circle that reach below their carrier, each
    /// with the element attached, in one query (usually none).
    pub async fn cascading_in(
        &self,
        circle_id: &CircleId,
    ) -> Result<Vec<(AttachmentRow, Element)>> {
        let cols: Vec<String> = super::elements::COLS
            .split(',')
            .map(|c| format!("e.{}", c.trim()))
            .collect();
        let acols: Vec<String> = COLS
            .split(',')
            .map(|c| format!("a.{} AS a_{}", c.trim(), c.trim()))
            .collect();
        let sql = format!(
            "SELECT {}, {} FROM attachments a JOIN elements t ON t.id = a.element_id \
             JOIN elements e ON e.id = a.source_id \
             WHERE t.circle_id = $1 AND a.cascade_policy <> 'none' \
             ORDER BY a.priority, a.created_at, a.id",
            cols.join(", "),
            acols.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(circle_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((read(r, "a_")?, super::elements::element(r)?)))
            .collect::<sqlx::Result<_>>()?)
    }

    /// Where an element is attached as a modifier or resource.
    pub async fn attached_to(&self, source_id: &ElementId) -> Result<Vec<AttachmentRow>> {
        let sql =
            format!("SELECT {COLS} FROM attachments WHERE source_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(source_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(attachment).collect::<sqlx::Result<_>>()?)
    }
}

pub async fn insert_attachment(tx: &mut super::Tx, a: &AttachmentRow) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO attachments ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
    ))
    .bind(&a.id)
    .bind(&a.element_id)
    .bind(&a.source_id)
    .bind(a.priority)
    .bind(a.pin_version)
    .bind(a.attached_role.map(Role::as_str))
    .bind(a.cascade.as_str())
    .bind(a.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes one attachment of an element; false when there was none.
pub async fn delete_attachment(
    tx: &mut super::Tx,
    element_id: &ElementId,
    id: &str,
) -> Result<bool> {
    let r = sqlx::query("DELETE FROM attachments WHERE id = $1 AND element_id = $2")
        .bind(id)
        .bind(element_id)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}
