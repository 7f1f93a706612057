//! The tiers service: ladders, qualification windows, downgrade policies,
//! hidden tiers and manual assignments, kept up to date by following the
//! points ledger. `main.rs` is one call to the shared start-up.

pub mod domain;
pub mod error;
pub mod follow;
pub mod grpc;
pub mod privacy;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::outbox;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::tiers::v1::tiers_service_server::TiersServiceServer;

use crate::grpc::TiersApi;
use crate::service::Tiers;
use crate::store::TierStore;

pub const SERVICE_NAME: &str = "loyalty.tiers.v1.TiersService";

/// Elects the replica that numbers the outbox's events.
const OUTBOX_LOCK_KEY: i64 = 0x0074_6965_7273_0002;

/// What each RPC needs of an API key. The ladder names hidden tiers, so
/// reading it takes an admin key; the multiplier is for the points service.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("GetLadder", Access::Key(Admin)),
        ("PutLadder", Access::Key(Admin)),
        ("GetTierDistribution", Access::Key(Admin)),
        ("GetMembership", Access::Key(Server)),
        ("ListMembershipHistory", Access::Key(Server)),
        ("AssignTier", Access::Key(Admin)),
        ("RemoveAssignment", Access::Key(Admin)),
        ("Reevaluate", Access::Key(Admin)),
        ("GetMultiplier", Access::Internal),
        ("ListEvents", Access::Internal),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "tiers" "0001_tiers.sql",
    2 "qualification basis" "0002_qualification_basis.sql",
    3 "outbox" "0003_outbox.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-tiers", version, about = "The loyalty tiers service, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/tiers.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TIERS_GRPC_ADDR", value_name = "TIERS_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "TIERS_METRICS_ADDR", value_name = "TIERS_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
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

/// The tiers service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct TiersServer;

impl Service for TiersServer {
    const BINARY: &'static str = "loyalty-tiers";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations, starts following the ledger and serving on `listener`.
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        let mut launch = Launch::prepare("tiers", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let store = TierStore::new(database.clone(), launch.clock());
        let ttl = Duration::from_millis(config.multiplier_cache_ttl_ms);
        let tiers = Arc::new(Tiers::new(store, ttl, &launch.metrics));
        let review = Duration::from_secs(config.review_interval_secs.max(1));
        launch.spawn(tiers.clone().review_job(review, launch.signal()));
        launch.spawn(outbox::publisher(database.clone(), OUTBOX_LOCK_KEY, launch.clock(), launch.signal()));
        match config.points_addr.clone().filter(|a| !a.is_empty()) {
            Some(points) => launch.follow(tiers.clone(), points),
            None => tracing::warn!("POINTS_ADDR is not set: memberships follow no ledger, only manual assignments"),
        }
        let routes = tonic::service::Routes::new(TiersServiceServer::new(TiersApi::new(tiers)));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}
