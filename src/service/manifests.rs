//! A manifest (project, app) deploys its members together: a promotion
//! freezes each member's version and commit into a snapshot, and moves
//! every member's release to exactly that, all or nothing.

use super::App;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::{now_ms, rfc3339, Element, Env};
use crate::service::ctx::OpCtx;
use crate::service::facets::Releases;
use crate::service::graph::Graph;
use crate::store::deployments::{
    insert_promotion, insert_snapshot, set_deployment, Deployment, Promotion, Snapshot,
};
use serde_json::{json, Map, Value};

/// One member's part of a promotion: where it is, where it goes.
pub struct Step {
    pub member: Element,
    pub current: Deployment,
    pub next: Deployment,
}

impl Step {
    pub fn changes(&self) -> bool {
        self.current.commit != self.next.commit || self.current.version != self.next.version
    }
}

impl Graph<'_> {
    /// Members: those named in `spec.members` and those contained.
    pub async fn all_members(&self, el: &Element) -> Result<Vec<Element>> {
        let mut out = self.members(el).await?;
        for c in self.app().db.children(el).await? {
            if !out.iter().any(|m| m.id == c.id) {
                out.push(c);
            }
        }
        let named: Vec<&str> = el
            .spec
            .get("members")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = named.iter().find(|s| !out.iter().any(|m| m.slug == **s)) {
            return Err(Error::conflict(
                ErrorCode::MemberNotFound,
                format!("member '{missing}' does not exist in this circle"),
            ));
        }
        Ok(out)
    }
}

impl Releases<'_> {
    /// What promoting to `to` would do: dev → demo takes each member's
    /// draft (every one must pass validation), demo → live exactly what
    /// demo froze, and `snapshot` an earlier snapshot of this manifest.
    pub async fn plan(&self, el: &Element, to: Env, snapshot: Option<&str>) -> Result<Vec<Step>> {
        self.plan_watched(None, el, to, snapshot).await
    }

    /// `plan` for a promotion being run: each member checked is a step of
    /// its progress, and a caller who leaves stops it before anything is
    /// written.
    pub async fn plan_watched(
        &self,
        ctx: Option<&OpCtx>,
        el: &Element,
        to: Env,
        snapshot: Option<&str>,
    ) -> Result<Vec<Step>> {
        let frozen = match (to, snapshot) {
            (Env::Draft, _) => {
                return Err(Error::bad_request(
                    ErrorCode::InvalidEnvironment,
                    "promote to demo or live",
                ))
            }
            (_, Some(id)) => Some(self.app().snapshot_of(el, id).await?.members),
            (Env::Live, None) => {
                let demo = self.app().db.snapshots(&el.id, Some(Env::Demo), 1).await?;
                let Some(s) = demo.into_iter().next() else {
                    return Err(Error::precondition(
                        ErrorCode::PromoteDemoFirst,
                        "promote to demo before live",
                    ));
                };
                Some(s.members)
            }
            (Env::Demo, None) => None,
        };
        let mut steps = Vec::new();
        let mut findings = Vec::new();
        let members = self.app().graph().all_members(el).await?;
        let total = members.len();
        for (i, m) in members.into_iter().enumerate() {
            if let Some(ctx) = ctx {
                ctx.check_cancelled()?;
            }
            let frozen_m = frozen.as_ref().and_then(|f| f.get(&m.slug)).cloned();
            match self.app().member_release(&m, to, frozen_m).await {
                Ok(next) => {
                    let current = self.app().release(&m, to).await?;
                    steps.push(Step {
                        member: m,
                        current,
                        next,
                    });
                }
                Err(e) if e.code == "SOURCE_INVALID" || e.code == "SOURCE_DRIFT" => {
                    findings.push(format!("{}: {}", m.slug, e.message));
                    findings.extend(e.details.iter().map(|d| format!("{}: {d}", m.slug)));
                }
                Err(e) => return Err(e),
            }
            if let Some(ctx) = ctx {
                self.app().records().progress(ctx, el, i + 1, total).await;
            }
        }
        if !findings.is_empty() {
            return Err(Error::conflict(
                ErrorCode::SourceInvalid,
                "members are not ready to promote; nothing was changed",
            )
            .with_details(findings));
        }
        // Paths are checked against the environment as it will be after.
        let next: Vec<(&Element, &Value)> =
            steps.iter().map(|s| (&s.member, &s.next.spec)).collect();
        self.app()
            .runtime
            .check_releases(&self.app().db, to, &next)
            .await?;
        Ok(steps)
    }

    /// Deploys a plan: every member's release in one transaction (each a
    /// compare-and-swap), one snapshot, then branches and runtimes follow.
    pub async fn promote_manifest(
        &self,
        ctx: &OpCtx,
        el: &Element,
        to: Env,
        steps: Vec<Step>,
        message: Option<String>,
    ) -> Result<(Snapshot, Vec<String>)> {
        let actor = ctx.actor.label();
        let mut members = Map::new();
        for s in &steps {
            members.insert(
                s.member.slug.clone(),
                json!({"id": s.member.id, "element_type": s.member.element_type,
                       "version": s.next.version, "commit": s.next.commit}),
            );
        }
        let snap = Snapshot {
            id: uuid::Uuid::now_v7().to_string(),
            element_id: el.id.clone(),
            env: to,
            members: Value::Object(members),
            actor: actor.clone(),
            message: message.clone(),
            created_at: now_ms(),
        };
        let event = ctx.event(
            el,
            EventKind::ElementPromoted,
            json!({"to": to, "snapshot": snap.id, "members": snap.members}),
        );
        // Each changed member's release, the commit it replaces, and its
        // promotion: all written together, or none.
        let releases: Vec<_> = steps
            .iter()
            .filter(|s| s.changes())
            .map(|s| {
                let mut next = s.next.clone();
                next.promoted_by = actor.clone();
                let p = promotion(&next, &s.current, &snap, message.clone());
                (next, s.current.commit.clone(), s.member.slug.clone(), p)
            })
            .collect();
        let (snap_row, ev) = (snap.clone(), event.clone());
        // The last point to stop at: past it, the promotion goes through.
        ctx.check_cancelled()?;
        self.app()
            .db
            .unit(move |tx| {
                Box::pin(async move {
                    for (next, replaced, slug, p) in &releases {
                        if !set_deployment(tx, next, Some(replaced)).await? {
                            return Err(Error::conflict(
                                ErrorCode::PromotionConflict,
                                format!("{slug} was released meanwhile; try again"),
                            )
                            .retryable());
                        }
                        insert_promotion(tx, p).await?;
                    }
                    insert_snapshot(tx, &snap_row).await?;
                    crate::store::activity::insert_in_tx(tx, &ev).await?;
                    Ok(())
                })
            })
            .await?;
        self.app().bus.publish_stored(event);
        let mut warnings = Vec::new();
        for s in steps.iter().filter(|s| s.changes()) {
            self.app().realtime_changed(&s.member).await;
            let msg = format!("promote {} to v{} by {actor}", to.as_str(), s.next.version);
            let moved = self
                .app()
                .source
                .move_branch(
                    &s.member.id,
                    to.as_str(),
                    &s.next.commit,
                    Some(&s.current.commit),
                    msg,
                )
                .await;
            if let Err(e) = moved {
                warnings.push(format!("git: {}: {}", s.member.slug, e.message));
            }
        }
        Ok((snap, warnings))
    }

    /// A manifest's environments as `get` and `environments` show them.
    pub async fn environments_of(&self, el: &Element) -> Result<Value> {
        let mut out = Map::new();
        for env in [Env::Demo, Env::Live] {
            if let Some(s) = self.app().db.snapshots(&el.id, Some(env), 1).await?.pop() {
                out.insert(env.as_str().into(), snapshot_json(&s));
            }
        }
        Ok(Value::Object(out))
    }
}

