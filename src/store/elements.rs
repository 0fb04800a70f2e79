//! Elements and their versions.

use super::Result;
use super::{json_col, params, AnyQuery, Db};
use crate::ids::{CircleId, ElementId};
use crate::model::{Element, Scope, State};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i64,
    pub name: String,
    pub intention: Option<String>,
    pub spec: Value,
    /// Stored only by versions that changed the README; read with
    /// `Db::readme_at`.
    pub readme: Option<String>,
    pub author: String,
    pub message: String,
    pub created_at: i64,
}

impl VersionRow {
    /// The element's current content as a version row.
    pub fn snapshot(el: &Element, author: &str, message: String) -> VersionRow {
        VersionRow {
            version: el.version,
            name: el.name.clone(),
            intention: el.intention.clone(),
            spec: el.spec.clone(),
            readme: el.readme.clone(),
            author: author.to_string(),
            message,
            created_at: el.updated_at,
        }
    }
}

pub(super) const COLS: &str =
    "id, namespace, circle_id, slug, name, element_type, parent_id, state, state_reason, \
     intention, spec, meta, version, rev, created_at, updated_at";

pub(super) fn element(r: &AnyRow) -> sqlx::Result<Element> {
    Ok(Element {
        id: r.try_get("id")?,
        scope: match r.try_get::<String, _>("namespace")? {
            ns if ns.is_empty() => Scope::Circle,
            ns => Scope::In(ns),
        },
        circle_id: CircleId::stored(
            r.try_get::<Option<String>, _>("circle_id")?
                .unwrap_or_default(),
        ),
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        element_type: r.try_get("element_type")?,
        parent_id: r.try_get("parent_id")?,
        state: {
            let s: String = r.try_get("state")?;
            State::parse(&s).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "state".into(),
                source: format!("unknown state '{s}'").into(),
            })?
        },
        state_reason: r.try_get("state_reason")?,
        intention: r.try_get("intention")?,
        spec: json_col(r, "spec")?,
        meta: json_col(r, "meta")?,
        readme: None,
        version: r.try_get("version")?,
        rev: r.try_get("rev")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version(r: &AnyRow) -> sqlx::Result<VersionRow> {
    Ok(VersionRow {
        version: r.try_get("version")?,
        name: r.try_get("name")?,
        intention: r.try_get("intention")?,
        spec: json_col(r, "spec")?,
        readme: None,
        author: r.try_get("author")?,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Filters for listing a circle's elements.
#[derive(Debug, Default)]
pub struct ListFilter<'a> {
    pub element_type: Option<&'a str>,
    pub state: Option<State>,
    pub after_id: Option<&'a str>,
    pub limit: i64,
}

impl Db {
    /// A circle by slug; a live circle wins over deleted ones of the same
    /// slug, and the newest deleted one is found last.
    pub async fn find_circle(&self, slug: &str) -> Result<Option<Element>> {
        let sql = format!(
            "SELECT {COLS} FROM elements WHERE namespace = '' AND slug = $1 \
             ORDER BY CASE WHEN state = 'deleted' THEN 1 ELSE 0 END, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(element).transpose()?)
    }

    /// An element of one circle (by the circle's id) by slug, with the same
    /// preference for the live one.
    pub async fn find_in(&self, circle_id: &CircleId, slug: &str) -> Result<Option<Element>> {
        let sql = format!(
            "SELECT {COLS} FROM elements WHERE circle_id = $1 AND slug = $2 AND namespace <> '' \
             ORDER BY CASE WHEN state = 'deleted' THEN 1 ELSE 0 END, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(circle_id)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(element).transpose()?)
    }

    /// The current README.md of an element.
    pub async fn readme(&self, id: &ElementId) -> Result<String> {
        let row = sqlx::query("SELECT readme FROM elements WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("readme")?,
            None => String::new(),
        })
    }

    /// The README as of version `v`: versions store it only when it changed.
    pub async fn readme_at(&self, id: &ElementId, v: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT readme FROM element_versions WHERE element_id = $1 AND version <= $2 \
             AND readme IS NOT NULL ORDER BY version DESC LIMIT 1",
        )
        .bind(id)
        .bind(v)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get("readme")?,
            None => None,
        })
    }

    pub async fn element_by_id(&self, id: &ElementId) -> Result<Option<Element>> {
        let sql = format!("SELECT {COLS} FROM elements WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(element).transpose()?)
    }

    /// Elements of a circle (by its id), or with `None` the circles.
    pub async fn list_elements(
        &self,
        circle_id: Option<&CircleId>,
        f: &ListFilter<'_>,
    ) -> Result<Vec<Element>> {
        let scope = match circle_id {
            Some(_) => "circle_id = $1 AND namespace <> ''",
            None => "namespace = '' AND $1 = ''",
        };
        let sql = format!(
            "SELECT {COLS} FROM elements WHERE {scope} \
             AND (state = $2 OR ($2 = '' AND state <> 'deleted')) \
             AND ($3 = '' OR element_type = $3) AND id > $4 ORDER BY id LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(circle_id.map_or("", CircleId::as_str))
            .bind(f.state.map_or("", State::as_str))
            .bind(f.element_type.unwrap_or(""))
            .bind(f.after_id.unwrap_or(""))
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(element).collect::<sqlx::Result<_>>()?)
    }

    /// Live (not deleted) children: elements naming it as parent, and for a
    /// circle every element in it.
    pub async fn children(&self, e: &Element) -> Result<Vec<Element>> {
        let sql = format!(
            "SELECT {COLS} FROM elements WHERE state <> 'deleted' \
             AND (parent_id = $1 OR ($2 <> '' AND circle_id = $2 AND namespace <> '')) ORDER BY id"
        );
        let circle = if e.is_root() { e.id.as_str() } else { "" };
        let rows = sqlx::query(&sql)
            .bind(&e.id)
            .bind(circle)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(element).collect::<sqlx::Result<_>>()?)
    }

    /// Elements of the given types that are not deleted, in one circle (by
    /// its id) or (with None) everywhere.
    pub async fn elements_of_types(
        &self,
        circle_id: Option<&CircleId>,
        types: &[String],
    ) -> Result<Vec<Element>> {
        if types.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..types.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT {COLS} FROM elements WHERE state <> 'deleted' AND namespace <> '' \
             AND ($1 = 0 OR circle_id = $2) AND element_type IN ({}) ORDER BY id",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(i64::from(circle_id.is_some()))
            .bind(circle_id.map_or("", CircleId::as_str));
        for t in types {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(element).collect::<sqlx::Result<_>>()?)
    }

    pub async fn versions(&self, element_id: &ElementId, limit: i64) -> Result<Vec<VersionRow>> {
        let rows = sqlx::query(
            "SELECT version, name, intention, spec, author, message, created_at \
             FROM element_versions WHERE element_id = $1 ORDER BY version DESC LIMIT $2",
        )
        .bind(element_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(version).collect::<sqlx::Result<_>>()?)
    }

    pub async fn version_of(&self, element_id: &ElementId, v: i64) -> Result<Option<VersionRow>> {
        let row = sqlx::query(
            "SELECT version, name, intention, spec, author, message, created_at \
             FROM element_versions WHERE element_id = $1 AND version = $2",
        )
        .bind(element_id)
        .bind(v)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(version).transpose()?)
    }
}

