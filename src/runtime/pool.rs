//! Idle connections kept for reuse, bounded in number per place, in all,
//! and in age. It knows nothing of what the connections speak: `fetch.rs`
//! keeps its HTTP/1 links here.

use crate::sync::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A connection that can tell it was closed from the other side.
pub trait Reusable {
    fn is_closed(&self) -> bool;
}

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Idle connections kept for one place.
    pub per_key: usize,
    /// Idle connections kept in all.
    pub total: usize,
    /// How long one is kept idle.
    pub idle: Duration,
}

pub struct Pool<K, L> {
    bounds: Bounds,
    state: Mutex<State<K, L>>,
}

struct State<K, L> {
    idle: HashMap<K, Vec<(L, Instant)>>,
    count: usize,
}

impl<K: Hash + Eq + Clone, L: Reusable> Pool<K, L> {
    pub fn new(bounds: Bounds) -> Self {
        Pool {
            bounds,
            state: Mutex::new(State {
                idle: HashMap::new(),
                count: 0,
            }),
        }
    }

    /// The newest idle connection for the first of `keys` that has one,
    /// still open and young enough; the stale ones met on the way are
    /// dropped.
    pub fn take<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Option<(K, L)>
    where
        K: 'k,
    {
        let mut state = lock(&self.state);
        let State { idle, count } = &mut *state;
        for key in keys {
            let Some(list) = idle.get_mut(key) else {
                continue;
            };
            let mut found = None;
            while let Some((link, since)) = list.pop() {
                *count -= 1;
                if since.elapsed() <= self.bounds.idle && !link.is_closed() {
                    found = Some(link);
                    break;
                }
            }
            if list.is_empty() {
                idle.remove(key);
            }
            if let Some(link) = found {
                return Some((key.clone(), link));
            }
        }
        None
    }

    /// Keeps `link` for the next request to `key`. Every stale or closed
    /// link anywhere goes first (the pool is small: a sweep is cheap), so
    /// no place keeps one past `idle` for want of use. When the place is
    /// full `link` is dropped; when the pool is, the oldest idle one goes.
    pub fn put(&self, key: K, link: L) {
        if link.is_closed() {
            return;
        }
        let now = Instant::now();
        let bounds = self.bounds;
        let mut state = lock(&self.state);
        let State { idle, count } = &mut *state;
        idle.retain(|_, list| {
            list.retain(|(l, since)| now.duration_since(*since) <= bounds.idle && !l.is_closed());
            !list.is_empty()
        });
        *count = idle.values().map(Vec::len).sum();
        let list = idle.entry(key).or_default();
        if list.len() >= bounds.per_key {
            return;
        }
        list.push((link, now));
        *count += 1;
        if *count > bounds.total {
            let oldest = idle
                .iter()
                .filter_map(|(k, l)| l.first().map(|(_, since)| (k, *since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                if let Some(list) = idle.get_mut(&k) {
                    list.remove(0);
                    if list.is_empty() {
                        idle.remove(&k);
                    }
                }
                *count -= 1;
            }
        }
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        lock(&self.state).count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Clone)]
    struct Fake(u32, Arc<AtomicBool>);
    impl Reusable for Fake {
        fn is_closed(&self) -> bool {
            self.1.load(Ordering::Relaxed)
        }
    }
    fn fake(n: u32) -> Fake {
        Fake(n, Arc::new(AtomicBool::new(false)))
    }
    fn pool(per_key: usize, total: usize) -> Pool<&'static str, Fake> {
        Pool::new(Bounds {
            per_key,
            total,
            idle: Duration::from_secs(30),
        })
    }

    #[test]
    fn takes_the_newest_of_the_first_key_that_has_one() {
        let p = pool(4, 8);
        p.put("b", fake(1));
        p.put("b", fake(2));
        p.put("c", fake(3));
        let (k, l) = p.take(&["a", "b", "c"]).unwrap();
        assert_eq!((k, l.0), ("b", 2));
        assert_eq!(p.idle(), 2);
        assert!(p.take(&["a"]).is_none());
    }

    #[test]
    fn closed_links_are_neither_kept_nor_given() {
        let p = pool(4, 8);
        let closed = fake(1);
        closed.1.store(true, Ordering::Relaxed);
        p.put("a", closed.clone());
        assert_eq!(p.idle(), 0);
        let open = fake(2);
        p.put("a", open.clone());
        p.put("a", fake(3));
        // Both close while idle: taking finds neither and forgets them.
        open.1.store(true, Ordering::Relaxed);
        let third = p.take(&["a"]).unwrap().1;
        assert_eq!(third.0, 3);
        assert!(p.take(&["a"]).is_none());
        assert_eq!(p.idle(), 0);
    }

    #[test]
    fn bounded_per_key_and_in_all() {
        let p = pool(2, 3);
        for n in 0..5 {
            p.put("a", fake(n));
        }
        assert_eq!(p.idle(), 2, "per key");
        p.put("b", fake(10));
        p.put("c", fake(20));
        assert_eq!(p.idle(), 3, "in all: the oldest went");
        assert_eq!(p.take(&["a"]).unwrap().1 .0, 1);
        assert!(p.take(&["a"]).is_none(), "a's oldest was the one dropped");
    }

    #[test]
    fn a_put_anywhere_sweeps_the_stale_and_closed() {
        let p = pool(4, 8);
        let gone = fake(1);
        p.put("a", gone.clone());
        p.put("b", fake(2));
        gone.1.store(true, Ordering::Relaxed);
        p.put("c", fake(3));
        assert_eq!(p.idle(), 2, "a's closed link was dropped by c's put");
        assert!(p.take(&["a"]).is_none());
    }

    #[test]
    fn old_links_expire() {
        let p: Pool<&str, Fake> = Pool::new(Bounds {
            per_key: 4,
            total: 8,
            idle: Duration::from_millis(0),
        });
        p.put("a", fake(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(p.take(&["a"]).is_none());
        assert_eq!(p.idle(), 0);
    }
}
