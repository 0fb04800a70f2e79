//! `GET /ws/{circle}{path}`: the exposed endpoint of live websocket
//! elements. Everything is checked before the upgrade (endpoint, auth per
//! `spec.auth`, rooms, `max_connections`); each refusal is an error
//! envelope and a `ws.connection.rejected` event.

use super::auth::{principal_for, token_from_headers};
use super::input::path_params;
use super::upgrade_params::{recover_param, rooms_param};
use super::ws_edge::Axum;
use crate::error::{Class, Error, Result};
use crate::error_codes::ErrorCode;
use crate::limits::{Asker, MessageGate};
use crate::model::Actor;
use crate::model::Env;
use crate::runtime::jwt::EndUser;
use crate::runtime::{Asking, AuthMode, Framed, Hub, Opened, Verdict, WsSpec};
use crate::service::principal::Principal;
use crate::service::SharedApp;
use crate::types::Level;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::net::SocketAddr;
use std::sync::Arc;

/// The socket's frame watch, when the listener set one.
type Wire = Option<Extension<Arc<crate::runtime::wire::WireWatch>>>;

type Upgrade = std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>;

/// `/ws/{circle}` and `/ws/{circle}/`: the element whose path is `/`.
pub async fn at_root(
    State(app): State<SharedApp>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    wire: Wire,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    match path_params(path) {
        Ok(circle) => upgrade(app, circle, "/".into(), remote, q, headers, ws, wire).await,
        Err(e) => e.into_response(),
    }
}

/// `/ws/{circle}/{*path}`.
pub async fn at_path(
    State(app): State<SharedApp>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
    wire: Wire,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    match path_params(path) {
        Ok((circle, p)) => {
            upgrade(app, circle, format!("/{p}"), remote, q, headers, ws, wire).await
        }
        Err(e) => e.into_response(),
    }
}

/// `/~demo{path}` and `/~draft{path}` address those environments; any
/// other path is live's.
fn env_path(path: &str) -> (Env, String) {
    for (env, prefix) in [(Env::Demo, "/~demo"), (Env::Draft, "/~draft")] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.is_empty() {
                return (env, "/".into());
            }
            if rest.starts_with('/') {
                return (env, rest.to_string());
            }
        }
    }
    (Env::Live, path.to_string())
}

fn endpoint_not_found() -> Error {
    Error::not_found(
        ErrorCode::WsEndpointNotFound,
        "no live websocket element serves this path",
    )
}

pub fn upgrade_required(endpoint: &str) -> Error {
    Error::new(
        crate::error::Kind::UpgradeRequired,
        Class::Precondition,
        ErrorCode::UpgradeRequired,
        format!("connect with a WebSocket client (GET with Upgrade: websocket) to {endpoint}"),
    )
    .with_details(vec![endpoint.to_string()])
}

#[allow(clippy::too_many_arguments)]
async fn upgrade(
    app: SharedApp,
    circle: String,
    path: String,
    remote: SocketAddr,
    query: Option<String>,
    headers: HeaderMap,
    ws: Upgrade,
    wire: Wire,
) -> Response {
    let (env, path) = env_path(&path);
    let Some(hub) = app.runtime().endpoint(&circle, env, &path) else {
        return endpoint_not_found().into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        // Asked for a websocket, but the handshake is malformed.
        Err(rejection) if asks_for_websocket(&headers) => {
            return bad_handshake(rejection.body_text()).into_response()
        }
        Err(_) => return upgrade_required(&format!("/ws/{circle}{path}")).into_response(),
    };
    if !key_is_valid(&headers) {
        return bad_handshake("Sec-WebSocket-Key must be 16 random bytes in base64".into())
            .into_response();
    }
    let a = match admit(&app, hub, remote, query, &headers).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let runtime = app.runtime().clone();
    // The client sends frames only once it has our 101.
    let wire = wire.map(|Extension(w)| {
        w.arm();
        w
    });
    ws.protocols(a.protocol)
        .read_buffer_size(app.config().limits.ws_read_buffer as usize)
        .max_message_size(a.max)
        .max_frame_size(a.max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            runtime.track(a.hub.serve(a.opened, Framed::<_, Axum>::new(socket), wire))
        })
}

/// The direct way in ([`super::direct`]), whose request is a well-formed
/// upgrade already: the endpoint, then [`admit`].
pub(super) async fn admit_direct(
    app: &SharedApp,
    circle: &str,
    path: &str,
    remote: SocketAddr,
    query: Option<String>,
    headers: &HeaderMap,
) -> std::result::Result<Admitted, Response> {
    let (env, path) = env_path(path);
    let Some(hub) = app.runtime().endpoint(circle, env, &path) else {
        return Err(endpoint_not_found().into_response());
    };
    admit(app, hub, remote, query, headers).await
}

