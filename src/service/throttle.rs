//! Failed token guesses, counted per address: past the limit in a minute,
//! that address gets 429 `AUTH_THROTTLED` before any token it sends is
//! looked at, so guessing costs time. Other addresses are never slowed.

use crate::error::{Class, Error, Kind, Result};
use crate::error_codes::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Addresses tracked at once; past it, counts of earlier minutes go first.
const TRACKED: usize = 65_536;
const MINUTE_MS: i64 = 60_000;

/// The unit a client is counted in: an IPv4 address, or an IPv6 /64 (one
/// host commonly has a whole /64 to pick addresses from).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

#[derive(Default)]
pub struct AuthFailures {
    /// Per address: the minute counted and the failures in it.
    counts: Mutex<HashMap<IpAddr, (i64, u32)>>,
    /// Every failure since start, for /metrics.
    pub failures: AtomicU64,
    /// Requests refused by the throttle, for /metrics.
    pub throttled: AtomicU64,
}

impl AuthFailures {
    /// Admits one token check from `peer`, or 429 once it has failed
    /// `limit` times this minute. The check counts as a failure until
    /// [`AuthFailures::passed`] gives it back, so guesses sent all at once
    /// are held to the limit as well as guesses sent one by one.
    pub fn admit(&self, peer: Option<IpAddr>, limit: u32, now_ms: i64) -> Result<()> {
        let Some(ip) = peer.map(client_key) else {
            return Ok(());
        };
        let minute = now_ms / MINUTE_MS;
        {
            let mut counts = crate::sync::lock(&self.counts);
            let n = count_of(&mut counts, ip, minute);
            if *n < limit {
                *n += 1;
                return Ok(());
            }
        }
        let n = self.throttled.fetch_add(1, Ordering::Relaxed);
        if n % 1000 == 0 {
            tracing::warn!(%ip, throttled = n + 1, "token guesses throttled");
        }
        let retry_s = ((((minute + 1) * MINUTE_MS - now_ms) as u64).div_ceil(1000)).max(1);
        Err(Error::new(
            Kind::TooMany,
            Class::Limit,
            ErrorCode::AuthThrottled,
            format!(
                "more than {limit} failed token checks from this address in a minute; \
                 try again in {retry_s} s"
            ),
        )
        .retry_after(retry_s))
    }

    /// The admitted check found its token: it was no failure after all.
    pub fn passed(&self, peer: Option<IpAddr>, now_ms: i64) {
        let Some(ip) = peer.map(client_key) else {
            return;
        };
        let minute = now_ms / MINUTE_MS;
        if let Some((m, n)) = crate::sync::lock(&self.counts).get_mut(&ip) {
            if *m == minute {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The admitted check failed: counted already, recorded for /metrics.
    pub fn failed(&self, peer: Option<IpAddr>) {
        let total = self.failures.fetch_add(1, Ordering::Relaxed);
        // Logged, sampled.
        if total % 1000 == 0 {
            if let Some(ip) = peer.map(client_key) {
                tracing::info!(%ip, total = total + 1, "token check failed");
            }
        }
    }

    pub fn render(&self) -> String {
        format!(
            "# HELP elementd_auth_failures_total Token checks that failed (unknown, revoked or expired tokens).\n\
             # TYPE elementd_auth_failures_total counter\n\
             elementd_auth_failures_total {}\n\
             # HELP elementd_auth_throttled_total Requests refused with AUTH_THROTTLED.\n\
             # TYPE elementd_auth_throttled_total counter\n\
             elementd_auth_throttled_total {}\n",
            self.failures.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed)
        )
    }
}

/// `ip`'s count for `minute`, making room when too many are tracked.
fn count_of(counts: &mut HashMap<IpAddr, (i64, u32)>, ip: IpAddr, minute: i64) -> &mut u32 {
    if counts.len() >= TRACKED && !counts.contains_key(&ip) {
        counts.retain(|_, (m, _)| *m == minute);
        if counts.len() >= TRACKED {
            // Still full of this minute's guessers: make room at random.
            if let Some(k) = counts.keys().next().copied() {
                counts.remove(&k);
            }
        }
    }
    let entry = counts.entry(ip).or_insert((minute, 0));
    if entry.0 != minute {
        *entry = (minute, 0);
    }
    &mut entry.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_past_its_limit_and_others_are_not() {
        let f = AuthFailures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = 5 * MINUTE_MS + 1000;
        for _ in 0..3 {
            assert!(f.admit(Some(a), 3, t).is_ok());
            f.failed(Some(a));
        }
        // Three failures are the limit: the next try is refused.
        let e = f.admit(Some(a), 3, t).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.retry_after),
            ("AUTH_THROTTLED", Some(59))
        );
        assert!(
            f.admit(Some(b), 3, t).is_ok(),
            "another address is not slowed"
        );
        assert!(
            f.admit(Some(a), 3, t + MINUTE_MS).is_ok(),
            "a new minute starts over"
        );
        assert_eq!(f.failures.load(Ordering::Relaxed), 3);
        // Addresses of one IPv6 /64 are one client.
        let (x, y): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::ffff".parse().unwrap(),
        );
        for _ in 0..3 {
            f.admit(Some(x), 3, t).unwrap();
        }
        assert!(f.admit(Some(y), 3, t).is_err());
        assert!(f
            .admit(Some("2001:db8:0:1::1".parse().unwrap()), 3, t)
            .is_ok());
    }

    #[test]
    fn checks_in_flight_count_until_they_pass() {
        let f = AuthFailures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t = 7 * MINUTE_MS;
        // Three checks at once use up the limit before any has an answer.
        for _ in 0..3 {
            f.admit(Some(a), 3, t).unwrap();
        }
        assert!(f.admit(Some(a), 3, t).is_err());
        // Good tokens give their place back; failures keep theirs.
        f.passed(Some(a), t);
        f.passed(Some(a), t);
        f.admit(Some(a), 3, t).unwrap();
        f.admit(Some(a), 3, t).unwrap();
        assert!(f.admit(Some(a), 3, t).is_err());
        // A pass from a minute already over takes nothing off this one.
        f.admit(Some(a), 3, t + MINUTE_MS).unwrap();
        f.passed(Some(a), t + MINUTE_MS);
        f.passed(Some(a), t + MINUTE_MS);
        for _ in 0..3 {
            f.admit(Some(a), 3, t + MINUTE_MS).unwrap();
        }
        assert!(f.admit(Some(a), 3, t + MINUTE_MS).is_err());
    }
}

