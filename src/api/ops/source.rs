//! Source ops: README, files, branches, status, promotion,
//! validation, repair and bundles.

use super::with_warnings;
use crate::api::call::{ok, Call, Payload, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::Env;
use crate::service::imports::Import;
use crate::service::App;
use crate::source::doc::README_PATH;
use crate::source::FileRead;
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn check_branch(b: Option<&str>) -> Result<String> {
    let b = b.unwrap_or("draft");
    if Env::parse(b).is_some() {
        Ok(b.to_string())
    } else {
        Err(Error::bad_request(
            ErrorCode::InvalidBranch,
            format!(
                "branch must be draft, demo or live, not '{}'",
                crate::error::shown(b)
            ),
        ))
    }
}

/// A repository-relative path: no `..`, no leading `/`, no NUL.
fn check_path(p: &str) -> Result<&str> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\0')
        || p.contains('\\')
        || p.split('/').any(|s| s == ".." || s == "." || s.is_empty());
    if p.is_empty() {
        return Err(Error::bad_request(
            ErrorCode::InvalidPath,
            "path is required: a file's path relative to the repository root",
        ));
    }
    if bad || p.len() > 4096 {
        return Err(Error::bad_request(
            ErrorCode::InvalidPath,
            format!("'{}' is not a safe relative path", crate::error::shown(p)),
        ));
    }
    Ok(p)
}

#[derive(Deserialize)]
struct FileQuery {
    path: Option<String>,
    branch: Option<String>,
}

