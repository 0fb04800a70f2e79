//! Variables a websocket uses: references checked at write, a variable in
//! use kept from deletion, and values read for a driven link when it
//! connects (a sensitive one opened only then, never stored in the open).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::ids::CircleId;
use crate::model::{Actor, Element, Env, Role, State};
use crate::runtime::Resolve;
use crate::secrets::Secrets;
use crate::service::facets::Elements;
use crate::service::policy::require_role;
use crate::service::App;
use crate::store::Db;
use crate::types::Capability;
use crate::types::Registry;
use crate::var_types;
use crate::vars::{self, Resolved};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Reads variables for the runtime's driven links.
pub struct VarResolver {
    pub db: Db,
    pub secrets: Arc<Secrets>,
    pub types: Registry,
}

impl Resolve for VarResolver {
    fn values<'a>(
        &'a self,
        circle_id: &'a CircleId,
        env: Env,
        slugs: Vec<String>,
    ) -> BoxFuture<'a, std::result::Result<HashMap<String, Resolved>, String>> {
        Box::pin(async move {
            let mut out = HashMap::new();
            for slug in slugs {
                let var = self
                    .db
                    .find_in(circle_id, &slug)
                    .await
                    .map_err(|e| format!("variable '{slug}': {e}"))?
                    .filter(|v| {
                        self.types.has(&v.element_type, Capability::Resource)
                            && v.state != State::Deleted
                    })
                    .ok_or_else(|| format!("variable '{slug}' does not exist"))?;
                if var.state != State::Ready {
                    return Err(format!("variable '{slug}' is disabled"));
                }
                let value = value_in(&self.secrets, &var, env)?;
                out.insert(slug, value);
            }
            Ok(out)
        })
    }
}

/// A stored value in the open: a seal opened, a merged one as meant.
fn opened(secrets: &Secrets, var: &Element, raw: &Value) -> std::result::Result<Value, String> {
    if Secrets::is_sealed(raw) {
        secrets
            .open(raw, &var.id)
            .ok_or_else(|| format!("variable '{}' cannot be opened", var.slug))
    } else if let Some(meant) = Secrets::merged_into_seal(raw) {
        // A row the startup step has not sealed again yet.
        Ok(meant)
    } else {
        Ok(raw.clone())
    }
}

/// The value `env` runs: its own, then `value`, then `default`.
pub fn value_in(
    secrets: &Secrets,
    var: &Element,
    env: Env,
) -> std::result::Result<Resolved, String> {
    let sensitive = var.spec.get("sensitive").and_then(Value::as_bool) == Some(true);
    let raw = var_types::slot_for(&var.spec, env.as_str())
        .and_then(|s| var.spec.pointer(s))
        .cloned()
        .unwrap_or(Value::Null);
    let text = match opened(secrets, var, &raw)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(Resolved { text, sensitive })
}

impl App {
    /// 422 `VARIABLE_INVALID` when a variable's rules are unusable or one
    /// of its values (sensitive ones opened, never quoted) breaks its type
    /// or a rule.
    pub(in crate::service) async fn check_variable(&self, var: &Element) -> Result<()> {
        if var.state == State::Deleted || !self.types.has(&var.element_type, Capability::Resource) {
            return Ok(());
        }
        let invalid = |why: String| {
            Error::unprocessable(
                ErrorCode::VariableInvalid,
                format!("variable '{}': {why}", var.slug),
            )
        };
        let rules = var_types::Rules::parse(&var.spec).map_err(invalid)?;
        let sensitive = var.spec.get("sensitive").and_then(Value::as_bool) == Some(true);
        for slot in var_types::SLOTS {
            let Some(raw) = var_types::slot(&var.spec, slot) else {
                continue;
            };
            let v = opened(&self.secrets, var, raw).map_err(invalid)?;
            rules
                .check(&var_types::slot_name(slot), &v, !sensitive)
                .map_err(invalid)?;
        }
        if var.state == State::Ready {
            self.check_user_urls(var).await?;
        }
        Ok(())
    }

