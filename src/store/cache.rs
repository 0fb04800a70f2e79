//! Read caches for the request path: a token by its digest, a circle by
//! its slug, an element by (circle id, slug). An entry lives at most
//! [`TTL`], so a token revoked anywhere (the CLI included, on any node)
//! stops working within it; this node's writes and other nodes' change
//! notices drop the entries they touch at once. Bounded in entries.

use super::attachments::AttachmentRow;
use super::tokens::{hash_token, TokenRow};
use super::{Db, Result};
use crate::clock::Clock;
use crate::ids::{CircleId, ElementId};
use crate::model::Element;
use quick_cache::sync::Cache;
use quick_cache::Equivalent;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What is attached to an element: each source with its version pin.
type Attached = Vec<(Option<i64>, Element)>;

/// Attachments that reach below their carrier, each with its source.
pub type Cascading = Vec<(AttachmentRow, Element)>;

/// A modifier that reaches an element from above: the attachment, the
/// modifier, and the element that carries it.
#[derive(Debug, Clone)]
pub struct Inherited {
    pub attachment: AttachmentRow,
    pub source: Element,
    pub carrier: Element,
}

/// How long an entry may be served without asking the database again.
pub const TTL: Duration = Duration::from_secs(1);
const ENTRIES: usize = 16_384;

/// A lookup's answer as kept: the row shared, or none.
type Found = Option<Arc<Element>>;

pub struct Caches {
    tokens: Cache<String, (Arc<TokenRow>, Instant)>,
    circles: Cache<String, (Found, Instant)>,
    elements: Cache<(CircleId, String), (Found, Instant)>,
    /// What is attached to an element (every op reads it).
    attached: Cache<ElementId, (Attached, Instant)>,
    /// A circle's cascading attachments (by circle id).
    cascading: Cache<CircleId, (Cascading, Instant)>,
    /// What reaches an element from above (by element id).
    inherited: Cache<ElementId, (Vec<Inherited>, Instant)>,
    /// A circle's first page of live elements (by circle id), at one
    /// limit: what `list` without a filter answers.
    listings: Cache<CircleId, (Listing, Instant), ByRows>,
    /// The server's clock: entries age by it, so a test can age them.
    clock: Clock,
}

/// A circle's listing as cached: the page size and its elements.
pub type Listing = (i64, Arc<Vec<Element>>);

/// Listings weigh what they hold, so all of them together keep at most
/// as many elements as the element lookups do (a page may hold 200).
#[derive(Clone)]
struct ByRows;

impl quick_cache::Weighter<CircleId, (Listing, Instant)> for ByRows {
    fn weight(&self, _: &CircleId, ((_, rows), _): &(Listing, Instant)) -> u64 {
        rows.len().max(1) as u64
    }
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("tokens", &self.tokens.len())
            .field("circles", &self.circles.len())
            .field("elements", &self.elements.len())
            .finish()
    }
}

impl Caches {
    pub fn new(clock: Clock) -> Self {
        Caches {
            tokens: Cache::new(ENTRIES),
            circles: Cache::new(ENTRIES),
            elements: Cache::new(ENTRIES),
            attached: Cache::new(ENTRIES),
            cascading: Cache::new(ENTRIES),
            inherited: Cache::new(ENTRIES),
            listings: Cache::with_weighter(ENTRIES / 16, ENTRIES as u64, ByRows),
            clock,
        }
    }

    fn fresh<T>(&self, entry: Option<(T, Instant)>) -> Option<T> {
        entry
            .filter(|(_, at)| self.clock.since(*at) < TTL)
            .map(|(v, _)| v)
    }

    fn now(&self) -> Instant {
        self.clock.instant()
    }

    /// The fresh entry of `cache` for `key`, else what `load` reads,
    /// remembered under `owned()` (built only on a miss, so a hit
    /// allocates nothing).
    async fn cached<K, V, Q>(
        &self,
        cache: &Cache<K, (V, Instant)>,
        key: &Q,
        owned: impl FnOnce() -> K,
        load: impl std::future::Future<Output = Result<V>>,
    ) -> Result<V>
    where
        K: Eq + Hash + Clone,
        V: Clone,
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if let Some(v) = self.fresh(cache.get(key)) {
            return Ok(v);
        }
        let v = load.await?;
        cache.insert(owned(), (v.clone(), self.now()));
        Ok(v)
    }
}

impl Db {
    /// A token by its secret. Unknown secrets are not remembered (a flood
    /// of made-up tokens must not push real ones out).
    /// Shared, not copied: every authenticated request asks for one.
    pub async fn token_cached(&self, secret: &str) -> Result<Option<Arc<TokenRow>>> {
        let (key, c) = (hash_token(secret), &self.caches);
        if let Some(t) = c.fresh(c.tokens.get(&key)) {
            return Ok(Some(t));
        }
        let row = self.token_by_secret(secret).await?.map(Arc::new);
        if let Some(t) = &row {
            c.tokens.insert(key, (t.clone(), c.now()));
        }
        Ok(row)
    }

