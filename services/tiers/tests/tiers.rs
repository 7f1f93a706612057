//! The tiers service end to end: a real points service and a real tiers
//! service on loopback, wired to each other, sharing one manual clock, on
//! SQLite and on PostgreSQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use loyalty_common::clock::{MICROS_PER_DAY, ManualClock, Micros, to_timestamp};
use loyalty_common::server::RunningService;
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::tiers::v1 as pb;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_tiers::TiersServer;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;
const DAY: Micros = MICROS_PER_DAY;
/// 2026-01-01T00:00:00Z.
const NEW_YEAR: Micros = 1_767_225_600_000_000;

struct Harness {
    points: PointsServiceClient<Channel>,
    tiers: TiersServiceClient<Channel>,
    clock: ManualClock,
    sandbox: Sandbox,
    points_server: RunningService,
    tiers_server: Option<RunningService>,
    replays: Vec<RunningService>,
    tiers_url: String,
    points_addr: SocketAddr,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let (points_url, tiers_url) = (sandbox.database("points").await, sandbox.database("tiers").await);
        let tiers_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tiers_addr = tiers_listener.local_addr().unwrap().to_string();
        let points_server = sandbox.start::<PointsServer>(&points_url, &["--tiers-addr", &tiers_addr]).await;
        let points_addr = points_server.bind_addr();
        let mut harness = Self {
            points: PointsServiceClient::new(testing::channel(points_addr).await),
            tiers: TiersServiceClient::new(testing::lazy_channel(tiers_listener.local_addr().unwrap())),
            clock: sandbox.clock.clone(),
            sandbox,
            points_server,
            tiers_server: None,
            replays: Vec::new(),
            tiers_url,
            points_addr,
        };
        harness.start_tiers(tiers_listener).await;
        harness
    }

    async fn start_tiers(&mut self, listener: TcpListener) {
        let points = self.points_addr.to_string();
        let args = ["--points-addr", &points, "--review-interval-secs", "3600"];
        let server = self.sandbox.start_on::<TiersServer>(listener, &self.tiers_url, &args).await;
        self.tiers = TiersServiceClient::new(testing::channel(server.bind_addr()).await);
        self.tiers_server = Some(server);
    }

    /// A second tiers service with an empty database of its own, reading the
    /// same ledger from the start: what a fresh replay gives.
    async fn fresh_tiers(&mut self) -> TiersServiceClient<Channel> {
        let url = self.sandbox.database("tiers-replay").await;
        let points = self.points_addr.to_string();
        let args = ["--points-addr", &points, "--review-interval-secs", "3600"];
        let server = self.sandbox.start::<TiersServer>(&url, &args).await;
        let client = TiersServiceClient::new(testing::channel(server.bind_addr()).await);
        self.replays.push(server);
        client
    }

    async fn order(&mut self, customer: &str, order_id: &str, amount_minor: i64) -> i64 {
        let request = points::EarnForOrderRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            order_id: order_id.into(),
            amount_minor,
            currency: "EUR".into(),
            occurred_at: None,
        };
        self.points.earn_for_order(request).await.unwrap().into_inner().points
    }

    async fn refund(&mut self, order_id: &str, amount_minor: i64) {
        let request = points::RefundOrderRequest {
            program_id: "shop".into(),
            order_id: order_id.into(),
            refunded_amount_minor: amount_minor,
            idempotency_key: format!("refund-{order_id}-{amount_minor}"),
        };
        self.points.refund_order(request).await.unwrap();
    }

    async fn restart_tiers(&mut self) {
        self.tiers_server.take().unwrap().shutdown().await.unwrap();
        self.start_tiers(TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    }

    async fn stop(mut self) {
        if let Some(tiers) = self.tiers_server.take() {
            tiers.shutdown().await.unwrap();
        }
        for replay in self.replays {
            replay.shutdown().await.unwrap();
        }
        self.points_server.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }

    async fn put_ladder(&mut self, window: pb::Window, downgrade: pb::DowngradePolicy) {
        self.put_ladder_on(window, downgrade, pb::QualificationBasis::Unspecified, "ladder-1").await;
    }

    async fn put_ladder_on(
        &mut self,
        window: pb::Window,
        downgrade: pb::DowngradePolicy,
        basis: pb::QualificationBasis,
        key: &str,
    ) {
        let ladder = pb::Ladder {
            tiers: vec![
                tier("explorer", 0, 10_000, false),
                tier("catalyst", 1_000, 15_000, false),
                tier("winback", 0, 12_000, true),
                tier("advocate", 5_000, 20_000, false),
            ],
            window: Some(window),
            downgrade: Some(downgrade),
            version: 0,
            qualification_basis: basis as i32,
        };
        self.tiers
            .put_ladder(pb::PutLadderRequest {
                program_id: "shop".into(),
                ladder: Some(ladder),
                actor: "admin@shop".into(),
                idempotency_key: key.into(),
                expected_version: None,
            })
            .await
            .expect("ladder accepted");
    }

    async fn earn(&mut self, customer: &str, points: i64, key: &str) -> String {
        self.points
            .earn(points::EarnRequest {
                program_id: "shop".into(),
                customer_id: customer.into(),
                points,
                reason: "order".into(),
                idempotency_key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .transaction_id
    }

    async fn membership(&mut self, customer: &str) -> pb::Membership {
        let request = pb::GetMembershipRequest { program_id: "shop".into(), customer_id: customer.into() };
        self.tiers.get_membership(request).await.unwrap().into_inner().membership.unwrap()
    }

    /// Waits (bounded) until the consumer has counted `qualifying` points for the customer.
    async fn caught_up(&mut self, customer: &str, qualifying: i64) -> pb::Membership {
        for _ in 0..500 {
            let membership = self.membership(customer).await;
            if membership.qualifying_points == qualifying {
                return membership;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "tiers never counted {qualifying} qualifying points for {customer}: {:?}",
            self.membership(customer).await
        );
    }

    async fn history(&mut self, customer: &str) -> Vec<(String, i32, String)> {
        let request = pb::ListMembershipHistoryRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            page_size: 0,
            page_token: String::new(),
        };
        let changes = self.tiers.list_membership_history(request).await.unwrap().into_inner().changes;
        changes.into_iter().map(|c| (c.to_tier_id, c.reason, c.actor)).collect()
    }

    /// The outbox's events (numbered after commit: waits, bounded, for `count`).
    async fn events(&mut self, count: usize) -> Vec<(String, serde_json::Value, i64)> {
        for _ in 0..500 {
            let request = pb::ListEventsRequest { after_sequence: 0, page_size: 0 };
            let events = self.tiers.list_events(request).await.unwrap().into_inner().events;
            if events.len() >= count {
                return events
                    .into_iter()
                    .map(|e| (e.r#type, serde_json::from_str(&e.data_json).unwrap(), e.sequence))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the outbox never held {count} events");
    }
}

fn tier(id: &str, threshold: i64, bp: i32, hidden: bool) -> pb::Tier {
    pb::Tier {
        tier_id: id.into(),
        name: id.to_uppercase(),
        threshold,
        multiplier_bp: bp,
        perks: vec![format!("{id} perk")],
        hidden,
        benefits: (id == "catalyst").then(catalyst_benefits),
    }
}

fn catalyst_benefits() -> pb::TierBenefits {
    pb::TierBenefits {
        free_shipping: true,
        early_access_hours: 24,
        birthday_multiplier_bp: 20_000,
        flags: vec!["free_returns".into()],
    }
}

fn window(kind: pb::WindowKind, days: i32) -> pb::Window {
    pb::Window { kind: kind as i32, days }
}

fn downgrade(kind: pb::DowngradeKind, grace_days: i32) -> pb::DowngradePolicy {
    pb::DowngradePolicy { kind: kind as i32, grace_days }
}

loyalty_common::on_both_backends!(
    crossing_a_threshold_upgrades_and_grace_delays_the_downgrade,
    reversed_points_stop_qualifying_even_after_they_expired,
    rolling_windows_drop_points_and_calendar_years_reset,
    hidden_tiers_are_assigned_by_hand_and_expire,
    consumer_restart_counts_every_entry_once,
    top_tier_customer_earns_with_the_multiplier,
    ladders_are_validated,
    spend_counts_purchases_only_and_refunds_move_down,
    switching_the_basis_matches_a_fresh_replay,
);

async fn crossing_a_threshold_upgrades_and_grace_delays_the_downgrade(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::GraceDays, 30)).await;
    let earn = m.earn("ana", 1_200, "o1").await;
    let member = m.caught_up("ana", 1_200).await;
    assert_eq!((member.tier_id.as_str(), member.multiplier_bp), ("catalyst", 15_000));
    assert_eq!((member.next_tier_id.as_str(), member.points_to_next_tier), ("advocate", 3_800));
    assert_eq!(member.benefits, Some(catalyst_benefits()), "a checkout reads free shipping from the membership");
    assert_eq!(member.perks, ["catalyst perk"]);
    let standing = m
        .tiers
        .get_multiplier(pb::GetMultiplierRequest { program_id: "shop".into(), customer_id: "ana".into(), at: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((standing.multiplier_bp, standing.birthday_multiplier_bp), (15_000, 20_000));

    m.points
        .reverse(points::ReverseRequest {
            program_id: "shop".into(),
            original: Some(points::reverse_request::Original::OriginalTransactionId(earn)),
            points: Some(400),
            idempotency_key: "r1".into(),
            reason: "refund".into(),
        })
        .await
        .unwrap();
    let member = m.caught_up("ana", 800).await;
    assert_eq!(member.tier_id, "catalyst", "kept during the grace period");
    assert_eq!(member.downgrade_at, Some(to_timestamp(T0 + 30 * DAY)));

    m.clock.advance(30 * DAY);
    let member = m.membership("ana").await;
    assert_eq!(member.tier_id, "explorer", "down once the grace period ended");
    let reasons: Vec<i32> = m.history("ana").await.into_iter().map(|(_, reason, _)| reason).collect();
    assert_eq!(reasons, [pb::ChangeReason::GraceExpired as i32, pb::ChangeReason::Threshold as i32]);
    m.stop().await;
}

async fn reversed_points_stop_qualifying_even_after_they_expired(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    let earn = m
        .points
        .earn(points::EarnRequest {
            program_id: "shop".into(),
            customer_id: "eve".into(),
            points: 1_200,
            reason: "order".into(),
            idempotency_key: "o1".into(),
            pending_until: None,
            expires_at: Some(to_timestamp(T0 + 10 * DAY)),
        })
        .await
        .unwrap()
        .into_inner()
        .transaction_id;
    assert_eq!(m.caught_up("eve", 1_200).await.tier_id, "catalyst");
    m.clock.advance(11 * DAY);
    m.points.run_expiry(points::RunExpiryRequest { program_id: "shop".into() }).await.unwrap();
    m.points
        .reverse(points::ReverseRequest {
            program_id: "shop".into(),
            original: Some(points::reverse_request::Original::OriginalTransactionId(earn)),
            points: Some(400),
            idempotency_key: "r1".into(),
            reason: "refund".into(),
        })
        .await
        .unwrap();
    assert_eq!(m.caught_up("eve", 800).await.tier_id, "explorer", "expiry keeps qualifying, the refund does not");
    let newest = m.history("eve").await.into_iter().next().expect("a change");
    assert_eq!(newest.1, pb::ChangeReason::PointsReversed as i32, "the reason says what happened: {newest:?}");
    m.stop().await;
}

async fn rolling_windows_drop_points_and_calendar_years_reset(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::RollingDays, 30), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    m.earn("ben", 1_000, "o1").await;
    assert_eq!(m.caught_up("ben", 1_000).await.tier_id, "catalyst");
    m.clock.advance(29 * DAY);
    assert_eq!(m.membership("ben").await.tier_id, "catalyst");
    m.clock.advance(DAY);
    let member = m.membership("ben").await;
    assert_eq!((member.tier_id.as_str(), member.qualifying_points), ("explorer", 0), "the earn left the window");

    let mut m2 = Harness::start(backend).await;
    m2.put_ladder(window(pb::WindowKind::CalendarYear, 0), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    m2.earn("cy", 1_500, "o1").await;
    assert_eq!(m2.caught_up("cy", 1_500).await.next_review_at, Some(to_timestamp(NEW_YEAR)));
    m2.clock.set(NEW_YEAR);
    // The review job finds the member due and resets it without any request for it.
    let reviewed =
        m2.tiers.reevaluate(pb::ReevaluateRequest { program_id: "shop".into(), customer_id: "cy".into() }).await;
    let member = reviewed.unwrap().into_inner().membership.unwrap();
    assert_eq!((member.tier_id.as_str(), member.qualifying_points), ("explorer", 0));
    assert_eq!(member.window_start, Some(to_timestamp(NEW_YEAR)));
    m.stop().await;
    m2.stop().await;
}

async fn hidden_tiers_are_assigned_by_hand_and_expire(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    m.earn("cat", 9_000, "o1").await;
    assert_eq!(m.caught_up("cat", 9_000).await.tier_id, "advocate", "points never reach the hidden tier");

    let assign = |key: &str| pb::AssignTierRequest {
        program_id: "shop".into(),
        customer_id: "cat".into(),
        tier_id: "winback".into(),
        ends_at: Some(to_timestamp(T0 + 10 * DAY)),
        actor: "support@shop".into(),
        idempotency_key: key.into(),
    };
    let member = m.tiers.assign_tier(assign("a1")).await.unwrap().into_inner().membership.unwrap();
    assert_eq!((member.tier_id.as_str(), member.assigned), ("winback", true));
    let multiplier = m
        .tiers
        .get_multiplier(pb::GetMultiplierRequest { program_id: "shop".into(), customer_id: "cat".into(), at: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((multiplier.tier_id.as_str(), multiplier.multiplier_bp), ("winback", 12_000));
    m.earn("cat", 1_000, "o2").await;
    assert_eq!(m.caught_up("cat", 10_000).await.tier_id, "winback", "the assignment wins over the ladder");

    let unknown =
        m.tiers.assign_tier(pb::AssignTierRequest { tier_id: "gold".into(), ..assign("a2") }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    m.clock.advance(10 * DAY);
    let member = m.membership("cat").await;
    assert_eq!((member.tier_id.as_str(), member.assigned), ("advocate", false), "back by points when it ends");
    let history = m.history("cat").await;
    assert_eq!(history[0], ("advocate".into(), pb::ChangeReason::AssignmentEnded as i32, String::new()));
    assert_eq!(history[1], ("winback".into(), pb::ChangeReason::Manual as i32, "support@shop".into()));

    // Every change is an event of the outbox, in the order it committed.
    let events = m.events(history.len()).await;
    let types: Vec<&str> = events.iter().map(|(t, _, _)| t.as_str()).collect();
    let mut expected = vec!["tier.upgraded"; history.len() - 2];
    expected.extend(["tier.assigned", "tier.ended"]);
    assert_eq!(types, expected, "{events:?}");
    let (assigned, ended) = (&events[events.len() - 2].1, &events[events.len() - 1].1);
    assert_eq!(
        (&assigned["from_tier_id"], &assigned["to_tier_id"], &assigned["to_tier_name"], &assigned["actor"]),
        (&"advocate".into(), &"winback".into(), &"WINBACK".into(), &"support@shop".into())
    );
    assert_eq!(
        (&ended["to_tier_id"], &ended["reason"], &ended["customer_id"]),
        (&"advocate".into(), &"assignment_ended".into(), &"cat".into())
    );
    assert!(ended.get("actor").is_none(), "an assignment that ran out has no actor: {ended}");
    let after_all = pb::ListEventsRequest { after_sequence: events[events.len() - 1].2, page_size: 10 };
    assert!(m.tiers.list_events(after_all).await.unwrap().into_inner().events.is_empty());
    let too_big = m.tiers.list_events(pb::ListEventsRequest { after_sequence: -1, page_size: 1_001 }).await;
    assert_eq!(too_big.unwrap_err().code(), Code::InvalidArgument);
    m.stop().await;
}

async fn consumer_restart_counts_every_entry_once(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    let customers = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let points_client = m.points.clone();
    let earn_round = |round: usize| {
        let client = points_client.clone();
        async move {
            let mut writers = Vec::new();
            for w in 0..4 {
                let mut client = client.clone();
                writers.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let customer = customers[(w + i) % customers.len()];
                        let points = 37 * (1 + (i as i64 % 7));
                        client
                            .earn(points::EarnRequest {
                                program_id: "shop".into(),
                                customer_id: customer.into(),
                                points,
                                reason: "order".into(),
                                idempotency_key: format!("r{round}-w{w}-{i}"),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                    }
                }));
            }
            for writer in writers {
                writer.await.unwrap();
            }
        }
    };
    let first = tokio::spawn(earn_round(0));
    // Stop the tiers service while points are being earned, earn more while it is down, start it again.
    m.restart_tiers().await;
    first.await.unwrap();
    let stopped = m.tiers_server.take().unwrap();
    stopped.shutdown().await.unwrap();
    earn_round(1).await;
    m.start_tiers(TcpListener::bind("127.0.0.1:0").await.unwrap()).await;

    let mut expected: HashMap<&str, i64> = HashMap::new();
    for customer in customers {
        let balance = m
            .points
            .get_balance(points::GetBalanceRequest { program_id: "shop".into(), customer_id: customer.into() })
            .await
            .unwrap()
            .into_inner()
            .balance
            .unwrap();
        expected.insert(customer, balance.lifetime_earned);
    }
    for customer in customers {
        let member = m.caught_up(customer, expected[customer]).await;
        let tier = if expected[customer] >= 5_000 {
            "advocate"
        } else if expected[customer] >= 1_000 {
            "catalyst"
        } else {
            "explorer"
        };
        assert_eq!(member.tier_id, tier, "{customer}: {}", expected[customer]);
    }
    assert_eq!(expected.values().sum::<i64>(), 2 * 4 * (37 * (1 + 2 + 3 + 4 + 5 + 6 + 7) * 3 + 37 * (1 + 2 + 3 + 4)));
    m.stop().await;
}

async fn top_tier_customer_earns_with_the_multiplier(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_ladder(window(pb::WindowKind::CalendarYear, 0), downgrade(pb::DowngradeKind::Immediate, 0)).await;
    m.earn("dee", 6_000, "bonus").await;
    assert_eq!(m.caught_up("dee", 6_000).await.tier_id, "advocate");
    let earned = m
        .points
        .earn_for_order(points::EarnForOrderRequest {
            program_id: "shop".into(),
            customer_id: "dee".into(),
            order_id: "o-1".into(),
            amount_minor: 10_000,
            currency: "EUR".into(),
            occurred_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let breakdown = earned.breakdown.unwrap();
    assert_eq!(
        (breakdown.base_points, breakdown.tier_bonus_points, breakdown.tier_id.as_str(), breakdown.tier_multiplier_bp),
        (100, 100, "advocate", 20_000)
    );
    assert_eq!(earned.points, 200);

    // An order placed before the customer reached the tier earns at that time's rate.
    m.clock.advance(DAY);
    let late = m
        .points
        .earn_for_order(points::EarnForOrderRequest {
            program_id: "shop".into(),
            customer_id: "dee".into(),
            order_id: "o-0".into(),
            amount_minor: 10_000,
            currency: "EUR".into(),
            occurred_at: Some(to_timestamp(T0 - DAY)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((late.points, late.breakdown.unwrap().tier_id.as_str()), (100, ""));
    m.stop().await;
}

async fn ladders_are_validated(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let ladder = pb::Ladder {
        tiers: vec![tier("a", 100, 10_000, false), tier("b", 100, 9_000, false)],
        window: Some(window(pb::WindowKind::Unspecified, 0)),
        downgrade: Some(downgrade(pb::DowngradeKind::Immediate, 0)),
        version: 0,
        qualification_basis: 0,
    };
    let status = m
        .tiers
        .put_ladder(pb::PutLadderRequest {
            program_id: "shop".into(),
            ladder: Some(ladder),
            actor: "admin@shop".into(),
            idempotency_key: "l1".into(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        status.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["ladder.window.kind", "ladder.tiers[1].multiplier_bp", "ladder.tiers[1].threshold"]);
    // A program without a ladder: no tier, 1x.
    let multiplier = m
        .tiers
        .get_multiplier(pb::GetMultiplierRequest { program_id: "none".into(), customer_id: "x".into(), at: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((multiplier.tier_id.as_str(), multiplier.multiplier_bp), ("", 10_000));
    m.stop().await;
}

async fn spend_counts_purchases_only_and_refunds_move_down(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let (lifetime, immediate) = (window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::Immediate, 0));
    m.put_ladder_on(lifetime, immediate, pb::QualificationBasis::Spend, "spend").await;
    // A sign-up and a referral bonus are not purchases.
    m.earn("fay", 2_000, "sign-up").await;
    m.earn("fay", 6_000, "referral-bonus").await;
    m.order("fay", "o-1", 800).await;
    let member = m.caught_up("fay", 800).await;
    assert_eq!(member.tier_id, "explorer", "8,000 bonus points and 800 spent: no higher tier");
    assert_eq!(member.qualification_basis, pb::QualificationBasis::Spend as i32);
    assert_eq!((member.next_tier_id.as_str(), member.points_to_next_tier), ("catalyst", 200));

    m.order("fay", "o-2", 5_000).await;
    assert_eq!(m.caught_up("fay", 5_800).await.tier_id, "advocate");
    m.refund("o-2", 1_000).await;
    assert_eq!(m.caught_up("fay", 4_800).await.tier_id, "catalyst", "the refund's amount no longer qualifies");
    m.refund("o-2", 4_000).await;
    assert_eq!(m.caught_up("fay", 800).await.tier_id, "explorer");
    m.stop().await;
}

async fn switching_the_basis_matches_a_fresh_replay(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let (lifetime, immediate) = (window(pb::WindowKind::Lifetime, 0), downgrade(pb::DowngradeKind::Immediate, 0));
    m.put_ladder_on(lifetime, immediate, pb::QualificationBasis::AllEarned, "all").await;
    // gus: bonus points only; hal: orders, one of them earned at advocate's 2x
    // and partly refunded; ivy: orders with a little bonus on top.
    m.earn("gus", 6_000, "gus-bonus").await;
    m.order("hal", "h-1", 500_000).await;
    m.caught_up("hal", 5_000).await;
    let doubled = m.order("hal", "h-2", 100_000).await;
    assert_eq!(doubled, 2_000, "the second order earns at advocate's 2x");
    m.refund("h-2", 25_000).await;
    m.order("ivy", "i-1", 90_000).await;
    m.earn("ivy", 200, "ivy-bonus").await;
    assert_eq!(m.caught_up("gus", 6_000).await.tier_id, "advocate");
    assert_eq!(m.caught_up("hal", 6_500).await.tier_id, "advocate");
    assert_eq!(m.caught_up("ivy", 1_100).await.tier_id, "catalyst");

    let customers = ["gus", "hal", "ivy"];
    let expected = [
        (pb::QualificationBasis::OrderPointsBase, [(0, "explorer"), (5_750, "advocate"), (900, "explorer")]),
        (pb::QualificationBasis::OrderPointsAll, [(0, "explorer"), (6_500, "advocate"), (900, "explorer")]),
        (pb::QualificationBasis::Spend, [(0, "explorer"), (575_000, "advocate"), (90_000, "advocate")]),
        (pb::QualificationBasis::AllEarned, [(6_000, "advocate"), (6_500, "advocate"), (1_100, "catalyst")]),
    ];
    for (basis, standings) in expected {
        m.put_ladder_on(lifetime, immediate, basis, &format!("{basis:?}")).await;
        let mut replay = m.fresh_tiers().await;
        replay
            .put_ladder(pb::PutLadderRequest {
                program_id: "shop".into(),
                ladder: m
                    .tiers
                    .get_ladder(pb::GetLadderRequest { program_id: "shop".into() })
                    .await
                    .unwrap()
                    .into_inner()
                    .ladder,
                actor: "admin@shop".into(),
                idempotency_key: "replay".into(),
                expected_version: None,
            })
            .await
            .unwrap();
        for (customer, (qualifying, tier)) in customers.into_iter().zip(standings) {
            let switched = m.membership(customer).await;
            assert_eq!(
                (switched.qualifying_points, switched.tier_id.as_str()),
                (qualifying, tier),
                "{customer} after switching to {basis:?}"
            );
            let request = || pb::GetMembershipRequest { program_id: "shop".into(), customer_id: customer.into() };
            let mut replayed = replay.get_membership(request()).await.unwrap().into_inner().membership.unwrap();
            for _ in 0..500 {
                if replayed.qualifying_points == qualifying && replayed.tier_id == tier {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                replayed = replay.get_membership(request()).await.unwrap().into_inner().membership.unwrap();
            }
            assert_eq!(
                (replayed.qualifying_points, replayed.tier_id.as_str()),
                (switched.qualifying_points, switched.tier_id.as_str()),
                "{customer}: a fresh replay under {basis:?} disagrees with the switched ladder"
            );
        }
    }
    m.stop().await;
}
