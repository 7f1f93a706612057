//! Rewards: what a customer can redeem, redeeming and the customer's
//! vouchers (scope `storefront`), the checkout's voucher validation and
//! consumption (scope `server`), and the catalog (scope `admin`). Every route
//! needs the rewards service (`REWARDS_ADDR`); without it they answer 503
//! `BACKEND_NOT_CONFIGURED`.

use axum::extract::State;
use axum::response::Response;

use crate::extract::{
    AdminScope, Authorized, ForCustomer, IdempotencyKey, JsonBody, QueryParams, Segment, ServerScope,
};
use crate::model::{
    self, AvailableRewards, CodeBatch, CodeBatchBody, ConsumeBody, Gifts, GrantBody, PageQuery, RedeemBody, Redemption,
    RedemptionPage, Reward, RewardBody, RewardList, RewardQuery, ValidateBody, VoucherCheck,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, rewards_failed, written};
use crate::rpc;

/// Field names the service prefixes with the message they belong to.
const REWARD_PREFIX: &str = "reward.";

/// The active rewards, each with whether the customer can redeem it now and if not why.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/rewards",
    tag = "rewards",
    operation_id = "listAvailableRewards",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
    ),
    responses(
        (status = 200, description = "The rewards and the customer's points", body = AvailableRewards),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn available(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
) -> Result<Response, Problem> {
    let request = model::available_rewards_request(auth.program(), &customer_id, None);
    let reply = state.upstreams.rewards(request, rpc!(list_available_rewards)).await.map_err(rewards_failed)?;
    Ok(json(&AvailableRewards::from_proto(customer_id, reply.message)))
}

/// Spends the reward's points and issues a voucher.
///
/// The customer ends with either the voucher or their points, never neither
/// and never both. A redemption whose spend is still being settled answers
/// `status: pending`; it becomes `active` (or `failed`, points given back)
/// shortly.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/redemptions",
    tag = "rewards",
    operation_id = "redeemReward",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer and redeems nothing more"),
    ),
    request_body = RedeemBody,
    responses(
        (status = 200, description = "The redemption, with its voucher", body = Redemption,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such reward in this program (`REWARD_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Not redeemable now (`INSUFFICIENT_POINTS`, `TIER_TOO_LOW`, `TIER_NOT_ELIGIBLE`, `OUT_OF_STOCK`, `LIMIT_REACHED`, `REWARD_NOT_ACTIVE`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn redeem(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RedeemBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id, key);
    let reply = state.upstreams.rewards(request, rpc!(redeem)).await.map_err(rewards_failed)?;
    Ok(written(reply.replayed, &reply.message.redemption.unwrap_or_default()))
}

/// The customer's redemptions and vouchers, newest first, paged.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/redemptions",
    tag = "rewards",
    operation_id = "listRedemptions",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of redemptions", body = RedemptionPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn redemptions(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    QueryParams(page): QueryParams<PageQuery>,
) -> Result<Response, Problem> {
    let request = model::redemptions_request(auth.program(), customer_id, page);
    let reply = state.upstreams.rewards(request, rpc!(list_redemptions)).await.map_err(rewards_failed)?;
    Ok(json(&RedemptionPage::from(reply.message)))
}

/// For the checkout: is this voucher good, and what does it grant? Writes
/// nothing, so the `Idempotency-Key` header (required on every POST) may carry any value.
#[utoipa::path(
    post,
    path = "/v1/vouchers/{code}/validate",
    tag = "rewards",
    operation_id = "validateVoucher",
    security(("api_key" = ["server"])),
    params(
        ("code" = String, Path, min_length = 1, max_length = 128, description = "The voucher code, e.g. `ABCD-EFGH-JKLM`"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every POST; validation writes nothing"),
    ),
    request_body = ValidateBody,
    responses(
        (status = 200, description = "The voucher's state and, when known, its redemption and reward", body = VoucherCheck),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn validate_voucher(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(code): Segment<String>,
    _key: IdempotencyKey,
    JsonBody(body): JsonBody<ValidateBody>,
) -> Result<Response, Problem> {
    let reply = state.upstreams.rewards(body.into_proto(auth.program(), code), rpc!(validate_voucher)).await;
    Ok(json(&VoucherCheck::from(reply.map_err(rewards_failed)?.message)))
}

/// Uses a voucher for an order, exactly once. Consuming it again for the same
/// order answers as the first time; for another order it is refused (409 `VOUCHER_USED`).
#[utoipa::path(
    post,
    path = "/v1/vouchers/{code}/consume",
    tag = "rewards",
    operation_id = "consumeVoucher",
    security(("api_key" = ["server"])),
    params(
        ("code" = String, Path, min_length = 1, max_length = 128, description = "The voucher code, e.g. `ABCD-EFGH-JKLM`"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every write. Here the order id is what makes the call idempotent."),
    ),
    request_body = ConsumeBody,
    responses(
        (status = 200, description = "The redemption, now used", body = Redemption),
        (status = 404, description = "No such voucher (`VOUCHER_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Already used for another order (`VOUCHER_USED`), expired (`VOUCHER_EXPIRED`) or cancelled (`VOUCHER_CANCELLED`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn consume_voucher(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(code): Segment<String>,
    _key: IdempotencyKey,
    JsonBody(body): JsonBody<ConsumeBody>,
) -> Result<Response, Problem> {
    let reply = state.upstreams.rewards(body.into_proto(auth.program(), code), rpc!(consume_voucher)).await;
    Ok(json(&reply.map_err(rewards_failed)?.message.redemption.unwrap_or_default()))
}

/// The rewards catalog (archived rewards too with `include_archived=true`).
#[utoipa::path(
    get,
    path = "/v1/rewards",
    tag = "rewards",
    operation_id = "listRewards",
    security(("api_key" = ["admin"])),
    params(RewardQuery),
    responses((status = 200, description = "The catalog", body = RewardList))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<RewardQuery>,
) -> Result<Response, Problem> {
    let reply = state.upstreams.rewards(model::rewards_request(auth.program(), query), rpc!(list_rewards)).await;
    Ok(json(&RewardList::from(reply.map_err(rewards_failed)?.message)))
}

/// Adds a reward to the catalog.
#[utoipa::path(
    post,
    path = "/v1/rewards",
    tag = "rewards",
    operation_id = "createReward",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = RewardBody,
    responses(
        (status = 200, description = "The reward, with its id", body = Reward,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RewardBody>,
) -> Result<Response, Problem> {
    let reward = body.into_proto(String::new())?;
    let request = model::create_reward_request(auth.program(), reward, auth.actor(), key);
    let reply = state.upstreams.rewards(request, rpc!(create_reward)).await;
    let reply = reply.map_err(|failure| rewards_failed(failure).strip_field_prefix(REWARD_PREFIX))?;
    Ok(written(reply.replayed, &Reward::from(reply.message.reward.unwrap_or_default())))
}

/// Replaces a reward; vouchers already issued stay as they are.
#[utoipa::path(
    put,
    path = "/v1/rewards/{reward_id}",
    tag = "rewards",
    operation_id = "updateReward",
    security(("api_key" = ["admin"])),
    params(
        ("reward_id" = String, Path, min_length = 1, max_length = 128, description = "The reward's id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = RewardBody,
    responses(
        (status = 200, description = "The reward as stored", body = Reward,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such reward in this program (`REWARD_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(reward_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RewardBody>,
) -> Result<Response, Problem> {
    let expected_version = body.expected_version;
    let reward = body.into_proto(reward_id)?;
    let request = model::update_reward_request(auth.program(), reward, expected_version, auth.actor(), key);
    let reply = state.upstreams.rewards(request, rpc!(update_reward)).await;
    let reply = reply.map_err(|failure| rewards_failed(failure).strip_field_prefix(REWARD_PREFIX))?;
    Ok(written(reply.replayed, &Reward::from(reply.message.reward.unwrap_or_default())))
}

/// Takes a reward out of the catalog; vouchers already issued stay valid.
#[utoipa::path(
    post,
    path = "/v1/rewards/{reward_id}/archive",
    tag = "rewards",
    operation_id = "archiveReward",
    security(("api_key" = ["admin"])),
    params(
        ("reward_id" = String, Path, min_length = 1, max_length = 128, description = "The reward's id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    responses(
        (status = 200, description = "The reward as archived", body = Reward,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such reward in this program (`REWARD_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The reward id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn archive(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(reward_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let request = model::archive_reward_request(auth.program(), reward_id, auth.actor(), key);
    let reply = state.upstreams.rewards(request, rpc!(archive_reward)).await.map_err(rewards_failed)?;
    Ok(written(reply.replayed, &Reward::from(reply.message.reward.unwrap_or_default())))
}

/// Gives the reward to customers without points (a surprise gift, a
/// win-back or thank-you voucher): one voucher each, ACTIVE at once, with
/// who gave it and why. Stock counts (all or none); tiers, limits and dates
/// do not.
#[utoipa::path(
    post,
    path = "/v1/rewards/{reward_id}/grants",
    tag = "rewards",
    operation_id = "grantReward",
    security(("api_key" = ["admin"])),
    params(
        ("reward_id" = String, Path, min_length = 1, max_length = 128, description = "The reward given"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = GrantBody,
    responses(
        (status = 200, description = "The vouchers given, in the customers' order", body = Gifts,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such reward in this program (`REWARD_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock (`OUT_OF_STOCK`), the reward is archived (`REWARD_NOT_ACTIVE`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (no customer, a customer twice, no reason)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(reward_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), reward_id, auth.actor(), key);
    let reply = state.upstreams.rewards(request, rpc!(grant_reward)).await.map_err(rewards_failed)?;
    Ok(written(reply.replayed, &Gifts { redemptions: reply.message.redemptions }))
}

/// Issues single-use codes of the reward for a campaign (a newsletter, a
/// flyer): held by no customer until one uses one; checkout validates and
/// consumes them as any voucher. Stock counts (all or none).
#[utoipa::path(
    post,
    path = "/v1/rewards/{reward_id}/code-batches",
    tag = "rewards",
    operation_id = "issueCodeBatch",
    security(("api_key" = ["admin"])),
    params(
        ("reward_id" = String, Path, min_length = 1, max_length = 128, description = "The reward the codes are for"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = CodeBatchBody,
    responses(
        (status = 200, description = "The batch and its codes", body = CodeBatch,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such reward in this program (`REWARD_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock (`OUT_OF_STOCK`), the reward is archived (`REWARD_NOT_ACTIVE`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (count, prefix, a past `valid_until`, no reason)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn issue_codes(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(reward_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<CodeBatchBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), reward_id, auth.actor(), key)?;
    let reply = state.upstreams.rewards(request, rpc!(issue_code_batch)).await.map_err(rewards_failed)?;
    Ok(written(reply.replayed, &CodeBatch::from(reply.message)))
}

/// Cancels an unused voucher and gives its points back.
#[utoipa::path(
    post,
    path = "/v1/redemptions/{redemption_id}/cancel",
    tag = "rewards",
    operation_id = "cancelRedemption",
    security(("api_key" = ["admin"])),
    params(
        ("redemption_id" = String, Path, min_length = 1, max_length = 128, description = "The redemption's id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    responses(
        (status = 200, description = "The redemption, cancelled", body = Redemption,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such redemption in this program (`REDEMPTION_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The voucher was already used (`VOUCHER_USED`), expired or cancelled, or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The redemption id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_redemption(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(redemption_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let request = model::cancel_redemption_request(auth.program(), redemption_id, auth.actor(), key);
    let reply = state.upstreams.rewards(request, rpc!(cancel_redemption)).await.map_err(rewards_failed)?;
    Ok(written(reply.replayed, &reply.message.redemption.unwrap_or_default()))
}
