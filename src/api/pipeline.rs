//! The op pipeline: every element op goes through `invoke`, which resolves
//! the element, finds the op in its type's table, checks auth and state,
//! emits `started`, runs the handler, records the run and emits exactly
//! one terminal event.

use super::auth::Caller;
use super::ops;
use crate::error::{Error, Kind, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model;
use crate::model::now_ms;
use crate::model::Element;
use crate::model::Slug;
use crate::model::{Actor, Run};
use crate::service::ctx::{Keep, OpCtx, Watch};
use crate::service::gate;
use crate::service::principal::Principal;
use crate::service::{App, SharedApp};
use crate::types::{ElementType, Level, OpDef, OpRef};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::call::Call;
use super::input::{check_query_names, path_params, read_body};
use crate::config::BODY_LIMIT;

fn trace_id(headers: &HeaderMap) -> Option<String> {
    let from = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(tp) = from("traceparent") {
        if let Some(t) = tp.split('-').nth(1).filter(|t| t.len() == 32) {
            return Some(t.to_string());
        }
    }
    from("x-request-id")
        .filter(|s| s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
}

/// Resolves the circle and (optionally) the element for a caller, with
/// the contract's answers: no token 401, another circle 404.
pub async fn resolve(
    app: &App,
    principal: Option<&Principal>,
    circle: &str,
    slug: Option<&str>,
) -> Result<(Arc<Element>, Arc<Element>)> {
    let circle = Slug::parse(circle)?;
    let slug = slug.map(Slug::parse).transpose()?;
    let hidden = || Error::not_found(ErrorCode::NotFound, "no such circle or element");
    if principal.is_some_and(|p| !p.can_see(circle.as_str())) {
        return Err(hidden());
    }
    let c = app
        .elements()
        .circle_shared(circle.as_str())
        .await?
        .ok_or_else(hidden)?;
    if principal.is_some_and(|p| !p.sees(&c)) {
        return Err(hidden());
    }
    let el = match slug {
        None => c.clone(),
        Some(s) => app
            .elements()
            .shared(&c.circle_id, s.as_str())
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    ErrorCode::ElementNotFound,
                    format!("no element '{}' in circle '{}'", s.as_str(), c.slug),
                )
            })?,
    };
    Ok((c, el))
}

fn find_op<'t>(ty: &'t ElementType, path: &str, method: &Method) -> Result<&'t OpDef> {
    let ops = ty.ops_at(path);
    if ops.is_empty() {
        return Err(Error::not_found(
            ErrorCode::OpNotFound,
            format!(
                "type '{}' has no op '{}'",
                ty.name(),
                crate::error::shown(path)
            ),
        ));
    }
    // HEAD is GET without a body (hyper drops it).
    let asked = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    if let Some(op) = ops.iter().find(|o| o.method.eq_ignore_ascii_case(asked)) {
        return Ok(op);
    }
    let allow: Vec<String> = ops
        .iter()
        .map(|o| match o.method.to_ascii_uppercase() {
            m if m == "GET" => "GET, HEAD".to_string(),
            m => m,
        })
        .collect();
    let takes: Vec<&str> = ops.iter().map(|o| o.method.as_str()).collect();
    Err(Error::method_not_allowed(
        allow.join(", "),
        format!(
            "op '{}' takes {}, not {}",
            ops[0].name,
            takes.join(" or "),
            method
        ),
    ))
}

/// The parts of a request an op uses.
pub struct OpRequest {
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    body: Body,
}

impl<S: Send + Sync> FromRequest<S> for OpRequest {
    type Rejection = std::convert::Infallible;
    async fn from_request(req: Request, _: &S) -> std::result::Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        Ok(OpRequest {
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            method: parts.method,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
        })
    }
}

/// `/api/{circle}/ops/{*op}`
pub async fn circle_op(
    State(app): State<SharedApp>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    req: OpRequest,
) -> Response {
    match path_params(path) {
        Ok((circle, op)) => invoke(&app, caller, &circle, None, &op, req).await,
        Err(e) => e.into_response(),
    }
}

