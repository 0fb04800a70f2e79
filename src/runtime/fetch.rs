//! Bounded HTTP requests: a GET (a JWKS document) and a signed POST (a
//! webhook delivery), each to an address the outbound policy allows,
//! within a deadline, the answer's body capped. The only file under
//! `runtime/` besides `dial.rs` that knows an HTTP client.

use super::outbound::Outbound;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
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

/// GETs `url` (http or https): a 2xx body of at most `max` bytes, within
/// `deadline` in all (resolving, connecting, reading). Errors as text.
pub async fn get(
    url: &str,
    outbound: &Outbound,
    max: usize,
    deadline: Duration,
) -> Result<Bytes, String> {
    let get = |path: &str, authority: String| {
        hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
    };
    let answer = match tokio::time::timeout(deadline, fetch(url, None, outbound, get, max)).await {
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

/// What a request got back: its status and at most `max` bytes of body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The body was over `max` bytes and is not kept.
    pub truncated: bool,
}

/// POSTs a JSON `body` with extra `headers` to `url` (http or https),
/// within `deadline` in all; any status is an answer. `shown` is what an
/// error names instead of the url when the url holds a variable's value.
pub async fn post(
    url: &str,
    shown: Option<&str>,
    outbound: &Outbound,
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
    match tokio::time::timeout(deadline, fetch(url, shown, outbound, post, max)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

async fn fetch<B, F>(
    url: &str,
    shown: Option<&str>,
    outbound: &Outbound,
    build: F,
    max: usize,
) -> Result<Answer, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(&str, String) -> hyper::http::Result<hyper::Request<B>>,
{
    let parsed = Url::parse(url).map_err(|_| match shown {
        Some(t) => format!("url '{t}' does not parse once filled"),
        None => format!("url '{url}' does not parse"),
    })?;
    let addrs = outbound.destinations(&parsed, shown).await?;
    let mut tcp = None;
    let mut last = String::from("no address to connect to");
    for a in &addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => {
                last = match shown {
                    Some(t) => format!("connecting to the host of {t}: {}", e.kind()),
                    None => format!("{a}: {e}"),
                }
            }
        }
    }
    let tcp = tcp.ok_or(last)?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let path = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let req = build(path, authority).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" => send(tcp, req, max).await,
        "https" => {
            let config = TLS.clone().ok_or("TLS is unavailable")?;
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                .map_err(|e| e.to_string())?
                .to_owned();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(tls, req, max).await
        }
        s => Err(format!("scheme {s} is not http or https")),
    }
}

async fn send<IO, B>(io: IO, req: hyper::Request<B>, max: usize) -> Result<Answer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // Ends with this call, whichever way it ends.
    let _conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
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
    Ok(Answer {
        status,
        truncated: body.is_none(),
        body: body.unwrap_or_default(),
    })
}
