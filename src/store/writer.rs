//! SQLite's writes run on one thread of their own. A write transaction
//! holds SQLite's only write lock across several statements, each a round
//! trip to the connection's thread; on the request runtime each return
//! waited behind other requests' work, so the lock was held (and every
//! other writer queued) for that wait too. Here nothing else is queued.

use super::{Backend, Result, StoreError};
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
pub async fn run<T, F>(backend: Backend, write: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    if backend != Backend::Sqlite {
        return write.await;
    }
    writer()
        .spawn(write)
        .await
        .map_err(|e| StoreError::Other(sqlx::Error::Protocol(format!("writer thread: {e}"))))?
}
