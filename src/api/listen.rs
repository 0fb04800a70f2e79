//! Our own accept loop. `axum::serve` sets no header timeout and no
//! connection cap, so a client could hold half-sent requests open until
//! the process ran out of file descriptors (issue 8, slowloris).
//!
//! - Every connection gets `limits.header_timeout` to send a request's
//!   headers; the same clock runs while a keep-alive connection sits idle
//!   between requests, so neither a slow nor an idle client holds a socket.
//! - The public listener holds at most `limits.max_http_connections`
//!   connections, plus a small reserve served only for `/healthz`,
//!   `/readyz` and platform admins, so the server stays observable and
//!   manageable at the cap (see [`super::admission`]). An upgraded
//!   websocket leaves the cap when it upgrades (hyper's connection future
//!   ends there): it counts against its element's `max_connections` and
//!   the node's websocket cap instead (the descriptors the HTTP cap
//!   leaves, see [`super::admission::ws_connection_cap`]).
//! - The public listener holds at most `limits.max_connections_per_ip`
//!   sockets per client address, websockets included; a connection past
//!   it is answered 429 and closed, and only a few such answers are under
//!   way at once, so refusing costs a flood no more descriptors.
//! - Running out of descriptors on accept backs off instead of spinning.
//! - Every socket is watched for websocket frames (see
//!   [`crate::runtime::wire`]) once its request upgrades.
//! - A new connection whose first bytes are a whole, plain websocket
//!   upgrade is answered before hyper (see [`super::direct`]); any other
//!   goes to hyper as it came.

use super::admission::{Admission, Cap, PerIp, ReserveSlot};
use super::auth::{principal_for, token_from_headers};
use super::direct::Taken;
use crate::error::{Class, Error};
use crate::error_codes::ErrorCode;
use crate::runtime::wire::{Wire, WireWatch};
use crate::service::SharedApp;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Refusals (past the per-address cap) answered at once; more are closed
/// unanswered.
const REFUSING: usize = 64;
/// How long a refused connection has to send its request.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How one listener serves its connections.
pub struct Serve {
    pub header_timeout: Duration,
    /// None: no cap (the internal listener).
    pub cap: Option<Cap>,
}

/// Serves `router` on `listener` until `stop` resolves, then stops
/// accepting, lets every connection finish its in-flight request (idle
/// ones close at once) and returns when all have ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    app: SharedApp,
    opts: Serve,
    stop: impl Future<Output = ()>,
) {
    let conns = TaskTracker::new();
    let (closing, closing_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    let mut failures = AcceptFailures::default();
    let per_ip = match app.config().limits.max_connections_per_ip {
        n if n > 0 && opts.cap.is_some() => Some(PerIp::new(n)),
        _ => None,
    };
    // Checked at start; a trusted proxy carries many clients, so it is
    // not held to one client's count.
    let trusted = Arc::new(
        super::proxies::Trusted::parse(
            &app.config().trusted_proxies,
            &app.config().forwarded_header,
        )
        .unwrap_or_default(),
    );
    let refusing = Arc::new(Semaphore::new(REFUSING));
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    failures.wait(e).await;
                    continue;
                }
            },
        };
        failures.streak = 0;
        let counted = per_ip.as_ref().filter(|_| !trusted.contains(remote.ip()));
        let hold = match counted.map(|p| p.admit(remote.ip())) {
            None => None,
            Some(Some(h)) => Some(h),
            Some(None) => {
                refuse(stream, remote, &refusing, &conns);
                continue;
            }
        };
        let admission = match &opts.cap {
            Some(cap) => {
                let held = |ip| per_ip.as_ref().map_or(0, |p| p.count(ip));
                cap.admit_from(remote.ip(), &held)
            }
            None => Admission::Full(None),
        };
        let (permit, reserve) = match admission {
            Admission::Full(p) => (p, None),
            Admission::Reserve(slot) => (None, Some(slot)),
            Admission::Refused => {
                tracing::debug!(%remote, "connection refused: at the cap and its reserve");
                continue;
            }
        };
        let evicted = reserve.as_ref().map(|r| r.evicted().clone());
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(WireWatch::default());
        // A reserve connection serves only probes and admins; the internal
        // listener serves no websockets.
        let direct = reserve.is_none() && opts.cap.is_some();
        let (http, router, app, trusted) =
            (http.clone(), router.clone(), app.clone(), trusted.clone());
        let mut closing = closing_rx.clone();
        let wait = opts.header_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let (stream, hold) = match direct {
                true => {
                    let until = async {
                        let _ = tokio::time::timeout(wait, closing.wait_for(|c| *c)).await;
                    };
                    // Boxed: inline, the handshake's state made this
                    // task (and each copy its spawn makes) 4 KiB larger.
                    let taken = Box::pin(super::direct::take(
                        &app,
                        stream,
                        remote,
                        &trusted,
                        watch.clone(),
                        hold,
                        until,
                    ));
                    match taken.await {
                        Taken::Done => return,
                        Taken::Hyper(stream, hold) => (stream, hold),
                    }
                }
                false => (stream, hold),
            };
            // Built only for a connection hyper serves, and boxed: inline,
            // hyper's state made every connection's task (and its spawn's
            // copy) several kilobytes larger, websockets' too.
            let svc = service(router, app, (remote, trusted), reserve, watch.clone());
            let mut conn = Box::pin(
                http.serve_connection(TokioIo::new(Wire::new(stream, watch, hold)), svc)
                    .with_upgrades(),
            );
            let evicted = async move {
                match evicted {
                    Some(e) => e.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => return log_end(r),
                // Dropping the connection closes it, unanswered.
                _ = evicted => return,
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            log_end(conn.await);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    conns.close();
    conns.wait().await;
}

/// A connection past its address's cap: one 429 answer, then closed.
fn refuse(stream: TcpStream, remote: SocketAddr, refusing: &Arc<Semaphore>, conns: &TaskTracker) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        tracing::debug!(%remote, "connection closed: its address is at its cap");
        return;
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
        let mut resp = too_many_connections().into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(resp)
    });
    conns.spawn(async move {
        let _permit = permit;
        let served = http.serve_connection(TokioIo::new(stream), svc);
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, served).await;
    });
}

