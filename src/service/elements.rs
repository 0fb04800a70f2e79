//! The one write path. Every change to an element (create, update,
//! restore, state and metadata changes) is applied here: one database
//! transaction writes the element row, its version rows and an activity
//! row; the event goes out after the commit.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::ids::{CircleId, ElementId};
use crate::model::now_ms;
use crate::model::Element;
use crate::model::Event;
use crate::model::State;
use crate::model::{name_from_slug, Slug};
use crate::service::ctx::OpCtx;
use crate::service::environments::first_releases;
use crate::service::facets::Elements;
use crate::service::write_rules::Proposed;
use crate::service::App;
use crate::source::doc::{SpecDoc, README_PATH, SPEC_PATH};
use crate::source::Author;
use crate::store::activity::insert_in_tx;
use crate::store::elements::{insert_element, insert_version, VersionRow};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What a change produces: the new element row, the versions it records
/// (empty for changes that do not version) and the activity to log.
pub struct Change {
    pub element: Element,
    pub versions: Vec<VersionRow>,
    pub kind: EventKind,
    pub data: Value,
    pub warnings: Vec<String>,
    pub git: GitWrite,
}

impl Change {
    /// The one builder of versioned changes: the next version of `cur`,
    /// whose content `edit` sets. The number and time follow; the version
    /// row and the commit on draft carry `message(version)`.
    pub fn next_version(
        cur: &Element,
        author: &str,
        kind: EventKind,
        message: impl FnOnce(i64) -> String,
        edit: impl FnOnce(&mut Element),
    ) -> Change {
        let mut el = cur.clone();
        edit(&mut el);
        el.version = cur.version + 1;
        el.updated_at = now_ms();
        let message = message(el.version);
        Change {
            data: json!({ "version": el.version }),
            versions: vec![VersionRow::snapshot(&el, author, message.clone())],
            element: el,
            kind,
            warnings: vec![],
            git: GitWrite::Commit(message),
        }
    }

    /// One more version on top of this change's (restore records the
    /// state before it, then the restored content).
    pub fn then_version(
        mut self,
        author: &str,
        message: impl FnOnce(i64) -> String,
        edit: impl FnOnce(&mut Element),
    ) -> Change {
        edit(&mut self.element);
        self.element.version += 1;
        let message = message(self.element.version);
        self.versions
            .push(VersionRow::snapshot(&self.element, author, message.clone()));
        self.data["version"] = json!(self.element.version);
        self.git = GitWrite::Commit(message);
        self
    }

    /// The content a source document (a push, a bundle) holds, checked
    /// against the type; secrets git never holds carry over.
    pub fn from_source(
        cur: &Element,
        ty: &crate::types::ElementType,
        doc: &crate::source::doc::SpecDoc,
        readme: &str,
        author: &str,
        kind: EventKind,
        message: impl FnOnce(i64) -> String,
    ) -> Result<Change> {
        let checked = ty.check_spec(ty.keep_secrets(&doc.spec, &cur.spec))?;
        let c = Change::next_version(cur, author, kind, message, |el| {
            el.spec = checked.spec;
            el.name = doc.name.clone();
            el.intention = doc.intention.clone();
            el.readme = Some(readme.to_string());
        });
        Ok(c.with_warnings(checked.warnings))
    }

