//! `status` on a rate-limit: what is left of each key's quota, charging
//! nothing.

use crate::api::call::{ok, Call, Reply};
use crate::error::Result;
use crate::model::rfc3339;
use crate::modifiers::RateRules;
use crate::service::App;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct StatusQuery {
    /// One key (a token id, an address or a connection id).
    key: Option<String>,
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn status(app: &App, call: &Call) -> Result<Reply> {
    let q: StatusQuery = call.query()?;
    let rules = RateRules::of(&call.element.spec);
    // Other callers' token ids and addresses are for admins only: anyone
    // else sees the counters kept for themselves.
    let admin = call.require(crate::model::Role::Admin, "").is_ok();
    let own: Vec<String> = [
        call.principal.as_ref().map(|p| p.token_id.clone()),
        call.peer.map(|p| p.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let all = app
        .rate_limits()
        .status(&call.element.id, &rules, q.key.as_deref());
    let total = all.len();
    let keys: Vec<Value> = all
        .into_iter()
        .filter(|k| admin || own.contains(&k.key))
        .map(|k| {
            json!({
                "key": k.key,
                "element_id": k.element_id,
                "windows": k.windows.iter().map(|w| json!({
                    "limit": w.window.limit,
                    "window_seconds": w.window.window_seconds,
                    "remaining": w.remaining,
                    "reset_at": rfc3339(millis(w.reset_at)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let traffic: Vec<&str> = [("ops", rules.ops), ("messages", rules.messages)]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
    ok(json!({
        "limits": rules.windows.iter().map(|w| json!({
            "limit": w.limit, "window_seconds": w.window_seconds
        })).collect::<Vec<_>>(),
        "key": rules.key.as_str(),
        "scope": {
            "counter": if rules.shared { "shared" } else { "element" },
            "traffic": traffic,
        },
        // Counters live in each node's memory: this is the answering node's.
        "counted": "per node",
        "hidden_keys": total - keys.len(),
        "keys": keys,
    }))
}