/// A handshake that passed every check, with its connection opened: what
/// its 101 and its socket need.
pub(super) struct Admitted {
    pub hub: Arc<Hub>,
    pub opened: Opened,
    /// The subprotocol picked for the 101.
    pub protocol: Option<String>,
    /// The largest message and frame.
    pub max: usize,
}

/// Everything between finding the endpoint and the 101, whichever way the
/// request came in: auth, limits, rooms, the connect hook, the slot. A
/// refusal is the answer to send.
pub(super) async fn admit(
    app: &SharedApp,
    hub: Arc<Hub>,
    remote: SocketAddr,
    query: Option<String>,
    headers: &HeaderMap,
) -> std::result::Result<Admitted, Response> {
    let spec = hub.spec();
    let peer = Some(remote.ip());
    let remote = super::addr_text::addr_text(remote);
    let admitted = async {
        let params = query_params(query.as_deref().unwrap_or(""));
        // Through the read cache, as REST calls find elements: a
        // handshake asks the database nothing it asked a moment ago.
        let el = match app.elements().shared(&hub.circle_id, &hub.slug).await? {
            Some(el) if el.id == hub.element_id => Some(el),
            _ => app.elements().by_id(&hub.element_id).await?.map(Arc::new),
        };
        let mods = match el {
            Some(el) => app.policy().active_modifiers(&el).await?,
            None => Vec::new(),
        };
        let ip = peer.map(super::addr_text::ip_text);
        // A limit keyed by address counts every attempt, refused ones too,
        // so floods of bad upgrades are held to it.
        let (by_ip, mods): (Vec<_>, Vec<_>) = mods.into_iter().partition(|m| {
            m.rate
                .as_ref()
                .is_some_and(|r| r.key == crate::modifiers::RateKey::Ip)
        });
        let anyone = Asker {
            role: None,
            token_id: None,
            ip: ip.clone(),
            origin: None,
            connection: None,
            element: Some(&hub.element_id),
            credential: None,
            scopes: None,
        };
        app.policy().enforce(&by_ip, &anyone)?;
        let (actor, principal, end_user) = authenticate(
            app,
            &spec,
            Some(&hub),
            &hub.circle_id,
            headers,
            &params,
            peer,
        )
        .await?;
        if let Some(p) = &principal {
            crate::service::gate::check_origin(p, super::call::origin_of(headers))?;
        }
        let asker = Asker {
            role: principal.as_ref().map(|p| p.role),
            token_id: principal.as_ref().map(|p| p.token_id.as_str()),
            ip,
            origin: super::call::origin_of(headers),
            connection: None,
            element: Some(&hub.element_id),
            credential: match (&end_user, &principal) {
                (Some(_), _) => Some(crate::limits::Credential::Jwt),
                (None, Some(p)) => Some(crate::service::gate::credential_of(p)),
                (None, None) => None,
            },
            scopes: principal.as_ref().and_then(|p| p.scopes.map(|s| s.names())),
        };
        let gate = attached_policies(app, mods, by_ip, asker)?;
        let recover = recover_param(&spec, &params)?;
        let rooms = rooms_param(&spec, &params, &recover)?;
        if let Some(u) = &end_user {
            if let Some(r) = rooms.iter().find(|r| !u.may_join(r)) {
                return Err(Error::forbidden(format!(
                    "your token's rooms claim does not include room '{}'",
                    crate::error::shown(r)
                ))
                .with_code(ErrorCode::RoomForbidden));
            }
        }
        // The user: an end user's sub (jwt), the platform token's id
        // (token); none when anyone may connect.
        let user = match spec.auth.mode {
            AuthMode::Jwt => end_user.as_ref().map(|u| u.sub.clone()),
            AuthMode::Token => principal.as_ref().map(|p| p.token_id.clone()),
            AuthMode::None => None,
        };
        let id = crate::runtime::new_connection_id();
        let (user, rooms, end_user) = match hub
            .connect_hook(Asking {
                connection_id: &id,
                user: user.as_deref(),
                info: end_user.as_ref().and_then(|u| u.info.as_deref()),
                rooms: &rooms,
                remote: &remote,
                query: hook_query(&spec, &params),
                user_agent: header_text(headers, header::USER_AGENT),
                origin: super::call::origin_of(headers),
            })
            .await?
        {
            None => (user, rooms, end_user),
            Some(Verdict::Refuse {
                status,
                code,
                reason,
            }) => return Err(Hub::refused_by_hook(status, code, reason)),
            Some(Verdict::Allow {
                user: u,
                rooms: r,
                info,
            }) => named_by_hook(&spec, user, rooms, end_user, u, r, info)?,
        };
        let info = end_user.as_ref().and_then(|u| u.info.as_deref());
        let who = user.as_deref().map(|u| (u, info));
        let slot = hub.admit(id, &rooms, &remote, who).await?;
        Ok::<_, Error>((actor, rooms, slot, gate, user, end_user, recover))
    }
    .await;
    let (actor, rooms, slot, gate, user, end_user, recover) = match admitted {
        Ok(a) => a,
        Err(e) => {
            Box::pin(hub.rejected(&e, super::error::status(&e).as_u16(), &remote)).await;
            return Err(e.into_response());
        }
    };
    // An element stored before the operator's ceiling is held to it too.
    let max = spec
        .connection
        .max_message_bytes
        .min(app.runtime().budget().limits.message_bytes);
    // Clients may always ask for elementd.v1 (a browser drops a handshake
    // whose offered protocol the server did not pick); without history
    // its publications come as they are, with no envelope or offset.
    let mut protocols = spec.protocols.clone();
    protocols.push(crate::runtime::V1.to_string());
    let protocol = pick_protocol(headers, protocols);
    let opened = hub
        .open(
            slot,
            remote,
            protocol.clone(),
            rooms,
            actor,
            user,
            end_user,
            gate,
            recover,
        )
        .await;
    Ok(Admitted {
        hub,
        opened,
        protocol,
        max,
    })
}

