//! The loyalty gateway: the HTTP/JSON API that shops and storefront widgets
//! call, translated into gRPC calls to the services. `main.rs` only parses
//! the command line and calls [`run`] or [`cli::run_keys`].

pub mod cli;
pub mod console;
pub mod constraints;
pub mod customer;
pub mod extract;
pub mod keys;
pub mod model;
pub mod observe;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
/// Instants as RFC 3339 text: in loyalty-proto, whose derived JSON uses it too.
pub use loyalty_proto::json::rfc3339;
pub mod routes;
pub mod unread;
pub mod upstream;
pub mod widget;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use loyalty_common::auth::{AuthSetupError, ServiceSecret};
use loyalty_common::clock::SystemClock;
use loyalty_common::db::{self, DatabaseArgs, DbError};
use loyalty_common::metrics::Metrics;
use loyalty_common::peer::Peers;
use loyalty_common::server::DRAIN_TIMEOUT;
use loyalty_common::shutdown::{self, ShutdownTrigger};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_common::tls::{Tls, TlsArgs, TlsError};

use crate::extract::Admission;
use crate::keys::{KeyStore, KeyVerifier};
use crate::observe::HttpMetrics;
use crate::ratelimit::RateLimiter;
use crate::routes::{AppState, HttpSettings, RouteSpec};
use crate::upstream::{AddressError, Addresses, Upstreams};

/// Every setting of the server, from flags or the environment.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/gateway.db")))]
#[command(mut_arg("database_max_connections", |arg| arg.default_value("8")))]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", value_name = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "GATEWAY_METRICS_ADDR", value_name = "GATEWAY_METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,
    /// `host:port` of the points service; a comma-separated list balances calls over several.
    #[arg(long, env = "POINTS_ADDR", value_name = "POINTS_ADDR", default_value = "127.0.0.1:50051")]
    pub points_addr: String,
    /// `host:port` of the tiers service (ladder, memberships, the tier part of the loyalty page);
    /// unset: its routes answer 503 `BACKEND_NOT_CONFIGURED` and the page marks its part not configured.
    #[arg(long, env = "TIERS_ADDR", value_name = "TIERS_ADDR")]
    pub tiers_addr: Option<String>,
    /// `host:port` of the referral service (codes, sign-ups, settings, the referral part of the loyalty page);
    /// unset: its routes answer 503 `BACKEND_NOT_CONFIGURED` and `referral_code` on orders is reported not recorded.
    #[arg(long, env = "REFERRAL_ADDR", value_name = "REFERRAL_ADDR")]
    pub referral_addr: Option<String>,
    /// `host:port` of the rewards service (catalog, redemptions, vouchers, the rewards part of the loyalty page);
    /// unset: its routes answer 503 `BACKEND_NOT_CONFIGURED` and the page marks its part not configured.
    #[arg(long, env = "REWARDS_ADDR", value_name = "REWARDS_ADDR")]
    pub rewards_addr: Option<String>,
    /// `host:port` of the insights service (customers' numbers and segments, admin routes);
    /// unset: its routes answer 503 `BACKEND_NOT_CONFIGURED`.
    #[arg(long, env = "INSIGHTS_ADDR", value_name = "INSIGHTS_ADDR")]
    pub insights_addr: Option<String>,
    /// `host:port` of the webhooks service (subscriptions, deliveries, admin routes);
    /// unset: its routes answer 503 `BACKEND_NOT_CONFIGURED`.
    #[arg(long, env = "WEBHOOKS_ADDR", value_name = "WEBHOOKS_ADDR")]
    pub webhooks_addr: Option<String>,
    /// Deadline of every call to a backend service, in milliseconds.
    #[arg(
        long,
        env = "GATEWAY_UPSTREAM_TIMEOUT_MS",
        value_name = "GATEWAY_UPSTREAM_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub upstream_timeout_ms: u64,
    /// Longest time one HTTP request may take, in milliseconds (then 504).
    #[arg(
        long,
        env = "GATEWAY_REQUEST_TIMEOUT_MS",
        value_name = "GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,
    /// Largest request body accepted, in bytes (then 413).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", value_name = "GATEWAY_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// Requests per second each API key may make on average (GCRA, as a token bucket refills); 0 turns limiting off.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_PER_SEC", value_name = "GATEWAY_RATE_LIMIT_PER_SEC", default_value_t = 50)]
    pub rate_limit_per_sec: u32,
    /// Requests each API key may make in a burst.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_BURST", value_name = "GATEWAY_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// How long a verified API key is trusted without reading the key store again, in seconds;
    /// a revoked key stops working within this time. 0: read the store on every request.
    #[arg(long, env = "GATEWAY_KEY_CACHE_TTL_SECS", value_name = "GATEWAY_KEY_CACHE_TTL_SECS", default_value_t = 30)]
    pub key_cache_ttl_secs: u64,
    /// Origins allowed to call from a browser (storefront widgets), comma-separated, e.g.
    /// `https://shop.example`; `*` allows any. Empty: no cross-origin calls.
    #[arg(
        long,
        env = "GATEWAY_CORS_ORIGINS",
        value_name = "GATEWAY_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,
    /// The gateway's database: the API keys and customer token secrets.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The secret the services share (`LOYALTY_SERVICE_SECRET` on each); the gateway derives from it
    /// the identity it presents to them. Unset: calls carry none, which only services with
    /// `LOYALTY_AUTH=off` accept. The gateway itself always requires API keys.
    #[arg(long, env = "LOYALTY_SERVICE_SECRET", value_name = "LOYALTY_SERVICE_SECRET", hide_env_values = true)]
    pub service_secret: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub widget: widget::WidgetConfig,
}

