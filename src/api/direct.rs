//! WebSocket handshakes answered before hyper and the router. A new
//! connection's first bytes are peeked; when they hold a whole, plain
//! `GET /ws/…` upgrade, the head is taken off the socket, checked by
//! [`super::upgrade::admit_direct`] exactly as the routed handler checks
//! it, and the 101 is written here. Anything else (a head split over
//! packets or larger than [`PEEK`], an escaped path, a body, a request
//! that is not a well-formed upgrade) goes to hyper untouched: peeking
//! consumed nothing, so hyper and axum give their usual answers.
//!
//! Why: hyper's connection machinery, the router's layers and the
//! upgrade hand-off were a fifth of a handshake's server CPU.

use super::admission::IpHold;
use super::proxies::Trusted;
use super::upgrade::{admit_direct, key_is_valid};
use super::ws_edge::Raw;
use crate::runtime::wire::{Wire, WireWatch};
use crate::runtime::Framed;
use crate::service::SharedApp;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The largest head taken this way; a bigger one goes through hyper.
const PEEK: usize = 4096;
/// Headers a head taken this way may have.
const MAX_HEADERS: usize = 32;
/// The most of a refusal's body written back.
const MAX_ANSWER: usize = 64 * 1024;

/// What became of a connection offered to the direct way.
pub enum Taken {
    /// Answered (or gone): nothing more to do here.
    Done,
    /// Not a plain upgrade: for hyper, with nothing read.
    Hyper(TcpStream, Option<IpHold>),
}

/// A plain upgrade's request head.
#[derive(Debug)]
struct Head {
    len: usize,
    circle: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

/// Serves `stream` here when its first bytes are a plain upgrade. The
/// wait for them ends when `until` does (the header timeout, or the
/// server shutting down: a silent connection closes at once then, as an
/// idle one does in hyper).
pub async fn take(
    app: &SharedApp,
    stream: TcpStream,
    peer: SocketAddr,
    trusted: &Trusted,
    watch: Arc<WireWatch>,
    hold: Option<IpHold>,
    until: impl std::future::Future<Output = ()>,
) -> Taken {
    // Read into uninitialised room: zeroing 4 KiB per connection showed.
    let mut room = Vec::<u8>::with_capacity(PEEK);
    let mut buf = ReadBuf::uninit(room.spare_capacity_mut());
    let peeked = std::future::poll_fn(|cx| stream.poll_peek(cx, &mut buf));
    let n = tokio::select! {
        r = peeked => match r {
            Ok(n) if n > 0 => n,
            _ => return Taken::Done,
        },
        _ = until => return Taken::Done,
    };
    let Some(head) = parse(&buf.filled()[..n]) else {
        return Taken::Hyper(stream, hold);
    };
    // Taken off the socket into the same room (still empty: peeking
    // filled only its spare capacity), reading past the head when more is
    // there: a read that leaves room tells tokio the socket is drained, so
    // the first frame's read waits for readiness instead of trying once in
    // vain (a syscall and a wake a connection). What follows the head is
    // the stream's start.
    let mut stream = stream;
    while room.len() < head.len {
        if stream.read_buf(&mut room).await.map_or(true, |n| n == 0) {
            return Taken::Done;
        }
    }
    let early = room.split_off(head.len);
    drop(room);
    let client = trusted.client(peer, &head.headers);
    let mut wire = Wire::new(stream, watch.clone(), hold);
    let admitted = admit_direct(
        app,
        &head.circle,
        &head.path,
        client,
        head.query,
        &head.headers,
    )
    .await;
    let a = match admitted {
        Ok(a) => a,
        Err(refused) => {
            answer(&mut wire, refused).await;
            return Taken::Done;
        }
    };
    // The client sends frames only once it has our 101.
    watch.arm();
    let key = head
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(&[][..], HeaderValue::as_bytes);
    let mut out = String::with_capacity(256);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-accept: ",
    );
    out.push_str(&derive_accept_key(key));
    if let Some(p) = &a.protocol {
        out.push_str("\r\nsec-websocket-protocol: ");
        out.push_str(p);
    }
    out.push_str("\r\ndate: ");
    with_date(|d| out.push_str(d));
    out.push_str("\r\n\r\n");
    if wire.write_all(out.as_bytes()).await.is_err() {
        // Gone before its 101: the opened connection closes as dropped.
        return Taken::Done;
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(app.config().limits.ws_read_buffer as usize)
        .max_message_size(Some(a.max))
        .max_frame_size(Some(a.max));
    let ws = match early.is_empty() {
        true => WebSocketStream::from_raw_socket(wire, Role::Server, Some(config)).await,
        false => {
            WebSocketStream::from_partially_read(wire, early, Role::Server, Some(config)).await
        }
    };
    let runtime = app.runtime().clone();
    // Its own task, outside the HTTP connections shutdown waits for.
    // Boxed first: spawning moves a future several times, and this one
    // holds the connection's socket and codec state.
    let serving = Box::pin(
        a.hub
            .serve(a.opened, Framed::<_, Raw>::new(ws), Some(watch)),
    );
    tokio::spawn(runtime.track(serving));
    Taken::Done
}

/// The `date` header's text, formatted once a second per thread.
fn with_date<T>(f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        f(text)
    })
}

