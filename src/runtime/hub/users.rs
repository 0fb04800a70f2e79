//! End users in a hub: the verifier its spec's `auth.jwt` builds (keys
//! read once: the PEM at start, the secret variable on first use, the
//! JWKS as `jwks.rs` caches it), and a client's `refresh`.

use super::Hub;
use crate::model::now_ms;
use crate::runtime::conn::Conn;
use crate::runtime::jwks::Jwks;
use crate::runtime::jwt::JwtSpec;
use crate::runtime::jwt::{self, EndUser, Refusal};
use crate::sync::{lock, read};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What checks a hub's end users' tokens.
pub struct JwtAuth {
    spec: JwtSpec,
    /// From `public_key`, one per listed algorithm.
    pem: Vec<(Algorithm, DecodingKey)>,
    jwks: Option<Jwks>,
    /// The secret variable's value, read on first use and forgotten when
    /// the variable changes.
    secret: Mutex<Option<DecodingKey>>,
    /// What a token must hold, per listed algorithm.
    validations: Vec<(Algorithm, jsonwebtoken::Validation)>,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

impl JwtAuth {
    pub fn new(spec: &JwtSpec, links: &crate::runtime::driven::LinkEnv) -> JwtAuth {
        let pem = spec.public_key.as_deref().map_or_else(Vec::new, |p| {
            jwt::algorithms(spec)
                .into_iter()
                .filter_map(|a| jwt::pem_key(p, a).ok().map(|k| (a, k)))
                .collect()
        });
        JwtAuth {
            spec: spec.clone(),
            pem,
            jwks: spec
                .jwks_url
                .as_ref()
                .map(|u| Jwks::new(u.clone(), links.http.clone(), links.clock.clone())),
            secret: Mutex::new(None),
            validations: jwt::algorithms(spec)
                .into_iter()
                .map(|a| (a, jwt::validation(spec, a)))
                .collect(),
        }
    }

    /// The secret variable's slug.
    pub fn secret_slug(&self) -> Option<String> {
        crate::vars::refs(self.spec.secret.as_deref()?)
            .into_iter()
            .next()
    }
}

impl Hub {
    /// Builds (or keeps) the verifier for the current spec.
    pub(super) fn rekey(&self) {
        let spec = self.spec();
        let mut slot = crate::sync::write(&self.jwt);
        let want = spec.auth.jwt.as_ref();
        if slot.as_ref().map(|a| &a.spec) == want {
            return;
        }
        *slot = want.map(|j| Arc::new(JwtAuth::new(j, &self.links)));
    }

    /// A variable changed: its value is read again on next use.
    pub fn forget_secret(&self, slug: &str) {
        if let Some(a) = read(&self.jwt).as_ref() {
            if a.secret_slug().as_deref() == Some(slug) {
                *lock(&a.secret) = None;
            }
        }
    }

    pub(super) fn jwt_uses(&self, slug: &str) -> bool {
        read(&self.jwt)
            .as_ref()
            .is_some_and(|a| a.secret_slug().as_deref() == Some(slug))
    }

    async fn secret_key(&self, auth: &JwtAuth) -> Result<DecodingKey, Refusal> {
        if let Some(k) = lock(&auth.secret).clone() {
            return Ok(k);
        }
        let slug = auth.secret_slug().unwrap_or_default();
        let values = self
            .links
            .resolve
            .values(&self.circle_id, self.env, vec![slug.clone()])
            .await
            .map_err(|e| refuse("signature", format!("the key cannot be read: {e}")))?;
        // An empty secret would let anyone sign: it is no key at all.
        let text = values
            .get(&slug)
            .map(|v| v.text.clone())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refuse(
                    "signature",
                    format!("the secret variable '{slug}' is empty"),
                )
            })?;
        let key = DecodingKey::from_secret(text.as_bytes());
        *lock(&auth.secret) = Some(key.clone());
        Ok(key)
    }

    /// Verifies an end user's token. `from_query`: it came in the URL.
    pub async fn verify_token(&self, token: &str, from_query: bool) -> Result<EndUser, Refusal> {
        let Some(auth) = read(&self.jwt).clone() else {
            return Err(refuse("missing", "this endpoint takes no end-user tokens"));
        };
        let (alg, kid) = jwt::peek(&auth.spec, token)?;
        let key = if auth.spec.secret.is_some() {
            self.secret_key(&auth).await?
        } else if let Some(jwks) = &auth.jwks {
            jwks.key(kid.as_deref())
                .await
                .filter(|k| jwt::fits(k, alg))
                .ok_or_else(|| {
                    refuse("signature", "no key of the JWKS verifies this token's kid")
                })?
        } else {
            auth.pem
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| refuse("algorithm", "the public key does not fit this algorithm"))?
        };
        // `peek` answers only listed algorithms, each with its validation.
        let v = auth
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| refuse("algorithm", "this algorithm is not accepted here"))?;
        jwt::check(&auth.spec, token, v, &key, from_query, now_ms() / 1000)
    }

    /// `{"op":"refresh","token"}`: a new token for the same user moves the
    /// expiry and replaces the rooms claim and info; rooms the new claim
    /// leaves out are left.
    pub(super) async fn refresh(&self, conn: &Conn, token: &str) -> Vec<Value> {
        let invalid = |reason: &str, message: &str| {
            json!({"op": "error", "code": crate::error_codes::ErrorCode::WsTokenInvalid,
                   "reason": reason, "message": message})
        };
        if conn.user.is_none() || lock(&conn.end_user).is_none() {
            return vec![invalid(
                "missing",
                "this connection has no end-user token to refresh",
            )];
        }
        let user = match self.verify_token(token, false).await {
            Ok(u) => u,
            Err(r) => return vec![invalid(r.reason, &r.message)],
        };
        if conn.user.as_deref() != Some(user.sub.as_str()) {
            return vec![invalid("subject", "the new token is for another user")];
        }
        let exp = user.exp;
        let dropped: Vec<String> = conn
            .rooms()
            .into_iter()
            .filter(|r| !user.may_join(r))
            .collect();
        *lock(&conn.end_user) = Some(user);
        // The info `presence` shows may be new.
        self.changes.note();
        conn.expires_at.store(exp * 1000, Ordering::Release);
        let mut out = Vec::new();
        for room in dropped {
            out.push(self.leave(conn, &room));
        }
        out.push(json!({"op": "refreshed", "exp": exp}));
        out
    }
}
