//! The insights service: what the program's customers do. It follows the
//! points ledger (orders and refunds) and keeps, per customer, their order
//! history's numbers, an RFM ranking within the program, a lifecycle
//! segment (new, active, loyal, at risk, churned) and a lifetime value
//! estimate. `main.rs` is one call to the shared start-up.

pub mod domain;
pub mod error;
pub mod follow;
pub mod grpc;
pub mod privacy;
pub mod referral;
pub mod service;
pub mod store;
pub mod winback;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::insights::v1::insights_service_server::InsightsServiceServer;

use crate::grpc::InsightsApi;
use crate::referral::ReferralSource;
use crate::service::Insights;
use crate::store::InsightsStore;
use crate::winback::WinBackRule;

pub const SERVICE_NAME: &str = "loyalty.insights.v1.InsightsService";

/// What each RPC needs of an API key: insights are the shop's marketing
/// data, for admin keys; the shop's back end records survey answers.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("GetCustomerInsight", Access::Key(Admin)),
        ("ListCustomers", Access::Key(Admin)),
        ("GetSegmentCounts", Access::Key(Admin)),
        ("GetInsightSettings", Access::Key(Admin)),
        ("PutInsightSettings", Access::Key(Admin)),
        ("RecordSurveyResponse", Access::Key(Server)),
        ("GetSurveyScores", Access::Key(Admin)),
        ("GetProgramKpis", Access::Key(Admin)),
        ("GetCohortRetention", Access::Key(Admin)),
        ("ListSegmentChanges", Access::Key(Admin)),
        ("GetSegment", Access::Internal),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "insights" "0001_insights.sql",
    2 "surveys" "0002_surveys.sql",
    3 "kpis" "0003_kpis.sql",
    4 "buyers" "0004_buyers.sql",
    5 "retention" "0005_retention.sql",
    6 "segment_changes" "0006_segment_changes.sql",
    7 "buyer_gaps" "0007_buyer_gaps.sql",
    8 "day_buyers" "0008_day_buyers.sql",
    9 "buyer_weeks" "0009_buyer_weeks.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-insights", version, about = "The loyalty insights service, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/insights.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "INSIGHTS_GRPC_ADDR", value_name = "INSIGHTS_GRPC_ADDR", default_value = "127.0.0.1:50055")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "INSIGHTS_METRICS_ADDR", value_name = "INSIGHTS_METRICS_ADDR", default_value = "127.0.0.1:9105")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `host:port` of the points service, whose ledger tells of orders and refunds; unset: nothing is learnt.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR")]
    pub points_addr: Option<String>,
    /// `host:port` of the tiers service, through which the win-back tier is assigned; unset: no win-back tier.
    #[arg(long, env = "TIERS_ADDR", value_name = "TIERS_ADDR")]
    pub tiers_addr: Option<String>,
    /// Deadline for one call to the tiers service, in milliseconds.
    #[arg(long, env = "TIERS_TIMEOUT_MS", value_name = "TIERS_TIMEOUT_MS", default_value_t = 2_000)]
    pub tiers_timeout_ms: u64,
    /// `host:port` of the referral service, asked for the referral funnel among the KPIs; unset: none.
    #[arg(long, env = "REFERRAL_ADDR", value_name = "REFERRAL_ADDR")]
    pub referral_addr: Option<String>,
    /// Deadline for one call to the referral service, in milliseconds.
    #[arg(long, env = "REFERRAL_TIMEOUT_MS", value_name = "REFERRAL_TIMEOUT_MS", default_value_t = 300)]
    pub referral_timeout_ms: u64,
    /// How often segments that time alone changes (a customer quiet for 60 days) are moved along, in seconds.
    #[arg(long, env = "REVIEW_INTERVAL_SECS", value_name = "REVIEW_INTERVAL_SECS", default_value_t = 60)]
    pub review_interval_secs: u64,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The insights service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct InsightsServer;

impl Service for InsightsServer {
    const BINARY: &'static str = "loyalty-insights";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations, starts following the ledger, the review job and serving.
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        let mut launch = Launch::prepare("insights", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let deadline = Duration::from_millis(config.tiers_timeout_ms.max(1));
        let win_back = WinBackRule::connect(config.tiers_addr.as_deref(), deadline, &launch.peers())
            .map_err(|e| StartError::setting("TIERS_ADDR", e))?;
        let insights = Arc::new(Insights::new(InsightsStore::new(database.clone(), launch.clock()), win_back));
        let review = Duration::from_secs(config.review_interval_secs.max(1));
        launch.spawn(insights.clone().review_job(review, launch.signal()));
        match config.points_addr.clone().filter(|a| !a.is_empty()) {
            Some(points) => launch.follow(insights.clone(), points),
            None => tracing::warn!("POINTS_ADDR is not set: no orders are followed"),
        }
        let deadline = Duration::from_millis(config.referral_timeout_ms.max(1));
        let referral = ReferralSource::connect(config.referral_addr.as_deref(), deadline, &launch.peers())
            .map_err(|e| StartError::setting("REFERRAL_ADDR", e))?;
        let routes = tonic::service::Routes::new(InsightsServiceServer::new(InsightsApi::new(insights, referral)));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}
