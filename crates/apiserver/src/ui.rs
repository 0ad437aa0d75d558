//! The web UI at `/`: the files of `ui/dist` embedded at build time (see `build.rs`; a placeholder
//! page when the UI was not built). `index.html` is served at `/` and, as a single-page-app
//! fallback, for any other GET of a page outside the API paths; hashed files under `assets/` are
//! cached for a year. Everything else keeps the API's 404 Status.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

pub use embedded::UI_BUILT;

/// The embedded file at `path` (relative to `ui/dist`, no leading `/`).
pub fn file(path: &str) -> Option<&'static [u8]> {
    embedded::UI_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

/// The content type of a file name.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Paths that belong to the API: never answered with the UI.
fn is_api_path(path: &str) -> bool {
    [
        "/api", "/apis", "/openapi", "/version", "/healthz", "/readyz",
    ]
    .iter()
    .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// The Content-Security-Policy the UI runs under (ui/README.md: styles need `'unsafe-inline'` for
/// Mantine, CodeMirror and xterm.js; scripts nothing inline; `connect-src 'self'` covers `wss:`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn respond(path: &str, bytes: &'static [u8], immutable: bool) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A path outside the API: the UI for GET/HEAD of non-API paths, the API's 404 otherwise;
/// `wants_html` is a browser navigation (`Accept: text/html`).
pub fn serve(method: &Method, path: &str, wants_html: bool) -> Response {
    let not_found =
        || ApiError::not_found("the server could not find the requested resource").into_response();
    if !(method == Method::GET || method == Method::HEAD) || is_api_path(path) {
        return not_found();
    }
    let relative = path.trim_start_matches('/');
    if relative.is_empty() || relative == "index.html" {
        return match file("index.html") {
            Some(bytes) => respond("index.html", bytes, false),
            None => not_found(),
        };
    }
    if let Some(bytes) = file(relative) {
        return respond(relative, bytes, relative.starts_with("assets/"));
    }
    // A page of the single-page app (a browser navigation): index.html; a missing asset: 404.
    if wants_html
        && !relative.starts_with("assets/")
        && let Some(bytes) = file("index.html")
    {
        return respond("index.html", bytes, false);
    }
    not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_always_embedded_and_types_are_right() {
        let index = file("index.html").unwrap();
        assert!(String::from_utf8_lossy(index).contains("<html"));
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("assets/x.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("weird"), "application/octet-stream");
        assert!(is_api_path("/apis/kubevirt.io/v1"));
        assert!(is_api_path("/api"));
        assert!(!is_api_path("/apiary"));
        assert!(!is_api_path("/"));
    }
}
