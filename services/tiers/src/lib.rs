//! The tiers service: ladders, qualification windows, downgrade policies,
//! hidden tiers and manual assignments, kept up to date by following the
//! points ledger. `main.rs` only parses the config and calls [`run`].

pub mod api;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::{Clock, SystemClock};
use loyalty_common::db;
use loyalty_common::server::{Launch, LaunchError, RunningService};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::tiers::v1::tiers_service_server::TiersServiceServer;

use crate::api::TiersApi;
use crate::service::Tiers;
use crate::store::TierStore;

pub const SERVICE_NAME: &str = "loyalty.tiers.v1.TiersService";

/// What each RPC needs of an API key. The ladder names hidden tiers, so
/// reading it takes an admin key; the multiplier is for the points service.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("GetLadder", Access::Key(Admin)),
        ("PutLadder", Access::Key(Admin)),
        ("GetMembership", Access::Key(Server)),
        ("ListMembershipHistory", Access::Key(Server)),
        ("AssignTier", Access::Key(Admin)),
        ("RemoveAssignment", Access::Key(Admin)),
        ("Reevaluate", Access::Key(Admin)),
        ("GetMultiplier", Access::Internal),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "tiers" "0001_tiers.sql",
    2 "qualification basis" "0002_qualification_basis.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-tiers", version, about = "The loyalty tiers service, served over gRPC.")]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TIERS_GRPC_ADDR", value_name = "TIERS_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "TIERS_METRICS_ADDR", value_name = "TIERS_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: SocketAddr,
    /// `postgres://user@host/db` for PostgreSQL, or `sqlite://path` for an embedded file.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/tiers.db",
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
    /// `host:port` of the points service, whose ledger drives memberships; unset: memberships only change by hand.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR")]
    pub points_addr: Option<String>,
    /// How often memberships with a due review (window boundary, grace end, assignment end) are looked at, in seconds.
    #[arg(long, env = "REVIEW_INTERVAL_SECS", value_name = "REVIEW_INTERVAL_SECS", default_value_t = 60)]
    pub review_interval_secs: u64,
    /// How long GetMultiplier may answer from memory, in milliseconds; bounds how late another replica's change is seen.
    #[arg(long, env = "MULTIPLIER_CACHE_TTL_MS", value_name = "MULTIPLIER_CACHE_TTL_MS", default_value_t = 5_000)]
    pub multiplier_cache_ttl_ms: u64,
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
}

/// A running tiers server: `bind_addr()`, `metrics_addr()`, `shutdown()`.
pub struct TiersServer(RunningService);

impl std::ops::Deref for TiersServer {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl TiersServer {
    /// Connects storage, applies migrations, starts following the ledger and serving on `listener`.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self, StartError> {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut launch = Launch::prepare("tiers", POLICY, config.metrics_addr, &config.security, clock.clone()).await?;
        let database = db::open(
            &config.database_url,
            db::PoolSettings::new(config.database_max_connections, config.database_acquire_timeout_ms),
            POSTGRES_MIGRATIONS,
            SQLITE_MIGRATIONS,
        )
        .await?;
        let store = TierStore::new(database.clone(), clock);
        let ttl = Duration::from_millis(config.multiplier_cache_ttl_ms);
        let tiers = Arc::new(Tiers::new(store, ttl, &launch.metrics));
        let review = Duration::from_secs(config.review_interval_secs.max(1));
        launch.spawn(tiers.clone().review_job(review, launch.signal()));
        match config.points_addr.clone().filter(|a| !a.is_empty()) {
            Some(points) => {
                launch.spawn(loyalty_common::follow::run(tiers.clone(), points, launch.peers(), launch.signal()))
            }
            None => tracing::warn!("POINTS_ADDR is not set: memberships follow no ledger, only manual assignments"),
        }
        let routes = tonic::service::Routes::new(TiersServiceServer::new(TiersApi::new(tiers)));
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
    let server = TiersServer::start(config, listener, None).await?;
    shutdown.await;
    server.shutdown().await?;
    tracing::info!("tiers service stopped");
    Ok(())
}