impl Db {
    /// Writes a change in one transaction (`tx`, when the row is already
    /// locked in one): the row, if its `rev` is still `prev_rev` (false
    /// if not, and nothing is written), its new versions and its event.
    pub async fn write_change(
        &self,
        tx: Option<super::Tx>,
        el: &Element,
        prev_rev: i64,
        versions: &[VersionRow],
        event: &crate::model::Event,
    ) -> Result<bool> {
        let sql = change_sql(self.backend, versions.len());
        if self.backend == super::Backend::Postgres {
            // The change stays one statement unless a webhook of the circle
            // may want its event: then its deliveries join it in a
            // transaction.
            let hooked = super::outbox::has_routes(&self.pool, &event.circle_id).await?;
            let json = super::activity::JsonCols::of(event);
            let q = bind_change(sqlx::query(&sql), el, prev_rev, versions, event, &json);
            let tx = match (tx, hooked) {
                (Some(tx), _) => Some(tx),
                (None, true) => Some(self.begin().await?),
                (None, false) => None,
            };
            let n: i64 = match tx {
                Some(mut tx) => {
                    let n: i64 = q.fetch_one(&mut *tx).await?.try_get(0)?;
                    if n == 1 && hooked {
                        super::outbox::enqueue(&mut tx, std::slice::from_ref(event)).await?;
                    }
                    super::commit(tx).await?;
                    n
                }
                None => q.fetch_one(&self.pool).await?.try_get(0)?,
            };
            return Ok(n == 1);
        }
        // SQLite holds no row lock (`lock_for_write` answers None there).
        drop(tx);
        let (el, versions, event) = (el.clone(), versions.to_vec(), event.clone());
        self.unit(move |tx| {
            Box::pin(async move {
                let json = super::activity::JsonCols::of(&event);
                let q = bind_change(sqlx::query(&sql), &el, prev_rev, &versions, &event, &json);
                let changed = q.execute(&mut **tx).await?.rows_affected() > 0;
                if changed {
                    super::outbox::enqueue(tx, std::slice::from_ref(&event)).await?;
                }
                Ok(changed)
            })
        })
        .await
    }

