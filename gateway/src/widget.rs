//! The storefront widget: its settings, the customer-token checker it needs,
//! and `GET /widget.js`, the script built from `gateway/widget/` and compiled
//! into the binary, so a shop needs nothing but the gateway (no CDN, no npm at
//! run time).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use loyalty_common::clock::SystemClock;
use loyalty_common::db::Database;

use crate::customer::{CustomerSecrets, CustomerTokens, TokenPolicy};
use crate::routes::AppState;

/// `npm run build` in `gateway/widget/` writes this file; it is committed, so
/// building the gateway needs no npm.
const SCRIPT: &[u8] = include_bytes!("../widget/dist/widget.js");

/// How far a shop server's clock may run ahead of the gateway's.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A strong validator: the script's SHA-256, so it changes exactly when the bytes do.
static SCRIPT_ETAG: LazyLock<String> = LazyLock::new(|| etag_of(SCRIPT));

/// A strong validator for `bytes`: the first half of their SHA-256, hex, quoted.
pub(crate) fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The widget's settings, flattened into [`crate::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct WidgetConfig {
    /// How long a customer token stays good after the shop's back end signed it, in seconds.
    #[arg(
        long,
        env = "GATEWAY_CUSTOMER_TOKEN_MAX_AGE_SECS",
        value_name = "GATEWAY_CUSTOMER_TOKEN_MAX_AGE_SECS",
        default_value_t = 900
    )]
    pub customer_token_max_age_secs: u64,
    /// How long a program's customer token secret is trusted without reading the key store again,
    /// in seconds; a rotated secret takes effect within this time. 0: read it on every request.
    #[arg(
        long,
        env = "GATEWAY_CUSTOMER_SECRET_CACHE_TTL_SECS",
        value_name = "GATEWAY_CUSTOMER_SECRET_CACHE_TTL_SECS",
        default_value_t = 30
    )]
    pub customer_secret_cache_ttl_secs: u64,
    /// How long browsers and proxies may keep `/widget.js` before asking again (they then get
    /// a 304 when it did not change), in seconds.
    #[arg(
        long,
        env = "GATEWAY_WIDGET_MAX_AGE_SECS",
        value_name = "GATEWAY_WIDGET_MAX_AGE_SECS",
        default_value_t = 300
    )]
    pub widget_max_age_secs: u64,
    /// Serve the demo shop at `/demo` (the quick start turns this on; never in production: its
    /// endpoints sign customer tokens and place orders for anyone who asks).
    #[arg(long, env = "GATEWAY_DEMO", value_name = "GATEWAY_DEMO", default_value_t = false, action = clap::ArgAction::Set)]
    pub demo: bool,
    /// The program the demo shop belongs to.
    #[arg(long, env = "GATEWAY_DEMO_PROGRAM", value_name = "GATEWAY_DEMO_PROGRAM", default_value = "demo")]
    pub demo_program: String,
    /// The storefront key the demo page embeds (public by nature, as on any storefront).
    #[arg(
        long,
        env = "GATEWAY_DEMO_STOREFRONT_KEY",
        value_name = "GATEWAY_DEMO_STOREFRONT_KEY",
        required_if_eq("demo", "true"),
        hide_env_values = true
    )]
    pub demo_storefront_key: Option<String>,
}

/// The demo shop's program and the storefront key its page embeds.
#[derive(Debug)]
pub struct DemoShop {
    pub program_id: String,
    pub storefront_key: String,
}

/// What the widget's routes need, shared by every handler.
#[derive(Clone)]
pub struct WidgetState {
    pub tokens: Arc<CustomerTokens>,
    pub script_max_age: Duration,
    /// Set only in demo mode.
    pub demo: Option<Arc<DemoShop>>,
}

impl WidgetState {
    /// Customer tokens are checked against secrets in the key database.
    pub fn new(config: &WidgetConfig, database: Database) -> Self {
        let policy =
            TokenPolicy { max_age: Duration::from_secs(config.customer_token_max_age_secs), clock_skew: CLOCK_SKEW };
        let tokens = CustomerTokens::new(
            CustomerSecrets::new(database),
            Arc::new(SystemClock),
            policy,
            Duration::from_secs(config.customer_secret_cache_ttl_secs),
        );
        let demo = match (&config.demo_storefront_key, config.demo) {
            (Some(key), true) => {
                Some(Arc::new(DemoShop { program_id: config.demo_program.clone(), storefront_key: key.clone() }))
            }
            _ => None,
        };
        Self { tokens: Arc::new(tokens), script_max_age: Duration::from_secs(config.widget_max_age_secs), demo }
    }
}

/// `GET /widget.js`: the embeddable script, cacheable, revalidated with its ETag.
pub async fn script(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cache_control = format!("public, max-age={}", state.widget.script_max_age.as_secs());
    let cache_control = HeaderValue::from_str(&cache_control).expect("a number is a valid header");
    let mut response = script_response(&headers, SCRIPT, SCRIPT_ETAG.as_str(), cache_control);
    if response.status() == StatusCode::OK {
        // Shops load it from their own pages, on another origin.
        response.headers_mut().insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    }
    response
}

/// A script the gateway embeds: 304 when `If-None-Match` names its ETag,
/// else the bytes as JavaScript (`nosniff`), both with its validators.
pub(crate) fn script_response(
    headers: &HeaderMap,
    body: &'static [u8],
    etag: &str,
    cache_control: HeaderValue,
) -> Response {
    let validators = [
        (header::ETAG, HeaderValue::from_str(etag).expect("a hex ETag is a valid header")),
        (header::CACHE_CONTROL, cache_control),
    ];
    if none_match(headers, etag) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let mut response = (validators, body).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// True when `If-None-Match` lists this ETag (or `*`); weak forms compare equal, as RFC 9110 asks for GET.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_are_read_whole() {
        let etag = SCRIPT_ETAG.as_str();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            none_match(&headers, etag)
        };
        assert!(with(etag));
        assert!(with(&format!("\"other\", W/{etag}")));
        assert!(with("*"));
        assert!(!with("\"other\""));
        assert!(!none_match(&HeaderMap::new(), etag));
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34);
    }
}