    /// Adds fields to the activity's data.
    pub fn with_data(mut self, extra: Value) -> Change {
        if let (Value::Object(d), Value::Object(x)) = (&mut self.data, extra) {
            d.extend(x);
        }
        self
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Change {
        self.warnings = warnings;
        self
    }

    /// Git already holds the content (a push): record, do not commit.
    pub fn already_in_git(mut self) -> Change {
        self.git = GitWrite::None;
        self
    }

    /// A change that records activity but no version and no commit
    /// (state, metadata): `edit` sets it on a copy of `cur`.
    pub fn unversioned(
        cur: &Element,
        kind: EventKind,
        data: Value,
        edit: impl FnOnce(&mut Element),
    ) -> Change {
        let mut element = cur.clone();
        edit(&mut element);
        element.updated_at = now_ms();
        Change {
            element,
            versions: vec![],
            kind,
            data,
            warnings: vec![],
            git: GitWrite::None,
        }
    }
}

pub struct Applied {
    pub element: Element,
    pub warnings: Vec<String>,
}

pub struct NewElement {
    /// A preset id (a circle's events name it before it exists).
    pub id: Option<ElementId>,
    pub element_type: String,
    pub slug: Slug,
    pub name: Option<String>,
    pub spec: Option<Value>,
    pub intention: Option<String>,
    /// README.md; a default one names the element and its type.
    pub readme: Option<String>,
    /// A repository prepared from an import, adopted instead of a new one.
    pub repo: Option<PathBuf>,
}

/// What a committed change does to the element's git source.
pub enum GitWrite {
    /// Nothing in git changes (metadata, state, or git already has it).
    None,
    /// A new element: a new repository, or an imported one adopted.
    Create(Option<PathBuf>),
    /// Commit spec.yaml and README.md to draft with this message.
    Commit(String),
}

impl Elements<'_> {
    /// Creates an element under `parent` (a circle when `parent` is None).
    pub async fn create(
        &self,
        ctx: &OpCtx,
        parent: Option<&Element>,
        req: NewElement,
    ) -> Result<Applied> {
        let ty = self.app().types.get(&req.element_type)?;
        self.app().check_parent(ty, parent)?;
        let mut spec = req.spec.unwrap_or_else(|| json!({}));
        ty.check_writable(&spec)?;
        ty.keep_redacted(&mut spec, None)?;
        let mut checked = ty.check_spec(spec)?;
        let id = req.id.unwrap_or_else(ElementId::generate);
        ty.seal_secrets(&mut checked.spec, &self.app().secrets, &id);
        let now = now_ms();
        let name = req
            .name
            .unwrap_or_else(|| name_from_slug(req.slug.as_str()));
        let el = Element {
            circle_id: parent.map_or_else(|| CircleId::of_circle(&id), |p| p.circle_id.clone()),
            id,
            scope: match parent {
                Some(p) => crate::model::Scope::In(p.circle().to_string()),
                None => crate::model::Scope::Circle,
            },
            slug: req.slug.as_str().to_string(),
            name: name.clone(),
            element_type: ty.name().to_string(),
            parent_id: parent.filter(|p| !p.is_root()).map(|p| p.id.clone()),
            state: State::Ready,
            state_reason: None,
            intention: req.intention,
            spec: checked.spec,
            meta: json!({}),
            readme: Some(
                req.readme
                    .unwrap_or_else(|| format!("# {name}\n\n{}\n", ty.def.description)),
            ),
            version: 1,
            rev: 1,
            created_at: now,
            updated_at: now,
        };
        let version = VersionRow::snapshot(&el, &ctx.actor.label(), "Created".into());
        let event = ctx.event(
            &el,
            EventKind::ElementCreated,
            json!({"version": 1, "element_type": el.element_type}),
        );
        let proposed = Proposed {
            actor: &ctx.actor,
            before: None,
            after: &el,
        };
        self.app().check_write_rules(&proposed).await?;
        let _share = (self.app().quotas)
            .circle_turn(&el.circle_id, self.app().config.limits.writes_per_circle)
            .await;
        // Counted after the turn, so writes in flight do not overshoot.
        if !el.is_root() {
            self.app().check_element_quota(&el.circle_id).await?;
        }
        self.app().check_version_quota(&el.circle_id, 1).await?;
        self.app().insert_new(&el, &version, &event).await?;
        self.app().note_versions(&el.circle_id, 1);
        let mut warnings = checked.warnings;
        warnings.extend(self.app().runtime.outbound_warning(&el));
        let git = GitWrite::Create(req.repo);
        warnings.extend(self.app().committed(ctx, &el, None, event, git).await);
        Ok(Applied {
            element: el,
            warnings,
        })
    }

    /// The files git holds for an element: spec.yaml, and README.md when
    /// the row carries it (a change that set it, or one read for repair).
    pub fn source_files(&self, el: &Element) -> Vec<(String, Vec<u8>)> {
        let doc = match self.app().types.get(&el.element_type) {
            Ok(ty) => SpecDoc::of(el, ty),
            Err(_) => return Vec::new(),
        };
        let mut files = vec![(SPEC_PATH.to_string(), doc.render().into_bytes())];
        if let Some(readme) = &el.readme {
            files.push((README_PATH.to_string(), readme.clone().into_bytes()));
        }
        files
    }
}