    /// A link whose url is filled from this variable gets a URL in each
    /// environment that runs it (the new values read from `var`).
    async fn check_user_urls(&self, var: &Element) -> Result<()> {
        for (ws, envs) in self.variable_users(var).await? {
            for env in envs {
                let spec = match env {
                    Env::Draft => Some(ws.spec.clone()),
                    _ => self.db.deployment(&ws.id, env).await?.map(|d| d.spec),
                };
                if let Some(spec) = spec {
                    self.check_url_in(&ws, &spec, env, Some(var), ErrorCode::VariableInvalid)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// 422 `code` when `spec`'s url, filled with the values `env` runs,
    /// is not a ws:// or wss:// URL. A variable that cannot be read
    /// (disabled) leaves it to the link to say when it connects.
    async fn check_url_in(
        &self,
        ws: &Element,
        spec: &Value,
        env: Env,
        changed: Option<&Element>,
        code: ErrorCode,
    ) -> Result<()> {
        let Some(url) = spec.get("url").and_then(Value::as_str) else {
            return Ok(());
        };
        if vars::refs(url).is_empty() {
            return Ok(());
        }
        let mut values = HashMap::new();
        for slug in vars::refs(url) {
            let var = match changed.filter(|c| c.slug == slug) {
                Some(c) => Some(c.clone()),
                None => self.db.find_in(&ws.circle_id, &slug).await?,
            };
            let Some(var) = var.filter(|v| v.state == State::Ready) else {
                return Ok(());
            };
            let Ok(value) = value_in(&self.secrets, &var, env) else {
                return Ok(());
            };
            values.insert(slug, value);
        }
        vars::check_url(&vars::fill(url, &values)).map_err(|e| {
            let why = vars::redact(&e, &values);
            Error::unprocessable(
                code,
                format!(
                    "spec.url '{url}' of '{}' filled with the values {} runs: {why}",
                    ws.slug,
                    env.as_str()
                ),
            )
        })
    }
}

impl Elements<'_> {
    /// A startup step for rows written before updates replaced sealed
    /// values: a value with plain keys merged beside its seal is sealed
    /// again as those keys, the value its update meant. Runs once; the
    /// number of specs sealed again.
    pub async fn reseal_merged_values(&self) -> Result<usize> {
        let Some(rows) = self.app().db.specs_with_seals().await? else {
            return Ok(0);
        };
        let mut fixed = Vec::new();
        for row in rows {
            let Ok(mut spec) = serde_json::from_str::<Value>(&row.spec) else {
                continue;
            };
            let mut resealed = false;
            for slot in var_types::SLOTS {
                let Some(v) = spec.pointer_mut(slot) else {
                    continue;
                };
                if let Some(meant) = Secrets::merged_into_seal(v) {
                    *v = self.app().secrets.seal(&meant, &row.element_id);
                    resealed = true;
                }
            }
            if resealed {
                fixed.push((row, spec.to_string()));
            }
        }
        self.app().db.write_resealed(&fixed).await?;
        Ok(fixed.len())
    }
}

impl App {
    /// 422 `VARIABLE_NOT_FOUND` when a websocket's url or headers name a
    /// variable its circle does not have.
    pub(in crate::service) async fn check_references(&self, el: &Element) -> Result<()> {
        if el.state == State::Deleted || !self.types.has(&el.element_type, Capability::Websocket) {
            return Ok(());
        }
        for slug in vars::used_by_spec(&el.spec) {
            let found = self
                .db
                .find_in(&el.circle_id, &slug)
                .await?
                .is_some_and(|v| {
                    self.types.has(&v.element_type, Capability::Resource)
                        && v.state != State::Deleted
                });
            if !found {
                return Err(Error::unprocessable(
                    ErrorCode::VariableNotFound,
                    format!(
                        "{{{{ vars.{slug} }}}} names no variable of circle '{}'; create \
                         variable '{slug}' first",
                        el.circle()
                    ),
                ));
            }
        }
        // The spec is draft's now and demo's and live's once released.
        for env in Env::ALL {
            self.check_url_in(el, &el.spec, env, None, ErrorCode::SpecInvalid)
                .await?;
        }
        Ok(())
    }

    /// Whether a spec names a sensitive variable of the circle.
    async fn names_secret(&self, circle_id: &CircleId, spec: &Value) -> Result<bool> {
        for slug in vars::used_by_spec(spec) {
            let var = self.db.find_in(circle_id, &slug).await?;
            if var.is_some_and(|v| v.spec.get("sensitive").and_then(Value::as_bool) == Some(true)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A sensitive value goes wherever the link that sends it connects.
    /// So only an admin may point such a link (its url or headers), or
    /// change a variable a link sends beside a sensitive one.
    pub(in crate::service) async fn guard_secret_use(
        &self,
        actor: &Actor,
        el: &Element,
        before: Option<&Element>,
    ) -> Result<()> {
        if el.state == State::Deleted || actor.role == Some(Role::Admin) {
            return Ok(());
        }
        let admin = |what: String| require_role(actor, Role::Admin, || what);
        if self.types.has(&el.element_type, Capability::Websocket) {
            let pointed = before.is_none_or(|b| {
                b.spec.get("url") != el.spec.get("url")
                    || b.spec.get("headers") != el.spec.get("headers")
            });
            let sends_secret = self.names_secret(&el.circle_id, &el.spec).await?
                || match before {
                    Some(b) => self.names_secret(&b.circle_id, &b.spec).await?,
                    None => false,
                };
            if pointed && sends_secret {
                return admin(format!(
                    "pointing '{}', a link that sends a sensitive variable,",
                    el.slug
                ));
            }
            return Ok(());
        }
        if self.types.has(&el.element_type, Capability::Webhook) {
            // A webhook's url goes to its receiver: one filled from a
            // sensitive variable sends that value wherever it points.
            let url_of =
                |e: &Element| json!({"url": e.spec.get("url").cloned().unwrap_or(Value::Null)});
            let pointed = before.is_none_or(|b| b.spec.get("url") != el.spec.get("url"));
            let sends_secret = self.names_secret(&el.circle_id, &url_of(el)).await?
                || match before {
                    Some(b) => self.names_secret(&b.circle_id, &url_of(b)).await?,
                    None => false,
                };
            if pointed && sends_secret {
                return admin(format!(
                    "pointing '{}', a webhook whose url holds a sensitive variable,",
                    el.slug
                ));
            }
            return Ok(());
        }
        if self.types.has(&el.element_type, Capability::Resource)
            && before.is_some_and(|b| b.spec != el.spec)
        {
            // Each environment runs its own spec: demo and live may still
            // send a secret that the draft no longer names.
            for (ws, envs) in self.variable_users(el).await? {
                for env in envs {
                    let spec = match env {
                        Env::Draft => Some(ws.spec.clone()),
                        _ => self.db.deployment(&ws.id, env).await?.map(|d| d.spec),
                    };
                    let Some(spec) = spec else { continue };
                    if self.names_secret(&ws.circle_id, &spec).await? {
                        return admin(format!(
                            "changing '{}', which link '{}' sends beside a sensitive variable in {},",
                            el.slug,
                            ws.slug,
                            env.as_str()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The websockets that use a variable, each with the environments
    /// whose spec names it.
    pub(in crate::service) async fn variable_users(
        &self,
        var: &Element,
    ) -> Result<Vec<(Element, Vec<Env>)>> {
        let types = self.runtime.types();
        let mut out: Vec<(Element, Vec<Env>)> = Vec::new();
        for ws in self
            .db
            .elements_of_types(Some(&var.circle_id), &types)
            .await?
        {
            if ws.state != State::Deleted && vars::used_by_spec(&ws.spec).contains(&var.slug) {
                out.push((ws, vec![Env::Draft]));
            }
        }
        for env in [Env::Demo, Env::Live] {
            for (slug, spec) in self
                .db
                .released_in(&var.circle_id, env, &var.id, &types)
                .await?
            {
                if !vars::used_by_spec(&spec).contains(&var.slug) {
                    continue;
                }
                match out.iter_mut().find(|(e, _)| e.slug == slug) {
                    Some((_, envs)) => envs.push(env),
                    None => {
                        if let Some(e) = self.db.find_in(&var.circle_id, &slug).await? {
                            out.push((e, vec![env]));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// 409 `VARIABLE_IN_USE` when deleting a variable a websocket uses,
    /// in any environment.
    pub(in crate::service) async fn check_unused(&self, var: &Element) -> Result<()> {
        if !self.types.has(&var.element_type, Capability::Resource) {
            return Ok(());
        }
        let users = self.variable_users(var).await?;
        let webhooks = self.webhook_users(var).await?;
        if users.is_empty() && webhooks.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = users
            .iter()
            .map(|(e, envs)| {
                let envs: Vec<&str> = envs.iter().map(|e| e.as_str()).collect();
                format!("'{}' ({})", e.slug, envs.join(", "))
            })
            .chain(webhooks.iter().map(|w| format!("webhook '{}'", w.slug)))
            .collect();
        Err(Error::conflict(
            ErrorCode::VariableInUse,
            format!(
                "variable '{}' is used by {}; change them (and release the change) first",
                var.slug,
                named.join(", ")
            ),
        ))
    }
}
