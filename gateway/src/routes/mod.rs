//! The HTTP API: the route table, the middleware stack and the shared state.
//! Handlers live beside this file, one module per audience; each turns one
//! request into calls to the backends and never touches prost types itself.

pub mod admin;
pub mod customers;
pub mod demo;
pub mod insights;
pub mod ops;
pub mod orders;
pub mod privacy;
pub mod program;
pub mod referrals;
pub mod rewards;
pub mod tiers;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use loyalty_common::db::Database;

use crate::console;
use crate::customer::CustomerTokens;
use crate::extract::{Admission, CUSTOMER_TOKEN_HEADER};
use crate::observe::{self, HttpMetrics};
use crate::problem::Problem;
use crate::unread;
use crate::upstream::{Failure, Upstreams};
use crate::widget::{self, WidgetState};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub upstreams: Upstreams,
    pub admission: Admission,
    pub database: Database,
    pub openapi: Arc<String>,
    pub widget: WidgetState,
}

impl FromRef<AppState> for Admission {
    fn from_ref(state: &AppState) -> Self {
        state.admission.clone()
    }
}

impl FromRef<AppState> for Arc<CustomerTokens> {
    fn from_ref(state: &AppState) -> Self {
        state.widget.tokens.clone()
    }
}

/// One route of the API: what `/openapi.json` must document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
}

/// The router and the list of routes it serves, built together so the list cannot drift.
struct RouteTable {
    router: Router<AppState>,
    specs: Vec<RouteSpec>,
}

impl RouteTable {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum can route");
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.specs.push(RouteSpec { method, path });
        self
    }
}

/// How the HTTP layer behaves, from the config.
pub struct HttpSettings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub cors_origins: Vec<String>,
}

