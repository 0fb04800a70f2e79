//! Importing bundles into a circle: every bundle is checked before
//! anything is made, then each becomes a new element or, when asked,
//! overwrites the one of its slug through that element's gate.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::{Element, Slug, State};
use crate::service::ctx::OpCtx;
use crate::service::elements::NewElement;
use crate::service::facets::Elements;
use crate::service::gate;
use crate::service::App;
use crate::source::bundle::Prepared;
use crate::types::Capability;
use serde_json::{json, Value};

/// What an import asks for.
pub struct Import {
    pub bundles: Vec<Vec<u8>>,
    /// The slug and type each entry says its bundle holds, if it says.
    pub said: Vec<(Option<String>, Option<String>)>,
    pub overwrite: bool,
}

/// What an import did, element by element.
pub struct Imported {
    pub imported: Vec<Value>,
    pub skipped: Vec<String>,
    pub errors: Vec<Value>,
}

/// Checks every bundle before anything is created: one bad bundle and
/// nothing is.
async fn prepare_all(app: &App, ctx: &OpCtx, bundles: &[Vec<u8>]) -> Result<Vec<Prepared>> {
    let mut prepared = Vec::new();
    for (i, bytes) in bundles.iter().enumerate() {
        ctx.check_cancelled()?;
        let cap = app.config.limits.max_push_bytes;
        let p = app
            .source
            .prepare_import(bytes, &app.types, cap)
            .await
            .map_err(|mut e| {
                e.message = format!("bundle {i}: {}", e.message);
                e
            })?;
        Slug::parse(&p.doc.slug)?;
        prepared.push(p);
    }
    Ok(prepared)
}

impl Elements<'_> {
    pub async fn import_bundles(
        &self,
        ctx: &OpCtx,
        who: gate::Caller<'_>,
        circle: &Element,
        asked: Import,
    ) -> Result<Imported> {
        self.app().check_repo_quota(circle).await?;
        let mut prepared = prepare_all(self.app(), ctx, &asked.bundles).await?;
        // An entry that names its slug or type must hold that element.
        for (i, (p, (slug, ty))) in prepared.iter().zip(&asked.said).enumerate() {
            let wrong = slug.as_ref().is_some_and(|s| *s != p.doc.slug)
                || ty.as_ref().is_some_and(|t| *t != p.doc.element_type);
            if wrong {
                return Err(Error::bad_request(
                    ErrorCode::InvalidBundle,
                    format!(
                        "bundle {i}: the entry names {} '{}', the bundle holds {} '{}'",
                        ty.as_deref().unwrap_or(&p.doc.element_type),
                        crate::error::shown(slug.as_deref().unwrap_or(&p.doc.slug)),
                        p.doc.element_type,
                        p.doc.slug
                    ),
                ));
            }
        }
        // An api-token's policy is set by admins only, by import too.
        for p in &prepared {
            gate::token_policy(
                self.app(),
                who.principal,
                &p.doc.element_type,
                "importing an api-token",
            )?;
        }
        // Variables first: a websocket may name one in the same import.
        prepared.sort_by_key(|p| {
            !self
                .app()
                .types
                .has(&p.doc.element_type, Capability::Resource)
        });
        let (mut imported, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        let total = prepared.len();
        let mut stopped = Ok(());
        for (i, p) in prepared.into_iter().enumerate() {
            // Each element is made whole or not at all; a caller who left
            // stops the import between two of them.
            if let Err(e) = ctx.check_cancelled() {
                stopped = Err(e);
                break;
            }
            let slug = p.doc.slug.clone();
            let existing = self
                .app()
                .db
                .find_in(&circle.circle_id, &slug)
                .await?
                .filter(|e| e.state != State::Deleted);
            let result = match existing {
                Some(_) if !asked.overwrite => None,
                Some(cur) => Some({
                    // Overwriting is an update of that element, through its gate.
                    let want = gate::Want {
                        op: "update",
                        level: crate::types::Level::Write,
                        charge: true,
                    };
                    match gate::pass(self.app(), who, &cur, want).await {
                        Ok(()) => self.overwrite(ctx, cur, &p).await.map(|a| a.element.id),
                        Err(e) => Err(e),
                    }
                }),
                None => Some({
                    let repo = p.repo();
                    let new = NewElement {
                        id: None,
                        element_type: p.doc.element_type.clone(),
                        slug: Slug::parse(&slug)?,
                        name: Some(p.doc.name.clone()),
                        spec: Some(p.doc.spec.clone()),
                        intention: p.doc.intention.clone(),
                        readme: Some(p.readme.clone()),
                        repo: Some(repo),
                    };
                    self.create(ctx, Some(circle), new)
                        .await
                        .map(|a| a.element.id)
                }),
            };
            match result {
                None => skipped.push(slug),
                Some(Ok(id)) => imported.push(json!({"slug": slug, "id": id})),
                Some(Err(e)) => {
                    errors.push(json!({"slug": slug, "code": e.code, "error": e.message}))
                }
            }
            self.app()
                .records()
                .progress(ctx, circle, i + 1, total)
                .await;
        }
        self.app().forget_repo_bytes(&circle.circle_id);
        stopped?;
        Ok(Imported {
            imported,
            skipped,
            errors,
        })
    }
}
