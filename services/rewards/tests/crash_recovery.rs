//! Crashes mid-redemption: the real `loyalty-rewards` binary killed with
//! SIGKILL under load and restarted, and replicas sharing one database
//! that must not settle a redemption another is still working on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loyalty_common::clock::{Clock, ManualClock, Micros};
use loyalty_common::db::{self, Database};
use loyalty_common::peer::Peers;
use loyalty_common::server::{RunningService, Service as _};
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_common::throwaway::process::ServiceProcess;
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::rewards::v1 as pb;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_rewards::RewardsServer;
use loyalty_rewards::domain::{Kind, Reward};
use loyalty_rewards::service::Rewards;
use loyalty_rewards::store::{Claim, DEFAULT_LEASE, RewardsStore, Staged, Status, UNOWNED_GRACE};
use sqlx::Row;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;
/// The child's deadline on points calls; its lease is twice that.
const UPSTREAM_TIMEOUT_MS: u64 = 500;
const RECOVERY_INTERVAL_MS: u64 = 200;
/// Customers per round of load, each redeeming once.
const CUSTOMERS: usize = 40;
const COST: i64 = 300;
const START_POINTS: i64 = 1_000;

/// A points service in this process and a rewards database, on `backend`.
struct Fixture {
    points_server: RunningService,
    points: PointsServiceClient<Channel>,
    points_addr: String,
    rewards_url: String,
    sandbox: Sandbox,
}

