//! Driven mode: one outbound link to `spec.url`, reconnected with
//! exponential backoff and jitter (`backon`). Its messages become
//! `ws.message.received`; `send` writes to it while it is open. It
//! connects only where [`Outbound`] allows, to the address it checked.

use super::hub::Hub;
use super::outbound::Outbound;
use super::settings::WsSpec;
use super::{errors, message_data, MessageBytes};
use crate::error::Result;
use crate::model::{now_ms, rfc3339};
use crate::sync::lock;
use crate::vars::{self, Resolved};
use backon::BackoffBuilder;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_util::sync::CancellationToken;

/// Fills the variables a link references when it connects. Err says
/// why one cannot be used (missing, deleted, disabled).
pub trait Resolve: Send + Sync {
    fn values<'a>(
        &'a self,
        circle_id: &'a str,
        slugs: Vec<String>,
    ) -> futures::future::BoxFuture<'a, std::result::Result<HashMap<String, Resolved>, String>>;
}

/// What a link needs from its runtime to connect.
#[derive(Clone)]
pub struct LinkEnv {
    pub outbound: Arc<Outbound>,
    pub resolve: Arc<dyn Resolve>,
    pub circle_id: String,
}

/// The link's id in `connections` and `send`.
pub const LINK_ID: &str = "link";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
struct LinkState {
    status: &'static str,
    connected_at: Option<i64>,
    attempts: u64,
    last_error: Option<String>,
}

pub struct Link {
    pub url: String,
    state: Mutex<LinkState>,
    tx: Mutex<Option<mpsc::Sender<TMessage>>>,
    msgs_in: AtomicU64,
    msgs_out: AtomicU64,
    stop: CancellationToken,
}

fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Link {
    pub fn start(hub: Arc<Hub>, url: String, spec: Arc<WsSpec>, env: LinkEnv) -> Arc<Link> {
        let link = Arc::new(Link {
            url,
            state: Mutex::new(LinkState {
                status: "connecting",
                ..Default::default()
            }),
            tx: Mutex::new(None),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(run(Arc::downgrade(&hub), link.clone(), spec, env));
        link
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Queues a frame on the open link; 502 `WS_CONNECTION_FAILED` when it
    /// is down.
    pub fn send(&self, msg: TMessage) -> Result<()> {
        let Some(tx) = lock(&self.tx).clone() else {
            let st = lock(&self.state).clone();
            let why = st.last_error.unwrap_or_else(|| st.status.to_string());
            return Err(errors::connection_failed(format!(
                "the driven link to {} is not open ({why}); it reconnects with backoff",
                self.url
            )));
        };
        match tx.try_send(msg) {
            Ok(()) => {
                self.msgs_out.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(errors::queue_full(LINK_ID)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(errors::connection_failed(format!(
                "the driven link to {} just closed",
                self.url
            ))),
        }
    }

    /// Why the link is not open, when it has failed to connect.
    pub fn failure(&self) -> Option<String> {
        let st = lock(&self.state);
        (st.status != "open")
            .then(|| st.last_error.clone())
            .flatten()
    }

    pub fn json(&self) -> Value {
        let st = lock(&self.state).clone();
        json!({
            "connection_id": LINK_ID,
            "kind": "link",
            "url": self.url,
            "state": st.status,
            "connected_at": st.connected_at.map(rfc3339),
            "attempts": st.attempts,
            "last_error": st.last_error,
            "rooms": [],
            "messages_in": self.msgs_in.load(Ordering::Relaxed),
            "messages_out": self.msgs_out.load(Ordering::Relaxed),
        })
    }

    fn set(&self, f: impl FnOnce(&mut LinkState)) {
        f(&mut lock(&self.state));
    }
}

async fn run(hub: Weak<Hub>, link: Arc<Link>, spec: Arc<WsSpec>, env: LinkEnv) {
    let mut delays = backoff();
    let mut failing = false;
    while !link.stop.is_cancelled() {
        link.set(|s| {
            s.status = "connecting";
            s.attempts += 1;
        });
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&link.url, &spec, &env)) => r,
            _ = link.stop.cancelled() => break,
        };
        let result = match attempt {
            Ok(r) => r,
            Err(_) => Err("connect timed out".to_string()),
        };
        match result {
            Ok((ws, values)) => {
                failing = false;
                delays = backoff();
                let Some(h) = hub.upgrade() else { break };
                let (tx, rx) = mpsc::channel(spec.connection.send_queue);
                *lock(&link.tx) = Some(tx);
                link.set(|s| {
                    s.status = "open";
                    s.connected_at = Some(now_ms());
                    s.attempts = 0;
                    s.last_error = None;
                });
                h.metrics.connection_count.inc();
                h.metrics.active_connections.inc();
                let e = h.event(
                    "ws.connection.opened",
                    json!({"connection_id": LINK_ID, "url": link.url}),
                );
                h.emit(e).await;
                drop(h);
                let (code, reason, by) = session(&hub, &link, ws, rx, &spec).await;
                // A peer may quote what it was sent (its host name, say).
                let reason = vars::redact(&reason, &values);
                drop(values);
                *lock(&link.tx) = None;
                link.set(|s| {
                    s.connected_at = None;
                    s.last_error = Some(format!("closed: {code} {reason}"));
                });
                let Some(h) = hub.upgrade() else { break };
                h.metrics.active_connections.dec();
                h.metrics.disconnect_count.inc();
                let e = h.event(
                    "ws.connection.closed",
                    json!({"connection_id": LINK_ID, "code": code, "reason": reason, "closed_by": by}),
                );
                h.emit(e).await;
            }
            Err(why) => {
                link.set(|s| s.last_error = Some(why.clone()));
                // One event per streak of failures, not one per attempt.
                if !failing {
                    failing = true;
                    tracing::warn!(url = %link.url, error = %why, "driven link cannot connect");
                    let Some(h) = hub.upgrade() else { break };
                    let e = h.event(
                        "ws.connection.rejected",
                        json!({"connection_id": LINK_ID, "url": link.url, "status": 502,
                               "code": "WS_CONNECTION_FAILED", "reason": why}),
                    );
                    h.emit(e).await;
                }
            }
        }
        if link.stop.is_cancelled() {
            break;
        }
        link.set(|s| s.status = "backoff");
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = link.stop.cancelled() => break,
        }
    }
    *lock(&link.tx) = None;
    link.set(|s| s.status = "stopped");
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` with the spec's headers, their variables filled in
/// now; errors never show a sensitive value. Also the values it used, to
/// keep them out of what the peer says when the link closes.
async fn connect(
    url: &str,
    spec: &WsSpec,
    env: &LinkEnv,
) -> std::result::Result<(Stream, HashMap<String, Resolved>), String> {
    let mut slugs = vars::refs(url);
    for s in spec.headers.values().flat_map(|v| vars::refs(v)) {
        if !slugs.contains(&s) {
            slugs.push(s);
        }
    }
    let values = if slugs.is_empty() {
        HashMap::new()
    } else {
        env.resolve.values(&env.circle_id, slugs).await?
    };
    let ws = dial(url, spec, &values, &env.outbound)
        .await
        .map_err(|e| vars::redact(&e, &values))?;
    Ok((ws, values))
}

async fn dial(
    template: &str,
    spec: &WsSpec,
    values: &HashMap<String, Resolved>,
    outbound: &Outbound,
) -> std::result::Result<Stream, String> {
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
    Ok(ws)
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

/// Runs one open link until it closes, fails or is stopped.
async fn session(
    hub: &Weak<Hub>,
    link: &Link,
    ws: Stream,
    mut rx: mpsc::Receiver<TMessage>,
    spec: &WsSpec,
) -> (u16, String, &'static str) {
    let (mut sink, mut stream) = ws.split();
    let every = Duration::from_millis(spec.heartbeat.interval_ms);
    let silence = Duration::from_millis(spec.heartbeat.timeout_ms.max(spec.heartbeat.interval_ms));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let deadline = tokio::time::sleep(silence);
    tokio::pin!(deadline);
    let mut peer: Option<(u16, String)> = None;
    loop {
        let out = tokio::select! {
            _ = link.stop.cancelled() => {
                let frame = CloseFrame { code: CloseCode::Away, reason: "element is no longer live".into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(TMessage::Close(Some(frame)))).await;
                return (1001, "element is no longer live".into(), "server");
            }
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => return (1001, "link dropped".into(), "server"),
            },
            _ = ping.tick() => Some(TMessage::Ping(Default::default())),
            _ = &mut deadline => return (1006, "heartbeat timeout".into(), "server"),
            m = stream.next() => {
                deadline.as_mut().reset(tokio::time::Instant::now() + silence);
                match m {
                    Some(Ok(m @ (TMessage::Text(_) | TMessage::Binary(_)))) => {
                        link.msgs_in.fetch_add(1, Ordering::Relaxed);
                        if let Some(h) = hub.upgrade() {
                            h.metrics.message_received_count.inc();
                            let payload = match &m {
                                TMessage::Text(t) => MessageBytes::Text(t.as_str()),
                                TMessage::Binary(b) => MessageBytes::Binary(b),
                                _ => unreachable!("matched above"),
                            };
                            let mut data = message_data(payload);
                            data["connection_id"] = json!(LINK_ID);
                            let e = h.event("ws.message.received", data);
                            h.emit_message(e).await;
                        }
                    }
                    Some(Ok(TMessage::Close(f))) => {
                        peer = Some(f.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string())));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let (code, reason) = peer.unwrap_or((1006, e.to_string()));
                        return (code, reason, "remote");
                    }
                    None => {
                        let (code, reason) = peer.unwrap_or((1006, "connection dropped".into()));
                        return (code, reason, "remote");
                    }
                }
                None
            }
        };
        if let Some(m) = out {
            if let Err(e) = sink.send(m).await {
                return (1006, e.to_string(), "remote");
            }
        }
    }
}
