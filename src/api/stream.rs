//! Server-Sent Events of a circle or one element. A client that
//! sends `Last-Event-ID` first gets what it missed from the activity table,
//! then the live stream, without duplicates.

use super::input::path_params;
use super::pipeline::resolve;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Event;
use crate::service::principal::Principal;
use crate::service::SharedApp;
use crate::store::activity::ActivityQuery;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Events read from the activity table per query while replaying: memory
/// stays flat however far back `Last-Event-ID` points.
const REPLAY_PAGE: i64 = 256;
/// Live events created this long before the stream subscribed may also
/// be in the replay (written in a transaction, published after commit).
const OVERLAP_MS: i64 = 10_000;
/// At most this many replayed ids are kept to drop such duplicates.
const OVERLAP_IDS: usize = 4096;

fn sse(e: &Event, admin: bool) -> SseEvent {
    SseEvent::default()
        .id(e.id.clone())
        .event(e.kind.clone())
        .data(e.text_for(admin))
}

pub async fn circle_events(
    State(app): State<SharedApp>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let at = (path_params(path)?, None);
    open(app, principal, at, headers, Some(peer.ip())).await
}

pub async fn element_events(
    State(app): State<SharedApp>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (circle, slug) = path_params(path)?;
    open(
        app,
        principal,
        (circle, Some(slug)),
        headers,
        Some(peer.ip()),
    )
    .await
}

/// `Last-Event-ID`, when it names an event; an empty one is what
/// EventSource sends before any event.
fn last_event_id(headers: &HeaderMap) -> Result<Option<String>> {
    let given = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{0}").trim().to_string())
        .filter(|s| !s.is_empty());
    match given {
        None => Ok(None),
        Some(s) => {
            uuid::Uuid::parse_str(&s).map_err(|_| {
                Error::bad_request(
                    ErrorCode::InvalidLastEventId,
                    "Last-Event-ID is not an event id",
                )
            })?;
            Ok(Some(s))
        }
    }
}

async fn open(
    app: SharedApp,
    principal: Principal,
    (circle, slug): (String, Option<String>),
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (c, el) = resolve(&app, Some(&principal), &circle, slug.as_deref()).await?;
    // The stream passes the gate its element's ops pass (a circle's
    // stream, the circle's), and counts against its rate limits.
    let caller = crate::service::gate::Caller {
        principal: Some(&principal),
        origin: super::call::origin_of(&headers),
        peer,
    };
    let want = crate::service::gate::Want {
        op: "events",
        level: crate::types::Level::Read,
        charge: true,
    };
    crate::service::gate::pass(&app, caller, &el, want).await?;
    let last_id = last_event_id(&headers)?;
    let held = app
        .streams()
        .open_or_wait(
            &principal.token_id,
            &c.circle_id,
            app.config().limits.max_streams_per_token,
            app.config().limits.max_streams_per_circle,
            crate::service::streams::WAIT_FOR_PLACE,
        )
        .await?;
    let circle_id = c.circle_id.clone();
    let element_id = slug.is_some().then(|| el.id.clone());
    // Subscribe before reading the backlog so nothing falls between them.
    let (mut live, listening) = app.records().listen();
    let subscribed_at = crate::model::now_ms();
    if last_id.is_some() {
        app.records().flush().await;
    }
    let mut shutdown = app.shutdown();
    let mut readable = crate::service::gate::Readable::default();
    let admin = principal.role >= crate::model::Role::Admin;
    let stream = async_stream::stream! {
        let _held = held;
        let _listening = listening;
        // Replayed ids that the live channel may carry again.
        let mut overlap: HashSet<String> = HashSet::new();
        let mut cursor = last_id.clone();
        while let Some(after) = cursor.clone() {
            let page = app.elements().activity(&ActivityQuery {
                    circle_id: &circle_id,
                    element_id: element_id.as_ref(),
                    kind_prefix: None,
                    before: None,
                    after: Some(&after),
                    limit: REPLAY_PAGE,
                })
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "event replay failed; the stream ends");
                    return;
                }
            };
            let full = page.len() as i64 == REPLAY_PAGE;
            for e in &page {
                if e.at >= subscribed_at - OVERLAP_MS && overlap.len() < OVERLAP_IDS {
                    overlap.insert(e.id.clone());
                }
                let caller = crate::service::gate::Caller { principal: Some(&principal), origin: crate::api::call::origin_of(&headers), peer };
                if readable.check(&app, caller, element_id.is_none(), e).await {
                    yield Ok(sse(e, admin));
                }
            }
            cursor = page.last().map(|e| e.id.clone()).filter(|_| full);
        }
        loop {
            let next: Result<Arc<Event>, RecvError> = tokio::select! {
                r = live.recv() => r,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match next {
                Ok(e) => {
                    let theirs = e.circle_id == circle_id
                        && element_id.as_ref().is_none_or(|id| e.element_id.as_ref() == Some(id));
                    let seen = overlap.contains(&e.id)
                        || last_id.as_ref().is_some_and(|l| e.id <= *l);
                    let caller = crate::service::gate::Caller { principal: Some(&principal), origin: crate::api::call::origin_of(&headers), peer };
                    if theirs && !seen
                        && readable.check(&app, caller, element_id.is_none(), &e).await
                    {
                        yield Ok(sse(&e, admin));
                    }
                }
                // Too slow to keep up: end, so the client resumes from the
                // activity table with Last-Event-ID instead of missing events.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
