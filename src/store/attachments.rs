//! Attachments: modifiers and resources attached to an element.

use super::Db;
use super::Result;
use crate::model::{Element, Role};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub id: String,
    pub element_id: String,
    pub source_id: String,
    pub priority: i64,
    pub pin_version: Option<i64>,
    /// The role of the token that attached it (None: before roles were
    /// kept, which counts as admin).
    pub attached_role: Option<Role>,
    pub created_at: i64,
}

fn attachment(r: &AnyRow) -> sqlx::Result<AttachmentRow> {
    Ok(AttachmentRow {
        id: r.try_get("id")?,
        element_id: r.try_get("element_id")?,
        source_id: r.try_get("source_id")?,
        priority: r.try_get("priority")?,
        pin_version: r.try_get("pin_version")?,
        attached_role: r
            .try_get::<Option<String>, _>("attached_role")?
            .as_deref()
            .and_then(Role::parse),
        created_at: r.try_get("created_at")?,
    })
}

const COLS: &str = "id, element_id, source_id, priority, pin_version, attached_role, created_at";

impl Db {
    /// Attachments of an element, highest priority (lowest number) first.
    pub async fn attachments_of(&self, element_id: &str) -> Result<Vec<AttachmentRow>> {
        let sql = format!("SELECT {COLS} FROM attachments WHERE element_id = $1 ORDER BY priority, created_at, id");
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(attachment).collect::<sqlx::Result<_>>()?)
    }

    /// The elements attached to an element, each with its version pin,
    /// highest priority first, in one query.
    pub async fn attached_sources(&self, element_id: &str) -> Result<Vec<(Option<i64>, Element)>> {
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

    /// Where an element is attached as a modifier or resource.
    pub async fn attached_to(&self, source_id: &str) -> Result<Vec<AttachmentRow>> {
        let sql =
            format!("SELECT {COLS} FROM attachments WHERE source_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(source_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(attachment).collect::<sqlx::Result<_>>()?)
    }
}

pub async fn insert_attachment(tx: &mut Transaction<'_, Any>, a: &AttachmentRow) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO attachments ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
    ))
    .bind(&a.id)
    .bind(&a.element_id)
    .bind(&a.source_id)
    .bind(a.priority)
    .bind(a.pin_version)
    .bind(a.attached_role.map(Role::as_str))
    .bind(a.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes one attachment of an element; false when there was none.
pub async fn delete_attachment(
    tx: &mut Transaction<'_, Any>,
    element_id: &str,
    id: &str,
) -> Result<bool> {
    let r = sqlx::query("DELETE FROM attachments WHERE id = $1 AND element_id = $2")
        .bind(id)
        .bind(element_id)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}
