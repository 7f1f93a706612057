//! The referral service end to end: a real points service and a real
//! referral service on loopback, wired to each other, sharing one manual
//! clock, on SQLite and on PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use loyalty_common::clock::{MICROS_PER_DAY, ManualClock, Micros};
use loyalty_common::server::RunningService;
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as pb;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_referral::ReferralServer;
use loyalty_rewards::RewardsServer;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;
const DAY: Micros = MICROS_PER_DAY;

struct Harness {
    points: PointsServiceClient<Channel>,
    referral: ReferralServiceClient<Channel>,
    clock: ManualClock,
    sandbox: Sandbox,
    points_server: RunningService,
    referral_server: Option<RunningService>,
    referral_url: String,
    points_addr: SocketAddr,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let (points_url, referral_url) = (sandbox.database("points").await, sandbox.database("referral").await);
        let points_server = sandbox.start::<PointsServer>(&points_url, &[]).await;
        let points_addr = points_server.bind_addr();
        let mut harness = Self {
            points: PointsServiceClient::new(testing::channel(points_addr).await),
            referral: ReferralServiceClient::new(testing::lazy_channel(points_addr)),
            clock: sandbox.clock.clone(),
            sandbox,
            points_server,
            referral_server: None,
            referral_url,
            points_addr,
        };
        harness.start_referral().await;
        harness
    }

    async fn start_referral(&mut self) {
        let points = self.points_addr.to_string();
        let server = self.sandbox.start::<ReferralServer>(&self.referral_url, &["--points-addr", &points]).await;
        self.referral = ReferralServiceClient::new(testing::channel(server.bind_addr()).await);
        self.referral_server = Some(server);
    }

    async fn stop_referral(&mut self) {
        self.referral_server.take().unwrap().shutdown().await.unwrap();
    }

    async fn stop(mut self) {
        if let Some(server) = self.referral_server.take() {
            server.shutdown().await.unwrap();
        }
        self.points_server.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }

    async fn settings(&mut self, cap_count: i32) {
        let settings = pb::ReferralSettings {
            enabled: true,
            referrer_points: 500,
            referee_points: 250,
            minimum_order_minor: 2_000,
            cap_count,
            cap_period_days: 30,
            attribution_window_days: 30,
            clawback_window_days: 14,
            version: 0,
            referee_reward_id: String::new(),
            referrer_reward_id: String::new(),
        };
        self.referral
            .put_referral_settings(pb::PutReferralSettingsRequest {
                program_id: "shop".into(),
                settings: Some(settings),
                actor: "admin@shop".into(),
                idempotency_key: format!("settings-{cap_count}"),
                expected_version: None,
            })
            .await
            .expect("settings accepted");
    }

    async fn code(&mut self, customer: &str) -> String {
        let request = pb::GetOrCreateCodeRequest { program_id: "shop".into(), customer_id: customer.into() };
        self.referral.get_or_create_code(request).await.unwrap().into_inner().code
    }

    async fn signup(&mut self, code: &str, referee: &str) -> Result<pb::Referral, tonic::Status> {
        let request = pb::RecordSignupRequest {
            program_id: "shop".into(),
            code: code.into(),
            referee_customer_id: referee.into(),
            idempotency_key: format!("signup-{referee}"),
        };
        self.referral.record_signup(request).await.map(|r| r.into_inner().referral.unwrap())
    }

    async fn order(&mut self, customer: &str, order_id: &str, amount_minor: i64) {
        self.points
            .earn_for_order(points::EarnForOrderRequest {
                program_id: "shop".into(),
                customer_id: customer.into(),
                order_id: order_id.into(),
                amount_minor,
                currency: "EUR".into(),
                occurred_at: None,
            })
            .await
            .unwrap();
    }

    async fn available(&mut self, customer: &str) -> i64 {
        let request = points::GetBalanceRequest { program_id: "shop".into(), customer_id: customer.into() };
        self.points.get_balance(request).await.unwrap().into_inner().balance.unwrap().available
    }

    /// Waits (bounded) for the customer's balance to reach `expected`.
    /// A refund of `amount_minor` of the order, as the shop reports it to the points service.
    async fn refund(&mut self, order_id: &str, amount_minor: i64, key: &str) {
        let request = points::RefundOrderRequest {
            program_id: "shop".into(),
            order_id: order_id.into(),
            refunded_amount_minor: amount_minor,
            idempotency_key: key.into(),
        };
        self.points.refund_order(request).await.unwrap();
    }

    async fn balance_reaches(&mut self, customer: &str, expected: i64) {
        for _ in 0..500 {
            if self.available(customer).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{customer} never reached {expected} points (has {})", self.available(customer).await);
    }

    async fn status(&mut self, referrer: &str) -> Vec<i32> {
        let request = pb::ListReferralsRequest {
            program_id: "shop".into(),
            referrer_customer_id: referrer.into(),
            page_size: 0,
            page_token: String::new(),
        };
        let referrals = self.referral.list_referrals(request).await.unwrap().into_inner().referrals;
        referrals.into_iter().map(|r| r.status).collect()
    }

    async fn ledger_len(&mut self, customer: &str) -> usize {
        let request = points::ListTransactionsRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            page_size: 200,
            page_token: String::new(),
        };
        self.points.list_transactions(request).await.unwrap().into_inner().entries.len()
    }
}

fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

loyalty_common::on_both_backends!(
    a_first_order_rewards_both_sides_exactly_once,
    every_refusal_has_its_reason,
    a_refund_within_the_window_claws_back,
    concurrent_signups_respect_the_cap,
    vouchers_welcome_the_friend_and_reward_the_referrer,
);

async fn a_first_order_rewards_both_sides_exactly_once(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.settings(10).await;
    let code = m.code("anna").await;
    assert_eq!(m.code("anna").await, code, "stable once issued");
    let resolved = m
        .referral
        .resolve_code(pb::ResolveCodeRequest { program_id: "shop".into(), code: code.to_lowercase() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resolved.valid, resolved.referrer_customer_id.as_str(), resolved.referee_points), (true, "anna", 250));

    let referral = m.signup(&code, "ben").await.unwrap();
    assert_eq!(referral.status, pb::ReferralStatus::Pending as i32);
    assert_eq!(
        m.signup(&code, "ben").await.unwrap().referral_id,
        referral.referral_id,
        "a replay, not a second referral"
    );

    // Ben's first order is placed while the referral service is down.
    m.stop_referral().await;
    m.order("ben", "o-1", 5_000).await;
    m.start_referral().await;
    m.balance_reaches("anna", 500).await;
    m.balance_reaches("ben", 250 + 50).await;

    // The same order reported again, explicitly: counted once.
    let again = m
        .referral
        .record_purchase(pb::RecordPurchaseRequest {
            program_id: "shop".into(),
            customer_id: "ben".into(),
            order_id: "o-1".into(),
            amount_minor: 5_000,
            occurred_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.referral.is_none());
    m.order("ben", "o-2", 9_000).await;
    m.balance_reaches("ben", 250 + 50 + 90).await;
    assert_eq!(m.available("anna").await, 500, "rewarded once");
    assert_eq!(m.ledger_len("anna").await, 1);
    let stats = m
        .referral
        .get_referral_stats(pb::GetReferralStatsRequest { program_id: "shop".into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.invited, stats.completed, stats.points_earned), (1, 1, 500));
    // The summary is both answers in one call.
    let code = m.code("anna").await;
    let summary = m
        .referral
        .get_referral_summary(pb::GetReferralSummaryRequest { program_id: "shop".into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.code, Some(pb::GetOrCreateCodeResponse { code, enabled: true }));
    assert_eq!(summary.stats, Some(stats));
    // Reading makes nothing: a customer without a code stays without one.
    for _ in 0..2 {
        let nobody = m
            .referral
            .get_referral_summary(pb::GetReferralSummaryRequest {
                program_id: "shop".into(),
                customer_id: "nobody-yet".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(nobody.code, Some(pb::GetOrCreateCodeResponse { code: String::new(), enabled: false }));
    }
    m.stop().await;
}

async fn every_refusal_has_its_reason(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let code = m.code("anna").await;
    let off = m.signup(&code, "zed").await.unwrap_err();
    assert_eq!((off.code(), reason(&off)), (Code::FailedPrecondition, "REFERRALS_DISABLED".into()));
    m.settings(1).await;

    let unknown = m.signup("ABCDEFGH", "zed").await.unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown)), (Code::NotFound, "UNKNOWN_CODE".into()));
    let malformed = m.signup("ABC0", "zed").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let own = m.signup(&code, "anna").await.unwrap_err();
    assert_eq!((own.code(), reason(&own)), (Code::FailedPrecondition, "SELF_REFERRAL".into()));

    m.referral
        .record_purchase(pb::RecordPurchaseRequest {
            program_id: "shop".into(),
            customer_id: "old-customer".into(),
            order_id: "o-old".into(),
            amount_minor: 100,
            occurred_at: None,
        })
        .await
        .unwrap();
    let existing = m.signup(&code, "old-customer").await.unwrap_err();
    assert_eq!(reason(&existing), "EXISTING_CUSTOMER");

    m.signup(&code, "ben").await.expect("the first one is fine");
    let carl_code = m.code("carl").await;
    let twice = m
        .referral
        .record_signup(pb::RecordSignupRequest {
            program_id: "shop".into(),
            code: carl_code,
            referee_customer_id: "ben".into(),
            idempotency_key: "ben-again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!((twice.code(), reason(&twice)), (Code::AlreadyExists, "ALREADY_REFERRED".into()));
    let capped = m.signup(&code, "dora").await.unwrap_err();
    assert_eq!(reason(&capped), "REFERRER_CAP_REACHED");
    assert!(capped.message().contains("limit of 1 referrals in 30 days"), "{}", capped.message());

    m.referral
        .disable_code(pb::DisableCodeRequest { program_id: "shop".into(), customer_id: "anna".into() })
        .await
        .unwrap();
    let disabled = m.signup(&code, "eli").await.unwrap_err();
    assert_eq!(reason(&disabled), "CODE_DISABLED");
    m.stop().await;
}

async fn a_refund_within_the_window_claws_back(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.settings(10).await;
    let code = m.code("anna").await;
    m.signup(&code, "ben").await.unwrap();
    m.signup(&code, "cal").await.unwrap();
    m.order("ben", "o-ben", 5_000).await;
    m.order("cal", "o-cal", 5_000).await;
    m.balance_reaches("anna", 1_000).await;
    m.balance_reaches("ben", 300).await;

    // Ben returns everything within the window: both rewards go.
    m.refund("o-ben", 5_000, "refund-ben").await;
    m.balance_reaches("anna", 500).await;
    m.balance_reaches("ben", 0).await;

    // Cal returns after the window: the referral stands.
    m.clock.advance(15 * DAY);
    m.refund("o-cal", 5_000, "refund-cal").await;
    m.balance_reaches("cal", 250).await;
    let mut statuses = m.status("anna").await;
    statuses.sort_unstable();
    assert_eq!(statuses, [pb::ReferralStatus::Completed as i32, pb::ReferralStatus::Reversed as i32]);
    assert_eq!(m.available("anna").await, 500);

    // The outbox told the referrer each completion and the reversal, in commit order, once.
    let mut events = Vec::new();
    for _ in 0..500 {
        let request = pb::ListEventsRequest { after_sequence: 0, page_size: 0 };
        events = m.referral.list_events(request).await.unwrap().into_inner().events;
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen: Vec<(String, String, serde_json::Value)> = events
        .iter()
        .map(|e| (e.r#type.clone(), e.customer_id.clone(), serde_json::from_str(&e.data_json).unwrap()))
        .collect();
    let summary: Vec<(&str, &str, &str)> =
        seen.iter().map(|(t, c, d)| (t.as_str(), c.as_str(), d["referee_customer_id"].as_str().unwrap())).collect();
    let completed_first = summary[..2].iter().any(|s| s.2 == "ben") && summary[..2].iter().any(|s| s.2 == "cal");
    assert!(completed_first, "{summary:?}");
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert_eq!(summary[2], ("referral.reversed", "anna", "ben"));
    assert!(summary[..2].iter().all(|s| s.0 == "referral.completed" && s.1 == "anna"), "{summary:?}");
    let reversed = &seen[2].2;
    assert_eq!((&reversed["qualifying_order_id"], &reversed["referrer_points"]), (&"o-ben".into(), &500.into()));
    assert!(reversed["reversed_at"].is_string() && reversed["completed_at"].is_string(), "{reversed}");
    m.stop().await;
}

async fn concurrent_signups_respect_the_cap(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.settings(10).await;
    let code = m.code("anna").await;
    let mut calls = Vec::new();
    for i in 0..50 {
        let mut client = m.referral.clone();
        let code = code.clone();
        calls.push(tokio::spawn(async move {
            client
                .record_signup(pb::RecordSignupRequest {
                    program_id: "shop".into(),
                    code,
                    referee_customer_id: format!("friend-{i}"),
                    idempotency_key: format!("k-{i}"),
                })
                .await
        }));
    }
    let mut pending = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => pending += 1,
            Err(status) => assert_eq!(reason(&status), "REFERRER_CAP_REACHED", "{status:?}"),
        }
    }
    assert_eq!(pending, 10);
    assert_eq!(m.status("anna").await.len(), 10);
    m.stop().await;
}

/// Settings that give vouchers: the friend's at sign-up, the referrer's
/// instead of points; both cancelled by a clawback while unused.
async fn vouchers_welcome_the_friend_and_reward_the_referrer(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let settings = |referee_reward_id: &str, referrer_reward_id: &str| pb::PutReferralSettingsRequest {
        program_id: "shop".into(),
        settings: Some(pb::ReferralSettings {
            enabled: true,
            referrer_points: 500,
            referee_points: 250,
            minimum_order_minor: 2_000,
            cap_count: 0,
            cap_period_days: 30,
            attribution_window_days: 30,
            clawback_window_days: 14,
            version: 0,
            referee_reward_id: referee_reward_id.into(),
            referrer_reward_id: referrer_reward_id.into(),
        }),
        actor: "admin@shop".into(),
        idempotency_key: format!("settings-{referee_reward_id}-{referrer_reward_id}"),
        expected_version: None,
    };
    let refused = m.referral.put_referral_settings(settings("welcome", "")).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::FailedPrecondition, "REWARDS_NOT_CONFIGURED".into()));

    // The same referral service, now told of a rewards service.
    let rewards_url = m.sandbox.database("rewards").await;
    let points = m.points_addr.to_string();
    let rewards_server = m.sandbox.start::<RewardsServer>(&rewards_url, &["--points-addr", &points]).await;
    let rewards_addr = rewards_server.bind_addr().to_string();
    m.stop_referral().await;
    let server = m
        .sandbox
        .start::<ReferralServer>(&m.referral_url, &["--points-addr", &points, "--rewards-addr", &rewards_addr])
        .await;
    m.referral = ReferralServiceClient::new(testing::channel(server.bind_addr()).await);
    m.referral_server = Some(server);
    let catalog = RewardsServiceClient::new(testing::channel(rewards_server.bind_addr()).await);
    let reward = |name: &str| {
        let request = rewards::CreateRewardRequest {
            program_id: "shop".into(),
            reward: Some(rewards::Reward {
                name: name.into(),
                kind: rewards::RewardKind::PercentDiscount as i32,
                percent_bp: 1_000,
                point_cost: 1_000,
                voucher_validity_days: 30,
                ..Default::default()
            }),
            actor: "admin@shop".into(),
            idempotency_key: format!("reward-{name}"),
        };
        let mut catalog = catalog.clone();
        async move { catalog.create_reward(request).await.unwrap().into_inner().reward.unwrap().reward_id }
    };
    let (welcome, thanks) = (reward("10% off your first order").await, reward("10% off, thank you").await);
    let unknown = m.referral.put_referral_settings(settings("rwd_missing", &thanks)).await.unwrap_err();
    let fields: Vec<String> =
        unknown.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["settings.referee_reward_id"], "{unknown:?}");
    m.referral.put_referral_settings(settings(&welcome, &thanks)).await.unwrap();

    let vouchers = |customer: &str| {
        let request = rewards::ListRedemptionsRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            page_size: 0,
            page_token: String::new(),
        };
        let mut catalog = catalog.clone();
        async move { catalog.list_redemptions(request).await.unwrap().into_inner().redemptions }
    };
    let until = |customer: &'static str, want: fn(&[rewards::Redemption]) -> bool| {
        let vouchers = &vouchers;
        async move {
            for _ in 0..500 {
                let held = vouchers(customer).await;
                if want(&held) {
                    return held;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{customer}'s vouchers never came right: {:?}", vouchers(customer).await);
        }
    };
    let code = m.code("anna").await;
    m.signup(&code, "ben").await.unwrap();
    let active =
        |held: &[rewards::Redemption]| held.len() == 1 && held[0].status == rewards::RedemptionStatus::Active as i32;
    let welcomed = until("ben", active).await;
    assert_eq!((welcomed[0].reward_id.as_str(), welcomed[0].points_spent), (welcome.as_str(), 0));
    // Named by the referral, not by anna (whose erasure must not leave her id in ben's records).
    let reason = welcomed[0].grant_reason.as_str();
    assert!(reason.starts_with("welcome gift: referral ") && !reason.contains("anna"), "{reason}");
    m.order("ben", "o-ben", 5_000).await;
    let thanked = until("anna", active).await;
    assert_eq!(thanked[0].reward_id, thanks, "the referrer's reward is the voucher");
    m.balance_reaches("ben", 300).await; // 50 for the order, 250 welcome points
    assert_eq!(m.available("anna").await, 0, "a voucher instead of points");

    // The order comes back within the window: both vouchers, unused, are cancelled; ben's points go.
    m.refund("o-ben", 5_000, "refund-ben").await;
    let cancelled =
        |held: &[rewards::Redemption]| held.len() == 1 && held[0].status == rewards::RedemptionStatus::Cancelled as i32;
    until("anna", cancelled).await;
    until("ben", cancelled).await;
    m.balance_reaches("ben", 0).await;
    assert_eq!(m.status("anna").await, [pb::ReferralStatus::Reversed as i32]);
    m.stop().await;
    rewards_server.shutdown().await.unwrap();
}
