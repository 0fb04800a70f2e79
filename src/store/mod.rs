//! SQL storage. One set of queries serves SQLite and PostgreSQL through
//! sqlx's `Any` driver: both schemas use the same column types (TEXT,
//! BIGINT), placeholders are `$N`, and aggregates are cast to types both
//! decode. Migrations are kept per backend under `migrations/`.

pub mod activity;
pub mod attachments;
pub mod cache;
mod counts;
pub mod deployments;
pub mod elements;
pub mod history;
pub mod outbox;
pub mod presence;
pub mod room_users;
pub mod runs;
pub mod tokens;
mod writer;

use crate::clock::Clock;
use crate::error::{Class, Error, Kind};
use crate::error_codes::ErrorCode;
use crate::model::now_ms;
use anyhow::Context;

/// What storage can fail with; the service turns it into the domain error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key (a live element's slug) is taken.
    #[error("already exists")]
    Duplicate,
    /// No connection came free in time.
    #[error("the database is busy")]
    Busy,
    #[error("database: {0}")]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            _ => StoreError::Other(e),
        }
    }
}

/// Storage failures as the domain sees them.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate => {
                Error::conflict(ErrorCode::AlreadyExists, "an element with that slug exists")
            }
            StoreError::Busy => Error::new(
                Kind::Unavailable,
                Class::Limit,
                ErrorCode::DatabaseBusy,
                "the database is busy; try again",
            )
            .retryable(),
            StoreError::Other(e) => Error::internal(format!("database: {e}")),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open write transaction. On SQLite it holds the process's write
/// turn until it ends: SQLite admits one writer at a time, and a writer
/// that finds the lock taken sleeps in SQLite's busy handler (1, 2, 5 …
/// 100 ms) instead of queueing, which stretched busy writes' tail
/// latency to a second.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Told once this transaction commits webhook deliveries.
    outbox_news: std::sync::Arc<tokio::sync::Notify>,
    wrote_outbox: bool,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

pub async fn commit(tx: Tx) -> Result<()> {
    let (news, wrote) = (tx.outbox_news.clone(), tx.wrote_outbox);
    tx.tx.commit().await?;
    if wrote {
        news.notify_one();
    }
    Ok(())
}

pub async fn rollback(tx: Tx) -> Result<()> {
    Ok(tx.tx.rollback().await?)
}
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    caches: std::sync::Arc<cache::Caches>,
    /// SQLite's one writer at a time, queued in order (see [`Tx`]).
    write_turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Woken when new webhook deliveries are committed here, so this
    /// node's worker sends them at once instead of at its next round.
    outbox_news: std::sync::Arc<tokio::sync::Notify>,
}

/// How long a pooled PostgreSQL connection may sit idle and still be
/// used without a ping first.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A PostgreSQL pool's options, pinging a connection before use only
/// when it sat idle past [`PING_AFTER_IDLE`]. sqlx pings every connection
/// it hands out, and again as it takes one back: two round trips around
/// each query. One released a moment ago answered that second ping; one
/// idle for a while may have outlived a server restart.
pub fn ping_when_idle<DB: sqlx::Database>(
    opts: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    opts.test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Opens the database at `url`; a SQLite file (and its folder) is
    /// created on first use and runs in WAL mode with full sync, so an
    /// acknowledged write survives a crash.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        Db::connect_with_clock(url, Clock::default()).await
    }

    /// A migrated SQLite database in a fresh folder, for the store's own
    /// tests; the folder is removed when the returned guard drops.
    #[cfg(test)]
    pub(crate) async fn scratch(clock: Clock) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect_with_clock(&url, clock).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    /// [`Db::connect`], with the read caches aging by the server's `clock`.
    pub async fn connect_with_clock(url: &str, clock: Clock) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("unsupported database URL '{url}': use sqlite://… or postgres://…");
        };
        let mut url = url.to_string();
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            if !path.is_empty() && path != ":memory:" {
                if let Some(dir) = Path::new(&path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                    }
                }
            }
            if !path.is_empty() && path != ":memory:" {
                private_db_file(Path::new(&path))?;
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
            // A connection to a local file does not go stale: no ping (a
            // round trip to its thread) before each use.
            opts = opts
                .max_connections(8)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                });
        } else {
            opts = ping_when_idle(opts.max_connections(16));
        }
        let pool = opts
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {}", redact_url(&url)))?;
        Ok(Db {
            pool,
            backend,
            caches: std::sync::Arc::new(cache::Caches::new(clock)),
            write_turn: (backend == Backend::Sqlite).then(Default::default),
            outbox_news: Default::default(),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let m = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        m.run(&self.pool).await.context("running migrations")?;
        Ok(())
    }

    /// A write transaction, holding SQLite's write turn. Outside storage,
    /// writes go through [`Db::unit`].
    pub(super) async fn begin(&self) -> Result<Tx> {
        let turn = match &self.write_turn {
            Some(t) => Some(t.clone().lock_owned().await),
            None => None,
        };
        Ok(Tx {
            tx: self.pool.begin().await?,
            _turn: turn,
            outbox_news: self.outbox_news.clone(),
            wrote_outbox: false,
        })
    }

    /// Notified after a commit that wrote webhook deliveries.
    pub fn outbox_news(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_news.clone()
    }

    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Claims a one-time setting; true for the one caller that set it.
    pub async fn claim_setting(&self, key: &str, value: &str) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// The database holds token digests and sealed secrets: only the service
/// user may read it. SQLite gives `-wal` and `-shm` the database file's
/// mode, so the file is made 0600 before SQLite first opens it; files of
/// an older start are tightened.
fn private_db_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Only ever create: opening and closing a database file that this
        // process already has open in SQLite would drop SQLite's POSIX
        // locks on it (they belong to the process, not the descriptor).
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", path.display()));
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = ?p, error = %e, "cannot make the database private (0600)")
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn redact_url(url: &str) -> String {
    match url::Url::from_str(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A query on either database, as the bind helpers pass it along.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `$from,…,$(from+n-1)`: the placeholders of `n` values.
pub(crate) fn params(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn json_col(row: &AnyRow, col: &str) -> sqlx::Result<serde_json::Value> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: Box::new(e),
    })
}