    /// PostgreSQL: a transaction that holds the element's row locked, and
    /// the row as it stands (writers on other nodes queue behind it).
    /// SQLite: None. It admits one writer at a time, so its transaction
    /// is opened only for the writes, after the checks (see [`super::Tx`]).
    pub async fn lock_for_write(
        &self,
        id: &ElementId,
    ) -> Result<Option<(super::Tx, Option<Element>)>> {
        if self.backend != super::Backend::Postgres {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let sql = format!("SELECT {COLS} FROM elements WHERE id = $1 FOR UPDATE");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
        let row = row.as_ref().map(element).transpose()?;
        Ok(Some((tx, row)))
    }
}

/// A stored spec that holds a seal: where it is, and its text.
#[derive(Debug, Clone)]
pub struct StoredSpec {
    pub table: SpecTable,
    pub element_id: ElementId,
    /// The version (versions) or the environment (deployments).
    pub key: String,
    pub spec: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecTable {
    Elements,
    Versions,
    Deployments,
}

impl SpecTable {
    const ALL: [SpecTable; 3] = [
        SpecTable::Elements,
        SpecTable::Versions,
        SpecTable::Deployments,
    ];

    /// (table, element id column, key column) for the queries.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SpecTable::Elements => ("elements", "id", "''"),
            SpecTable::Versions => ("element_versions", "element_id", "version"),
            SpecTable::Deployments => ("deployments", "element_id", "env"),
        }
    }
}

/// The setting that records that every stored spec was checked for
/// seals with plain keys merged beside them.
const SEALS_CHECKED: &str = "merged_seals_checked";

impl Db {
    /// Specs that hold a seal, in every table that keeps specs; None once
    /// [`Db::write_resealed`] has run, so later starts read one setting.
    pub async fn specs_with_seals(&self) -> Result<Option<Vec<StoredSpec>>> {
        let done = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(SEALS_CHECKED)
            .fetch_optional(&self.pool)
            .await?;
        if done.is_some() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for table in SpecTable::ALL {
            let (name, id, key) = table.columns();
            let sql = format!(
                "SELECT {id} AS element_id, CAST({key} AS TEXT) AS k, spec FROM {name} \
                 WHERE spec LIKE '%\"$sealed\"%'"
            );
            for r in sqlx::query(&sql).fetch_all(&self.pool).await? {
                out.push(StoredSpec {
                    table,
                    element_id: r.try_get("element_id")?,
                    key: r.try_get("k")?,
                    spec: r.try_get("spec")?,
                });
            }
        }
        Ok(Some(out))
    }