/// Places for work that runs as a child process (git): a node-wide count
/// and one per client key (a token, an address). A place is held by its
/// [`Place`] and given back when that drops.
#[derive(Default)]
pub struct Places {
    held: Mutex<(usize, HashMap<String, usize>)>,
}

pub struct Place {
    places: std::sync::Arc<Places>,
    keys: Vec<String>,
}

impl Places {
    /// A place, or None when the node is at `total` or any key at `per_key`.
    pub fn take(
        self: &std::sync::Arc<Self>,
        keys: Vec<String>,
        total: usize,
        per_key: usize,
    ) -> Option<Place> {
        let mut held = crate::sync::lock(&self.held);
        let (n, by_key) = &mut *held;
        if *n >= total
            || keys
                .iter()
                .any(|k| by_key.get(k).is_some_and(|c| *c >= per_key))
        {
            return None;
        }
        *n += 1;
        for k in &keys {
            *by_key.entry(k.clone()).or_insert(0) += 1;
        }
        Some(Place {
            places: self.clone(),
            keys,
        })
    }

    pub fn in_use(&self) -> usize {
        crate::sync::lock(&self.held).0
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = crate::sync::lock(&self.places.held);
        let (n, by_key) = &mut *held;
        *n = n.saturating_sub(1);
        for k in &self.keys {
            if let Some(c) = by_key.get_mut(k) {
                *c -= 1;
                if *c == 0 {
                    by_key.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod place_tests {
    use super::*;

    #[test]
    fn places_are_held_per_node_and_per_key_and_given_back() {
        let p = std::sync::Arc::new(Places::default());
        let a = p.take(vec!["ip:a".into(), "tok:1".into()], 3, 2).unwrap();
        let b = p.take(vec!["ip:a".into(), "tok:2".into()], 3, 2).unwrap();
        assert!(p.take(vec!["ip:a".into()], 3, 2).is_none(), "ip:a holds 2");
        let c = p.take(vec!["ip:b".into()], 3, 2).unwrap();
        assert!(
            p.take(vec!["ip:c".into()], 3, 2).is_none(),
            "the node holds 3"
        );
        drop(a);
        assert_eq!(p.in_use(), 2);
        assert!(p.take(vec!["ip:a".into()], 3, 2).is_some());
        drop((b, c));
        assert_eq!(p.in_use(), 0);
    }
}