impl Fixture {
    /// On the wall clock unless `clock` says otherwise (a child process reads the wall clock).
    async fn start(backend: Backend, clock: Option<Arc<dyn Clock>>) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        std::fs::create_dir_all(&sandbox.dir).unwrap();
        let (points_url, rewards_url) = (sandbox.database("points").await, sandbox.database("rewards").await);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Sandbox::config::<PointsServer>(&points_url, &[]);
        let points_server = PointsServer::start(config, listener, clock).await.unwrap();
        Self {
            points_server,
            points: PointsServiceClient::new(testing::channel(addr).await),
            points_addr: addr.to_string(),
            rewards_url,
            sandbox,
        }
    }

    async fn stop(self) {
        self.points_server.shutdown().await.unwrap();
        self.sandbox.stop().await;
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
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

loyalty_common::on_both_backends!(
    a_killed_process_leaves_voucher_or_points_after_restart,
    a_live_replicas_redemption_is_settled_only_when_its_lease_ran_out,
    a_stalled_owners_late_spend_is_refunded,
    a_redemption_taken_over_twice_never_ends_with_voucher_and_refund,
    a_redemption_without_an_owner_waits_out_a_rolling_deploy,
);

async fn a_killed_process_leaves_voucher_or_points_after_restart(backend: Backend) {
    let mut f = Fixture::start(backend, None).await;
    let (timeout, interval) = (UPSTREAM_TIMEOUT_MS.to_string(), RECOVERY_INTERVAL_MS.to_string());
    let mut child = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_loyalty-rewards"),
        "REWARDS_GRPC_ADDR",
        &[
            ("DATABASE_URL", f.rewards_url.as_str()),
            ("POINTS_ADDR", f.points_addr.as_str()),
            ("LOYALTY_AUTH", "off"),
            ("REWARDS_METRICS_ADDR", "127.0.0.1:0"),
            ("UPSTREAM_TIMEOUT_MS", timeout.as_str()),
            ("RECOVERY_INTERVAL_MS", interval.as_str()),
        ],
    )
    .await;
    let rewards = RewardsServiceClient::connect(child.url()).await.unwrap();
    let reward = rewards
        .clone()
        .create_reward(pb::CreateRewardRequest {
            program_id: "shop".into(),
            reward: Some(pb::Reward {
                name: "5 EUR off".into(),
                kind: pb::RewardKind::FixedDiscount as i32,
                amount_minor: 500,
                currency: "EUR".into(),
                point_cost: COST,
                voucher_validity_days: 90,
                ..Default::default()
            }),
            actor: "admin@shop".into(),
            idempotency_key: "create".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap()
        .reward_id;
    let db = db::connect(&f.rewards_url, db::PoolSettings::new(2, 1_000)).await.unwrap();

    // Rounds of concurrent redemptions, each cut short by SIGKILL, until a
    // kill caught redemptions between their PENDING row and their end.
    let mut customers = Vec::new();
    let mut caught_in_flight = 0;
    for round in 0..5 {
        let names: Vec<String> = (0..CUSTOMERS).map(|i| format!("r{round}c{i}")).collect();
        for name in &names {
            f.earn(name, START_POINTS).await;
        }
        let before = count(&db, "SELECT COUNT(*) FROM redemptions").await;
        let calls: Vec<_> = names
            .iter()
            .map(|name| {
                let (mut client, reward, name) = (rewards.clone(), reward.clone(), name.clone());
                tokio::spawn(async move {
                    let request = pb::RedeemRequest {
                        program_id: "shop".into(),
                        customer_id: name.clone(),
                        reward_id: reward,
                        idempotency_key: format!("redeem-{name}"),
                    };
                    let _ = client.redeem(request).await;
                })
            })
            .collect();
        customers.extend(names);
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&db, "SELECT COUNT(*) FROM redemptions").await < before + 5 {
            assert!(Instant::now() < deadline, "no redemption was recorded under load\n{}", child.log());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill();
        for call in calls {
            call.await.unwrap();
        }
        caught_in_flight = count(&db, "SELECT COUNT(*) FROM redemptions WHERE status = 'pending'").await;
        child.start().await;
        if caught_in_flight > 0 {
            break;
        }
    }
    assert!(caught_in_flight > 0, "five kills under load never caught a redemption in flight");

    // The documented bound: the dead process's leases run out (2 × the
    // deadline), then one recovery pass; the rest is margin for a slow machine.
    let bound = Duration::from_millis(2 * UPSTREAM_TIMEOUT_MS + RECOVERY_INTERVAL_MS);
    let deadline = Instant::now() + bound + Duration::from_secs(10);
    loop {
        let pending = count(&db, "SELECT COUNT(*) FROM redemptions WHERE status = 'pending'").await;
        let refunds = count(&db, "SELECT COUNT(*) FROM points_tasks WHERE done = 0").await;
        if pending == 0 && refunds == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} redemptions still PENDING and {refunds} refunds unsent {bound:?} after the restart \
             (plus 10 s margin)\n{}",
            child.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for customer in &customers {
        let vouchers: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM redemptions WHERE customer_id = $1 AND status = 'active'")
                .bind(customer)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get("n");
        let available = f.available(customer).await;
        let expected = START_POINTS - vouchers * COST;
        assert!(
            vouchers <= 1 && available == expected,
            "{customer}: {vouchers} vouchers and {available} points, expected the voucher XOR the points"
        );
    }
    child.kill();
    db.pool.close().await;
    f.stop().await;
}

/// Replica A is a bare store (a saga mid-way); replica B a full service whose
/// recovery is run by hand, on one database and one manual clock.
struct Replicas {
    f: Fixture,
    clock: ManualClock,
    a: RewardsStore,
    b: Rewards,
    reward_id: String,
}

impl Replicas {
    async fn start(backend: Backend) -> Self {
        let clock = ManualClock::new(T0);
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let f = Fixture::start(backend, Some(shared.clone())).await;
        // A server only to apply the migrations; its own recovery would race the test's.
        let config = Sandbox::config::<RewardsServer>(&f.rewards_url, &["--points-addr", &f.points_addr]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        RewardsServer::start(config, listener, Some(shared.clone())).await.unwrap().shutdown().await.unwrap();
        let a = RewardsStore::new(
            db::connect(&f.rewards_url, db::PoolSettings::new(2, 1_000)).await.unwrap(),
            shared.clone(),
        );
        let b_store =
            RewardsStore::new(db::connect(&f.rewards_url, db::PoolSettings::new(2, 1_000)).await.unwrap(), shared);
        let deadline = Duration::from_micros(u64::try_from(DEFAULT_LEASE / 2).unwrap());
        let b = Rewards::new(b_store, &f.points_addr, None, deadline, &Peers::anonymous()).unwrap();
        assert_eq!(b.store().lease(), a.lease(), "both replicas lease for the same time");
        let reward = Reward {
            reward_id: String::new(),
            name: "5 EUR off".into(),
            description: String::new(),
            kind: Kind::FixedDiscount { amount_minor: 500, currency: "EUR".into() },
            point_cost: COST,
            minimum_tier_id: String::new(),
            eligible_tier_ids: Vec::new(),
            total_stock: Some(5),
            per_customer_limit: 0,
            limit_period_days: 0,
            starts_at: None,
            ends_at: None,
            voucher_validity_days: 90,
            refund_expired: false,
            version: 0,
        };
        let reward_id = a.create("shop", reward, "create").await.unwrap().reward.reward_id;
        Self { f, clock, a, b, reward_id }
    }

    /// Replica A's first step of a redemption.
    async fn stage(&self, customer: &str) -> Claim {
        let reward = self.a.entry("shop", &self.reward_id).await.unwrap();
        match self.a.stage("shop", customer, &reward, &format!("redeem-{customer}")).await.unwrap() {
            Staged::New(redemption) => redemption,
            other => panic!("a new redemption, not {other:?}"),
        }
    }

    /// Replica A's spend, with the saga's key.
    async fn spend(&mut self, redemption: &loyalty_rewards::store::Redemption) -> Result<(), tonic::Status> {
        let request = points::SpendRequest {
            program_id: "shop".into(),
            customer_id: redemption.customer_id.clone(),
            points: redemption.points,
            reason: "redeemed 5 EUR off".into(),
            idempotency_key: redemption.spend_key(),
        };
        self.f.points.spend(request).await.map(drop)
    }

    async fn stock(&self) -> Option<i64> {
        self.a.entry("shop", &self.reward_id).await.unwrap().remaining_stock
    }
}

async fn a_live_replicas_redemption_is_settled_only_when_its_lease_ran_out(backend: Backend) {
    let mut r = Replicas::start(backend).await;
    r.f.earn("gus", START_POINTS).await;
    let redemption = r.stage("gus").await;
    r.spend(&redemption).await.unwrap();
    assert_eq!(r.f.available("gus").await, START_POINTS - COST);

    assert_eq!(r.b.recover().await.unwrap(), 0, "leased to A: not B's to settle");
    r.clock.advance(DEFAULT_LEASE - 1);
    assert_eq!(r.b.recover().await.unwrap(), 0, "the lease has not run out yet");
    assert!(r.a.renew(&redemption).await.unwrap(), "A still owns it");
    r.clock.advance(DEFAULT_LEASE - 1);
    assert_eq!(r.b.recover().await.unwrap(), 0, "A renewed its lease");
    assert_eq!(r.a.redemption(&redemption.redemption_id).await.unwrap().status, Status::Pending);

    r.clock.advance(2);
    assert_eq!(r.b.recover().await.unwrap(), 1, "A went quiet past its lease: B takes over");
    let settled = r.a.redemption(&redemption.redemption_id).await.unwrap();
    assert_eq!(settled.status, Status::Failed);
    assert_eq!(r.f.available("gus").await, START_POINTS, "the spent points came back");
    assert_eq!(r.stock().await, Some(5), "the stock came back");

    // A wakes up and finishes its saga: it no longer owns the row.
    assert!(!r.a.renew(&redemption).await.unwrap());
    let late = r.a.activate(&redemption).await.unwrap();
    assert_eq!(late.status, Status::Failed, "no voucher from a replica that lost the row");
    r.b.send_refunds().await.unwrap();
    assert_eq!(r.f.available("gus").await, START_POINTS, "refunded once, not twice");
    assert_eq!(r.stock().await, Some(5));
    r.f.stop().await;
}

async fn a_stalled_owners_late_spend_is_refunded(backend: Backend) {
    let mut r = Replicas::start(backend).await;
    // A stages for a customer short of points and stalls before its spend.
    let redemption = r.stage("hal").await;
    r.clock.advance(DEFAULT_LEASE + 1);
    assert_eq!(r.b.recover().await.unwrap(), 1);
    assert_eq!(r.a.redemption(&redemption.redemption_id).await.unwrap().status, Status::Failed);
    assert_eq!(r.f.available("hal").await, 0, "B's spend was refused: nothing to give back");

    // Points arrive, then A's spend lands late and goes through.
    r.f.earn("hal", START_POINTS).await;
    r.spend(&redemption).await.unwrap();
    assert_eq!(r.f.available("hal").await, START_POINTS - COST);
    let late = r.a.activate(&redemption).await.unwrap();
    assert_eq!(late.status, Status::Failed, "no voucher from a replica that lost the row");
    r.b.send_refunds().await.unwrap();
    assert_eq!(r.f.available("hal").await, START_POINTS, "A's late spend was given back");
    r.f.stop().await;
}

/// A stages and spends, then stalls; B takes over and stalls after its own
/// (replayed) spend; A's recovery takes it back. B's late failure writes a
/// refund, so A's original saga must not issue the voucher: only the latest
/// claim may finish the redemption, not merely the latest process.
async fn a_redemption_taken_over_twice_never_ends_with_voucher_and_refund(backend: Backend) {
    let mut r = Replicas::start(backend).await;
    r.f.earn("ida", START_POINTS).await;
    let first = r.stage("ida").await;
    r.spend(&first).await.unwrap();

    r.clock.advance(DEFAULT_LEASE + 1);
    let by_b = r.b.store().claim_unsettled(10).await.unwrap();
    assert_eq!(by_b.len(), 1, "A went quiet past its lease: B claims it");
    r.spend(&by_b[0]).await.unwrap();
    r.clock.advance(DEFAULT_LEASE + 1);
    let by_a = r.a.claim_unsettled(10).await.unwrap();
    assert_eq!(by_a.len(), 1, "B went quiet in turn: A's recovery claims it back");

    let late_b = r.b.store().fail(&by_b[0], true).await.unwrap();
    assert_eq!(late_b.status, Status::Pending, "B no longer holds it");
    let late_a = r.a.activate(&first).await.unwrap();
    assert_eq!(late_a.status, Status::Pending, "the staging claim was superseded: no voucher");
    let settled = r.a.fail(&by_a[0], true).await.unwrap();
    assert_eq!(settled.status, Status::Failed);
    r.b.send_refunds().await.unwrap();
    assert_eq!(r.f.available("ida").await, START_POINTS, "the points came back, once");
    assert_eq!(r.stock().await, Some(5));
    r.f.stop().await;
}

/// A binary from before leases stages with no owner; during a rolling
/// deploy a new replica must leave that saga alone until it is old enough
/// that no live process can still be working on it.
async fn a_redemption_without_an_owner_waits_out_a_rolling_deploy(backend: Backend) {
    let mut r = Replicas::start(backend).await;
    r.f.earn("jo", START_POINTS).await;
    let staged = r.stage("jo").await;
    r.spend(&staged).await.unwrap();
    let db = db::connect(&r.f.rewards_url, db::PoolSettings::new(1, 1_000)).await.unwrap();
    sqlx::query("UPDATE redemptions SET owner = '', lease_until_us = 0 WHERE redemption_id = $1")
        .bind(&staged.redemption_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(r.b.recover().await.unwrap(), 0, "an old binary may still be spending for it");
    r.clock.advance(UNOWNED_GRACE / 2);
    assert_eq!(r.b.recover().await.unwrap(), 0);
    r.clock.advance(UNOWNED_GRACE / 2 + 1);
    assert_eq!(r.b.recover().await.unwrap(), 1, "old enough: settled");
    assert_eq!(r.a.redemption(&staged.redemption_id).await.unwrap().status, Status::Failed);
    assert_eq!(r.f.available("jo").await, START_POINTS);
    db.pool.close().await;
    r.f.stop().await;
}
