//! Variables a websocket uses: references checked at write, a variable in
//! use kept from deletion, and values read for a driven link when it
//! connects (a sensitive one opened only then, never stored in the open).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::{Actor, Element, Env, Role, State};
use crate::runtime::Resolve;
use crate::secrets::Secrets;
use crate::service::policy::require_role;
use crate::service::App;
use crate::store::Db;
use crate::types::Capability;
use crate::types::Registry;
use crate::vars::{self, Resolved};
use futures::future::BoxFuture;
use serde_json::Value;
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
        circle_id: &'a str,
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
                let value = self.value_of(&var)?;
                out.insert(slug, value);
            }
            Ok(out)
        })
    }
}

impl VarResolver {
    fn value_of(&self, var: &Element) -> std::result::Result<Resolved, String> {
        let sensitive = var.spec.get("sensitive").and_then(Value::as_bool) == Some(true);
        let raw = var.spec.get("value").cloned().unwrap_or(Value::Null);
        let value = if Secrets::is_sealed(&raw) {
            self.secrets
                .open(&raw, &var.id)
                .ok_or_else(|| format!("variable '{}' cannot be opened", var.slug))?
        } else if let Some(meant) = Secrets::merged_into_seal(&raw) {
            // A row the startup step has not sealed again yet.
            meant
        } else {
            raw
        };
        let text = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Ok(Resolved { text, sensitive })
    }
}

impl App {
    /// A startup step for rows written before updates replaced sealed
    /// values: a value with plain keys merged beside its seal is sealed
    /// again as those keys, the value its update meant. Runs once; the
    /// number of specs sealed again.
    pub async fn reseal_merged_values(&self) -> Result<usize> {
        let Some(rows) = self.db.specs_with_seals().await? else {
            return Ok(0);
        };
        let mut fixed = Vec::new();
        for row in rows {
            let Ok(mut spec) = serde_json::from_str::<Value>(&row.spec) else {
                continue;
            };
            let Some(meant) = spec.get("value").and_then(Secrets::merged_into_seal) else {
                continue;
            };
            spec["value"] = self.secrets.seal(&meant, &row.element_id);
            fixed.push((row, spec.to_string()));
        }
        self.db.write_resealed(&fixed).await?;
        Ok(fixed.len())
    }
}

impl App {
    /// 422 `VARIABLE_NOT_FOUND` when a websocket's url or headers name a
    /// variable its circle does not have.
    pub async fn check_references(&self, el: &Element) -> Result<()> {
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
        Ok(())
    }

    /// Whether a spec names a sensitive variable of the circle.
    async fn names_secret(&self, circle_id: &str, spec: &Value) -> Result<bool> {
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
    pub async fn guard_secret_use(
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
    pub async fn variable_users(&self, var: &Element) -> Result<Vec<(Element, Vec<Env>)>> {
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
    pub async fn check_unused(&self, var: &Element) -> Result<()> {
        if !self.types.has(&var.element_type, Capability::Resource) {
            return Ok(());
        }
        let users = self.variable_users(var).await?;
        if users.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = users
            .iter()
            .map(|(e, envs)| {
                let envs: Vec<&str> = envs.iter().map(|e| e.as_str()).collect();
                format!("'{}' ({})", e.slug, envs.join(", "))
            })
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
