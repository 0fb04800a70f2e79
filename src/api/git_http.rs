//! Git smart HTTP at `/git/{circle}/{slug}.git`, served as Gitea and Soft
//! Serve do it: `git upload-pack` / `git receive-pack --stateless-rpc`
//! run as child processes, request and response streamed at the same time.

use crate::api::auth::{principal_for, token_from_headers};
use crate::api::input::path_params;
use crate::api::pipeline::resolve;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model;
use crate::model::Element;
use crate::service::principal::Principal;
use crate::service::SharedApp;
use crate::types::Level;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::process::Command;
use tokio_util::io::{ReaderStream, StreamReader};

/// Room in a request body beyond the pack for the ref updates and their
/// framing: git's own `receive.maxInputSize` (the push cap) counts only
/// the pack, and must be the one to trip first, because its message is
/// the one the git client prints.
const REQUEST_SLACK: u64 = 1 << 20;
/// How much of git's stderr a failure log keeps.
const STDERR_KEPT: u64 = 16 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    fn parse(s: &str) -> Option<Service> {
        match s {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::ReceivePack => "receive-pack",
        }
    }
    fn level(self) -> Level {
        match self {
            Service::UploadPack => Level::Read,
            Service::ReceivePack => Level::Write,
        }
    }
}

/// Errors here carry a Basic challenge so `git` asks for credentials.
fn git_error(e: Error) -> Response {
    let unauthorized = e.kind == crate::error::Kind::Unauthenticated;
    let mut resp = e.into_response();
    if unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"elementd\""),
        );
    }
    resp
}

/// Authenticates and resolves the repository for `service`.
async fn authorize(
    app: &SharedApp,
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    circle: &str,
    repo: &str,
    service: Service,
) -> Result<(Principal, Element)> {
    let secret = token_from_headers(headers)?
        .ok_or_else(|| Error::unauthorized("git needs a token: use it as the password"))?;
    let principal = principal_for(app, &secret, Some(peer)).await?;
    // `git clone …/acme/chat` works as `…/acme/chat.git` does.
    let slug = repo.strip_suffix(".git").unwrap_or(repo);
    let (_, el) = resolve(app, Some(&principal), circle, Some(slug)).await?;
    if el.state == model::State::Deleted {
        return Err(Error::not_found(
            ErrorCode::ElementNotFound,
            "the element is deleted",
        ));
    }
    // The same gate as REST: role or scopes, origin, the element's own and
    // inherited modifiers, and rate limits (each git request counts).
    let caller = crate::service::gate::Caller {
        principal: Some(&principal),
        origin: crate::api::call::origin_of(headers),
        peer: Some(peer),
    };
    let want = crate::service::gate::Want {
        op: service.name(),
        level: service.level(),
        charge: true,
    };
    crate::service::gate::pass(app, caller, &el, want).await?;
    if service == Service::ReceivePack {
        push_rules_ready(app)?;
        app.policy().admit_push(&principal.actor(), &el).await?;
    }
    if !app.repos().exists(&el.id) {
        return Err(Error::not_found(
            ErrorCode::RepositoryMissing,
            "the element's repository is missing; run source/repair",
        ));
    }
    Ok((principal, std::sync::Arc::unwrap_or_clone(el)))
}

/// git takes every push when its pre-receive hook is missing, so a push
/// is refused unless the hook is where git looks and both it and the
/// binary it runs can run: the rules fail closed.
fn push_rules_ready(app: &SharedApp) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        p.is_absolute()
            && std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let hook = app.hooks_dir().join("pre-receive");
    let bin = app.hook_bin();
    if runnable(&hook) && runnable(&bin) {
        return Ok(());
    }
    tracing::error!(hook = %hook.display(), bin = %bin.display(), "push refused: the pre-receive hook cannot run");
    Err(Error::new(
        crate::error::Kind::Internal,
        crate::error::Class::Internal,
        ErrorCode::PushRulesUnavailable,
        "push refused: the server cannot run its push rules, so it takes no push; \
         nothing was changed (the operator's log says why)",
    ))
}

/// `Git-Protocol` is passed on only when it looks like what git sends.
fn git_protocol(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("git-protocol")?.to_str().ok()?;
    let ok = v.len() <= 256
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "=:,._-".contains(c));
    ok.then(|| v.to_string())
}

/// Memory bounds for the packing and indexing git does, so a repository
/// of highly compressible blobs cannot make each clone cost hundreds of MB:
/// one thread, bounded delta windows and caches, and no deltas for blobs
/// over 1 MiB (they are streamed as they are).
const PACK_LIMITS: [&str; 6] = [
    "pack.threads=1",
    "pack.windowMemory=32m",
    "pack.deltaCacheSize=16m",
    "core.bigFileThreshold=1m",
    "core.packedGitLimit=128m",
    "core.packedGitWindowSize=16m",
];

