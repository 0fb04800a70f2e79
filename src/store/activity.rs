//! Activity (append-only event log) and op runs.

use super::Result;
use super::{json_col, params, AnyQuery, Db};
use crate::ids::{CircleId, ElementId};
use crate::model::{Event, Json, Run};
use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use std::borrow::Cow;
use std::sync::Arc;

fn event(r: &AnyRow) -> sqlx::Result<Event> {
    let actor: String = r.try_get("actor")?;
    Ok(Event {
        id: r.try_get("id")?,
        circle: r.try_get("circle")?,
        circle_id: CircleId::stored(
            r.try_get::<Option<String>, _>("circle_id")?
                .unwrap_or_default(),
        ),
        element_id: r.try_get("element_id")?,
        slug: r.try_get("slug")?,
        kind: r.try_get("kind")?,
        op: r.try_get("op")?,
        invocation_id: r.try_get("invocation_id")?,
        actor: Json::Value(serde_json::from_str(&actor).unwrap_or_default()),
        trace_id: r.try_get("trace_id")?,
        data: json_col(r, "data")?.into(),
        at: r.try_get("created_at")?,
        remote: false,
    })
}

pub(super) const EVENT_COLS: &str =
    "INSERT INTO activity (id, circle, circle_id, element_id, slug, kind, \
    op, invocation_id, actor, trace_id, data, created_at) VALUES ";
const RUN_COLS: &str = "INSERT INTO runs (id, circle, element_id, op, status, error_code, \
    duration_us, cost_micro_au, created_at, count) VALUES ";

/// The row counts a batch is cut into: full chunks of 64 (one statement,
/// one round trip, well under both databases' limits on bound values),
/// then the rest in powers of two. Each size's statement is prepared once
/// and kept (14 statements, well inside sqlx's cache of 100 a
/// connection); an odd-sized tail was a new statement in every batch,
/// and SQLite parsed up to several kilobytes of INSERT for it each time:
/// a quarter of the rows' own cost at 2,000 events a second, more as
/// batches shrink.
const SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `rows` cut into [`SIZES`], largest first.
fn chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let n = SIZES.into_iter().find(|&s| s <= rest.len())?;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `INSERT … VALUES ($1,…,$cols),(…)` for `rows` rows; with
/// `anonymous`, `(?,…)` instead. SQLite looks a numbered parameter up by
/// a scan of the statement's names, once per value bound: hundreds of
/// numbered values cost a scan each, anonymous ones none.
fn insert_sql(head: &str, rows: usize, cols: usize, anonymous: bool) -> String {
    let anonymous_row = format!("({})", vec!["?"; cols].join(","));
    let values: Vec<String> = (0..rows)
        .map(|r| match anonymous {
            true => anonymous_row.clone(),
            false => format!("({})", params(r * cols + 1, cols)),
        })
        .collect();
    format!("{head}{}", values.join(","))
}

/// The INSERT for a chunk of `rows` (one of [`SIZES`]), built once per
/// table, size and placeholder style: rebuilt for every chunk, a full
/// chunk's text (about 2 KB) was one of the recorder's larger costs.
fn chunk_sql(events: bool, rows: usize, anonymous: bool) -> &'static str {
    type Texts = [std::sync::OnceLock<String>; SIZES.len()];
    static SQL: [Texts; 4] = [const { [const { std::sync::OnceLock::new() }; SIZES.len()] }; 4];
    let (head, cols) = match events {
        true => (EVENT_COLS, 12),
        false => (RUN_COLS, 10),
    };
    let size = SIZES
        .iter()
        .position(|&s| s == rows)
        .expect("a chunk is one of SIZES");
    SQL[usize::from(events) * 2 + usize::from(anonymous)][size]
        .get_or_init(|| insert_sql(head, rows, cols, anonymous))
}

