//! What the API reads through the service: element listings, releases,
//! repository files, run totals and the event records. Handlers never
//! reach the store, git or the event bus themselves.

use crate::error::Result;
use crate::event_kind::EventKind;
use crate::events::ListenerGuard;
use crate::ids::{CircleId, ElementId};
use crate::model::{Element, Env, Event, Run};
use crate::service::ctx::{Keep, OpCtx};
use crate::service::App;
use crate::source::scan::TreeScan;
use crate::source::{BranchInfo, FileRead};
use crate::store::activity::ActivityQuery;
use crate::store::attachments::AttachmentRow;
use crate::store::deployments::{Deployment, Promotion, Snapshot};
use crate::store::elements::{ListFilter, VersionRow};
use crate::store::runs::RunTotals;
use crate::store::tokens::TokenRow;
use serde_json::json;

use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The element use cases of [`App`]: reads here, edits in `edits.rs`,
/// creation in `elements.rs`, imports and composition in theirs.
pub struct Elements<'a> {
    pub(super) app: &'a App,
}

impl<'a> Elements<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }

    pub async fn by_id(&self, id: &ElementId) -> Result<Option<Element>> {
        Ok(self.app().db.element_by_id(id).await?)
    }
    /// The element's live children (a circle's: every element in it).
    pub async fn children(&self, el: &Element) -> Result<Vec<Element>> {
        Ok(self.app().db.children(el).await?)
    }
    pub async fn list(
        &self,
        circle_id: Option<&CircleId>,
        f: &ListFilter<'_>,
    ) -> Result<Vec<Element>> {
        Ok(self.app().db.list_elements(circle_id, f).await?)
    }
    /// A circle's first page without a filter, through the read cache.
    pub async fn listing(&self, circle_id: &CircleId, limit: i64) -> Result<Arc<Vec<Element>>> {
        Ok(self.app().db.listing_cached(circle_id, limit).await?)
    }
    /// Found through the read cache, by circle id and slug.
    pub async fn cached(&self, circle_id: &CircleId, slug: &str) -> Result<Option<Element>> {
        Ok(self.app().db.element_cached(circle_id, slug).await?)
    }
    /// [`Self::cached`], shared rather than copied.
    pub async fn shared(&self, circle_id: &CircleId, slug: &str) -> Result<Option<Arc<Element>>> {
        Ok(self.app().db.element_shared(circle_id, slug).await?)
    }
    pub async fn circle_cached(&self, slug: &str) -> Result<Option<Element>> {
        Ok(self.app().db.circle_cached(slug).await?)
    }
    /// [`Self::circle_cached`], shared rather than copied.
    pub async fn circle_shared(&self, slug: &str) -> Result<Option<Arc<Element>>> {
        Ok(self.app().db.circle_shared(slug).await?)
    }
    pub async fn attachments_of(&self, id: &ElementId) -> Result<Vec<AttachmentRow>> {
        Ok(self.app().db.attachments_of(id).await?)
    }
    /// Activity, with what is still batched written first.
    pub async fn activity(&self, q: &ActivityQuery<'_>) -> Result<Vec<Event>> {
        self.app().bus.flush().await;
        Ok(self.app().db.activity(q).await?)
    }
    /// Run totals since `since_ms`, with what is still batched counted.
    pub async fn run_totals(&self, id: &ElementId, since_ms: i64) -> Result<RunTotals> {
        self.app().bus.flush().await;
        Ok(self.app().db.run_totals(id, since_ms).await?)
    }
    /// Run totals of each child of `parent` (`circle_id`: of a circle).
    pub async fn child_run_totals(
        &self,
        parent: &ElementId,
        circle_id: Option<&CircleId>,
        since_ms: i64,
    ) -> Result<Vec<(ElementId, RunTotals)>> {
        self.app().bus.flush().await;
        Ok(self
            .app()
            .db
            .child_run_totals(parent, circle_id, since_ms)
            .await?)
    }
    /// The platform tokens an api-token element minted.
    pub async fn tokens_of(&self, id: &ElementId) -> Result<Vec<TokenRow>> {
        Ok(self.app().db.element_tokens(id).await?)
    }
    /// Revokes every platform token an api-token element minted.
    pub async fn revoke_tokens(&self, id: &ElementId) -> Result<u64> {
        Ok(self.app().db.revoke_element_tokens(id).await?)
    }
    pub async fn versions(&self, id: &ElementId, limit: i64) -> Result<Vec<VersionRow>> {
        Ok(self.app().db.versions(id, limit).await?)
    }
}

