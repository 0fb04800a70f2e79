//! Git smart HTTP at `/git/{circle}/{slug}.git`, served as Gitea and Soft
//! Serve do it: `git upload-pack` / `git receive-pack --stateless-rpc`
//! run as child processes, request and response streamed at the same time.

use crate::api::auth::{principal_for, token_from_headers, Principal};
use crate::api::pipeline::{path_params, resolve};
use crate::app::SharedApp;
use crate::error::{Error, Result};
use crate::store::elements::ElementRow;
use crate::types::Level;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::io::{ReaderStream, StreamReader};

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
    let unauthorized = e.status == StatusCode::UNAUTHORIZED;
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
    headers: &HeaderMap,
    circle: &str,
    repo: &str,
    service: Service,
) -> Result<(Principal, ElementRow)> {
    let secret = token_from_headers(headers)?
        .ok_or_else(|| Error::unauthorized("git needs a token: use it as the password"))?;
    let principal = principal_for(app, &secret).await?;
    let slug = repo
        .strip_suffix(".git")
        .ok_or_else(|| Error::not_found("REPOSITORY_NOT_FOUND", "repository URLs end in .git"))?;
    let (_, el) = resolve(app, Some(&principal), circle, Some(slug)).await?;
    if el.state == "deleted" {
        return Err(Error::not_found(
            "ELEMENT_NOT_FOUND",
            "the element is deleted",
        ));
    }
    principal.require(service.level())?;
    if !app.source.exists(&el.id) {
        return Err(Error::not_found(
            "REPOSITORY_MISSING",
            "the element's repository is missing; run source/repair",
        ));
    }
    Ok((principal, el))
}

/// `Git-Protocol` is passed on only when it looks like what git sends.
fn git_protocol(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("git-protocol")?.to_str().ok()?;
    let ok = v.len() <= 256
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "=:,._-".contains(c));
    ok.then(|| v.to_string())
}

fn git_command(app: &SharedApp, el: &ElementRow, service: Service, headers: &HeaderMap) -> Command {
    let mut cmd = Command::new("git");
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
        cmd.arg("-c")
            .arg(format!("core.hooksPath={}", app.hooks_dir().display()))
            .args(["-c", "receive.fsckObjects=true"])
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
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let (circle, repo) = path_params(path)?;
        let q: InfoRefsQuery = crate::api::pipeline::parse_query(q.as_deref().unwrap_or(""))?;
        let service = q
            .service
            .as_deref()
            .and_then(Service::parse)
            .ok_or_else(|| {
                Error::bad_request(
                    "SMART_HTTP_ONLY",
                    "only smart HTTP is served: ?service=git-upload-pack or git-receive-pack",
                )
            })?;
        let (_, el) = authorize(&app, &headers, &circle, &repo, service).await?;
        let out = git_command(&app, &el, service, &headers)
            .arg("--advertise-refs")
            .arg(app.source.repo_path(&el.id))
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
    method: Method,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (circle, repo, svc) = path_params(path)?;
        let service = Service::parse(&svc).ok_or_else(|| {
            Error::not_found(
                "SMART_HTTP_ONLY",
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
        let (principal, el) = authorize(&app, &headers, &circle, &repo, service).await?;
        let draft_before = match service {
            Service::ReceivePack => app.source.branch_oid(&el.id, "draft").await?,
            Service::UploadPack => None,
        };
        let mut child = git_command(&app, &el, service, &headers)
            .arg(app.source.repo_path(&el.id))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::internal(format!("running git: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let gzip = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        // Feed the request in while the response streams out.
        tokio::spawn(async move {
            let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
            let copied = if gzip {
                let mut r = async_compression::tokio::bufread::GzipDecoder::new(reader);
                tokio::io::copy(&mut r, &mut stdin).await
            } else {
                let mut r = reader;
                tokio::io::copy(&mut r, &mut stdin).await
            };
            if let Err(e) = copied {
                tracing::debug!(error = %e, "git request body ended early");
            }
            let _ = stdin.shutdown().await;
        });
        let app2 = app.clone();
        let stream = async_stream::stream! {
            let mut out = ReaderStream::new(stdout);
            while let Some(chunk) = futures::StreamExt::next(&mut out).await {
                yield chunk;
            }
            let mut err = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut err).await;
            let status = child.wait().await;
            if !status.as_ref().is_ok_and(|s| s.success()) {
                tracing::warn!(service = service.name(), stderr = %String::from_utf8_lossy(&err), "git exited with failure");
            }
            if service == Service::ReceivePack {
                // The push is in git; now it becomes a version (before the
                // response ends, so the client sees it right after).
                if let Err(e) = app2.sync_push(&el, &principal, draft_before).await {
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