/// The first of ours the client offered (as axum picks it).
fn pick_protocol(headers: &HeaderMap, ours: Vec<String>) -> Option<String> {
    let offered: Vec<&[u8]> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    ours.into_iter().find(|p| offered.contains(&p.as_bytes()))
}

fn asks_for_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// RFC 6455 §4.1: the key is a base64-encoded 16-byte nonce.
pub(super) fn key_is_valid(headers: &HeaderMap) -> bool {
    use base64::Engine;
    // Decoded onto the stack: a 24-character key needs 18 bytes of room.
    let mut room = [0u8; 18];
    headers
        .get(axum::http::header::SEC_WEBSOCKET_KEY)
        .and_then(|k| {
            base64::engine::general_purpose::STANDARD
                .decode_slice(k.as_bytes(), &mut room)
                .ok()
        })
        .is_some_and(|n| n == 16)
}

fn bad_handshake(why: String) -> Error {
    Error::bad_request(
        ErrorCode::InvalidHandshake,
        format!("bad WebSocket handshake: {why}"),
    )
}

/// Attached auth-policies and rate-limits at upgrade (those keyed by
/// address were charged before auth); answers the gate that holds inbound
/// messages to every attached rate limit.
fn attached_policies(
    app: &crate::service::App,
    mut mods: Vec<crate::modifiers::ActiveModifier>,
    charged: Vec<crate::modifiers::ActiveModifier>,
    asker: Asker<'_>,
) -> Result<Option<MessageGate>> {
    app.policy().enforce(&mods, &asker)?;
    mods.extend(charged);
    Ok(MessageGate::new(
        app.rate_limits().clone(),
        &mods,
        asker.token_id.map(str::to_string),
        asker.ip,
        asker.element.unwrap_or_default().to_string(),
    ))
}

