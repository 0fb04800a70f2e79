//! A hub's driven link: started and restarted with its spec, and heard
//! from as the hub's [`LinkHost`].

use super::Hub;
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::runtime::driven::{Link, LinkHost, LINK_ID};
use crate::runtime::frame::Frame;
use crate::sync::lock;
use serde_json::json;
use std::sync::Arc;

impl Hub {
    pub(super) fn restart_link(self: &Arc<Self>) {
        let spec = self.spec();
        let new = spec
            .url
            .as_ref()
            .map(|url| Link::start(self, url.clone(), spec.clone(), self.links.clone()));
        if let Some(old) = std::mem::replace(&mut *lock(&self.link), new) {
            old.stop();
        }
    }

    /// Connects the driven link again (a variable it uses changed).
    pub fn relink(self: &Arc<Self>) {
        if lock(&self.link).is_some() {
            self.restart_link();
        }
    }

    /// Whether the driven link's url or headers reference variable `slug`.
    pub fn uses_variable(&self, slug: &str) -> bool {
        if self.jwt_uses(slug) || self.hooks_use(slug) {
            return true;
        }
        let spec = self.spec();
        spec.url
            .as_deref()
            .is_some_and(|u| crate::vars::refs(u).iter().any(|s| s == slug))
            || spec
                .headers
                .values()
                .any(|v| crate::vars::refs(v).iter().any(|s| s == slug))
    }

    pub fn link(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }
}

impl LinkHost for Hub {
    async fn link_opened(&self, url: &str) {
        self.metrics.connection_count.inc();
        self.metrics.active_connections.inc();
        let data = json!({"connection_id": LINK_ID, "url": url});
        self.emit(self.event(EventKind::WsConnectionOpened, data))
            .await;
    }

    async fn link_closed(&self, code: u16, reason: &str, by: &str) {
        self.metrics.active_connections.dec();
        self.metrics.disconnect_count.inc();
        let data =
            json!({"connection_id": LINK_ID, "code": code, "reason": reason, "closed_by": by});
        self.emit(self.event(EventKind::WsConnectionClosed, data))
            .await;
    }

    async fn link_refused(&self, url: &str, why: &str) {
        let data = json!({"connection_id": LINK_ID, "url": url, "status": 502,
                          "code": ErrorCode::WsConnectionFailed, "reason": why});
        self.emit(self.event(EventKind::WsConnectionRejected, data))
            .await;
    }

    async fn link_message(&self, msg: &Frame) {
        self.metrics.message_received_count.inc();
        let mut data = msg.event_data();
        data["connection_id"] = json!(LINK_ID);
        self.emit_message(self.event(EventKind::WsMessageReceived, data))
            .await;
    }
}
