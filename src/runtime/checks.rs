//! Checks a write or a release makes before it commits: the paths it
//! would serve are free, and driven links stay within the circle's cap.

use super::{exposed_path, Runtime, WsSpec};
use crate::error::Result;
use crate::error_codes::ErrorCode;
use crate::model::{self, Element, Env};
use crate::store::Db;
use serde_json::Value;

impl Runtime {
    /// Checks a write of `el` (whose state before was `before`, None on
    /// create) before it commits: the path it would expose is free (409
    /// `PATH_CONFLICT`), and a driven link it adds stays within the
    /// circle's cap (409 `DRIVEN_LINK_LIMIT`).
    pub async fn check_write(&self, db: &Db, el: &Element, before: Option<&Element>) -> Result<()> {
        if el.state == model::State::Deleted || !self.has_runtime(&el.element_type) {
            return Ok(());
        }
        self.check_message_ceiling(&el.spec)?;
        // The rules the schema cannot say (auth.jwt's one fitting key).
        if let Ok(ty) = self.inner.types.get(&el.element_type) {
            WsSpec::parse(ty, &el.spec)?;
        }
        let adds_link = is_link(el) && !before.is_some_and(is_link);
        // Neither check can change its answer when the path and state stay
        // (and the circle's elements are not read on every update).
        let moves = before
            .is_none_or(|b| b.state != el.state || exposed_path(&b.spec) != exposed_path(&el.spec));
        if !moves && !adds_link {
            return Ok(());
        }
        let others = db
            .elements_of_types(Some(&el.circle_id), &self.types())
            .await?;
        path_conflict(el, &others)?;
        let cap = self.inner.outbound.max_links_per_circle;
        let links = others
            .iter()
            .filter(|o| o.id != el.id && is_link(o))
            .count();
        if adds_link && links >= cap {
            return Err(crate::error::Error::conflict(
                ErrorCode::DrivenLinkLimit,
                format!(
                    "circle '{}' already has {links} driven link(s), its limit ({cap}, \
                     ELEMENTD_MAX_DRIVEN_LINKS); disable or delete one, or leave url unset",
                    el.circle()
                ),
            ));
        }
        Ok(())
    }

    /// 409 `PATH_CONFLICT` when releasing `el` with `spec` to `env` would
    /// serve a path another element serves there.
    pub async fn check_release(&self, db: &Db, el: &Element, env: Env, spec: &Value) -> Result<()> {
        self.check_releases(db, env, &[(el, spec)]).await
    }

    /// [`Runtime::check_release`] for releases made together (a manifest's
    /// members): checked against the environment as it will be after, so
    /// members may swap or hand over a path in one promotion.
    pub async fn check_releases(
        &self,
        db: &Db,
        env: Env,
        next: &[(&Element, &Value)],
    ) -> Result<()> {
        let Some((first, _)) = next.first() else {
            return Ok(());
        };
        let mut after: std::collections::BTreeMap<String, Value> = db
            .released_in(&first.circle_id, env, "", &self.types())
            .await?
            .into_iter()
            .collect();
        let moving: Vec<&str> = next
            .iter()
            .filter(|(el, _)| self.has_runtime(&el.element_type))
            .map(|(el, spec)| {
                after.insert(el.slug.clone(), (*spec).clone());
                el.slug.as_str()
            })
            .collect();
        for slug in moving {
            let Some(path) = after.get(slug).and_then(exposed_path) else {
                continue;
            };
            let other = after
                .iter()
                .find(|(s, spec)| s.as_str() != slug && exposed_path(spec) == Some(path));
            if let Some((other, _)) = other {
                return Err(crate::error::Error::conflict(
                    ErrorCode::PathConflict,
                    format!(
                        "path '{path}' is already served in {} by '{other}' in circle '{}'",
                        env.as_str(),
                        first.circle()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// 409 `PATH_CONFLICT` when another live element of the circle already
    /// exposes the path `el` would take (see [`Runtime::check_write`]).
    pub async fn check_path(&self, db: &Db, el: &Element) -> Result<()> {
        if el.state == model::State::Deleted || !self.has_runtime(&el.element_type) {
            return Ok(());
        }
        let others = db
            .elements_of_types(Some(&el.circle_id), &self.types())
            .await?;
        path_conflict(el, &others)
    }

    /// 422 for a `max_message_bytes` over the operator's ceiling: each
    /// connection may hold one incoming message that large.
    fn check_message_ceiling(&self, spec: &Value) -> Result<()> {
        let ceiling = self.inner.budget.limits.message_bytes;
        let asked = spec
            .pointer("/connection/max_message_bytes")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if asked > ceiling as u64 {
            return Err(crate::error::Error::unprocessable(
                ErrorCode::SpecInvalid,
                format!(
                    "spec/connection/max_message_bytes: {asked} is more than this server \
                     allows ({ceiling}, ELEMENTD_MAX_WS_MESSAGE_BYTES)"
                ),
            ));
        }
        Ok(())
    }
}

/// Disabled elements keep their path reserved. An element of the same
/// slug is skipped: that create fails as ALREADY_EXISTS.
fn path_conflict(el: &Element, others: &[Element]) -> Result<()> {
    let Some(path) = exposed_path(&el.spec) else {
        return Ok(());
    };
    match others
        .iter()
        .find(|o| o.id != el.id && o.slug != el.slug && exposed_path(&o.spec) == Some(path))
    {
        Some(o) => Err(crate::error::Error::conflict(
            ErrorCode::PathConflict,
            format!(
                "path '{path}' is already used by '{}' in circle '{}'; choose another path",
                o.slug,
                el.circle()
            ),
        )),
        None => Ok(()),
    }
}

/// A ready element in driven mode: one that holds an outbound link.
fn is_link(el: &Element) -> bool {
    el.state == model::State::Ready && exposed_path(&el.spec).is_none()
}
