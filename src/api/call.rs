//! What an op handler gets ([`Call`]) and answers ([`Reply`]); the op
//! pipeline builds the one and sends the other.

use super::input::{parse_json, parse_query};
use crate::error::{Error, Result};
use crate::model::Element;
use crate::service::ctx::OpCtx;
use crate::service::gate;
use crate::service::principal::Principal;
use crate::service::App;
use crate::types::ElementType;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Everything a handler gets: the resolved element, its circle, its type,
/// the raw query and body, and the invocation context.
pub struct Call {
    pub ctx: OpCtx,
    pub element: Arc<Element>,
    pub circle: Arc<Element>,
    pub ty: Arc<ElementType>,
    pub principal: Option<Principal>,
    pub query: String,
    pub body: Bytes,
    pub headers: HeaderMap,
    /// The client's address.
    pub peer: Option<std::net::IpAddr>,
}

impl Call {
    /// A copy of the element, for a write that takes it by value.
    pub fn element_owned(&self) -> Element {
        Element::clone(&self.element)
    }
    /// Parses the JSON body; an empty body reads as `{}`.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T> {
        parse_json(&self.body)
    }
    pub fn query<T: DeserializeOwned>(&self) -> Result<T> {
        parse_query(&self.query)
    }
    /// The caller as the policy gate sees it.
    pub fn caller(&self) -> gate::Caller<'_> {
        gate::Caller {
            principal: self.principal.as_ref(),
            origin: origin_of(&self.headers),
            peer: self.peer,
        }
    }
    /// The children of a circle op that the caller may read; the rest are
    /// left out, as if the caller listed them one by one.
    /// [`Self::readable`] over borrowed rows (a cached listing).
    pub async fn readable_refs<'e>(
        &self,
        app: &App,
        rows: &'e [Element],
    ) -> Result<Vec<&'e Element>> {
        let mut out = Vec::with_capacity(rows.len());
        for el in rows {
            if el.id == self.element.id || gate::may_read(app, self.caller(), el).await? {
                out.push(el);
            }
        }
        Ok(out)
    }
    pub async fn readable(&self, app: &App, rows: Vec<Element>) -> Result<Vec<Element>> {
        let mut out = Vec::with_capacity(rows.len());
        for el in rows {
            if el.id == self.element.id || gate::may_read(app, self.caller(), &el).await? {
                out.push(el);
            }
        }
        Ok(out)
    }
    /// 403 unless the caller holds `need`: some inputs ask more than the
    /// op's level (promoting to live asks admin of a member op).
    pub fn require(&self, need: crate::model::Role, what: &str) -> Result<()> {
        if self.principal.as_ref().is_some_and(|p| p.role >= need) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "{what} needs the {} role",
            need.as_str()
        )))
    }
    /// 403 unless the caller may release to live (admin, or a token with
    /// the `deploy` scope).
    pub fn require_release(&self, what: &str) -> Result<()> {
        if self.principal.as_ref().is_some_and(|p| p.may_release()) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "{what} needs the admin role or the deploy scope"
        )))
    }
}

/// What a handler answers with: JSON, or bytes to download.
pub enum Payload {
    Json(Value),
    /// JSON written out already (a listing serialized straight from rows,
    /// or an answer kept).
    Serialized(bytes::Bytes),
    Download {
        content_type: &'static str,
        filename: String,
        bytes: Vec<u8>,
    },
}

/// A handler's answer: status and payload.
pub type Reply = (StatusCode, Payload);

pub fn ok(v: Value) -> Result<Reply> {
    Ok((StatusCode::OK, Payload::Json(v)))
}

impl IntoResponse for Payload {
    fn into_response(self) -> Response {
        match self {
            Payload::Json(v) => Json(v).into_response(),
            Payload::Serialized(bytes) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            Payload::Download {
                content_type,
                filename,
                bytes,
            } => (
                [
                    (axum::http::header::CONTENT_TYPE, content_type.to_string()),
                    (
                        axum::http::header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                bytes,
            )
                .into_response(),
        }
    }
}

/// The `Origin` a browser sent, if any.
pub fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers.get("origin").and_then(|o| o.to_str().ok())
}
