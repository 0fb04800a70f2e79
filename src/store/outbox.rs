//! The webhook outbox (SPEC 10.2): deliveries written with their events,
//! claimed under a lease, finished, listed and sent again.

use super::{Backend, Db, Result, Tx};
use crate::ids::{CircleId, ElementId};
use crate::model::{now_ms, Event};
use crate::webhook::{WebhookSpec, MAX_PENDING};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeSet;

/// The element type whose elements receive events. The store reads specs
/// by type elsewhere too (`elements_of_types`); this one is asked on every
/// event write, so it is a constant rather than a registry lookup.
pub const WEBHOOK_TYPE: &str = "webhook";

/// Webhooks' own events (`webhook.test`) go to their webhook only, so no
/// webhook can feed another.
fn is_own(e: &Event) -> bool {
    e.kind.starts_with("webhook.")
}

/// What a receiver gets: `{"id","type","timestamp","data"}`, the event
/// as the activity stream shows it in `data`.
pub fn body(event: &Event) -> String {
    // As non-admin stream readers see it: a client's address stays here.
    let data = event.to_json_for(false);
    json!({
        "id": event.id,
        "type": event.kind,
        "timestamp": crate::model::rfc3339(event.at),
        "data": data,
    })
    .to_string()
}

/// One attachment of a ready webhook of the circle, with what it is on.
struct Route {
    webhook_id: String,
    spec: WebhookSpec,
    target_id: String,
    target_is_circle: bool,
    cascades: bool,
    /// A manifest's members (slugs), which a cascade reaches.
    members: Vec<String>,
}

impl Route {
    /// Whether an event of an element of the circle reaches this webhook.
    fn reaches(&self, e: &Event) -> bool {
        let on_target = e.element_id.as_deref() == Some(self.target_id.as_str());
        if on_target || (self.target_is_circle && e.element_id.is_none()) {
            return true;
        }
        if !self.cascades {
            return false;
        }
        // Elements sit flat under their circle; a manifest reaches its
        // members.
        self.target_is_circle || e.slug.as_ref().is_some_and(|s| self.members.contains(s))
    }
}

/// Whether the circle has a ready webhook attached anywhere: a read
/// outside any transaction, so a write that no webhook can want stays
/// as cheap as before.
pub(super) async fn has_routes(pool: &sqlx::AnyPool, circle_id: &CircleId) -> Result<bool> {
    let row = sqlx::query(
        "SELECT w.id FROM elements w JOIN attachments a ON a.source_id = w.id \
         WHERE w.circle_id = $1 AND w.element_type = $2 AND w.state = 'ready' LIMIT 1",
    )
    .bind(circle_id)
    .bind(WEBHOOK_TYPE)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

async fn routes(tx: &mut Tx, circle_id: &CircleId) -> Result<Vec<Route>> {
    let rows = sqlx::query(
        "SELECT w.id AS webhook_id, w.spec AS spec, t.id AS target_id, t.namespace AS target_ns, \
         t.spec AS target_spec, a.cascade_policy AS cascade_policy \
         FROM elements w JOIN attachments a ON a.source_id = w.id \
         JOIN elements t ON t.id = a.element_id \
         WHERE w.circle_id = $1 AND w.element_type = $2 AND w.state = 'ready' \
         AND t.state <> 'deleted'",
    )
    .bind(circle_id)
    .bind(WEBHOOK_TYPE)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let spec: String = r.try_get("spec")?;
        let Some(spec) = serde_json::from_str(&spec)
            .ok()
            .and_then(|v| WebhookSpec::of(&v))
        else {
            continue;
        };
        if !spec.enabled {
            continue;
        }
        let target_spec: String = r.try_get("target_spec")?;
        let members = serde_json::from_str(&target_spec)
            .map(|v| crate::model::strings_at(&v, "members"))
            .unwrap_or_default();
        out.push(Route {
            webhook_id: r.try_get("webhook_id")?,
            spec,
            target_id: r.try_get("target_id")?,
            target_is_circle: r.try_get::<String, _>("target_ns")?.is_empty(),
            cascades: r.try_get::<String, _>("cascade_policy")? != "none",
            members,
        });
    }
    Ok(out)
}

/// Writes the deliveries of `events` inside the transaction that writes
/// them: one row per event and webhook that wants it, however many ways
/// the webhook reaches the event. Each webhook keeps at most
/// [`MAX_PENDING`] pending; older ones are dropped and counted.
pub(super) async fn enqueue<E: std::borrow::Borrow<Event>>(
    tx: &mut Tx,
    events: &[E],
) -> Result<()> {
    let circles: BTreeSet<&CircleId> = events
        .iter()
        .map(E::borrow)
        .filter(|e| !is_own(e) && !e.circle_id.is_empty())
        .map(|e| &e.circle_id)
        .collect();
    let mut grown: BTreeSet<String> = BTreeSet::new();
    for circle in circles {
        let routes = routes(tx, circle).await?;
        if routes.is_empty() {
            continue;
        }
        for e in events
            .iter()
            .map(E::borrow)
            .filter(|e| e.circle_id == *circle && !is_own(e))
        {
            let mut wanted: Vec<&str> = routes
                .iter()
                .filter(|r| r.spec.wants(&e.kind) && r.reaches(e))
                .map(|r| r.webhook_id.as_str())
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            if wanted.is_empty() {
                continue;
            }
            let text = body(e);
            for w in wanted {
                insert(tx, w, e, &text).await?;
                grown.insert(w.to_string());
            }
        }
    }
    for w in grown {
        bound(tx, &w).await?;
    }
    Ok(())
}

