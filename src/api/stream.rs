//! Server-Sent Events of a circle or one element (SPEC §7). A client that
//! sends `Last-Event-ID` first gets what it missed from the activity table,
//! then the live stream, without duplicates.

use super::auth::Principal;
use super::pipeline::{path_params, resolve};
use crate::app::SharedApp;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::store::activity::ActivityQuery;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const REPLAY_MAX: i64 = 10_000;

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.clone())
        .event(e.kind.clone())
        .data(e.to_json().to_string())
}

pub async fn circle_events(
    State(app): State<SharedApp>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    open(app, principal, path_params(path)?, None, headers).await
}

pub async fn element_events(
    State(app): State<SharedApp>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (circle, slug) = path_params(path)?;
    open(app, principal, circle, Some(slug), headers).await
}

async fn open(
    app: SharedApp,
    principal: Principal,
    circle: String,
    slug: Option<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (c, el) = resolve(&app, Some(&principal), &circle, slug.as_deref()).await?;
    principal.require(crate::types::Level::Read)?;
    // An empty Last-Event-ID is what EventSource sends before any event.
    let given = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{0}").trim().to_string())
        .filter(|s| !s.is_empty());
    let last_id = match given {
        None => None,
        Some(s) => {
            uuid::Uuid::parse_str(&s).map_err(|_| {
                Error::bad_request("INVALID_LAST_EVENT_ID", "Last-Event-ID is not an event id")
            })?;
            Some(s)
        }
    };
    let circle = c.slug.clone();
    let element_id = slug.is_some().then(|| el.id.clone());
    // Subscribe before reading the backlog so nothing falls between them.
    let (mut live, listening) = app.bus.listen();
    let mut replay = Vec::new();
    if let Some(after) = &last_id {
        app.bus.flush().await;
        replay = app
            .db
            .activity(&ActivityQuery {
                circle: &circle,
                element_id: element_id.as_deref(),
                kind_prefix: None,
                before: None,
                after: Some(after),
                limit: REPLAY_MAX,
            })
            .await?;
    }
    let mut shutdown = app.shutdown.clone();
    let stream = async_stream::stream! {
        let _listening = listening;
        let seen: HashSet<String> = replay.iter().map(|e| e.id.clone()).collect();
        for e in &replay {
            yield Ok(sse(e));
        }
        loop {
            let next: Result<Arc<Event>, RecvError> = tokio::select! {
                r = live.recv() => r,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match next {
                Ok(e) => {
                    if e.circle != circle
                        || element_id.as_ref().is_some_and(|id| e.element_id.as_ref() != Some(id))
                        || seen.contains(&e.id)
                    {
                        continue;
                    }
                    yield Ok(sse(&e));
                }
                // Too slow to keep up: end, so the client resumes from the
                // activity table with Last-Event-ID instead of missing events.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
