//! The admin console at `/admin`: a page shell and the script built from
//! `gateway/console/` (committed, compiled into the binary like the widget:
//! no CDN, no npm at run time). The console signs in with an admin API key
//! and does everything through the public HTTP API, so it can do nothing an
//! integrator cannot.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::widget::{etag_of, script_response};

/// `npm run build` in `gateway/console/` writes this file; it is committed.
const SCRIPT: &[u8] = include_bytes!("../console/dist/console.js");

static SCRIPT_ETAG: LazyLock<String> = LazyLock::new(|| etag_of(SCRIPT));

/// The page: the script builds everything in `#console`.
const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Loyalty console</title></head>\n\
<body><div id=\"console\"></div><script src=\"/admin/console.js\"></script></body></html>\n";

/// Nothing but this origin's script, styles and API; never framed; the
/// sign-in link's key (in the fragment) is never sent anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /admin`.
pub async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, PAGE).into_response()
}

/// `GET /admin/console.js`: revalidated on every load (an admin tool follows the gateway it runs on).
pub async fn script(headers: HeaderMap) -> Response {
    script_response(&headers, SCRIPT, SCRIPT_ETAG.as_str(), HeaderValue::from_static("no-cache"))
}
