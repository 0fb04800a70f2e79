//! Attaching modifiers and resources to elements (`compose`), atomically.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::now_ms;
use crate::model::State;
use crate::model::{Cascade, Element};
use crate::service::ctx::OpCtx;
use crate::service::facets::Elements;
use crate::service::App;
use crate::store::activity::insert_in_tx;
use crate::store::attachments::{delete_attachment, insert_attachment, AttachmentRow};
use crate::types::Capability;
use serde_json::json;

/// A parsed ref: `slug`, `type/slug`, with an optional `@vN` / `@N` pin.
#[derive(Debug, PartialEq)]
pub struct Ref {
    pub element_type: Option<String>,
    pub slug: String,
    pub version: Option<i64>,
}

impl Ref {
    pub fn parse(s: &str) -> Result<Ref> {
        let bad = || {
            Error::bad_request(
                ErrorCode::InvalidRef,
                format!(
                    "ref '{}' is not slug, type/slug or slug@vN",
                    crate::error::shown(s)
                ),
            )
        };
        let (path, version) = match s.split_once('@') {
            Some((p, v)) => {
                let n: i64 = v
                    .strip_prefix('v')
                    .unwrap_or(v)
                    .parse()
                    .map_err(|_| bad())?;
                if n < 1 {
                    return Err(bad());
                }
                (p, Some(n))
            }
            None => (s, None),
        };
        let (ty, slug) = match path.split_once('/') {
            Some((t, s)) => (Some(t.to_string()), s),
            None => (None, path),
        };
        crate::model::Slug::parse(slug).map_err(|_| bad())?;
        Ok(Ref {
            element_type: ty,
            slug: slug.to_string(),
            version,
        })
    }
}

/// One entry of `compose`'s `add`, as the op's body and the demo's plan
/// give it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    #[serde(rename = "ref")]
    pub reference: String,
    pub priority: Option<i64>,
    /// `none`, `children` or `descendants`; none when not given.
    pub cascade_policy: Option<String>,
}