/// The whole application, and the routes it documents.
pub fn router(state: AppState, metrics: HttpMetrics, settings: &HttpSettings) -> (Router, Vec<RouteSpec>) {
    let table = RouteTable { router: Router::new(), specs: Vec::new() }
        .add(Method::GET, "/healthz", ops::healthz)
        .add(Method::GET, "/readyz", ops::readyz)
        // Shop back end.
        .add(Method::POST, "/v1/orders", orders::earn_for_order)
        .add(Method::GET, "/v1/orders/preview", orders::preview_order)
        .add(Method::POST, "/v1/orders/{order_id}/refunds", orders::refund_order)
        .add(Method::POST, "/v1/orders/{order_id}/points", orders::apply_checkout_points)
        .add(Method::POST, "/v1/customers/{customer_id}/activities", customers::record_activity)
        // Storefront.
        .add(Method::GET, "/v1/customers/{customer_id}/loyalty", customers::loyalty_page)
        .add(Method::GET, "/v1/customers/{customer_id}/profile", customers::profile)
        .add(Method::PUT, "/v1/customers/{customer_id}/profile", customers::put_profile)
        .add(Method::PUT, "/v1/customers/{customer_id}/birthday", customers::set_birthday)
        .add(Method::GET, "/v1/customers/{customer_id}/transactions", customers::transactions)
        .add(Method::GET, "/v1/customers/{customer_id}/checkout-points", orders::quote_checkout_points)
        .add(Method::GET, "/v1/program", program::overview)
        // Admin.
        .add(Method::POST, "/v1/customers/{customer_id}/adjustments", admin::adjust)
        .add(Method::GET, "/v1/settings", admin::get_settings)
        .add(Method::PUT, "/v1/settings", admin::put_settings)
        .add(Method::GET, "/v1/campaigns", admin::list_campaigns)
        .add(Method::POST, "/v1/campaigns", admin::create_campaign)
        .add(Method::PUT, "/v1/campaigns/{campaign_id}", admin::update_campaign)
        .add(Method::POST, "/v1/campaigns/{campaign_id}/end", admin::end_campaign)
        .add(Method::GET, "/v1/audit", admin::audit)
        // Admin: the customer's rights.
        .add(Method::GET, "/v1/customers/{customer_id}/export", privacy::export)
        .add(Method::DELETE, "/v1/customers/{customer_id}", privacy::erase)
        // Storefront: rewards and referrals.
        .add(Method::GET, "/v1/customers/{customer_id}/rewards", rewards::available)
        .add(Method::POST, "/v1/customers/{customer_id}/redemptions", rewards::redeem)
        .add(Method::GET, "/v1/customers/{customer_id}/redemptions", rewards::redemptions)
        .add(Method::GET, "/v1/customers/{customer_id}/referral", referrals::customer_referral)
        .add(Method::GET, "/v1/customers/{customer_id}/referrals", referrals::customer_referrals)
        .add(Method::POST, "/v1/customers/{customer_id}/referral", referrals::create_customer_referral_code)
        .add(Method::POST, "/v1/referrals/signups", referrals::signup)
        .add(Method::GET, "/v1/referrals/codes/{code}", referrals::resolve_code)
        // Shop back end: the checkout's vouchers.
        .add(Method::POST, "/v1/vouchers/{code}/validate", rewards::validate_voucher)
        .add(Method::POST, "/v1/vouchers/{code}/consume", rewards::consume_voucher)
        // Admin: tiers, the rewards catalog, referral settings.
        .add(Method::GET, "/v1/tiers/ladder", tiers::get_ladder)
        .add(Method::PUT, "/v1/tiers/ladder", tiers::put_ladder)
        .add(Method::GET, "/v1/tiers/distribution", tiers::distribution)
        .add(Method::GET, "/v1/customers/{customer_id}/tier", tiers::membership)
        .add(Method::GET, "/v1/customers/{customer_id}/tier/history", tiers::history)
        .add(Method::POST, "/v1/customers/{customer_id}/tier-assignment", tiers::assign)
        .add(Method::DELETE, "/v1/customers/{customer_id}/tier-assignment", tiers::remove_assignment)
        .add(Method::GET, "/v1/rewards", rewards::list)
        .add(Method::POST, "/v1/rewards", rewards::create)
        .add(Method::PUT, "/v1/rewards/{reward_id}", rewards::update)
        .add(Method::POST, "/v1/rewards/{reward_id}/archive", rewards::archive)
        .add(Method::POST, "/v1/rewards/{reward_id}/grants", rewards::grant)
        .add(Method::POST, "/v1/rewards/{reward_id}/code-batches", rewards::issue_codes)
        .add(Method::POST, "/v1/redemptions/{redemption_id}/cancel", rewards::cancel_redemption)
        .add(Method::GET, "/v1/referrals/settings", referrals::get_settings)
        .add(Method::PUT, "/v1/referrals/settings", referrals::put_settings)
        // Admin: insights.
        .add(Method::GET, "/v1/customers/{customer_id}/insight", insights::customer_insight)
        .add(Method::GET, "/v1/insights/customers", insights::customers)
        .add(Method::GET, "/v1/insights/segments", insights::segments)
        .add(Method::GET, "/v1/insights/settings", insights::get_settings)
        .add(Method::PUT, "/v1/insights/settings", insights::put_settings)
        .add(Method::GET, "/v1/insights/surveys", insights::survey_scores)
        .add(Method::GET, "/v1/insights/kpis", insights::kpis)
        .add(Method::GET, "/v1/insights/cohorts", insights::cohorts)
        .add(Method::GET, "/v1/insights/segment-changes", insights::segment_changes)
        // Shop back end: survey answers.
        .add(Method::POST, "/v1/customers/{customer_id}/surveys", insights::record_survey)
        // Admin: webhooks.
        .add(Method::GET, "/v1/webhooks/event-types", webhooks::event_types)
        .add(Method::GET, "/v1/webhooks/event-types/{event_type}/schema", webhooks::event_schema)
        .add(Method::GET, "/v1/webhooks/subscriptions", webhooks::list)
        .add(Method::POST, "/v1/webhooks/subscriptions", webhooks::create)
        .add(Method::GET, "/v1/webhooks/subscriptions/{subscription_id}", webhooks::get)
        .add(Method::PUT, "/v1/webhooks/subscriptions/{subscription_id}", webhooks::update)
        .add(Method::DELETE, "/v1/webhooks/subscriptions/{subscription_id}", webhooks::delete)
        .add(Method::POST, "/v1/webhooks/subscriptions/{subscription_id}/secret", webhooks::rotate_secret)
        .add(Method::GET, "/v1/webhooks/subscriptions/{subscription_id}/deliveries", webhooks::deliveries)
        .add(Method::POST, "/v1/webhooks/subscriptions/{subscription_id}/redeliveries", webhooks::redeliver);
    let RouteTable { router, specs } = table;
    let demo = if state.widget.demo.is_some() { demo::routes() } else { Router::new() };

    let router = router
        // The document itself is not one of the documented operations, nor are the widget's script
        // and the demo shop.
        .route("/openapi.json", axum::routing::get(ops::openapi))
        .route("/widget.js", axum::routing::get(widget::script))
        .route("/admin", axum::routing::get(console::page))
        .route("/admin/console.js", axum::routing::get(console::script))
        .merge(demo)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Innermost first: each layer wraps the ones above it.
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            Problem::internal().into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(settings.request_timeout, observe::time_limit))
        .layer(cors(&settings.cors_origins))
        // Outside every refusal, the time limit and CORS, so that none leaves a body unread.
        .layer(axum::middleware::from_fn_with_state(settings.max_body_bytes, unread::settle))
        .layer(axum::middleware::from_fn_with_state(metrics, observe::observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    (router, specs)
}

/// `scheme://host[:port]`, as browsers send it in `Origin`.
pub fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/') && HeaderValue::from_str(text).is_ok()
}