impl App {
    /// A circle is made at the root, everything else inside a circle or a
    /// container whose type holds it.
    fn check_parent(&self, ty: &crate::types::ElementType, parent: Option<&Element>) -> Result<()> {
        match parent {
            None if !ty.def.root => Err(Error::bad_request(
                ErrorCode::InvalidParent,
                format!(
                    "a {} is created inside a circle: POST /api/{{circle}}/ops/create",
                    ty.name()
                ),
            )),
            Some(p) => {
                let pty = self.types.get(&p.element_type)?;
                if !pty.can_contain(ty.name()) {
                    return Err(Error::bad_request(
                        ErrorCode::InvalidParent,
                        format!("a {} cannot contain a {}", pty.name(), ty.name()),
                    ));
                }
                if p.state == State::Deleted {
                    return Err(Error::conflict(
                        ErrorCode::ElementDeleted,
                        "the parent element is deleted",
                    ));
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Writes a new element, its first version and its event in one
    /// transaction (binding tokens made ahead for a new circle).
    async fn insert_new(&self, el: &Element, version: &VersionRow, event: &Event) -> Result<()> {
        let (el, version, event) = (el.clone(), version.clone(), event.clone());
        self.db
            .unit(move |tx| {
                Box::pin(async move {
                    insert_element(tx, &el).await.map_err(|e| match e {
                        crate::store::StoreError::Duplicate => Error::conflict(
                            ErrorCode::AlreadyExists,
                            format!("'{}' already exists in this circle", el.slug),
                        ),
                        e => e.into(),
                    })?;
                    insert_version(tx, &el.id, &version).await?;
                    insert_in_tx(tx, &event).await?;
                    first_releases(tx, &el, &version.author).await?;
                    if el.is_root() {
                        crate::store::tokens::bind_pending(tx, &el.slug, &el.circle_id).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// What follows every committed change: the event goes live, then the
    /// parts that mirror the element catch up. Their failures do not undo
    /// the change (the database is authoritative); they come back as
    /// warnings.
    async fn committed(
        &self,
        ctx: &OpCtx,
        el: &Element,
        before: Option<&Element>,
        event: Event,
        git: GitWrite,
    ) -> Vec<String> {
        self.bus.publish_stored(event);
        match before {
            Some(b) if self.is_light_change(b, el) => self.realtime_spec_changed(el),
            _ => self.realtime_changed(el).await,
        }
        let author = Author::from_label(&ctx.actor.label());
        let result = match git {
            GitWrite::None => return Vec::new(),
            GitWrite::Create(Some(prepared)) => match self.source.adopt(&el.id, prepared).await {
                Ok(()) => self.releases().from_git(el, &ctx.actor.label()).await,
                Err(e) => Err(e),
            },
            GitWrite::Create(None) => {
                let msg = format!("create {} (v{})", el.slug, el.version);
                let made = self
                    .source
                    .init(&el.id, self.elements().source_files(el), author, msg)
                    .await;
                match made {
                    Ok(commit) => self
                        .db
                        .set_initial_commit(&el.id, &commit)
                        .await
                        .map_err(Into::into),
                    Err(e) => Err(e),
                }
            }
            GitWrite::Commit(msg) => {
                let files = self
                    .elements()
                    .source_files(el)
                    .into_iter()
                    .map(|(p, c)| (p, Some(c)))
                    .collect();
                self.source
                    .commit_draft(&el.id, files, author, msg)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::warn!(element = %el.id, error = %e, "git write failed after the database commit");
                vec![format!(
                    "git: {}; the database has the change and source/repair brings git in line",
                    e.message
                )]
            }
        }
    }

    /// Applies `change` to the element. Writers of one element queue, in
    /// order: in this process on a per-element lock, across nodes on the
    /// row (`SELECT … FOR UPDATE` on PostgreSQL, once a first try finds
    /// that another node changed it). The compare-and-swap on `rev` is
    /// the guard that tells.
    pub(in crate::service) async fn apply<F>(
        &self,
        ctx: &OpCtx,
        current: Element,
        change: F,
    ) -> Result<Applied>
    where
        F: Fn(&Element) -> Result<Change>,
    {
        let turn = self.writers.turn(&current.id).await;
        // Then a place among the circle's writes, so circles take turns.
        let _share = (self.quotas)
            .circle_turn(&current.circle_id, self.config.limits.writes_per_circle)
            .await;
        // Waiting may have let others change it: start from what is stored.
        // (Without a wait, a stale copy only costs one more round: the
        // compare-and-swap below catches it.)
        let mut current =
            match turn.waited {
                false => current,
                true => self.db.element_by_id(&current.id).await?.ok_or_else(|| {
                    Error::not_found(ErrorCode::ElementNotFound, "element not found")
                })?,
            };
        for attempt in 0..32u32 {
            if attempt > 0 {
                // Back off with jitter so contending writers spread out.
                let cap = 1u64 << attempt.min(6);
                let ms = rand::random_range(0..=cap);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            // The first try writes against the row as known (on PostgreSQL
            // in one statement); after a lost race, the row is locked and
            // read afresh, so writers on other nodes queue, not race.
            let locked = match attempt {
                0 => None,
                _ => self.db.lock_for_write(&current.id).await?,
            };
            let tx = locked.map(|(tx, row)| {
                current = row.unwrap_or_else(|| current.clone());
                tx
            });
            let mut c = change(&current)?;
            c.element.rev = current.rev + 1;
            if let Ok(ty) = self.types.get(&c.element.element_type) {
                ty.seal_secrets(&mut c.element.spec, &self.secrets, &current.id);
                for v in &mut c.versions {
                    ty.seal_secrets(&mut v.spec, &self.secrets, &current.id);
                }
            }
            let proposed = Proposed {
                actor: &ctx.actor,
                before: Some(&current),
                after: &c.element,
            };
            self.check_write_rules(&proposed).await?;
            self.check_version_quota(&current.circle_id, c.versions.len())
                .await?;
            let event = ctx.event(&c.element, c.kind, c.data);
            let written = self
                .db
                .write_change(tx, &c.element, current.rev, &c.versions, &event)
                .await?;
            if !written {
                current = self.db.element_by_id(&current.id).await?.ok_or_else(|| {
                    Error::not_found(ErrorCode::ElementNotFound, "element not found")
                })?;
                continue;
            }
            self.note_versions(&current.circle_id, c.versions.len());
            let mut warnings = c.warnings;
            if c.element.spec != current.spec {
                warnings.extend(self.runtime.outbound_warning(&c.element));
            }
            let before = Some(&current);
            warnings.extend(self.committed(ctx, &c.element, before, event, c.git).await);
            return Ok(Applied {
                element: c.element,
                warnings,
            });
        }
        Err(Error::conflict(
            ErrorCode::ConcurrentUpdate,
            "the element kept changing under this update; try again",
        )
        .retryable())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{name_from_slug, Slug};

    #[test]
    fn slugs() {
        assert!(Slug::parse("chat-1").is_ok());
        for bad in ["", "-a", "A", "a_b", "..", "a\0", &"a".repeat(64)] {
            assert_eq!(
                Slug::parse(bad).unwrap_err().code,
                "INVALID_SLUG",
                "{bad:?}"
            );
        }
        assert_eq!(name_from_slug("chat-room"), "Chat Room");
    }
}

/// One queue per element for writers in this process: a tokio mutex hands
/// the element to waiting writers in order.
#[derive(Default)]
pub struct Writers {
    queues:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// A writer's turn; the queue of an element nobody waits for is dropped.
pub struct Turn<'a> {
    writers: &'a Writers,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Another writer of the element went first.
    pub waited: bool,
}

impl Writers {
    pub async fn turn(&self, id: &str) -> Turn<'_> {
        let queue = crate::sync::lock(&self.queues)
            .entry(id.to_string())
            .or_default()
            .clone();
        let (guard, waited) = match queue.clone().try_lock_owned() {
            Ok(g) => (g, false),
            Err(_) => (queue.lock_owned().await, true),
        };
        Turn {
            writers: self,
            id: id.to_string(),
            guard: Some(guard),
            waited,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut queues = crate::sync::lock(&self.writers.queues);
        // Only the map holds it: nobody waits.
        if queues
            .get(&self.id)
            .is_some_and(|q| std::sync::Arc::strong_count(q) == 1)
        {
            queues.remove(&self.id);
        }
    }
}
