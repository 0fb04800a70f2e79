//! Open event streams, counted per token and per circle, so no one token
//! (or circle) can hold the server's memory and connections.

use crate::error::{Class, Error, Result};
use crate::error_codes::ErrorCode;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open event streams per token and per circle, so no one token (or
/// circle) can hold the server's memory and connections.
#[derive(Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<String, usize>>>,
    /// Told each time a stream gives its places back.
    freed: Arc<tokio::sync::Notify>,
}

/// Holds one stream's places; gives them back when the stream ends.
pub struct StreamGuard {
    open: Arc<Mutex<HashMap<String, usize>>>,
    freed: Arc<tokio::sync::Notify>,
    keys: [String; 2],
}

/// How long a stream over its limit waits for a place before 429. A
/// client that reconnects at once finds its old stream still being torn
/// down (its connection's end is seen a moment later).
pub const WAIT_FOR_PLACE: std::time::Duration = std::time::Duration::from_millis(500);

impl Streams {
    /// Like [`Streams::open`], but a stream over its limit waits up to
    /// `wait` for a place to come free.
    pub async fn open_or_wait(
        &self,
        token_id: &str,
        circle_id: &crate::ids::CircleId,
        per_token: usize,
        per_circle: usize,
        wait: std::time::Duration,
    ) -> Result<StreamGuard> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Listening before the check, so a place freed between the
            // two is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.open(token_id, circle_id, per_token, per_circle) {
                Err(e) if tokio::time::timeout_at(until, freed).await.is_err() => return Err(e),
                Err(_) => continue,
                ok => return ok,
            }
        }
    }

    /// Takes a place for a new stream, or 429 when the token or the
    /// circle already holds its limit.
    pub fn open(
        &self,
        token_id: &str,
        circle_id: &crate::ids::CircleId,
        per_token: usize,
        per_circle: usize,
    ) -> Result<StreamGuard> {
        let keys = [format!("t:{token_id}"), format!("c:{circle_id}")];
        let mut open = lock(&self.open);
        let count = |k: &String| open.get(k).copied().unwrap_or(0);
        let full = if count(&keys[0]) >= per_token {
            Some(format!(
                "this token already holds {per_token} event streams"
            ))
        } else if count(&keys[1]) >= per_circle {
            Some(format!(
                "this circle already has {per_circle} event streams open"
            ))
        } else {
            None
        };
        if let Some(why) = full {
            return Err(Error::new(
                crate::error::Kind::TooMany,
                Class::Limit,
                ErrorCode::TooManyStreams,
                format!("{why}; close one first"),
            )
            .retry_after(5));
        }
        for k in &keys {
            *open.entry(k.clone()).or_default() += 1;
        }
        drop(open);
        Ok(StreamGuard {
            open: self.open.clone(),
            freed: self.freed.clone(),
            keys,
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        for k in &self.keys {
            if let Some(n) = open.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    open.remove(k);
                }
            }
        }
        drop(open);
        self.freed.notify_waiters();
    }
}
