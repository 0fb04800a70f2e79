//! `series`: a websocket's last 15 minutes as this node saw them, for
//! the console's charts (the ring is in `runtime/series.rs`).

use crate::api::call::{ok, Call, Reply};
use crate::error::Result;
use crate::model::now_ms;
use crate::runtime::series::{EVERY_MS, KEEP};
use crate::service::App;
use serde_json::json;

pub async fn series(app: &App, call: &Call) -> Result<Reply> {
    let env = super::ws::env_of(call, None)?;
    // 409 WS_NOT_LIVE when nothing runs there.
    let hub = app.realtime().env_hub(&call.element, env)?;
    let (samples, current) = hub.series(now_ms());
    ok(json!({
        "env": env,
        "node_id": app.runtime().broker().node_id(),
        "interval_seconds": EVERY_MS / 1000,
        "capacity": KEEP,
        "samples": samples.iter().map(|s| s.json()).collect::<Vec<_>>(),
        "current": current.json(),
    }))
}
