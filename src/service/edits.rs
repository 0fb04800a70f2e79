//! The edits of one element a caller asks for by op: each checks what
//! only the service can check, builds its [`Change`] and hands it to the
//! one write path. Handlers reach them as `app.elements()` (the facet is in `facets.rs`).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::{Element, State};
use crate::service::ctx::OpCtx;
use crate::service::elements::{Applied, Change};
use crate::service::facets::Elements;
use crate::types::ElementType;
use serde_json::{json, Map, Value};

/// An update's input, its own fields already checked.
pub struct Update {
    pub spec: Option<Value>,
    pub name: Option<String>,
    pub intention: Option<String>,
    /// Merge the spec patch deeply (the default), or replace the spec.
    pub deep: Option<bool>,
    /// The caller may turn `sensitive` off (admins only).
    pub may_unseal: bool,
}

impl Elements<'_> {
    pub async fn update(&self, ctx: &OpCtx, el: Element, input: Update) -> Result<Applied> {
        let ty = self.app.types.get(&el.element_type)?.clone();
        if let Some(spec) = &input.spec {
            ty.check_writable(spec)?;
        }
        let author = ctx.actor.label();
        self.app
            .apply(ctx, el, |cur| {
                let mut spec = match (&input.spec, input.deep) {
                    (Some(patch), Some(false)) => patch.clone(),
                    (Some(Value::Object(patch)), _) => ty.merge_patch(&cur.spec, patch.clone()),
                    (Some(patch), _) => patch.clone(),
                    (None, _) => cur.spec.clone(),
                };
                ty.keep_redacted(&mut spec, Some(&cur.spec))?;
                if ty.is_sensitive(&cur.spec) && !ty.is_sensitive(&spec) && !input.may_unseal {
                    return Err(Error::forbidden(
                        "turning sensitive off needs the admin role (the old value is dropped, never shown)",
                    ));
                }
                let checked = ty.check_spec(spec)?;
                let warnings = checked.warnings.clone();
                let change = Change::next_version(
                    cur,
                    &author,
                    EventKind::ElementUpdated,
                    |v| format!("update: v{v} by {author}"),
                    |el| {
                        el.spec = checked.spec;
                        if let Some(n) = &input.name {
                            el.name = n.clone();
                        }
                        if let Some(i) = &input.intention {
                            el.intention = Some(i.clone());
                        }
                    },
                );
                Ok(change
                    .with_data(json!({ "warnings": warnings }))
                    .with_warnings(warnings))
            })
            .await
    }

    /// Merges `patch` into the element's metadata; a null removes a key.
    pub async fn update_meta(
        &self,
        ctx: &OpCtx,
        el: Element,
        patch: Map<String, Value>,
    ) -> Result<Applied> {
        let keys: Vec<String> = patch.keys().cloned().collect();
        self.app
            .apply(ctx, el, |cur| {
                let mut meta = match &cur.meta {
                    Value::Object(m) => m.clone(),
                    _ => Default::default(),
                };
                for (k, v) in &patch {
                    if v.is_null() {
                        meta.remove(k);
                    } else {
                        meta.insert(k.clone(), v.clone());
                    }
                }
                let data = json!({ "keys": keys });
                Ok(Change::unversioned(
                    cur,
                    EventKind::ElementMetaUpdated,
                    data,
                    |el| el.meta = Value::Object(meta),
                ))
            })
            .await
    }

    /// Deletes an element without children or live connections; a
    /// circle's tokens end with it, so its slug may be taken again.
    pub async fn delete(&self, ctx: &OpCtx, el: Element) -> Result<Applied> {
        let children = self.app.db.children(&el).await?;
        if !children.is_empty() {
            return Err(Error::conflict(
                ErrorCode::HasChildren,
                format!(
                    "'{}' still has {} element(s); delete them first",
                    el.slug,
                    children.len()
                ),
            ));
        }
        let live = self.app.runtime.live_connections(&el.id);
        if live > 0 {
            return Err(Error::conflict(
                ErrorCode::HasConnections,
                format!(
                    "'{}' has {live} live connection(s); disable it first (closes them with 1001)",
                    el.slug
                ),
            ));
        }
        let applied = self
            .app
            .apply(ctx, el, |cur| {
                let data = json!({ "previous_state": cur.state });
                Ok(Change::unversioned(
                    cur,
                    EventKind::ElementDeleted,
                    data,
                    |el| el.state = State::Deleted,
                ))
            })
            .await?;
        if applied.element.is_root() {
            let n = self
                .app
                .db
                .revoke_circle_tokens(&applied.element.circle_id)
                .await?;
            tracing::info!(circle = %applied.element.slug, revoked = n, "circle deleted; its tokens revoked");
        }
        Ok(applied)
    }

    /// Enables or disables an element; the same state again changes
    /// nothing.
    pub async fn set_enabled(
        &self,
        ctx: &OpCtx,
        el: Element,
        enable: bool,
        reason: Option<String>,
    ) -> Result<Applied> {
        let target = if enable {
            State::Ready
        } else {
            State::Disabled
        };
        if el.state == target {
            return Ok(Applied {
                element: el,
                warnings: vec![],
            });
        }
        let kind = if enable {
            EventKind::ElementEnabled
        } else {
            EventKind::ElementDisabled
        };
        self.app
            .apply(ctx, el, |cur| {
                let data = json!({ "reason": reason });
                Ok(Change::unversioned(cur, kind, data, |el| {
                    el.state = target;
                    el.state_reason = if enable { None } else { reason.clone() };
                }))
            })
            .await
    }

    /// Restores version `version` as a new version, after one that keeps
    /// what is there now.
    pub async fn restore(&self, ctx: &OpCtx, el: Element, version: i64) -> Result<Applied> {
        if version < 1 {
            return Err(Error::bad_request(
                ErrorCode::InvalidVersion,
                "version must be 1 or more",
            ));
        }
        let target = self
            .app
            .db
            .version_of(&el.id, version)
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    ErrorCode::VersionNotFound,
                    format!("'{}' has no version {version}", el.slug),
                )
            })?;
        // Versions keep the README only when it changed: take the newest
        // one at or before the target.
        let readme = self.app.db.readme_at(&el.id, target.version).await?;
        let ty = self.app.types.get(&el.element_type)?.clone();
        let author = ctx.actor.label();
        self.app
            .apply(ctx, el, |cur| {
                let checked = ty.check_spec(target.spec.clone())?;
                let t = target.version;
                let change = Change::next_version(
                    cur,
                    &author,
                    EventKind::ElementRestored,
                    |_| format!("Before restore to v{t}"),
                    |_| {},
                )
                .then_version(
                    &author,
                    |_| format!("Restore to v{t}"),
                    |el| {
                        el.spec = checked.spec;
                        el.readme = readme.clone();
                    },
                );
                Ok(change
                    .with_data(json!({ "restored_from": t }))
                    .with_warnings(checked.warnings))
            })
            .await
    }

    /// Replaces the README, as a new version.
    pub async fn update_readme(
        &self,
        ctx: &OpCtx,
        el: Element,
        content: String,
    ) -> Result<Applied> {
        if content.contains('\0') {
            return Err(Error::bad_request(
                ErrorCode::InvalidContent,
                "content must be text without NUL",
            ));
        }
        let author = ctx.actor.label();
        self.app
            .apply(ctx, el, |cur| {
                let change = Change::next_version(
                    cur,
                    &author,
                    EventKind::ElementReadmeUpdated,
                    |v| format!("readme_update: v{v} by {author}"),
                    |el| el.readme = Some(content.clone()),
                );
                Ok(change.with_data(json!({ "bytes": content.len() })))
            })
            .await
    }

    /// Replaces an element's content with an imported bundle's, as a new
    /// version.
    pub async fn overwrite(
        &self,
        ctx: &OpCtx,
        cur: Element,
        p: &crate::source::bundle::Prepared,
    ) -> Result<Applied> {
        if cur.element_type != p.doc.element_type {
            return Err(Error::conflict(
                ErrorCode::TypeMismatch,
                format!(
                    "'{}' is a {}, the bundle holds a {}",
                    cur.slug, cur.element_type, p.doc.element_type
                ),
            ));
        }
        let ty: std::sync::Arc<ElementType> = self.app.types.get(&cur.element_type)?.clone();
        let author = ctx.actor.label();
        self.app
            .apply(ctx, cur, |cur| {
                Change::from_source(
                    cur,
                    &ty,
                    &p.doc,
                    &p.readme,
                    &author,
                    EventKind::ElementImported,
                    |v| format!("import/bundle overwrite: v{v} by {author}"),
                )
            })
            .await
    }
}
