//! Attached modifiers in effect: `auth-policy` first, then `rate-limit`
//! (the seed's validate_auth and check_rate_limit). Where several apply,
//! each must pass, so the strictest wins.

use crate::error::{Class, Error, Result};
use crate::error_codes::ErrorCode;
use crate::limits::Asker;
use crate::model::Actor;
use crate::model::Element;
use crate::model::Role;
use crate::model::State;
use crate::modifiers::{ActiveModifier, Traffic};
use crate::service::App;
use crate::store::attachments::AttachmentRow;
use crate::types::Capability;
use serde_json::Value;

/// 403 unless the actor holds `need`. The system itself (repair) may.
pub fn require_role(actor: &Actor, need: Role, what: impl FnOnce() -> String) -> Result<()> {
    if actor.kind == crate::model::ActorKind::System || actor.role.is_some_and(|r| r >= need) {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "{} needs the {} role: it guards other elements",
        what(),
        need.as_str()
    )))
}

/// The modifiers on an element and its write rules: what they let a caller do.
pub struct Policy<'a> {
    app: &'a App,
}

impl App {
    pub fn policy(&self) -> Policy<'_> {
        Policy { app: self }
    }
}

impl App {
    /// The role that detaching attachment `a` (of modifier `m`) needs:
    /// admin for an auth-policy, else the role that attached it.
    pub(in crate::service) fn detach_role(&self, m: &Element, a: &AttachmentRow) -> Result<Role> {
        let ty = self.types.get(&m.element_type)?;
        if !ty.has_capability(Capability::Modifier) {
            return Ok(Role::Member);
        }
        if ty.has_capability(Capability::AuthPolicy) {
            return Ok(Role::Admin);
        }
        Ok(a.attached_role.unwrap_or(Role::Admin))
    }

    /// The role that weakening modifier `m` (changing its spec, disabling
    /// or deleting it) needs while it is attached: the strictest of what
    /// detaching each of its attachments needs. None when it guards nothing.
    pub(in crate::service) async fn guard_role(&self, m: &Element) -> Result<Option<Role>> {
        let ty = self.types.get(&m.element_type)?;
        if !ty.has_capability(Capability::Modifier) {
            return Ok(None);
        }
        let mut need = None;
        for a in self.db.attached_to(&m.id).await? {
            need = need.max(Some(self.detach_role(m, &a)?));
        }
        Ok(need)
    }

    /// The role that taking an element out of `carrier`'s cascades needs
    /// (a manifest dropping a member): what detaching each attachment that
    /// cascades from it needs. None when nothing cascades from it.
    pub(in crate::service) async fn cascade_guard(
        &self,
        carrier: &Element,
    ) -> Result<Option<Role>> {
        let mut need = None;
        for (a, src) in self.db.cascading_cached(&carrier.circle_id).await?.iter() {
            if a.element_id == carrier.id && a.cascade != crate::model::Cascade::None {
                need = need.max(Some(self.detach_role(src, a)?));
            }
        }
        Ok(need)
    }
}

