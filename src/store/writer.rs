//! SQLite's one write path: every write transaction is a unit of work
//! run on a thread of its own, in turn. A write transaction holds
//! SQLite's only write lock across several statements, each a round trip
//! to the connection's thread; on the request runtime each return waited
//! behind other requests' work, so the lock was held (and every other
//! writer queued) for that wait too. Here nothing else is queued.

use super::{Backend, Db, StoreError, Tx};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Handle;

static WRITER: OnceLock<Handle> = OnceLock::new();

fn writer() -> &'static Handle {
    WRITER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the writer runtime starts");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("elementd-writer".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("the writer thread starts");
        handle
    })
}

/// Runs a write on the writer thread (SQLite), or here (PostgreSQL, whose
/// writers do not queue behind one lock).
async fn run<T, E, F>(backend: Backend, write: F) -> std::result::Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
{
    if backend != Backend::Sqlite {
        return write.await;
    }
    writer().spawn(write).await.map_err(|e| {
        E::from(StoreError::Other(sqlx::Error::Protocol(format!(
            "writer thread: {e}"
        ))))
    })?
}

impl Db {
    /// One unit of work: a write transaction that `work` fills, committed
    /// when it answers Ok and rolled back when it answers Err. The only
    /// way to write more than one statement at once.
    pub async fn unit<T, E, F>(&self, work: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, std::result::Result<T, E>> + Send + 'static,
    {
        let db = self.clone();
        run(self.backend, async move {
            let mut tx = db.begin().await.map_err(E::from)?;
            match work(&mut tx).await {
                Ok(v) => {
                    super::commit(tx).await.map_err(E::from)?;
                    Ok(v)
                }
                Err(e) => {
                    // The error says what went wrong; a failed rollback
                    // ends with the connection anyway.
                    let _ = super::rollback(tx).await;
                    Err(e)
                }
            }
        })
        .await
    }
}
