//! The webhooks service: the program's events, pushed to the shop's own
//! endpoints. It follows the points ledger, records each entry a
//! subscription wants as an event with one delivery per subscription, and
//! delivers them signed per the Standard Webhooks specification, at least
//! once, retried with backoff. `main.rs` is one call to the shared start-up.

pub mod deliver;
pub mod domain;
pub mod error;
pub mod follow;
pub mod grpc;
pub mod guard;
pub mod jobs;
pub mod outboxes;
pub mod privacy;
pub mod reminders;
pub mod segments;
pub mod service;
pub mod statements;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::Admin;
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_proto::webhooks::v1::webhooks_service_server::WebhooksServiceServer;

use crate::deliver::DeliverySettings;
use crate::domain::RetrySchedule;
use crate::grpc::WebhooksApi;
use crate::guard::AddressPolicy;
use crate::outboxes::Source;
use crate::service::Webhooks;
use crate::store::WebhooksStore;

pub const SERVICE_NAME: &str = "loyalty.webhooks.v1.WebhooksService";

/// What each RPC needs of an API key: endpoints and their secrets are the
/// shop's administration.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("CreateSubscription", Access::Key(Admin)),
        ("GetSubscription", Access::Key(Admin)),
        ("ListSubscriptions", Access::Key(Admin)),
        ("UpdateSubscription", Access::Key(Admin)),
        ("DeleteSubscription", Access::Key(Admin)),
        ("RotateSecret", Access::Key(Admin)),
        ("ListDeliveries", Access::Key(Admin)),
        ("Redeliver", Access::Key(Admin)),
        ("ListEventTypes", Access::Key(Admin)),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "webhooks" "0001_webhooks.sql",
    2 "reminders" "0002_reminders.sql",
    3 "retention" "0003_retention.sql",
    4 "statements" "0004_statements.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-webhooks", version, about = "The loyalty webhooks service, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/webhooks.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "WEBHOOKS_GRPC_ADDR", value_name = "WEBHOOKS_GRPC_ADDR", default_value = "127.0.0.1:50056")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "WEBHOOKS_METRICS_ADDR", value_name = "WEBHOOKS_METRICS_ADDR", default_value = "127.0.0.1:9106")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `host:port` of the points service, whose ledger's entries are the `points.*` events; unset: none.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR")]
    pub points_addr: Option<String>,
    /// Deadline for one call to the points service (the reminders ask it what is left to expire), in milliseconds.
    #[arg(long, env = "POINTS_TIMEOUT_MS", value_name = "POINTS_TIMEOUT_MS", default_value_t = 2_000)]
    pub points_timeout_ms: u64,
    /// How often due `points.expiring_soon` reminders are looked for, in seconds.
    #[arg(long, env = "WEBHOOKS_REMINDER_INTERVAL_SECS", value_name = "WEBHOOKS_REMINDER_INTERVAL_SECS",
          default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reminder_interval_secs: u64,
    /// How often due monthly statements (`points.statement`) are looked for, in seconds.
    #[arg(long, env = "WEBHOOKS_STATEMENT_INTERVAL_SECS", value_name = "WEBHOOKS_STATEMENT_INTERVAL_SECS",
          default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub statement_interval_secs: u64,
    /// `host:port` of the tiers service, for the tier and its progress in monthly statements; unset: without them.
    #[arg(long, env = "TIERS_ADDR", value_name = "TIERS_ADDR")]
    pub tiers_addr: Option<String>,
    /// Deadline for one call to the tiers service, in milliseconds.
    #[arg(long, env = "TIERS_TIMEOUT_MS", value_name = "TIERS_TIMEOUT_MS", default_value_t = 2_000)]
    pub tiers_timeout_ms: u64,
    /// `host:port` of the insights service, whose segment changes are the `segment.changed` events; unset: none.
    #[arg(long, env = "INSIGHTS_ADDR", value_name = "INSIGHTS_ADDR")]
    pub insights_addr: Option<String>,
    /// Deadline for one call to the insights service, in milliseconds.
    #[arg(long, env = "INSIGHTS_TIMEOUT_MS", value_name = "INSIGHTS_TIMEOUT_MS", default_value_t = 2_000)]
    pub insights_timeout_ms: u64,
    /// `host:port` of the referral service, whose outbox's events are `referral.*`; unset: none.
    #[arg(long, env = "REFERRAL_ADDR", value_name = "REFERRAL_ADDR")]
    pub referral_addr: Option<String>,
    /// `host:port` of the rewards service, whose outbox's events are `reward.redeemed`, `voucher.*` and
    /// `redemption.cancelled`; unset: none. (The tiers service's, `tier.*`, come from TIERS_ADDR.)
    #[arg(long, env = "REWARDS_ADDR", value_name = "REWARDS_ADDR")]
    pub rewards_addr: Option<String>,
    /// Deadline for one call to the referral or rewards service, in milliseconds.
    #[arg(long, env = "OUTBOX_TIMEOUT_MS", value_name = "OUTBOX_TIMEOUT_MS", default_value_t = 2_000)]
    pub outbox_timeout_ms: u64,
    /// How often the outboxes of the tiers, referral and rewards services are asked for new events, in milliseconds.
    #[arg(long, env = "WEBHOOKS_OUTBOX_POLL_MS", value_name = "WEBHOOKS_OUTBOX_POLL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub outbox_poll_ms: u64,
    /// How often the segment changes of programs that want them are asked for, in milliseconds.
    #[arg(long, env = "WEBHOOKS_SEGMENT_POLL_MS", value_name = "WEBHOOKS_SEGMENT_POLL_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub segment_poll_ms: u64,
    /// Delays between attempts, e.g. `5s,5m,30m,2h` (units s, m, h, d): the
    /// first attempt is at once, one more after each delay, then the
    /// delivery is given up.
    #[arg(long, env = "WEBHOOKS_RETRY_SCHEDULE", value_name = "WEBHOOKS_RETRY_SCHEDULE", default_value = RetrySchedule::DEFAULT)]
    pub retry_schedule: RetrySchedule,
    /// Deadline of one attempt, connecting included, in milliseconds (at most 30000).
    #[arg(long, env = "WEBHOOKS_TIMEOUT_MS", value_name = "WEBHOOKS_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=30_000))]
    pub timeout_ms: u64,
    /// Attempts under way at once to one subscription's endpoint, per replica.
    #[arg(long, env = "WEBHOOKS_ENDPOINT_CONCURRENCY", value_name = "WEBHOOKS_ENDPOINT_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub endpoint_concurrency: u32,
    /// Attempts under way at once in all, per replica.
    #[arg(long, env = "WEBHOOKS_MAX_IN_FLIGHT", value_name = "WEBHOOKS_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight: u32,
    /// A subscription whose every attempt failed for this many days is disabled (status FAILING) and a
    /// `subscription.disabled` event goes to the program's other subscriptions.
    #[arg(long, env = "WEBHOOKS_DISABLE_AFTER_DAYS", value_name = "WEBHOOKS_DISABLE_AFTER_DAYS", default_value_t = 5,
          value_parser = clap::value_parser!(i64).range(1..=60))]
    pub disable_after_days: i64,
    /// How often due deliveries are looked for when nothing new arrived, in milliseconds.
    #[arg(long, env = "WEBHOOKS_POLL_INTERVAL_MS", value_name = "WEBHOOKS_POLL_INTERVAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    /// Days settled deliveries (delivered or given up), their attempts and their events are kept.
    #[arg(long, env = "WEBHOOKS_RETENTION_DAYS", value_name = "WEBHOOKS_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(1..=3_650))]
    pub retention_days: i64,
    /// How long a replica keeps a delivery it took for an attempt, in seconds: a replica that dies
    /// mid-attempt leaves its deliveries to be taken again after this long. More than the timeout.
    #[arg(long, env = "WEBHOOKS_LEASE_SECS", value_name = "WEBHOOKS_LEASE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub lease_secs: u64,
    /// Networks deliveries may reach although they are not public, comma-separated CIDRs
    /// (e.g. `10.20.0.0/16`); by default only public addresses are reached.
    #[arg(long, env = "WEBHOOKS_ALLOWED_NETWORKS", value_name = "WEBHOOKS_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub allowed_networks: Vec<IpNet>,
    /// Also accept `http://` endpoint URLs (for tests and local development; production endpoints use https).
    #[arg(long, env = "WEBHOOKS_ALLOW_HTTP", value_name = "WEBHOOKS_ALLOW_HTTP")]
    pub allow_http: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The webhooks service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct WebhooksServer;

