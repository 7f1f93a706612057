//! The rewards service: the catalog, redemption through the points service,
//! and vouchers used exactly once. `main.rs` only parses the config and
//! calls [`run`].

pub mod api;
pub mod debt;
pub mod domain;
pub mod error;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::{Clock, SystemClock};
use loyalty_common::db;
use loyalty_common::server::{Launch, LaunchError, RunningService};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::rewards::v1::rewards_service_server::RewardsServiceServer;

use crate::api::RewardsApi;
use crate::service::Rewards;
use crate::store::RewardsStore;

pub const SERVICE_NAME: &str = "loyalty.rewards.v1.RewardsService";

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
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "rewards" "0001_rewards.sql",
    2 "task actor" "0002_task_actor.sql",
    3 "redemption lease" "0003_redemption_lease.sql",
    4 "task spend key" "0004_task_spend_key.sql",
    5 "consumer cursor" "0005_consumer_cursor.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-rewards", version, about = "The loyalty rewards service, served over gRPC.")]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "REWARDS_GRPC_ADDR", value_name = "REWARDS_GRPC_ADDR", default_value = "127.0.0.1:50054")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "REWARDS_METRICS_ADDR", value_name = "REWARDS_METRICS_ADDR", default_value = "127.0.0.1:9104")]
    pub metrics_addr: SocketAddr,
    /// `postgres://user@host/db` for PostgreSQL, or `sqlite://path` for an embedded file.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/rewards.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Largest number of database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", value_name = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Longest wait for a database connection before a call fails as UNAVAILABLE, in
    /// milliseconds: well under a caller's deadline, so an outage fails fast and says so.
    #[arg(
        long,
        env = "DATABASE_ACQUIRE_TIMEOUT_MS",
        value_name = "DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub database_acquire_timeout_ms: u64,
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
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] db::DbError),
    #[error("{0}")]
    Launch(#[from] LaunchError),
    #[error("POINTS_ADDR or TIERS_ADDR: {0}")]
    Peer(#[from] tonic::transport::Error),
}

/// A running rewards server: `bind_addr()`, `metrics_addr()`, `shutdown()`.
pub struct RewardsServer(RunningService);

impl std::ops::Deref for RewardsServer {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl RewardsServer {
    /// Connects storage, applies migrations, starts recovery and serving.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self, StartError> {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut launch =
            Launch::prepare("rewards", POLICY, config.metrics_addr, &config.security, clock.clone()).await?;
        let database = db::open(
            &config.database_url,
            db::PoolSettings::new(config.database_max_connections, config.database_acquire_timeout_ms),
            POSTGRES_MIGRATIONS,
            SQLITE_MIGRATIONS,
        )
        .await?;
        let store = RewardsStore::new(database.clone(), clock);
        let deadline = std::time::Duration::from_millis(config.upstream_timeout_ms);
        let peers = launch.peers();
        let rewards =
            Arc::new(Rewards::new(store, &config.points_addr, config.tiers_addr.as_deref(), deadline, &peers)?);
        let interval = std::time::Duration::from_millis(config.recovery_interval_ms.max(10));
        launch.spawn(rewards.clone().background(interval, launch.signal()));
        // Reversals that leave a debt cancel the customer's unused vouchers (see `debt`).
        launch.spawn(loyalty_common::follow::run(
            rewards.clone(),
            config.points_addr.clone(),
            launch.peers(),
            launch.signal(),
        ));
        let routes = tonic::service::Routes::new(RewardsServiceServer::new(RewardsApi::new(rewards)));
        Ok(Self(launch.serve(listener, routes, &database).await))
    }

    /// Reports NOT_SERVING, stops accepting, waits for in-flight calls and background jobs.
    pub async fn shutdown(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.shutdown().await
    }
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = RewardsServer::start(config, listener, None).await?;
    shutdown.await;
    server.shutdown().await?;
    tracing::info!("rewards service stopped");
    Ok(())
}
