//! What one circle may take of a node shared with others: a fair share of
//! the write path, and operator quotas on elements, versions and
//! repository bytes (409 `QUOTA_EXCEEDED`).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::ids::CircleId;
use crate::model::Element;
use crate::service::App;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a circle's counted versions and repository bytes are trusted
/// before they are counted again (other nodes write too).
const RECOUNT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Quotas {
    /// Per circle: writes in flight, at most `writes_per_circle`. The
    /// write path queues in order, so a flood of one circle would stand
    /// before every other circle's writes; with a bounded share each,
    /// circles take turns.
    turns: Mutex<HashMap<CircleId, Arc<Semaphore>>>,
    versions: Mutex<HashMap<CircleId, (i64, Instant)>>,
    repo_bytes: Mutex<HashMap<CircleId, (u64, Instant)>>,
}

impl Quotas {
    /// A place among the circle's writes in flight.
    pub async fn circle_turn(
        &self,
        circle_id: &CircleId,
        per_circle: usize,
    ) -> OwnedSemaphorePermit {
        let gate = {
            let mut turns = crate::sync::lock(&self.turns);
            if turns.len() >= 4096 && !turns.contains_key(circle_id) {
                // Only the map holds an idle one.
                turns.retain(|_, s| Arc::strong_count(s) > 1);
            }
            turns
                .entry(circle_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(per_circle.max(1))))
                .clone()
        };
        gate.acquire_owned()
            .await
            .expect("circle write gates are never closed")
    }
}

fn exceeded(what: &str, limit: impl std::fmt::Display, setting: &str) -> Error {
    Error::conflict(
        ErrorCode::QuotaExceeded,
        format!("this circle has reached its quota of {limit} {what} ({setting}); ask the operator to raise it"),
    )
}

impl App {
    /// 409 `QUOTA_EXCEEDED` when the circle already holds its quota of
    /// elements (deleted ones do not count).
    pub(in crate::service) async fn check_element_quota(&self, circle_id: &CircleId) -> Result<()> {
        let max = self.config.limits.max_elements_per_circle;
        if max == 0 {
            return Ok(());
        }
        let n = self.db.count_elements(circle_id).await?;
        if n >= max as i64 {
            return Err(exceeded(
                "elements",
                max,
                "ELEMENTD_MAX_ELEMENTS_PER_CIRCLE",
            ));
        }
        Ok(())
    }

    /// 409 `QUOTA_EXCEEDED` when `adding` more versions would pass the
    /// circle's quota. Counted from the database once a minute and by
    /// this node's own writes between.
    pub(in crate::service) async fn check_version_quota(
        &self,
        circle_id: &CircleId,
        adding: usize,
    ) -> Result<()> {
        let max = self.config.limits.max_versions_per_circle;
        if max == 0 || adding == 0 {
            return Ok(());
        }
        let known = crate::sync::lock(&self.quotas.versions)
            .get(circle_id)
            .filter(|(_, at)| at.elapsed() < RECOUNT)
            .map(|(n, _)| *n);
        let n = match known {
            Some(n) => n,
            None => {
                let n = self.db.count_versions(circle_id).await?;
                crate::sync::lock(&self.quotas.versions)
                    .insert(circle_id.clone(), (n, Instant::now()));
                n
            }
        };
        if n + adding as i64 > max as i64 {
            return Err(exceeded(
                "versions",
                max,
                "ELEMENTD_MAX_VERSIONS_PER_CIRCLE",
            ));
        }
        Ok(())
    }

    /// Counts versions this node just wrote.
    pub(in crate::service) fn note_versions(&self, circle_id: &CircleId, added: usize) {
        if let Some((n, _)) = crate::sync::lock(&self.quotas.versions).get_mut(circle_id) {
            *n += added as i64;
        }
    }

    /// A push or an import changed the circle's repositories: count again.
    pub(in crate::service) fn forget_repo_bytes(&self, circle_id: &CircleId) {
        crate::sync::lock(&self.quotas.repo_bytes).remove(circle_id);
    }

    /// 409 `QUOTA_EXCEEDED` when the circle's repositories already take
    /// its quota of bytes on disk (checked before a push or an import).
    pub(in crate::service) async fn check_repo_quota(&self, circle: &Element) -> Result<()> {
        let max = self.config.limits.max_repo_bytes_per_circle;
        if max == 0 {
            return Ok(());
        }
        let known = crate::sync::lock(&self.quotas.repo_bytes)
            .get(&circle.circle_id)
            .filter(|(_, at)| at.elapsed() < RECOUNT)
            .map(|(n, _)| *n);
        let used = match known {
            Some(n) => n,
            None => {
                let ids = self.db.element_ids_in(&circle.circle_id).await?;
                let dirs: Vec<_> = ids.iter().map(|id| self.source.repo_path(id)).collect();
                let n =
                    tokio::task::spawn_blocking(move || dirs.iter().map(|d| dir_bytes(d)).sum())
                        .await
                        .map_err(Error::internal)?;
                crate::sync::lock(&self.quotas.repo_bytes)
                    .insert(circle.circle_id.clone(), (n, Instant::now()));
                n
            }
        };
        if used >= max {
            return Err(exceeded(
                "repository bytes",
                max,
                "ELEMENTD_MAX_REPO_BYTES_PER_CIRCLE",
            ));
        }
        Ok(())
    }
}

/// Bytes of the files under `dir` (symbolic links not followed).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_circle_holds_at_most_its_share_of_writes_and_others_pass() {
        let q = Quotas::default();
        let (a, b) = (CircleId::stored("a"), CircleId::stored("b"));
        let a1 = q.circle_turn(&a, 2).await;
        let _a2 = q.circle_turn(&a, 2).await;
        let third = tokio::time::timeout(Duration::from_millis(50), q.circle_turn(&a, 2)).await;
        assert!(third.is_err(), "a third write of circle a waits");
        let b = tokio::time::timeout(Duration::from_millis(50), q.circle_turn(&b, 2)).await;
        assert!(b.is_ok(), "circle b is not held behind a");
        drop(a1);
        let third = tokio::time::timeout(Duration::from_millis(50), q.circle_turn(&a, 2)).await;
        assert!(third.is_ok(), "a place came back");
    }

    #[test]
    fn repository_bytes_are_counted_below_the_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("x/y")).unwrap();
        std::fs::write(d.path().join("a"), vec![0; 100]).unwrap();
        std::fs::write(d.path().join("x/y/b"), vec![0; 50]).unwrap();
        assert_eq!(dir_bytes(d.path()), 150);
        assert_eq!(dir_bytes(&d.path().join("missing")), 0);
    }
}
