//! Which connections the public listener takes: at most the cap, then a
//! small reserve that only health checks and platform admins may use.
//!
//! A reserve that slow clients could fill would be no reserve: a client
//! flood past the cap would hold it with half-sent requests just as it
//! holds the cap. So when the reserve is full, the reserve connection
//! that has waited longest for its request gives way to the newcomer. A
//! probe that sends its request right away is served unless more than
//! [`RESERVE`] connections arrive while its request is on the way; only
//! when every reserve connection is busy serving is a newcomer closed at
//! once.

use crate::service::throttle::client_key;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Connections kept beyond the cap for health checks and admins.
pub const RESERVE: usize = 16;
/// Descriptors the derived cap leaves to the database, git and logs.
const FD_HEADROOM: u64 = 256;
/// Bounds of the derived cap: a small open-file limit still serves, and a
/// huge one does not invite more idle connections than memory should hold.
const DERIVED_MIN: u64 = 32;
const DERIVED_MAX: u64 = 16_384;

/// The cap in force: the configured one, or one derived from the
/// open-file limit (half of it after headroom, the other half being left
/// to websockets, which do not count here).
pub fn connection_cap(configured: usize, nofile: u64) -> usize {
    if configured > 0 {
        if configured as u64 + (RESERVE as u64) + FD_HEADROOM > nofile {
            tracing::warn!(
                max_http_connections = configured,
                open_file_limit = nofile,
                "max_http_connections is more than the open-file limit leaves room for; \
                 accepting will fail (and back off) before the cap is reached"
            );
        }
        return configured;
    }
    (nofile.saturating_sub(FD_HEADROOM) / 2).clamp(DERIVED_MIN, DERIVED_MAX) as usize
}

/// The websocket cap in force: the configured one, or what the open-file
/// limit leaves after the headroom, the HTTP cap and its reserve (so
/// websockets can never take the descriptors REST, git and probes need).
pub fn ws_connection_cap(configured: usize, http_cap: usize, nofile: u64) -> usize {
    let left = nofile
        .saturating_sub(FD_HEADROOM)
        .saturating_sub((http_cap + RESERVE) as u64);
    if configured > 0 {
        if configured as u64 > left {
            tracing::warn!(
                max_ws_connections = configured,
                open_file_limit = nofile,
                "max_ws_connections is more than the open-file limit leaves room for \
                 beside max_http_connections"
            );
        }
        return configured;
    }
    left.max(DERIVED_MIN) as usize
}

/// The runtime's websocket limits from the configuration.
pub fn ws_limits(
    limits: &crate::config::Limits,
    http_cap: usize,
    nofile: u64,
) -> crate::runtime::WsLimits {
    crate::runtime::WsLimits {
        max_connections: ws_connection_cap(limits.max_ws_connections, http_cap, nofile),
        per_element: limits.max_ws_connections_per_element,
        buffer_bytes: limits.max_ws_buffer_bytes,
        queued_bytes: limits.max_ws_queued_bytes,
        message_bytes: limits.max_ws_message_bytes as usize,
        history_bytes: limits.max_history_bytes_per_element,
        connection_events: limits.connection_events_per_second,
    }
}

/// Raises the open-file soft limit to the hard limit; returns the soft
/// limit in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// The connection cap and its reserve.
#[derive(Clone)]
pub struct Cap {
    full: Arc<Semaphore>,
    reserve: Arc<Reserve>,
}

/// A connection's place; it is given back when dropped.
pub enum Admission {
    /// Under the cap (or on a listener without one).
    Full(Option<OwnedSemaphorePermit>),
    Reserve(Arc<ReserveSlot>),
    Refused,
}

