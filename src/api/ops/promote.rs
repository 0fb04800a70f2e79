//! `promote` on manifests (projects, apps): dev → demo → live, every
//! member together. `GET promote?to=` shows what it would change;
//! `environments` shows what each environment runs.

use super::with_warnings;
use crate::api::call::{ok, Call, Reply};
use crate::api::ops::release::env_of;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Env;
use crate::service::manifests::{snapshot_json, Step};
use crate::service::App;
use crate::types::Capability;
use serde::Deserialize;
use serde_json::{json, Value};

fn manifest_only(call: &Call) -> Result<()> {
    if call.ty.has_capability(Capability::Promote) {
        return Ok(());
    }
    Err(Error::bad_request(
        ErrorCode::NotAManifest,
        format!(
            "only projects and apps promote their members; a {} promotes its own source with \
             POST /api/{}/{}/ops/source/promote",
            call.ty.name(),
            call.element.circle(),
            call.element.slug
        ),
    ))
}

fn target(to: &str) -> Result<Env> {
    match env_of(to)? {
        Env::Draft => Err(Error::bad_request(
            ErrorCode::InvalidEnvironment,
            "promote to demo or live",
        )),
        env => Ok(env),
    }
}

fn step_json(s: &Step) -> Value {
    json!({
        "slug": s.member.slug,
        "element_type": s.member.element_type,
        "from_version": s.current.version,
        "to_version": s.next.version,
        "from_commit": s.current.commit,
        "to_commit": s.next.commit,
        "changes": s.changes(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    to: String,
    message: Option<String>,
    /// Redeploys this earlier snapshot of the manifest (a rollback).
    snapshot: Option<String>,
}

pub async fn promote(app: &App, call: &Call) -> Result<Reply> {
    manifest_only(call)?;
    let body: PromoteBody = call.body()?;
    let to = target(&body.to)?;
    if to == Env::Live {
        call.require_release("promoting to live")?;
    }
    if body
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 1000 || m.contains('\0'))
    {
        return Err(Error::bad_request(
            ErrorCode::InvalidMessage,
            "message must be at most 1000 characters, without NUL",
        ));
    }
    let el = &call.element;
    let steps = app
        .releases()
        .plan_watched(Some(&call.ctx), el, to, body.snapshot.as_deref())
        .await?;
    let changes: Vec<Value> = steps.iter().map(step_json).collect();
    let (snap, warnings) = app
        .releases()
        .promote_manifest(&call.ctx, el, to, steps, body.message)
        .await?;
    let mut out = with_warnings(app, el, &warnings);
    out["spec"]["environments"] = app.releases().environments_of(el).await?;
    out["environment"] = snapshot_json(&snap);
    out["changes"] = json!(changes);
    ok(out)
}

#[derive(Deserialize)]
struct PreviewQuery {
    to: String,
    snapshot: Option<String>,
}

/// `GET promote?to=live`: which members would change, from which version
/// to which; nothing is changed.
pub async fn preview(app: &App, call: &Call) -> Result<Reply> {
    manifest_only(call)?;
    let q: PreviewQuery = call.query()?;
    let to = target(&q.to)?;
    let steps = app
        .releases()
        .plan(&call.element, to, q.snapshot.as_deref())
        .await?;
    ok(json!({
        "to": to,
        "members": steps.iter().map(step_json).collect::<Vec<_>>(),
        "changes": steps.iter().filter(|s| s.changes()).count(),
    }))
}

/// For each environment: the snapshot (when, by whom), each member's
/// version and commit, and where its runtime answers.
pub async fn environments(app: &App, call: &Call) -> Result<Reply> {
    manifest_only(call)?;
    let el = &call.element;
    let snaps = app.releases().environments_of(el).await?;
    let host = call
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&app.config().listen)
        .to_string();
    let mut out = serde_json::Map::new();
    for env in Env::ALL {
        let mut members = Vec::new();
        for m in app.graph().all_members(el).await? {
            let (version, commit, spec) = match env {
                Env::Draft => (
                    m.version,
                    app.repos().head(&m.id, "draft").await?,
                    m.spec.clone(),
                ),
                _ => match app.releases().of(&m.id, env).await? {
                    Some(d) => (d.version, Some(d.commit), d.spec),
                    None => (m.version, None, m.spec.clone()),
                },
            };
            members.push(json!({
                "slug": m.slug,
                "element_type": m.element_type,
                "version": version,
                "commit": commit,
                "endpoint": app.realtime().endpoint_url(&host, &m, &spec, env),
            }));
        }
        let mut e = json!({ "members": members });
        if let Some(s) = snaps.get(env.as_str()) {
            e["snapshot"] = s["snapshot"].clone();
            e["promoted_at"] = s["promoted_at"].clone();
            e["promoted_by"] = s["promoted_by"].clone();
        }
        out.insert(env.as_str().into(), e);
    }
    ok(json!({ "environments": out }))
}

#[derive(Deserialize)]
struct SnapshotsQuery {
    env: Option<String>,
    limit: Option<i64>,
}

/// `snapshots`: a manifest's earlier deployments, newest first, each with
/// the id `promote {"snapshot"}` redeploys.
pub async fn snapshots(app: &App, call: &Call) -> Result<Reply> {
    manifest_only(call)?;
    let q: SnapshotsQuery = call.query()?;
    let env = q.env.as_deref().map(target).transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request(
            ErrorCode::InvalidLimit,
            "limit must be between 1 and 500",
        ));
    }
    let list = app
        .releases()
        .snapshots(&call.element.id, env, limit)
        .await?;
    let out: Vec<Value> = list
        .iter()
        .map(|s| {
            let mut v = snapshot_json(s);
            v["env"] = json!(s.env);
            v
        })
        .collect();
    ok(json!({ "snapshots": out }))
}
