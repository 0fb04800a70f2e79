//! Environments: draft is the element itself; demo and live run
//! the release their deployment row names, and only a promotion or a
//! rollback changes it. The database is authoritative: its release is
//! written first (compare-and-swap on the commit it was read at), then the
//! branch follows; a branch left behind is drift `source/repair` heals.

use super::App;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::{now_ms, Element, Env};
use crate::service::ctx::OpCtx;
use crate::service::facets::Releases;
use crate::source::doc::{SpecDoc, SPEC_PATH};
use crate::store::deployments::{insert_promotion, set_deployment, Deployment, Promotion};
use crate::store::Tx;
use serde_json::{json, Value};

/// What a promotion or rollback did.
pub struct Released {
    pub promotion: Option<Promotion>,
    pub deployment: Deployment,
    pub warnings: Vec<String>,
}

/// Where a rollback goes: the release before the current one, a commit
/// promoted there before, or the release of a version.
pub enum Target {
    Previous,
    Commit(String),
    Version(i64),
}

impl Releases<'_> {
    /// Releases read from the branches git holds: for an imported
    /// repository (its demo and live may differ from draft), and for
    /// elements made before releases were recorded. A branch whose spec no
    /// longer passes the schema runs the current version instead.
    pub async fn from_git(&self, el: &Element, actor: &str) -> Result<()> {
        let ty = self.app().types.get(&el.element_type)?;
        for env in [Env::Demo, Env::Live] {
            let Some(commit) = self.app().source.branch_oid(&el.id, env.as_str()).await? else {
                continue;
            };
            let text = self
                .app()
                .source
                .read_file_at(&el.id, &commit, SPEC_PATH)
                .await?;
            let doc = text.and_then(|t| SpecDoc::parse(&String::from_utf8_lossy(&t)).ok());
            let spec = doc
                .and_then(|d| ty.check_spec(ty.keep_secrets(&d.spec, &el.spec)).ok())
                .map_or_else(|| el.spec.clone(), |c| c.spec);
            let old = self.app().db.deployment(&el.id, env).await?;
            let d = Deployment {
                element_id: el.id.clone(),
                env,
                commit,
                version: old.as_ref().map_or(el.version, |o| o.version),
                spec,
                promoted_at: now_ms(),
                promoted_by: actor.to_string(),
            };
            let old = old.map(|o| o.commit);
            self.app()
                .db
                .unit(move |tx| {
                    Box::pin(async move {
                        set_deployment(tx, &d, old.as_deref()).await?;
                        let p = record(&d, None, Some("from git".into()), false);
                        crate::store::deployments::replace_first_promotion(tx, &p).await
                    })
                })
                .await?;
        }
        Ok(())
    }

    /// Elements made before releases were recorded get theirs from git,
    /// once, at start. Answers how many.
    pub async fn backfill(&self) -> Result<usize> {
        let ids = self.app().db.elements_without_releases().await?;
        for id in &ids {
            if let Some(el) = self.app().db.element_by_id(id).await? {
                if let Err(e) = self.from_git(&el, "system").await {
                    tracing::warn!(element = %id, error = %e, "releases not read from git");
                }
            }
        }
        Ok(ids.len())
    }

    /// Promotes `from` to the next environment: validates the source
    /// commit, moves the release, then the branch, then what runs.
    pub async fn promote(
        &self,
        ctx: &OpCtx,
        el: &Element,
        to: Env,
        message: Option<String>,
    ) -> Result<Released> {
        let from = to.promoted_from().ok_or_else(|| {
            Error::bad_request(
                ErrorCode::InvalidPromotion,
                "promote draft to demo or demo to live",
            )
        })?;
        // The caller's row may come from a cache: release what is stored.
        let el = &self
            .app()
            .db
            .element_by_id(&el.id)
            .await?
            .ok_or_else(|| Error::not_found(ErrorCode::ElementNotFound, "element not found"))?;
        let current = self.app().release(el, to).await?;
        let commit = self
            .app()
            .source
            .branch_oid(&el.id, from.as_str())
            .await?
            .ok_or_else(|| {
                Error::conflict(
                    ErrorCode::BranchMissing,
                    format!("{from:?} has no commit; run source/repair"),
                )
            })?;
        if current.commit == commit {
            // Already there: a success that records nothing new.
            return Ok(Released {
                promotion: None,
                deployment: current,
                warnings: vec![],
            });
        }
        self.app().check_commit(el, &commit).await?;
        let (version, spec) = match from {
            Env::Draft => self.app().draft_release(el, &commit).await?,
            _ => {
                let d = self.app().release(el, from).await?;
                (d.version, d.spec)
            }
        };
        let next = Deployment {
            element_id: el.id.clone(),
            env: to,
            commit: commit.clone(),
            version,
            spec,
            promoted_at: now_ms(),
            promoted_by: ctx.actor.label(),
        };
        self.app()
            .runtime
            .check_release(&self.app().db, el, to, &next.spec)
            .await?;
        let p = record(&next, Some(current.commit.clone()), message, false);
        let data = promotion_json(&p, from);
        self.app()
            .release_to(ctx, el, next, &current, p, EventKind::SourcePromoted, data)
            .await
    }

    /// Points an environment back at a release it had before.
    pub async fn rollback(
        &self,
        ctx: &OpCtx,
        el: &Element,
        env: Env,
        target: Target,
        message: Option<String>,
    ) -> Result<Released> {
        if env == Env::Draft {
            return Err(Error::bad_request(
                ErrorCode::InvalidEnvironment,
                "draft follows every change; roll back demo or live (or restore a version)",
            ));
        }
        let current = self.app().release(el, env).await?;
        let history = self.app().db.promotions(&el.id, Some(env), 1000).await?;
        let found = match &target {
            Target::Previous => history.iter().find(|p| p.to_commit != current.commit),
            Target::Commit(c) => {
                // An abbreviated commit must name one release, as in git.
                let mut hits = history
                    .iter()
                    .filter(|p| p.to_commit.starts_with(c.as_str()));
                let first = hits.next();
                if hits.any(|p| first.is_some_and(|f| f.to_commit != p.to_commit)) {
                    return Err(Error::bad_request(
                        ErrorCode::AmbiguousCommit,
                        format!(
                            "{c} names more than one release of {}; give more of it",
                            env.as_str()
                        ),
                    ));
                }
                first
            }
            Target::Version(v) => history.iter().find(|p| p.version == *v),
        };
        let Some(before) = found else {
            return Err(Error::bad_request(
                ErrorCode::NotPromoted,
                format!(
                    "{} never had that release; see ops/source/promotions",
                    env.as_str()
                ),
            ));
        };
        if before.to_commit == current.commit && before.version == current.version {
            // Already running it: a success that records nothing.
            return Ok(Released {
                promotion: None,
                deployment: current,
                warnings: Vec::new(),
            });
        }
        let ty = self.app().types.get(&el.element_type)?;
        let old = self
            .app()
            .db
            .version_of(&el.id, before.version)
            .await?
            .ok_or_else(|| {
                Error::not_found(ErrorCode::VersionNotFound, "that release's version is gone")
            })?;
        // It must still pass today's schema to run.
        let spec = ty.check_spec(old.spec)?.spec;
        let next = Deployment {
            element_id: el.id.clone(),
            env,
            commit: before.to_commit.clone(),
            version: before.version,
            spec,
            promoted_at: now_ms(),
            promoted_by: ctx.actor.label(),
        };
        self.app()
            .runtime
            .check_release(&self.app().db, el, env, &next.spec)
            .await?;
        let p = record(&next, Some(current.commit.clone()), message, true);
        let data = promotion_json(&p, env);
        self.app()
            .release_to(
                ctx,
                el,
                next,
                &current,
                p,
                EventKind::SourceRolledBack,
                data,
            )
            .await
    }
}

