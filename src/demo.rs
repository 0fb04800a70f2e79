//! `elementd demo`: the chat application of `fixtures/demo/demo.yaml`,
//! loaded into an empty server through the same use cases the REST ops
//! call, so a newcomer sees something run at once.

use crate::error::Result as OpResult;
use crate::model::{Actor, Element, Env, Slug};
use crate::service::compose::Add;
use crate::service::ctx::OpCtx;
use crate::service::elements::NewElement;
use crate::service::App;
use crate::store::elements::ListFilter;
use crate::types::Capability;
use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;

const PLAN: &str = include_str!("../fixtures/demo/demo.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    circle: String,
    elements: Vec<Item>,
    #[serde(default)]
    compose: Vec<Attach>,
    #[serde(default)]
    promote: Vec<Release>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    element_type: String,
    slug: String,
    intention: Option<String>,
    #[serde(default)]
    spec: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attach {
    target: String,
    add: Vec<Add>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    manifest: String,
    to: Vec<String>,
}

/// What `load` did.
pub enum Loaded {
    /// The demo was loaded now; the development token's secret is shown
    /// this once.
    Fresh {
        circle: String,
        token: Option<String>,
    },
    /// The circle was there already: nothing was touched, unless the
    /// server listens elsewhere than before: then `moved` names the new
    /// address the `demo-address` variable now holds. `outdated`: an
    /// older demo, without the backend's hooks and webhook, left as it is.
    AlreadyThere {
        circle: String,
        moved: Option<String>,
        outdated: bool,
    },
}

/// The variable holding the address the demo dials on itself.
const ADDRESS_VAR: &str = "demo-address";

/// Loads the demo unless its circle exists. A server that holds other
/// circles is refused unless `anyway`: the demo is for an empty one.
/// `listen` is where the driven feed finds the echo.
pub async fn load(app: &App, listen: SocketAddr, anyway: bool) -> anyhow::Result<Loaded> {
    let jwt_key = key(&app.config().demo_key_file(), random_key)?;
    let backend_key = key(&app.config().demo_backend_key_file(), backend_secret)?;
    let plan = plan(listen, &jwt_key, &backend_key)?;
    if let Some(circle) = app.elements().circle_cached(&plan.circle).await? {
        let (moved, outdated) = follow(app, &circle, &reach(listen).to_string())
            .await
            .with_context(|| format!("moving the demo's address in '{}'", plan.circle))?;
        return Ok(Loaded::AlreadyThere {
            circle: plan.circle,
            moved,
            outdated,
        });
    }
    let circles = app
        .elements()
        .list(
            None,
            &ListFilter {
                element_type: None,
                state: None,
                after_id: None,
                limit: 6,
            },
        )
        .await?;
    if !circles.is_empty() && !anyway {
        let names: Vec<&str> = circles.iter().map(|c| c.slug.as_str()).collect();
        bail!(
            "this server already holds circles ({}); the demo loads only into an empty one. \
             Use another --data-dir (or database), or pass --anyway to add the circle '{}' beside them",
            names.join(", "),
            plan.circle
        );
    }
    let token = build(app, &plan)
        .await
        .with_context(|| format!("loading the demo circle '{}'", plan.circle))?;
    Ok(Loaded::Fresh {
        circle: plan.circle,
        token,
    })
}

/// On a demo that is there already: moves `demo-address` to where the
/// server listens now when that changed, so the hooks, the webhook and
/// the feed reach this server again. A demo without that variable
/// predates them and stays as it is.
async fn follow(app: &App, circle: &Element, now: &str) -> OpResult<(Option<String>, bool)> {
    let Some(var) = app
        .elements()
        .cached(&circle.circle_id, ADDRESS_VAR)
        .await?
    else {
        return Ok((None, true));
    };
    if var.spec["value"].as_str() == Some(now) {
        return Ok((None, false));
    }
    let ctx = OpCtx::new(Actor::system(), "demo", None);
    let update = crate::service::edits::Update {
        spec: Some(serde_json::json!({ "value": now })),
        name: None,
        intention: None,
        deep: None,
        may_unseal: false,
    };
    app.elements().update(&ctx, var, update).await?;
    Ok((Some(now.to_string()), false))
}

fn random_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A `whsec_` secret, as an application's backend would be given one.
fn backend_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A key made once (owner-only) and kept beside the database, so what
/// signs and what verifies agree after a restart.
fn key(file: &std::path::Path, make: fn() -> String) -> anyhow::Result<String> {
    if let Ok(k) = std::fs::read_to_string(file) {
        return Ok(k.trim().to_string());
    }
    let k = make();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(file)?, k.as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(k)
}

/// Where this server is reached: a wildcard listener on loopback.
fn reach(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

fn plan(listen: SocketAddr, key: &str, backend_key: &str) -> anyhow::Result<Plan> {
    let text = PLAN
        .replace("{{listen}}", &reach(listen).to_string())
        .replace("{{demo_key}}", key)
        .replace("{{backend_key}}", backend_key);
    yaml_serde::from_str(&text).context("fixtures/demo/demo.yaml")
}

/// The address a driven link of the demo dials, for the outbound policy.
pub fn feed_target(listen: SocketAddr) -> String {
    match listen.ip() {
        ip if ip.is_unspecified() && listen.is_ipv4() => "127.0.0.1".into(),
        ip if ip.is_unspecified() => "::1".into(),
        ip => ip.to_string(),
    }
}

async fn build(app: &App, plan: &Plan) -> OpResult<Option<String>> {
    let ctx = OpCtx::new(Actor::system(), "demo", None);
    let circle = app
        .elements()
        .create(&ctx, None, new("circle", &plan.circle, None, Value::Null)?)
        .await?
        .element;
    let mut token = None;
    for item in &plan.elements {
        let el = app
            .elements()
            .create(
                &ctx,
                Some(&circle),
                new(
                    &item.element_type,
                    &item.slug,
                    item.intention.clone(),
                    item.spec.clone(),
                )?,
            )
            .await?
            .element;
        if app.types().has(&el.element_type, Capability::ApiToken) {
            token = Some(app.tokens().mint(&el).await?.1);
        }
    }
    for a in &plan.compose {
        let target = member(app, &circle, &a.target).await?;
        app.elements().compose(&ctx, &target, &a.add, &[]).await?;
    }
    for r in &plan.promote {
        let manifest = member(app, &circle, &r.manifest).await?;
        for to in &r.to {
            let env = Env::parse(to).ok_or_else(|| {
                crate::error::Error::internal(format!("demo.yaml: no environment '{to}'"))
            })?;
            let steps = app.releases().plan(&manifest, env, None).await?;
            app.releases()
                .promote_manifest(&ctx, &manifest, env, steps, Some("the demo".into()))
                .await?;
        }
    }
    Ok(token)
}

fn new(ty: &str, slug: &str, intention: Option<String>, spec: Value) -> OpResult<NewElement> {
    Ok(NewElement {
        id: None,
        element_type: ty.into(),
        slug: Slug::parse(slug)?,
        name: None,
        spec: (!spec.is_null()).then_some(spec),
        intention,
        readme: None,
        repo: None,
    })
}

async fn member(app: &App, circle: &Element, slug: &str) -> OpResult<Element> {
    app.elements()
        .cached(&circle.circle_id, slug)
        .await?
        .ok_or_else(|| {
            crate::error::Error::internal(format!("demo.yaml names no element '{slug}'"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_reads_and_names_the_listener() {
        let p = plan("0.0.0.0:8080".parse().unwrap(), "k3y", "whsec_AAAA").unwrap();
        assert_eq!(p.circle, "demo");
        let item = |slug: &str| p.elements.iter().find(|i| i.slug == slug).unwrap();
        assert_eq!(item(ADDRESS_VAR).spec["value"], "127.0.0.1:8080");
        let feed = item("feed");
        assert_eq!(feed.spec["url"], "ws://{{vars.demo-address}}/ws/demo/echo");
        assert_eq!(item("chat-jwt").spec["value"], "k3y");
        assert_eq!(item("backend-key").spec["value"], "whsec_AAAA");
        let chat = item("chat");
        assert_eq!(chat.spec["auth"]["jwt"]["secret"], "{{ vars.chat-jwt }}");
        assert_eq!(chat.spec["hooks"]["secret"], "{{ vars.backend-key }}");
        assert!(backend_secret().starts_with("whsec_"));
        assert_eq!(feed_target("[::]:9000".parse().unwrap()), "::1");
        assert_eq!(feed_target("127.0.0.1:1".parse().unwrap()), "127.0.0.1");
    }
}
