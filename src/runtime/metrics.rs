//! The seed's websocket metrics, per element and environment (labels
//! `circle`, `slug`, `env`), in
//! a Prometheus registry of this runtime (not the process-global one, so
//! several servers in one process keep apart).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};

const LABELS: &[&str] = &["circle", "slug", "env"];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connection_count: IntCounterVec,
    active_connections: IntGaugeVec,
    message_sent_count: IntCounterVec,
    broadcast_count: IntCounterVec,
    broadcast_recipients: IntCounterVec,
    disconnect_count: IntCounterVec,
    message_received_count: IntCounterVec,
    rejected_count: IntCounterVec,
    slow_client_count: IntCounterVec,
}

/// One element's handles: increments are plain atomics.
#[derive(Clone)]
pub struct ElementMetrics {
    pub connection_count: IntCounter,
    pub active_connections: IntGauge,
    pub message_sent_count: IntCounter,
    pub broadcast_count: IntCounter,
    pub broadcast_recipients: IntCounter,
    pub disconnect_count: IntCounter,
    pub message_received_count: IntCounter,
    pub rejected_count: IntCounter,
    pub slow_client_count: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("elementd_ws_{name}"), help), LABELS)
        .expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let active = IntGaugeVec::new(
            Opts::new(
                "elementd_ws_active_connections",
                "Open client connections (and the driven link when open)",
            ),
            LABELS,
        )
        .expect("valid metric");
        r.register(Box::new(active.clone())).expect("unique metric");
        Metrics {
            connection_count: counter(&r, "connection_count", "Connections accepted"),
            active_connections: active,
            message_sent_count: counter(&r, "message_sent_count", "Frames sent to clients"),
            broadcast_count: counter(&r, "broadcast_count", "Broadcasts dispatched"),
            broadcast_recipients: counter(
                &r,
                "broadcast_recipients",
                "Connections a broadcast was queued to, summed",
            ),
            disconnect_count: counter(&r, "disconnect_count", "Connections closed"),
            message_received_count: counter(
                &r,
                "message_received_count",
                "Messages received from clients, the driven link and `receive`",
            ),
            rejected_count: counter(&r, "rejected_count", "Upgrades refused"),
            slow_client_count: counter(
                &r,
                "slow_client_count",
                "Clients closed because their send queue overflowed",
            ),
            registry: r,
        }
    }

    pub fn element(&self, circle: &str, slug: &str, env: &str) -> ElementMetrics {
        let l = &[circle, slug, env];
        ElementMetrics {
            connection_count: self.connection_count.with_label_values(l),
            active_connections: self.active_connections.with_label_values(l),
            message_sent_count: self.message_sent_count.with_label_values(l),
            broadcast_count: self.broadcast_count.with_label_values(l),
            broadcast_recipients: self.broadcast_recipients.with_label_values(l),
            disconnect_count: self.disconnect_count.with_label_values(l),
            message_received_count: self.message_received_count.with_label_values(l),
            rejected_count: self.rejected_count.with_label_values(l),
            slow_client_count: self.slow_client_count.with_label_values(l),
        }
    }

    /// Drops an element's series in one environment (it was deleted).
    pub fn remove(&self, circle: &str, slug: &str, env: &str) {
        let l = &[circle, slug, env];
        let _ = self.active_connections.remove_label_values(l);
        for c in [
            &self.connection_count,
            &self.message_sent_count,
            &self.broadcast_count,
            &self.broadcast_recipients,
            &self.disconnect_count,
            &self.message_received_count,
            &self.rejected_count,
            &self.slow_client_count,
        ] {
            let _ = c.remove_label_values(l);
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

impl ElementMetrics {
    /// The seed's metric names with their current values, for `stats`.
    pub fn snapshot(&self) -> Value {
        json!({
            "connection_count": self.connection_count.get(),
            "active_connections": self.active_connections.get(),
            "message_sent_count": self.message_sent_count.get(),
            "broadcast_count": self.broadcast_count.get(),
            "broadcast_recipients": self.broadcast_recipients.get(),
            "disconnect_count": self.disconnect_count.get(),
            "message_received_count": self.message_received_count.get(),
            "rejected_count": self.rejected_count.get(),
            "slow_client_count": self.slow_client_count.get(),
        })
    }
}