/// One pending delivery, due now.
pub async fn insert(tx: &mut Tx, webhook_id: &str, e: &Event, body: &str) -> Result<()> {
    tx.wrote_outbox = true;
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhook_outbox (webhook_id, event_id, circle_id, kind, body, status, \
         attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) \
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind(webhook_id)
    .bind(&e.id)
    .bind(&e.circle_id)
    .bind(&e.kind)
    .bind(body)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Drops the oldest pending deliveries of a webhook past its bound.
async fn bound(tx: &mut Tx, webhook_id: &str) -> Result<()> {
    let pending: i64 = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM webhook_outbox \
         WHERE webhook_id = $1 AND status = 'pending'",
    )
    .bind(webhook_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    let over = pending - MAX_PENDING;
    if over <= 0 {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM webhook_outbox WHERE webhook_id = $1 AND event_id IN \
         (SELECT event_id FROM webhook_outbox WHERE webhook_id = $1 AND status = 'pending' \
          ORDER BY event_id LIMIT $2)",
    )
    .bind(webhook_id)
    .bind(over)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_drops (webhook_id, dropped) VALUES ($1, $2) \
         ON CONFLICT (webhook_id) DO UPDATE SET dropped = webhook_drops.dropped + excluded.dropped",
    )
    .bind(webhook_id)
    .bind(over)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery a node holds under its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub webhook_id: ElementId,
    pub event_id: String,
    pub body: String,
    pub attempts: i64,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: i64,
    },
    /// Tried again at `next_at` (ms), or failed for good when None.
    Retry {
        status: Option<i64>,
        error: String,
        next_at: Option<i64>,
    },
}

