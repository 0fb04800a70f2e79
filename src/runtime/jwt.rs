//! End users' tokens (`auth.mode: jwt`): the application signs them, we
//! only verify. Checked at the upgrade and on refresh, never per message.
//! A token is read in two steps: [`peek`] reads the header (size, `alg`,
//! `kid`) so the caller can find the key, [`check`] verifies with it.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::str::FromStr;

/// `auth.jwt`: how end users' tokens are checked.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct JwtSpec {
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    // Defaults here, not in the schema: one there would make every
    // spec grow an `auth.jwt` object.
    #[serde(default = "leeway_default")]
    pub leeway_s: u64,
    #[serde(default = "query_lifetime_default")]
    pub max_query_lifetime_s: u64,
}

fn leeway_default() -> u64 {
    30
}

fn query_lifetime_default() -> u64 {
    300
}

/// A token larger than this is refused before any decoding.
pub const MAX_TOKEN: usize = 8 * 1024;
const MAX_HEADER: usize = 1024;
pub const MAX_SUB: usize = 256;
pub const MAX_ROOMS: usize = 1000;
pub const MAX_INFO: usize = 1024;

/// Why a token was refused: the `reason` of 401 `WS_TOKEN_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// Who a verified token says the user is.
#[derive(Debug, Clone, PartialEq)]
pub struct EndUser {
    pub sub: String,
    /// Unix seconds.
    pub exp: i64,
    /// The only rooms the user may join (`x*`: a prefix); None: any.
    pub rooms: Option<Vec<String>>,
    /// Shared, not copied, by every answer and event that shows it.
    pub info: Option<std::sync::Arc<Value>>,
}

impl EndUser {
    /// Whether the rooms claim lets the user into `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rules| {
            rules.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => r == room,
            })
        })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Value,
    exp: i64,
    #[serde(default)]
    rooms: Option<Value>,
    #[serde(default)]
    info: Option<Value>,
}

#[derive(Deserialize)]
struct Head {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The configured algorithms; the schema allows only known names.
pub fn algorithms(spec: &JwtSpec) -> Vec<Algorithm> {
    spec.algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
        .collect()
}

/// Step one: the token's size and header. Answers its algorithm (one
/// the spec lists; `none` never is) and key id.
pub fn peek(spec: &JwtSpec, token: &str) -> Result<(Algorithm, Option<String>), Refusal> {
    use base64::Engine;
    if token.len() > MAX_TOKEN {
        return Err(refuse(
            "malformed",
            format!("the token is over {MAX_TOKEN} bytes"),
        ));
    }
    let head = token.split('.').next().unwrap_or_default();
    if token.split('.').count() != 3 || head.len() > MAX_HEADER * 4 / 3 + 4 {
        return Err(refuse("malformed", "the token is not a signed JWT"));
    }
    let head: Head = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refuse("malformed", "the token's header is not base64url JSON"))?;
    let alg = Algorithm::from_str(&head.alg)
        .ok()
        .filter(|a| algorithms(spec).contains(a))
        .ok_or_else(|| {
            refuse(
                "algorithm",
                format!(
                    "algorithm '{}' is not accepted here (accepted: {})",
                    crate::error::shown(&head.alg),
                    spec.algorithms.join(", ")
                ),
            )
        })?;
    Ok((alg, head.kid))
}

/// What step two asks of a token signed with `alg`: the same for every
/// token of one spec, so a verifier builds it once per algorithm.
pub fn validation(spec: &JwtSpec, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.validate_nbf = true;
    v.leeway = spec.leeway_s;
    match &spec.audience {
        Some(a) => v.set_audience(&[a]),
        // Otherwise the crate refuses any token that names an audience.
        None => v.validate_aud = false,
    }
    if let Some(i) = &spec.issuer {
        v.set_issuer(&[i]);
    }
    v
}