/// Arguments with room for `values`: grown one bind at a time, a full
/// chunk's 768 values moved their buffer eight times.
fn room_for<'q>(values: usize) -> sqlx::any::AnyArguments<'q> {
    use sqlx::Arguments;
    let mut args = sqlx::any::AnyArguments::default();
    args.reserve(values, 0);
    args
}

/// An event's two JSON columns as text, made before binding (borrowed
/// when the event's JSON is text already): bound as an owned `String`,
/// sqlx's `Any` driver copies it once more.
pub(super) struct JsonCols<'a> {
    actor: Cow<'a, str>,
    data: Cow<'a, str>,
}

impl<'a> JsonCols<'a> {
    pub(super) fn of(e: &'a Event) -> Self {
        JsonCols {
            actor: e.actor.text(),
            data: e.data.text(),
        }
    }
}

/// Text is bound as `&str`: bound as `&String`, sqlx's `Any` driver
/// copies each value before the database copies it again.
pub(super) fn bind_event<'q>(
    q: AnyQuery<'q>,
    e: &'q Event,
    json: &'q JsonCols<'q>,
) -> AnyQuery<'q> {
    q.bind(e.id.as_str())
        .bind(e.circle.as_str())
        .bind(e.circle_id.as_str())
        .bind(e.element_id.as_deref())
        .bind(e.slug.as_deref())
        .bind(e.kind.as_str())
        .bind(e.op.as_deref())
        .bind(e.invocation_id.as_deref())
        .bind(json.actor.as_ref())
        .bind(e.trace_id.as_deref())
        .bind(json.data.as_ref())
        .bind(e.at)
}

fn bind_run<'q>(q: AnyQuery<'q>, r: &'q Run) -> AnyQuery<'q> {
    q.bind(r.id.as_str())
        .bind(r.circle.as_str())
        .bind(r.element_id.as_str())
        .bind(r.op.as_str())
        .bind(r.outcome.as_str())
        .bind(r.error_code.as_deref())
        .bind(r.duration_us)
        .bind(r.cost_micro_au)
        .bind(r.at)
        .bind(r.count)
}

static INSERT_EVENT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(EVENT_COLS, 1, 12, false));

async fn insert_event<'e, E: sqlx::Executor<'e, Database = Any>>(ex: E, e: &Event) -> Result<()> {
    let json = JsonCols::of(e);
    bind_event(sqlx::query(&INSERT_EVENT), e, &json)
        .execute(ex)
        .await?;
    Ok(())
}

/// Writes an activity row inside a caller's transaction, with the
/// webhook deliveries it makes.
pub async fn insert_in_tx(tx: &mut super::Tx, e: &Event) -> Result<()> {
    insert_event(&mut **tx, e).await?;
    super::outbox::enqueue(tx, std::slice::from_ref(e)).await
}

/// Which activity to read.
#[derive(Debug)]
pub struct ActivityQuery<'a> {
    /// The circle's id.
    pub circle_id: &'a CircleId,
    pub element_id: Option<&'a ElementId>,
    pub kind_prefix: Option<&'a str>,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub limit: i64,
}

impl Db {
    /// Writes an event and its one delivery to `webhook_id` together (the
    /// `test` op).
    pub async fn record_test_event(&self, webhook_id: &ElementId, e: &Event) -> Result<()> {
        let (w, e) = (webhook_id.to_string(), e.clone());
        self.unit(move |tx| {
            Box::pin(async move {
                insert_in_tx(tx, &e).await?;
                super::outbox::insert(tx, &w, &e, &super::outbox::body(&e)).await
            })
        })
        .await
    }

