//! The live-polling web app: the static files under `web/`, embedded in the
//! binary at build time and served at `/` (landing), `/present` (presenter
//! view), `/screen` (the projector's view), `/join` (participant view), `/admin`
//! (the admin console) and `/assets/…` (styles, scripts, icon).
//!
//! For work on the pages, `POLLCAST_WEB_DIR=web` serves the same table from
//! that folder instead, read on every request: edit, reload, no rebuild.
//! The table still decides which paths exist.
//!
//! This module owns the table of those files, their `Content-Type`s and the
//! headers every one of them carries: `Cache-Control: no-cache` (the files
//! change with the binary) and a Content-Security-Policy that allows only
//! this origin, since the app talks to nothing else. A path that is not in
//! the table is left to the router's 404.

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Same origin only: scripts, styles, images, fetches and EventSource.
/// No inline scripts or style attributes in the markup (the scripts set
/// sizes through the CSSOM, which the policy allows).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    /// Its file under `web/`.
    file: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset {
            path: $path,
            file: $file,
            content_type: $content_type,
            body: include_bytes!(concat!("../../web/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/present", HTML, "present.html"),
    asset!("/screen", HTML, "screen.html"),
    asset!("/join", HTML, "join.html"),
    asset!("/admin", HTML, "admin.html"),
    asset!("/assets/app.css", CSS, "app.css"),
    asset!("/assets/screen.css", CSS, "screen.css"),
    asset!("/assets/screen-results.css", CSS, "screen-results.css"),
    asset!("/assets/admin.css", CSS, "admin.css"),
    asset!("/assets/favicon.svg", SVG, "favicon.svg"),
    asset!("/assets/js/api.js", JS, "js/api.js"),
    asset!("/assets/js/dom.js", JS, "js/dom.js"),
    asset!("/assets/js/feed.js", JS, "js/feed.js"),
    asset!("/assets/js/results.js", JS, "js/results.js"),
    asset!("/assets/js/home.js", JS, "js/home.js"),
    asset!("/assets/js/present.js", JS, "js/present.js"),
    asset!("/assets/js/join.js", JS, "js/join.js"),
    asset!("/assets/js/screen.js", JS, "js/screen.js"),
    asset!("/assets/js/screen-state.js", JS, "js/screen-state.js"),
    asset!("/assets/js/screen-feed.js", JS, "js/screen-feed.js"),
    asset!("/assets/js/screen-results.js", JS, "js/screen-results.js"),
    asset!("/assets/js/screen-views.js", JS, "js/screen-views.js"),
    asset!("/assets/js/admin.js", JS, "js/admin.js"),
    asset!("/assets/js/admin-sse.js", JS, "js/admin-sse.js"),
];

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// Whether `path` (without query) is one of the app's files: the router's
/// table of allowed methods answers `GET` for these.
pub fn serves(path: &str) -> bool {
    find(path).is_some()
}

/// The folder `POLLCAST_WEB_DIR` names, read once.
fn web_dir() -> Option<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("POLLCAST_WEB_DIR").map(Into::into))
        .as_deref()
}

fn respond(asset: &'static Asset) -> Response {
    let body = match web_dir().and_then(|dir| std::fs::read(dir.join(asset.file)).ok()) {
        Some(bytes) => bytes.into(),
        None => asset.body.into(),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET` on one of the app's paths (any query string); rejects everything
/// else as not found, so the router's fallback answers 404 or 405.
pub fn routes() -> BoxedFilter<(Response,)> {
    warp::get()
        .and(warp::path::full())
        .and_then(|path: warp::path::FullPath| async move {
            find(path.as_str())
                .map(respond)
                .ok_or_else(warp::reject::not_found)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(method: &str, path: &str) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = warp::service(routes()).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn pages_and_assets_have_their_type_and_policy() {
        for (path, content_type) in [
            ("/", HTML),
            ("/present?session=x", HTML),
            ("/join?code=abc", HTML),
            ("/assets/app.css", CSS),
            ("/assets/js/feed.js", JS),
            ("/assets/favicon.svg", SVG),
        ] {
            let (status, headers, body) = get("GET", path).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers["content-security-policy"], CSP, "{path}");
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_not_taken() {
        for path in [
            "/assets/nope.js",
            "/present/",
            "/web/index.html",
            "/assets/../Cargo.toml",
        ] {
            assert!(!serves(path), "{path}");
            assert_eq!(get("GET", path).await.0, 404, "{path}");
        }
        assert_ne!(get("POST", "/").await.0, 200);
    }

    #[test]
    fn every_import_and_link_is_served() {
        // A script importing a file missing from the table would fail in the
        // browser only; check the imports and the pages' links here.
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split(['\'', '"']).nth(1).unwrap();
                let path = format!("/assets/js/{}", target.trim_start_matches("./"));
                assert!(serves(&path), "{} imports {target}, not served", asset.path);
            }
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for link in text.split('"').filter(|p| p.starts_with("/assets/")) {
                assert!(serves(link), "{} links {link}, not served", asset.path);
            }
        }
    }
}
