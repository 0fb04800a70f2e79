//! The web console: static files built into the binary (`assets/console/`,
//! plain ES modules, no build step), served at `/console/…`. Every page is
//! the same `index.html`; the script routes by path and talks only to the
//! public REST API with the token the user pasted. Files live under
//! `/console/_/` (`_` starts no slug, so no circle can shadow them); the
//! icon is also at `/favicon.ico`. The JavaScript client library
//! (`clients/js/elementd.mjs`) is served the same way at
//! `/client/elementd.mjs`.

use crate::error_codes::ErrorCode;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $ct:expr),* $(,)?) => {
        const ASSETS: &[Asset] = &[$(Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/console/", $path)),
        }),*];
    };
}

const JS: &str = "text/javascript; charset=utf-8";
assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/app.js" => JS,
    "js/api.js" => JS,
    "js/ui.js" => JS,
    "js/schema-form.js" => JS,
    "js/chart.js" => JS,
    "js/circles.js" => JS,
    "js/element.js" => JS,
    "js/tabs/properties.js" => JS,
    "js/tabs/versions.js" => JS,
    "js/tabs/readme.js" => JS,
    "js/tabs/source.js" => JS,
    "js/tabs/live.js" => JS,
    "js/tabs/deliveries.js" => JS,
    "js/tabs/activity.js" => JS,
    "js/tabs/composition.js" => JS,
    "js/tabs/secrets.js" => JS,
    "js/tabs/environments.js" => JS,
    "vendor/markdown-it.min.mjs" => JS,
    "vendor/LICENSES.txt" => "text/plain; charset=utf-8",
}

/// Scripts, styles and API calls from this origin only; no inline code,
/// no frames, so a rendered README or an element's text cannot run script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(page))
        .route("/console/{*rest}", get(file_or_page))
        // Browsers ask for it on every page, linked or not.
        .route("/favicon.ico", get(favicon))
        .route("/client/elementd.mjs", get(client_library))
}

/// The JavaScript client library (`clients/js/elementd.mjs`), for pages
/// that import it from this server. A module is fetched with CORS, so any
/// origin may load it: it is public and carries no credentials.
const CLIENT: Asset = Asset {
    path: "elementd.mjs",
    content_type: JS,
    body: include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/elementd.mjs"
    )),
};

async fn client_library(headers: HeaderMap) -> Response {
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| tag_of(CLIENT.body));
    let mut resp = serve_asset(&CLIENT, tag, &headers);
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// The demo's chat page and its script (`fixtures/demo/`), served only
/// when the server runs with `--demo`, under the console's policy.
pub fn demo_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    macro_rules! demo_file {
        ($name:literal, $ct:literal) => {
            get(|| async {
                let body = include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/fixtures/demo/",
                    $name
                ));
                let mut resp = ([(header::CONTENT_TYPE, $ct)], body).into_response();
                guard(resp.headers_mut());
                resp
            })
        };
    }
    Router::new()
        .route("/demo", get(|| async { Redirect::to("/demo/") }))
        .route(
            "/demo/",
            demo_file!("index.html", "text/html; charset=utf-8"),
        )
        .route(
            "/demo/chat.js",
            demo_file!("chat.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/demo/chat.css",
            demo_file!("chat.css", "text/css; charset=utf-8"),
        )
}

async fn favicon(headers: HeaderMap) -> Response {
    serve(
        find("favicon.svg").expect("favicon.svg is built in"),
        &headers,
    )
}

async fn page(headers: HeaderMap) -> Response {
    serve(
        find("index.html").expect("index.html is built in"),
        &headers,
    )
}

async fn file_or_page(Path(rest): Path<String>, headers: HeaderMap) -> Response {
    match rest.strip_prefix("_/") {
        Some(path) => match find(path) {
            Some(i) => serve(i, &headers),
            None => crate::error::Error::not_found(ErrorCode::NotFound, "no such console file")
                .into_response(),
        },
        None => page(headers).await,
    }
}

fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|a| a.path == path)
}

/// A strong validator per file, computed once: a reload asks and gets 304.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| ASSETS.iter().map(|a| tag_of(a.body)).collect())[i]
}

fn tag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..12]))
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    serve_asset(&ASSETS[i], etag(i), headers)
}

fn serve_asset(a: &Asset, tag: &'static str, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    resp.headers_mut()
        .insert(header::ETAG, HeaderValue::from_static(tag));
    guard(resp.headers_mut());
    resp
}

/// What every built-in page and file is served with: revalidated every
/// time (the binary may have changed under the URL), under the policy.
fn guard(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_served_as_javascript() {
        assert!(ASSETS
            .iter()
            .filter(|a| a.path.ends_with("js"))
            .all(|a| a.content_type == JS));
        assert!(find("index.html").is_some());
    }
}
