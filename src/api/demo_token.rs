//! The demo's end users (served only with `--demo`): `GET
//! /demo/token?user=ann` mints a short-lived JWT with the development key
//! in the data directory, so the chat page connects as ann the way an
//! application's backend would have it connect.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::service::SharedApp;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

/// A query-string token may have at most 300 s of life (the chat's
/// `max_query_lifetime_s` default); this one has a little less.
const LIFETIME_S: i64 = 240;

pub async fn token(State(app): State<SharedApp>, RawQuery(q): RawQuery) -> Response {
    match mint(&app, q.as_deref().unwrap_or("")) {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn mint(app: &SharedApp, query: &str) -> Result<serde_json::Value> {
    let params = super::upgrade::query_params(query);
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if user.is_empty() || user.len() > 32 || !user.chars().all(fits) {
        return Err(Error::bad_request(
            ErrorCode::InvalidUser,
            "?user= is 1-32 letters, digits, '-' or '_'",
        ));
    }
    let file = app.config().demo_key_file();
    let key = std::fs::read_to_string(&file)
        .map_err(|e| Error::internal(format!("the demo key is unreadable: {e}")))?;
    let exp = crate::model::now_ms() / 1000 + LIFETIME_S;
    let claims = json!({"sub": user, "exp": exp, "info": {"name": user}});
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.trim().as_bytes()),
    )
    .map_err(|e| Error::internal(format!("signing the demo token: {e}")))?;
    Ok(json!({"token": token, "user": user, "exp": exp}))
}