fn too_many_connections() -> Error {
    Error::new(
        crate::error::Kind::TooMany,
        Class::Limit,
        ErrorCode::TooManyConnections,
        "this address holds its maximum of connections (ELEMENTD_MAX_CONNECTIONS_PER_IP); \
         close some or try again later",
    )
    .retry_after(1)
}

fn log_end(r: hyper::Result<()>) {
    if let Err(e) = r {
        // Timeouts, resets and malformed requests: the client's doing.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accept errors: a refused or reset connection is the client's and is
/// skipped; anything else (out of descriptors, out of memory) would fail
/// again at once, so the loop waits, longer each time, up to a second.
#[derive(Default)]
struct AcceptFailures {
    streak: u32,
}

impl AcceptFailures {
    async fn wait(&mut self, e: std::io::Error) {
        use std::io::ErrorKind::*;
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
        ) {
            return;
        }
        if self.streak == 0 {
            tracing::warn!(error = %e, "accept failed; backing off until it succeeds");
        }
        let delay = Duration::from_millis(10 << self.streak.min(7)).min(Duration::from_secs(1));
        self.streak += 1;
        tokio::time::sleep(delay).await;
    }
}

type ServiceFuture = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The router as hyper calls it, with the peer address handlers read as
/// `ConnectInfo`, and the reserve's admission on reserve connections.
fn service(
    router: Router,
    app: SharedApp,
    (remote, trusted): (SocketAddr, Arc<super::proxies::Trusted>),
    reserve: Option<Arc<ReserveSlot>>,
    watch: Arc<WireWatch>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = ServiceFuture,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // Handlers see the client: behind a trusted proxy, the one it names.
        let client = trusted.client(remote, req.headers());
        req.extensions_mut().insert(ConnectInfo(client));
        req.extensions_mut().insert(watch.clone());
        let req = req.map(Body::new);
        let router = router.clone();
        let app = app.clone();
        let reserve = reserve.clone();
        Box::pin(async move {
            let Some(slot) = reserve else {
                return router.oneshot(req).await;
            };
            slot.started();
            let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
            let token = token_from_headers(req.headers()).ok().flatten();
            let mut resp = if probe || is_platform_admin(&app, token, client.ip()).await {
                router.oneshot(req).await?
            } else {
                busy().into_response()
            };
            // A reserve connection carries one request, so the reserve
            // frees up for the next probe.
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        }) as ServiceFuture
    })
}

/// Besides health checks, what a reserve connection serves.
async fn is_platform_admin(app: &SharedApp, token: Option<String>, from: std::net::IpAddr) -> bool {
    match token {
        // Held to the token-guess throttle like any other check.
        Some(secret) => principal_for(app, &secret, Some(from))
            .await
            .is_ok_and(|p| p.is_platform_admin()),
        None => false,
    }
}

fn busy() -> Error {
    Error::new(
        crate::error::Kind::Unavailable,
        Class::Limit,
        ErrorCode::ServerBusy,
        "the server holds its maximum of HTTP connections; try again shortly",
    )
    .retry_after(1)
}
