//! Driven mode: one outbound link to `spec.url`, reconnected with
//! exponential backoff and jitter (`backon`). What happens to it (open,
//! closed, refused, a message) is told to its [`LinkHost`], the hub;
//! `send` writes to it while it is open. It connects only where
//! [`Outbound`] allows, to the address it checked (`dial.rs`).

use super::dial::{dial, Peer};
use super::errors;
use super::frame::{Close, Frame, CLOSE_GOING_AWAY};
use super::outbound::Outbound;
use super::settings::WsSpec;
use crate::error::Result;
use crate::ids::CircleId;
use crate::model::{now_ms, rfc3339, Env};
use crate::sync::lock;
use crate::vars::{self, Resolved};
use backon::BackoffBuilder;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Fills the variables a link references when it connects, with the
/// values of the environment it runs in. Err says why one cannot be used
/// (missing, deleted, disabled).
pub trait Resolve: Send + Sync {
    fn values<'a>(
        &'a self,
        circle_id: &'a CircleId,
        env: Env,
        slugs: Vec<String>,
    ) -> futures::future::BoxFuture<'a, std::result::Result<HashMap<String, Resolved>, String>>;
}

/// What a link tells the hub it serves. Held weakly: a link never keeps
/// its hub alive.
pub trait LinkHost: Send + Sync + 'static {
    /// The link is open to `url`.
    fn link_opened(&self, url: &str) -> impl Future<Output = ()> + Send;
    /// An open link closed; `by` is "server" or "remote".
    fn link_closed(&self, code: u16, reason: &str, by: &str) -> impl Future<Output = ()> + Send;
    /// A streak of failed attempts began.
    fn link_refused(&self, url: &str, why: &str) -> impl Future<Output = ()> + Send;
    /// A text or binary message from the peer.
    fn link_message(&self, msg: &Frame) -> impl Future<Output = ()> + Send;
}

/// What a link needs from its runtime to connect.
#[derive(Clone)]
pub struct LinkEnv {
    pub outbound: Arc<Outbound>,
    pub http: Arc<super::fetch::Client>,
    pub resolve: Arc<dyn Resolve>,
    /// The server's clock (a JWKS's refetch interval runs by it).
    pub clock: crate::clock::Clock,
    pub circle_id: CircleId,
    /// The environment of the hub the link serves.
    pub env: Env,
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
    tx: Mutex<Option<mpsc::Sender<Frame>>>,
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
    pub fn start<H: LinkHost>(
        hub: &Arc<H>,
        url: String,
        spec: Arc<WsSpec>,
        env: LinkEnv,
    ) -> Arc<Link> {
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
        tokio::spawn(run(Arc::downgrade(hub), link.clone(), spec, env));
        link
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Queues a frame on the open link; 502 `WS_CONNECTION_FAILED` when it
    /// is down.
    pub fn send(&self, msg: Frame) -> Result<()> {
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

async fn run<H: LinkHost>(hub: Weak<H>, link: Arc<Link>, spec: Arc<WsSpec>, env: LinkEnv) {
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
                let (tx, rx) = mpsc::channel(spec.connection.send_queue);
                *lock(&link.tx) = Some(tx);
                link.set(|s| {
                    s.status = "open";
                    s.connected_at = Some(now_ms());
                    s.attempts = 0;
                    s.last_error = None;
                });
                let Some(h) = hub.upgrade() else { break };
                h.link_opened(&link.url).await;
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
                h.link_closed(code, &reason, by).await;
            }
            Err(why) => {
                link.set(|s| s.last_error = Some(why.clone()));
                // One event per streak of failures, not one per attempt.
                if !failing {
                    failing = true;
                    tracing::warn!(url = %link.url, error = %why, "driven link cannot connect");
                    let Some(h) = hub.upgrade() else { break };
                    h.link_refused(&link.url, &why).await;
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

/// Connects to `url` with the spec's headers, their variables filled in
/// now; errors never show a sensitive value. Also the values it used, to
/// keep them out of what the peer says when the link closes.
async fn connect(
    url: &str,
    spec: &WsSpec,
    env: &LinkEnv,
) -> std::result::Result<(Peer, HashMap<String, Resolved>), String> {
    let mut slugs = vars::refs(url);
    for s in spec.headers.values().flat_map(|v| vars::refs(v)) {
        if !slugs.contains(&s) {
            slugs.push(s);
        }
    }
    let values = if slugs.is_empty() {
        HashMap::new()
    } else {
        env.resolve.values(&env.circle_id, env.env, slugs).await?
    };
    // A url that is one reference is known only now.
    vars::check_url(&vars::fill(url, &values))
        .map_err(|e| vars::redact(&format!("url {url}: {e}"), &values))?;
    let ws = dial(url, spec, &values, &env.outbound)
        .await
        .map_err(|e| vars::redact(&e, &values))?;
    Ok((ws, values))
}

/// Runs one open link until it closes, fails or is stopped.
async fn session<H: LinkHost>(
    hub: &Weak<H>,
    link: &Link,
    ws: Peer,
    mut rx: mpsc::Receiver<Frame>,
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
                let frame = Close { code: CLOSE_GOING_AWAY, reason: "element is no longer live".into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Frame::Close(Some(frame)))).await;
                return (1001, "element is no longer live".into(), "server");
            }
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => return (1001, "link dropped".into(), "server"),
            },
            _ = ping.tick() => Some(Frame::Ping(Default::default())),
            _ = &mut deadline => return (1006, "heartbeat timeout".into(), "server"),
            m = stream.next() => {
                deadline.as_mut().reset(tokio::time::Instant::now() + silence);
                match m {
                    Some(Ok(m)) if m.is_data() => {
                        link.msgs_in.fetch_add(1, Ordering::Relaxed);
                        if let Some(h) = hub.upgrade() {
                            h.link_message(&m).await;
                        }
                    }
                    Some(Ok(Frame::Close(f))) => {
                        peer = Some(f.map_or((1005, String::new()), |f| (f.code, f.reason.as_str().to_string())));
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