pub async fn readme(app: &App, call: &Call) -> Result<Reply> {
    let q: FileQuery = call.query()?;
    let branch = check_branch(q.branch.as_deref())?;
    let (content, commit) = app
        .repos()
        .read_file(&call.element.id, &branch, README_PATH)
        .await?;
    ok(json!({
        "content": String::from_utf8_lossy(&content.unwrap_or_default()),
        "format": "markdown",
        "branch": branch,
        "commit": commit,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadmeBody {
    content: String,
}

pub async fn readme_update(app: &App, call: &Call) -> Result<Reply> {
    let body: ReadmeBody = call.body()?;
    let applied = app
        .elements()
        .update_readme(&call.ctx, call.element_owned(), body.content)
        .await?;
    ok(with_warnings(app, &applied.element, &applied.warnings))
}

/// Largest file the `source` op answers with; a larger one is answered
/// with its size and `truncated: true` (clone the repository to read it).
pub const MAX_SOURCE_ANSWER_BYTES: u64 = crate::config::BODY_LIMIT as u64;

pub async fn source(app: &App, call: &Call) -> Result<Reply> {
    let q: FileQuery = call.query()?;
    let path = check_path(q.path.as_deref().unwrap_or(""))?.to_string();
    let branch = check_branch(q.branch.as_deref())?;
    let (read, commit) = app
        .repos()
        .read_file_capped(&call.element.id, &branch, &path, MAX_SOURCE_ANSWER_BYTES)
        .await?;
    let mut out = json!({"path": path, "branch": branch, "commit": commit,
        "exists": !matches!(read, FileRead::Missing), "truncated": false, "content": ""});
    match read {
        FileRead::Missing => out["size"] = json!(0),
        FileRead::TooLarge(size) => {
            out["size"] = json!(size);
            out["truncated"] = json!(true);
            out["max_bytes"] = json!(MAX_SOURCE_ANSWER_BYTES);
            out["message"] = json!(format!(
                "the file is {size} bytes; the source op returns files of at most \
                 {MAX_SOURCE_ANSWER_BYTES} bytes: clone the repository to read it"
            ));
        }
        FileRead::Content(bytes) => {
            out["size"] = json!(bytes.len());
            match String::from_utf8(bytes) {
                Ok(text) => out["content"] = json!(text),
                Err(e) => out["content_base64"] = json!(B64.encode(e.as_bytes())),
            }
        }
    }
    ok(out)
}

pub async fn branches(app: &App, call: &Call) -> Result<Reply> {
    let (branches, links) = app.repos().branches(&call.element.id).await?;
    ok(json!({"branches": branches, "promotions": links}))
}

pub async fn status(app: &App, call: &Call) -> Result<Reply> {
    let el = &call.element;
    let host = call
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&app.config().listen)
        .to_string();
    let url = format!("http://{host}/git/{}/{}.git", el.circle(), el.slug);
    let drift = app.repos().drift(el).await?;
    use crate::service::source_sync::DriftKind;
    let health = if drift.iter().any(|d| d.kind == DriftKind::MissingRepository) {
        "error"
    } else if drift.is_empty() {
        "ok"
    } else {
        "warning"
    };
    let draft = if app.repos().exists(&el.id) {
        app.repos().head(&el.id, "draft").await?
    } else {
        None
    };
    ok(json!({
        "clone_url": url,
        "default_branch": "draft",
        "draft_commit": draft,
        "checkout": [
            format!("git clone {url}"),
            format!("cd {}", el.slug),
            "git checkout draft".to_string(),
            "git commit -am 'describe the change' && git push origin draft".to_string(),
        ],
        "promote": [
            format!("POST /api/{}/{}/ops/source/promote {{\"from\":\"draft\",\"to\":\"demo\"}}", el.circle(), el.slug),
            format!("POST /api/{}/{}/ops/source/promote {{\"from\":\"demo\",\"to\":\"live\"}}", el.circle(), el.slug),
        ],
        "health": health,
        "warnings": drift.iter().map(|d| d.message.clone()).collect::<Vec<_>>(),
        "auth": {
            "hint": "use an elementd token as the password (any user name), e.g. git clone http://token:<TOKEN>@host/...; or Authorization: Bearer via http.extraHeader",
            "fetch_role": "viewer",
            "push_role": "member",
        },
        "export": format!("GET /api/{}/{}/ops/export/bundle", el.circle(), el.slug),
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    branch: Option<String>,
}

pub async fn validate(app: &App, call: &Call) -> Result<Reply> {
    let body: ValidateBody = call.body()?;
    let branch = check_branch(body.branch.as_deref())?;
    let el = &call.element;
    let (scan, commit) = app.repos().scan(&el.id, &branch).await?;
    let checked = scan.check(app.types(), Some((&el.element_type, &el.slug)));
    ok(json!({
        "branch": branch,
        "commit": commit,
        "valid": checked.findings.is_empty(),
        "files": checked.files,
        "findings": checked.findings,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepairBody {
    dry_run: Option<bool>,
}

pub async fn repair(app: &App, call: &Call) -> Result<Reply> {
    let body: RepairBody = call.body()?;
    let dry_run = body.dry_run.unwrap_or(true);
    let el = &call.element;
    let drift = app.repos().drift(el).await?;
    let mut repaired = Vec::new();
    if !dry_run && !drift.is_empty() {
        let result = app
            .repos()
            .repair(&call.ctx, el, &drift, &mut repaired)
            .await;
        // What was fixed is told, also when the repair stopped early.
        if result.is_ok() || !repaired.is_empty() {
            let data = json!({"drift": drift, "repaired": repaired});
            app.records()
                .emit(call.ctx.event(el, EventKind::SourceRepaired, data))
                .await;
        }
        result?;
    }
    let remaining = if dry_run {
        drift.clone()
    } else {
        app.repos().drift(el).await?
    };
    ok(json!({
        "dry_run": dry_run,
        "drift": drift,
        "repaired": repaired,
        "in_sync": remaining.is_empty(),
    }))
}

pub async fn export_bundle(app: &App, call: &Call) -> Result<Reply> {
    let el = &call.element;
    if !el.is_root() {
        let bytes = app.repos().export_bundle(&el.id).await?;
        app.records().progress(&call.ctx, el, 1, 1).await;
        return Ok((
            StatusCode::OK,
            Payload::Download {
                content_type: "application/x-git-bundle",
                filename: format!("{}.bundle", el.slug),
                bytes,
            },
        ));
    }
    let mut elements = Vec::new();
    let mut errors = Vec::new();
    let mut withheld = Vec::new();
    let children = app.elements().children(el).await?;
    let total = children.len();
    for (i, child) in children.into_iter().enumerate() {
        // A caller who left gets nothing: stop before the next bundle.
        call.ctx.check_cancelled()?;
        if i > 0 {
            app.records().progress(&call.ctx, el, i, total).await;
        }
        // What the caller may not read stays out, and is named.
        if !crate::service::gate::may_read(app, call.caller(), &child).await? {
            withheld.push(json!({"slug": child.slug, "reason": "a policy on it withholds it from this caller"}));
            continue;
        }
        match app.repos().export_bundle(&child.id).await {
            Ok(b) => elements.push(json!({
                "slug": child.slug,
                "element_type": child.element_type,
                "bundle_base64": B64.encode(b),
            })),
            Err(e) => errors.push(json!({"slug": child.slug, "error": e.message})),
        }
    }
    app.records().progress(&call.ctx, el, total, total).await;
    ok(json!({"circle": el.slug, "elements": elements, "errors": errors, "withheld": withheld}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleItem {
    bundle_base64: String,
    /// What a circle's export says the bundle holds; checked against it.
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    element_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    bundle_base64: Option<String>,
    elements: Option<Vec<BundleItem>>,
    #[serde(default)]
    overwrite: bool,
}

pub async fn import_bundle(app: &App, call: &Call) -> Result<Reply> {
    let body: ImportBody = call.body()?;
    let circle = &call.element;
    if !circle.is_root() {
        return Err(Error::bad_request(
            ErrorCode::ImportToCircle,
            "bundles are imported into a circle: POST /api/{circle}/ops/import/bundle",
        ));
    }
    let items = body.elements.unwrap_or_default();
    let said: Vec<(Option<String>, Option<String>)> = items
        .iter()
        .map(|i| (i.slug.clone(), i.element_type.clone()))
        .collect();
    let mut encoded: Vec<String> = items.into_iter().map(|i| i.bundle_base64).collect();
    encoded.extend(body.bundle_base64);
    if encoded.is_empty() {
        return Err(Error::bad_request(
            ErrorCode::MissingField,
            "send bundle_base64 (or elements: [{bundle_base64}])",
        ));
    }
    let bundles: Vec<Vec<u8>> = encoded
        .iter()
        .enumerate()
        .map(|(i, b64)| {
            B64.decode(b64.trim()).map_err(|e| {
                Error::bad_request(
                    ErrorCode::InvalidBundle,
                    format!("bundle {i}: not base64: {e}"),
                )
            })
        })
        .collect::<Result<_>>()?;
    let asked = Import {
        bundles,
        said,
        overwrite: body.overwrite,
    };
    let done = app
        .elements()
        .import_bundles(&call.ctx, call.caller(), circle, asked)
        .await?;
    ok(json!({
        "imported": done.imported.len(),
        "skipped": done.skipped.len(),
        "elements": done.imported,
        "skipped_slugs": done.skipped,
        "errors": done.errors,
    }))
}