    /// Events (kept in activity, and to their webhooks), events only for
    /// webhooks (sampled message events), and runs: all in one commit.
    pub async fn write_records(
        &self,
        events: &[Arc<Event>],
        outbox: &[Arc<Event>],
        runs: &[Run],
    ) -> Result<()> {
        let (events, outbox, runs) = (events.to_vec(), outbox.to_vec(), runs.to_vec());
        let anonymous = self.backend == super::Backend::Sqlite;
        self.unit(move |tx| {
            Box::pin(async move {
                for chunk in chunks(&events) {
                    let sql = chunk_sql(true, chunk.len(), anonymous);
                    let json: Vec<JsonCols> = chunk.iter().map(|e| JsonCols::of(e)).collect();
                    let q = chunk.iter().zip(&json).fold(
                        sqlx::query_with(sql, room_for(chunk.len() * 12)),
                        |q, (e, j)| bind_event(q, e, j),
                    );
                    q.execute(&mut **tx).await?;
                }
                // Committed with the events or not at all.
                super::outbox::enqueue(tx, &events).await?;
                super::outbox::enqueue(tx, &outbox).await?;
                for chunk in chunks(&runs) {
                    let sql = chunk_sql(false, chunk.len(), anonymous);
                    let q = chunk
                        .iter()
                        .fold(sqlx::query_with(sql, room_for(chunk.len() * 10)), bind_run);
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Newest first with `before`, oldest first with `after` (SSE resume).
    pub async fn activity(&self, q: &ActivityQuery<'_>) -> Result<Vec<Event>> {
        let (cmp, order, bound) = match (q.after, q.before) {
            (Some(a), _) => (">", "ASC", a),
            (None, Some(b)) => ("<", "DESC", b),
            (None, None) => ("<", "DESC", "~"),
        };
        let sql = activity_sql(self.backend, q.element_id.is_some(), cmp, order);
        let prefix = q.kind_prefix.unwrap_or("");
        let rows = sqlx::query(&sql)
            .bind(q.circle_id)
            .bind(q.element_id.map_or("", ElementId::as_str))
            .bind(prefix)
            // The prefix is matched literally: LIKE's wildcards escaped.
            .bind(format!(
                "{}%",
                prefix
                    .replace('!', "!!")
                    .replace('%', "!%")
                    .replace('_', "!_")
            ))
            .bind(bound)
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(event).collect::<sqlx::Result<_>>()?)
    }
}

/// The activity read. An element's reads its own index: with
/// `($2 = '' OR element_id = $2)` neither database could, and an
/// element's page scanned its whole circle's. SQLite, which keeps no
/// statistics here, is told which of the two indexes to take.
fn activity_sql(backend: super::Backend, element: bool, cmp: &str, order: &str) -> String {
    let rows = match (element, backend) {
        (true, super::Backend::Sqlite) => {
            "activity INDEXED BY activity_element WHERE element_id = $2 AND circle_id = $1"
        }
        (true, super::Backend::Postgres) => "activity WHERE element_id = $2 AND circle_id = $1",
        (false, _) => "activity WHERE circle_id = $1 AND $2 = ''",
    };
    format!(
        "SELECT id, circle, circle_id, element_id, slug, kind, op, invocation_id, actor, \
         trace_id, data, created_at FROM {rows} \
         AND ($3 = '' OR kind LIKE $4 ESCAPE '!') AND id {cmp} $5 ORDER BY id {order} LIMIT $6"
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, Db};

    /// SQLite's plan for each form: an element's page through the
    /// element's index, a circle's through the circle's.
    #[tokio::test]
    async fn an_elements_activity_reads_its_own_index() {
        let (_dir, db) = Db::scratch(Default::default()).await;
        for (element, index) in [(true, "activity_element"), (false, "activity_circle_id")] {
            let sql = super::activity_sql(Backend::Sqlite, element, "<", "DESC");
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind("c")
                .bind(if element { "e" } else { "" })
                .bind("")
                .bind("%")
                .bind("~")
                .bind(50_i64)
                .fetch_all(&db.pool)
                .await
                .unwrap();
            let details: Vec<String> = rows
                .iter()
                .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").unwrap())
                .collect();
            assert!(
                details.iter().any(|d| d.contains(index)),
                "{element}: {details:?}"
            );
        }
    }

    #[test]
    fn batches_are_cut_into_sizes_kept_prepared() {
        for n in [0, 1, 2, 3, 63, 64, 65, 75, 127, 200, 511, 512] {
            let rows: Vec<usize> = (0..n).collect();
            let cut: Vec<&[usize]> = super::chunks(&rows).collect();
            let sizes: Vec<usize> = cut.iter().map(|c| c.len()).collect();
            assert!(
                sizes.iter().all(|s| super::SIZES.contains(s)),
                "{n}: {sizes:?}"
            );
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{n}: {sizes:?}");
            // Every row once, in order.
            assert_eq!(cut.concat(), rows, "{n}");
        }
        assert_eq!(
            super::chunks(&[0u8; 75])
                .map(<[u8]>::len)
                .collect::<Vec<_>>(),
            [64, 8, 2, 1]
        );
    }

    /// Each size's statement writes its rows; a batch of every odd size
    /// up to a few chunks lands whole.
    #[tokio::test]
    async fn every_chunk_size_writes_its_rows() {
        use crate::event_kind::EventKind;
        use crate::ids::CircleId;
        use crate::model::Event;
        use std::sync::Arc;
        let (_dir, db) = Db::scratch(Default::default()).await;
        let circle = CircleId::stored("c1");
        let mut written = 0;
        for n in [1, 2, 3, 7, 64, 75, 130] {
            let events: Vec<Arc<Event>> = (0..n)
                .map(|_| Arc::new(Event::new("acme", &circle, EventKind::WsConnectionOpened)))
                .collect();
            db.write_records(&events, &[], &[]).await.unwrap();
            written += n;
            let count: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM activity")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(count, written as i64, "after a batch of {n}");
        }
    }

    /// A database made before the table lost its id's own index keeps
    /// its rows, read as before; a batch written twice is still refused
    /// as a duplicate (the circle's index holds every id once).
    #[tokio::test]
    async fn rows_written_before_the_rebuild_are_kept() {
        use super::super::StoreError;
        use crate::event_kind::EventKind;
        use crate::ids::CircleId;
        use crate::model::Event;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        let all = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        for f in std::fs::read_dir(all).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.as_str() < "0013" {
                std::fs::copy(&f, old.join(&name)).unwrap();
            }
        }
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect_with_clock(&url, Default::default())
            .await
            .unwrap();
        let before = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        before.run(&db.pool).await.unwrap();
        let circle = CircleId::stored("c1");
        let events: Vec<Arc<Event>> = (0..5)
            .map(|_| Arc::new(Event::new("acme", &circle, EventKind::WsConnectionOpened)))
            .collect();
        db.write_records(&events, &[], &[]).await.unwrap();

        db.migrate().await.unwrap();
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE tbl_name = 'activity'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert!(
            !indexes.iter().any(|n| n.starts_with("sqlite_autoindex")),
            "{indexes:?}"
        );
        let q = super::ActivityQuery {
            circle_id: &circle,
            element_id: None,
            kind_prefix: None,
            before: None,
            after: None,
            limit: 10,
        };
        let kept: Vec<String> = db
            .activity(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let written: Vec<String> = events.iter().rev().map(|e| e.id.clone()).collect();
        assert_eq!(kept, written);
        assert!(matches!(
            db.write_records(&events[1..2], &[], &[]).await,
            Err(StoreError::Duplicate)
        ));
        let again = Arc::new(Event::new("acme", &circle, EventKind::WsConnectionClosed));
        db.write_records(&[again], &[], &[]).await.unwrap();
        assert_eq!(db.activity(&q).await.unwrap().len(), 6);
    }

    #[test]
    fn multi_row_insert_numbers_every_value() {
        let sql = super::insert_sql("INSERT INTO t (a, b) VALUES ", 3, 2, false);
        assert_eq!(sql, "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4),($5,$6)");
        let sql = super::insert_sql("INSERT INTO t (a, b) VALUES ", 2, 2, true);
        assert_eq!(sql, "INSERT INTO t (a, b) VALUES (?,?),(?,?)");
    }
}
