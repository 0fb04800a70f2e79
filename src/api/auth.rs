//! Auth as extractors: a handler that takes [`Caller`] or
//! [`Principal`] cannot skip the token check.

use crate::error::{Error, Result};
use crate::model::Reach;
use crate::model::State;
use crate::service::api_tokens::TokenPolicy;
use crate::service::principal::{missing_token, Principal};
use crate::service::SharedApp;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts};
use base64::Engine;
use std::net::{IpAddr, SocketAddr};

/// The caller of a request: a valid token, or nobody. A token that is
/// present but not valid is rejected with 401 here.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// `X-API-Key`: where an api-token of `token_type: api-key` is sent.
pub const API_KEY: &str = "x-api-key";

/// Reads a token from `Authorization: Bearer …`, HTTP Basic (password) or
/// `X-API-Key`; both headers at once is refused rather than one picked.
pub fn token_from_headers(headers: &axum::http::HeaderMap) -> Result<Option<String>> {
    let key = headers.get(API_KEY);
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return match key.map(|k| k.to_str().map(str::trim)) {
            None => Ok(None),
            Some(Ok(k)) if !k.is_empty() => Ok(Some(k.to_string())),
            Some(_) => Err(Error::unauthorized("malformed X-API-Key header")),
        };
    };
    if key.is_some() {
        return Err(Error::unauthorized(
            "send one credential: Authorization or X-API-Key, not both",
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| Error::unauthorized("malformed Authorization header"))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Some(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::unauthorized("malformed Basic credentials"))?;
        if let Some((_, pass)) = decoded.split_once(':') {
            if !pass.is_empty() {
                return Ok(Some(pass.to_string()));
            }
        }
    }
    Err(Error::unauthorized(
        "use 'Authorization: Bearer <token>' (or Basic with the token as password)",
    ))
}

/// The principal of a token secret, used from `peer`: 401 for a token
/// that is unknown, revoked or expired; for an api-token element's, also
/// its element's state and policy (403 `IP_NOT_ALLOWED`).
pub async fn principal_for(
    app: &crate::service::App,
    secret: &str,
    peer: Option<IpAddr>,
) -> Result<Principal> {
    // Guessing is held per address: a throttled one is refused before
    // its token is looked at, so it learns nothing more.
    let limit = app.config().limits.auth_failures_per_minute;
    app.auth_failures()
        .admit(peer, limit, app.clock().now_ms())?;
    let found = lookup(app, secret, peer).await;
    if found
        .as_ref()
        .is_err_and(|e| e.kind == crate::error::Kind::Unauthenticated)
    {
        app.auth_failures().failed(peer);
    } else {
        app.auth_failures().passed(peer, app.clock().now_ms());
    }
    found
}

async fn lookup(
    app: &crate::service::App,
    secret: &str,
    peer: Option<IpAddr>,
) -> Result<Principal> {
    let row = app
        .tokens()
        .for_secret(secret)
        .await?
        .ok_or_else(|| Error::unauthorized("invalid token"))?;
    if row.revoked_at.is_some() {
        return Err(Error::unauthorized("token revoked"));
    }
    let now = app.clock().now_ms();
    if row.expires_at.is_some_and(|t| t <= now) {
        return Err(Error::unauthorized("token expired"));
    }
    app.touches().note(&row.id);
    let mut p = Principal {
        token_id: row.id.clone(),
        reach: row.reach.clone(),
        role: row.role,
        scopes: None,
        api_key: false,
        origins: Vec::new(),
        rate: None,
    };
    let (
        Some(element_id),
        Reach::Circle {
            id: Some(circle_id),
            ..
        },
    ) = (&row.element_id, &row.reach)
    else {
        return Ok(p);
    };
    let el = app
        .elements()
        .cached(circle_id, &row.name)
        .await?
        .filter(|e| e.id == *element_id)
        .ok_or_else(|| Error::unauthorized("token revoked"))?;
    if el.state != State::Ready {
        return Err(Error::unauthorized(format!(
            "token disabled: api-token '{}' is {}",
            el.slug,
            el.state.as_str()
        )));
    }
    let policy = TokenPolicy::of(&el.spec)?;
    if policy.expires_at.is_some_and(|t| t <= now) {
        return Err(Error::unauthorized("token expired"));
    }
    policy.check_ip(peer)?;
    p.role = policy.scopes.role();
    p.scopes = Some(policy.scopes);
    p.api_key = policy.api_key;
    p.rate = policy.limiter(&el.id, &el.slug);
    p.origins = policy.allowed_origins;
    Ok(p)
}

/// The peer's address, as the accept loop records it.
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

impl FromRequestParts<SharedApp> for Caller {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self> {
        match token_from_headers(&parts.headers)? {
            None => Ok(Caller(None)),
            Some(secret) => Ok(Caller(Some(
                principal_for(app, &secret, peer_ip(parts)).await?,
            ))),
        }
    }
}

impl FromRequestParts<SharedApp> for Principal {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self> {
        Caller::from_request_parts(parts, app)
            .await?
            .0
            .ok_or_else(missing_token)
    }
}
