//! Bounded HTTP requests: a GET (a JWKS document) and a signed POST (a
//! hook or a webhook delivery), each to an address the outbound policy
//! allows, within a deadline, the answer's body capped. Connections are
//! kept alive and reused (`pool.rs`). The only file under `runtime/`
//! besides `dial.rs` that knows an HTTP client.

use super::outbound::Outbound;
use super::pool::{Bounds, Pool, Reusable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

static TLS: LazyLock<Option<Arc<rustls::ClientConfig>>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
});

/// Idle connections kept per place (scheme, host, address), in all, and
/// for how long. Kept idle for less than common servers' own keep-alive
/// timeouts (Node and uvicorn close after 5 s), so a reused connection is
/// rarely one the server is closing as the request goes out.
const POOL: Bounds = Bounds {
    per_key: 32,
    total: 512,
    idle: Duration::from_secs(4),
};

/// How long a pooled connection may take to say it can carry a request.
const READY: Duration = Duration::from_millis(100);

/// The outbound HTTP client of one server: the policy every request is
/// checked against, and the connections kept alive between requests.
pub struct Client {
    outbound: Arc<Outbound>,
    pool: Pool<Key, Link>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tls: bool,
    host: String,
    addr: SocketAddr,
}

struct Link {
    sender: SendRequest<Full<Bytes>>,
    /// The connection's task: it ends when the link is dropped.
    _conn: AbortOnDropHandle<()>,
}

impl Reusable for Link {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// What a request got back: its status and at most `max` bytes of body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The body was over `max` bytes and is not kept.
    pub truncated: bool,
}

impl Client {
    pub fn new(outbound: Arc<Outbound>) -> Client {
        Client {
            outbound,
            pool: Pool::new(POOL),
        }
    }

    /// GETs `url` (http or https): a 2xx body of at most `max` bytes,
    /// within `deadline` in all (resolving, connecting, reading). Errors
    /// as text.
    pub async fn get(&self, url: &str, max: usize, deadline: Duration) -> Result<Bytes, String> {
        let get = |path: &str, authority: String| {
            hyper::Request::get(path)
                .header(hyper::header::HOST, authority)
                .header(hyper::header::ACCEPT, "application/json")
                .body(Full::new(Bytes::new()))
        };
        let answer = match tokio::time::timeout(deadline, self.fetch(url, None, get, max)).await {
            Ok(r) => r?,
            Err(_) => return Err(format!("no answer within {} s", deadline.as_secs())),
        };
        if !(200..300).contains(&answer.status) {
            return Err(format!("HTTP {}", answer.status));
        }
        if answer.truncated {
            return Err(format!("the answer is over {max} bytes"));
        }
        Ok(answer.body)
    }

    /// POSTs a JSON `body` with extra `headers` to `url` (http or https),
    /// within `deadline` in all; any status is an answer. `shown` is what
    /// an error names instead of the url when the url holds a variable's
    /// value.
    pub async fn post(
        &self,
        url: &str,
        shown: Option<&str>,
        headers: &[(&'static str, String)],
        body: Bytes,
        max: usize,
        deadline: Duration,
    ) -> Result<Answer, String> {
        let post = |path: &str, authority: String| {
            let mut req = hyper::Request::post(path)
                .header(hyper::header::HOST, authority)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "elementd-webhooks");
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            req.body(Full::new(body))
        };
        match tokio::time::timeout(deadline, self.fetch(url, shown, post, max)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
        }
    }

    async fn fetch<F>(
        &self,
        url: &str,
        shown: Option<&str>,
        build: F,
        max: usize,
    ) -> Result<Answer, String>
    where
        F: FnOnce(&str, String) -> hyper::http::Result<hyper::Request<Full<Bytes>>>,
    {
        let parsed = Url::parse(url).map_err(|_| match shown {
            Some(t) => format!("url '{t}' does not parse once filled"),
            None => format!("url '{url}' does not parse"),
        })?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            s => return Err(format!("scheme {s} is not http or https")),
        };
        // Checked on every request, pooled or not: the policy says which
        // addresses may be reached, the pool only which sockets are open.
        let addrs = self.outbound.destinations(&parsed, shown).await?;
        let host = parsed.host_str().unwrap_or_default().to_string();
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
        let mut req = build(path, authority).map_err(|e| e.to_string())?;
        let keys: Vec<Key> = addrs
            .iter()
            .map(|&addr| Key {
                tls,
                host: host.clone(),
                addr,
            })
            .collect();
        while let Some((key, mut link)) = self.pool.take(&keys) {
            if !matches!(
                tokio::time::timeout(READY, link.sender.ready()).await,
                Ok(Ok(()))
            ) {
                continue;
            }
            match link.sender.try_send_request(req).await {
                Ok(resp) => return self.answer(resp, max, key, link).await,
                // Closed by the server before the request was written: it
                // went nowhere, so another connection may carry it.
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(e.into_error().to_string()),
                },
            }
        }
        let (addr, tcp) = connect(&addrs, shown).await?;
        let key = Key { tls, host, addr };
        let mut link = if tls {
            let config = TLS.clone().ok_or("TLS is unavailable")?;
            let name = rustls::pki_types::ServerName::try_from(key.host.trim_matches(['[', ']']))
                .map_err(|e| e.to_string())?
                .to_owned();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            handshake(stream).await?
        } else {
            handshake(tcp).await?
        };
        let resp = link
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        self.answer(resp, max, key, link).await
    }

    /// Reads the answer; a connection whose body was read in full goes
    /// back to the pool for the next request to the same place.
    async fn answer(
        &self,
        resp: hyper::Response<hyper::body::Incoming>,
        max: usize,
        key: Key,
        link: Link,
    ) -> Result<Answer, String> {
        let status = resp.status().as_u16();
        let body = match Limited::new(resp.into_body(), max).collect().await {
            Ok(b) => Some(b.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                None
            }
            Err(e) => return Err(e.to_string()),
        };
        if body.is_some() {
            self.pool.put(key, link);
        }
        Ok(Answer {
            status,
            truncated: body.is_none(),
            body: body.unwrap_or_default(),
        })
    }
}

async fn connect(
    addrs: &[SocketAddr],
    shown: Option<&str>,
) -> Result<(SocketAddr, TcpStream), String> {
    let mut last = String::from("no address to connect to");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(t) => return Ok((*a, t)),
            Err(e) => {
                last = match shown {
                    Some(t) => format!("connecting to the host of {t}: {}", e.kind()),
                    None => format!("{a}: {e}"),
                }
            }
        }
    }
    Err(last)
}

async fn handshake<IO>(io: IO) -> Result<Link, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let conn = AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = conn.await;
    }));
    Ok(Link {
        sender,
        _conn: conn,
    })
}