/// The head, when it is a complete, plain upgrade to `/ws/…`.
fn parse(buf: &[u8]) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let rest = path.strip_prefix("/ws/")?;
    // Escapes and anything unusual are the router's to decode and judge.
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./~".contains(&b);
    if !rest.bytes().all(plain) {
        return None;
    }
    // As the routes `/ws/{circle}`, `/ws/{circle}/` and `/ws/{circle}/{*path}`.
    let (circle, path) = match rest.split_once('/') {
        Some((c, p)) => (c, ["/", p].concat()),
        None => (rest, "/".to_string()),
    };
    if circle.is_empty() {
        return None;
    }
    // One copy of the head; each value a slice of it, not a copy of its own.
    let head = bytes::Bytes::copy_from_slice(&buf[..len]);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(part_of(&head, buf, h.value)).ok()?;
        headers.append(name, value);
    }
    let has = |name: HeaderName| headers.contains_key(name);
    if has(header::CONTENT_LENGTH) || has(header::TRANSFER_ENCODING) {
        return None;
    }
    // What axum's extractor asks of an upgrade, and our key check.
    let upgrade = headers.get(header::CONNECTION).is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let eq = |name: HeaderName, want: &[u8]| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(want))
    };
    let websocket = eq(header::UPGRADE, b"websocket");
    let version = eq(header::SEC_WEBSOCKET_VERSION, b"13");
    if !(upgrade && websocket && version && key_is_valid(&headers)) {
        return None;
    }
    Some(Head {
        len,
        circle: circle.to_string(),
        path,
        query,
        headers,
    })
}

/// `part` (a slice of `buf`) as the same bytes of `head`, a copy of
/// `buf`'s start; a copy of its own should it ever lie elsewhere.
fn part_of(head: &bytes::Bytes, buf: &[u8], part: &[u8]) -> bytes::Bytes {
    let at = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
    match at.filter(|at| at + part.len() <= head.len()) {
        Some(at) => head.slice(at..at + part.len()),
        None => bytes::Bytes::copy_from_slice(part),
    }
}

/// Writes a refusal as hyper would, and closes.
async fn answer<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, resp: Response) {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_default();
    let status = parts.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        if [header::CONTENT_LENGTH, header::CONNECTION, header::DATE].contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let tail = with_date(|date| {
        format!(
            "content-length: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n",
            body.len()
        )
    });
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(&body);
    let _ = w.write_all(&out).await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::parse;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn a_plain_upgrade_is_taken_with_its_route() {
        let req = upgrade("/ws/acme/chat/room?token=t&x=1", "");
        let h = parse(req.as_bytes()).expect("taken");
        assert_eq!(h.len, req.len());
        assert_eq!((h.circle.as_str(), h.path.as_str()), ("acme", "/chat/room"));
        assert_eq!(h.query.as_deref(), Some("token=t&x=1"));
        assert_eq!(h.headers["sec-websocket-key"], KEY);
        let h =
            parse(upgrade("/ws/acme/chat", "X-Empty:\r\nX-Last: z\r\n").as_bytes()).expect("taken");
        assert_eq!(h.headers["x-empty"], "");
        assert_eq!(h.headers["x-last"], "z");
        assert_eq!(h.headers["upgrade"], "WebSocket");
        // Outside the buffer it was parsed from: copied, never misread.
        let head = bytes::Bytes::from_static(b"abc");
        assert_eq!(super::part_of(&head, b"abc", b"elsewhere"), "elsewhere");
        for (target, path) in [
            ("/ws/acme", "/"),
            ("/ws/acme/", "/"),
            ("/ws/acme/~draft/x", "/~draft/x"),
        ] {
            let h = parse(upgrade(target, "").as_bytes()).expect(target);
            assert_eq!(
                (h.circle.as_str(), h.path.as_str(), h.query),
                ("acme", path, None)
            );
        }
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let whole = upgrade("/ws/acme/chat", "");
        let cases = [
            // Split over packets.
            whole[..whole.len() - 2].to_string(),
            upgrade("/ws/acme/ch%61t", ""),
            upgrade("/ws//chat", ""),
            upgrade("/api/acme/ops/list", ""),
            upgrade("/ws/acme/chat", "Content-Length: 3\r\n"),
            whole.replace("GET", "POST"),
            whole.replace("HTTP/1.1", "HTTP/1.0"),
            whole.replace("Upgrade: WebSocket", "Upgrade: h2c"),
            whole.replace("keep-alive, Upgrade", "keep-alive"),
            whole.replace("Version: 13", "Version: 8"),
            whole.replace(KEY, "short"),
            upgrade("/ws/acme/chat", &"X-A: b\r\n".repeat(40)),
        ];
        for c in cases {
            assert!(parse(c.as_bytes()).is_none(), "{c:?}");
        }
    }
}
