//! The rewards service end to end: real points, tiers and rewards services
//! on loopback (rewards reaching points through a proxy that can cut it),
//! sharing one manual clock, on SQLite and on PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loyalty_common::clock::{Clock, ManualClock, Micros};
use loyalty_common::db;
use loyalty_common::server::RunningService;
use loyalty_common::testing::{self, Backend, CuttableProxy, Sandbox, WriteHold};
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::rewards::v1 as pb;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_rewards::RewardsServer;
use loyalty_rewards::store::{RewardsStore, Staged};
use loyalty_tiers::TiersServer;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;

struct Harness {
    points: PointsServiceClient<Channel>,
    tiers: TiersServiceClient<Channel>,
    rewards: RewardsServiceClient<Channel>,
    proxy: CuttableProxy,
    clock: ManualClock,
    rewards_url: String,
    points_url: String,
    servers: (RunningService, RunningService, RunningService),
    sandbox: Sandbox,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[], "1000").await
    }

    /// `points_args`: more arguments for the points service.
    async fn start_with(backend: Backend, points_args: &[&str], upstream_timeout_ms: &str) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let points_url = sandbox.database("points").await;
        let tiers_url = sandbox.database("tiers").await;
        let rewards_url = sandbox.database("rewards").await;
        let points = sandbox.start::<PointsServer>(&points_url, points_args).await;
        let proxy = CuttableProxy::start(points.bind_addr()).await;
        let tiers = sandbox.start::<TiersServer>(&tiers_url, &["--points-addr", &points.bind_addr().to_string()]).await;
        let rewards_args = [
            "--points-addr",
            &proxy.addr.to_string(),
            "--tiers-addr",
            &tiers.bind_addr().to_string(),
            "--upstream-timeout-ms",
            upstream_timeout_ms,
            "--recovery-interval-ms",
            "50",
        ];
        let rewards = sandbox.start::<RewardsServer>(&rewards_url, &rewards_args).await;
        Self {
            points: PointsServiceClient::new(testing::channel(points.bind_addr()).await),
            tiers: TiersServiceClient::new(testing::channel(tiers.bind_addr()).await),
            rewards: RewardsServiceClient::new(testing::channel(rewards.bind_addr()).await),
            proxy,
            clock: sandbox.clock.clone(),
            rewards_url,
            points_url,
            servers: (points, tiers, rewards),
            sandbox,
        }
    }

    async fn stop(self) {
        let (points, tiers, rewards) = self.servers;
        rewards.shutdown().await.unwrap();
        tiers.shutdown().await.unwrap();
        points.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }

    /// Base from 0 qualifying points, gold (2x) from 10,000.
    async fn put_base_and_gold_ladder(&mut self) {
        let tier = |id: &str, threshold: i64, multiplier_bp: i32| tiers::Tier {
            tier_id: id.into(),
            name: id.to_uppercase(),
            threshold,
            multiplier_bp,
            ..Default::default()
        };
        let ladder = tiers::Ladder {
            tiers: vec![tier("base", 0, 10_000), tier("gold", 10_000, 20_000)],
            window: Some(tiers::Window { kind: tiers::WindowKind::Lifetime as i32, days: 0 }),
            downgrade: Some(tiers::DowngradePolicy { kind: tiers::DowngradeKind::Immediate as i32, grace_days: 0 }),
            ..Default::default()
        };
        let request = tiers::PutLadderRequest {
            program_id: "shop".into(),
            ladder: Some(ladder),
            actor: "admin@shop".into(),
            idempotency_key: "l1".into(),
            expected_version: None,
        };
        self.tiers.put_ladder(request).await.unwrap();
    }

    async fn earn(&mut self, customer: &str, points: i64) {
        self.points
            .earn(points::EarnRequest {
                program_id: "shop".into(),
                customer_id: customer.into(),
                points,
                reason: "order".into(),
                idempotency_key: format!("earn-{customer}-{points}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn available(&mut self, customer: &str) -> i64 {
        let request = points::GetBalanceRequest { program_id: "shop".into(), customer_id: customer.into() };
        self.points.get_balance(request).await.unwrap().into_inner().balance.unwrap().available
    }

    async fn reward(&mut self, reward: pb::Reward) -> String {
        let key = format!("create-{}", reward.name);
        self.rewards
            .create_reward(pb::CreateRewardRequest {
                program_id: "shop".into(),
                reward: Some(reward),
                actor: "admin@shop".into(),
                idempotency_key: key,
            })
            .await
            .expect("reward created")
            .into_inner()
            .reward
            .unwrap()
            .reward_id
    }

    async fn redeem(&mut self, customer: &str, reward_id: &str, key: &str) -> Result<pb::Redemption, tonic::Status> {
        let request = pb::RedeemRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            reward_id: reward_id.into(),
            idempotency_key: key.into(),
        };
        self.rewards.redeem(request).await.map(|r| r.into_inner().redemption.unwrap())
    }

    async fn validate(&mut self, code: &str) -> i32 {
        let request =
            pb::ValidateVoucherRequest { program_id: "shop".into(), code: code.into(), customer_id: String::new() };
        self.rewards.validate_voucher(request).await.unwrap().into_inner().state
    }

    async fn redemptions(&mut self, customer: &str) -> Vec<pb::Redemption> {
        let request = pb::ListRedemptionsRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            page_size: 0,
            page_token: String::new(),
        };
        self.rewards.list_redemptions(request).await.unwrap().into_inner().redemptions
    }

    /// Waits (bounded) until the customer's latest redemption is FAILED and the balance is `points`.
    async fn settled(&mut self, customer: &str, points: i64) {
        for _ in 0..500 {
            let failed =
                self.redemptions(customer).await.first().map(|r| r.status) == Some(pb::RedemptionStatus::Failed as i32);
            if failed && self.available(customer).await == points {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{customer}'s redemption never settled: {:?}, {} points",
            self.redemptions(customer).await,
            self.available(customer).await
        );
    }
}

/// The outbox's events, once it holds `count` (numbered after commit: waits, bounded).
async fn events(m: &mut Harness, count: usize) -> Vec<(String, serde_json::Value, i64)> {
    for _ in 0..500 {
        let request = pb::ListEventsRequest { after_sequence: 0, page_size: 0 };
        let events = m.rewards.list_events(request).await.unwrap().into_inner().events;
        if events.len() >= count {
            let parsed =
                events.into_iter().map(|e| (e.r#type, serde_json::from_str(&e.data_json).unwrap(), e.sequence));
            return parsed.collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox never held {count} events");
}

async fn redemptions_and_vouchers_are_events_of_the_outbox(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(discount("5 EUR off", 500)).await;
    m.earn("ann", 2_000).await;
    let used = m.redeem("ann", &reward, "r1").await.unwrap();
    let cancelled = m.redeem("ann", &reward, "r2").await.unwrap();
    let kept = m.redeem("ann", &reward, "r3").await.unwrap();
    let consume = pb::ConsumeVoucherRequest {
        program_id: "shop".into(),
        code: used.voucher_code.clone(),
        order_id: "o-1".into(),
        customer_id: "ann".into(),
    };
    m.rewards.consume_voucher(consume.clone()).await.unwrap();
    m.rewards.consume_voucher(consume).await.expect("a replay, which is no second event");
    let cancel = pb::CancelRedemptionRequest {
        program_id: "shop".into(),
        redemption_id: cancelled.redemption_id.clone(),
        idempotency_key: "c1".into(),
        actor: String::new(),
    };
    m.rewards.cancel_redemption(cancel).await.unwrap();
    // 90 days of validity; the reminder comes 3 days before the end, once.
    m.clock.advance(86 * 86_400_000_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events(&mut m, 5).await.len(), 5, "no reminder 4 days before");
    m.clock.advance(2 * 86_400_000_000);
    let all = events(&mut m, 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&mut m, 6).await.len(), 6, "each voucher reminded once: {all:?}");
    let seen: Vec<(&str, &str)> =
        all.iter().map(|(t, data, _)| (t.as_str(), data["redemption_id"].as_str().unwrap())).collect();
    let ids = [&used.redemption_id, &cancelled.redemption_id, &kept.redemption_id].map(String::as_str);
    assert_eq!(
        seen,
        [
            ("reward.redeemed", ids[0]),
            ("reward.redeemed", ids[1]),
            ("reward.redeemed", ids[2]),
            ("voucher.consumed", ids[0]),
            ("redemption.cancelled", ids[1]),
            ("voucher.expiring_soon", ids[2]),
        ]
    );
    let redeemed = &all[0].1;
    assert_eq!(
        (&redeemed["customer_id"], &redeemed["reward_name"], &redeemed["points"], &redeemed["voucher_code"]),
        (&"ann".into(), &"5 EUR off".into(), &500.into(), &used.voucher_code.clone().into())
    );
    assert_eq!(all[3].1["order_id"], "o-1", "the order the voucher paid for");
    m.stop().await;
}

fn discount(name: &str, cost: i64) -> pb::Reward {
    pb::Reward {
        name: name.into(),
        kind: pb::RewardKind::FixedDiscount as i32,
        amount_minor: 500,
        currency: "EUR".into(),
        point_cost: cost,
        voucher_validity_days: 90,
        ..Default::default()
    }
}

async fn gifts_and_campaign_codes_cost_no_points_and_count_against_stock(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(pb::Reward { total_stock: Some(60), ..discount("5 EUR off", 500) }).await;
    let grant = |customers: &[&str], reason: &str, key: &str| pb::GrantRewardRequest {
        program_id: "shop".into(),
        reward_id: reward.clone(),
        customer_ids: customers.iter().map(|c| (*c).to_owned()).collect(),
        reason: reason.into(),
        actor: "support@shop".into(),
        idempotency_key: key.into(),
    };
    let gifts = m.rewards.grant_reward(grant(&["ann", "bob"], "sorry for the delay", "g1")).await.unwrap();
    let gifts = gifts.into_inner().redemptions;
    assert_eq!(gifts.iter().map(|g| g.customer_id.as_str()).collect::<Vec<_>>(), ["ann", "bob"]);
    for gift in &gifts {
        assert_eq!((gift.status, gift.points_spent), (pb::RedemptionStatus::Active as i32, 0));
        assert_eq!((gift.granted_by.as_str(), gift.grant_reason.as_str()), ("support@shop", "sorry for the delay"));
        assert_eq!(m.validate(&gift.voucher_code).await, pb::VoucherState::Valid as i32);
    }
    assert_eq!(m.available("ann").await, 0, "a gift spends nothing");
    let replay = m.rewards.grant_reward(grant(&["ann", "bob"], "sorry for the delay", "g1")).await.unwrap();
    let replayed: Vec<String> = replay.into_inner().redemptions.into_iter().map(|r| r.redemption_id).collect();
    assert_eq!(replayed, gifts.iter().map(|g| g.redemption_id.clone()).collect::<Vec<_>>(), "a replay");
    let reused = m.rewards.grant_reward(grant(&["cal"], "another", "g1")).await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused)), (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED".into()));
    let bad = m.rewards.grant_reward(grant(&["ann", "ann"], " ", "g2")).await.unwrap_err();
    let fields: Vec<String> =
        bad.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["reason", "customer_ids[1]"]);
    let none = m.rewards.grant_reward(grant(&[], "why", "g3")).await.unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);

    // Fifty codes for a campaign: anyone's until used, each once.
    let batch = |count: i32, key: &str| pb::IssueCodeBatchRequest {
        program_id: "shop".into(),
        reward_id: reward.clone(),
        count,
        prefix: "welcome".into(),
        valid_until: None,
        reason: "newsletter".into(),
        actor: "marketing@shop".into(),
        idempotency_key: key.into(),
    };
    let issued = m.rewards.issue_code_batch(batch(50, "b1")).await.unwrap().into_inner();
    let codes: std::collections::HashSet<&str> = issued.codes.iter().map(String::as_str).collect();
    assert_eq!(codes.len(), 50);
    assert!(issued.codes.iter().all(|c| c.starts_with("WELCOME-") && c.len() == "WELCOME-".len() + 14), "{codes:?}");
    let replay = m.rewards.issue_code_batch(batch(50, "b1")).await.unwrap().into_inner();
    assert_eq!((replay.batch_id, replay.codes), (issued.batch_id.clone(), issued.codes.clone()));
    let short = m.rewards.issue_code_batch(batch(9, "b2")).await.unwrap_err();
    assert_eq!(
        (short.code(), reason(&short)),
        (Code::FailedPrecondition, "OUT_OF_STOCK".into()),
        "60 - 2 - 50 = 8 left"
    );
    let code = issued.codes[0].to_lowercase();
    assert_eq!(m.validate(&code).await, pb::VoucherState::Valid as i32);
    let attempts = (0..50).map(|i| {
        let mut rewards = m.rewards.clone();
        let request = pb::ConsumeVoucherRequest {
            program_id: "shop".into(),
            code: code.clone(),
            order_id: format!("order-{i}"),
            customer_id: format!("shopper-{i}"),
        };
        tokio::spawn(async move { rewards.consume_voucher(request).await })
    });
    let mut through = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.unwrap() {
            Ok(used) => through.push(used.into_inner().redemption.unwrap()),
            Err(refused) => assert_eq!(reason(&refused), "VOUCHER_USED", "{refused:?}"),
        }
    }
    assert_eq!(through.len(), 1, "a single-use code is used once");
    let holder = through[0].customer_id.clone();
    assert!(holder.starts_with("shopper-") && through[0].batch_id == issued.batch_id, "{through:?}");
    let request =
        pb::ValidateVoucherRequest { program_id: "shop".into(), code: code.clone(), customer_id: "eve".into() };
    let state = m.rewards.validate_voucher(request).await.unwrap().into_inner().state;
    assert_eq!(state, pb::VoucherState::Used as i32, "a campaign code's state is public: used by {holder}");
    let request = pb::ValidateVoucherRequest {
        program_id: "shop".into(),
        code: gifts[1].voucher_code.clone(),
        customer_id: "eve".into(),
    };
    let state = m.rewards.validate_voucher(request).await.unwrap().into_inner().state;
    assert_eq!(state, pb::VoucherState::Unknown as i32, "bob's gift is not eve's to know");

    // A gift cancelled gives nothing back (it cost nothing), and said so in the events.
    let cancel = pb::CancelRedemptionRequest {
        program_id: "shop".into(),
        redemption_id: gifts[0].redemption_id.clone(),
        idempotency_key: "c1".into(),
        actor: String::new(),
    };
    m.rewards.cancel_redemption(cancel).await.unwrap();
    let all = events(&mut m, 4).await;
    let seen: Vec<(&str, &str)> =
        all.iter().map(|(t, d, _)| (t.as_str(), d["customer_id"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("reward.granted", "ann"),
            ("reward.granted", "bob"),
            ("voucher.consumed", holder.as_str()),
            ("redemption.cancelled", "ann")
        ]
    );
    assert_eq!(
        (&all[0].1["reason"], &all[0].1["actor"], &all[0].1["points"]),
        (&"sorry for the delay".into(), &"support@shop".into(), &0.into())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request =
        points::ListTransactionsRequest { program_id: "shop".into(), customer_id: "ann".into(), ..Default::default() };
    let ledger = m.points.list_transactions(request).await.unwrap().into_inner().entries;
    assert!(ledger.is_empty(), "no points moved for ann: {ledger:?}");
    m.stop().await;
}

/// Each replica redeems from its own copy of a reward (the store's memory);
/// an edit made on another replica must still decide the redemption.
async fn a_replica_redeems_the_reward_as_another_replica_changed_it(backend: Backend) {
    let mut m = Harness::start(backend).await;
    m.put_base_and_gold_ladder().await;
    let reward = m.reward(discount("plain", 100)).await;
    let members = m.reward(pb::Reward { minimum_tier_id: "base".into(), ..discount("members", 100) }).await;
    for customer in ["bob", "cy", "dee", "eve"] {
        m.earn(customer, 1_000).await;
    }
    let mut held = String::new();
    for _ in 0..500 {
        let request = tiers::GetMembershipRequest { program_id: "shop".into(), customer_id: "eve".into() };
        held = m.tiers.get_membership(request).await.unwrap().into_inner().membership.unwrap().tier_id;
        if held == "base" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(held, "base", "eve's tier from the ledger");
    m.redeem("bob", &reward, "b1").await.expect("open to all: this replica now holds the reward as read");
    m.redeem("eve", &members, "e1").await.expect("eve is a member: this replica holds the members' reward");
    let elsewhere = pb::RedeemRequest {
        program_id: "other".into(),
        customer_id: "bob".into(),
        reward_id: reward.clone(),
        idempotency_key: "x1".into(),
    };
    let status = m.rewards.redeem(elsewhere).await.expect_err("the copy held is this program's only");
    assert_eq!(reason(&status), "REWARD_NOT_FOUND");

    let args = [
        "--points-addr",
        &m.proxy.addr.to_string(),
        "--tiers-addr",
        &m.servers.1.bind_addr().to_string(),
        "--upstream-timeout-ms",
        "1000",
    ];
    let other = m.sandbox.start::<RewardsServer>(&m.rewards_url, &args).await;
    let mut admin = RewardsServiceClient::new(testing::channel(other.bind_addr()).await);
    let edit = |changed: pb::Reward, key: &str| pb::UpdateRewardRequest {
        program_id: "shop".into(),
        reward: Some(pb::Reward { reward_id: reward.clone(), ..changed }),
        actor: "admin@shop".into(),
        idempotency_key: key.into(),
        expected_version: None,
    };
    let gold_only = pb::Reward { minimum_tier_id: "gold".into(), ..discount("plain", 100) };
    admin.update_reward(edit(gold_only, "u1")).await.unwrap();
    let gold_members = pb::UpdateRewardRequest {
        program_id: "shop".into(),
        reward: Some(pb::Reward {
            reward_id: members.clone(),
            minimum_tier_id: "gold".into(),
            ..discount("members", 100)
        }),
        actor: "admin@shop".into(),
        idempotency_key: "u0".into(),
        expected_version: None,
    };
    admin.update_reward(gold_members).await.unwrap();
    let raised = m.redeem("eve", &members, "e2").await.expect_err("the copy lets members in; the reward now asks gold");
    assert_eq!(reason(&raised), "TIER_TOO_LOW");
    assert_eq!(m.available("eve").await, 900, "only the first redemption was paid for");
    let refused = m.redeem("cy", &reward, "c1").await.expect_err("gold only since the other replica's edit");
    assert_eq!(reason(&refused), "TIER_TOO_LOW");
    assert_eq!(m.available("cy").await, 1_000, "nothing spent");

    admin.update_reward(edit(discount("plain", 300), "u2")).await.unwrap();
    let dearer = m.redeem("dee", &reward, "d1").await.unwrap();
    assert_eq!(dearer.points_spent, 300, "the price as it is now");
    assert_eq!(m.available("dee").await, 700);

    let archive = pb::ArchiveRewardRequest {
        program_id: "shop".into(),
        reward_id: reward.clone(),
        actor: "admin@shop".into(),
        idempotency_key: "a1".into(),
    };
    admin.archive_reward(archive).await.unwrap();
    let gone = m.redeem("cy", &reward, "c2").await.expect_err("archived on the other replica");
    assert_eq!(reason(&gone), "REWARD_NOT_ACTIVE");
    assert_eq!(m.available("cy").await, 1_000);
    other.shutdown().await.unwrap();
    m.stop().await;
}

fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

loyalty_common::on_both_backends!(
    a_voucher_is_issued_validated_and_consumed_once,
    a_replica_redeems_the_reward_as_another_replica_changed_it,
    refusals_spend_nothing,
    stock_holds_under_concurrent_redemptions,
    points_down_during_redeem_leaves_the_points,
    a_crash_after_the_spend_is_compensated,
    cancelling_gives_the_points_back,
    a_debt_cancels_unused_vouchers_newest_first_until_covered,
    hidden_tier_rewards_go_to_their_members_whatever_the_ladder_position,
    staging_from_a_stale_read_of_the_reward_obeys_the_reward_as_it_is,
    a_redeem_cancelled_after_its_spend_is_read_back_at_once,
    redemptions_and_vouchers_are_events_of_the_outbox,
    gifts_and_campaign_codes_cost_no_points_and_count_against_stock,
);

/// Points behind Redis. A Redeem whose caller gives up while points holds
/// its spend (the customer's account is held by a transaction of the test's
/// own) is retried once the spend committed: the very next balance read
/// shows the spend, though no caller heard it. The lease (2 × 5 s) keeps
/// recovery from refunding meanwhile.
async fn a_redeem_cancelled_after_its_spend_is_read_back_at_once(backend: Backend) {
    use sqlx::Connection;
    let redis = loyalty_common::throwaway::redis::ThrowawayRedis::spawn();
    let mut m = Harness::start_with(backend, &["--redis-url", &redis.url()], "5000").await;
    let reward = m.reward(discount("5 EUR off", 500)).await;
    m.earn("gil", 1_200).await;
    assert_eq!(m.available("gil").await, 1_200);

    let hold = WriteHold::row(&m.points_url, "accounts", "shop", "gil").await;
    let redeem = || pb::RedeemRequest {
        program_id: "shop".into(),
        customer_id: "gil".into(),
        reward_id: reward.clone(),
        idempotency_key: "late".into(),
    };
    let mut request = tonic::Request::new(redeem());
    request.set_timeout(Duration::from_millis(300));
    let status = m.rewards.clone().redeem(request).await.expect_err("the held spend cannot answer in time");
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    hold.release().await;
    let mut points_db = sqlx::AnyConnection::connect(&m.points_url).await.unwrap();
    for attempt in 0.. {
        let spent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM idempotency_keys WHERE program_id = 'shop' AND method = 'Spend' \
             AND response IS NOT NULL",
        )
        .fetch_one(&mut points_db)
        .await
        .unwrap();
        if spent > 0 {
            break;
        }
        assert!(attempt < 500, "the spend of the cancelled redeem never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Whatever the retry answers (the redemption may still be settling), points read back right.
    let _ = m.rewards.redeem(redeem()).await;
    assert_eq!(m.available("gil").await, 700, "the balance read right after the retry");
    let entries = m
        .points
        .list_transactions(points::ListTransactionsRequest {
            program_id: "shop".into(),
            customer_id: "gil".into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.iter().map(|e| e.points).sum::<i64>(), 700, "the ledger");
    m.stop().await;
    drop(redis);
}

async fn a_voucher_is_issued_validated_and_consumed_once(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(discount("5 EUR off", 500)).await;
    m.earn("ann", 1_200).await;
    let redemption = m.redeem("ann", &reward, "r1").await.unwrap();
    assert_eq!(redemption.status, pb::RedemptionStatus::Active as i32);
    assert_eq!(redemption.voucher_code.len(), 14, "ABCD-EFGH-JKLM");
    assert_eq!(m.available("ann").await, 700);
    let replay = m
        .rewards
        .redeem(pb::RedeemRequest {
            program_id: "shop".into(),
            customer_id: "ann".into(),
            reward_id: reward.clone(),
            idempotency_key: "r1".into(),
        })
        .await
        .unwrap();
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    assert_eq!(replay.into_inner().redemption.unwrap().redemption_id, redemption.redemption_id, "a replay");

    let code = redemption.voucher_code.to_lowercase();
    assert_eq!(m.validate(&code).await, pb::VoucherState::Valid as i32);
    let consume = |order: &str| pb::ConsumeVoucherRequest {
        program_id: "shop".into(),
        code: code.clone(),
        order_id: order.into(),
        customer_id: String::new(),
    };
    let used = m.rewards.consume_voucher(consume("o-1")).await.unwrap().into_inner().redemption.unwrap();
    assert_eq!((used.status, used.consumed_order_id.as_str()), (pb::RedemptionStatus::Used as i32, "o-1"));
    m.rewards.consume_voucher(consume("o-1")).await.expect("the same order again is a replay");
    let twice = m.rewards.consume_voucher(consume("o-2")).await.unwrap_err();
    assert_eq!((twice.code(), reason(&twice)), (Code::FailedPrecondition, "VOUCHER_USED".into()));
    assert_eq!(m.validate(&code).await, pb::VoucherState::Used as i32);
    assert_eq!(m.validate("ABCD-EFGH-JKLM").await, pb::VoucherState::Unknown as i32);
    m.stop().await;
}

async fn refusals_spend_nothing(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let expensive = m.reward(discount("big", 5_000)).await;
    let once = m.reward(pb::Reward { per_customer_limit: 1, limit_period_days: 30, ..discount("once", 100) }).await;
    let scarce = m.reward(pb::Reward { total_stock: Some(1), ..discount("scarce", 100) }).await;
    let gold_only = m.reward(pb::Reward { minimum_tier_id: "gold".into(), ..discount("gold only", 100) }).await;
    m.put_base_and_gold_ladder().await;
    m.earn("bob", 1_000).await;
    m.earn("cy", 1_000).await;

    let short = m.redeem("bob", &expensive, "e1").await.unwrap_err();
    assert_eq!((short.code(), reason(&short)), (Code::FailedPrecondition, "INSUFFICIENT_POINTS".into()));
    let tier = m.redeem("bob", &gold_only, "g1").await.unwrap_err();
    assert_eq!(reason(&tier), "TIER_TOO_LOW");
    m.redeem("bob", &once, "o1").await.unwrap();
    let limit = m.redeem("bob", &once, "o2").await.unwrap_err();
    assert_eq!(reason(&limit), "LIMIT_REACHED");
    m.redeem("bob", &scarce, "s1").await.unwrap();
    let stock = m.redeem("cy", &scarce, "s2").await.unwrap_err();
    assert_eq!(reason(&stock), "OUT_OF_STOCK");
    assert_eq!(
        (m.available("bob").await, m.available("cy").await),
        (800, 1_000),
        "only the two vouchers were paid for"
    );

    let listed = m
        .rewards
        .list_available_rewards(pb::ListAvailableRewardsRequest {
            program_id: "shop".into(),
            customer_id: "bob".into(),
            available_points: None,
        })
        .await
        .unwrap()
        .into_inner();
    let why = |name: &str| {
        let found = listed.rewards.iter().find(|r| r.reward.as_ref().unwrap().name == name).unwrap();
        (found.redeemable, found.unavailability, found.points_short)
    };
    assert_eq!(listed.available_points, 800);
    assert_eq!(why("big"), (false, pb::Unavailability::PointsShort as i32, 4_200));
    assert_eq!(why("once"), (false, pb::Unavailability::LimitReached as i32, 0));
    assert_eq!(why("scarce"), (false, pb::Unavailability::OutOfStock as i32, 0));
    assert_eq!(why("gold only"), (false, pb::Unavailability::TierTooLow as i32, 0));

    // A caller that has just read the balance passes it on, and the list
    // follows it, also for a customer in debt.
    let hinted = |points| pb::ListAvailableRewardsRequest {
        program_id: "shop".into(),
        customer_id: "bob".into(),
        available_points: Some(points),
    };
    let listed = m.rewards.list_available_rewards(hinted(5_000)).await.unwrap().into_inner();
    assert_eq!(listed.available_points, 5_000);
    let big = listed.rewards.iter().find(|r| r.reward.as_ref().unwrap().name == "big").unwrap();
    assert!(big.redeemable, "judged on the points the caller named: {big:?}");
    let in_debt = m.rewards.list_available_rewards(hinted(-80)).await.unwrap().into_inner();
    let big = in_debt.rewards.iter().find(|r| r.reward.as_ref().unwrap().name == "big").unwrap();
    assert_eq!(in_debt.available_points, -80);
    assert_eq!((big.redeemable, big.points_short), (false, 5_000), "short by the cost: a debt counts as none");
    m.stop().await;
}

async fn stock_holds_under_concurrent_redemptions(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(pb::Reward { total_stock: Some(10), ..discount("ten only", 100) }).await;
    for i in 0..100 {
        m.earn(&format!("c{i}"), 500).await;
    }
    let mut calls = Vec::new();
    for i in 0..100 {
        let mut client = m.rewards.clone();
        let reward = reward.clone();
        calls.push(tokio::spawn(async move {
            client
                .redeem(pb::RedeemRequest {
                    program_id: "shop".into(),
                    customer_id: format!("c{i}"),
                    reward_id: reward,
                    idempotency_key: format!("k{i}"),
                })
                .await
        }));
    }
    let mut vouchers = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => vouchers += 1,
            Err(status) => assert_eq!(reason(&status), "OUT_OF_STOCK", "{status:?}"),
        }
    }
    assert_eq!(vouchers, 10);
    let mut spent = 0;
    for i in 0..100 {
        spent += 500 - m.available(&format!("c{i}")).await;
    }
    assert_eq!(spent, 10 * 100, "exactly ten spends");
    m.stop().await;
}

async fn points_down_during_redeem_leaves_the_points(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(discount("5 EUR off", 300)).await;
    m.earn("dee", 1_000).await;
    m.proxy.cut();
    let status = m.redeem("dee", &reward, "r1").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(m.available("dee").await, 1_000, "nothing spent");
    m.proxy.restore();
    m.settled("dee", 1_000).await;
    let redemption = &m.redemptions("dee").await[0];
    assert!(redemption.voucher_code.is_empty(), "no voucher");
    m.stop().await;
}

async fn a_crash_after_the_spend_is_compensated(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(discount("5 EUR off", 300)).await;
    m.earn("eve", 1_000).await;
    // The saga's first two steps, then nothing: as if the service died right after the spend.
    let database = db::connect(&m.rewards_url, db::PoolSettings::new(2, 1_000)).await.unwrap();
    let store = RewardsStore::new(database, Arc::new(m.clock.clone()));
    let seen = store.entry("shop", &reward).await.unwrap();
    let Staged::New(redemption) = store.stage("shop", "eve", &seen, "r1").await.unwrap() else {
        panic!("a new redemption")
    };
    m.points
        .spend(points::SpendRequest {
            program_id: "shop".into(),
            customer_id: "eve".into(),
            points: redemption.points,
            reason: "redeemed 5 EUR off".into(),
            idempotency_key: redemption.spend_key(),
        })
        .await
        .unwrap();
    assert_eq!(m.available("eve").await, 700);
    m.clock.advance(60_000_000);
    m.settled("eve", 1_000).await;
    assert_eq!(m.validate(&redemption.voucher_code).await, pb::VoucherState::Unknown as i32, "no voucher");
    m.stop().await;
}

/// A cancel is the reversal of the spend: the points return to the lots
/// they came from, with those lots' expiry, and nothing counts as earned.
async fn cancelling_gives_the_points_back(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let reward = m.reward(pb::Reward { total_stock: Some(1), ..discount("5 EUR off", 300) }).await;
    let in_ten_days = m.clock.now() + 10 * 86_400_000_000;
    m.points
        .earn(points::EarnRequest {
            program_id: "shop".into(),
            customer_id: "fay".into(),
            points: 200,
            reason: "order".into(),
            idempotency_key: "earn-fay-soon".into(),
            expires_at: Some(loyalty_common::clock::to_timestamp(in_ten_days)),
            ..Default::default()
        })
        .await
        .unwrap();
    m.earn("fay", 800).await;
    let balance = |m: &mut Harness| {
        let mut points = m.points.clone();
        async move {
            let request = points::GetBalanceRequest { program_id: "shop".into(), customer_id: "fay".into() };
            points.get_balance(request).await.unwrap().into_inner().balance.unwrap()
        }
    };
    let before = balance(&mut m).await;
    assert_eq!((before.available, before.next_expiry_points), (1_000, 200));
    let first = m.redeem("fay", &reward, "r1").await.unwrap();
    assert_eq!(balance(&mut m).await.next_expiry_points, 0, "the spend drew the expiring lot first");
    let cancel = |id: &str, key: &str| pb::CancelRedemptionRequest {
        program_id: "shop".into(),
        redemption_id: id.into(),
        idempotency_key: key.into(),
        actor: String::new(),
    };
    let cancelled = m.rewards.cancel_redemption(cancel(&first.redemption_id, "c1")).await.unwrap().into_inner();
    assert_eq!(cancelled.redemption.unwrap().status, pb::RedemptionStatus::Cancelled as i32);
    let after = balance(&mut m).await;
    assert_eq!(after.available, 1_000);
    assert_eq!((after.lifetime_earned, after.spent), (1_000, 0), "a cancel is no earn, and undoes the spend");
    assert_eq!(
        (after.next_expiry_points, after.next_expiry_at),
        (200, before.next_expiry_at),
        "the points came back with their own expiry"
    );
    let entries = m
        .points
        .list_transactions(points::ListTransactionsRequest {
            program_id: "shop".into(),
            customer_id: "fay".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let restore = &entries[0];
    assert_eq!((restore.kind, restore.points), (points::EntryKind::Restore as i32, 300));
    assert_eq!(restore.related_transaction_id, entries[1].transaction_id, "it names the spend it gives back");
    assert_eq!(restore.actor, "service:rewards");
    // The spend is given back once, whoever asks again.
    let again = m
        .points
        .restore_spend(points::RestoreSpendRequest {
            program_id: "shop".into(),
            spend: Some(points::restore_spend_request::Spend::SpendIdempotencyKey(format!(
                "redemption:{}:spend",
                first.redemption_id
            ))),
            idempotency_key: "again".into(),
            reason: "twice".into(),
            actor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SPEND_ALREADY_RESTORED");
    assert_eq!(m.available("fay").await, 1_000);
    assert_eq!(m.validate(&first.voucher_code).await, pb::VoucherState::Cancelled as i32);

    let second = m.redeem("fay", &reward, "r2").await.expect("the stock came back");
    m.rewards
        .consume_voucher(pb::ConsumeVoucherRequest {
            program_id: "shop".into(),
            code: second.voucher_code.clone(),
            order_id: "o-9".into(),
            customer_id: String::new(),
        })
        .await
        .unwrap();
    let refused = m.rewards.cancel_redemption(cancel(&second.redemption_id, "c2")).await.unwrap_err();
    assert_eq!(reason(&refused), "VOUCHER_USED");
    assert_eq!(m.available("fay").await, 700);
    m.stop().await;
}

/// The clawback policy: a reversal that leaves the customer in debt cancels
/// their unused vouchers, newest first, until the debt is covered; a used
/// voucher is never touched, and what cannot be covered stays a debt.
async fn a_debt_cancels_unused_vouchers_newest_first_until_covered(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let small = m.reward(discount("3 EUR off", 300)).await;
    let large = m.reward(discount("5 EUR off", 500)).await;
    let earn = m
        .points
        .earn(points::EarnRequest {
            program_id: "shop".into(),
            customer_id: "hal".into(),
            points: 1_000,
            reason: "referral reward".into(),
            idempotency_key: "referral-hal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let older = m.redeem("hal", &small, "r1").await.unwrap();
    let newer = m.redeem("hal", &large, "r2").await.unwrap();
    assert_eq!(m.available("hal").await, 200);
    // The referral is clawed back: 700 of the 1,000 points, 500 more than are left.
    let clawback = m
        .points
        .reverse(points::ReverseRequest {
            program_id: "shop".into(),
            original: Some(points::reverse_request::Original::OriginalTransactionId(earn.transaction_id.clone())),
            points: Some(700),
            idempotency_key: "clawback-hal".into(),
            reason: "referral clawed back".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clawback.balance.unwrap().available, -500);
    let status = |m: &mut Harness| {
        let mut rewards = m.rewards.clone();
        async move {
            let request = pb::ListRedemptionsRequest {
                program_id: "shop".into(),
                customer_id: "hal".into(),
                page_size: 0,
                page_token: String::new(),
            };
            let listed = rewards.list_redemptions(request).await.unwrap().into_inner().redemptions;
            listed.into_iter().map(|r| (r.redemption_id, r.status)).collect::<HashMap<_, _>>()
        }
    };
    let mut covered = false;
    for _ in 0..500 {
        if m.available("hal").await == 0 {
            covered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(covered, "the debt was never covered: {} points", m.available("hal").await);
    let statuses = status(&mut m).await;
    assert_eq!(statuses[&newer.redemption_id], pb::RedemptionStatus::Cancelled as i32, "newest first");
    assert_eq!(statuses[&older.redemption_id], pb::RedemptionStatus::Active as i32, "only what the debt needs");

    // A second clawback the remaining voucher cannot cover: it is cancelled, the rest stays a debt.
    m.points
        .reverse(points::ReverseRequest {
            program_id: "shop".into(),
            original: Some(points::reverse_request::Original::OriginalTransactionId(earn.transaction_id)),
            points: None,
            idempotency_key: "clawback-hal-2".into(),
            reason: "referral clawed back".into(),
        })
        .await
        .unwrap();
    let mut left = 0;
    for _ in 0..500 {
        left = m.available("hal").await;
        if status(&mut m).await[&older.redemption_id] == pb::RedemptionStatus::Cancelled as i32 && left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "300 more taken back, 300 given back by the cancelled voucher");
    m.stop().await;
}

async fn hidden_tier_rewards_go_to_their_members_whatever_the_ladder_position(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let tier = |id: &str, threshold: i64, hidden: bool| tiers::Tier {
        tier_id: id.into(),
        name: id.to_uppercase(),
        threshold,
        multiplier_bp: 10_000,
        hidden,
        ..Default::default()
    };
    // The win-back tier sits at the top of the ladder: it must unlock nothing above it.
    let ladder = tiers::Ladder {
        tiers: vec![tier("silver", 0, false), tier("gold", 1_000, false), tier("winback", 0, true)],
        window: Some(tiers::Window { kind: tiers::WindowKind::Lifetime as i32, days: 0 }),
        downgrade: Some(tiers::DowngradePolicy { kind: tiers::DowngradeKind::Immediate as i32, grace_days: 0 }),
        ..Default::default()
    };
    let put = tiers::PutLadderRequest {
        program_id: "shop".into(),
        ladder: Some(ladder),
        actor: "admin@shop".into(),
        idempotency_key: "l1".into(),
        expected_version: None,
    };
    m.tiers.put_ladder(put).await.unwrap();
    let winback_only =
        m.reward(pb::Reward { eligible_tier_ids: vec!["winback".into()], ..discount("come back", 10) }).await;
    let gold_minimum = m.reward(pb::Reward { minimum_tier_id: "gold".into(), ..discount("gold and up", 10) }).await;
    let gold_or_winback = m
        .reward(pb::Reward {
            minimum_tier_id: "gold".into(),
            eligible_tier_ids: vec!["winback".into()],
            ..discount("gold or win-back", 10)
        })
        .await;
    m.earn("gia", 1_500).await;
    m.earn("wes", 1_500).await;
    m.earn("sam", 500).await;
    for (customer, expected) in [("gia", "gold"), ("wes", "gold"), ("sam", "silver")] {
        let mut held = String::new();
        for _ in 0..500 {
            let request = tiers::GetMembershipRequest { program_id: "shop".into(), customer_id: customer.into() };
            held = m.tiers.get_membership(request).await.unwrap().into_inner().membership.unwrap().tier_id;
            if held == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(held, expected, "{customer}'s tier from the ledger");
    }
    let assign = tiers::AssignTierRequest {
        program_id: "shop".into(),
        customer_id: "wes".into(),
        tier_id: "winback".into(),
        ends_at: None,
        actor: "support@shop".into(),
        idempotency_key: "a1".into(),
    };
    m.tiers.assign_tier(assign).await.unwrap();

    let refused = |result: Result<pb::Redemption, tonic::Status>| reason(&result.unwrap_err());
    m.redeem("wes", &winback_only, "w1").await.expect("the win-back tier's own reward");
    assert_eq!(refused(m.redeem("gia", &winback_only, "w2").await), "TIER_NOT_ELIGIBLE", "gold is not win-back");
    assert_eq!(refused(m.redeem("sam", &winback_only, "w3").await), "TIER_NOT_ELIGIBLE");
    m.redeem("gia", &gold_minimum, "g1").await.expect("gold reaches gold");
    assert_eq!(refused(m.redeem("wes", &gold_minimum, "g2").await), "TIER_NOT_ELIGIBLE", "hidden is never above");
    assert_eq!(refused(m.redeem("sam", &gold_minimum, "g3").await), "TIER_TOO_LOW");
    m.redeem("wes", &gold_or_winback, "b1").await.expect("unless the hidden tier is listed");
    m.redeem("gia", &gold_or_winback, "b2").await.expect("gold still reaches it");

    let listed = m
        .rewards
        .list_available_rewards(pb::ListAvailableRewardsRequest {
            program_id: "shop".into(),
            customer_id: "sam".into(),
            available_points: None,
        })
        .await
        .unwrap()
        .into_inner();
    let why = |name: &str| {
        let found = listed.rewards.iter().find(|r| r.reward.as_ref().unwrap().name == name).unwrap();
        (found.redeemable, found.unavailability)
    };
    assert_eq!(why("come back"), (false, pb::Unavailability::TierNotEligible as i32));
    assert_eq!(why("gold and up"), (false, pb::Unavailability::TierTooLow as i32));
    let stored = listed.rewards.iter().find(|r| r.reward.as_ref().unwrap().name == "gold or win-back").unwrap();
    assert_eq!(stored.reward.as_ref().unwrap().eligible_tier_ids, ["winback"]);
    m.stop().await;
}

async fn staging_from_a_stale_read_of_the_reward_obeys_the_reward_as_it_is(backend: Backend) {
    let mut m = Harness::start(backend).await;
    let database = db::connect(&m.rewards_url, db::PoolSettings::new(2, 1_000)).await.unwrap();
    let store = RewardsStore::new(database, Arc::new(m.clock.clone()));
    let open = m.reward(discount("open", 100)).await;
    let seen = store.entry("shop", &open).await.unwrap();
    assert!(!seen.counted(), "no stock, no limit: the one-statement path on PostgreSQL");
    let (copy, read_now) = store.seen_entry("shop", &open).await.unwrap();
    assert_eq!((copy, read_now), (seen.clone(), false), "a redemption starts from the copy the read left");
    let elsewhere = store.seen_entry("other-shop", &open).await;
    assert!(elsewhere.is_err(), "another program's id finds no copy and no reward: {elsewhere:?}");
    let reads = db::connect(&m.rewards_url, db::PoolSettings::new(1, 1_000)).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT body FROM rewards WHERE reward_id = $1")
        .bind(&open)
        .fetch_one(&reads.pool)
        .await
        .unwrap();
    assert_eq!(stored, serde_json::to_string(&seen.reward).unwrap(), "that path finds the body it read unchanged");

    // A key is staged once, whichever path answers.
    let Staged::New(first) = store.stage("shop", "fay", &seen, "k1").await.unwrap() else { panic!("new") };
    let by_batch = match backend {
        Backend::Postgres => 1,
        Backend::Sqlite => 0,
    };
    assert_eq!(store.batched().0, by_batch, "PostgreSQL stages an uncounted reward by group commit");
    let active = store.activate(&first).await.unwrap();
    assert_eq!(active.status, loyalty_rewards::store::Status::Active);
    assert_eq!(store.batched().1, by_batch, "and activates by group commit");
    assert!(store.activate(&first).await.is_ok(), "activating again changes nothing");
    assert_eq!(store.batched().1, by_batch, "an activation the batch cannot make takes the one-row path");
    let Staged::Replay(again) = store.stage("shop", "fay", &seen, "k1").await.unwrap() else { panic!("a replay") };
    assert_eq!(again.redemption_id, first.redemption_id);
    let other = m.reward(discount("other", 100)).await;
    let other = store.entry("shop", &other).await.unwrap();
    let reused = store.stage("shop", "fay", &other, "k1").await;
    assert!(reused.is_err(), "the key belongs to another redemption: {reused:?}");

    // Stock added after the caller read the reward: counted all the same.
    let mut limited = seen.reward.clone();
    limited.total_stock = Some(2);
    let updated = store.update("shop", limited, None).await.unwrap();
    assert_eq!(updated.remaining_stock, Some(1), "the redemption staged above counts against it");
    let Staged::New(_) = store.stage("shop", "gil", &seen, "k2").await.unwrap() else { panic!("new") };
    assert_eq!(store.entry("shop", &open).await.unwrap().remaining_stock, Some(0));
    let sold_out = store.stage("shop", "hal", &seen, "k3").await;
    assert!(sold_out.is_err(), "out of stock, though the caller read it unlimited: {sold_out:?}");

    // Archived after the caller read it: refused.
    let fresh = m.reward(discount("fresh", 100)).await;
    let seen_fresh = store.entry("shop", &fresh).await.unwrap();
    store.archive("shop", &fresh).await.unwrap();
    let archived = store.stage("shop", "ivy", &seen_fresh, "k4").await;
    assert!(archived.is_err(), "archived: {archived:?}");
    m.stop().await;
}
