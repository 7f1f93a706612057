//! Values refused at the edge, through the gateway (problem+json) and
//! straight over gRPC to each service (INVALID_ARGUMENT with a BadRequest
//! field violation): instants before 1970 or more than
//! `validate::MAX_DAYS_AHEAD` days ahead, and ids that are only white space.
//! Also: a backend that is down is a 503 with `Retry-After`.

mod support;

use loyalty_common::auth::ServiceSecret;
use loyalty_common::clock::{Clock, MICROS_PER_DAY, Micros, SystemClock, to_timestamp};
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_common::tls::Tls;
use loyalty_common::validate::MAX_DAYS_AHEAD;
use loyalty_gateway::keys::Scope;
use loyalty_gateway::rfc3339;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as referral;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use support::{Harness, Options, SERVICE_SECRET, closed_port};

/// 0001-01-01T00:00:00Z: what an unset date serialises as in many languages.
const YEAR_ONE: Micros = -62_135_596_800_000_000;

fn too_far_ahead() -> Micros {
    SystemClock.now() + (MAX_DAYS_AHEAD + 1) * MICROS_PER_DAY
}

/// A channel to a service, presenting the gateway's identity as the gateway does.
async fn channel(addr: std::net::SocketAddr) -> PeerChannel {
    let secret = ServiceSecret::new(SERVICE_SECRET).unwrap();
    let peers = Peers::presenting("gateway", &secret, &Tls::plain());
    let channel = peers.endpoint(&addr.to_string()).unwrap().connect().await.expect("the service accepts a connection");
    peers.attach(channel)
}