impl App {
    /// Writes a release (compare-and-swap on the commit it replaces) with
    /// its promotion and event; then the branch and the runtime follow.
    #[allow(clippy::too_many_arguments)]
    async fn release_to(
        &self,
        ctx: &OpCtx,
        el: &Element,
        next: Deployment,
        current: &Deployment,
        p: Promotion,
        kind: EventKind,
        data: Value,
    ) -> Result<Released> {
        let event = ctx.event(el, kind, data);
        let (n, c, pr, ev) = (
            next.clone(),
            current.commit.clone(),
            p.clone(),
            event.clone(),
        );
        self.db
            .unit(move |tx| {
                Box::pin(async move {
                    if !set_deployment(tx, &n, Some(&c)).await? {
                        return Err(Error::conflict(
                            ErrorCode::PromotionConflict,
                            format!(
                                "{} was released meanwhile; read it again and retry",
                                n.env.as_str()
                            ),
                        )
                        .retryable());
                    }
                    insert_promotion(tx, &pr).await?;
                    crate::store::activity::insert_in_tx(tx, &ev).await?;
                    Ok(())
                })
            })
            .await?;
        self.bus.publish_stored(event);
        self.realtime_changed(el).await;
        let mut warnings = Vec::new();
        let msg = format!(
            "{} {} to v{} by {}",
            if p.rollback { "roll back" } else { "promote" },
            next.env.as_str(),
            next.version,
            ctx.actor.label()
        );
        let moved = self
            .source
            .move_branch(
                &el.id,
                next.env.as_str(),
                &next.commit,
                Some(&current.commit),
                msg,
            )
            .await;
        if let Err(e) = moved {
            tracing::warn!(element = %el.id, error = %e, "branch not moved after the release was recorded");
            warnings.push(format!(
                "git: {}; the release is recorded and source/repair moves the branch",
                e.message
            ));
        }
        Ok(Released {
            promotion: Some(p),
            deployment: next,
            warnings,
        })
    }

