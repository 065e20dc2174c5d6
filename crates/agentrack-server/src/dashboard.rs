//! The web dashboard: a single page at `/` and its assets under `/assets/`, compiled into the
//! binary.
//!
//! The page is plain HTML, CSS and JavaScript modules from the crate's `web/` folder (no
//! framework and no build step), included with `include_bytes!`, so the binary serves it with no
//! network and no files at run time. It talks to the server only through the public API: the
//! token the operator signs in with is kept in the browser's session storage and sent as a
//! bearer token; the event stream is opened with a single-use ticket (`?ticket=`, from
//! `POST /v1/events/ticket`), as browsers cannot set headers on a WebSocket and a token in a URL
//! would end up in logs. Everything it shows is therefore scoped exactly like the API.
//!
//! Every response carries a strict Content-Security-Policy (scripts, styles, images and
//! connections from this origin only; no inline code, no frames, no forms posting elsewhere),
//! `nosniff`, `no-referrer` (the event stream's URL holds a ticket), and an `ETag` with
//! `Cache-Control: no-cache`, so a browser revalidates cheaply and never runs stale assets
//! after an upgrade.

use std::fmt::Write as _;
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $file)),
        }
    };
}

/// Every file of the dashboard, by the path it is served at.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/assets/style.css", "assets/style.css", CSS),
    asset!("/assets/icon.svg", "assets/icon.svg", SVG),
    asset!("/assets/app.js", "assets/app.js", JS),
    asset!("/assets/api.js", "assets/api.js", JS),
    asset!("/assets/stream.js", "assets/stream.js", JS),
    asset!("/assets/dom.js", "assets/dom.js", JS),
    asset!("/assets/format.js", "assets/format.js", JS),
    asset!("/assets/model.js", "assets/model.js", JS),
    asset!("/assets/views/signin.js", "assets/views/signin.js", JS),
    asset!("/assets/views/overview.js", "assets/views/overview.js", JS),
    asset!("/assets/views/executions.js", "assets/views/executions.js", JS),
    asset!("/assets/views/execution.js", "assets/views/execution.js", JS),
    asset!("/assets/views/cluster.js", "assets/views/cluster.js", JS),
];

/// The Content-Security-Policy of every dashboard response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Each asset's strong `ETag` (a quoted prefix of its SHA-256), in [`ASSETS`] order.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex = digest[..12].iter().fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The routes serving the dashboard (not part of the API: they are not in `/openapi.json`).
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let (Some(asset), Some(etag)) = (ASSETS.get(index), ETAGS.get(index)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    security_headers(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file added to `web/` but not to [`ASSETS`] would be a 404 in the browser.
    #[test]
    fn every_file_under_web_is_served() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        for file in files {
            let path = if file == "index.html" {
                "/".to_owned()
            } else {
                format!("/{file}")
            };
            assert!(
                ASSETS.iter().any(|asset| asset.path == path),
                "web/{file} is not in ASSETS"
            );
        }
    }

    #[test]
    fn etags_differ_between_assets() {
        let mut tags: Vec<_> = ETAGS.iter().collect();
        tags.sort_by_key(|tag| tag.as_bytes().to_vec());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
