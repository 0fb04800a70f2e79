//! HTTP: routes, middleware and the handlers that are not element ops.

mod addr_text;
pub mod admission;
pub mod auth;
pub mod call;
pub mod console;
mod demo_backend;
mod demo_token;
mod direct;
pub mod error;
pub mod git_http;
pub mod input;
pub mod listen;
pub mod openapi;
pub mod ops;
pub mod pipeline;
pub mod proxies;
pub mod stream;
pub mod upgrade;
mod upgrade_params;
mod ws_edge;

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::service::ctx::OpCtx;
use crate::service::principal::Principal;
use crate::service::SharedApp;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;
use std::any::Any;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub fn router(app: SharedApp) -> Router {
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/git/{circle}/{repo}/info/refs",
            get(crate::api::git_http::info_refs),
        )
        .route(
            "/git/{circle}/{repo}/{service}",
            any(crate::api::git_http::rpc),
        )
        .route("/metrics", get(metrics_public))
        .route("/ws/{circle}", get(upgrade::at_root))
        .route("/ws/{circle}/", get(upgrade::at_root))
        .route("/ws/{circle}/{*path}", get(upgrade::at_path))
        .merge(console::routes())
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/types", get(list_types))
        .route("/api/types/{type}", get(get_type))
        .route("/api/ops/{*op}", any(platform_op))
        .route("/api/{circle}", get(pipeline::get_circle))
        .route("/api/{circle}/ops/events", get(stream::circle_events))
        .route("/api/{circle}/ops/{*op}", any(pipeline::circle_op))
        .route("/api/{circle}/{slug}", get(pipeline::get_element))
        .route(
            "/api/{circle}/{slug}/ops/events",
            get(stream::element_events),
        )
        .route("/api/{circle}/{slug}/ops/{*op}", any(pipeline::element_op));
    if app.config().demo {
        routes = routes
            .merge(console::demo_routes())
            .route("/demo/token", get(demo_token::token))
            .merge(demo_backend::routes(
                &app.config().demo_backend_key_file(),
                app.config().limits.body_timeout,
            ));
    }
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    with_layers(routes).with_state(app)
}

/// The internal listener (`--internal-listen`): probes and the metrics
/// scrape without a token, for the operator's network only.
pub fn internal_router(app: SharedApp) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    with_layers(routes).with_state(app)
}

/// Middleware every route gets: a span per request, and a panic in a
/// handler answered as a logged 500 envelope.
fn with_layers<S: Clone + Send + Sync + 'static>(r: Router<S>) -> Router<S> {
    r.layer(CatchPanicLayer::custom(panic_response)).layer(
        TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<Body>| {
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
        }),
    )
}

async fn not_found() -> Error {
    Error::not_found(
        ErrorCode::RouteNotFound,
        "no such endpoint; see GET /api/types and README.md",
    )
}

async fn method_not_allowed() -> Error {
    // Every route with a fixed method is GET (HEAD included).
    Error::method_not_allowed("GET, HEAD", "this endpoint takes GET")
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    Error::internal(format!("handler panicked: {detail}")).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(app): State<SharedApp>) -> Response {
    let (ready, body) = app.node().readiness().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `/metrics` on the public port: its series name every circle and slug,
/// so only a platform token (circle `*`, any role) may read them.
async fn metrics_public(state: State<SharedApp>, principal: Principal) -> Result<Response> {
    if !principal.is_platform() {
        return Err(Error::forbidden(
            "/metrics needs a platform token (circle '*'); scrapers can use the internal listener",
        ));
    }
    Ok(metrics(state).await)
}

/// Prometheus text format: the websocket metrics of every live element,
/// and the node's queued bytes.
async fn metrics(State(app): State<SharedApp>) -> Response {
    let text = app.node().metrics_text();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// JSON bytes built once, as a response.
fn json_bytes(body: bytes::Bytes) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn list_types(State(app): State<SharedApp>) -> Response {
    json_bytes(app.types().listing())
}

async fn openapi_json(State(app): State<SharedApp>) -> Response {
    json_bytes(openapi::document(app.types()))
}

async fn get_type(
    State(app): State<SharedApp>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let name = input::path_params(path)?;
    let body = app.types().json_of(&name).ok_or_else(|| {
        Error::not_found(
            ErrorCode::TypeNotFound,
            format!(
                "no type '{}'; see GET /api/types",
                crate::error::shown(name)
            ),
        )
    })?;
    Ok(json_bytes(body))
}

/// `/api/ops/{op}`: platform-level `create` (circles) and `list`.
async fn platform_op(
    State(app): State<SharedApp>,
    principal: Principal,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response> {
    let op = input::path_params(path)?;
    match (op.as_str(), &method) {
        ("list", &Method::GET | &Method::HEAD) => Ok(Json(
            ops::list_circles(&app, &principal, q.as_deref().unwrap_or("")).await?,
        )
        .into_response()),
        // Lets a client (the console) show only what the token may do.
        ("whoami", &Method::GET | &Method::HEAD) => Ok(Json(json!({
            "token_id": principal.token_id,
            "circle": principal.reach.label(),
            "role": principal.role.as_str(),
            // An api-token's scopes; a CLI token has none (its role rules).
            "scopes": principal.scopes.map(|s| s.names()),
            "token_type": if principal.api_key { "api-key" } else { "bearer" },
        }))
        .into_response()),
        ("create", &Method::POST) => {
            if !principal.is_platform_admin() {
                return Err(Error::forbidden(
                    "creating a circle needs a platform admin token",
                ));
            }
            let bytes = input::read_body(
                &headers,
                body,
                crate::config::BODY_LIMIT,
                app.config().limits.body_timeout,
            )
            .await?;
            let req: ops::CreateBody = input::parse_json(&bytes)?;
            let mut new = req.into_new()?;
            let new_id = crate::ids::ElementId::generate();
            new.id = Some(new_id.clone());
            let circle_id = crate::ids::CircleId::of_circle(&new_id);
            let ctx = OpCtx::new(principal.actor(), "create", None);
            // The circle's own stream sees its creation, as any op.
            let circle = new.slug.as_str().to_string();
            app.records()
                .emit(ctx.circle_event(
                    &circle,
                    &circle_id,
                    EventKind::OpStarted,
                    json!({"method": "POST"}),
                ))
                .await;
            let result = app.elements().create(&ctx, None, new).await;
            let terminal = match &result {
                Ok(_) => ctx.circle_event(
                    &circle,
                    &circle_id,
                    EventKind::OpCompleted,
                    json!({"status": 201}),
                ),
                Err(e) => ctx.circle_event(
                    &circle,
                    &circle_id,
                    EventKind::OpFailed,
                    json!({"status": error::status(e).as_u16(), "code": e.code}),
                ),
            };
            app.records().emit(terminal).await;
            let applied = result?;
            let body = ops::with_warnings(&app, &applied.element, &applied.warnings);
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        ("list" | "whoami", _) => Err(Error::method_not_allowed(
            "GET, HEAD",
            "this platform op takes GET",
        )),
        ("create", _) => Err(Error::method_not_allowed(
            "POST",
            "platform op 'create' takes POST",
        )),
        _ => Err(Error::not_found(
            ErrorCode::OpNotFound,
            format!(
                "no platform op '{}'; platform ops are create, list and whoami",
                crate::error::shown(op)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_envelope() {
        let r: Router = with_layers(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("boom");
                }
                ""
            }),
        ));
        let resp = r
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "INTERNAL");
        assert_eq!(v["error"]["class"], "internal");
        assert!(
            !v["error"]["message"].as_str().unwrap().contains("boom"),
            "detail stays in the log"
        );
    }
}
