//! Tier administration (scope `admin`): the ladder, a customer's membership
//! with its progress, and manual assignments. Every route needs the tiers
//! service (`TIERS_ADDR`); without it they answer 503 `BACKEND_NOT_CONFIGURED`.

use axum::extract::State;
use axum::response::Response;

use crate::extract::{AdminScope, Authorized, IdempotencyKey, JsonBody, QueryParams, Segment};
use crate::model::{self, AssignmentBody, Ladder, LadderBody, Membership, PageQuery, TierDistribution, TierHistory};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, tiers_failed, written};
use crate::rpc;

/// Field names the service prefixes with the message they belong to.
const LADDER_PREFIX: &str = "ladder.";

/// The program's tier ladder (no tiers until it is first set).
#[utoipa::path(
    get,
    path = "/v1/tiers/ladder",
    tag = "tiers",
    operation_id = "getTierLadder",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The ladder", body = Ladder))
)]
pub async fn get_ladder(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let reply =
        state.upstreams.tiers(model::ladder_request(auth.program()), rpc!(get_ladder)).await.map_err(tiers_failed)?;
    Ok(json(&Ladder::from(reply.message.ladder.unwrap_or_default())))
}

/// How many members hold each tier now (most first; `tier_id` empty: no tier
/// reached yet), as last evaluated; an assignment that has not ended counts
/// as its tier.
#[utoipa::path(
    get,
    path = "/v1/tiers/distribution",
    tag = "tiers",
    operation_id = "getTierDistribution",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "Members per tier", body = TierDistribution))
)]
pub async fn distribution(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let request = model::distribution_request(auth.program());
    let reply = state.upstreams.tiers(request, rpc!(get_tier_distribution)).await.map_err(tiers_failed)?;
    Ok(json(&reply.message))
}

/// Replaces the tier ladder; validated (unique ids, thresholds strictly
/// increasing among visible tiers, multipliers 1x–10x). Memberships follow lazily.
#[utoipa::path(
    put,
    path = "/v1/tiers/ladder",
    tag = "tiers",
    operation_id = "putTierLadder",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = LadderBody,
    responses(
        (status = 200, description = "The stored ladder", body = Ladder,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The ladder is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_ladder(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<LadderBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), auth.actor(), key);
    let reply = state.upstreams.tiers(request, rpc!(put_ladder)).await;
    let reply = reply.map_err(|failure| tiers_failed(failure).strip_field_prefix(LADDER_PREFIX))?;
    Ok(written(reply.replayed, &Ladder::from(reply.message.ladder.unwrap_or_default())))
}

/// The customer's tier, qualifying points, progress to the next tier and any assignment.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/tier",
    tag = "tiers",
    operation_id = "getMembership",
    security(("api_key" = ["admin"])),
    params(("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id")),
    responses(
        (status = 200, description = "The membership", body = Membership),
        (status = 404, description = "The tiers service knows nothing of this customer", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn membership(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
) -> Result<Response, Problem> {
    let request = model::membership_request(auth.program(), &customer_id);
    let reply = state.upstreams.tiers(request, rpc!(get_membership)).await.map_err(tiers_failed)?;
    Ok(json(&Membership::from_proto(customer_id, reply.message.membership)))
}

/// The customer's tier changes, newest first, paged: from and to which
/// tier, why (`threshold`, `grace_expired`, `period_ended`, `manual`,
/// `assignment_ended`, `points_reversed`), when, and who for a manual one.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/tier/history",
    tag = "tiers",
    operation_id = "listTierHistory",
    security(("api_key" = ["admin"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of tier changes", body = TierHistory),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> Result<Response, Problem> {
    let request = model::history_request(auth.program(), &customer_id, page);
    let reply = state.upstreams.tiers(request, rpc!(list_membership_history)).await.map_err(tiers_failed)?;
    Ok(json(&reply.message))
}

/// Puts the customer in a tier by hand (hidden tiers included), optionally
/// until `ends_at`; it wins over the ladder while it lasts.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/tier-assignment",
    tag = "tiers",
    operation_id = "assignTier",
    security(("api_key" = ["admin"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = AssignmentBody,
    responses(
        (status = 200, description = "The membership with the assignment", body = Membership,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such tier in the ladder (`TIER_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<AssignmentBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id.clone(), auth.actor(), key)?;
    let reply = state.upstreams.tiers(request, rpc!(assign_tier)).await.map_err(tiers_failed)?;
    Ok(written(reply.replayed, &Membership::from_proto(customer_id, reply.message.membership)))
}

/// Ends the customer's manual assignment now; the ladder decides again.
#[utoipa::path(
    delete,
    path = "/v1/customers/{customer_id}/tier-assignment",
    tag = "tiers",
    operation_id = "removeTierAssignment",
    security(("api_key" = ["admin"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    responses(
        (status = 200, description = "The membership without the assignment", body = Membership,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "The customer has no assignment", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn remove_assignment(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let request = model::remove_assignment_request(auth.program(), customer_id.clone(), auth.actor(), key);
    let reply = state.upstreams.tiers(request, rpc!(remove_assignment)).await.map_err(tiers_failed)?;
    Ok(written(reply.replayed, &Membership::from_proto(customer_id, reply.message.membership)))
}
