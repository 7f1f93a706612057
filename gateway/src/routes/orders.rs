//! Orders, for the shop's back end (scope `server`).

use axum::extract::State;
use axum::response::Response;

use crate::extract::{Authorized, ForCustomer, IdempotencyKey, JsonBody, QueryParams, Segment, ServerScope};
use crate::model::{
    CheckoutApplied, CheckoutPointsBody, CheckoutQuery, CheckoutQuote, OrderBody, OrderEarned, Preview, PreviewQuery,
    ReferralOutcome, RefundBody, Refunded,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, points_failed, referral_failed, written};
use crate::rpc;

/// Earns an order's points, once per order.
///
/// The points come from the program's earning rules, the customer's tier and
/// active campaigns; they stay pending for the return window. The order id
/// makes this call idempotent: recording the same order again returns the
/// first answer (with `Idempotent-Replayed: true`), so the `Idempotency-Key`
/// header, required on every write, may carry any value here.
///
/// With `referral_code`, the customer's sign-up with that code is recorded
/// first (once per order), so this order can complete the referral: the
/// referral service learns of the order from the points ledger and rewards
/// both sides on its own. A refused sign-up (`ALREADY_REFERRED`,
/// `UNKNOWN_CODE`, ...) or an unreachable referral service does not fail the
/// order: the answer's `referral` says `recorded: false` and why.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    operation_id = "earnForOrder",
    security(("api_key" = ["server"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every write. Here the order id is what makes the call idempotent: an order earns once, whatever key it is sent with, and a retry of the same order (any key) is answered as the first time")),
    request_body = OrderBody,
    responses(
        (status = 200, description = "The points earned (or the first answer, when replayed)", body = OrderEarned,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The order id was already recorded with another customer, amount, currency or time (`ORDER_ALREADY_RECORDED`), or the currency does not match the program's", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn earn_for_order(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    _key: IdempotencyKey,
    JsonBody(body): JsonBody<OrderBody>,
) -> Result<Response, Problem> {
    let signup = body.signup_request(auth.program());
    let request = body.into_proto(auth.program())?;
    let referral = match signup {
        Some(signup) => {
            let answer = state.upstreams.referral(signup, rpc!(record_signup)).await.map(|reply| reply.message);
            Some(ReferralOutcome::from_signup(answer.map_err(referral_failed)))
        }
        None => None,
    };
    let reply = state.upstreams.points(request, rpc!(earn_for_order)).await.map_err(points_failed)?;
    let mut earned = OrderEarned::from(reply.message);
    earned.referral = referral;
    Ok(written(reply.replayed, &earned))
}

/// Reverses an order's points in proportion to the amount refunded, and
/// gives back the same share of the points that paid for it.
///
/// After any number of partial refunds the order has lost
/// `points × refunded ÷ amount` (rounded down); a refund inside the return
/// window cancels pending points. Points applied at checkout
/// (`POST /v1/orders/{order_id}/points`) come back in the same share of the
/// amount given there (`points_restored`): refunding all of it gives every
/// point back, and no number of refunds gives back more.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/refunds",
    tag = "orders",
    operation_id = "refundOrder",
    security(("api_key" = ["server"])),
    params(
        ("order_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's order id, as recorded with POST /v1/orders"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "One key per refund; a retry with the same key returns the first answer"),
    ),
    request_body = RefundBody,
    responses(
        (status = 200, description = "The points taken back", body = Refunded,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such order in this program, earned or paid with points (`ORDER_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Refunds would exceed the order (`REFUND_EXCEEDS_ORDER`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn refund_order(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(order_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RefundBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), order_id, key);
    let reply = state.upstreams.points(request, rpc!(refund_order)).await.map_err(points_failed)?;
    Ok(written(reply.replayed, &Refunded::from(reply.message)))
}

/// What an order would earn ("you will earn N points"), writing nothing.
#[utoipa::path(
    get,
    path = "/v1/orders/preview",
    tag = "orders",
    operation_id = "previewOrder",
    security(("api_key" = ["server"])),
    params(PreviewQuery),
    responses(
        (status = 200, description = "The points the order would earn", body = Preview),
        (status = 409, description = "The currency does not match the program's (`CURRENCY_MISMATCH`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn preview_order(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    QueryParams(query): QueryParams<PreviewQuery>,
) -> Result<Response, Problem> {
    let reply =
        state.upstreams.points(query.into_proto(auth.program()), rpc!(preview_order)).await.map_err(points_failed)?;
    Ok(json(&Preview::from(reply.message)))
}

/// How many of a customer's points may pay for an order, and for how much.
///
/// For a checkout page's "use my points": the most points usable now
/// (`max_points`, 0 when the customer has fewer than the program's minimum)
/// and their value, with the program's rule to offer a choice in its steps.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/checkout-points",
    tag = "orders",
    operation_id = "quoteCheckoutPoints",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
        CheckoutQuery,
    ),
    responses(
        (status = 200, description = "What the customer's points can pay", body = CheckoutQuote),
        (status = 409, description = "Points cannot pay for orders in this program (`CHECKOUT_POINTS_DISABLED`), or the currency is not the program's", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn quote_checkout_points(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    QueryParams(query): QueryParams<CheckoutQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program(), customer_id);
    let reply = state.upstreams.points(request, rpc!(quote_checkout_points)).await.map_err(points_failed)?;
    Ok(json(&reply.message))
}

/// Spends a customer's points on an order, once per order, for a discount.
///
/// The answer's `discount_minor` is what the shop takes off the order. The
/// order id makes the call idempotent: the same order again returns the
/// first answer (`Idempotent-Replayed: true`), the same order with other
/// points is refused (`CHECKOUT_ALREADY_APPLIED`). A refund of the order
/// (`POST /v1/orders/{order_id}/refunds`) gives the points back in the share
/// refunded; nothing else does.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/points",
    tag = "orders",
    operation_id = "applyCheckoutPoints",
    security(("api_key" = ["server"])),
    params(
        ("order_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's order id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every write. Here the order id is what makes the call idempotent: points pay for an order once, whatever key it is sent with"),
    ),
    request_body = CheckoutPointsBody,
    responses(
        (status = 200, description = "The points spent and the discount (or the first answer, when replayed)", body = CheckoutApplied,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "Not allowed by the program's rule (`CHECKOUT_POINTS_DISABLED`, `CHECKOUT_SHARE_EXCEEDED`, `CHECKOUT_POINTS_UNALIGNED`), not enough points (`INSUFFICIENT_POINTS`), another currency, or points already applied to this order otherwise (`CHECKOUT_ALREADY_APPLIED`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn apply_checkout_points(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(order_id): Segment<String>,
    _key: IdempotencyKey,
    JsonBody(body): JsonBody<CheckoutPointsBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), order_id);
    let reply = state.upstreams.points(request, rpc!(apply_checkout_points)).await.map_err(points_failed)?;
    Ok(written(reply.replayed, &reply.message))
}
