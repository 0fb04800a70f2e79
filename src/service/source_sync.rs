//! Keeping git and the database in agreement: a push to draft becomes a
//! version, and `source/repair` finds and heals drift (the database is
//! authoritative).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::Element;
use crate::model::Env;
use crate::service::ctx::OpCtx;
use crate::service::elements::Change;
use crate::service::facets::Repos;
use crate::service::App;
use crate::source::doc::{SpecDoc, README_PATH, SPEC_PATH};

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}
use serde::Serialize;
use serde_json::json;

/// How git and the database disagree.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    MissingRepository,
    MissingBranch,
    ContentDiffers,
    /// demo or live is not at the commit its release names.
    BranchMoved,
    /// A ref other than draft, demo and live.
    StrayRef,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    pub kind: DriftKind,
    /// The branch concerned, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<&'static str>,
    /// The stray ref's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub message: String,
    /// Where a moved branch was seen: repair moves it only from there, so
    /// a promotion made meanwhile is not undone.
    #[serde(skip)]
    pub observed: Option<String>,
}

/// Refs looked at per repository; a push may add at most 16 at a time.
const MAX_REFS: usize = 1024;

impl Repos<'_> {
    /// After `git receive-pack`: the circle's repositories are counted
    /// again, and if draft moved and its content differs from the current
    /// version, it is recorded as a new version.
    pub async fn sync_push(
        &self,
        el: &Element,
        actor: crate::model::Actor,
        before: Option<String>,
    ) -> Result<()> {
        self.app().forget_repo_bytes(&el.circle_id);
        let after = self.app().source.branch_oid(&el.id, "draft").await?;
        let Some(commit) = after.filter(|a| Some(a) != before.as_ref()) else {
            return Ok(());
        };
        let (spec, _) = self
            .app()
            .source
            .read_file(&el.id, "draft", SPEC_PATH)
            .await?;
        let (readme, _) = self
            .app()
            .source
            .read_file(&el.id, "draft", README_PATH)
            .await?;
        let doc = SpecDoc::parse(&String::from_utf8_lossy(&spec.unwrap_or_default()))?;
        crate::secrets::refuse_sealed(&doc.spec)?;
        let readme = String::from_utf8_lossy(&readme.unwrap_or_default()).to_string();
        let ty = self.app().types.get(&el.element_type)?.clone();
        let current = self
            .app()
            .db
            .element_by_id(&el.id)
            .await?
            .ok_or_else(|| Error::not_found(ErrorCode::ElementNotFound, "element not found"))?;
        let ctx = OpCtx::new(actor, "push", None);
        // The version reads as git does: the pushed commit's own message.
        let message = match self
            .app()
            .source
            .commit_message(&el.id, &commit, 1000)
            .await
        {
            Ok(m) if !m.is_empty() => m,
            _ => format!("push {}", short(&commit)),
        };
        let author = ctx.actor.label();
        self.app()
            .apply(&ctx, current, |cur| {
                let change = Change::from_source(
                    cur,
                    &ty,
                    &doc,
                    &readme,
                    &author,
                    EventKind::ElementPushed,
                    |_| message.clone(),
                )?;
                Ok(change
                    .already_in_git()
                    .with_data(json!({ "commit": commit })))
            })
            .await?;
        Ok(())
    }

    /// Differences between the database and git for one element.
    pub async fn drift(&self, el: &Element) -> Result<Vec<Drift>> {
        let el = &self.app().with_readme(el).await?;
        if !self.app().source.exists(&el.id) {
            return Ok(vec![Drift {
                kind: DriftKind::MissingRepository,
                branch: None,
                reference: None,
                observed: None,
                message: "the element has no repository".into(),
            }]);
        }
        let mut out = Vec::new();
        for b in Env::ALL.map(Env::as_str) {
            if self.app().source.branch_oid(&el.id, b).await?.is_none() {
                out.push(Drift {
                    kind: DriftKind::MissingBranch,
                    branch: Some(b),
                    reference: None,
                    observed: None,
                    message: format!("branch {b} is missing"),
                });
            }
        }
        out.extend(self.app().release_drift(el).await?);
        if out.iter().any(|d| d.branch == Some("draft")) {
            return Ok(out);
        }
        let expected = self.app().elements().source_files(el);
        for (path, want) in expected {
            let (got, _) = self.app().source.read_file(&el.id, "draft", &path).await?;
            let same = match (&got, path.as_str()) {
                (Some(g), SPEC_PATH) => {
                    SpecDoc::parse(&String::from_utf8_lossy(g)).ok()
                        == SpecDoc::parse(&String::from_utf8_lossy(&want)).ok()
                }
                (Some(g), _) => *g == want,
                (None, _) => false,
            };
            if !same {
                out.push(Drift {
                    kind: DriftKind::ContentDiffers,
                    branch: Some("draft"),
                    reference: None,
                    observed: None,
                    message: format!("draft {path} differs from version {}", el.version),
                });
            }
        }
        Ok(out)
    }

    /// Repairs `drift`, one whole fix at a time; `done` says what was
    /// fixed, also when a caller who left stopped it before the next fix.
    pub async fn repair(
        &self,
        ctx: &OpCtx,
        el: &Element,
        drift: &[Drift],
        done: &mut Vec<String>,
    ) -> Result<()> {
        let el = &self.app().with_readme(el).await?;
        let author = crate::source::Author::from_label(&ctx.actor.label());
        let total = drift.len();
        if drift.iter().any(|d| d.kind == DriftKind::MissingRepository) {
            ctx.check_cancelled()?;
            let msg = format!("source/repair: recreate from v{}", el.version);
            self.app()
                .source
                .init(&el.id, self.app().elements().source_files(el), author, msg)
                .await?;
            let what = "recreated the repository from the database".to_string();
            self.app().repaired(ctx, el, done, what, total).await;
            return Ok(());
        }
        if self
            .app()
            .source
            .branch_oid(&el.id, "draft")
            .await?
            .is_none()
        {
            ctx.check_cancelled()?;
            // Draft comes back from the newest branch that survives.
            let from = ["demo", "live"];
            let mut base = None;
            for b in from {
                if self.app().source.branch_oid(&el.id, b).await?.is_some() {
                    base = Some(b);
                    break;
                }
            }
            let base = base.ok_or_else(|| Error::internal("no branch left to repair from"))?;
            self.app()
                .source
                .create_branch(&el.id, "draft", base)
                .await?;
            let what = format!("recreated draft from {base}");
            self.app().repaired(ctx, el, done, what, total).await;
        }
        for b in ["demo", "live"] {
            if self.app().source.branch_oid(&el.id, b).await?.is_none() {
                ctx.check_cancelled()?;
                let at = if b == "live"
                    && self
                        .app()
                        .source
                        .branch_oid(&el.id, "demo")
                        .await?
                        .is_some()
                {
                    "demo"
                } else {
                    "draft"
                };
                self.app().source.create_branch(&el.id, b, at).await?;
                let what = format!("recreated {b} at {at}");
                self.app().repaired(ctx, el, done, what, total).await;
            }
        }
        // Demo and live go back to what their releases say; stray refs go.
        for d in self.app().release_drift(el).await? {
            ctx.check_cancelled()?;
            match (d.kind, d.branch, &d.reference) {
                (DriftKind::BranchMoved, Some(b), _) => {
                    let env = if b == "live" { Env::Live } else { Env::Demo };
                    if let Some(release) = self.app().db.deployment(&el.id, env).await? {
                        let msg = format!(
                            "source/repair: {b} back to its release v{}",
                            release.version
                        );
                        let seen = d.observed.as_deref();
                        self.app()
                            .source
                            .move_branch(&el.id, b, &release.commit, seen, msg)
                            .await?;
                        let what = format!("moved {b} back to {}", short(&release.commit));
                        self.app().repaired(ctx, el, done, what, total).await;
                    }
                }
                (DriftKind::StrayRef, _, Some(name)) => {
                    self.app().source.delete_ref(&el.id, name).await?;
                    let what = format!("removed {name}");
                    self.app().repaired(ctx, el, done, what, total).await;
                }
                _ => {}
            }
        }
        if !self.drift(el).await?.is_empty() {
            ctx.check_cancelled()?;
            let files = self
                .app()
                .elements()
                .source_files(el)
                .into_iter()
                .map(|(p, c)| (p, Some(c)))
                .collect();
            let msg = format!("source/repair: draft to v{}", el.version);
            self.app()
                .source
                .commit_draft(&el.id, files, author, msg)
                .await?;
            let what = format!("committed version {} to draft", el.version);
            self.app().repaired(ctx, el, done, what, total).await;
        }
        self.app().records().progress(ctx, el, total, total).await;
        Ok(())
    }
}

