//! A webhook's `deliveries`, `redeliver` and `test`.

use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::rfc3339;
use crate::service::App;
use crate::store::outbox::Delivery;
use serde::Deserialize;
use serde_json::{json, Value};

fn shown(d: &Delivery) -> Value {
    json!({
        "id": d.event_id,
        "type": d.kind,
        "status": d.status,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "next_attempt_at": (d.status == "pending").then(|| rfc3339(d.next_attempt_at)),
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    before: Option<String>,
    limit: Option<i64>,
}

pub async fn deliveries(app: &App, call: &Call) -> Result<Reply> {
    let q: DeliveriesQuery = call.query()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request(
            ErrorCode::InvalidLimit,
            "limit must be between 1 and 500",
        ));
    }
    let (rows, dropped) = app
        .webhooks()
        .deliveries(&call.element, q.before.as_deref(), limit)
        .await?;
    ok(json!({
        "deliveries": rows.iter().map(shown).collect::<Vec<_>>(),
        "dropped": dropped,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {
    id: String,
}

pub async fn redeliver(app: &App, call: &Call) -> Result<Reply> {
    let body: RedeliverBody = call.body()?;
    ok(shown(
        &app.webhooks().redeliver(&call.element, &body.id).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {}

pub async fn test(app: &App, call: &Call) -> Result<Reply> {
    let _: TestBody = call.body()?;
    ok(shown(&app.webhooks().test(&call.ctx, &call.element).await?))
}
