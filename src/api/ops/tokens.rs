//! An api-token's `rotate`, `revoke` and `tokens`.

use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::rfc3339;
use crate::service::api_tokens::status;
use crate::service::App;
use crate::store::tokens::TokenRow;
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest a rotated-out secret may keep working: a week.
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

fn shown(t: &TokenRow, now: i64) -> Value {
    json!({
        "id": t.id,
        "status": status(t, now),
        "created_at": rfc3339(t.created_at),
        "expires_at": t.expires_at.map(rfc3339),
        "revoked_at": t.revoked_at.map(rfc3339),
        "last_used_at": t.last_used_at.map(rfc3339),
    })
}

pub async fn tokens(app: &App, call: &Call) -> Result<Reply> {
    let now = app.clock().now_ms();
    let rows = app.elements().tokens_of(&call.element.id).await?;
    ok(json!({"tokens": rows.iter().map(|t| shown(t, now)).collect::<Vec<_>>()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace_seconds: Option<i64>,
}

pub async fn rotate(app: &App, call: &Call) -> Result<Reply> {
    let body: RotateBody = call.body()?;
    let grace = body.grace_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(Error::bad_request(
            ErrorCode::InvalidGrace,
            format!("grace_seconds must be between 0 and {MAX_GRACE_SECONDS}"),
        ));
    }
    let (row, secret, ending) = app.tokens().rotate(&call.element, grace * 1000).await?;
    let now = app.clock().now_ms();
    let event = call.ctx.event(
        &call.element,
        EventKind::TokenRotated,
        json!({"token_id": row.id, "grace_seconds": grace,
               "ending": ending.iter().map(|t| t.id.clone()).collect::<Vec<_>>()}),
    );
    app.records().emit(event).await;
    ok(json!({
        "token": {"id": row.id, "secret": secret},
        "previous": ending.iter().map(|t| shown(t, now)).collect::<Vec<_>>(),
    }))
}

pub async fn revoke(app: &App, call: &Call) -> Result<Reply> {
    let n = app.elements().revoke_tokens(&call.element.id).await?;
    let event = call.ctx.event(
        &call.element,
        EventKind::TokenRevoked,
        json!({"revoked": n}),
    );
    app.records().emit(event).await;
    ok(json!({"revoked": n}))
}