impl Service for WebhooksServer {
    const BINARY: &'static str = "loyalty-webhooks";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations, starts following the ledger, the dispatcher and serving.
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        // Settings first: a bad one must not leave a migrated database behind.
        if config.lease_secs * 1_000 <= config.timeout_ms {
            return Err(StartError::setting("WEBHOOKS_LEASE_SECS", "must be longer than WEBHOOKS_TIMEOUT_MS"));
        }
        let mut launch = Launch::prepare("webhooks", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let settings = DeliverySettings {
            schedule: config.retry_schedule.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            endpoint_concurrency: config.endpoint_concurrency as usize,
            max_in_flight: config.max_in_flight as usize,
            disable_after_days: config.disable_after_days,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            lease: Duration::from_secs(config.lease_secs),
            addresses: AddressPolicy::new(config.allowed_networks.clone()),
            plain_http: config.allow_http,
        };
        let client = deliver::client(&settings).map_err(|e| StartError::setting("WEBHOOKS_TIMEOUT_MS", e))?;
        let webhooks = Arc::new(Webhooks::new(WebhooksStore::new(database.clone(), launch.clock()), settings));
        launch.metrics.register(
            "webhook_attempts_delivered",
            "Delivery attempts the endpoint accepted (2xx)",
            webhooks.delivered.clone(),
        );
        launch.metrics.register("webhook_attempts_failed", "Delivery attempts that failed", webhooks.failed.clone());
        launch.spawn(deliver::run(webhooks.clone(), client, launch.signal()));
        launch.spawn(deliver::retention(webhooks.clone(), config.retention_days, launch.signal()));
        // The peers, each optional: a lazy channel with its own deadline.
        let peers = launch.peers();
        let peer = |variable: &'static str, address: Option<&str>, timeout_ms: u64| {
            let deadline = Duration::from_millis(timeout_ms.max(1));
            peers.optional(address, deadline).map_err(|e| StartError::setting(variable, e))
        };
        let points = peer("POINTS_ADDR", config.points_addr.as_deref(), config.points_timeout_ms)?;
        let tiers = peer("TIERS_ADDR", config.tiers_addr.as_deref(), config.tiers_timeout_ms)?;
        let insights = peer("INSIGHTS_ADDR", config.insights_addr.as_deref(), config.insights_timeout_ms)?;
        let referral = peer("REFERRAL_ADDR", config.referral_addr.as_deref(), config.outbox_timeout_ms)?;
        let rewards = peer("REWARDS_ADDR", config.rewards_addr.as_deref(), config.outbox_timeout_ms)?;
        let outboxes = [
            tiers.clone().map(|c| Source::Tiers(TiersServiceClient::new(c))),
            referral.map(|c| Source::Referral(ReferralServiceClient::new(c))),
            rewards.map(|c| Source::Rewards(RewardsServiceClient::new(c))),
        ];
        for source in outboxes.into_iter().flatten() {
            let interval = Duration::from_millis(config.outbox_poll_ms);
            launch.spawn(outboxes::run(webhooks.clone(), source, interval, launch.signal()));
        }
        match (points, config.points_addr.clone()) {
            (Some(channel), Some(points_addr)) => {
                let client = PointsServiceClient::new(channel);
                let interval = Duration::from_secs(config.reminder_interval_secs);
                launch.spawn(reminders::run(webhooks.clone(), client.clone(), interval, launch.signal()));
                let statement_peers = statements::Peers { points: client, tiers: tiers.map(TiersServiceClient::new) };
                let interval = Duration::from_secs(config.statement_interval_secs);
                launch.spawn(statements::run(webhooks.clone(), statement_peers, interval, launch.signal()));
                launch.follow(webhooks.clone(), points_addr);
            }
            _ => tracing::warn!("POINTS_ADDR is not set: no points events are delivered"),
        }
        match insights {
            Some(channel) => {
                let interval = Duration::from_millis(config.segment_poll_ms);
                let client = InsightsServiceClient::new(channel);
                launch.spawn(segments::run(webhooks.clone(), client, interval, launch.signal()));
            }
            None => tracing::info!("INSIGHTS_ADDR is not set: no segment.changed events"),
        }
        let routes = tonic::service::Routes::new(WebhooksServiceServer::new(WebhooksApi::new(webhooks)));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}