impl Config {
    /// The settings `loyalty-gateway` would use without flags: the environment, then the defaults.
    /// A bad value fails with a message naming the variable.
    pub fn from_env() -> Result<Self, clap::Error> {
        use clap::FromArgMatches;
        let command = <Self as clap::Args>::augment_args(clap::Command::new("loyalty-gateway"));
        let matches = command.no_binary_name(true).try_get_matches_from(Vec::<String>::new())?;
        Self::from_arg_matches(&matches)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] DbError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("GATEWAY_METRICS_ADDR {addr}: {source}")]
    MetricsBind { addr: SocketAddr, source: std::io::Error },
    #[error("GATEWAY_HTTP_ADDR {addr}: {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("GATEWAY_CORS_ORIGINS: {0:?} is not an origin such as https://shop.example")]
    CorsOrigin(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
}

/// A running gateway.
pub struct GatewayServer {
    bind_addr: SocketAddr,
    metrics_addr: SocketAddr,
    routes: Vec<RouteSpec>,
    trigger: ShutdownTrigger,
    http: JoinHandle<std::io::Result<()>>,
    metrics: JoinHandle<()>,
}

impl GatewayServer {
    /// Opens the key store (applying migrations), connects the backends
    /// lazily, and starts serving HTTP on `listener` and metrics on `GATEWAY_METRICS_ADDR`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, StartError> {
        let bind_addr =
            listener.local_addr().map_err(|source| StartError::HttpBind { addr: config.http_addr, source })?;
        let cors_origins: Vec<String> =
            config.cors_origins.iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
        if let Some(bad) = cors_origins.iter().find(|o| *o != "*" && !routes::is_origin(o)) {
            return Err(StartError::CorsOrigin(bad.clone()));
        }
        let tls = Tls::load(&config.tls)?;
        let database = db::connect(&config.database.url, config.database.pool()).await?;
        KeyStore::migrate(&database).await?;
        let peers = gateway_peers(config.service_secret.as_deref(), &tls).await?;
        let deadline = Duration::from_millis(config.upstream_timeout_ms.max(1));
        let addresses = Addresses {
            points: &config.points_addr,
            tiers: config.tiers_addr.as_deref(),
            referral: config.referral_addr.as_deref(),
            rewards: config.rewards_addr.as_deref(),
            insights: config.insights_addr.as_deref(),
            webhooks: config.webhooks_addr.as_deref(),
        };
        let upstreams = Upstreams::connect(&addresses, deadline, &peers)?;

