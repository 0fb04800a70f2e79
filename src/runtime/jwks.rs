//! A JWKS (`auth.jwt.jwks_url`) as one hub caches it: fetched through the
//! outbound policy (5 s, 1 MiB), refetched on an unknown `kid` at most
//! once per 10 s. A failed fetch keeps the keys it had, so an endpoint
//! that is down refuses no token whose key is cached.

use super::fetch::Client;
use crate::clock::Clock;
use crate::sync::lock;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MAX_BODY: usize = 1024 * 1024;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
const MAX_KEYS: usize = 100;

#[derive(Default)]
struct Keys {
    /// By `kid`; a key without one sits under "".
    by_kid: HashMap<String, DecodingKey>,
    last_attempt: Option<Instant>,
}

pub struct Jwks {
    pub url: String,
    http: Arc<Client>,
    /// The server's: a test moves it past the refetch interval.
    clock: Clock,
    keys: Mutex<Keys>,
    /// One fetch at a time; the others wait for it and read its keys.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(url: String, http: Arc<Client>, clock: Clock) -> Jwks {
        Jwks {
            url,
            http,
            clock,
            keys: Mutex::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = lock(&self.keys);
        match kid {
            Some(k) => keys.by_kid.get(k).cloned(),
            // No kid: the set's only key.
            None if keys.by_kid.len() == 1 => keys.by_kid.values().next().cloned(),
            None => None,
        }
    }

    fn may_refetch(&self) -> bool {
        lock(&self.keys)
            .last_attempt
            .is_none_or(|t| self.clock.since(t) >= REFETCH_EVERY)
    }

    /// The key for `kid`: cached, else after a refetch (when the last
    /// attempt is old enough). None: no such key.
    pub async fn key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if !self.may_refetch() {
            return None;
        }
        let _one = self.fetching.lock().await;
        // Another caller may have fetched while we waited.
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if !self.may_refetch() {
            return None;
        }
        lock(&self.keys).last_attempt = Some(self.clock.instant());
        match self.fetch().await {
            Ok(by_kid) => lock(&self.keys).by_kid = by_kid,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping cached keys")
            }
        }
        self.cached(kid)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let body = self.http.get(&self.url, MAX_BODY, FETCH_TIMEOUT).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut out = HashMap::new();
        for jwk in set.keys.iter().take(MAX_KEYS) {
            if let Some(key) = super::jwt::jwk_key(jwk) {
                out.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
        }
        Ok(out)
    }
}