impl Cap {
    pub fn new(max: usize) -> Cap {
        Cap {
            full: Arc::new(Semaphore::new(max)),
            reserve: Arc::new(Reserve::default()),
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_from(IpAddr::from([0, 0, 0, 0]), &|_| 0)
    }

    /// [`Cap::admit`] for a client at `ip`. When the reserve is full, the
    /// waiting connection of the client holding the most connections
    /// (`held`) gives way, the oldest of its among equals: one address
    /// cannot crowd the others out of the reserve.
    pub fn admit_from(&self, ip: IpAddr, held: &dyn Fn(IpAddr) -> usize) -> Admission {
        if let Ok(p) = self.full.clone().try_acquire_owned() {
            return Admission::Full(Some(p));
        }
        match self.reserve.take(ip, held) {
            Some(slot) => Admission::Reserve(Arc::new(slot)),
            None => Admission::Refused,
        }
    }
}

/// Connections per client address, HTTP and websocket together: a place
/// is held for as long as the socket is open.
pub struct PerIp {
    max: usize,
    /// Per client, as `client_key` counts one (an IPv6 /64 is one).
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place under [`PerIp`], given back on drop.
pub struct IpHold {
    of: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Connections `ip`'s client holds now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let held = crate::sync::lock(&self.held);
        held.get(&client_key(ip)).copied().unwrap_or(0)
    }

    /// A place for one more connection from `ip`; None when it holds its
    /// maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpHold> {
        let key = client_key(ip);
        let mut held = crate::sync::lock(&self.held);
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpHold {
            of: self.clone(),
            key,
        })
    }
}