impl App {
    /// A member's next release: frozen (from a snapshot), or its draft.
    async fn member_release(
        &self,
        m: &Element,
        to: Env,
        frozen: Option<Value>,
    ) -> Result<Deployment> {
        let (commit, version, spec) = match frozen {
            Some(f) => {
                let version = f["version"].as_i64().unwrap_or(m.version);
                let commit = f["commit"].as_str().unwrap_or_default().to_string();
                let old = self.db.version_of(&m.id, version).await?.ok_or_else(|| {
                    Error::not_found(
                        ErrorCode::VersionNotFound,
                        format!("{} has no v{version}", m.slug),
                    )
                })?;
                let spec = self.types.get(&m.element_type)?.check_spec(old.spec)?.spec;
                (commit, version, spec)
            }
            None => {
                let commit = self
                    .source
                    .branch_oid(&m.id, "draft")
                    .await?
                    .ok_or_else(|| {
                        Error::conflict(
                            ErrorCode::BranchMissing,
                            format!("{} has no draft", m.slug),
                        )
                    })?;
                self.check_commit(m, &commit).await?;
                let (version, spec) = self.draft_release(m, &commit).await?;
                (commit, version, spec)
            }
        };
        Ok(Deployment {
            element_id: m.id.clone(),
            env: to,
            commit,
            version,
            spec,
            promoted_at: now_ms(),
            promoted_by: String::new(),
        })
    }

    async fn snapshot_of(&self, el: &Element, id: &str) -> Result<Snapshot> {
        self.db
            .snapshot(id)
            .await?
            .filter(|s| s.element_id == el.id)
            .ok_or_else(|| {
                Error::not_found(
                    ErrorCode::SnapshotNotFound,
                    format!("no snapshot '{}' of this element", crate::error::shown(id)),
                )
            })
    }
}

fn promotion(
    next: &Deployment,
    current: &Deployment,
    snap: &Snapshot,
    message: Option<String>,
) -> Promotion {
    Promotion {
        id: uuid::Uuid::now_v7().to_string(),
        element_id: next.element_id.clone(),
        env: next.env,
        from_commit: Some(current.commit.clone()),
        to_commit: next.commit.clone(),
        version: next.version,
        actor: next.promoted_by.clone(),
        message,
        rollback: false,
        snapshot_id: Some(snap.id.clone()),
        created_at: next.promoted_at,
    }
}

pub fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "snapshot": s.id,
        "members": s.members,
        "promoted_at": rfc3339(s.created_at),
        "promoted_by": s.actor,
        "message": s.message,
    })
}