impl<'a> Policy<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }

    /// The enabled modifiers in effect on an element: its own attachments
    /// (strongest priority first), then those cascading from above,
    /// nearest first. A modifier reached twice counts once.
    pub async fn active_modifiers(&self, el: &Element) -> Result<Vec<ActiveModifier>> {
        let own = self.app.db.attached_cached(&el.id).await?;
        let inherited = self.app.graph().inherited(el).await?;
        let all = own.into_iter().map(|(pin, src)| (pin, src, None)).chain(
            inherited
                .into_iter()
                .map(|i| (i.attachment.pin_version, i.source, Some(i.carrier.slug))),
        );
        let mut out: Vec<ActiveModifier> = Vec::new();
        for (pin, src, from) in all {
            let Ok(ty) = self.app.types.get(&src.element_type) else {
                continue;
            };
            if src.state != State::Ready
                || !ty.has_capability(Capability::Modifier)
                || out.iter().any(|m| m.id == src.id.as_str())
            {
                continue;
            }
            let spec = match pin {
                Some(v) => match self.app.db.version_of(&src.id, v).await? {
                    Some(row) => row.spec,
                    None => continue,
                },
                None => src.spec.clone(),
            };
            out.push(ActiveModifier::new(
                src.id.into_string(),
                src.slug,
                ty.def.capabilities.clone(),
                spec,
                from,
            ));
        }
        Ok(out)
    }

    /// Applies attached auth-policies, then rate-limits.
    pub fn enforce(&self, mods: &[ActiveModifier], who: &Asker<'_>) -> Result<()> {
        for m in mods.iter().filter(|m| m.has(Capability::AuthPolicy)) {
            let require_token = m.spec.get("require_token").and_then(Value::as_bool) == Some(true);
            let min_role = m
                .spec
                .get("min_role")
                .and_then(Value::as_str)
                .and_then(Role::parse);
            if who.role.is_none() && (require_token || min_role.is_some_and(|r| r > Role::Viewer)) {
                return Err(Error::unauthorized(format!(
                    "auth-policy {} requires a token",
                    m.named()
                )));
            }
            // Admins pass: they must always be able to reach, and detach,
            // a policy that shuts others out.
            if who.role != Some(Role::Admin) {
                methods_and_scopes(m, who)?;
            }
            if let (Some(need), Some(have)) = (min_role, who.role) {
                if have < need {
                    return Err(Error::forbidden(format!(
                        "auth-policy {} requires the {} role",
                        m.named(),
                        need.as_str()
                    )));
                }
            }
            let allowed: Vec<&str> = m
                .spec
                .get("allowed_origins")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(origin) = who.origin {
                if !allowed.is_empty() && !allowed.contains(&origin) && !allowed.contains(&"*") {
                    return Err(Error::new(
                        crate::error::Kind::Forbidden,
                        Class::Auth,
                        ErrorCode::OriginNotAllowed,
                        format!(
                            "origin {origin} is not allowed by auth-policy {}",
                            m.named()
                        ),
                    ));
                }
            }
        }
        if let Some(r) = self.app.limits.charge(mods.iter(), who, Traffic::Ops) {
            let secs = r.wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(Error::new(
                crate::error::Kind::TooMany,
                Class::Limit,
                ErrorCode::RateLimited,
                r.message,
            )
            .retry_after(secs)
            .chosen(crate::error::Chosen {
                status: r.status,
                code: r.code,
                headers: r.headers,
                retry_after_ms: Some(r.wait.as_millis() as u64),
            }));
        }
        Ok(())
    }
}

fn strings<'a>(spec: &'a Value, key: &str) -> Vec<&'a str> {
    spec.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// An auth-policy's `methods` (the credentials it accepts) and `scopes`
/// (those an api-token must hold; a CLI token holds what its role implies,
/// an end user none).
fn methods_and_scopes(m: &ActiveModifier, who: &Asker<'_>) -> Result<()> {
    let methods = strings(&m.spec, "methods");
    if !methods.is_empty() {
        match who.credential {
            None => {
                return Err(Error::unauthorized(format!(
                    "auth-policy {} needs a credential: {}",
                    m.named(),
                    methods.join(", ")
                )))
            }
            Some(c) if !methods.contains(&c.as_str()) => {
                return Err(Error::forbidden(format!(
                    "auth-policy {} does not accept {} credentials; it accepts {}",
                    m.named(),
                    c.as_str(),
                    methods.join(", ")
                )))
            }
            Some(_) => {}
        }
    }
    let need = strings(&m.spec, "scopes");
    if need.is_empty() {
        return Ok(());
    }
    let held: Vec<&str> = match (&who.scopes, who.role) {
        (Some(s), _) => s.clone(),
        (None, Some(Role::Member)) => vec!["read", "write"],
        (None, Some(_)) => vec!["read"],
        (None, None) if who.credential.is_none() => {
            return Err(Error::unauthorized(format!(
                "auth-policy {} needs a token with the scopes {}",
                m.named(),
                need.join(", ")
            )))
        }
        (None, None) => Vec::new(),
    };
    let missing: Vec<&str> = need.into_iter().filter(|n| !held.contains(n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "auth-policy {} requires the scopes {}; this caller holds {}",
        m.named(),
        missing.join(", "),
        if held.is_empty() {
            "none".to_string()
        } else {
            held.join(", ")
        }
    )))
}