/// Releases: what each environment serves, and how it got there.
pub struct Releases<'a> {
    app: &'a App,
}

/// An element's git repository, read.
pub struct Repos<'a> {
    app: &'a App,
}

/// The event bus as the API uses it: emit, record, listen.
pub struct Records<'a> {
    app: &'a App,
}

impl App {
    pub fn elements(&self) -> Elements<'_> {
        Elements { app: self }
    }
    pub fn releases(&self) -> Releases<'_> {
        Releases { app: self }
    }
    pub fn repos(&self) -> Repos<'_> {
        Repos { app: self }
    }
    pub fn records(&self) -> Records<'_> {
        Records { app: self }
    }
}

impl<'a> Releases<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }
    pub async fn of(&self, id: &ElementId, env: Env) -> Result<Option<Deployment>> {
        Ok(self.app.db.deployment(id, env).await?)
    }
    pub async fn promotions(
        &self,
        id: &ElementId,
        env: Option<Env>,
        limit: i64,
    ) -> Result<Vec<Promotion>> {
        Ok(self.app.db.promotions(id, env, limit).await?)
    }
    pub async fn snapshots(
        &self,
        id: &ElementId,
        env: Option<Env>,
        limit: i64,
    ) -> Result<Vec<Snapshot>> {
        Ok(self.app.db.snapshots(id, env, limit).await?)
    }
}

impl<'a> Repos<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }
    pub fn exists(&self, id: &ElementId) -> bool {
        self.app.source.exists(id)
    }
    pub fn path(&self, id: &ElementId) -> PathBuf {
        self.app.source.repo_path(id)
    }
    pub async fn head(&self, id: &ElementId, branch: &str) -> Result<Option<String>> {
        self.app.source.branch_oid(id, branch).await
    }
    pub async fn branches(
        &self,
        id: &ElementId,
    ) -> Result<(Vec<BranchInfo>, Vec<serde_json::Value>)> {
        self.app.source.branches(id).await
    }
    /// A file of a branch (up to 1 MiB) and the branch's commit.
    pub async fn read_file(
        &self,
        id: &str,
        branch: &str,
        path: &str,
    ) -> Result<(Option<Vec<u8>>, String)> {
        self.app.source.read_file(id, branch, path).await
    }
    pub async fn read_file_capped(
        &self,
        id: &str,
        branch: &str,
        path: &str,
        max: u64,
    ) -> Result<(FileRead, String)> {
        self.app
            .source
            .read_file_capped(id, branch, path, max)
            .await
    }
    /// A branch walked against the source rules, at the push size cap.
    pub async fn scan(&self, id: &ElementId, branch: &str) -> Result<(TreeScan, String)> {
        let cap = self.app.config.limits.max_push_bytes;
        self.app.source.scan_branch(id, branch, cap).await
    }
    pub async fn export_bundle(&self, id: &ElementId) -> Result<Vec<u8>> {
        self.app.source.export_bundle(id).await
    }
}

impl Records<'_> {
    pub async fn emit(&self, e: Event) {
        self.app.bus.emit(e).await
    }
    /// A long op's `op.progress`, kept as its other events are; an op
    /// without a watch tells nothing.
    pub async fn progress(&self, ctx: &OpCtx, el: &Element, done: usize, total: usize) {
        let Some(w) = &ctx.watch else { return };
        if !w.advance(done as u64, total as u64) {
            return;
        }
        let e = || {
            ctx.event(
                el,
                EventKind::OpProgress,
                json!({"done": done, "total": total}),
            )
        };
        match w.keep {
            Keep::Stored => self.emit(e()).await,
            Keep::LiveOnly if self.has_live_listeners() => self.publish_live(e()),
            Keep::LiveOnly => {}
        }
    }
    /// Anonymous traffic: sampled and folded.
    pub async fn emit_sampled(&self, e: Event) {
        self.app.bus.emit_sampled(e).await
    }
    /// Shown to live listeners, never stored.
    pub fn publish_live(&self, e: Event) {
        self.app.bus.publish_live(e)
    }
    pub fn has_live_listeners(&self) -> bool {
        self.app.bus.has_live_listeners()
    }
    pub async fn record_run(&self, run: Run) {
        self.app.bus.record_run(run).await
    }
    /// Writes what is batched, so a read after sees it.
    pub async fn flush(&self) {
        self.app.bus.flush().await
    }
    pub fn listen(&self) -> (broadcast::Receiver<Arc<Event>>, ListenerGuard) {
        self.app.bus.listen()
    }
}
