//! The one error type. Every failure that reaches a client is an
//! [`Error`]: a kind (what went wrong), a class and a code, and
//! a message. Nothing here knows HTTP: `api::error` is the one place a
//! kind becomes a status code.

use crate::error_codes::ErrorCode;
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

/// What went wrong, in the domain's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Input that cannot be taken as it is.
    Invalid,
    /// A spec that fails its type's schema.
    Unprocessable,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials, not enough rights.
    Forbidden,
    NotFound,
    /// The op exists, but not with this method.
    WrongMethod,
    Conflict,
    Precondition,
    TooLarge,
    /// The input came too slowly.
    TooSlow,
    /// An encoding the server does not read.
    UnsupportedEncoding,
    /// The endpoint needs a WebSocket upgrade.
    UpgradeRequired,
    /// Over a rate or count limit.
    TooMany,
    /// Full for now (a limit of the server, not of the caller).
    Unavailable,
    /// Another system (a driven link's peer) failed.
    Upstream,
    /// The caller went away and a long op stopped between two steps.
    Cancelled,
    NotImplemented,
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub kind: Kind,
    pub class: Class,
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    pub details: Vec<String>,
    pub retry_after: Option<u64>,
    /// The methods a wrong-method answer names in its `Allow` header.
    pub allow: Option<Cow<'static, str>>,
    /// A machine-readable cause beside the code (a refused token's reason).
    pub reason: Option<&'static str>,
    /// What an element's owner chose to answer instead (a rate-limit's
    /// `response`): its status, code and headers.
    pub chosen: Option<Box<Chosen>>,
}

/// An answer an element's owner configured: the envelope keeps its shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub headers: Vec<(String, String)>,
    pub retry_after_ms: Option<u64>,
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
    pub fn new(kind: Kind, class: Class, code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            kind,
            class,
            code,
            message: message.into(),
            retryable: false,
            details: Vec::new(),
            retry_after: None,
            allow: None,
            reason: None,
            chosen: None,
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, Class::Validation, code, message)
    }
    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Unprocessable, Class::Validation, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            Kind::Unauthenticated,
            Class::Auth,
            ErrorCode::Unauthorized,
            message,
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, Class::Auth, ErrorCode::Forbidden, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, Class::NotFound, code, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, Class::Conflict, code, message)
    }
    pub fn precondition(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Precondition, Class::Precondition, code, message)
    }
    pub fn too_large(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, Class::Limit, code, message)
    }
    pub fn method_not_allowed(
        allow: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(
            Kind::WrongMethod,
            Class::Validation,
            ErrorCode::MethodNotAllowed,
            message,
        );
        e.allow = Some(allow.into());
        e
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(
            Kind::NotImplemented,
            Class::Internal,
            ErrorCode::NotImplemented,
            message,
        )
    }
    /// A long op stopped because its caller went away.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(
            Kind::Cancelled,
            Class::Conflict,
            ErrorCode::OpCancelled,
            message,
        )
        .retryable()
    }
    /// An internal failure: the cause is logged, never shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            Kind::Internal,
            Class::Internal,
            ErrorCode::Internal,
            "internal error; see the server log",
        )
    }
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
    /// Retryable, and after how long (the `Retry-After` header).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retryable = true;
        self.retry_after = Some(secs);
        self
    }
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn chosen(mut self, c: Chosen) -> Self {
        self.chosen = Some(Box::new(c));
        self
    }

    /// The code the envelope shows: the owner's, else the error's own.
    pub fn code_shown(&self) -> &str {
        self.chosen
            .as_ref()
            .and_then(|c| c.code.as_deref())
            .unwrap_or(self.code.as_str())
    }

    /// The JSON error envelope.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({
            "code": self.code_shown(),
            "class": self.class,
            "retryable": self.retryable,
            "message": self.message,
        });
        if let Some(r) = self.reason {
            err["reason"] = serde_json::json!(r);
        }
        if !self.details.is_empty() {
            err["details"] = serde_json::json!(self.details);
        }
        if let Some(ms) = self.chosen.as_ref().and_then(|c| c.retry_after_ms) {
            err["retry_after_ms"] = serde_json::json!(ms);
        }
        serde_json::json!({ "error": err })
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::internal(format!("json: {e}"))
    }
}
