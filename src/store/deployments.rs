//! What demo and live run (deployments), how they came to (promotions),
//! and the members a manifest froze (snapshots).

use super::{json_col, Db, Result, Tx};
use crate::ids::{CircleId, ElementId};
use crate::model::Env;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

/// An environment's current release: its branch's commit, the version that
/// commit records, and that version's spec.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub element_id: ElementId,
    pub env: Env,
    pub commit: String,
    pub version: i64,
    pub spec: Value,
    pub promoted_at: i64,
    pub promoted_by: String,
}

/// One promotion or rollback.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub id: String,
    pub element_id: ElementId,
    pub env: Env,
    pub from_commit: Option<String>,
    pub to_commit: String,
    pub version: i64,
    pub actor: String,
    pub message: Option<String>,
    pub rollback: bool,
    pub snapshot_id: Option<String>,
    pub created_at: i64,
}

/// A manifest's members as one promotion froze them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub element_id: ElementId,
    pub env: Env,
    pub members: Value,
    pub actor: String,
    pub message: Option<String>,
    pub created_at: i64,
}

fn env_col(r: &AnyRow) -> sqlx::Result<Env> {
    let s: String = r.try_get("env")?;
    Env::parse(&s).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "env".into(),
        source: format!("unknown environment '{s}'").into(),
    })
}

fn deployment(r: &AnyRow) -> sqlx::Result<Deployment> {
    Ok(Deployment {
        element_id: r.try_get("element_id")?,
        env: env_col(r)?,
        commit: r.try_get("commit_id")?,
        version: r.try_get("version")?,
        spec: json_col(r, "spec")?,
        promoted_at: r.try_get("promoted_at")?,
        promoted_by: r.try_get("promoted_by")?,
    })
}