/// Asserts INVALID_ARGUMENT with a BadRequest violation on exactly `field`, and returns its description.
#[track_caller]
fn violation<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) -> String {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_error_details().bad_request().cloned().unwrap_or_else(|| panic!("no BadRequest: {status:?}"));
    let found: Vec<_> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(found, [field], "{status:?}");
    bad.field_violations[0].description.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_refuses_ids_of_only_white_space() {
    let h = Harness::start().await;
    let mut points = PointsServiceClient::new(channel(h.points_grpc_addr()).await);
    let mut tiers = TiersServiceClient::new(channel(h.tiers_grpc_addr()).await);
    let mut referral = ReferralServiceClient::new(channel(h.referral_grpc_addr()).await);
    let mut rewards = RewardsServiceClient::new(channel(h.rewards_grpc_addr()).await);

    let balance =
        points.get_balance(points::GetBalanceRequest { program_id: "shop".into(), customer_id: "   ".into() });
    assert_eq!(violation(balance.await, "customer_id"), "must not be only white space");
    let order = points::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: "\t".into(),
        amount_minor: 1_000,
        currency: "EUR".into(),
        occurred_at: None,
    };
    violation(points.earn_for_order(order).await, "order_id");
    let membership =
        tiers.get_membership(tiers::GetMembershipRequest { program_id: " ".into(), customer_id: "anna".into() });
    violation(membership.await, "program_id");
    let code = referral.get_or_create_code(referral::GetOrCreateCodeRequest {
        program_id: "shop".into(),
        customer_id: "\u{a0}".into(),
    });
    violation(code.await, "customer_id");
    let archive = rewards.archive_reward(rewards::ArchiveRewardRequest {
        program_id: "shop".into(),
        reward_id: "  ".into(),
        idempotency_key: "archive-1".into(),
        ..Default::default()
    });
    violation(archive.await, "reward_id");
    // A real id with white space inside is the caller's business.
    points
        .get_balance(points::GetBalanceRequest { program_id: "shop".into(), customer_id: "anna smith".into() })
        .await
        .expect("an id with an inner space is an id");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_refuses_instants_before_1970_or_too_far_ahead() {
    let h = Harness::start().await;
    let mut points = PointsServiceClient::new(channel(h.points_grpc_addr()).await);
    let mut tiers = TiersServiceClient::new(channel(h.tiers_grpc_addr()).await);
    let mut referral = ReferralServiceClient::new(channel(h.referral_grpc_addr()).await);
    let mut rewards = RewardsServiceClient::new(channel(h.rewards_grpc_addr()).await);

    let order = |at: Micros| points::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: format!("o-{at}"),
        amount_minor: 1_000,
        currency: "EUR".into(),
        occurred_at: Some(to_timestamp(at)),
    };
    let description = violation(points.earn_for_order(order(YEAR_ONE)).await, "occurred_at");
    assert!(description.contains("1970"), "{description}");
    violation(points.earn_for_order(order(-1)).await, "occurred_at");
    points.earn_for_order(order(SystemClock.now() - MICROS_PER_DAY)).await.expect("yesterday's order earns");

    let adjust = points::AdjustRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        points: 10,
        reason: "goodwill".into(),
        idempotency_key: "adjust-1".into(),
        expires_at: Some(to_timestamp(too_far_ahead())),
        ..Default::default()
    };
    let description = violation(points.adjust(adjust).await, "expires_at");
    assert!(description.contains(&MAX_DAYS_AHEAD.to_string()), "{description}");

    let assign = tiers::AssignTierRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        tier_id: "gold".into(),
        ends_at: Some(to_timestamp(too_far_ahead())),
        actor: "admin".into(),
        idempotency_key: "assign-1".into(),
    };
    violation(tiers.assign_tier(assign).await, "ends_at");

    let purchase = referral::RecordPurchaseRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: "1".into(),
        amount_minor: 1_000,
        occurred_at: Some(to_timestamp(YEAR_ONE)),
    };
    violation(referral.record_purchase(purchase).await, "occurred_at");

    let reward = rewards::Reward {
        name: "5 EUR off".into(),
        kind: rewards::RewardKind::FixedDiscount as i32,
        amount_minor: 500,
        currency: "EUR".into(),
        point_cost: 100,
        voucher_validity_days: 30,
        ends_at: Some(to_timestamp(too_far_ahead())),
        ..Default::default()
    };
    let create = rewards::CreateRewardRequest {
        program_id: "shop".into(),
        reward: Some(reward),
        actor: "admin".into(),
        idempotency_key: "reward-1".into(),
    };
    violation(rewards.create_reward(create).await, "reward.ends_at");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_refuses_out_of_range_instants_and_blank_ids() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;

    // Instants: the gateway parses them, so it also holds them to the bounds: 400 naming the field.
    for (at, key) in [("0001-01-01T00:00:00Z", "o-1"), ("1969-12-31T23:59:59Z", "o-2"), ("9999-12-31T23:59:59Z", "o-3")]
    {
        let body = json!({"customer_id": "anna", "order_id": key, "amount_minor": 1_000, "currency": "EUR", "occurred_at": at});
        let answer = h.post(&admin, "/v1/orders", key, body).await;
        answer.problem(400, "INVALID_BODY");
        assert_eq!(answer.error_fields(), ["occurred_at"], "{at}");
    }
    let far = rfc3339::format(too_far_ahead());
    let body = json!({"points": 10, "reason": "goodwill", "expires_at": far});
    let answer = h.post(&admin, "/v1/customers/anna/adjustments", "adjust-1", body).await;
    answer.problem(400, "INVALID_BODY");
    assert_eq!(answer.error_fields(), ["expires_at"]);
    let near = rfc3339::format(SystemClock.now() + 365 * MICROS_PER_DAY);
    let body = json!({"points": 10, "reason": "goodwill", "expires_at": near});
    h.post(&admin, "/v1/customers/anna/adjustments", "adjust-2", body).await.ok();

    // Blank ids: the services' rule, answered as their INVALID_ARGUMENT (422) naming the field.
    let body = json!({"customer_id": "   ", "order_id": "o-4", "amount_minor": 1_000, "currency": "EUR"});
    let answer = h.post(&admin, "/v1/orders", "o-4", body).await;
    answer.problem(422, "INVALID_ARGUMENT");
    assert_eq!(answer.error_fields(), ["customer_id"]);
    let answer = h.get(&admin, "/v1/customers/%20%20/transactions").await;
    answer.problem(422, "INVALID_ARGUMENT");
    assert_eq!(answer.error_fields(), ["customer_id"]);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_that_is_down_is_503_with_retry_after() {
    let points = closed_port().await;
    let h = Harness::start_with(Options { points_addr: Some(points.to_string()), ..Options::default() }).await;
    let admin = h.key("shop", Scope::Admin).await;

    let answer = h.get(&admin, "/v1/settings").await;
    answer.problem(503, "UNAVAILABLE");
    assert_eq!(answer.header("retry-after"), Some("1"), "{:?}", answer.headers);

    h.stop().await;
}
