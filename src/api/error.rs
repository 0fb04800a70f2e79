//! The one place a domain [`Error`] becomes HTTP: its kind picks the
//! status, and the error envelope is the body.

use crate::error::{Error, Kind};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The status an error answers with.
pub fn status(e: &Error) -> StatusCode {
    if let Some(s) = e
        .chosen
        .as_ref()
        .and_then(|c| c.status)
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return s;
    }
    match e.kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::WrongMethod => StatusCode::METHOD_NOT_ALLOWED,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Precondition => StatusCode::PRECONDITION_FAILED,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::TooSlow => StatusCode::REQUEST_TIMEOUT,
        Kind::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        Kind::TooMany => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Upstream => StatusCode::BAD_GATEWAY,
        // As proxies log a request whose client closed it first; nobody
        // reads this answer.
        Kind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        if status.is_server_error() {
            tracing::warn!(code = %self.code, status = status.as_u16(), "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        let h = resp.headers_mut();
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if let Some(v) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            h.insert(header::ALLOW, v);
        }
        for (k, v) in self.chosen.iter().flat_map(|c| c.headers.iter()) {
            // The schema admits only X- names and visible ASCII values.
            if let (Ok(k), Ok(v)) = (
                header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        // Too large or too slow leaves request bytes unread: the
        // connection cannot carry another request, and the client must
        // know not to reuse it.
        if matches!(self.kind, Kind::TooLarge | Kind::TooSlow) {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.kind == Kind::Unauthenticated {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"elementd\""),
            );
        }
        resp
    }
}
