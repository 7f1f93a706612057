//! The demo shop at `/demo`, served only in quick-start mode (`GATEWAY_DEMO`):
//! a page with the widget on it, and the few things a shop's own back end
//! would do, done here server-side so a person can try the widget alone:
//! sign a customer in (a customer token), place a fake order (paying part
//! of it with points, if the customer likes), and have a friend complete a
//! referral. None of it is part of the API (`/openapi.json`
//! does not list it), and none of it needs a key: never turn it on in production.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use loyalty_common::validate;

use crate::customer::TokenRefusal;
use crate::extract::JsonBody;
use crate::model::{self, ActivityBody, CheckoutPointsBody, OrderBody};
use crate::problem::{FieldError, Problem};
use crate::routes::{AppState, json, points_failed};
use crate::rpc;
use crate::widget::DemoShop;

/// The page; `{{STOREFRONT_KEY}}` is filled in when served.
const PAGE: &str = include_str!("../../widget/demo.html");

/// The demo's routes; the caller adds them only in demo mode.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/api/session", post(session))
        .route("/demo/api/orders", post(order))
        .route("/demo/api/referrals", post(referral))
}

fn shop(state: &AppState) -> Result<&DemoShop, Problem> {
    state.widget.demo.as_deref().ok_or_else(|| Problem::not_found("NOT_FOUND", "no such route; see /openapi.json"))
}

async fn page(State(state): State<AppState>) -> Result<Response, Problem> {
    let shop = shop(&state)?;
    let html = PAGE.replace("{{STOREFRONT_KEY}}", &shop.storefront_key);
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    customer_id: String,
}

#[derive(Debug, Serialize)]
struct Session {
    customer_id: String,
    token: String,
}

/// Signs a customer in, as a shop's back end would: a fresh customer token, and the sign-up
/// bonus the first time (its idempotency key makes every later sign-in a replay).
async fn session(State(state): State<AppState>, JsonBody(body): JsonBody<SessionBody>) -> Result<Response, Problem> {
    let shop = shop(&state)?;
    let customer_id = customer(body.customer_id)?;
    let signup = ActivityBody { activity_type: "signup".to_owned(), activity_ref: None };
    let request = signup.into_proto(&shop.program_id, customer_id.clone(), format!("demo-signup-{customer_id}"));
    state.upstreams.points(request, rpc!(record_activity)).await.map_err(points_failed)?;
    let token = state.widget.tokens.issue(&shop.program_id, &customer_id).await.map_err(|refusal| match refusal {
        TokenRefusal::Unavailable(cause) => {
            tracing::error!(error = %cause, "cannot read the demo program's customer token secret");
            Problem::internal()
        }
        TokenRefusal::Token(error) => {
            Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "NO_SECRET", error.to_string())
        }
    })?;
    Ok(json(&Session { customer_id, token }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeOrder {
    customer_id: String,
    amount_minor: i64,
    /// Points that pay for part of it, as the storefront's quote offered.
    #[serde(default)]
    points: i64,
}

/// Places a fake order for the customer, in the program's currency.
async fn order(State(state): State<AppState>, JsonBody(body): JsonBody<FakeOrder>) -> Result<Response, Problem> {
    let shop = shop(&state)?;
    let customer_id = customer(body.customer_id)?;
    let reply = place_order(&state, shop, customer_id, body.amount_minor, body.points, None).await?;
    Ok(json(&reply))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferralBody {
    customer_id: String,
}

#[derive(Debug, Serialize)]
struct CompletedReferral {
    friend_id: String,
    points: i64,
}

/// A new friend signs up with the customer's referral code and places a first order above the
/// referral minimum; the referral service then rewards both on its own, from the points ledger.
async fn referral(State(state): State<AppState>, JsonBody(body): JsonBody<ReferralBody>) -> Result<Response, Problem> {
    let shop = shop(&state)?;
    let customer_id = customer(body.customer_id)?;
    let code =
        state.upstreams.referral(model::code_request(&shop.program_id, &customer_id), rpc!(get_or_create_code)).await;
    let code = code.map_err(crate::routes::referral_failed)?.message.code;
    let friend_id = format!("demo-friend-{}", random_hex());
    let earned = place_order(&state, shop, friend_id.clone(), 80_00, 0, Some(code)).await?;
    Ok(json(&CompletedReferral { friend_id, points: earned.points }))
}

#[derive(Debug, Serialize)]
struct OrderPlaced {
    order_id: String,
    /// Earned by the order.
    points: i64,
    /// Spent on it at checkout, and what they paid.
    points_used: i64,
    discount_minor: i64,
}

async fn place_order(
    state: &AppState,
    shop: &DemoShop,
    customer_id: String,
    amount_minor: i64,
    points: i64,
    referral_code: Option<String>,
) -> Result<OrderPlaced, Problem> {
    let settings = state.upstreams.points(model::settings_request(&shop.program_id), rpc!(get_program_settings)).await;
    let currency =
        model::Settings::from(settings.map_err(points_failed)?.message.settings.unwrap_or_default()).currency;
    let order_id = format!("demo-{}", random_hex());
    // Points pay first, as a checkout would take them off; the order earns on what is left to pay.
    let (points_used, discount_minor) = if points > 0 {
        let body =
            CheckoutPointsBody { customer_id: customer_id.clone(), amount_minor, currency: currency.clone(), points };
        let paid =
            state.upstreams.points(body.into_proto(&shop.program_id, order_id.clone()), rpc!(apply_checkout_points));
        let paid = paid.await.map_err(points_failed)?.message;
        (paid.points, paid.discount_minor)
    } else {
        (0, 0)
    };
    let amount_minor = amount_minor - discount_minor;
    let body =
        OrderBody { customer_id, order_id: order_id.clone(), amount_minor, currency, occurred_at: None, referral_code };
    if let Some(signup) = body.signup_request(&shop.program_id) {
        state.upstreams.referral(signup, rpc!(record_signup)).await.map_err(crate::routes::referral_failed)?;
    }
    let reply = state
        .upstreams
        .points(body.into_proto(&shop.program_id)?, rpc!(earn_for_order))
        .await
        .map_err(points_failed)?;
    Ok(OrderPlaced { order_id, points: reply.message.points, points_used, discount_minor })
}

fn customer(id: String) -> Result<String, Problem> {
    validate::id("customer_id", &id).map_err(|violation| {
        Problem::malformed(
            "INVALID_BODY",
            format!("customer_id {}", violation.description),
            vec![FieldError::new("customer_id", violation.description)],
        )
    })?;
    Ok(id)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
