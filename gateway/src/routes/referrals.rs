//! Refer-a-friend: a customer's code and stats, sign-ups and what a code is
//! worth (scope `storefront`), and the program's referral settings (scope
//! `admin`). Every route needs the referral service (`REFERRAL_ADDR`);
//! without it they answer 503 `BACKEND_NOT_CONFIGURED`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::customer::CustomerTokens;
use crate::extract::{
    self, AdminScope, Authorized, ForCustomer, IdempotencyKey, JsonBody, QueryParams, Segment, StorefrontScope,
};
use crate::model::{
    self, CodeInfo, CustomerReferral, PageQuery, Referral, ReferralPage, ReferralSettings, ReferralSettingsBody,
    SignupBody,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, referral_failed, written};
use crate::rpc;

/// Field names the service prefixes with the message they belong to.
const SETTINGS_PREFIX: &str = "settings.";

/// The customer's referral code, once made, and how their referrals went.
/// Reading makes nothing: a customer without a code gets none here (see the POST).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/referral",
    tag = "referrals",
    operation_id = "getCustomerReferral",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
    ),
    responses(
        (status = 200, description = "The code and its stats", body = CustomerReferral),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn customer_referral(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
) -> Result<Response, Problem> {
    let request = model::referral_summary_request(auth.program(), &customer_id);
    let reply = state.upstreams.get_referral_summary(request).await.map_err(referral_failed)?;
    Ok(json(&CustomerReferral::from_proto(customer_id, reply.message)))
}

/// The friends the customer referred, newest first, paged, with what
/// became of each referral (for support: admin scope).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/referrals",
    tag = "referrals",
    operation_id = "listCustomerReferrals",
    security(("api_key" = ["admin"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of referrals", body = ReferralPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn customer_referrals(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> Result<Response, Problem> {
    let request = model::referrals_request(auth.program(), &customer_id, page);
    let reply = state.upstreams.referral(request, rpc!(list_referrals)).await.map_err(referral_failed)?;
    Ok(json(&reply.message))
}

/// Makes the customer's referral code, once: later calls answer the same code.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/referral",
    tag = "referrals",
    operation_id = "createCustomerReferralCode",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every write; a customer has one code whatever the key"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
    ),
    responses(
        (status = 200, description = "The code and its stats", body = CustomerReferral),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create_customer_referral_code(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    _key: IdempotencyKey,
) -> Result<Response, Problem> {
    let up = &state.upstreams;
    up.referral(model::code_request(auth.program(), &customer_id), rpc!(get_or_create_code))
        .await
        .map_err(referral_failed)?;
    let reply = up
        .get_referral_summary(model::referral_summary_request(auth.program(), &customer_id))
        .await
        .map_err(referral_failed)?;
    Ok(json(&CustomerReferral::from_proto(customer_id, reply.message)))
}

/// A friend signed up with a code: a pending referral, completed by the
/// friend's first qualifying order, or a clear refusal.
#[utoipa::path(
    post,
    path = "/v1/referrals/signups",
    tag = "referrals",
    operation_id = "recordReferralSignup",
    security(("api_key" = ["storefront"])),
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for the friend signing up (`customer_id`); `server` and `admin` keys need none"),
    ),
    request_body = SignupBody,
    responses(
        (status = 200, description = "The pending referral", body = Referral,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such code (`UNKNOWN_CODE`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Refused: `ALREADY_REFERRED`, `SELF_REFERRAL`, `EXISTING_CUSTOMER`, `CODE_DISABLED`, `REFERRALS_DISABLED`, `REFERRER_CAP_REACHED`, or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    State(tokens): State<Arc<CustomerTokens>>,
    headers: HeaderMap,
    auth: Authorized<StorefrontScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<SignupBody>,
) -> Result<Response, Problem> {
    // The friend signing up is the customer a storefront must prove, or anyone could
    // claim any customer for their own code.
    extract::acts_for(&auth, &tokens, &headers, &body.customer_id).await?;
    let reply = state.upstreams.referral(body.into_proto(auth.program(), key), rpc!(record_signup)).await;
    let reply = reply.map_err(referral_failed)?;
    Ok(written(reply.replayed, &reply.message.referral.unwrap_or_default()))
}

/// What a code is worth, for a storefront ("Anna invited you: 500 points").
/// Unknown or disabled codes answer `valid: false`.
#[utoipa::path(
    get,
    path = "/v1/referrals/codes/{code}",
    tag = "referrals",
    operation_id = "resolveReferralCode",
    security(("api_key" = ["storefront"])),
    params(("code" = String, Path, min_length = 1, max_length = 128, description = "A customer's referral code")),
    responses(
        (status = 200, description = "Whether the code is valid, and what it gives", body = CodeInfo),
        (status = 422, description = "The code is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn resolve_code(
    State(state): State<AppState>,
    auth: Authorized<StorefrontScope>,
    Segment(code): Segment<String>,
) -> Result<Response, Problem> {
    let reply =
        state.upstreams.referral(model::resolve_code_request(auth.program(), code.clone()), rpc!(resolve_code)).await;
    Ok(json(&CodeInfo::from_proto(code, reply.map_err(referral_failed)?.message)))
}

/// The program's referral rules (switched off until first set).
#[utoipa::path(
    get,
    path = "/v1/referrals/settings",
    tag = "referrals",
    operation_id = "getReferralSettings",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The referral rules", body = ReferralSettings))
)]
pub async fn get_settings(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let reply =
        state.upstreams.referral(model::referral_settings_request(auth.program()), rpc!(get_referral_settings)).await;
    Ok(json(&reply.map_err(referral_failed)?.message.settings.unwrap_or_default()))
}

/// Replaces the program's referral rules; validated.
#[utoipa::path(
    put,
    path = "/v1/referrals/settings",
    tag = "referrals",
    operation_id = "putReferralSettings",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = ReferralSettingsBody,
    responses(
        (status = 200, description = "The stored rules", body = ReferralSettings,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A rule is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<ReferralSettingsBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), auth.actor(), key);
    let reply = state.upstreams.referral(request, rpc!(put_referral_settings)).await;
    let reply = reply.map_err(|failure| referral_failed(failure).strip_field_prefix(SETTINGS_PREFIX))?;
    Ok(written(reply.replayed, &reply.message.settings.unwrap_or_default()))
}
