//! API tokens as elements: an `api-token` element holds a token's policy
//! (scopes, expiry, addresses, origins, rate limit) in its spec, and makes
//! the secrets, shown once. Rotation keeps the previous secret working for
//! a grace period; revocation ends them all. Uses are noted in memory and
//! written in batches.

use crate::error::{Class, Error, Kind, Result};
use crate::error_codes::ErrorCode;
use crate::ids::ElementId;
use crate::model::now_ms;
use crate::model::{strings_at, Element, Role};
use crate::modifiers::ActiveModifier;
use crate::service::App;
use crate::store::tokens::TokenRow;
use crate::types::Capability;
use ipnet::IpNet;
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// What a token may do, by its scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub deploy: bool,
    pub admin: bool,
}

impl Scopes {
    /// The role a token of these scopes acts with.
    pub fn role(self) -> Role {
        match self {
            s if s.admin => Role::Admin,
            s if s.write || s.deploy => Role::Member,
            _ => Role::Viewer,
        }
    }

    /// The scopes by name, as an api-token's spec lists them.
    pub fn names(self) -> Vec<&'static str> {
        [
            ("read", self.read),
            ("write", self.write),
            ("deploy", self.deploy),
            ("admin", self.admin),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }
}

/// An api-token element's spec, as requests are checked against it.
#[derive(Debug, Clone, Default)]
pub struct TokenPolicy {
    pub scopes: Scopes,
    /// Sent as `X-API-Key` rather than a bearer token.
    pub api_key: bool,
    pub expires_at: Option<i64>,
    pub allowed_ips: Vec<IpNet>,
    pub allowed_origins: Vec<String>,
    pub rate_limit: Option<Value>,
}

/// An address or a CIDR network; a bare address is a network of one.
fn network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl TokenPolicy {
    /// Reads a spec; Err names an entry that is not what it must be.
    pub fn of(spec: &Value) -> Result<TokenPolicy> {
        let mut scopes = Scopes::default();
        for s in strings_at(spec, "scopes") {
            match s.as_str() {
                "read" => scopes.read = true,
                "write" => scopes.write = true,
                "deploy" => scopes.deploy = true,
                "admin" => scopes.admin = true,
                other => {
                    return Err(Error::unprocessable(
                        ErrorCode::SpecInvalid,
                        format!(
                            "scope '{}' is not read, write, deploy or admin",
                            crate::error::shown(other)
                        ),
                    ))
                }
            }
        }
        let mut allowed_ips = Vec::new();
        for s in strings_at(spec, "allowed_ips") {
            allowed_ips.push(network(s.trim()).ok_or_else(|| {
                Error::unprocessable(
                    ErrorCode::InvalidCidr,
                    format!(
                        "allowed_ips entry '{}' is neither an address nor a CIDR network (10.0.0.0/8, ::1)",
                        crate::error::shown(&s)
                    ),
                )
            })?);
        }
        let expires_at = match spec.get("expires_at").and_then(Value::as_str) {
            None => None,
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| {
                        Error::unprocessable(
                            ErrorCode::SpecInvalid,
                            format!(
                                "expires_at '{}' is not an RFC 3339 time",
                                crate::error::shown(t)
                            ),
                        )
                    })?
                    .timestamp_millis(),
            ),
        };
        Ok(TokenPolicy {
            scopes,
            api_key: spec.get("token_type").and_then(Value::as_str) == Some("api-key"),
            expires_at,
            allowed_ips,
            allowed_origins: strings_at(spec, "allowed_origins"),
            rate_limit: spec.get("rate_limit").cloned(),
        })
    }

    /// 403 `IP_NOT_ALLOWED` unless the address is allowed (an unknown
    /// address is not, when a list is set).
    pub fn check_ip(&self, peer: Option<IpAddr>) -> Result<()> {
        if self.allowed_ips.is_empty() {
            return Ok(());
        }
        // An IPv4 peer may arrive as an IPv6-mapped address.
        let peer = peer.map(|p| match p {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(p, IpAddr::V4),
            v4 => v4,
        });
        if peer.is_some_and(|p| self.allowed_ips.iter().any(|n| n.contains(&p))) {
            return Ok(());
        }
        Err(Error::new(
            Kind::Forbidden,
            Class::Auth,
            ErrorCode::IpNotAllowed,
            "this token may not be used from this address (allowed_ips)",
        ))
    }

    /// The token's own limit, counted like a rate-limit modifier.
    pub fn limiter(&self, element_id: &ElementId, slug: &str) -> Option<ActiveModifier> {
        self.rate_limit.as_ref().map(|spec| {
            ActiveModifier::new(
                format!("token:{element_id}"),
                slug.to_string(),
                vec![Capability::RateLimit],
                spec.clone(),
                None,
            )
        })
    }
}