impl App {
    /// The row with its README read, for comparing with and writing to git.
    async fn with_readme(&self, el: &Element) -> Result<Element> {
        let mut el = el.clone();
        if el.readme.is_none() {
            el.readme = Some(self.db.readme(&el.id).await?);
        }
        Ok(el)
    }

    /// Fixes drift from the database. Returns what it did.
    /// Branches that are not where their releases say, and refs that are
    /// none of draft, demo and live.
    async fn release_drift(&self, el: &Element) -> Result<Vec<Drift>> {
        let mut out = Vec::new();
        let refs = self.source.refs(&el.id, MAX_REFS).await?;
        for (env, b) in [(Env::Demo, "demo"), (Env::Live, "live")] {
            let Some(release) = self.db.deployment(&el.id, env).await? else {
                continue;
            };
            // By name: a repository with many refs cannot hide them.
            let at = self.source.branch_oid(&el.id, b).await?;
            let at = at.as_ref();
            // A repository made anew from the database lost the released
            // commits: the branch cannot go back, and is no drift to heal.
            if at.is_some_and(|c| *c != release.commit)
                && self.source.has_commit(&el.id, &release.commit).await?
            {
                out.push(Drift {
                    kind: DriftKind::BranchMoved,
                    branch: Some(b),
                    reference: None,
                    observed: at.cloned(),
                    message: format!(
                        "{b} is at {} but its release (v{}) is {}",
                        short(at.map_or("", |c| c.as_str())),
                        release.version,
                        short(&release.commit)
                    ),
                });
            }
        }
        for (name, _) in &refs {
            let known = Env::ALL
                .iter()
                .any(|b| *name == format!("refs/heads/{}", b.as_str()));
            if !known {
                out.push(Drift {
                    kind: DriftKind::StrayRef,
                    branch: None,
                    reference: Some(name.clone()),
                    observed: None,
                    message: format!("{name} is not draft, demo or live"),
                });
            }
        }
        Ok(out)
    }

    /// One whole fix made, told as progress.
    async fn repaired(
        &self,
        ctx: &OpCtx,
        el: &Element,
        done: &mut Vec<String>,
        what: String,
        total: usize,
    ) {
        done.push(what);
        let told = done.len().min(total);
        self.records().progress(ctx, el, told, total).await;
    }
}