/// A place for one git process, or 503 with Retry-After: the node, the
/// token and the address each run a bounded number at once.
fn git_place(
    app: &SharedApp,
    principal: &Principal,
    peer: std::net::IpAddr,
) -> Result<crate::service::throttle::Place> {
    let l = &app.config().limits;
    let keys = vec![
        format!("token:{}", principal.token_id),
        format!("ip:{peer}"),
    ];
    app.git_places()
        .take(keys, l.max_git_processes, l.max_git_processes_per_client)
        .ok_or_else(|| {
            Error::new(
                crate::error::Kind::Unavailable,
                crate::error::Class::Limit,
                ErrorCode::GitBusy,
                format!(
                    "too many git requests at once (this node runs {} at most, {} per token or address); \
                     try again shortly",
                    l.max_git_processes, l.max_git_processes_per_client
                ),
            )
            .retry_after(1)
        })
}

fn git_command(app: &SharedApp, el: &Element, service: Service, headers: &HeaderMap) -> Command {
    let mut cmd = Command::new("git");
    for c in PACK_LIMITS {
        cmd.arg("-c").arg(c);
    }
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    ] {
        cmd.env_remove(var);
    }
    if service == Service::ReceivePack {
        let cap = app.config().limits.max_push_bytes;
        cmd.arg("-c")
            .arg(format!("core.hooksPath={}", app.hooks_dir().display()))
            .args(["-c", "receive.fsckObjects=true"])
            // git refuses a pack over the cap itself ("pack exceeds maximum
            // allowed size"), and streams blobs over 1 MiB to disk instead
            // of inflating each whole into memory.
            .arg("-c")
            .arg(format!("receive.maxInputSize={cap}"))
            .env("ELEMENTD_MAX_PUSH_BYTES", cap.to_string())
            .env("ELEMENTD_HOOK_BIN", app.hook_bin())
            .env("ELEMENTD_ELEMENT_TYPE", &el.element_type)
            .env("ELEMENTD_ELEMENT_SLUG", &el.slug)
            .env("ELEMENTD_ELEMENT_CIRCLE", el.circle());
    } else {
        cmd.args(["-c", "uploadpack.allowFilter=true"]);
    }
    if let Some(p) = git_protocol(headers) {
        cmd.env("GIT_PROTOCOL", p);
    }
    cmd.arg(service.name()).arg("--stateless-rpc");
    cmd.kill_on_drop(true);
    cmd
}

#[derive(Deserialize)]
pub struct InfoRefsQuery {
    service: Option<String>,
}

/// `GET /git/{circle}/{repo}/info/refs?service=…`
pub async fn info_refs(
    State(app): State<SharedApp>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let (circle, repo) = path_params(path)?;
        let q: InfoRefsQuery = crate::api::input::parse_query(q.as_deref().unwrap_or(""))?;
        let service = q
            .service
            .as_deref()
            .and_then(Service::parse)
            .ok_or_else(|| {
                Error::bad_request(
                    ErrorCode::SmartHttpOnly,
                    "only smart HTTP is served: ?service=git-upload-pack or git-receive-pack",
                )
            })?;
        let (principal, el) =
            authorize(&app, remote.ip(), &headers, &circle, &repo, service).await?;
        let _place = git_place(&app, &principal, remote.ip())?;
        let out = git_command(&app, &el, service, &headers)
            .arg("--advertise-refs")
            .arg(app.repos().path(&el.id))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::internal(format!("running git: {e}")))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "git {} --advertise-refs: {}",
                service.name(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut body = Vec::new();
        if !git_protocol(&headers).is_some_and(|p| p.contains("version=2")) {
            let line = format!("# service=git-{}\n", service.name());
            body.extend(format!("{:04x}{line}0000", line.len() + 4).into_bytes());
        }
        body.extend(out.stdout);
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                format!("application/x-git-{}-advertisement", service.name()),
            )
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from(body))
            .map_err(Error::internal)
    };
    run.await.unwrap_or_else(git_error)
}

