//! What all websockets of this node may hold together: connections (a
//! share of the open-file limit) and bytes queued for sending. Both are
//! counted with atomics on the message path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The operator's websocket limits (README "Security").
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Websocket connections on this node.
    pub max_connections: usize,
    /// Connections one element may take; 0: no clamp but the node's.
    pub per_element: usize,
    /// Bytes one connection may have queued for sending.
    pub buffer_bytes: usize,
    /// Bytes all connections together may have queued.
    pub queued_bytes: u64,
    /// The largest `connection.max_message_bytes` an element may set.
    pub message_bytes: usize,
    /// Room history one element may keep per environment.
    pub history_bytes: usize,
    /// `ws.connection.opened` (and `.closed`) events one element writes to
    /// activity a second in each environment; 0: every one.
    pub connection_events: u64,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_connections: Semaphore::MAX_PERMITS,
            per_element: 0,
            buffer_bytes: crate::config::DEFAULT_WS_BUFFER_BYTES,
            queued_bytes: crate::config::DEFAULT_WS_QUEUED_BYTES,
            message_bytes: crate::config::DEFAULT_WS_MESSAGE_BYTES as usize,
            history_bytes: crate::config::DEFAULT_HISTORY_BYTES,
            connection_events: crate::config::DEFAULT_CONNECTION_EVENTS,
        }
    }
}

/// The node's shared counters.
pub struct Budget {
    pub limits: WsLimits,
    conns: Arc<Semaphore>,
    queued: AtomicU64,
}

impl Budget {
    pub fn new(limits: WsLimits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            conns: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            queued: AtomicU64::new(0),
        })
    }

    /// A place for one more connection; None at the node's cap.
    pub fn connection(&self) -> Option<OwnedSemaphorePermit> {
        self.conns.clone().try_acquire_owned().ok()
    }

    /// Counts `n` more queued bytes; false (and nothing counted) when
    /// that would pass the node's budget.
    pub fn take(&self, n: usize) -> bool {
        let n = n as u64;
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.limits.queued_bytes {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n as u64, Ordering::AcqRel);
    }

    /// Bytes queued on this node now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// The `max_connections` in force for an element that asks for `spec`.
    pub fn per_element(&self, spec: usize) -> usize {
        match self.limits.per_element {
            0 => spec,
            clamp => spec.min(clamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_budget_refuses_what_would_pass_it_and_counts_back() {
        let b = Budget::new(WsLimits {
            queued_bytes: 100,
            ..WsLimits::default()
        });
        assert!(b.take(60));
        assert!(!b.take(41), "60 + 41 > 100");
        assert_eq!(b.queued(), 60, "a refusal counts nothing");
        assert!(b.take(40));
        b.release(100);
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn the_connection_cap_and_the_element_clamp() {
        let b = Budget::new(WsLimits {
            max_connections: 2,
            per_element: 5,
            ..WsLimits::default()
        });
        let (one, _two) = (b.connection().unwrap(), b.connection().unwrap());
        assert!(b.connection().is_none());
        drop(one);
        assert!(b.connection().is_some());
        assert_eq!(b.per_element(100), 5);
        assert_eq!(b.per_element(3), 3);
    }
}
