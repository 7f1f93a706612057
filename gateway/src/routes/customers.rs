//! One customer: activities and the profile (scope `server`), the loyalty page, the
//! transaction history and the member's own birthday (scope `storefront`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use tonic::Code;

use crate::extract::{Authorized, ForCustomer, IdempotencyKey, JsonBody, QueryParams, Segment, ServerScope};
use crate::model::{
    self, Absence, ActivityBody, ActivityRecorded, BirthdayBody, LoyaltyPage, MemberProfile, PageQuery, PointsPart,
    ProfileBody, ProfilePart, ReferralPart, RewardsPart, TierPart, TransactionPage,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, points_failed, written};
use crate::rpc;
use crate::upstream::{Failure, Upstreams};
use loyalty_proto::points::v1 as pb;

/// Awards an activity rule's points (`signup`, `birthday`, `review`, ...), within its cap.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/activities",
    tag = "customers",
    operation_id = "recordActivity",
    security(("api_key" = ["server"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = ActivityBody,
    responses(
        (status = 200, description = "The points awarded", body = ActivityRecorded,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "No active rule (`ACTIVITY_NOT_REWARDED`), the cap is reached (`ACTIVITY_CAP_REACHED`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn record_activity(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(customer_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<ActivityBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id, key);
    let reply = state.upstreams.points(request, rpc!(record_activity)).await.map_err(points_failed)?;
    Ok(written(reply.replayed, &ActivityRecorded::from(reply.message)))
}

/// The member's profile: enrolment, birthday, locale, time zone, marketing
/// consents and the shop's attributes.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/profile",
    tag = "customers",
    operation_id = "getProfile",
    security(("api_key" = ["server"])),
    params(("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id")),
    responses(
        (status = 200, description = "The profile", body = MemberProfile),
        (status = 404, description = "No profile yet: the customer has not enrolled (`PROFILE_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn profile(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(customer_id): Segment<String>,
) -> Result<Response, Problem> {
    let request = model::profile_request(auth.program(), customer_id);
    let reply = state.upstreams.points(request, rpc!(get_profile)).await.map_err(points_failed)?;
    let profile = reply.message.profile.ok_or_else(|| {
        Problem::not_found("PROFILE_NOT_FOUND", "the customer has no profile yet: PUT one to enrol them")
    })?;
    Ok(json(&profile))
}

/// Replaces the member's profile; the first write is the enrolment. Audited
/// (entity `profile`, `GET /v1/audit`).
#[utoipa::path(
    put,
    path = "/v1/customers/{customer_id}/profile",
    tag = "customers",
    operation_id = "putProfile",
    security(("api_key" = ["server"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = ProfileBody,
    responses(
        (status = 200, description = "The profile as stored", body = MemberProfile,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The profile changed meanwhile (`VERSION_MISMATCH`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (an impossible birthday, a consent without a time, an unknown time zone, a bad attribute)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_profile(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    Segment(customer_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<ProfileBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id, auth.actor(), key)?;
    let reply = state.upstreams.points(request, rpc!(update_profile)).await;
    let reply = reply.map_err(|failure| points_failed(failure).strip_field_prefix("profile."))?;
    Ok(written(reply.replayed, &reply.message.profile.unwrap_or_default()))
}

/// The member's birthday, given by the member: set once.
///
/// For a storefront's "tell us your birthday" (a storefront key with the
/// customer's token; `server` and `admin` keys may call it too, and may
/// change a birthday with `PUT /v1/customers/{customer_id}/profile`). The
/// rest of the profile is kept; a member without one is enrolled by it. A
/// birthday once given cannot be changed here (409 `BIRTHDAY_ALREADY_SET`;
/// the same birthday again answers as the first time), so it cannot be moved
/// to collect the birthday points twice. Audited as a profile change by
/// `customer:<id>`.
#[utoipa::path(
    put,
    path = "/v1/customers/{customer_id}/birthday",
    tag = "customers",
    operation_id = "setBirthday",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "Required on every write"),
    ),
    request_body = BirthdayBody,
    responses(
        (status = 200, description = "The member's public profile with the birthday", body = ProfilePart),
        (status = 409, description = "Another birthday was already given (`BIRTHDAY_ALREADY_SET`), or the profile changed meanwhile (`VERSION_MISMATCH`: retry)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "An impossible date", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn set_birthday(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<BirthdayBody>,
) -> Result<Response, Problem> {
    let program = auth.program();
    let found = state.upstreams.points(model::profile_request(program, customer_id.clone()), rpc!(get_profile)).await;
    let mut profile = found.map_err(points_failed)?.message.profile.unwrap_or_default();
    if profile.birth_month != 0 {
        if (profile.birth_month, profile.birth_day) == (body.birth_month, body.birth_day) {
            return Ok(json(&ProfilePart::from(profile)));
        }
        let detail = "a birthday was already given; the shop can correct it";
        return Err(Problem::new(StatusCode::CONFLICT, "BIRTHDAY_ALREADY_SET", detail));
    }
    // Written only if nothing changed since it was read.
    let expected_version = Some(profile.version);
    (profile.birth_month, profile.birth_day) = (body.birth_month, body.birth_day);
    let request = pb::UpdateProfileRequest {
        program_id: program.to_owned(),
        actor: auth.actor_for(&customer_id),
        customer_id,
        profile: Some(profile),
        expected_version,
        idempotency_key: key,
    };
    let reply = state.upstreams.points(request, rpc!(update_profile)).await;
    let reply = reply.map_err(|failure| points_failed(failure).strip_field_prefix("profile."))?;
    Ok(written(reply.replayed, &ProfilePart::from(reply.message.profile.unwrap_or_default())))
}

/// The customer's loyalty standing: balance, pending points, what expires
/// within 30 days, the tier, the referral code with its stats, and the
/// rewards redeemable now.
///
/// The backends are asked in parallel, each once: points for the balance
/// and what expires soon, tiers for the membership, referral for the code
/// and its stats, rewards for what is redeemable. Points are essential:
/// without them there is no page (503). Every other part is marked
/// `available: false` when its service is not configured or does not
/// answer, and the page is still served.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/loyalty",
    tag = "customers",
    operation_id = "getLoyaltyPage",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
    ),
    responses(
        (status = 200, description = "The loyalty page", body = LoyaltyPage),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn loyalty_page(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
) -> Result<Response, Problem> {
    let program = auth.program();
    let up = &state.upstreams;
    let points_then_rewards = async {
        let summary = up.get_account_summary(model::account_summary_request(program, &customer_id)).await;
        // A customer with nothing yet has an empty account, as GetBalance says.
        let summary = summary.map_err(points_failed)?.message;
        // Rewards is told the balance just read, so it does not ask points
        // again (it used to, inside this call: the page waits no longer).
        let known_points = summary.balance.as_ref().map(|b| b.available);
        Ok((summary, rewards_part(up, program, &customer_id, known_points).await))
    };
    let (points_and_rewards, tier, referral) = tokio::join!(
        points_then_rewards,
        tier_part(up, program, &customer_id),
        referral_part(up, program, &customer_id)
    );
    let (mut summary, rewards) = points_and_rewards?;
    let profile = summary.profile.take().map(ProfilePart::from);
    let points = PointsPart::from(summary);
    Ok(json(&LoyaltyPage { customer_id, points, tier, referral, rewards, profile }))
}

/// Why an optional part is missing, logged when the service failed.
pub(super) fn absence(part: &str, failure: Failure) -> Absence {
    match failure {
        Failure::NotConfigured(_) => Absence::NotConfigured,
        Failure::Status(status) => {
            tracing::warn!(part, grpc.code = ?status.code(), grpc.message = status.message(), "optional part unavailable");
            Absence::Unavailable
        }
    }
}

/// The tier part: never fails the page.
async fn tier_part(up: &Upstreams, program: &str, customer_id: &str) -> TierPart {
    match up.tiers(model::membership_request(program, customer_id), rpc!(get_membership)).await {
        Ok(reply) => TierPart::from(reply.message.membership),
        Err(Failure::Status(status)) if status.code() == Code::NotFound => TierPart::no_tier(),
        Err(failure) => TierPart::absent(absence("tier", failure)),
    }
}

/// The referral part (the code, if the customer asked for one, and its stats): never fails the page.
async fn referral_part(up: &Upstreams, program: &str, customer_id: &str) -> ReferralPart {
    match up.get_referral_summary(model::referral_summary_request(program, customer_id)).await {
        Ok(reply) => ReferralPart::from(reply.message),
        Err(failure) => ReferralPart::absent(absence("referral", failure)),
    }
}

/// The rewards part: never fails the page.
async fn rewards_part(up: &Upstreams, program: &str, customer_id: &str, known_points: Option<i64>) -> RewardsPart {
    match up
        .rewards(model::available_rewards_request(program, customer_id, known_points), rpc!(list_available_rewards))
        .await
    {
        Ok(reply) => RewardsPart::from(reply.message),
        Err(failure) => RewardsPart::absent(absence("rewards", failure)),
    }
}

/// The customer's ledger entries, newest first, paged.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/transactions",
    tag = "customers",
    operation_id = "listTransactions",
    security(("api_key" = ["storefront"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("X-Customer-Token" = Option<String>, Header, description = "With a `storefront` key: a token the shop's back end signed for this customer; `server` and `admin` keys need none"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of entries", body = TransactionPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn transactions(
    State(state): State<AppState>,
    ForCustomer { auth, customer_id }: ForCustomer,
    QueryParams(page): QueryParams<PageQuery>,
) -> Result<Response, Problem> {
    let request = model::transactions_request(auth.program(), customer_id, page);
    let reply = state.upstreams.points(request, rpc!(list_transactions)).await.map_err(points_failed)?;
    Ok(json(&TransactionPage::from(reply.message)))
}