/// `/api/{circle}/{slug}/ops/{*op}`
pub async fn element_op(
    State(app): State<SharedApp>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
    req: OpRequest,
) -> Response {
    match path_params(path) {
        Ok((circle, slug, op)) => invoke(&app, caller, &circle, Some(&slug), &op, req).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /api/{circle}` and `GET /api/{circle}/{slug}`: the element itself.
pub async fn get_circle(
    State(app): State<SharedApp>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: OpRequest,
) -> Response {
    match path_params(path) {
        Ok(circle) => invoke(&app, caller, &circle, None, "get", req).await,
        Err(e) => e.into_response(),
    }
}

pub async fn get_element(
    State(app): State<SharedApp>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    req: OpRequest,
) -> Response {
    match path_params(path) {
        Ok((circle, slug)) => invoke(&app, caller, &circle, Some(&slug), "get", req).await,
        Err(e) => e.into_response(),
    }
}

/// The pipeline, boxed: axum moves a handler's future through its layers
/// several times before boxing it, and inline this one made each move
/// kilobytes long.
fn invoke<'a>(
    app: &'a SharedApp,
    caller: Caller,
    circle: &'a str,
    slug: Option<&'a str>,
    op_path: &'a str,
    req: OpRequest,
) -> futures::future::BoxFuture<'a, Response> {
    Box::pin(prepare_and_run(app, caller, circle, slug, op_path, req))
}

async fn prepare_and_run(
    app: &SharedApp,
    Caller(principal): Caller,
    circle: &str,
    slug: Option<&str>,
    op_path: &str,
    req: OpRequest,
) -> Response {
    let caller = gate::Caller {
        principal: principal.as_ref(),
        origin: super::call::origin_of(&req.headers),
        peer: req.peer.map(|p| p.ip()),
    };
    let prepared = prepare(app, &req.method, caller, circle, slug, op_path).await;
    let (circle_el, element, ty, op) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let actor = principal
        .as_ref()
        .map(Principal::actor)
        .unwrap_or_else(Actor::external);
    let ctx = OpCtx::new(actor, &op.name, trace_id(&req.headers));
    let span = tracing::info_span!(
        "op",
        circle = %circle_el.slug,
        slug = %element.slug,
        op = %op.name,
        invocation_id = %ctx.invocation_id,
        trace_id = %ctx.trace_id,
    );
    let call = Invocation {
        method: req.method,
        circle_el,
        element,
        ty,
        op,
        principal,
        query: req.query,
        headers: req.headers,
        body: req.body,
        peer: req.peer,
    };
    run(app, ctx, call).instrument(span).await
}

/// A resolved, authorized op call before it runs.
struct Invocation {
    method: Method,
    circle_el: Arc<Element>,
    element: Arc<Element>,
    ty: Arc<ElementType>,
    op: OpRef,
    principal: Option<Principal>,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    peer: Option<SocketAddr>,
}

/// Runs an invocation: `started`, the handler, the run record, and one
/// terminal event.
async fn run(app: &SharedApp, mut ctx: OpCtx, inv: Invocation) -> Response {
    // How the invocation is kept: writes in full; reads as live events and
    // runs folded per minute; anonymous traffic sampled and folded per
    // second, so no one without a token makes the server write a row
    // per request.
    let keep = Keeping::of(inv.principal.is_none(), inv.op.auth);
    keep.emit(app, || {
        ctx.event(
            &inv.element,
            EventKind::OpStarted,
            json!({"method": inv.method.as_str()}),
        )
    })
    .await;
    if !inv.op.long && inv.op.auth == Level::Read {
        return finish(app.clone(), ctx, inv, keep).await;
    }
    // A write runs to its end in a task of its own, so a caller who leaves
    // never cuts it between its parts, and its terminal event is always
    // told. A long op also watches for the caller leaving (dropping this
    // future fires the token) and stops at its next whole step.
    let cancel = CancellationToken::new();
    if inv.op.long {
        ctx.watch = Some(Arc::new(Watch::new(cancel.clone(), keep.keep())));
    }
    let _on_leave = cancel.drop_guard();
    let task = finish(app.clone(), ctx, inv, keep).in_current_span();
    match tokio::spawn(task).await {
        Ok(r) => r,
        Err(e) => Error::internal(format!("op task: {e}")).into_response(),
    }
}

/// The rest of an invocation after `started`.
async fn finish(app: SharedApp, ctx: OpCtx, inv: Invocation, keep: Keeping) -> Response {
    let Invocation {
        method: _,
        circle_el,
        element,
        ty,
        op,
        principal,
        query,
        headers,
        body,
        peer,
    } = inv;
    let app = &app;
    let started = Instant::now();
    let cost = ty.cost_of(&op);
    let limit = op.body_limit.unwrap_or(BODY_LIMIT);
    let result = async {
        check_query_names(&op, query.as_deref().unwrap_or(""))?;
        check_state(&element, &op)?;
        let body = read_body(&headers, body, limit, app.config().limits.body_timeout).await?;
        let call = Call {
            ctx: ctx.clone(),
            element: element.clone(),
            circle: circle_el,
            ty,
            principal,
            query: query.unwrap_or_default(),
            body,
            headers,
            peer: peer.map(|p| p.ip()),
        };
        ops::dispatch(app, &op, &call).await
    }
    .await;
    let duration_us = started.elapsed().as_micros() as i64;
    let (ok, code, status) = match &result {
        Ok((s, _)) => (true, None, *s),
        Err(e) => (false, Some(e.code.to_string()), super::error::status(e)),
    };
    let outcome = match (ok, status.is_server_error()) {
        (true, _) => crate::model::Outcome::Ok,
        (false, true) => crate::model::Outcome::Failed,
        (false, false) => crate::model::Outcome::Refused,
    };
    app.records()
        .record_run(Run {
            id: ctx.invocation_id.clone(),
            circle: element.circle().to_string(),
            element_id: element.id.clone(),
            op: op.name.clone(),
            outcome,
            error_code: code.clone(),
            duration_us,
            cost_micro_au: if ok { cost } else { 0 },
            at: now_ms(),
            count: 1,
            fold: keep.fold(),
        })
        .await;
    if let Err(e) = &result {
        tracing::info!(status = super::error::status(e).as_u16(), code = %e.code, "op failed");
    }
    let cancelled = matches!(&result, Err(e) if e.kind == Kind::Cancelled);
    keep.emit(app, || {
        let ms = duration_us as f64 / 1000.0;
        match (ok, cancelled, &ctx.watch) {
            (false, true, Some(w)) => {
                let (done, total) = w.position();
                ctx.event(
                    &element,
                    EventKind::OpCancelled,
                    json!({"status": status.as_u16(), "code": code, "done": done,
                           "total": total, "duration_ms": ms}),
                )
            }
            (true, ..) => ctx.event(
                &element,
                EventKind::OpCompleted,
                json!({"status": status.as_u16(), "duration_ms": ms}),
            ),
            (false, ..) => ctx.event(
                &element,
                EventKind::OpFailed,
                json!({"status": status.as_u16(), "code": code, "duration_ms": ms}),
            ),
        }
    })
    .await;
    match result {
        Ok((s, payload)) => (s, payload).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn prepare(
    app: &App,
    method: &Method,
    caller: gate::Caller<'_>,
    circle: &str,
    slug: Option<&str>,
    op_path: &str,
) -> Result<(Arc<Element>, Arc<Element>, Arc<ElementType>, OpRef)> {
    let principal = caller.principal;
    let unauthenticated = crate::service::principal::missing_token;
    // Without a token only a public op can be meant: refuse anything else
    // before the database is asked.
    if principal.is_none() && !app.types().is_public_op(op_path) {
        return Err(unauthenticated());
    }
    let resolved = resolve(app, principal, circle, slug).await;
    let (c, el) = match (principal, resolved) {
        (_, Ok(r)) => r,
        // Without a token, reveal nothing: not even whether it exists.
        (None, Err(e)) if e.kind == crate::error::Kind::NotFound => return Err(unauthenticated()),
        (_, Err(e)) => return Err(e),
    };
    let ty = app.types().get(&el.element_type)?.clone();
    let op = match find_op(&ty, op_path, method) {
        Ok(op) => OpRef::of(&ty, op).ok_or_else(|| Error::internal("op outside its type"))?,
        Err(_) if principal.is_none() => return Err(unauthenticated()),
        Err(e) => return Err(e),
    };
    if principal.is_none() && op.auth != Level::None {
        return Err(unauthenticated());
    }
    let want = gate::Want {
        op: &op.name,
        level: op.auth,
        charge: !op.unlimited,
    };
    gate::pass(app, caller, &el, want).await?;
    Ok((c, el, ty, op))
}

/// How an invocation's events and run are kept.
#[derive(Clone, Copy)]
enum Keeping {
    Full,
    Read,
    Anonymous,
}

impl Keeping {
    fn of(anonymous: bool, level: Level) -> Keeping {
        match (anonymous, level) {
            (true, _) => Keeping::Anonymous,
            (false, Level::Read) => Keeping::Read,
            _ => Keeping::Full,
        }
    }

    /// Emits the event `build` makes; a read nobody watches live builds
    /// none.
    async fn emit(self, app: &App, build: impl FnOnce() -> crate::model::Event) {
        match self {
            Keeping::Full => app.records().emit(build()).await,
            Keeping::Anonymous => app.records().emit_sampled(build()).await,
            Keeping::Read if app.records().has_live_listeners() => {
                app.records().publish_live(build())
            }
            Keeping::Read => {}
        }
    }

    /// How a long op's progress events are kept.
    fn keep(self) -> Keep {
        match self {
            Keeping::Full => Keep::Stored,
            Keeping::Read | Keeping::Anonymous => Keep::LiveOnly,
        }
    }

    fn fold(self) -> crate::model::Fold {
        match self {
            Keeping::Full => crate::model::Fold::No,
            Keeping::Read => crate::model::Fold::PerMinute,
            Keeping::Anonymous => crate::model::Fold::PerSecond,
        }
    }
}

/// Deleted elements answer reads only; disabled ones refuse invocations.
fn check_state(el: &Element, op: &OpDef) -> Result<()> {
    match el.state {
        model::State::Deleted if op.auth != Level::Read => Err(Error::conflict(
            ErrorCode::ElementDeleted,
            format!("'{}' is deleted", el.slug),
        )),
        model::State::Disabled if matches!(op.auth, Level::Execute | Level::None) => {
            Err(Error::conflict(
                ErrorCode::ElementDisabled,
                format!("'{}' is disabled; enable it first", el.slug),
            ))
        }
        _ => Ok(()),
    }
}
