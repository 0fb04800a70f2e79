//! Open event streams, counted per token and per circle, so no one token
//! (or circle) can hold the server's memory and connections.

use crate::error::{Class, Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open event streams per token and per circle, so no one token (or
/// circle) can hold the server's memory and connections.
#[derive(Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// Holds one stream's places; gives them back when the stream ends.
pub struct StreamGuard {
    open: Arc<Mutex<HashMap<String, usize>>>,
    keys: [String; 2],
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Streams {
    /// Takes a place for a new stream, or 429 when the token or the
    /// circle already holds its limit.
    pub fn open(
        &self,
        token_id: &str,
        circle_id: &str,
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
            let mut e = Error::new(
                crate::error::Kind::TooMany,
                Class::Limit,
                "TOO_MANY_STREAMS",
                format!("{why}; close one first"),
            )
            .retryable();
            e.retry_after = Some(5);
            return Err(e);
        }
        for k in &keys {
            *open.entry(k.clone()).or_default() += 1;
        }
        drop(open);
        Ok(StreamGuard {
            open: self.open.clone(),
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
    }
}