/// `POST /git/{circle}/{repo}/git-upload-pack` and `…/git-receive-pack`.
pub async fn rpc(
    State(app): State<SharedApp>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (circle, repo, svc) = path_params(path)?;
        let service = Service::parse(&svc).ok_or_else(|| {
            Error::not_found(
                ErrorCode::SmartHttpOnly,
                "no such git endpoint: only smart HTTP is served \
                 (GET info/refs?service=…, POST git-upload-pack or git-receive-pack)",
            )
        })?;
        if method != Method::POST {
            return Err(Error::method_not_allowed(
                "POST",
                format!("git-{} takes POST", service.name()),
            ));
        }
        let (principal, el) =
            authorize(&app, remote.ip(), &headers, &circle, &repo, service).await?;
        let limit = app
            .config()
            .limits
            .max_push_bytes
            .saturating_add(REQUEST_SLACK);
        if let Err(e) = check_length(&headers, limit, service) {
            crate::api::input::drain_after_refusal(&headers, body.into_data_stream());
            return Err(e);
        }
        let draft_before = match service {
            Service::ReceivePack => app.repos().head(&el.id, "draft").await?,
            Service::UploadPack => None,
        };
        let gzip = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let place = git_place(&app, &principal, remote.ip())?;
        let mut git = git_command(&app, &el, service, &headers);
        git.arg(app.repos().path(&el.id));
        let within = app.config().limits.git_body_timeout;
        let (mut child, stdout, stderr) = run_git(git, body, gzip, (limit, within))?;
        let app2 = app.clone();
        let stream = async_stream::stream! {
            // The place is held until git has finished.
            let _place = place;
            let mut out = ReaderStream::new(stdout);
            while let Some(chunk) = futures::StreamExt::next(&mut out).await {
                yield chunk;
            }
            let err = stderr.await.unwrap_or_default();
            let status = child.wait().await;
            if !status.as_ref().is_ok_and(|s| s.success()) {
                tracing::warn!(service = service.name(), stderr = %String::from_utf8_lossy(&err), "git exited with failure");
            }
            if service == Service::ReceivePack {
                // The push is in git; now it becomes a version (before the
                // response ends, so the client sees it right after).
                if let Err(e) = app2.repos().sync_push(&el, principal.actor(), draft_before).await {
                    tracing::error!(element = %el.id, error = %e, "push accepted by git but not recorded; source/repair reports the drift");
                }
            }
        };
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                format!("application/x-git-{}-result", service.name()),
            )
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(stream))
            .map_err(Error::internal)
    };
    run.await.unwrap_or_else(git_error)
}

/// Starts git with the request body fed to its stdin (cut off past
/// `limit`) while the caller streams its stdout; its stderr is read
/// beside them, so git never blocks on a full pipe, and only the start is
/// kept for the log.
fn run_git(
    mut git: Command,
    body: Body,
    gzip: bool,
    (limit, within): (u64, std::time::Duration),
) -> Result<(
    tokio::process::Child,
    tokio::process::ChildStdout,
    tokio::task::JoinHandle<Vec<u8>>,
)> {
    let mut child = git
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("running git: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut kept = Vec::new();
        let mut r = stderr;
        let _ = (&mut r).take(STDERR_KEPT).read_to_end(&mut kept).await;
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
        kept
    });
    // Past the limit, or the deadline, git gets an early end of input
    // and gives up: a trickled body cannot hold a git process for ever.
    tokio::spawn(async move {
        let mut reader = request_reader(body, gzip, limit);
        let copied = tokio::time::timeout(within, tokio::io::copy(&mut reader, &mut stdin)).await;
        match copied {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                tracing::warn!(limit, "git request body over the limit; cut off");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "git request body ended early"),
            Err(_) => tracing::warn!(?within, "git request body too slow; cut off"),
        }
        let _ = stdin.shutdown().await;
    });
    Ok((child, stdout, stderr))
}

/// A request that says it is over the limit is refused before git runs.
fn check_length(headers: &HeaderMap, limit: u64, service: Service) -> Result<()> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > limit => Err(Error::too_large(
            ErrorCode::GitRequestTooLarge,
            format!(
                "the git-{} request is {n} bytes; at most {limit} are accepted \
                 (the push limit, ELEMENTD_MAX_PUSH_BYTES, plus {REQUEST_SLACK} for ref updates)",
                service.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// The request body as git reads it: gunzipped when it says so, and cut
/// off with an error past `limit` bytes, counted both as received and as
/// decoded (a small gzip body can inflate without bound).
fn request_reader(body: Body, gzip: bool, limit: u64) -> Pin<Box<dyn AsyncRead + Send>> {
    let raw = Capped::new(
        StreamReader::new(body.into_data_stream().map_err(std::io::Error::other)),
        limit,
    );
    if gzip {
        let inflated =
            async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(raw));
        Box::pin(Capped::new(inflated, limit))
    } else {
        Box::pin(raw)
    }
}

/// Passes bytes through until more than `left` did, then fails.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        if n > self.left {
            // An error hands over nothing: the bytes just read are dropped.
            buf.set_filled(before);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("request body over {} bytes", self.limit),
            )));
        }
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read(body: Vec<u8>, gzip: bool, limit: u64) -> std::io::Result<usize> {
        let mut out = Vec::new();
        request_reader(Body::from(body), gzip, limit)
            .read_to_end(&mut out)
            .await
    }

    #[tokio::test]
    async fn bodies_are_cut_at_the_limit_raw_and_inflated() {
        assert_eq!(read(vec![7; 1000], false, 1000).await.unwrap(), 1000);
        let e = read(vec![7; 1001], false, 1000).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        // 8 MiB of zeros gzip to a few KiB: the inflated count trips.
        let mut gz = Vec::new();
        let zeros = vec![0u8; 8 << 20];
        async_compression::tokio::bufread::GzipEncoder::new(&zeros[..])
            .read_to_end(&mut gz)
            .await
            .unwrap();
        assert!(gz.len() < 64 << 10, "{}", gz.len());
        let e = read(gz.clone(), true, 1 << 20).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(read(gz, true, 8 << 20).await.unwrap(), 8 << 20);
    }
}
