//! Every rule that guards a write, in one list. The one write path runs
//! it for each change: create, apply (REST edits, restore, import
//! overwrite) and the git push, which becomes versions through apply. The
//! policy gate is the list's first row: every path passes it at the door
//! (the REST pipeline, git, event streams, each overwritten element of an
//! import), because only there is the caller's origin, address and rate
//! known.

use crate::error::Result;
use crate::model::{Actor, Element, State};
use crate::service::policy::require_role;
use crate::service::policy::Policy;
use crate::service::App;

/// One rule a write must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRule {
    /// Role or scopes, origin, modifiers and rates (`service::gate`), at
    /// the door of every path.
    Gate,
    /// A modifier that guards elements is weakened only by a strong
    /// enough role (an admin's auth-policy by an admin).
    GuardingRole,
    /// Dropping a member takes it out of what cascades from here: the same
    /// role as weakening what cascades.
    CascadeGuard,
    /// Exposed paths stay unique per environment; driven links keep their
    /// caps.
    PathsAndLinks,
    /// A variable's values keep its type and rules.
    VariableValues,
    /// `{{ vars.slug }}` names a variable of the circle.
    VariableReferences,
    /// Sending a sensitive variable's value needs its guarding role.
    SecretUse,
    /// An api-token's policy parses.
    TokenPolicy,
    /// A variable a websocket uses is not deleted.
    VariableInUse,
    /// A webhook signs with a sensitive variable and may reach its url.
    WebhookTarget,
}

/// The list, in the order the rules run.
pub const WRITE_RULES: [WriteRule; 10] = [
    WriteRule::Gate,
    WriteRule::GuardingRole,
    WriteRule::CascadeGuard,
    WriteRule::PathsAndLinks,
    WriteRule::VariableValues,
    WriteRule::VariableReferences,
    WriteRule::SecretUse,
    WriteRule::TokenPolicy,
    WriteRule::VariableInUse,
    WriteRule::WebhookTarget,
];

/// A write about to be made: the element as it is (None: new) and as it
/// will be.
pub struct Proposed<'a> {
    pub actor: &'a Actor,
    pub before: Option<&'a Element>,
    pub after: &'a Element,
}

impl Proposed<'_> {
    /// The content changes, or the element comes back into service: what
    /// the content rules look at.
    fn content_changes(&self) -> bool {
        match self.before {
            None => true,
            Some(b) => {
                self.after.spec != b.spec
                    || (self.after.state == State::Ready && b.state != State::Ready)
            }
        }
    }
    /// The spec changes, or a ready element leaves service.
    fn weakens(&self) -> bool {
        self.before.is_some_and(|b| {
            self.after.spec != b.spec
                || (b.state == State::Ready && self.after.state != State::Ready)
        })
    }
}

impl Policy<'_> {
    /// What a push must meet before git takes it (a push git accepted but
    /// the database refused would leave draft drifting): the guarding
    /// role, and room in the circle's quotas. The push then becomes
    /// versions through the write path, which runs the whole list.
    pub async fn admit_push(&self, actor: &Actor, el: &Element) -> Result<()> {
        if let Some(need) = self.app().guard_role(el).await? {
            require_role(actor, need, || format!("pushing to '{}'", el.slug))?;
        }
        self.app().check_repo_quota(el).await?;
        self.app().check_version_quota(&el.circle_id, 1).await
    }
}

impl App {
    /// Runs every rule of [`WRITE_RULES`] on a proposed write.
    pub(super) async fn check_write_rules(&self, w: &Proposed<'_>) -> Result<()> {
        for rule in WRITE_RULES {
            self.check_rule(rule, w).await?;
        }
        Ok(())
    }

    async fn check_rule(&self, rule: WriteRule, w: &Proposed<'_>) -> Result<()> {
        let el = w.after;
        match rule {
            WriteRule::Gate => Ok(()),
            WriteRule::GuardingRole => {
                let Some(before) = w.before.filter(|_| w.weakens()) else {
                    return Ok(());
                };
                match self.guard_role(before).await? {
                    Some(need) => {
                        require_role(w.actor, need, || format!("changing '{}'", before.slug))
                    }
                    None => Ok(()),
                }
            }
            WriteRule::CascadeGuard => {
                let Some(before) = w.before else {
                    return Ok(());
                };
                let kept = crate::model::strings_at(&el.spec, "members");
                let dropped = crate::model::strings_at(&before.spec, "members")
                    .iter()
                    .any(|m| !kept.contains(m));
                if !dropped {
                    return Ok(());
                }
                match self.cascade_guard(before).await? {
                    Some(need) => require_role(w.actor, need, || {
                        format!("dropping members of '{}'", before.slug)
                    }),
                    None => Ok(()),
                }
            }
            WriteRule::PathsAndLinks if w.content_changes() => {
                self.runtime.check_write(&self.db, el, w.before).await
            }
            WriteRule::VariableValues if w.content_changes() => self.check_variable(el).await,
            WriteRule::VariableReferences if w.content_changes() => self.check_references(el).await,
            WriteRule::SecretUse if w.content_changes() => {
                self.guard_secret_use(w.actor, el, w.before).await
            }
            WriteRule::TokenPolicy if w.content_changes() => self.check_token_spec(el),
            WriteRule::WebhookTarget if w.content_changes() => self.check_webhook(el).await,
            WriteRule::VariableInUse => match w.before {
                Some(b) if el.state == State::Deleted && b.state != State::Deleted => {
                    self.check_unused(b).await
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}