/// The query the connect hook is told: without the token parameter.
fn hook_query(spec: &WsSpec, params: &[(String, String)]) -> serde_json::Value {
    let mut q = serde_json::Map::new();
    for (k, v) in params {
        if *k != spec.auth.query_param && k != "auth" {
            q.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
    serde_json::Value::Object(q)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the connect hook allowed: its user, rooms and info replace the
/// client's, each held to the bounds a token's claims are.
fn named_by_hook(
    spec: &WsSpec,
    user: Option<String>,
    rooms: Vec<String>,
    end_user: Option<EndUser>,
    new_user: Option<String>,
    new_rooms: Option<Vec<String>>,
    info: Option<serde_json::Value>,
) -> Result<(Option<String>, Vec<String>, Option<EndUser>)> {
    let failed = |m: String| {
        Error::new(
            crate::error::Kind::Unavailable,
            crate::error::Class::Limit,
            ErrorCode::WsHookFailed,
            format!("the connect hook answered {m}"),
        )
        .retry_after(1)
    };
    let rooms = match new_rooms {
        None => rooms,
        Some(r) => {
            if !r.is_empty() && !spec.rooms.enabled {
                return Err(failed("rooms, but this element has rooms off".into()));
            }
            if r.len() > spec.rooms.max_rooms_per_connection {
                return Err(failed(format!(
                    "{} rooms; at most {} per connection",
                    r.len(),
                    spec.rooms.max_rooms_per_connection
                )));
            }
            for room in &r {
                crate::runtime::check_room(room)
                    .map_err(|e| failed(format!("a bad room: {}", e.message)))?;
            }
            let mut r = r;
            r.sort();
            r.dedup();
            r
        }
    };
    let user = new_user.or(user);
    let end_user = match (end_user, info) {
        (e, None) => e,
        (Some(mut e), Some(i)) => {
            e.info = Some(std::sync::Arc::new(i));
            Some(e)
        }
        (None, Some(i)) => Some(EndUser {
            sub: user.clone().unwrap_or_default(),
            exp: 0,
            rooms: None,
            info: Some(std::sync::Arc::new(i)),
        }),
    };
    Ok((user, rooms, end_user))
}

/// The query's pairs in order, `+` and `%XX` decoded: pairs of strings
/// cannot fail to parse, so no error path and no serde.
pub fn query_params(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Element-level auth per `spec.auth`: in `token` mode a platform token
/// with at least viewer on the circle, from the bearer header or the
/// query parameter `spec.auth.query_param`. Answers the actor and, when
/// a token was given, its principal (attached auth-policies look at it).
///
/// In `jwt` mode (with the hub that verifies) an end user's token instead:
/// 401 `WS_TOKEN_INVALID` with its reason, or the verified user.
pub async fn authenticate(
    app: &crate::service::App,
    spec: &WsSpec,
    hub: Option<&crate::runtime::Hub>,
    circle_id: &crate::ids::CircleId,
    headers: &HeaderMap,
    params: &[(String, String)],
    peer: Option<std::net::IpAddr>,
) -> Result<(Actor, Option<Principal>, Option<EndUser>)> {
    if let (AuthMode::Jwt, Some(hub)) = (spec.auth.mode, hub) {
        // Boxed, as below: a handshake's future holds only what every
        // handshake awaits; the spawn copies all of it.
        let (actor, user) = Box::pin(end_user(hub, spec, headers, params)).await?;
        return Ok((actor, None, Some(user)));
    }
    if spec.auth.mode == AuthMode::None {
        let principal = match token_from_headers(headers)? {
            Some(secret) => Some(Box::pin(principal_for(app, &secret, peer)).await?)
                .filter(|p| p.sees_id(circle_id)),
            None => None,
        };
        let actor = principal
            .as_ref()
            .map(Principal::actor)
            .unwrap_or_else(Actor::external);
        return Ok((actor, principal, None));
    }
    let from_query = params
        .iter()
        .find(|(k, _)| *k == spec.auth.query_param)
        .map(|(_, v)| v.clone());
    let secret = match (token_from_headers(headers)?, from_query) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(Error::unauthorized(format!(
                "this endpoint needs a token: 'Authorization: Bearer <token>' or ?{}=<token>",
                spec.auth.query_param
            )))
        }
    };
    let p = Box::pin(principal_for(app, &secret, peer)).await?;
    if !p.sees_id(circle_id) {
        // As for an unknown path: another circle's token learns nothing.
        return Err(endpoint_not_found());
    }
    p.require(Level::Read)?;
    Ok((p.actor(), Some(p), None))
}

/// The end user of a `jwt` endpoint: the token from the bearer header or
/// the query parameter (where its remaining life is capped).
async fn end_user(
    hub: &crate::runtime::Hub,
    spec: &WsSpec,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(Actor, EndUser)> {
    let from_query = params
        .iter()
        .find(|(k, _)| *k == spec.auth.query_param)
        .map(|(_, v)| v.clone());
    let bearer = token_from_headers(headers).map_err(|e| token_invalid("malformed", e.message))?;
    let (token, in_query) = match (bearer, from_query) {
        (Some(t), _) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => {
            return Err(token_invalid(
                "missing",
                format!(
                    "this endpoint needs the application's token: 'Authorization: Bearer <jwt>' or ?{}=<jwt>",
                    spec.auth.query_param
                ),
            ))
        }
    };
    let user = hub
        .verify_token(&token, in_query)
        .await
        .map_err(|r| token_invalid(r.reason, r.message))?;
    Ok((Actor::external(), user))
}

fn token_invalid(reason: &'static str, message: impl Into<String>) -> Error {
    Error::unauthorized(message)
        .with_code(ErrorCode::WsTokenInvalid)
        .with_reason(reason)
}
