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
//!   manageable at the cap. Beyond the reserve a connection is closed at
//!   once. An upgraded websocket leaves the cap when it upgrades (hyper's
//!   connection future ends there): it counts against its element's
//!   `max_connections` instead.
//! - Running out of descriptors on accept backs off instead of spinning.

use super::auth::{principal_for, token_from_headers};
use crate::app::SharedApp;
use crate::error::{Class, Error};
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
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Connections kept back beyond the cap for health checks and admins.
pub const RESERVE: usize = 16;
/// Descriptors the derived cap leaves to the database, git and logs.
const FD_HEADROOM: u64 = 256;
/// Bounds of the derived cap: a small open-file limit still serves, and a
/// huge one does not invite more idle connections than memory should hold.
const DERIVED_MIN: u64 = 32;
const DERIVED_MAX: u64 = 16_384;

/// How one listener serves its connections.
pub struct Serve {
    pub header_timeout: Duration,
    /// None: no cap (the internal listener).
    pub cap: Option<Cap>,
}

/// The connection cap and its reserve.
#[derive(Clone)]
pub struct Cap {
    full: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

enum Admission {
    Full(Option<OwnedSemaphorePermit>),
    Reserve(OwnedSemaphorePermit),
    Refused,
}

impl Cap {
    pub fn new(max: usize) -> Cap {
        Cap {
            full: Arc::new(Semaphore::new(max)),
            reserve: Arc::new(Semaphore::new(RESERVE)),
        }
    }

    fn admit(&self) -> Admission {
        if let Ok(p) = self.full.clone().try_acquire_owned() {
            return Admission::Full(Some(p));
        }
        match self.reserve.clone().try_acquire_owned() {
            Ok(p) => Admission::Reserve(p),
            Err(_) => Admission::Refused,
        }
    }
}

/// The cap in force: the configured one, or one derived from the
/// open-file limit (half of it after headroom, the other half being left
/// to websockets, which do not count here).
pub fn connection_cap(configured: usize, nofile: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    (nofile.saturating_sub(FD_HEADROOM) / 2).clamp(DERIVED_MIN, DERIVED_MAX) as usize
}

/// Raises the open-file soft limit to the hard limit; returns the soft
/// limit in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
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
        let admission = match &opts.cap {
            Some(cap) => cap.admit(),
            None => Admission::Full(None),
        };
        let (permit, reserve) = match admission {
            Admission::Full(p) => (p, false),
            Admission::Reserve(p) => (Some(p), true),
            Admission::Refused => {
                tracing::debug!(%remote, "connection refused: at the cap and its reserve");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = service(router.clone(), app.clone(), remote, reserve);
        let conn = http
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut closing = closing_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => return log_end(r),
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
    remote: SocketAddr,
    reserve: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = ServiceFuture,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        let req = req.map(Body::new);
        let router = router.clone();
        let app = app.clone();
        Box::pin(async move {
            if !reserve {
                return router.oneshot(req).await;
            }
            let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
            let token = token_from_headers(req.headers()).ok().flatten();
            let mut resp = if probe || is_platform_admin(&app, token).await {
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
async fn is_platform_admin(app: &SharedApp, token: Option<String>) -> bool {
    match token {
        Some(secret) => principal_for(app, &secret)
            .await
            .is_ok_and(|p| p.is_platform_admin()),
        None => false,
    }
}

fn busy() -> Error {
    let mut e = Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Class::Limit,
        "SERVER_BUSY",
        "the server holds its maximum of HTTP connections; try again shortly",
    )
    .retryable();
    e.retry_after = Some(1);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cap_leaves_headroom_and_is_bounded() {
        assert_eq!(connection_cap(20, 20_000), 20, "configured wins");
        assert_eq!(connection_cap(0, 20_000), (20_000 - 256) / 2);
        assert_eq!(connection_cap(0, 256), 32);
        assert_eq!(connection_cap(0, 1 << 20), 16_384);
    }

    #[test]
    fn the_reserve_follows_the_cap_then_refusal() {
        let cap = Cap::new(1);
        let a = cap.admit();
        assert!(matches!(a, Admission::Full(Some(_))));
        let reserve: Vec<_> = (0..RESERVE).map(|_| cap.admit()).collect();
        assert!(reserve.iter().all(|r| matches!(r, Admission::Reserve(_))));
        assert!(matches!(cap.admit(), Admission::Refused));
        drop(a);
        assert!(matches!(cap.admit(), Admission::Full(Some(_))));
    }
}