/// Step two: the signature with `key` (built for `alg`'s family only),
/// the registered claims as `v` asks ([`validation`]), then ours.
/// `from_query`: the token came in the URL, where its remaining life is
/// capped.
pub fn check(
    spec: &JwtSpec,
    token: &str,
    v: &Validation,
    key: &DecodingKey,
    from_query: bool,
    now: i64,
) -> Result<EndUser, Refusal> {
    use jsonwebtoken::errors::ErrorKind as K;
    let data = jsonwebtoken::decode::<Claims>(token, key, v).map_err(|e| match e.kind() {
        K::InvalidSignature => refuse("signature", "the token's signature does not verify"),
        K::ExpiredSignature => refuse("expired", "the token has expired"),
        K::ImmatureSignature => refuse("not_yet_valid", "the token is not valid yet (nbf)"),
        K::InvalidIssuer => refuse("issuer", "the token's iss is not the expected issuer"),
        K::InvalidAudience => refuse("audience", "the token's aud does not name this audience"),
        K::InvalidAlgorithm | K::InvalidKeyFormat | K::InvalidAlgorithmName => {
            refuse("algorithm", "the token's algorithm does not fit the key")
        }
        K::MissingRequiredClaim(c) => refuse("malformed", format!("the token has no '{c}' claim")),
        _ => refuse("malformed", "the token's claims cannot be read"),
    })?;
    let c = data.claims;
    let sub = match c.sub {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_SUB => s,
        _ => {
            return Err(refuse(
                "malformed",
                format!("sub must be a string of 1-{MAX_SUB} characters"),
            ))
        }
    };
    let rooms = match c.rooms {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.len() <= MAX_ROOMS => {
            let mut out = Vec::with_capacity(a.len());
            for r in a {
                let room = r.as_str().filter(|r| {
                    let name = r.strip_suffix('*').unwrap_or(r);
                    r.ends_with('*') && name.is_empty() || super::inputs::check_room(name).is_ok()
                });
                match room {
                    Some(r) => out.push(r.to_string()),
                    None => return Err(refuse("malformed", "rooms holds an invalid room")),
                }
            }
            Some(out)
        }
        Some(_) => {
            return Err(refuse(
                "malformed",
                format!("rooms must be an array of at most {MAX_ROOMS} rooms"),
            ))
        }
    };
    let info = match c.info {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if serde_json::to_vec(&m).map_or(0, |b| b.len()) <= MAX_INFO => {
            Some(std::sync::Arc::new(Value::Object(m)))
        }
        Some(_) => {
            return Err(refuse(
                "malformed",
                format!("info must be an object of at most {MAX_INFO} bytes"),
            ))
        }
    };
    if from_query && c.exp - now > spec.max_query_lifetime_s as i64 {
        return Err(refuse(
            "lifetime",
            format!(
                "a token in the query string may live at most {} s more; send it as 'Authorization: Bearer' or mint a shorter one",
                spec.max_query_lifetime_s
            ),
        ));
    }
    Ok(EndUser {
        sub,
        exp: c.exp,
        rooms,
        info,
    })
}

/// The key a PEM gives for `alg`, built with its family's constructor
/// only (an RSA key never becomes an HMAC secret).
pub fn pem_key(pem: &str, alg: Algorithm) -> Result<DecodingKey, String> {
    use Algorithm::*;
    let b = pem.as_bytes();
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(b),
        ES256 | ES384 => DecodingKey::from_ec_pem(b),
        EdDSA => DecodingKey::from_ed_pem(b),
        HS256 | HS384 | HS512 => return Err("an HMAC algorithm takes a secret, not a PEM".into()),
    };
    key.map_err(|e| format!("auth.jwt.public_key is not a {alg:?} public key: {e}"))
}

/// At write: the PEM holds a key for every listed algorithm.
pub fn check_pem(pem: &str, algs: &[String]) -> Result<(), String> {
    for a in algs {
        let alg = Algorithm::from_str(a).map_err(|_| format!("unknown algorithm {a}"))?;
        pem_key(pem, alg)?;
    }
    Ok(())
}

/// Whether a JWK (from a JWKS) may verify `alg`: its own family, never
/// an `oct` (HMAC) key.
pub fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<DecodingKey> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match &jwk.algorithm {
        P::OctetKey(_) => None,
        _ => DecodingKey::from_jwk(jwk).ok(),
    }
}

/// Whether a key's family serves `alg`.
pub fn fits(key: &DecodingKey, alg: Algorithm) -> bool {
    key.family().algorithms().contains(&alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(algs: &[&str]) -> JwtSpec {
        JwtSpec {
            algorithms: algs.iter().map(|a| a.to_string()).collect(),
            secret: Some("{{ vars.k }}".into()),
            public_key: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_s: 0,
            max_query_lifetime_s: 300,
        }
    }

    fn b64(v: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn peek_refuses_none_unlisted_and_oversized() {
        let s = spec(&["HS256"]);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"a"}"#));
        assert_eq!(peek(&s, &none).unwrap_err().reason, "algorithm");
        let rs = format!("{}.{}.x", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(peek(&s, &rs).unwrap_err().reason, "algorithm");
        let big = format!("{}.{}.x", b64(r#"{"alg":"HS256"}"#), "a".repeat(MAX_TOKEN));
        assert_eq!(peek(&s, &big).unwrap_err().reason, "malformed");
        assert_eq!(peek(&s, "a.b").unwrap_err().reason, "malformed");
        let ok = format!("{}.{}.x", b64(r#"{"alg":"HS256","kid":"k"}"#), b64("{}"));
        assert_eq!(peek(&s, &ok).unwrap(), (Algorithm::HS256, Some("k".into())));
    }

    #[test]
    fn rooms_rules_are_exact_or_prefix() {
        let u = EndUser {
            sub: "a".into(),
            exp: 0,
            rooms: Some(vec!["lobby".into(), "team-*".into()]),
            info: None,
        };
        assert!(u.may_join("lobby") && u.may_join("team-red"));
        assert!(!u.may_join("lobby2") && !u.may_join("admin"));
        let anyone = EndUser { rooms: None, ..u };
        assert!(anyone.may_join("admin"));
    }

    #[test]
    fn hmac_never_takes_a_pem() {
        assert!(pem_key("-----BEGIN PUBLIC KEY-----", Algorithm::HS256).is_err());
        assert!(check_pem("not a pem", &["RS256".into()]).is_err());
    }
}
