//! The points ledger service: earn, pending, spend, expiry, reversal, and the
//! ledger as an event stream. `main.rs` is one call to the shared start-up.

pub mod birthdays;
pub mod cache;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod privacy;
pub mod segments;
pub mod service;
pub mod store;
pub mod tiers;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use loyalty_common::auth::keys::Scope::{Admin, Server};
use loyalty_common::auth::{Access, Policy, SecurityArgs};
use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::server::{Launch, RunningService, Service, StartError};
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::points::v1::points_service_server::PointsServiceServer;

use crate::cache::BalanceCache;
use crate::grpc::PointsApi;
use crate::segments::SegmentSource;
use crate::service::{Ledger, WriterSettings};
use crate::store::program::ProgramStore;
use crate::store::{CacheDoubts, LedgerStore};
use crate::tiers::TierSource;

pub const SERVICE_NAME: &str = "loyalty.points.v1.PointsService";

/// What each RPC needs of an API key. Storefront keys reach no RPC here:
/// a browser holds them, and they never read or spend a customer's points.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    methods: &[
        ("Earn", Access::Key(Server)),
        ("Spend", Access::Key(Server)),
        ("Reverse", Access::Key(Server)),
        ("RestoreSpend", Access::Key(Server)),
        ("Adjust", Access::Key(Admin)),
        ("ActivatePending", Access::Key(Server)),
        ("GetBalance", Access::Key(Server)),
        ("ListTransactions", Access::Key(Server)),
        ("GetExpiringPoints", Access::Key(Server)),
        ("GetAccountSummary", Access::Key(Server)),
        // Every program at once: the services' own jobs and consumers only.
        ("RunExpiry", Access::Internal),
        ("StreamEvents", Access::Internal),
        // Every account of a program: the webhooks service's monthly statements.
        ("ListBalances", Access::Internal),
        ("GetProfile", Access::Key(Server)),
        ("UpdateProfile", Access::Key(Server)),
        ("RunBirthdays", Access::Internal),
        ("GetProgramSettings", Access::Key(Admin)),
        ("PutProgramSettings", Access::Key(Admin)),
        ("ListCampaigns", Access::Key(Admin)),
        ("CreateCampaign", Access::Key(Admin)),
        ("UpdateCampaign", Access::Key(Admin)),
        ("EndCampaign", Access::Key(Admin)),
        ("ListAuditEntries", Access::Key(Admin)),
        ("EarnForOrder", Access::Key(Server)),
        ("RefundOrder", Access::Key(Server)),
        ("RecordActivity", Access::Key(Server)),
        ("PreviewOrder", Access::Key(Server)),
        ("QuoteCheckoutPoints", Access::Key(Server)),
        ("ApplyCheckoutPoints", Access::Key(Server)),
    ],
};

