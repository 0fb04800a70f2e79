//! The one policy gate. Every path that reads or writes an element passes
//! it: REST ops, git upload and receive, event streams, and each child a
//! circle op touches. It checks the caller's role or scopes, the token's
//! origins, the element's modifiers (its own and inherited) and rates.

use crate::error::{Class, Error, Kind, Result};
use crate::error_codes::ErrorCode;
use crate::limits::Asker;
use crate::model::Element;
use crate::service::principal::Principal;
use crate::service::App;
use crate::types::Capability;
use crate::types::Level;
use std::net::IpAddr;

/// Who knocks, and from where.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub principal: Option<&'a Principal>,
    /// The browser page's `Origin`, when there is one.
    pub origin: Option<&'a str>,
    pub peer: Option<IpAddr>,
}

/// What the caller wants of the element.
#[derive(Clone, Copy)]
pub struct Want<'a> {
    /// The op's name (a `deploy` scope may call release ops).
    pub op: &'a str,
    pub level: Level,
    /// Whether this call is charged to rate limits; a listing that only
    /// filters what the caller may read charges nothing per child.
    pub charge: bool,
}

/// Lets the call through, or answers why not.
pub async fn pass(app: &App, who: Caller<'_>, el: &Element, want: Want<'_>) -> Result<()> {
    let writes = matches!(want.level, Level::Write | Level::Execute | Level::Admin);
    match who.principal {
        Some(_) if writes && app.types.has(&el.element_type, Capability::ApiToken) => token_policy(
            app,
            who.principal,
            &el.element_type,
            "changing an api-token",
        )?,
        Some(p) => p.require_op(want.op, want.level)?,
        None if want.level != Level::None => return Err(crate::service::principal::missing_token()),
        None => {}
    }
    if let Some(p) = who.principal {
        check_origin(p, who.origin)?;
    }
    let mut modifiers = app.policy().active_modifiers(el).await?;
    if want.charge {
        modifiers.extend(who.principal.and_then(|p| p.rate.clone()));
    } else {
        modifiers.retain(|m| !m.has(Capability::RateLimit));
    }
    if modifiers.is_empty() {
        return Ok(());
    }
    let asker = Asker {
        role: who.principal.map(|p| p.role),
        token_id: who.principal.map(|p| p.token_id.as_str()),
        ip: who.peer.map(|p| p.to_string()),
        origin: who.origin,
        connection: None,
        element: Some(&el.id),
        credential: who.principal.map(credential_of),
        scopes: who.principal.and_then(|p| p.scopes.map(|s| s.names())),
    };
    app.policy().enforce(&modifiers, &asker)
}

/// How a platform principal proved itself: a bearer token, or an
/// api-token of `token_type: api-key`.
pub fn credential_of(p: &Principal) -> crate::limits::Credential {
    if p.api_key {
        crate::limits::Credential::ApiKey
    } else {
        crate::limits::Credential::Token
    }
}

/// An api-token's policy (its scopes, addresses, origins, limits) is set
/// by admins only: making, importing or changing one.
pub fn token_policy(
    app: &App,
    principal: Option<&Principal>,
    element_type: &str,
    what: &str,
) -> Result<()> {
    if !app.types.has(element_type, Capability::ApiToken) {
        return Ok(());
    }
    match principal {
        Some(p) if p.require(Level::Admin).is_ok() => Ok(()),
        _ => Err(Error::forbidden(format!("{what} needs the admin role"))),
    }
}

/// Whether the caller may read the element, charging nothing: listings
/// leave out what this says no to.
pub async fn may_read(app: &App, who: Caller<'_>, el: &Element) -> Result<bool> {
    let want = Want {
        op: "get",
        level: Level::Read,
        charge: false,
    };
    match pass(app, who, el, want).await {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind, Kind::Forbidden | Kind::Unauthenticated) => Ok(false),
        Err(e) => Err(e),
    }
}

/// 403 `ORIGIN_NOT_ALLOWED` when a token limited to some origins comes
/// from a page of another.
pub fn check_origin(p: &Principal, origin: Option<&str>) -> Result<()> {
    let Some(origin) = origin else {
        return Ok(());
    };
    if p.origins.is_empty() || p.origins.iter().any(|o| o == origin || o == "*") {
        return Ok(());
    }
    Err(Error::new(
        Kind::Forbidden,
        Class::Auth,
        ErrorCode::OriginNotAllowed,
        format!("this token may not be used from origin {origin} (allowed_origins)"),
    ))
}

/// Which children's events a circle's stream or activity may show: those
/// the caller may read through the gate. Answers are kept a short while
/// per element, so each element is asked about once, not once per event.
#[derive(Default)]
pub struct Readable {
    seen: std::collections::HashMap<crate::ids::ElementId, (bool, std::time::Instant)>,
}

/// How long an answer is trusted.
const READABLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Answers kept, at most; past it, the oldest go.
const READABLE_KEPT: usize = 4096;

impl Readable {
    /// Whether `e` may be shown; `whole_circle` says the events are a
    /// circle's (an element's own were let through at the door).
    pub async fn check(
        &mut self,
        app: &App,
        who: Caller<'_>,
        whole_circle: bool,
        e: &crate::model::Event,
    ) -> bool {
        let Some(id) = e.element_id.as_ref().filter(|_| whole_circle) else {
            return true;
        };
        if let Some((ok, at)) = self.seen.get(id) {
            if at.elapsed() < READABLE_FOR {
                return *ok;
            }
        }
        // Through the read cache, by slug: no database call per event.
        let cached = match e.slug.as_deref() {
            Some(slug) => app
                .db
                .element_cached(&e.circle_id, slug)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let found = match cached.filter(|el| el.id == *id) {
            Some(el) => Ok(Some(el)),
            // An element whose slug was taken again since, or unnamed.
            None => app.db.element_by_id(id).await,
        };
        let ok = match found {
            Ok(Some(el)) => may_read(app, who, &el).await.unwrap_or(false),
            // A deleted or unreadable element shows nothing.
            _ => false,
        };
        if self.seen.len() >= READABLE_KEPT {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.seen.remove(&k);
            }
        }
        self.seen
            .insert(id.clone(), (ok, std::time::Instant::now()));
        ok
    }
}