/// One row of `deliveries`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn delivery(r: &AnyRow) -> sqlx::Result<Delivery> {
    Ok(Delivery {
        event_id: r.try_get("event_id")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Db {
    /// Deletes delivered and failed rows last changed before `before` (ms).
    pub async fn sweep_deliveries(&self, before: i64) -> Result<u64> {
        self.unit(move |tx| {
            Box::pin(async move {
                let r = sqlx::query(
                    "DELETE FROM webhook_outbox WHERE status <> 'pending' AND updated_at < $1",
                )
                .bind(before)
                .execute(&mut **tx)
                .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    /// Whether any delivery is due and free: a read, so an idle worker
    /// never takes SQLite's write turn.
    pub async fn has_due_deliveries(&self) -> Result<bool> {
        let now = now_ms();
        let sql = format!(
            "SELECT event_id FROM webhook_outbox WHERE status = 'pending' \
             AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1{}) LIMIT 1",
            self.dead_holder()
        );
        let row = sqlx::query(&sql)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// PostgreSQL: a claim of a node whose heartbeat is stale (killed) is
    /// free at once; the lease is the fallback.
    fn dead_holder(&self) -> String {
        match self.backend {
            Backend::Postgres => format!(
                " OR NOT EXISTS (SELECT 1 FROM cluster_nodes n \
                 WHERE n.node_id = webhook_outbox.lease_node AND {})",
                *crate::store::presence::ALIVE
            ),
            Backend::Sqlite => String::new(),
        }
    }

    /// Takes up to `limit` due deliveries for `node` until `lease_until`
    /// (ms). On PostgreSQL rows another node is claiming are skipped, not
    /// waited for; an expired lease is taken over.
    pub async fn claim_deliveries(
        &self,
        node: &str,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let dead = self.dead_holder();
        let sql = format!(
            "UPDATE webhook_outbox SET lease_until = $1, lease_node = $2 \
             WHERE (webhook_id, event_id) IN (SELECT webhook_id, event_id FROM webhook_outbox \
               WHERE status = 'pending' AND next_attempt_at <= $3 \
               AND (lease_until IS NULL OR lease_until < $3{dead}) \
               ORDER BY next_attempt_at LIMIT $4{lock}) \
             RETURNING webhook_id, event_id, body, attempts"
        );
        let node = node.to_string();
        self.unit(move |tx| {
            Box::pin(async move {
                let rows = sqlx::query(&sql)
                    .bind(lease_until)
                    .bind(&node)
                    .bind(now_ms())
                    .bind(limit)
                    .fetch_all(&mut **tx)
                    .await?;
                let claimed = rows
                    .iter()
                    .map(|r| {
                        Ok(Claimed {
                            webhook_id: r.try_get("webhook_id")?,
                            event_id: r.try_get("event_id")?,
                            body: r.try_get("body")?,
                            attempts: r.try_get("attempts")?,
                        })
                    })
                    .collect::<sqlx::Result<Vec<_>>>()?;
                Ok(claimed)
            })
        })
        .await
    }

    /// Records an attempt of a delivery this node holds. False when the
    /// lease was lost meanwhile (another node took it over), in which case
    /// nothing changes here.
    pub async fn finish_delivery(&self, node: &str, c: &Claimed, a: &Attempt) -> Result<bool> {
        let (status, last_status, error, next_at) = match a {
            Attempt::Delivered { status } => ("delivered", Some(*status), None, None),
            Attempt::Retry {
                status,
                error,
                next_at: Some(t),
            } => ("pending", *status, Some(error.clone()), Some(*t)),
            Attempt::Retry {
                status,
                error,
                next_at: None,
            } => ("failed", *status, Some(error.clone()), None),
        };
        let (node, c) = (node.to_string(), c.clone());
        self.unit(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                let r = sqlx::query(
                    "UPDATE webhook_outbox SET status = $1, attempts = $2, last_status = $3, \
                     last_error = $4, next_attempt_at = $5, lease_until = NULL, lease_node = NULL, \
                     updated_at = $6 \
                     WHERE webhook_id = $7 AND event_id = $8 AND lease_node = $9 AND status = 'pending'",
                )
                .bind(status)
                .bind(c.attempts + 1)
                .bind(last_status)
                .bind(error)
                .bind(next_at.unwrap_or(now))
                .bind(now)
                .bind(&c.webhook_id)
                .bind(&c.event_id)
                .bind(&node)
                .execute(&mut **tx)
                .await?;
                Ok(r.rows_affected() == 1)
            })
        })
        .await
    }

    /// A webhook's deliveries, newest first, before `before` (an event id).
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT event_id, kind, status, attempts, last_status, last_error, next_attempt_at, \
             created_at, updated_at FROM webhook_outbox \
             WHERE webhook_id = $1 AND event_id < $2 ORDER BY event_id DESC LIMIT $3",
        )
        .bind(webhook_id)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(delivery).collect::<sqlx::Result<_>>()?)
    }

    /// How many pending deliveries a webhook's bound has dropped.
    pub async fn dropped_deliveries(&self, webhook_id: &ElementId) -> Result<i64> {
        let row = sqlx::query("SELECT dropped FROM webhook_drops WHERE webhook_id = $1")
            .bind(webhook_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("dropped")?,
            None => 0,
        })
    }

    /// Makes a delivery pending again, due now, with its attempts reset.
    /// None when the webhook has no such delivery.
    pub async fn redeliver(
        &self,
        webhook_id: &ElementId,
        event_id: &str,
    ) -> Result<Option<Delivery>> {
        let (w, e) = (webhook_id.to_string(), event_id.to_string());
        self.unit(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                let r = sqlx::query(
                    "UPDATE webhook_outbox SET status = 'pending', attempts = 0, \
                     next_attempt_at = $1, lease_until = NULL, lease_node = NULL, updated_at = $1 \
                     WHERE webhook_id = $2 AND event_id = $3",
                )
                .bind(now)
                .bind(&w)
                .bind(&e)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() == 0 {
                    return Ok(None);
                }
                tx.wrote_outbox = true;
                let row = sqlx::query(
                    "SELECT event_id, kind, status, attempts, last_status, last_error, \
                     next_attempt_at, created_at, updated_at FROM webhook_outbox \
                     WHERE webhook_id = $1 AND event_id = $2",
                )
                .bind(&w)
                .bind(&e)
                .fetch_one(&mut **tx)
                .await?;
                Ok(Some(delivery(&row)?))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_kind::EventKind;
    use crate::store::StoreError;
    use futures::FutureExt;

    /// The worker is woken by a commit that wrote deliveries, and only
    /// once it committed: a rolled-back or delivery-free write tells it
    /// nothing.
    #[tokio::test]
    async fn committed_deliveries_wake_the_worker_and_nothing_else_does() {
        let (_dir, db) = Db::scratch(Default::default()).await;
        let news = db.outbox_news();
        let e = Event::new("acme", &CircleId::stored("c1"), EventKind::ElementUpdated);
        let told = || news.notified().now_or_never().is_some();

        db.unit(|tx| {
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&mut **tx)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from)
            })
        })
        .await
        .unwrap();
        assert!(!told(), "a write without deliveries");

        let (e2, e3) = (e.clone(), e.clone());
        let failed: Result<()> = db
            .unit(move |tx| {
                Box::pin(async move {
                    insert(tx, "w1", &e2, "{}").await?;
                    Err(StoreError::Other(sqlx::Error::RowNotFound))
                })
            })
            .await;
        assert!(failed.is_err());
        assert!(!told(), "a rolled-back delivery");

        db.unit(move |tx| Box::pin(async move { insert(tx, "w1", &e3, "{}").await }))
            .await
            .unwrap();
        assert!(told(), "a committed delivery");
        assert!(!told(), "told once");
    }
}
