//! Who calls: a valid token's identity, and what its role or scopes
//! let it do.

use crate::error::{Error, Result};
use crate::ids::CircleId;
use crate::model::{Actor, Element, Reach, Role};
use crate::modifiers::ActiveModifier;
use crate::service::api_tokens::Scopes;
use crate::types::Level;

/// A valid token's identity.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub reach: Reach,
    pub role: Role,
    /// An api-token element's scopes (None: a CLI token, held to its role).
    pub scopes: Option<Scopes>,
    /// An api-token of `token_type: api-key`.
    pub api_key: bool,
    /// Origins a browser request may carry (empty: any).
    pub origins: Vec<String>,
    /// The token's own rate limit.
    pub rate: Option<ActiveModifier>,
}

/// Ops a `deploy` scope may call besides reads.
const RELEASE_OPS: [&str; 3] = ["source_promote", "source_rollback", "promote"];

impl Principal {
    /// A first check by slug, before anything is read.
    pub fn can_see(&self, circle: &str) -> bool {
        match &self.reach {
            Reach::Platform => true,
            Reach::Circle { slug, .. } => slug == circle,
        }
    }
    /// Whether the token reaches this circle: by id, so a circle made
    /// again under a deleted one's slug is not the old tenant's.
    pub fn sees(&self, circle: &Element) -> bool {
        self.sees_id(&circle.circle_id)
    }
    pub fn sees_id(&self, circle_id: &CircleId) -> bool {
        match &self.reach {
            Reach::Platform => true,
            Reach::Circle { id, .. } => id.as_deref() == Some(circle_id),
        }
    }
    pub fn is_platform(&self) -> bool {
        self.reach == Reach::Platform
    }
    pub fn is_platform_admin(&self) -> bool {
        self.is_platform() && self.role == Role::Admin
    }
    pub fn actor(&self) -> Actor {
        Actor::token(&self.token_id, self.role)
    }
    /// 403 unless the role (or the scopes) meet the op's level.
    pub fn require(&self, level: Level) -> Result<()> {
        if let Some(s) = self.scopes {
            let ok = match level {
                Level::None | Level::Read => true,
                Level::Write | Level::Execute => s.write || s.admin,
                Level::Admin => s.admin,
            };
            return if ok {
                Ok(())
            } else {
                Err(Error::forbidden(format!(
                    "this op needs the {} scope; the token's scopes do not include it",
                    match level {
                        Level::Admin => "admin",
                        _ => "write",
                    }
                )))
            };
        }
        let needed = match level {
            Level::None => return Ok(()),
            Level::Read => Role::Viewer,
            Level::Write | Level::Execute => Role::Member,
            Level::Admin => Role::Admin,
        };
        if self.role >= needed {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "this op needs the {} role; the token has {}",
                needed.as_str(),
                self.role.as_str()
            )))
        }
    }
}

impl Principal {
    /// [`Principal::require`] for one op: a `deploy` scope may promote
    /// and roll back.
    pub fn require_op(&self, op: &str, level: Level) -> Result<()> {
        if self.scopes.is_some_and(|s| s.deploy) && RELEASE_OPS.contains(&op) {
            return Ok(());
        }
        self.require(level)
    }

    /// Whether it may release to live: the admin role, or a `deploy` or
    /// `admin` scope.
    pub fn may_release(&self) -> bool {
        match self.scopes {
            Some(s) => s.admin || s.deploy,
            None => self.role == Role::Admin,
        }
    }
}

/// The answer to a request that needs a token and has none. It is the same
/// whether or not the element exists, so it reveals nothing.
pub fn missing_token() -> Error {
    Error::unauthorized("missing token: send 'Authorization: Bearer <token>'")
}