loyalty_common::embedded_migrations!("../migrations":
    1 "ledger" "0001_ledger.sql",
    2 "program rules" "0002_program_rules.sql",
    3 "entry amount" "0003_entry_amount.sql",
    4 "entry order" "0004_entry_order.sql",
    5 "entry actor" "0005_entry_actor.sql",
    6 "entry base points" "0006_entry_base_points.sql",
    7 "balance cache doubts" "0007_balance_cache_doubts.sql",
    8 "entry draws" "0008_entry_draws.sql",
    9 "member profiles" "0009_member_profiles.sql",
    10 "checkout spends" "0010_checkout_spends.sql",
    11 "ledger batches" "0011_ledger_batches.sql",
);

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loyalty-points", version, about = "The loyalty points ledger, served over gRPC.")]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/points.db")))]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "POINTS_GRPC_ADDR", value_name = "POINTS_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "POINTS_METRICS_ADDR", value_name = "POINTS_METRICS_ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Workers that commit concurrent Earn, Spend and Adjust calls together, one
    /// database transaction per batch (each account always on the same worker); 0 gives
    /// every call a transaction of its own.
    #[arg(long, env = "WRITE_WORKERS", value_name = "WRITE_WORKERS", default_value_t = 4)]
    pub write_workers: usize,
    /// Writes that may wait for each write worker; past it a write is refused at once as
    /// UNAVAILABLE (`OVERLOADED`, retry with the same idempotency key) instead of queuing
    /// behind work the database cannot catch up with.
    #[arg(
        long,
        env = "WRITE_QUEUE_CAPACITY",
        value_name = "WRITE_QUEUE_CAPACITY",
        default_value_t = 1_024,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub write_queue_capacity: u64,
    /// `redis://host:port` to cache hot balances in Redis, or
    /// `redis+cluster://host:port,host:port,...` (seed nodes) in a Redis
    /// Cluster; unset: an in-process cache.
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this service writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", value_name = "REDIS_KEY_PREFIX", default_value = "loyalty:points:")]
    pub redis_key_prefix: String,
    /// `host:port` of the tiers service, asked for each order's tier multiplier; unset: 1x for everyone.
    #[arg(long, env = "TIERS_ADDR", value_name = "TIERS_ADDR")]
    pub tiers_addr: Option<String>,
    /// Deadline for one call to the tiers service, in milliseconds.
    #[arg(long, env = "TIERS_TIMEOUT_MS", value_name = "TIERS_TIMEOUT_MS", default_value_t = 300)]
    pub tiers_timeout_ms: u64,
    /// `host:port` of the insights service, asked for the customer's segment when a campaign
    /// targets segments; unset: campaigns cannot target segments.
    #[arg(long, env = "INSIGHTS_ADDR", value_name = "INSIGHTS_ADDR")]
    pub insights_addr: Option<String>,
    /// Deadline for one call to the insights service, in milliseconds.
    #[arg(long, env = "INSIGHTS_TIMEOUT_MS", value_name = "INSIGHTS_TIMEOUT_MS", default_value_t = 300)]
    pub insights_timeout_ms: u64,
    /// How long a balance may stay in Redis without being refreshed, in seconds.
    #[arg(long, env = "BALANCE_CACHE_TTL_SECS", value_name = "BALANCE_CACHE_TTL_SECS", default_value_t = 300)]
    pub balance_cache_ttl_secs: u64,
    /// Longest wait for one Redis command before falling back to the database, in milliseconds.
    #[arg(long, env = "REDIS_TIMEOUT_MS", value_name = "REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,
    /// After a Redis failure, how long to serve from the database alone before trying Redis again, in milliseconds.
    #[arg(long, env = "REDIS_BACKOFF_MS", value_name = "REDIS_BACKOFF_MS", default_value_t = 1_000)]
    pub redis_backoff_ms: u64,
    /// How often the expiry job activates due pending points and expires old lots, in seconds.
    #[arg(long, env = "EXPIRY_INTERVAL_SECS", value_name = "EXPIRY_INTERVAL_SECS", default_value_t = 60)]
    pub expiry_interval_secs: u64,
    /// How often members whose birthday it is (in their time zone) are looked for and given the `birthday`
    /// activity, once a year each, in seconds.
    #[arg(long, env = "BIRTHDAY_INTERVAL_SECS", value_name = "BIRTHDAY_INTERVAL_SECS", default_value_t = 3_600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub birthday_interval_secs: u64,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The points service, as the shared start-up runs it ([`loyalty_common::server::main`]).
pub struct PointsServer;

impl Service for PointsServer {
    const BINARY: &'static str = "loyalty-points";
    type Config = Config;

    fn serving(config: &Config) -> (SocketAddr, &TelemetryArgs) {
        (config.grpc_addr, &config.telemetry)
    }

