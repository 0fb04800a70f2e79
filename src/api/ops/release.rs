//! Releases: `source/promote` moves draft to demo or demo to
//! live, `source/rollback` points demo or live back at an earlier
//! release, `source/promotions` lists them.

use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Env;
use crate::service::environments::{promotion_json, Released, Target};
use crate::service::App;
use serde::Deserialize;
use serde_json::{json, Value};

/// An environment named by a client.
pub fn env_of(name: &str) -> Result<Env> {
    Env::parse(name).ok_or_else(|| {
        Error::bad_request(
            ErrorCode::InvalidEnvironment,
            format!(
                "environments are draft, demo and live, not '{}'",
                crate::error::shown(name)
            ),
        )
    })
}

/// Live is for admins; demo for members (the op's level).
fn require_for(call: &Call, env: Env, what: &str) -> Result<()> {
    if env == Env::Live {
        call.require_release(&format!("{what} live"))?;
    }
    Ok(())
}

fn check_message(m: &Option<String>) -> Result<()> {
    if m.as_ref()
        .is_some_and(|m| m.chars().count() > 1000 || m.contains('\0'))
    {
        return Err(Error::bad_request(
            ErrorCode::InvalidMessage,
            "message must be at most 1000 characters, without NUL",
        ));
    }
    Ok(())
}

fn released_json(r: &Released, from: Env) -> Value {
    let d = &r.deployment;
    json!({
        "promoted": r.promotion.is_some(),
        "from": from,
        "to": d.env,
        "commit": d.commit,
        "previous": r.promotion.as_ref().and_then(|p| p.from_commit.clone()),
        "version": d.version,
        "promotion": r.promotion.as_ref().map(|p| promotion_json(p, from)),
        "warnings": r.warnings,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    from: String,
    to: String,
    message: Option<String>,
}

pub async fn promote(app: &App, call: &Call) -> Result<Reply> {
    let body: PromoteBody = call.body()?;
    let (from, to) = (env_of(&body.from)?, env_of(&body.to)?);
    if to.promoted_from() != Some(from) {
        return Err(Error::bad_request(
            ErrorCode::InvalidPromotion,
            "promote draft to demo or demo to live",
        ));
    }
    check_message(&body.message)?;
    require_for(call, to, "promoting to")?;
    let r = app
        .releases()
        .promote(&call.ctx, &call.element, to, body.message)
        .await?;
    ok(released_json(&r, from))
}

/// `to` of a rollback: "previous", a commit id, or `{"version": N}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum To {
    Named(String),
    Version { version: i64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    env: String,
    to: Option<To>,
    message: Option<String>,
}

pub async fn rollback(app: &App, call: &Call) -> Result<Reply> {
    let body: RollbackBody = call.body()?;
    let env = env_of(&body.env)?;
    check_message(&body.message)?;
    let target = match body.to {
        None => Target::Previous,
        Some(To::Named(s)) if s == "previous" => Target::Previous,
        Some(To::Named(s)) => {
            let ok = (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(Error::bad_request(
                    ErrorCode::InvalidCommit,
                    format!(
                        "to is \"previous\", a commit id (7 to 40 hex characters) or {{\"version\": N}}, not '{}'",
                        crate::error::shown(&s)
                    ),
                ));
            }
            Target::Commit(s.to_ascii_lowercase())
        }
        Some(To::Version { version }) if version >= 1 => Target::Version(version),
        Some(To::Version { .. }) => {
            return Err(Error::bad_request(
                ErrorCode::InvalidVersion,
                "version must be 1 or more",
            ))
        }
    };
    require_for(call, env, "rolling back")?;
    let r = app
        .releases()
        .rollback(&call.ctx, &call.element, env, target, body.message)
        .await?;
    let mut out = released_json(&r, env);
    out["rolled_back"] = json!(r.promotion.is_some());
    ok(out)
}

#[derive(Deserialize)]
struct PromotionsQuery {
    env: Option<String>,
    limit: Option<i64>,
}

pub async fn promotions(app: &App, call: &Call) -> Result<Reply> {
    let q: PromotionsQuery = call.query()?;
    let env = q.env.as_deref().map(env_of).transpose()?;
    if env == Some(Env::Draft) {
        return Err(Error::bad_request(
            ErrorCode::InvalidEnvironment,
            "draft is not promoted to; ask for demo or live",
        ));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request(
            ErrorCode::InvalidLimit,
            "limit must be between 1 and 500",
        ));
    }
    let list = app
        .releases()
        .promotions(&call.element.id, env, limit)
        .await?;
    let out: Vec<Value> = list
        .iter()
        .map(|p| {
            let from = p.env.promoted_from().unwrap_or(p.env);
            promotion_json(p, if p.rollback { p.env } else { from })
        })
        .collect();
    ok(json!({ "promotions": out }))
}