impl Drop for IpHold {
    fn drop(&mut self) {
        let mut held = crate::sync::lock(&self.of.held);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[derive(Default)]
struct Reserve {
    state: Mutex<ReserveState>,
}

#[derive(Default)]
struct ReserveState {
    held: usize,
    next_id: u64,
    /// Reserve connections still waiting for their request, oldest first,
    /// with their client's address.
    waiting: VecDeque<(u64, IpAddr, CancellationToken)>,
}

/// A place in the reserve.
pub struct ReserveSlot {
    reserve: Arc<Reserve>,
    id: u64,
    evicted: CancellationToken,
}

impl Reserve {
    fn take(self: &Arc<Self>, ip: IpAddr, held: &dyn Fn(IpAddr) -> usize) -> Option<ReserveSlot> {
        let mut st = crate::sync::lock(&self.state);
        if st.held < RESERVE {
            st.held += 1;
        } else {
            // The most-connected client's oldest waiting one gives way.
            let mut pick: Option<(usize, usize)> = None;
            for (i, (_, from, _)) in st.waiting.iter().enumerate() {
                let n = held(*from);
                if pick.is_none_or(|(_, best)| n > best) {
                    pick = Some((i, n));
                }
            }
            let (i, _) = pick?;
            let (_, _, gone) = st.waiting.remove(i)?;
            // Its place passes to the newcomer: `held` stays.
            gone.cancel();
        }
        let id = st.next_id;
        st.next_id += 1;
        let evicted = CancellationToken::new();
        st.waiting.push_back((id, ip, evicted.clone()));
        Some(ReserveSlot {
            reserve: self.clone(),
            id,
            evicted,
        })
    }
}

impl ReserveSlot {
    /// Cancelled when a newer connection took this one's place.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Its request has arrived: it no longer gives way.
    pub fn started(&self) {
        let mut st = crate::sync::lock(&self.reserve.state);
        st.waiting.retain(|(id, _, _)| *id != self.id);
    }
}

impl Drop for ReserveSlot {
    fn drop(&mut self) {
        if self.evicted.is_cancelled() {
            return;
        }
        let mut st = crate::sync::lock(&self.reserve.state);
        st.held -= 1;
        st.waiting.retain(|(id, _, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cap_leaves_headroom_and_is_bounded() {
        assert_eq!(connection_cap(20, 20_000), 20, "configured wins");
        assert_eq!(connection_cap(0, 20_000), (20_000 - 256) / 2);
        assert_eq!(connection_cap(0, 256), 32);
        assert_eq!(connection_cap(0, 1 << 20), 16_384);
    }

    #[test]
    fn websockets_get_what_http_and_the_headroom_leave() {
        let http = connection_cap(0, 20_000);
        assert_eq!(
            ws_connection_cap(0, http, 20_000) + http + RESERVE + 256,
            20_000
        );
        assert_eq!(ws_connection_cap(0, 1024, 20_000), 20_000 - 256 - 1024 - 16);
        assert_eq!(ws_connection_cap(500, http, 20_000), 500, "configured wins");
        assert_eq!(ws_connection_cap(0, 16_384, 1024), 32);
    }

    #[test]
    fn per_ip_places_are_counted_per_address_and_per_v6_64() {
        let per = PerIp::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let holds = [per.admit(a).unwrap(), per.admit(a).unwrap()];
        assert!(per.admit(a).is_none());
        assert!(per.admit("127.0.0.2".parse().unwrap()).is_some());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(per.admit(mapped).is_none(), "v4-mapped is the same client");
        drop(holds);
        assert!(per.admit(a).is_some());
        assert!(per.held.lock().unwrap().is_empty(), "freed entries go");
        let x = per.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _y = per.admit("2001:db8::2".parse().unwrap()).unwrap();
        assert!(per.admit("2001:db8::ffff".parse().unwrap()).is_none());
        assert!(per.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(x);
    }

    fn reserve(a: &Admission) -> &ReserveSlot {
        match a {
            Admission::Reserve(s) => s,
            _ => panic!("not a reserve place"),
        }
    }

    #[test]
    fn past_the_cap_the_reserve_the_oldest_waiting_gives_way() {
        let cap = Cap::new(1);
        let first = cap.admit();
        assert!(matches!(first, Admission::Full(Some(_))));
        let slots: Vec<_> = (0..RESERVE).map(|_| cap.admit()).collect();
        // Half of them have their request; the others wait.
        for s in &slots[..RESERVE / 2] {
            reserve(s).started();
        }
        let newcomer = cap.admit();
        reserve(&newcomer);
        let evicted: Vec<bool> = slots
            .iter()
            .map(|s| reserve(s).evicted().is_cancelled())
            .collect();
        assert_eq!(
            evicted.iter().position(|e| *e),
            Some(RESERVE / 2),
            "the oldest waiting one gave way: {evicted:?}"
        );
        assert_eq!(evicted.iter().filter(|e| **e).count(), 1);
        // Dropping the evicted one frees nothing: its place was passed on.
        drop(slots);
        drop(first);
        assert!(matches!(cap.admit(), Admission::Full(Some(_))));
    }

    #[test]
    fn at_the_cap_the_most_connected_client_gives_way_first() {
        let cap = Cap::new(0);
        let (many, few): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held = |ip: IpAddr| if ip == many { 50 } else { 1 };
        // The few-connection client waits longest, yet the crowd gives way.
        let first = cap.admit_from(few, &held);
        let crowd: Vec<_> = (1..RESERVE).map(|_| cap.admit_from(many, &held)).collect();
        let newcomer = cap.admit_from(few, &held);
        reserve(&newcomer);
        assert!(
            !reserve(&first).evicted().is_cancelled(),
            "the lone client stays"
        );
        let gone: Vec<bool> = crowd
            .iter()
            .map(|s| reserve(s).evicted().is_cancelled())
            .collect();
        assert_eq!(
            gone.iter().position(|g| *g),
            Some(0),
            "the crowd's oldest went: {gone:?}"
        );
        assert_eq!(gone.iter().filter(|g| **g).count(), 1);
    }

    #[test]
    fn when_every_reserve_connection_is_busy_a_newcomer_is_refused() {
        let cap = Cap::new(0);
        let slots: Vec<_> = (0..RESERVE).map(|_| cap.admit()).collect();
        for s in &slots {
            reserve(s).started();
        }
        assert!(matches!(cap.admit(), Admission::Refused));
        drop(slots);
        assert!(matches!(cap.admit(), Admission::Reserve(_)));
    }
}
