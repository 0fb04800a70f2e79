//! The one error type. Every failure that reaches a client is an [`Error`],
//! and `IntoResponse` below is the only place it becomes HTTP.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Validation,
    Limit,
    Auth,
    NotFound,
    Conflict,
    Precondition,
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub status: StatusCode,
    pub class: Class,
    pub code: Cow<'static, str>,
    pub message: String,
    pub retryable: bool,
    pub details: Vec<String>,
    pub retry_after: Option<u64>,
    /// The methods a 405 answer names in its `Allow` header.
    pub allow: Option<Cow<'static, str>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Client input as an error message quotes it: escaped, and cut at 80
/// characters so a huge value is not echoed back whole.
pub fn shown(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

impl Error {
    pub fn new(
        status: StatusCode,
        class: Class,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            status,
            class,
            code: code.into(),
            message: message.into(),
            retryable: false,
            details: Vec::new(),
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Class::Validation, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Class::Validation,
            code,
            message,
        )
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            Class::Auth,
            "UNAUTHORIZED",
            message,
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Class::Auth, "FORBIDDEN", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Class::NotFound, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Class::Conflict, code, message)
    }
    pub fn precondition(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            Class::Precondition,
            code,
            message,
        )
    }
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, Class::Limit, code, message)
    }
    pub fn method_not_allowed(
        allow: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Class::Validation,
            "METHOD_NOT_ALLOWED",
            message,
        );
        e.allow = Some(allow.into());
        e
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            Class::Internal,
            "NOT_IMPLEMENTED",
            message,
        )
    }
    /// An internal failure: the cause is logged, never shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Class::Internal,
            "INTERNAL",
            "internal error; see the server log",
        )
    }
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// The JSON envelope of SPEC §3.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({
            "code": self.code,
            "class": self.class,
            "retryable": self.retryable,
            "message": self.message,
        });
        if !self.details.is_empty() {
            err["details"] = serde_json::json!(self.details);
        }
        serde_json::json!({ "error": err })
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return Error::conflict("ALREADY_EXISTS", "an element with that slug exists");
            }
        }
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Class::Limit,
                "DATABASE_BUSY",
                "the database is busy; try again",
            )
            .retryable();
        }
        Error::internal(format!("database: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::internal(format!("json: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = %self.code, status = self.status.as_u16(), "request failed");
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(v) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        // A 413 or 408 leaves request bytes unread: the connection cannot
        // carry another request, and the client must know not to reuse it.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"elementd\""),
            );
        }
        resp
    }
}