        let metrics = Metrics::new();
        let http_metrics = HttpMetrics::register(&metrics);
        let admission = Admission {
            keys: Arc::new(KeyVerifier::new(
                KeyStore::new(database.clone()),
                Duration::from_secs(config.key_cache_ttl_secs),
                Arc::new(SystemClock),
            )),
            limiter: Arc::new(RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst)),
        };
        let widget = widget::WidgetState::new(&config.widget, database.clone());
        let state = AppState {
            upstreams,
            admission,
            database: database.clone(),
            openapi: Arc::new(openapi::document()),
            widget,
        };
        let settings = HttpSettings {
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            cors_origins,
        };
        let (router, routes) = routes::router(state, http_metrics, &settings);

        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|source| StartError::MetricsBind { addr: config.metrics_addr, source })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| StartError::MetricsBind { addr: config.metrics_addr, source })?;

        let (trigger, signal) = shutdown::channel();
        // The key store's pool, like every service's (it ends with the shutdown signal).
        tokio::spawn(loyalty_common::metrics::watch_pool(database.clone(), &metrics, signal.clone()));
        let metrics_signal = signal.clone();
        let metrics_tls = tls.clone();
        let metrics_task = tokio::spawn(async move {
            if let Err(error) =
                loyalty_common::metrics::serve(metrics_listener, metrics, &metrics_tls, None, metrics_signal).await
            {
                tracing::error!(%error, "metrics server failed");
            }
        });
        let mut graceful = signal.clone();
        let mut deadline = signal;
        let serves_tls = tls.serves_tls();
        let http = tokio::spawn(async move {
            let serving = tls.serve_http(listener, router, async move {
                graceful.fired().await;
                tracing::info!("draining in-flight requests");
            });
            tokio::select! {
                served = serving => served,
                () = async { deadline.fired().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                    tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out, closing the remaining connections");
                    Ok(())
                }
            }
        });
        tracing::info!(
            http = %bind_addr,
            metrics = %metrics_addr,
            points = %config.points_addr,
            tiers = config.tiers_addr.as_deref().unwrap_or("unset"),
            referral = config.referral_addr.as_deref().unwrap_or("unset"),
            rewards = config.rewards_addr.as_deref().unwrap_or("unset"),
            insights = config.insights_addr.as_deref().unwrap_or("unset"),
            webhooks = config.webhooks_addr.as_deref().unwrap_or("unset"),
            database = ?database.dialect,
            tls = serves_tls,
            "gateway ready"
        );
        Ok(Self { bind_addr, metrics_addr, routes, trigger, http, metrics: metrics_task })
    }

    pub fn bind_addr(&self) -> SocketAddr {
        self.bind_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Every documented route the router serves (what `/openapi.json` must list).
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the metrics server.
    pub async fn shutdown(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.trigger.fire();
        let served = self.http.await?;
        self.metrics.await?;
        Ok(served?)
    }
}

/// The identity the gateway presents to the services (none without a secret, said loudly).
async fn gateway_peers(service_secret: Option<&str>, tls: &Tls) -> Result<Peers, StartError> {
    let Some(secret) = service_secret else {
        tracing::warn!(
            "LOYALTY_SERVICE_SECRET is not set: calls to the services carry no identity and only services \
             running LOYALTY_AUTH=off will answer them"
        );
        return Ok(Peers::anonymous().over(tls.clone()));
    };
    let secret = ServiceSecret::new(secret).map_err(AuthSetupError::from)?;
    Ok(Peers::presenting("gateway", &secret, tls))
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = GatewayServer::start(config, listener).await?;
    shutdown.await;
    server.shutdown().await?;
    tracing::info!("gateway stopped");
    Ok(())
}
