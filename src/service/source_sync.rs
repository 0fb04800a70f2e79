//! Keeping git and the database in agreement: a push to draft becomes a
//! version, and `source/repair` finds and heals drift (the database is
//! authoritative).

use crate::error::{Error, Result};
use crate::model::Element;
use crate::service::elements::{Change, OpCtx};
use crate::service::App;
use crate::source::doc::{SpecDoc, README_PATH, SPEC_PATH};
use crate::source::BRANCHES;
use serde::Serialize;
use serde_json::json;

/// How git and the database disagree.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    MissingRepository,
    MissingBranch,
    ContentDiffers,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    pub kind: DriftKind,
    /// The branch concerned, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<&'static str>,
    pub message: String,
}

impl App {
    /// After `git receive-pack`: if draft moved and its content differs
    /// from the current version, record it as a new version.
    pub async fn sync_push(
        &self,
        el: &Element,
        actor: crate::model::Actor,
        before: Option<String>,
    ) -> Result<()> {
        let after = self.source.branch_oid(&el.id, "draft").await?;
        let Some(commit) = after.filter(|a| Some(a) != before.as_ref()) else {
            return Ok(());
        };
        let (spec, _) = self.source.read_file(&el.id, "draft", SPEC_PATH).await?;
        let (readme, _) = self.source.read_file(&el.id, "draft", README_PATH).await?;
        let doc = SpecDoc::parse(&String::from_utf8_lossy(&spec.unwrap_or_default()))?;
        crate::secrets::refuse_sealed(&doc.spec)?;
        let readme = String::from_utf8_lossy(&readme.unwrap_or_default()).to_string();
        let ty = self.types.get(&el.element_type)?.clone();
        let current = self
            .db
            .element_by_id(&el.id)
            .await?
            .ok_or_else(|| Error::not_found("ELEMENT_NOT_FOUND", "element not found"))?;
        let ctx = OpCtx::new(actor, "push", None);
        // The version reads as git does: the pushed commit's own message.
        let message = match self.source.commit_message(&el.id, &commit, 1000).await {
            Ok(m) if !m.is_empty() => m,
            _ => format!("push {}", &commit[..12]),
        };
        let author = ctx.actor.label();
        self.apply(&ctx, current, |cur| {
            let change =
                Change::from_source(cur, &ty, &doc, &readme, &author, "element.pushed", |_| {
                    message.clone()
                })?;
            Ok(change
                .already_in_git()
                .with_data(json!({ "commit": commit })))
        })
        .await?;
        Ok(())
    }

    /// The row with its README read, for comparing with and writing to git.
    async fn with_readme(&self, el: &Element) -> Result<Element> {
        let mut el = el.clone();
        if el.readme.is_none() {
            el.readme = Some(self.db.readme(&el.id).await?);
        }
        Ok(el)
    }

    /// Differences between the database and git for one element.
    pub async fn drift(&self, el: &Element) -> Result<Vec<Drift>> {
        let el = &self.with_readme(el).await?;
        if !self.source.exists(&el.id) {
            return Ok(vec![Drift {
                kind: DriftKind::MissingRepository,
                branch: None,
                message: "the element has no repository".into(),
            }]);
        }
        let mut out = Vec::new();
        for b in BRANCHES {
            if self.source.branch_oid(&el.id, b).await?.is_none() {
                out.push(Drift {
                    kind: DriftKind::MissingBranch,
                    branch: Some(b),
                    message: format!("branch {b} is missing"),
                });
            }
        }
        if out.iter().any(|d| d.branch == Some("draft")) {
            return Ok(out);
        }
        let expected = self.source_files(el);
        for (path, want) in expected {
            let (got, _) = self.source.read_file(&el.id, "draft", &path).await?;
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
                    message: format!("draft {path} differs from version {}", el.version),
                });
            }
        }
        Ok(out)
    }

    /// Fixes drift from the database. Returns what it did.
    pub async fn repair(&self, ctx: &OpCtx, el: &Element, drift: &[Drift]) -> Result<Vec<String>> {
        let el = &self.with_readme(el).await?;
        let author = crate::source::Author::from_label(&ctx.actor.label());
        let mut done = Vec::new();
        if drift.iter().any(|d| d.kind == DriftKind::MissingRepository) {
            let msg = format!("source/repair: recreate from v{}", el.version);
            self.source
                .init(&el.id, self.source_files(el), author, msg)
                .await?;
            done.push("recreated the repository from the database".to_string());
            return Ok(done);
        }
        if self.source.branch_oid(&el.id, "draft").await?.is_none() {
            // Draft comes back from the newest branch that survives.
            let from = ["demo", "live"];
            let mut base = None;
            for b in from {
                if self.source.branch_oid(&el.id, b).await?.is_some() {
                    base = Some(b);
                    break;
                }
            }
            let base = base.ok_or_else(|| Error::internal("no branch left to repair from"))?;
            self.source.create_branch(&el.id, "draft", base).await?;
            done.push(format!("recreated draft from {base}"));
        }
        for b in ["demo", "live"] {
            if self.source.branch_oid(&el.id, b).await?.is_none() {
                let at = if b == "live" && self.source.branch_oid(&el.id, "demo").await?.is_some() {
                    "demo"
                } else {
                    "draft"
                };
                self.source.create_branch(&el.id, b, at).await?;
                done.push(format!("recreated {b} at {at}"));
            }
        }
        if !self.drift(el).await?.is_empty() {
            let files = self
                .source_files(el)
                .into_iter()
                .map(|(p, c)| (p, Some(c)))
                .collect();
            let msg = format!("source/repair: draft to v{}", el.version);
            self.source.commit_draft(&el.id, files, author, msg).await?;
            done.push(format!("committed version {} to draft", el.version));
        }
        Ok(done)
    }
}
