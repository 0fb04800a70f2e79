//! What all websockets of this node may hold together: bytes queued for
//! sending, counted with atomics on the message path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The operator's websocket limits (README "Security").
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Bytes one connection may have queued for sending.
    pub buffer_bytes: usize,
    /// Bytes all connections together may have queued.
    pub queued_bytes: u64,
    /// The largest `connection.max_message_bytes` an element may set.
    pub message_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            buffer_bytes: crate::config::DEFAULT_WS_BUFFER_BYTES,
            queued_bytes: crate::config::DEFAULT_WS_QUEUED_BYTES,
            message_bytes: crate::config::DEFAULT_WS_MESSAGE_BYTES as usize,
        }
    }
}

/// The node's shared counters.
pub struct Budget {
    pub limits: WsLimits,
    queued: AtomicU64,
}

impl Budget {
    pub fn new(limits: WsLimits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            queued: AtomicU64::new(0),
        })
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
}
