//! One bounded HTTP GET (a JWKS document): to an address the outbound
//! policy allows, within a deadline, the body capped. The only file under
//! `runtime/` besides `dial.rs` that knows an HTTP client.

use super::outbound::Outbound;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
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
    match tokio::time::timeout(deadline, fetch(url, outbound, max)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", deadline.as_secs())),
    }
}

async fn fetch(url: &str, outbound: &Outbound, max: usize) -> Result<Bytes, String> {
    let parsed = Url::parse(url).map_err(|e| e.to_string())?;
    let addrs = outbound.destinations(&parsed, None).await?;
    let mut tcp = None;
    let mut last = String::from("no address to connect to");
    for a in &addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let path = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
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

async fn send<IO>(io: IO, req: hyper::Request<Empty<Bytes>>, max: usize) -> Result<Bytes, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // Ends with this call, whichever way it ends.
    let _conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => format!("the answer is over {max} bytes"),
                None => e.to_string(),
            },
        )?;
    Ok(body.to_bytes())
}