/// When each token was last used, until the next batch writes it.
#[derive(Default)]
pub struct Touches(Mutex<HashMap<String, i64>>);

impl Touches {
    pub fn note(&self, token_id: &str) {
        let mut m = crate::sync::lock(&self.0);
        // Bounded: a flood of distinct tokens waits for the next batch.
        if m.len() < 65_536 || m.contains_key(token_id) {
            m.insert(token_id.to_string(), now_ms());
        }
    }
    fn take(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *crate::sync::lock(&self.0))
            .into_iter()
            .collect()
    }
}

/// A token's state as `tokens` shows it.
pub fn status(t: &TokenRow, now: i64) -> &'static str {
    match (t.revoked_at, t.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(e)) if e <= now => "expired",
        _ => "active",
    }
}

/// API tokens: their secrets, minted and rotated, and their uses.
pub struct Tokens<'a> {
    app: &'a App,
}

impl App {
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens { app: self }
    }
}

impl App {
    /// 422 for an api-token spec the schema cannot judge: a CIDR, a time.
    pub(in crate::service) fn check_token_spec(&self, el: &Element) -> Result<()> {
        if self.types.has(&el.element_type, Capability::ApiToken) {
            TokenPolicy::of(&el.spec)?;
        }
        Ok(())
    }
}

impl Tokens<'_> {
    /// A new secret for an api-token element, shown once.
    pub async fn mint(&self, el: &Element) -> Result<(TokenRow, String)> {
        let policy = TokenPolicy::of(&el.spec)?;
        self.app
            .db
            .create_element_token(el, policy.scopes.role(), None)
            .await
            .map_err(Into::into)
    }

    /// A new secret; the active ones end after `grace_ms`. 409
    /// `TOKEN_REVOKED` when the token was revoked.
    pub async fn rotate(
        &self,
        el: &Element,
        grace_ms: i64,
    ) -> Result<(TokenRow, String, Vec<TokenRow>)> {
        let rows = self.app.db.element_tokens(&el.id).await?;
        if rows.iter().any(|t| t.revoked_at.is_some()) {
            return Err(Error::conflict(
                ErrorCode::TokenRevoked,
                format!("api-token '{}' was revoked; make a new one", el.slug),
            ));
        }
        let now = self.app.clock.now_ms();
        let (row, secret) = self.mint(el).await?;
        let mut ending = Vec::new();
        for mut old in rows.into_iter().filter(|t| status(t, now) == "active") {
            let at = now + grace_ms;
            self.app.db.end_token_at(&old.id, at).await?;
            old.expires_at = Some(old.expires_at.map_or(at, |e| e.min(at)));
            ending.push(old);
        }
        Ok((row, secret, ending))
    }

    /// What each api-token of `els` is as a whole, by element id:
    /// `revoked` once revoked, `expired` when no secret works any more
    /// (or its `expires_at` passed), else `active`. Other elements are
    /// absent. One query for them all.
    pub async fn statuses(&self, els: &[&Element]) -> Result<HashMap<ElementId, &'static str>> {
        let tokens: Vec<&Element> = (els.iter().copied())
            .filter(|e| self.app.types.has(&e.element_type, Capability::ApiToken))
            .collect();
        let ids: Vec<&ElementId> = tokens.iter().map(|e| &e.id).collect();
        let now = self.app.clock.now_ms();
        let states = self.app.db.token_states(&ids, now).await?;
        Ok(tokens
            .iter()
            .map(|e| {
                let (revoked, working) = (states.iter())
                    .find(|(id, _, _)| *id == e.id)
                    .map_or((false, 0), |(_, r, w)| (*r, *w));
                let ended = TokenPolicy::of(&e.spec)
                    .ok()
                    .and_then(|p| p.expires_at)
                    .is_some_and(|t| t <= now);
                let status = match () {
                    _ if revoked => "revoked",
                    _ if ended || working == 0 => "expired",
                    _ => "active",
                };
                (e.id.clone(), status)
            })
            .collect())
    }

    /// The token a secret names, through the token cache.
    pub async fn for_secret(&self, secret: &str) -> Result<Option<std::sync::Arc<TokenRow>>> {
        Ok(self.app.db.token_cached(secret).await?)
    }

    /// Writes the uses noted since the last batch.
    pub async fn flush_touches(&self) {
        let used = self.app.touches.take();
        if let Err(e) = self.app.db.touch_tokens(&used).await {
            tracing::warn!(error = %e, tokens = used.len(), "last_used_at not written");
        }
    }
}
