//! Ops of elements with a runtime (websocket): accept, send,
//! broadcast, close, connections, receive and test-connection. Each reads
//! its body, calls one function of `service/realtime.rs` (which reaches
//! the connections wherever they are held) and shapes the answer.

use crate::api::call::{ok, Call, Payload, Reply};
use crate::api::upgrade::{authenticate, query_params, upgrade_required};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Env;
use crate::runtime::WsSpec;
use crate::service::realtime::Target;
use crate::service::App;
use axum::http::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct EnvQuery {
    env: Option<String>,
}

/// The environment an op addresses: its body's `env`, else the query's,
/// else live.
pub(super) fn env_of(call: &Call, in_body: Option<&str>) -> Result<Env> {
    let q: EnvQuery = call.query()?;
    match in_body.or(q.env.as_deref()) {
        None => Ok(Env::Live),
        Some(e) => crate::api::ops::release::env_of(e),
    }
}

/// The settings the environment runs (the element's for draft, its
/// release's for demo and live).
fn spec_in(app: &App, call: &Call, env: Env) -> Result<std::sync::Arc<WsSpec>> {
    Ok(app.realtime().env_hub(&call.element, env)?.spec())
}

/// `accept` over plain HTTP: clients connect by upgrading at the endpoint.
pub async fn accept(app: &App, call: &Call) -> Result<Reply> {
    let env = env_of(call, None)?;
    let spec = spec_in(app, call, env)?;
    if spec.is_driven() {
        return Err(Error::conflict(
            ErrorCode::WsNotExposed,
            "this element drives an outbound link (url is set); it accepts no clients",
        ));
    }
    let host = call
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let spec_json = serde_json::json!({"path": spec.path});
    let url = app
        .realtime()
        .endpoint_url(host, &call.element, &spec_json, env)
        .unwrap_or_default();
    Err(upgrade_required(&url))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    connection_id: Option<String>,
    user: Option<String>,
    message: Option<Value>,
    env: Option<String>,
}