    /// An environment's current release.
    pub(in crate::service) async fn release(&self, el: &Element, env: Env) -> Result<Deployment> {
        self.db.deployment(&el.id, env).await?.ok_or_else(|| {
            Error::conflict(
                ErrorCode::NoRelease,
                format!("{} has no release yet; run source/repair", env.as_str()),
            )
        })
    }

    /// The source commit must pass the push rules before it runs anywhere.
    pub(super) async fn check_commit(&self, el: &Element, commit: &str) -> Result<()> {
        let cap = self.config.limits.max_push_bytes;
        let scan = self.source.scan_commit(&el.id, commit, cap).await?;
        let checked = scan.check(&self.types, Some((&el.element_type, &el.slug)));
        if checked.findings.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(
            ErrorCode::SourceInvalid,
            format!(
                "commit {} has {} finding(s); see source/validate",
                &commit[..12.min(commit.len())],
                checked.findings.len()
            ),
        )
        .with_details(checked.findings.iter().map(|f| f.to_string()).collect()))
    }

    /// What draft's commit releases: the element's current version, when
    /// git holds exactly it (else the draft drifted: repair first).
    pub(super) async fn draft_release(&self, el: &Element, commit: &str) -> Result<(i64, Value)> {
        let ty = self.types.get(&el.element_type)?;
        let text = self
            .source
            .read_file_at(&el.id, commit, SPEC_PATH)
            .await?
            .unwrap_or_default();
        let doc = SpecDoc::parse(&String::from_utf8_lossy(&text))?;
        if doc.spec != ty.without_secrets(&el.spec) {
            return Err(Error::conflict(
                ErrorCode::SourceDrift,
                format!(
                    "draft's commit differs from version {}; run source/repair first",
                    el.version
                ),
            ));
        }
        Ok((el.version, el.spec.clone()))
    }
}

/// A promotion record for a release.
fn record(
    d: &Deployment,
    from: Option<String>,
    message: Option<String>,
    rollback: bool,
) -> Promotion {
    Promotion {
        id: uuid::Uuid::now_v7().to_string(),
        element_id: d.element_id.clone(),
        env: d.env,
        from_commit: from,
        to_commit: d.commit.clone(),
        version: d.version,
        actor: d.promoted_by.clone(),
        message,
        rollback,
        snapshot_id: None,
        created_at: d.promoted_at,
    }
}

pub fn promotion_json(p: &Promotion, from: Env) -> Value {
    json!({
        "id": p.id,
        "env": p.env,
        "from": from,
        "from_commit": p.from_commit,
        "to_commit": p.to_commit,
        "commit": p.to_commit,
        "version": p.version,
        "actor": p.actor,
        "message": p.message,
        "rollback": p.rollback,
        "at": crate::model::rfc3339(p.created_at),
    })
}

/// The first release of a new element on demo and live: its version 1.
/// The commit is filled in once git has made it.
pub(super) async fn first_releases(tx: &mut Tx, el: &Element, actor: &str) -> Result<()> {
    for env in [Env::Demo, Env::Live] {
        let d = Deployment {
            element_id: el.id.clone(),
            env,
            commit: String::new(),
            version: el.version,
            spec: el.spec.clone(),
            promoted_at: el.created_at,
            promoted_by: actor.to_string(),
        };
        set_deployment(tx, &d, None).await?;
        insert_promotion(tx, &record(&d, None, Some("created".into()), false)).await?;
    }
    Ok(())
}
