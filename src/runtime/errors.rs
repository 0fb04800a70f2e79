//! The runtime's error answers: the seed's error codes, as the type
//! declares them.

use crate::error::{Class, Error};
use crate::error_codes::ErrorCode;

pub fn connection_not_found(id: &str) -> Error {
    let shown = crate::error::shown(id);
    Error::new(
        crate::error::Kind::NotFound,
        Class::Validation,
        ErrorCode::WsConnectionNotFound,
        format!("no open connection '{shown}'; see ops/connections"),
    )
}
pub fn message_too_large(size: usize, max: usize) -> Error {
    Error::new(
        crate::error::Kind::TooLarge,
        Class::Limit,
        ErrorCode::WsMessageTooLarge,
        format!("message is {size} bytes; this element's max_message_bytes is {max}"),
    )
}
pub fn max_connections(max: usize) -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        Class::Limit,
        ErrorCode::WsMaxConnectionsReached,
        format!("this endpoint already holds its max_connections ({max})"),
    )
    .retryable()
}
pub fn connection_failed(message: String) -> Error {
    Error::new(
        crate::error::Kind::Upstream,
        Class::Internal,
        ErrorCode::WsConnectionFailed,
        message,
    )
    .retryable()
}
pub fn queue_full(id: &str) -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        Class::Limit,
        ErrorCode::WsSendQueueFull,
        format!("the send queue of '{id}' is full; a client that cannot keep up is closed"),
    )
}
pub fn node_full() -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        Class::Limit,
        ErrorCode::ServerBusy,
        "the server holds its maximum of websocket connections; try again shortly",
    )
    .retry_after(1)
}
/// The shared history did not answer in time; the message may still go
/// out (retrying may publish it twice).
pub fn history_unavailable() -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        Class::Limit,
        ErrorCode::ClusterBusy,
        "the shared history did not place the message in time; it may still be delivered",
    )
    .retry_after(1)
}
