//! The referral service: codes, attribution, two-sided rewards through the
//! points service, abuse checks and clawback, driven by the points ledger.
//! `main.rs` only parses the config and calls [`run`].

pub mod api;
pub mod domain;
pub mod error;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server, Storefront};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::{Clock, SystemClock};
use loyalty_common::db;
use loyalty_common::server::{Launch, LaunchError, RunningService};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::referral::v1::referral_service_server::ReferralServiceServer;

use crate::api::ReferralApi;
use crate::service::Referrals;
use crate::store::ReferralStore;

pub const SERVICE_NAME: &str = "loyalty.referral.v1.ReferralService";

/// What each RPC needs of an API key. Only resolving a code (what it is
/// worth, for a landing page) is open to storefront keys.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("GetOrCreateCode", Access::Key(Server)),
        ("ResolveCode", Access::Key(Storefront)),
        ("DisableCode", Access::Key(Admin)),
        ("RecordSignup", Access::Key(Server)),
        ("RecordPurchase", Access::Key(Server)),
        ("RecordRefund", Access::Key(Server)),
        ("ListReferrals", Access::Key(Server)),
        ("GetReferralStats", Access::Key(Server)),
        ("GetReferralSummary", Access::Key(Server)),
        ("GetReferralSettings", Access::Key(Admin)),
        ("PutReferralSettings", Access::Key(Admin)),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "referral" "0001_referral.sql",
    2 "code disabled by" "0002_code_disabled_by.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-referral", version, about = "The loyalty referral service, served over gRPC.")]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "REFERRAL_GRPC_ADDR", value_name = "REFERRAL_GRPC_ADDR", default_value = "127.0.0.1:50053")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "REFERRAL_METRICS_ADDR", value_name = "REFERRAL_METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: SocketAddr,
    /// `postgres://user@host/db` for PostgreSQL, or `sqlite://path` for an embedded file.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/referral.db",
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
    /// `host:port` of the points service: its ledger tells of orders and refunds, and it pays the rewards.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR")]
    pub points_addr: Option<String>,
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

/// A running referral server: `bind_addr()`, `metrics_addr()`, `shutdown()`.
pub struct ReferralServer(RunningService);

impl std::ops::Deref for ReferralServer {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl ReferralServer {
    /// Connects storage, applies migrations, starts following the ledger, sending rewards and serving.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self, StartError> {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut launch =
            Launch::prepare("referral", POLICY, config.metrics_addr, &config.security, clock.clone()).await?;
        let database = db::open(
            &config.database_url,
            db::PoolSettings::new(config.database_max_connections, config.database_acquire_timeout_ms),
            POSTGRES_MIGRATIONS,
            SQLITE_MIGRATIONS,
        )
        .await?;
        let referrals = Arc::new(Referrals::new(ReferralStore::new(database.clone(), clock)));
        match config.points_addr.clone().filter(|a| !a.is_empty()) {
            Some(points) => {
                launch.spawn(loyalty_common::follow::run(
                    referrals.clone(),
                    points.clone(),
                    launch.peers(),
                    launch.signal(),
                ));
                launch.spawn(referrals.clone().dispatcher(points, launch.peers(), launch.signal()));
            }
            None => tracing::warn!("POINTS_ADDR is not set: no orders are followed and no rewards are paid"),
        }
        let routes = tonic::service::Routes::new(ReferralServiceServer::new(ReferralApi::new(referrals)));
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
    let server = ReferralServer::start(config, listener, None).await?;
    shutdown.await;
    server.shutdown().await?;
    tracing::info!("referral service stopped");
    Ok(())
}
