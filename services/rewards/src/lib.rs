//! The rewards service: the catalog, redemption through the points service,
//! and vouchers used exactly once. `main.rs` is one call to the shared start-up.

pub mod domain;
pub mod error;
pub mod follow;
pub mod grpc;
pub mod privacy;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::outbox;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::rewards::v1::rewards_service_server::RewardsServiceServer;

use crate::grpc::RewardsApi;
use crate::service::Rewards;
use crate::store::RewardsStore;

pub const SERVICE_NAME: &str = "loyalty.rewards.v1.RewardsService";

/// Elects the replica that numbers the outbox's events.
const OUTBOX_LOCK_KEY: i64 = 0x0072_6577_6172_0002;

/// What each RPC needs of an API key: the catalog is the admin's, redeeming
/// and vouchers the shop's back end.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("CreateReward", Access::Key(Admin)),
        ("UpdateReward", Access::Key(Admin)),
        ("ArchiveReward", Access::Key(Admin)),
        ("ListRewards", Access::Key(Server)),
        ("ListAvailableRewards", Access::Key(Server)),
        ("Redeem", Access::Key(Server)),
        ("ListRedemptions", Access::Key(Server)),
        ("CancelRedemption", Access::Key(Admin)),
        ("ValidateVoucher", Access::Key(Server)),
        ("ConsumeVoucher", Access::Key(Server)),
        ("GrantReward", Access::Key(Admin)),
        ("IssueCodeBatch", Access::Key(Admin)),
        ("ListEvents", Access::Internal),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "rewards" "0001_rewards.sql",
    2 "task actor" "0002_task_actor.sql",
    3 "redemption lease" "0003_redemption_lease.sql",
    4 "task spend key" "0004_task_spend_key.sql",
    5 "consumer cursor" "0005_consumer_cursor.sql",
    6 "outbox" "0006_outbox.sql",
    7 "gifts" "0007_gifts.sql",
    8 "erased customers" "0008_erased_customers.sql",
    9 "drop redemptions_unsettled" "0009_drop_redemptions_unsettled.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-rewards", version, about = "The loyalty rewards service, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/rewards.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "REWARDS_GRPC_ADDR", value_name = "REWARDS_GRPC_ADDR", default_value = "127.0.0.1:50054")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "REWARDS_METRICS_ADDR", value_name = "REWARDS_METRICS_ADDR", default_value = "127.0.0.1:9104")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `host:port` of the points service, which spends and gives back the points, and whose
    /// ledger this service follows (a reversal that leaves a debt cancels unused vouchers).
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR", default_value = "127.0.0.1:50051")]
    pub points_addr: String,
    /// `host:port` of the tiers service, for rewards with a minimum tier; unset: such rewards are out of reach.
    #[arg(long, env = "TIERS_ADDR", value_name = "TIERS_ADDR")]
    pub tiers_addr: Option<String>,
    /// Deadline of one call to the points or tiers service, in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", value_name = "UPSTREAM_TIMEOUT_MS", default_value_t = 2_000)]
    pub upstream_timeout_ms: u64,
    /// How often half-done redemptions are settled, refunds sent and vouchers expired, in milliseconds.
    #[arg(long, env = "RECOVERY_INTERVAL_MS", value_name = "RECOVERY_INTERVAL_MS", default_value_t = 5_000)]
    pub recovery_interval_ms: u64,
    /// Days before an unused voucher expires that its `voucher.expiring_soon` event is written, once
    /// per voucher (at most 365; 0: never).
    #[arg(long, env = "VOUCHER_REMINDER_DAYS", value_name = "VOUCHER_REMINDER_DAYS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub voucher_reminder_days: u32,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The rewards service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct RewardsServer;

impl Service for RewardsServer {
    const BINARY: &'static str = "loyalty-rewards";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations, starts recovery and serving.
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        let mut launch = Launch::prepare("rewards", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let store = RewardsStore::new(database.clone(), launch.clock());
        let deadline = std::time::Duration::from_millis(config.upstream_timeout_ms);
        let peers = launch.peers();
        let rewards = Rewards::new(store, &config.points_addr, config.tiers_addr.as_deref(), deadline, &peers)
            .map_err(|e| StartError::setting("POINTS_ADDR or TIERS_ADDR", e))?;
        let rewards = Arc::new(rewards);
        let interval = std::time::Duration::from_millis(config.recovery_interval_ms.max(10));
        launch.spawn(rewards.clone().background(interval, config.voucher_reminder_days, launch.signal()));
        launch.spawn(watch_sagas(rewards.clone(), &launch.metrics, launch.signal()));
        launch.spawn(outbox::publisher(database.clone(), OUTBOX_LOCK_KEY, launch.clock(), launch.signal()));
        // Reversals that leave a debt cancel the customer's unused vouchers (see `follow`).
        launch.follow(rewards.clone(), config.points_addr.clone());
        let routes = tonic::service::Routes::new(RewardsServiceServer::new(RewardsApi::new(rewards)));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}

/// Keeps `redemptions_pending` and `redemptions_pending_oldest_age_seconds`
/// current (read every 5 s): redemptions whose saga has not settled, and how
/// long the oldest has waited (0 when none). Recovery settles them within
/// its interval; one that stays is stuck.
fn watch_sagas(
    rewards: Arc<Rewards>,
    metrics: &loyalty_common::metrics::Metrics,
    mut shutdown: loyalty_common::shutdown::ShutdownSignal,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use prometheus_client::metrics::gauge::Gauge;
    let pending = Gauge::<i64>::default();
    let oldest = Gauge::<i64>::default();
    metrics.register("redemptions_pending", "Redemptions whose points saga has not settled", pending.clone());
    metrics.register(
        "redemptions_pending_oldest_age_seconds",
        "How long the oldest unsettled redemption has waited (0: none)",
        oldest.clone(),
    );
    async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.fired() => return,
            }
            match rewards.store().pending_sagas().await {
                Ok((count, since)) => {
                    pending.set(count);
                    let now = rewards.store().now();
                    oldest.set(since.map_or(0, |at| (now - at).max(0) / loyalty_common::clock::MICROS_PER_SECOND));
                }
                Err(error) => tracing::warn!(%error, "cannot count pending redemptions"),
            }
        }
    }
}