/// Storefront widgets call from the shop's own origin; only listed origins may.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(CUSTOMER_TOKEN_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static("idempotent-replayed"),
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

async fn not_found() -> Problem {
    Problem::not_found("NOT_FOUND", "no such route; see /openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this route does not accept this method")
}

/// A 200 JSON answer.
pub fn json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode a response");
            Problem::internal().into_response()
        }
    }
}

/// A 200 JSON answer to a write, marked `Idempotent-Replayed: true` when the
/// backend returned the saved answer of an earlier request with the same key.
pub fn written<T: Serialize>(replayed: bool, body: &T) -> Response {
    let mut response = json(body);
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The problem for a failed call to the points service.
pub fn points_failed(status: tonic::Status) -> Problem {
    Problem::from_upstream("points", &status)
}

/// The problem for a failed call to an optional backend: 503
/// `BACKEND_NOT_CONFIGURED` when the gateway has no address for it, else the
/// one gRPC-to-HTTP map.
pub fn backend_failed(backend: &'static str, failure: Failure) -> Problem {
    match failure {
        Failure::NotConfigured(variable) => Problem::not_configured(backend, variable),
        Failure::Status(status) => Problem::from_upstream(backend, &status),
    }
}

pub fn tiers_failed(failure: Failure) -> Problem {
    backend_failed("tiers", failure)
}

pub fn referral_failed(failure: Failure) -> Problem {
    backend_failed("referral", failure)
}

pub fn rewards_failed(failure: Failure) -> Problem {
    backend_failed("rewards", failure)
}

pub fn insights_failed(failure: Failure) -> Problem {
    backend_failed("insights", failure)
}

pub fn webhooks_failed(failure: Failure) -> Problem {
    backend_failed("webhooks", failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host() {
        assert!(is_origin("https://shop.example"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("shop.example"));
        assert!(!is_origin("https://shop.example/path"));
        assert!(!is_origin("ftp://shop.example"));
        assert!(!is_origin("https://"));
    }
}
