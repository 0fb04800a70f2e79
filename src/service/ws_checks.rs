//! `test_connection`: the settings an environment of a websocket runs,
//! checked here without touching the network.

use crate::error::Result;
use crate::model::{Element, Env};
use crate::runtime::WsSpec;
use crate::service::realtime::Realtime;
use serde_json::{json, Value};

impl Realtime<'_> {
    /// Local checks only: the spec against its type, the driven link's
    /// URL against the address policy, the draft's path against others.
    pub async fn test_connection(&self, el: &Element, env: Env) -> Result<Value> {
        let spec = match env {
            Env::Draft => el.spec.clone(),
            _ => self.app().release(el, env).await?.spec,
        };
        let checked = self.app().types.get(&el.element_type)?.check_spec(spec);
        let mut errors: Vec<String> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        let spec = match checked {
            Ok(c) => {
                warnings.extend(c.warnings);
                serde_json::from_value::<WsSpec>(c.spec).ok()
            }
            Err(e) => {
                errors.extend(if e.details.is_empty() {
                    vec![e.message]
                } else {
                    e.details
                });
                None
            }
        };
        let mut out = json!({});
        if let Some(spec) = &spec {
            if let Some(url) = &spec.url {
                out["mode"] = json!("driven");
                out["url"] = json!(url);
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host().is_some() => {}
                    Ok(_) => errors.push(format!("url '{url}' needs ws:// or wss:// and a host")),
                    Err(e) => errors.push(format!("url '{url}' does not parse: {e}")),
                }
                // The policy's verdict where no lookup is needed; the link's
                // own attempts report the rest (never this op: no network).
                let refused = self.app().runtime.outbound().check_without_network(url);
                if let Some(link) = self
                    .app()
                    .runtime
                    .hub_in(&el.id, env)
                    .and_then(|h| h.link())
                {
                    if let (Some(why), None) = (link.failure(), &refused) {
                        errors.push(format!(
                            "WS_CONNECTION_FAILED: the link cannot connect: {why}"
                        ));
                    }
                    out["link"] = link.json();
                }
                errors.extend(refused);
            } else {
                out["mode"] = json!("exposed");
                let prefix = match env {
                    Env::Live => "",
                    Env::Demo => "/~demo",
                    Env::Draft => "/~draft",
                };
                out["endpoint"] = json!(format!("/ws/{}{prefix}{}", el.circle(), spec.path));
                if env == Env::Draft {
                    if let Err(e) = self.app().runtime.check_path(&self.app().db, el).await {
                        errors.push(e.message);
                    }
                }
                if spec.auth.mode == crate::runtime::AuthMode::None {
                    warnings.push(
                        "auth.mode is none: anyone who can reach the endpoint may connect".into(),
                    );
                }
            }
        }
        out["env"] = json!(env);
        out["success"] = json!(errors.is_empty());
        out["errors"] = json!(errors);
        out["warnings"] = json!(warnings);
        Ok(out)
    }

    /// The settings the hub of `env` runs, when one runs on this node.
    pub fn running_spec(
        &self,
        id: &crate::ids::ElementId,
        env: Env,
    ) -> Option<std::sync::Arc<WsSpec>> {
        self.app().runtime.hub_in(id, env).map(|h| h.spec())
    }

    /// A runtime element's live metrics in `env` (None: not a runtime
    /// element).
    pub fn metrics(&self, el: &Element, env: Env) -> Option<Value> {
        (self.app().runtime.has_runtime(&el.element_type))
            .then(|| self.app().runtime.element_metrics(el, env))
    }

    /// Where a client connects to `el` in `env`, as `host` names this server.
    pub fn endpoint_url(&self, host: &str, el: &Element, spec: &Value, env: Env) -> Option<String> {
        self.app().runtime.endpoint_url(host, el, spec, env)
    }
}