    /// [`Db::find_circle`], cached.
    pub async fn circle_cached(&self, slug: &str) -> Result<Option<Element>> {
        Ok(self.circle_shared(slug).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Db::circle_cached`] without a copy of the row.
    pub async fn circle_shared(&self, slug: &str) -> Result<Option<Arc<Element>>> {
        let c = &self.caches;
        let load = async { Ok(self.find_circle(slug).await?.map(Arc::new)) };
        c.cached(&c.circles, slug, || slug.to_string(), load).await
    }

    /// [`Db::find_in`], cached.
    pub async fn element_cached(
        &self,
        circle_id: &CircleId,
        slug: &str,
    ) -> Result<Option<Element>> {
        let found = self.element_shared(circle_id, slug).await?;
        Ok(found.map(Arc::unwrap_or_clone))
    }

    /// [`Db::element_cached`] without a copy of the row (a handshake
    /// reads it and lets it go).
    pub async fn element_shared(
        &self,
        circle_id: &CircleId,
        slug: &str,
    ) -> Result<Option<Arc<Element>>> {
        let key = (circle_id.clone(), slug.to_string());
        let c = &self.caches;
        let load = async { Ok(self.find_in(circle_id, slug).await?.map(Arc::new)) };
        c.cached(&c.elements, &key, || key.clone(), load).await
    }

    /// The first `limit` live elements of a circle, in id order, cached:
    /// [`Db::list_elements`] without a filter.
    pub async fn listing_cached(
        &self,
        circle_id: &CircleId,
        limit: i64,
    ) -> Result<Arc<Vec<Element>>> {
        let c = &self.caches;
        let hit = c
            .fresh(c.listings.get(circle_id))
            .filter(|(l, _)| *l == limit);
        if let Some((_, rows)) = hit {
            return Ok(rows);
        }
        let f = super::elements::ListFilter {
            element_type: None,
            state: None,
            after_id: None,
            limit,
        };
        let rows = Arc::new(self.list_elements(Some(circle_id), &f).await?);
        c.listings
            .insert(circle_id.clone(), ((limit, rows.clone()), c.now()));
        Ok(rows)
    }

    /// [`Db::attached_sources`], cached.
    pub async fn attached_cached(&self, element_id: &ElementId) -> Result<Attached> {
        let load = self.attached_sources(element_id);
        let c = &self.caches;
        c.cached(&c.attached, element_id, || element_id.clone(), load)
            .await
    }

    /// [`Db::cascading_in`], cached.
    pub async fn cascading_cached(&self, circle_id: &CircleId) -> Result<Cascading> {
        let load = self.cascading_in(circle_id);
        let c = &self.caches;
        c.cached(&c.cascading, circle_id, || circle_id.clone(), load)
            .await
    }

    /// What reaches an element from above, as last worked out.
    pub fn inherited_cached(&self, element_id: &ElementId) -> Option<Vec<Inherited>> {
        self.caches.fresh(self.caches.inherited.get(element_id))
    }

    pub fn remember_inherited(&self, element_id: &ElementId, list: Vec<Inherited>) {
        self.caches
            .inherited
            .insert(element_id.clone(), (list, self.caches.now()));
    }

    /// Drops what a change of `el` makes stale. Any element may be a
    /// modifier attached somewhere: every attachment list goes too.
    pub fn forget(&self, el: &Element) {
        self.caches.attached.clear();
        // A move, a new member or a new attachment may change what reaches
        // any element below.
        self.caches.cascading.clear();
        self.caches.inherited.clear();
        self.forget_element(el);
    }

    /// Drops the lookup of `el` itself, and its circle's listing.
    fn forget_element(&self, el: &Element) {
        self.caches.listings.remove(&el.circle_id);
        if el.is_root() {
            self.caches.circles.remove(&el.slug);
        } else {
            self.caches
                .elements
                .remove(&(el.circle_id.clone(), el.slug.clone()));
        }
    }

    /// After a light change (see `App::is_light_change`) committed here:
    /// the lookup of `el` answers with the new row at once. Nothing else
    /// it could be in changed.
    pub fn remember_element(&self, el: &Element) {
        self.caches.listings.remove(&el.circle_id);
        let entry = (Some(Arc::new(el.clone())), self.caches.now());
        if el.is_root() {
            self.caches.circles.insert(el.slug.clone(), entry);
        } else {
            let key = (el.circle_id.clone(), el.slug.clone());
            self.caches.elements.insert(key, entry);
        }
    }

    /// Drops the remembered tokens (this process revoked some; revocations
    /// elsewhere wait out the TTL).
    pub fn forget_tokens(&self) {
        self.caches.tokens.clear();
    }

    /// Drops everything (changes may have been missed).
    pub fn forget_all(&self) {
        self.caches.tokens.clear();
        self.caches.circles.clear();
        self.caches.elements.clear();
        self.caches.attached.clear();
        self.caches.cascading.clear();
        self.caches.inherited.clear();
        self.caches.listings.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    /// An entry is served, stale, until the TTL passes on the database's
    /// clock; then the row is read again.
    #[tokio::test]
    async fn entries_age_by_the_clock_they_were_given() {
        let clock = Clock::default();
        let (_dir, db) = Db::scratch(clock.clone()).await;
        let (_, secret) = db.create_token("*", Role::Admin, "t", None).await.unwrap();
        assert!(db.token_cached(&secret).await.unwrap().is_some());
        // Revoked behind the cache's back.
        sqlx::query("UPDATE tokens SET revoked_at = 1")
            .execute(&db.pool)
            .await
            .unwrap();
        let row = db.token_cached(&secret).await.unwrap().unwrap();
        assert_eq!(row.revoked_at, None, "served from the cache");
        clock.advance(TTL);
        let row = db.token_cached(&secret).await.unwrap().unwrap();
        assert_eq!(row.revoked_at, Some(1), "read again once the TTL passed");
    }
}