    /// Replaces stored specs, each only if it is still the text read (a
    /// write since then wins), and records that the check is done.
    pub async fn write_resealed(&self, fixed: &[(StoredSpec, String)]) -> Result<()> {
        let fixed = fixed.to_vec();
        self.unit(move |tx| {
            Box::pin(async move {
                for (row, spec) in &fixed {
                    let (name, id, key) = row.table.columns();
                    // An element row's rev moves too: a writer holding the
                    // old row must read it again.
                    let (set, filter) = match row.table {
                        SpecTable::Elements => ("spec = $1, rev = rev + 1", String::new()),
                        _ => ("spec = $1", format!(" AND CAST({key} AS TEXT) = $4")),
                    };
                    let sql =
                        format!("UPDATE {name} SET {set} WHERE {id} = $2 AND spec = $3{filter}");
                    let mut q = sqlx::query(&sql)
                        .bind(spec)
                        .bind(&row.element_id)
                        .bind(&row.spec);
                    if row.table != SpecTable::Elements {
                        q = q.bind(&row.key);
                    }
                    q.execute(&mut **tx).await?;
                }
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(SEALS_CHECKED)
                .bind(crate::model::now_ms().to_string())
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }
}

pub async fn insert_element(tx: &mut super::Tx, e: &Element) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO elements ({COLS}, readme) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
    ))
    .bind(&e.id)
    .bind(namespace_of(e))
    .bind(&e.circle_id)
    .bind(&e.slug)
    .bind(&e.name)
    .bind(&e.element_type)
    .bind(&e.parent_id)
    .bind(e.state.as_str())
    .bind(&e.state_reason)
    .bind(&e.intention)
    .bind(e.spec.to_string())
    .bind(e.meta.to_string())
    .bind(e.version)
    .bind(e.rev)
    .bind(e.created_at)
    .bind(e.updated_at)
    .bind(e.readme.as_deref().unwrap_or(""))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const UPDATE_SET: &str = "UPDATE elements SET name = $1, state = $2, state_reason = $3, \
    intention = $4, spec = $5, meta = $6, version = $7, updated_at = $8, rev = $9, \
    readme = COALESCE($10, readme) WHERE id = $11 AND rev = $12";
const VERSION_COLS: &str = "INSERT INTO element_versions (element_id, version, name, intention, \
    spec, readme, author, message, created_at)";

fn bind_update<'q>(q: AnyQuery<'q>, e: &'q Element, expected_rev: i64) -> AnyQuery<'q> {
    q.bind(&e.name)
        .bind(e.state.as_str())
        .bind(&e.state_reason)
        .bind(&e.intention)
        .bind(e.spec.to_string())
        .bind(e.meta.to_string())
        .bind(e.version)
        .bind(e.updated_at)
        .bind(expected_rev + 1)
        .bind(&e.readme)
        .bind(&e.id)
        .bind(expected_rev)
}

fn bind_version<'q>(q: AnyQuery<'q>, element_id: &'q str, v: &'q VersionRow) -> AnyQuery<'q> {
    q.bind(element_id)
        .bind(v.version)
        .bind(&v.name)
        .bind(&v.intention)
        .bind(v.spec.to_string())
        .bind(&v.readme)
        .bind(&v.author)
        .bind(&v.message)
        .bind(v.created_at)
}

/// A change of an element (its row if `rev` still matches, its new
/// versions, its event) as one round trip, written only when the row
/// matched. PostgreSQL: one statement, the INSERTs fed by the UPDATE's
/// RETURNING (atomic without BEGIN). SQLite: statements in one batch,
/// each INSERT guarded by `changes()` of the statement before it.
fn change_sql(backend: super::Backend, versions: usize) -> String {
    let pg = backend == super::Backend::Postgres;
    let mut sql = match pg {
        true => format!("WITH u AS ({UPDATE_SET} RETURNING id)"),
        false => format!("{UPDATE_SET};"),
    };
    let mut insert = |i: usize, head: &str, from: usize, n: usize| {
        let p = params(from, n);
        match pg {
            true => sql.push_str(&format!(", i{i} AS ({head} SELECT {p} FROM u)")),
            false => sql.push_str(&format!(" {head} SELECT {p} WHERE changes() = 1;")),
        }
    };
    let mut next = 13;
    for i in 0..versions {
        insert(i, VERSION_COLS, next, 9);
        next += 9;
    }
    let events = super::activity::EVENT_COLS
        .trim_end()
        .trim_end_matches("VALUES");
    insert(versions, events, next, 12);
    if pg {
        sql.push_str(" SELECT COUNT(*) FROM u");
    }
    sql
}

fn bind_change<'q>(
    q: AnyQuery<'q>,
    el: &'q Element,
    prev_rev: i64,
    versions: &'q [VersionRow],
    event: &'q crate::model::Event,
    json: &'q super::activity::JsonCols<'q>,
) -> AnyQuery<'q> {
    let q = bind_update(q, el, prev_rev);
    let q = versions.iter().fold(q, |q, v| bind_version(q, &el.id, v));
    super::activity::bind_event(q, event, json)
}

pub async fn insert_version(
    tx: &mut super::Tx,
    element_id: &ElementId,
    v: &VersionRow,
) -> Result<()> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{VERSION_COLS} VALUES ({})", params(1, 9)));
    bind_version(sqlx::query(&SQL), element_id, v)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The `namespace` column: a circle's is empty, others name their circle.
fn namespace_of(e: &Element) -> &str {
    match &e.scope {
        Scope::Circle => "",
        Scope::In(c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Backend;

    /// Every value is numbered once, in bind order, on both databases.
    #[test]
    fn a_change_numbers_its_values_in_bind_order() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for versions in 0..3 {
                let sql = super::change_sql(backend, versions);
                let total = 12 + 9 * versions + 12;
                let numbers: Vec<usize> = sql
                    .split('$')
                    .skip(1)
                    .map(|t| t.chars().take_while(char::is_ascii_digit).collect())
                    .map(|d: String| d.parse().unwrap())
                    .collect();
                assert_eq!(numbers, (1..=total).collect::<Vec<_>>(), "{sql}");
            }
        }
    }
}