fn promotion(r: &AnyRow) -> sqlx::Result<Promotion> {
    Ok(Promotion {
        id: r.try_get("id")?,
        element_id: r.try_get("element_id")?,
        env: env_col(r)?,
        from_commit: r.try_get("from_commit")?,
        to_commit: r.try_get("to_commit")?,
        version: r.try_get("version")?,
        actor: r.try_get("actor")?,
        message: r.try_get("message")?,
        rollback: r.try_get::<i64, _>("rollback")? != 0,
        snapshot_id: r.try_get("snapshot_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn snapshot(r: &AnyRow) -> sqlx::Result<Snapshot> {
    Ok(Snapshot {
        id: r.try_get("id")?,
        element_id: r.try_get("element_id")?,
        env: env_col(r)?,
        members: json_col(r, "members")?,
        actor: r.try_get("actor")?,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
    })
}

const DEPLOYMENT: &str = "element_id, env, commit_id, version, spec, promoted_at, promoted_by";
const PROMOTION: &str = "id, element_id, env, from_commit, to_commit, version, actor, message, \
                         rollback, snapshot_id, created_at";
const SNAPSHOT: &str = "id, element_id, env, members, actor, message, created_at";

impl Db {
    /// The demo and live releases of an element.
    pub async fn deployments(&self, element_id: &ElementId) -> Result<Vec<Deployment>> {
        let sql =
            format!("SELECT {DEPLOYMENT} FROM deployments WHERE element_id = $1 ORDER BY env");
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(deployment).collect::<sqlx::Result<_>>()?)
    }

    pub async fn deployment(&self, element_id: &ElementId, env: Env) -> Result<Option<Deployment>> {
        let sql =
            format!("SELECT {DEPLOYMENT} FROM deployments WHERE element_id = $1 AND env = $2");
        let row = sqlx::query(&sql)
            .bind(element_id)
            .bind(env.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(deployment).transpose()?)
    }

    /// Releases and rollbacks, newest first.
    pub async fn promotions(
        &self,
        element_id: &ElementId,
        env: Option<Env>,
        limit: i64,
    ) -> Result<Vec<Promotion>> {
        let sql = format!(
            "SELECT {PROMOTION} FROM promotions WHERE element_id = $1 AND ($2 = '' OR env = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .bind(env.map_or("", Env::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(promotion).collect::<sqlx::Result<_>>()?)
    }

    /// A manifest's snapshots, newest first.
    pub async fn snapshots(
        &self,
        element_id: &ElementId,
        env: Option<Env>,
        limit: i64,
    ) -> Result<Vec<Snapshot>> {
        let sql = format!(
            "SELECT {SNAPSHOT} FROM snapshots WHERE element_id = $1 AND ($2 = '' OR env = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .bind(env.map_or("", Env::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(snapshot).collect::<sqlx::Result<_>>()?)
    }

    pub async fn snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        let sql = format!("SELECT {SNAPSHOT} FROM snapshots WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(snapshot).transpose()?)
    }

    /// What the other elements of `types` in a circle release in `env`:
    /// (slug, spec).
    pub async fn released_in(
        &self,
        circle_id: &CircleId,
        env: Env,
        except: &str,
        types: &[String],
    ) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query(
            "SELECT e.slug AS slug, e.element_type AS element_type, d.spec AS spec \
             FROM deployments d JOIN elements e ON e.id = d.element_id \
             WHERE e.circle_id = $1 AND d.env = $2 AND e.id <> $3 AND e.state <> 'deleted' \
             AND e.namespace <> ''",
        )
        .bind(circle_id)
        .bind(env.as_str())
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let ty: String = r.try_get("element_type")?;
            if types.contains(&ty) {
                out.push((r.try_get("slug")?, json_col(r, "spec")?));
            }
        }
        Ok(out)
    }

    /// Elements that are not deleted and have no release recorded.
    pub async fn elements_without_releases(&self) -> Result<Vec<ElementId>> {
        let rows = sqlx::query(
            "SELECT id FROM elements e WHERE state <> 'deleted' \
             AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.element_id = e.id)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Fills in the commit of releases made before git had one (creation
    /// writes the database first).
    pub async fn set_initial_commit(&self, element_id: &ElementId, commit: &str) -> Result<()> {
        for table in ["deployments", "promotions"] {
            let column = if table == "deployments" {
                "commit_id"
            } else {
                "to_commit"
            };
            sqlx::query(&format!(
                "UPDATE {table} SET {column} = $1 WHERE element_id = $2 AND {column} = ''"
            ))
            .bind(commit)
            .bind(element_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// Writes an environment's release if it is still at `expected` (the
/// commit it was read at; None when there was no release). False when
/// another promotion got there first.
pub async fn set_deployment(tx: &mut Tx, d: &Deployment, expected: Option<&str>) -> Result<bool> {
    let r = match expected {
        None => {
            sqlx::query(&format!(
                "INSERT INTO deployments ({DEPLOYMENT}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
            ))
            .bind(&d.element_id)
            .bind(d.env.as_str())
            .bind(&d.commit)
            .bind(d.version)
            .bind(d.spec.to_string())
            .bind(d.promoted_at)
            .bind(&d.promoted_by)
            .execute(&mut **tx)
            .await?
        }
        Some(old) => {
            sqlx::query(
                "UPDATE deployments SET commit_id = $1, version = $2, spec = $3, \
                 promoted_at = $4, promoted_by = $5 \
                 WHERE element_id = $6 AND env = $7 AND commit_id = $8",
            )
            .bind(&d.commit)
            .bind(d.version)
            .bind(d.spec.to_string())
            .bind(d.promoted_at)
            .bind(&d.promoted_by)
            .bind(&d.element_id)
            .bind(d.env.as_str())
            .bind(old)
            .execute(&mut **tx)
            .await?
        }
    };
    Ok(r.rows_affected() == 1)
}

pub async fn insert_promotion(tx: &mut Tx, p: &Promotion) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO promotions ({PROMOTION}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
    ))
    .bind(&p.id)
    .bind(&p.element_id)
    .bind(p.env.as_str())
    .bind(&p.from_commit)
    .bind(&p.to_commit)
    .bind(p.version)
    .bind(&p.actor)
    .bind(&p.message)
    .bind(i64::from(p.rollback))
    .bind(&p.snapshot_id)
    .bind(p.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The first promotion of an environment, as git shows it: replaces the
/// one creation recorded (whose commit git had not made yet), if any.
pub async fn replace_first_promotion(tx: &mut Tx, p: &Promotion) -> Result<()> {
    sqlx::query("DELETE FROM promotions WHERE element_id = $1 AND env = $2 AND to_commit = ''")
        .bind(&p.element_id)
        .bind(p.env.as_str())
        .execute(&mut **tx)
        .await?;
    insert_promotion(tx, p).await
}

pub async fn insert_snapshot(tx: &mut Tx, s: &Snapshot) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO snapshots ({SNAPSHOT}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
    ))
    .bind(&s.id)
    .bind(&s.element_id)
    .bind(s.env.as_str())
    .bind(s.members.to_string())
    .bind(&s.actor)
    .bind(&s.message)
    .bind(s.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