pub async fn send(app: &App, call: &Call) -> Result<Reply> {
    let body: SendBody = call.body()?;
    let env = env_of(call, body.env.as_deref())?;
    let to = Target::of(body.connection_id, body.user.clone())?;
    let sent = app
        .realtime()
        .send(&call.ctx, &call.element, env, to, body.message)
        .await?;
    match (sent.connection_id, sent.delivered_to) {
        (Some(id), _) => {
            ok(json!({"sent": true, "connection_id": id, "bytes": sent.bytes, "env": env}))
        }
        (None, n) => ok(json!({
            "sent": true, "user": body.user, "delivered_to": n.unwrap_or(0),
            "bytes": sent.bytes, "env": env,
        })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    message: Option<Value>,
    room: Option<String>,
    env: Option<String>,
}

pub async fn broadcast(app: &App, call: &Call) -> Result<Reply> {
    let body: BroadcastBody = call.body()?;
    let env = env_of(call, body.env.as_deref())?;
    let room = body.room.as_deref();
    let d = app
        .realtime()
        .broadcast(&call.ctx, &call.element, env, body.message, room)
        .await?;
    ok(json!({
        "broadcast": true,
        "delivered_to": d.delivered_to,
        "subscriber_count": d.subscriber_count,
        "room": room,
        "env": env,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    connection_id: Option<String>,
    user: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
    env: Option<String>,
}

pub async fn close(app: &App, call: &Call) -> Result<Reply> {
    let body: CloseBody = call.body()?;
    let env = env_of(call, body.env.as_deref())?;
    let code = body.code.unwrap_or(1000);
    let reason = body.reason.unwrap_or_default();
    let target = Target::of(body.connection_id.clone(), body.user.clone())?;
    let n = app
        .realtime()
        .close(&call.element, env, &target, code, &reason)
        .await?;
    match target {
        // A user's connections: how many (0 is a success).
        Target::User(user) => {
            ok(json!({"closed": n, "user": user, "code": code, "reason": reason}))
        }
        Target::Connection(_) => ok(json!({
            "closed": true, "connection_id": body.connection_id, "code": code, "reason": reason,
        })),
    }
}

#[derive(Deserialize)]
struct ConnectionsQuery {
    room: Option<String>,
    user: Option<String>,
    env: Option<String>,
}

pub async fn connections(app: &App, call: &Call) -> Result<Reply> {
    let q: ConnectionsQuery = call.query()?;
    let env = env_of(call, q.env.as_deref())?;
    let mut list = app
        .realtime()
        .connections(&call.element, env, q.room.as_deref(), q.user.as_deref())
        .await?;
    // Other callers' addresses are for admins only.
    if call.require(crate::model::Role::Admin, "").is_err() {
        for c in &mut list {
            if let Some(o) = c.as_object_mut() {
                crate::model::hide_admin_only(o);
            }
        }
    }
    ok(Value::Array(list))
}

#[derive(Deserialize)]
struct PresenceQuery {
    room: Option<String>,
    env: Option<String>,
}

/// `presence`: the users connected (to a room, or anywhere), on every node.
pub async fn presence(app: &App, call: &Call) -> Result<Reply> {
    let q: PresenceQuery = call.query()?;
    let env = env_of(call, q.env.as_deref())?;
    let answer = app
        .realtime()
        .presence(&call.element, env, q.room.as_deref())
        .await?;
    Ok((StatusCode::OK, Payload::Serialized(answer)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    room: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// `history`: what a room keeps, after `since`.
pub async fn history(app: &App, call: &Call) -> Result<Reply> {
    let q: HistoryQuery = call.query()?;
    let env = env_of(call, None)?;
    let number = |v: &Option<String>, name: &str, code: ErrorCode| {
        v.as_deref()
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    Error::bad_request(
                        code,
                        format!(
                            "{name} must be a whole number, not '{}'",
                            crate::error::shown(s)
                        ),
                    )
                })
            })
            .transpose()
    };
    let since = number(&q.since, "since", ErrorCode::InvalidQuery)?;
    let limit = number(&q.limit, "limit", ErrorCode::InvalidLimit)?;
    let limit = limit.map(|l| l.min(usize::MAX as u64) as usize);
    let page = app
        .realtime()
        .history(&call.element, env, q.room.as_deref(), since, limit)
        .await?;
    Ok((
        StatusCode::OK,
        Payload::Serialized(serde_json::to_vec(&page)?.into()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveBody {
    message: Option<Value>,
    connection_id: Option<String>,
    room: Option<String>,
    env: Option<String>,
}

/// `receive` (auth none at the platform level): the environment's own
/// auth applies, then the message enters as if a client sent it.
pub async fn receive(app: &App, call: &Call) -> Result<Reply> {
    // Auth comes before the body is judged (a bad body must not tell a
    // caller without a token that the element exists): only peek at env.
    let peek = serde_json::from_slice::<Value>(&call.body)
        .ok()
        .and_then(|v| v.get("env")?.as_str().map(str::to_string));
    let env = env_of(call, peek.as_deref()).unwrap_or(Env::Live);
    let el = &call.element;
    let spec = match app.realtime().running_spec(&el.id, env) {
        Some(s) => s,
        // Nothing runs there: answer as for a missing element (no token)
        // or say so (a token of the circle).
        None if call.principal.is_none() => return Err(crate::service::principal::missing_token()),
        None => spec_in(app, call, env)?,
    };
    match &call.principal {
        // A valid bearer token was already read (and its circle checked)
        // by the pipeline.
        // End users hold no platform token: in jwt mode `receive` takes
        // one, as in token mode.
        Some(p) if spec.auth.mode != crate::runtime::AuthMode::None => {
            p.require(crate::types::Level::Read)?;
        }
        _ => {
            let params = query_params(&call.query);
            let given = params.iter().any(|(k, _)| *k == spec.auth.query_param);
            if spec.auth.mode != crate::runtime::AuthMode::None && !given {
                // Exactly what a missing element answers without a token.
                return Err(crate::service::principal::missing_token());
            }
            authenticate(
                app,
                &spec,
                None,
                &el.circle_id,
                &call.headers,
                &params,
                call.peer,
            )
            .await?;
        }
    }
    let body: ReceiveBody = call.body()?;
    let env = env_of(call, body.env.as_deref())?;
    let out = app
        .realtime()
        .receive(
            &call.ctx,
            el,
            env,
            body.message,
            body.connection_id.as_deref(),
            body.room.as_deref(),
        )
        .await?;
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    env: Option<String>,
}

/// Local checks only, of the settings an environment runs: no network.
pub async fn test_connection(app: &App, call: &Call) -> Result<Reply> {
    // It takes only `env`; anything else is a mistake worth reporting.
    let body: TestBody = call.body()?;
    let env = env_of(call, body.env.as_deref())?;
    ok(app.realtime().test_connection(&call.element, env).await?)
}
