//! One server's clock: the system's time, plus an offset that only tests
//! move ([`Clock::advance`]), so a test can pass a cache's TTL or a
//! token's grace without waiting it out. Per server, not global: the API
//! tests run many servers in one process. Reading it is one atomic load
//! beside the system call that was made before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cloned to each part that judges time; the clones share the offset.
#[derive(Clone, Default, Debug)]
pub struct Clock {
    /// Nanoseconds moved forward so far.
    ahead: Arc<AtomicU64>,
}

impl Clock {
    fn ahead(&self) -> Duration {
        Duration::from_nanos(self.ahead.load(Ordering::Relaxed))
    }

    /// The monotonic now, for what ages (cache entries, refetch intervals).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// How long since `then`, an earlier [`Clock::instant`].
    pub fn since(&self, then: Instant) -> Duration {
        self.instant().saturating_duration_since(then)
    }

    /// Unix milliseconds now, for what is stored as a time (expiries).
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.ahead().as_millis() as i64
    }

    /// Moves this clock, and every clone of it, forward by `by`. Only
    /// tests call it; nothing in the server does.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.ahead.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together_and_only_forward() {
        let a = Clock::default();
        let b = a.clone();
        let (t0, ms0) = (a.instant(), a.now_ms());
        assert!(a.since(t0) < Duration::from_secs(1));
        b.advance(Duration::from_secs(5));
        assert!(a.since(t0) >= Duration::from_secs(5));
        assert!(a.now_ms() >= ms0 + 5000);
        // Another server's clock is its own.
        let other = Clock::default();
        assert!(other.since(t0) < Duration::from_secs(5));
    }
}