impl App {
    /// One entry of `add`, checked: the ref names an element of the
    /// circle (of a type the target may attach, at a version it has).
    async fn attachment(&self, ctx: &OpCtx, target: &Element, a: &Add) -> Result<AttachmentRow> {
        let tty = self.types.get(&target.element_type)?;
        let r = Ref::parse(&a.reference)?;
        let src = self
            .db
            .find_in(&target.circle_id, &r.slug)
            .await?
            .filter(|e| e.state != State::Deleted && !e.is_root())
            .ok_or_else(|| {
                Error::not_found(
                    ErrorCode::RefNotFound,
                    format!("no element '{}' in this circle", r.slug),
                )
            })?;
        if r.element_type
            .as_ref()
            .is_some_and(|t| *t != src.element_type)
        {
            return Err(Error::bad_request(
                ErrorCode::InvalidRef,
                format!("'{}' is a {}", src.slug, src.element_type),
            ));
        }
        if src.id == target.id {
            return Err(Error::bad_request(
                ErrorCode::InvalidAttachment,
                "an element cannot attach to itself",
            ));
        }
        let allowed = &tty.def.relationships.attaches;
        if !allowed.contains(&src.element_type) {
            let can = if allowed.is_empty() {
                "nothing".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(Error::bad_request(
                ErrorCode::InvalidAttachment,
                format!(
                    "a {} can attach only {can}; '{}' is a {}",
                    tty.name(),
                    src.slug,
                    src.element_type
                ),
            ));
        }
        if let Some(v) = r.version {
            if self.db.version_of(&src.id, v).await?.is_none() {
                return Err(Error::not_found(
                    ErrorCode::VersionNotFound,
                    format!("'{}' has no version {v}", src.slug),
                ));
            }
        }
        let cascade = self.cascade(target, &src, a.cascade_policy.as_deref())?;
        let priority = a.priority.unwrap_or(100);
        if !(0..=1000).contains(&priority) {
            return Err(Error::bad_request(
                ErrorCode::InvalidPriority,
                "priority must be between 0 and 1000",
            ));
        }
        Ok(AttachmentRow {
            id: uuid::Uuid::now_v7().to_string(),
            element_id: target.id.clone(),
            source_id: src.id,
            priority,
            pin_version: r.version,
            attached_role: ctx.actor.role,
            cascade,
            created_at: now_ms(),
        })
    }

    /// A cascade policy, checked: only a modifier cascades, and only from
    /// an element that has elements below it (a circle, project or app).
    fn cascade(&self, target: &Element, src: &Element, asked: Option<&str>) -> Result<Cascade> {
        let Some(asked) = asked else {
            return Ok(Cascade::None);
        };
        let cascade = Cascade::parse(asked).ok_or_else(|| {
            Error::bad_request(
                ErrorCode::InvalidCascade,
                format!(
                    "cascade_policy '{}' is not {}",
                    crate::error::shown(asked),
                    Cascade::NAMES
                ),
            )
        })?;
        if cascade == Cascade::None {
            return Ok(cascade);
        }
        let tty = self.types.get(&target.element_type)?;
        if !tty.has_capability(Capability::Contains) {
            return Err(Error::bad_request(
                ErrorCode::InvalidCascade,
                format!(
                    "a {} has nothing below it to cascade to; cascade_policy must be none",
                    tty.name()
                ),
            ));
        }
        if !self
            .types
            .get(&src.element_type)?
            .has_capability(Capability::Modifier)
        {
            return Err(Error::bad_request(
                ErrorCode::InvalidCascade,
                format!(
                    "'{}' is a {}: only modifiers cascade",
                    src.slug, src.element_type
                ),
            ));
        }
        Ok(cascade)
    }
}

impl Elements<'_> {
    /// Adds and removes attachments in one transaction; any bad entry
    /// fails the whole call.
    pub async fn compose(
        &self,
        ctx: &OpCtx,
        target: &Element,
        add: &[Add],
        remove: &[String],
    ) -> Result<(Vec<AttachmentRow>, Vec<String>)> {
        // What a circle carries reaches every element in it.
        if target.is_root() && !add.is_empty() {
            crate::service::policy::require_role(&ctx.actor, crate::model::Role::Admin, || {
                format!("attaching to circle '{}'", target.slug)
            })?;
        }
        let existing = self.app().db.attachments_of(&target.id).await?;
        let mut rows: Vec<AttachmentRow> = Vec::new();
        for a in add {
            let row = self.app().attachment(ctx, target, a).await?;
            let dup = existing
                .iter()
                .any(|e| e.source_id == row.source_id && !remove.contains(&e.id))
                || rows.iter().any(|r| r.source_id == row.source_id);
            if dup {
                return Err(Error::conflict(
                    ErrorCode::AlreadyAttached,
                    format!("'{}' is already attached", Ref::parse(&a.reference)?.slug),
                ));
            }
            rows.push(row);
        }
        for a in existing.iter().filter(|a| remove.contains(&a.id)) {
            if let Some(src) = self.app().db.element_by_id(&a.source_id).await? {
                let need = self.app().detach_role(&src, a)?;
                crate::service::policy::require_role(&ctx.actor, need, || {
                    format!("detaching '{}'", src.slug)
                })?;
            }
        }
        let added: Vec<_> = rows.iter().map(|r| r.id.clone()).collect();
        let event = ctx.event(
            target,
            EventKind::ElementComposed,
            json!({"added": added, "removed": remove}),
        );
        let (target_id, ev) = (target.id.clone(), event.clone());
        let (to_remove, to_add) = (remove.to_vec(), rows.clone());
        self.app()
            .db
            .unit(move |tx| {
                Box::pin(async move {
                    for id in &to_remove {
                        if !delete_attachment(tx, &target_id, id).await? {
                            return Err(Error::not_found(
                                ErrorCode::AttachmentNotFound,
                                format!(
                                    "no attachment {} on this element",
                                    crate::error::shown(id)
                                ),
                            ));
                        }
                    }
                    for r in &to_add {
                        insert_attachment(tx, r).await?;
                    }
                    insert_in_tx(tx, &ev).await?;
                    Ok(())
                })
            })
            .await?;
        self.app().bus.publish_stored(event);
        // Attachment lists are cached here and on the other nodes.
        self.app().realtime_changed(target).await;
        Ok((rows, remove.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(
            Ref::parse("api").unwrap(),
            Ref {
                element_type: None,
                slug: "api".into(),
                version: None
            }
        );
        assert_eq!(
            Ref::parse("rate-limit/api@v2").unwrap(),
            Ref {
                element_type: Some("rate-limit".into()),
                slug: "api".into(),
                version: Some(2)
            }
        );
        assert_eq!(Ref::parse("api@3").unwrap().version, Some(3));
        for bad in ["", "api@", "api@v0", "API", "a/b/c", "api@x"] {
            assert!(Ref::parse(bad).is_err(), "{bad}");
        }
    }
}
