//! The referral service: codes, attribution, two-sided rewards through the
//! points service, abuse checks and clawback, driven by the points ledger.
//! `main.rs` is one call to the shared start-up.

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

use loyalty_common::auth::keys::Scope::{Admin, Server, Storefront};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::outbox;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::referral::v1::referral_service_server::ReferralServiceServer;

use crate::grpc::ReferralApi;
use crate::service::Referrals;
use crate::store::ReferralStore;

pub const SERVICE_NAME: &str = "loyalty.referral.v1.ReferralService";

/// Elects the replica that numbers the outbox's events.
const OUTBOX_LOCK_KEY: i64 = 0x0072_6566_6572_0002;

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
        ("GetReferralFunnel", Access::Key(Admin)),
        ("GetReferralSettings", Access::Key(Admin)),
        ("PutReferralSettings", Access::Key(Admin)),
        ("ListEvents", Access::Internal),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "referral" "0001_referral.sql",
    2 "code disabled by" "0002_code_disabled_by.sql",
    3 "referrals by day" "0003_referrals_by_day.sql",
    4 "outbox" "0004_outbox.sql",
    5 "vouchers" "0005_vouchers.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-referral", version, about = "The loyalty referral service, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/referral.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "REFERRAL_GRPC_ADDR", value_name = "REFERRAL_GRPC_ADDR", default_value = "127.0.0.1:50053")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "REFERRAL_METRICS_ADDR", value_name = "REFERRAL_METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `host:port` of the points service: its ledger tells of orders and refunds, and it pays the rewards.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR")]
    pub points_addr: Option<String>,
    /// `host:port` of the rewards service, which gives the vouchers the settings name (`referee_reward_id`,
    /// `referrer_reward_id`); unset: settings cannot name vouchers.
    #[arg(long, env = "REWARDS_ADDR", value_name = "REWARDS_ADDR")]
    pub rewards_addr: Option<String>,
    /// Deadline of one call to the rewards service, in milliseconds.
    #[arg(long, env = "REWARDS_TIMEOUT_MS", value_name = "REWARDS_TIMEOUT_MS", default_value_t = 2_000)]
    pub rewards_timeout_ms: u64,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The referral service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct ReferralServer;

impl Service for ReferralServer {
    const BINARY: &'static str = "loyalty-referral";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations, starts following the ledger, sending rewards and serving.
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        let mut launch = Launch::prepare("referral", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let deadline = std::time::Duration::from_millis(config.rewards_timeout_ms.max(1));
        let rewards = launch
            .peers()
            .optional(config.rewards_addr.as_deref(), deadline)
            .map_err(|e| StartError::setting("REWARDS_ADDR", e))?;
        let referrals = Arc::new(Referrals::new(ReferralStore::new(database.clone(), launch.clock()), rewards));
        launch.spawn(outbox::publisher(database.clone(), OUTBOX_LOCK_KEY, launch.clock(), launch.signal()));
        match config.points_addr.clone().filter(|a| !a.is_empty()) {
            Some(points) => {
                launch.follow(referrals.clone(), points.clone());
                launch.spawn(referrals.clone().dispatcher(points, launch.peers(), launch.signal()));
            }
            None => tracing::warn!("POINTS_ADDR is not set: no orders are followed and no rewards are paid"),
        }
        let routes = tonic::service::Routes::new(ReferralServiceServer::new(ReferralApi::new(referrals)));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}
