//! This node as operators see it: readiness and Prometheus metrics.

use crate::service::App;
use serde_json::{json, Value};

/// What this node tells about itself: readiness and metrics.
pub struct Node<'a> {
    app: &'a App,
}

impl App {
    pub fn node(&self) -> Node<'_> {
        Node { app: self }
    }
}

impl Node<'_> {
    /// Whether the node can serve (its database answers, its repositories
    /// directory is there), with the parts' states.
    pub async fn readiness(&self) -> (bool, Value) {
        let db = self.app.db.ping().await.map_err(|e| e.to_string());
        let repos = std::fs::create_dir_all(self.app.config.repos_dir()).map_err(|e| e.to_string());
        let ready = db.is_ok() && repos.is_ok();
        let mut body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "database": db.err().unwrap_or_else(|| "ok".into()),
            "repositories": repos.err().unwrap_or_else(|| "ok".into()),
        });
        let nodes = self.app.runtime.broker();
        if let (Some(node), Some(n)) = (nodes.node_id(), nodes.listening_nodes()) {
            body["cluster"] = json!({"node_id": node, "nodes_with_live_listeners": n});
        }
        (ready, body)
    }

    /// Prometheus text: the websocket metrics of every live element, the
    /// node's queued bytes, and refused token guesses.
    pub fn metrics_text(&self) -> String {
        let budget = self.app.runtime.budget();
        let mut text = self.app.runtime.metrics().render();
        text.push_str(&format!(
            "# HELP elementd_ws_queued_bytes Bytes queued to websocket clients on this node\n\
             # TYPE elementd_ws_queued_bytes gauge\n\
             elementd_ws_queued_bytes {}\n\
             # HELP elementd_ws_queued_bytes_limit ELEMENTD_MAX_WS_QUEUED_BYTES\n\
             # TYPE elementd_ws_queued_bytes_limit gauge\n\
             elementd_ws_queued_bytes_limit {}\n",
            budget.queued(),
            budget.limits.queued_bytes
        ));
        text.push_str(&self.app.auth_failures.render());
        text
    }
}
