//! The driven link's network edge: dials the peer with tokio-tungstenite
//! and carries the runtime's [`Frame`]s over it. The only file under
//! `runtime/` that knows tungstenite's messages (their conversions serve
//! the direct handshake's sockets too).

use super::edge::{Edge, Framed};
use super::frame::{Close, Frame};
use super::outbound::Outbound;
use super::settings::WsSpec;
use crate::vars::{self, Resolved};
use bytes::Bytes;
use std::collections::HashMap;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An open link to the peer, in frames; errors as text.
pub type Peer = Framed<Socket, Tungstenite>;

pub struct Tungstenite;

impl Edge for Tungstenite {
    type Message = Message;
    type Error = tungstenite::Error;
    type ReadError = String;
    type WriteError = String;

    fn frame(m: Message) -> Frame {
        frame_of(m)
    }

    fn message(f: Frame) -> Message {
        message_of(f)
    }

    fn read_error(e: tungstenite::Error) -> String {
        e.to_string()
    }

    fn write_error(e: tungstenite::Error) -> String {
        e.to_string()
    }
}

/// tungstenite's message as a frame (payloads move, never copied); also
/// the server side's, for a handshake answered before hyper.
pub fn frame_of(m: Message) -> Frame {
    match m {
        Message::Text(t) => Frame::Text(t.into()),
        Message::Binary(b) => Frame::Binary(b),
        Message::Ping(b) => Frame::Ping(b),
        Message::Pong(b) => Frame::Pong(b),
        Message::Close(c) => Frame::Close(c.map(|c| Close {
            code: c.code.into(),
            reason: c.reason.into(),
        })),
        // Raw frames are only ever written, never read.
        Message::Frame(_) => Frame::Pong(Bytes::new()),
    }
}

/// A frame as tungstenite's message.
pub fn message_of(f: Frame) -> Message {
    match f {
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code.into(),
            reason: c.reason.into(),
        })),
    }
}

pub(super) async fn dial(
    template: &str,
    spec: &WsSpec,
    values: &HashMap<String, Resolved>,
    outbound: &Outbound,
) -> std::result::Result<Peer, String> {
    let url = vars::fill(template, values);
    // With a sensitive value in the url, errors name the url as written:
    // parsers and peers quote a host in forms of their own (lowercased,
    // punycode), which no search for the value would catch.
    let shown = vars::fills_secret(template, values).then_some(template);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let tcp = open(&outbound.destinations(&parsed, shown).await?, shown).await?;
    if !spec.protocols.is_empty() {
        let v = HeaderValue::from_str(&spec.protocols.join(", ")).map_err(|e| e.to_string())?;
        req.headers_mut().insert("sec-websocket-protocol", v);
    }
    for (name, value) in &spec.headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header {name}: {e}"))?;
        let value = HeaderValue::from_str(&vars::fill(value, values))
            .map_err(|_| format!("header {name}: the value is not a valid header value"))?;
        req.headers_mut().insert(name, value);
    }
    let max = spec.connection.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // The request keeps the URL: Host and TLS server name stay right.
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(req, tcp, Some(config), None)
        .await
        .map_err(|e| match shown {
            Some(_) => handshake_failure(&e),
            None => e.to_string(),
        })?;
    Ok(Framed::new(ws))
}

/// A failed handshake told without the error's own text where that may
/// quote the host (an I/O or TLS error: "certificate not valid for name").
fn handshake_failure(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(r) => format!("HTTP error: {}", r.status()),
        E::Io(io) => format!("IO error: {}", io.kind()),
        E::Tls(_) => "TLS error".into(),
        E::ConnectionClosed | E::AlreadyClosed | E::Capacity(_) | E::Protocol(_) => e.to_string(),
        _ => "the WebSocket handshake failed".into(),
    }
}

/// A TCP connection to the first of `addrs` that answers. Errors name
/// the address, or `shown` (the url as written) when a secret chose it.
async fn open(
    addrs: &[std::net::SocketAddr],
    shown: Option<&str>,
) -> std::result::Result<tokio::net::TcpStream, String> {
    let mut last = String::from("no address to connect to");
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => {
                last = match shown {
                    Some(url) => format!("connecting to {url}: {}", e.kind()),
                    None => format!("{a}: {e}"),
                }
            }
        }
    }
    Err(last)
}