    /// Connects storage, applies migrations and starts serving on `listener`.
    /// The wall clock unless `clock` says otherwise (tests pass a manual one).
    async fn start(
        config: Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<RunningService, StartError> {
        let mut launch = Launch::prepare("points", POLICY, config.metrics_addr, &config.security, clock).await?;
        let database = config.database.open(MIGRATIONS).await?;
        let cache = match &config.redis_url {
            Some(url) => {
                let conn = loyalty_common::redis::connect(url, Duration::from_millis(config.redis_timeout_ms))
                    .map_err(|e| StartError::setting("REDIS_URL", e))?;
                let ttl = Duration::from_secs(config.balance_cache_ttl_secs);
                let backoff = Duration::from_millis(config.redis_backoff_ms);
                let doubts = CacheDoubts::new(database.clone());
                BalanceCache::redis(conn, config.redis_key_prefix.clone(), ttl, backoff, doubts, &launch.metrics)
            }
            None => BalanceCache::local(&launch.metrics),
        };
        if let Some(watcher) = cache.doubt_watcher(launch.signal()) {
            launch.spawn(watcher);
        }
        let tiers_deadline = Duration::from_millis(config.tiers_timeout_ms);
        let tiers = TierSource::connect(config.tiers_addr.as_deref(), tiers_deadline, &launch.peers())
            .map_err(|e| StartError::setting("TIERS_ADDR", e))?;
        let insights_deadline = Duration::from_millis(config.insights_timeout_ms);
        let segments = SegmentSource::connect(config.insights_addr.as_deref(), insights_deadline, &launch.peers())
            .map_err(|e| StartError::setting("INSIGHTS_ADDR", e))?;
        let programs = ProgramStore::new(database.clone(), launch.clock());
        let store = LedgerStore::new(database.clone(), launch.clock());
        let refused = Counter::default();
        launch.metrics.register(
            "ledger_writes_refused",
            "Writes refused at once because their write worker's queue was full",
            refused.clone(),
        );
        let writer = WriterSettings {
            workers: config.write_workers,
            queue_capacity: usize::try_from(config.write_queue_capacity).unwrap_or(usize::MAX),
            refused,
        };
        let ledger = Ledger::new(store, cache, programs, tiers, segments, writer)
            .await
            .map_err(|e| StartError::setting("cannot read the ledger", e))?;
        let ledger = Arc::new(ledger);
        launch.spawn(ledger.clone().publisher(launch.signal()));
        let head = Gauge::default();
        launch.metrics.register(
            "ledger_stream_head",
            "The last ledger sequence published to StreamEvents (consumers' lag: this minus stream_consumer_position)",
            head.clone(),
        );
        launch.spawn(track_head(ledger.published(), head, launch.signal()));
        let expiry = Duration::from_secs(config.expiry_interval_secs.max(1));
        launch.spawn(ledger.clone().expiry_job(expiry, launch.signal()));
        let birthdays = Duration::from_secs(config.birthday_interval_secs);
        launch.spawn(ledger.clone().birthday_job(birthdays, launch.signal()));
        tracing::info!(cache = if config.redis_url.is_some() { "redis" } else { "in-process" }, "balance cache");
        launch.after_erase(Arc::new(ForgetBalance(ledger.clone())));
        let routes = tonic::service::Routes::new(PointsServiceServer::new(PointsApi::new(ledger, launch.signal())));
        Ok(launch.serve(listener, routes, &database, &privacy::SUBJECT).await)
    }
}

/// Keeps `ledger_stream_head` at the last published sequence.
async fn track_head(mut published: tokio::sync::watch::Receiver<i64>, head: Gauge, mut shutdown: ShutdownSignal) {
    loop {
        head.set(*published.borrow_and_update());
        tokio::select! {
            changed = published.changed() => if changed.is_err() { return },
            () = shutdown.fired() => return,
        }
    }
}

/// An erased customer's balance leaves the cache too.
struct ForgetBalance(Arc<Ledger>);

#[tonic::async_trait]
impl loyalty_common::privacy::AfterErase for ForgetBalance {
    async fn erased(&self, program_id: &str, customer_id: &str) -> Result<(), String> {
        self.0.forget_cached(program_id, customer_id).await
    }
}
