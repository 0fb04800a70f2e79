//! The upgraded socket's edges: where a library's websocket messages
//! become the runtime's frames (payloads move, never copied). [`Axum`]
//! for an upgrade routed through axum, [`Raw`] for one answered before
//! hyper (see [`super::direct`]).

use crate::runtime::{Close, Edge, Frame, ReadError, Text};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The upgraded socket's edge: the one place axum's messages become the
/// runtime's frames (payloads move, never copied).
pub(super) struct Axum;

impl Edge for Axum {
    type Message = Message;
    type Error = axum::Error;
    type ReadError = ReadError;
    type WriteError = axum::Error;

    fn frame(m: Message) -> Frame {
        match m {
            Message::Text(t) => Frame::Text(text(t)),
            Message::Binary(b) => Frame::Binary(b),
            Message::Ping(b) => Frame::Ping(b),
            Message::Pong(b) => Frame::Pong(b),
            Message::Close(c) => Frame::Close(c.map(|c| Close {
                code: c.code,
                reason: text(c.reason),
            })),
        }
    }

    fn message(f: Frame) -> Message {
        match f {
            Frame::Text(t) => Message::Text(utf8(t)),
            Frame::Binary(b) => Message::Binary(b),
            Frame::Ping(b) => Message::Ping(b),
            Frame::Pong(b) => Message::Pong(b),
            Frame::Close(c) => Message::Close(c.map(|c| CloseFrame {
                code: c.code,
                reason: utf8(c.reason),
            })),
        }
    }

    fn read_error(e: axum::Error) -> ReadError {
        read_error(e)
    }

    fn write_error(e: axum::Error) -> axum::Error {
        e
    }
}

fn text(t: Utf8Bytes) -> Text {
    Text::from_utf8(Bytes::from(t)).unwrap_or_default()
}

fn utf8(t: Text) -> Utf8Bytes {
    Utf8Bytes::try_from(Bytes::from(t)).unwrap_or_default()
}

/// What a read error means for the connection.
fn read_error(e: axum::Error) -> ReadError {
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(ws) => ws_read_error(ws),
        None => ReadError::Gone,
    }
}

/// The same, from tungstenite's own error.
fn ws_read_error(ws: &WsError) -> ReadError {
    match ws {
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => ReadError::Gone,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ReadError::Gone,
        WsError::Utf8(_) => ReadError::InvalidUtf8,
        WsError::Capacity(_) => ReadError::TooBig,
        WsError::Protocol(_) => ReadError::Protocol,
        _ => ReadError::Other,
    }
}

/// tungstenite's own messages, as the direct way's socket reads them.
pub(super) struct Raw;

impl Edge for Raw {
    type Message = tungstenite::Message;
    type Error = WsError;
    type ReadError = ReadError;
    type WriteError = WsError;

    fn frame(m: tungstenite::Message) -> Frame {
        crate::runtime::tungstenite_frame(m)
    }

    fn message(f: Frame) -> tungstenite::Message {
        crate::runtime::tungstenite_message(f)
    }

    fn read_error(e: WsError) -> ReadError {
        ws_read_error(&e)
    }

    fn write_error(e: WsError) -> WsError {
        e
    }
}
