//! gRPC serving as every service does it: health (`grpc.health.v1`, NOT_SERVING
//! until the service says its database answers, and again once shutdown
//! begins), reflection v1 and v1alpha (so grpcurl, ghz and Python grpcio work
//! without proto files), the per-RPC observer layer, caller checks
//! ([`crate::auth`]), TLS ([`crate::tls`]), and graceful shutdown that stops
//! accepting and lets in-flight calls finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{AuthLayer, AuthSetupError, Policy, Security, SecurityArgs};
use crate::clock::Clock;
use crate::db::{Database, DbError};
use crate::metrics::{Metrics, RpcObserverLayer};
use crate::peer::Peers;
use crate::privacy::{AfterErase, CustomerDataApi, Subject};
use crate::shutdown::ShutdownTrigger;
use crate::telemetry::TelemetryArgs;
use crate::tls::{Tls, TlsError};

/// Longest wait for in-flight calls after shutdown begins; Kubernetes'
/// default grace period is 30 s, so we close what is left before it kills us.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
use crate::shutdown::ShutdownSignal;

/// Health handle for one gRPC service name plus the overall ("") status.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service_name: &'static str,
    serving: Arc<AtomicBool>,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service_name, status).await;
    }
}

type HealthServer = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// The health service and its handle, NOT_SERVING until told otherwise.
pub async fn health(service_name: &'static str) -> (Health, HealthServer) {
    let reporter = HealthReporter::new();
    let server = HealthServer::new(tonic_health::server::HealthService::from_health_reporter(reporter.clone()));
    let health = Health { reporter, service_name, serving: Arc::new(AtomicBool::new(false)) };
    health.set(false).await;
    (health, server)
}

/// The start-up every service shares around its own wiring: health
/// (NOT_SERVING until [`Launch::serve`]), the metrics registry and endpoint,
/// the shutdown signal, background tasks, the database health watcher, and
/// the caller checks and TLS every listener and outbound call uses.
pub struct Launch {
    service_name: &'static str,
    policy: Policy,
    security: Security,
    tls: Tls,
    pub health: Health,
    health_server: HealthServer,
    pub metrics: Metrics,
    trigger: ShutdownTrigger,
    signal: ShutdownSignal,
    metrics_listener: TcpListener,
    tasks: Vec<JoinHandle<()>>,
    clock: Arc<dyn Clock>,
    after_erase: Option<Arc<dyn AfterErase>>,
}

impl Launch {
    /// Loads TLS material, sets up caller checks for `policy` (`name` is the
    /// identity this service presents to others), and binds the metrics
    /// endpoint; on the wall clock unless `clock` says otherwise.
    pub async fn prepare(
        name: &'static str,
        policy: Policy,
        metrics_addr: SocketAddr,
        settings: &SecurityArgs,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self, LaunchError> {
        let clock = clock.unwrap_or_else(|| Arc::new(crate::clock::SystemClock));
        let tls = Tls::load(&settings.tls)?;
        let security = Security::setup(name, &settings.auth, clock.clone()).await?;
        let service_name = policy.service;
        let (health, health_server) = health(service_name).await;
        let (trigger, signal) = crate::shutdown::channel();
        let metrics_listener =
            TcpListener::bind(metrics_addr).await.map_err(|source| BindError { addr: metrics_addr, source })?;
        Ok(Self {
            service_name,
            policy,
            security,
            tls,
            health,
            health_server,
            metrics: Metrics::new(),
            trigger,
            signal,
            metrics_listener,
            tasks: Vec::new(),
            clock,
            after_erase: None,
        })
    }

    /// The clock the service runs on.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// How this service calls the others.
    pub fn peers(&self) -> Peers {
        Peers::new(&self.security, &self.tls)
    }

    /// The signal background tasks stop on.
    pub fn signal(&self) -> ShutdownSignal {
        self.signal.clone()
    }

    /// A background task, awaited at shutdown.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Follows the points ledger at `points_addr` with `consumer` until
    /// shutdown (see [`crate::follow`]), its progress on `/metrics`.
    pub fn follow<C: crate::follow::LedgerConsumer>(&mut self, consumer: Arc<C>, points_addr: String) {
        let progress = crate::follow::Progress::register(&self.metrics, C::NAME);
        let task = crate::follow::run(consumer, points_addr, self.peers(), progress, self.signal());
        self.spawn(task);
    }

    /// What the service does after it erased a customer (see [`crate::privacy`]).
    pub fn after_erase(&mut self, hook: Arc<dyn AfterErase>) {
        self.after_erase = Some(hook);
    }

    /// Serves `routes` (plus health, reflection, and the customer's rights
    /// over what `subject` says the service holds) on `listener` and the
    /// metrics endpoint, watches `database`, then reports SERVING.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        routes: Routes,
        database: &Database,
        subject: &'static Subject,
    ) -> RunningService {
        let mut customer_data = CustomerDataApi::new(subject, database.clone(), self.clock.clone());
        if let Some(hook) = self.after_erase.take() {
            customer_data = customer_data.after_erase(hook);
        }
        let routes = routes.add_service(customer_data.into_server());
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let bind_addr = listener.local_addr().unwrap_or(unbound);
        let metrics_addr = self.metrics_listener.local_addr().unwrap_or(unbound);
        let (metrics, signal, metrics_listener) = (self.metrics.clone(), self.signal.clone(), self.metrics_listener);
        let tls = self.tls.clone();
        let ready = Some(self.health.serving.clone());
        self.tasks.push(tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(metrics_listener, metrics, &tls, ready, signal).await {
                tracing::error!(%error, "metrics server failed");
            }
        }));
        self.tasks.push(tokio::spawn(watch_database(database.clone(), self.health.clone(), self.signal.clone())));
        self.tasks.push(tokio::spawn(crate::metrics::watch_pool(database.clone(), &self.metrics, self.signal.clone())));
        let health = (self.health.clone(), self.health_server);
        let perimeter = Perimeter { auth: self.security.layer(self.policy), tls: self.tls.grpc_server() };
        let grpc = tokio::spawn(serve(
            listener,
            (routes, self.service_name),
            health,
            perimeter,
            self.metrics.clone(),
            self.signal.clone(),
        ));
        self.health.set(true).await;
        tracing::info!(
            service = self.service_name,
            grpc = %bind_addr,
            metrics = %metrics_addr,
            database = ?database.dialect,
            auth = ?self.security.mode(),
            tls = self.tls.serves_tls(),
            "service ready"
        );
        RunningService { bind_addr, metrics_addr, trigger: self.trigger, tasks: self.tasks, grpc }
    }
}

/// The metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Why [`Launch::prepare`] failed; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("metrics address {0}")]
    Metrics(#[from] BindError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why a service did not start; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] DbError),
    #[error("{0}")]
    Launch(#[from] LaunchError),
    /// One of the service's own settings (`REDIS_URL`, `TIERS_ADDR`, ...) or start-up steps.
    #[error("{what}: {message}")]
    Setting { what: &'static str, message: String },
}

impl StartError {
    /// `what` (a setting's name, or the step) failed with `error`.
    pub fn setting(what: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Setting { what, message: error.to_string() }
    }
}

/// Any error, sent across tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a service binary is to the shared start-up: its settings and how it
/// wires itself. [`main`] and [`run`] do the rest, the same for every service.
pub trait Service {
    /// The binary, `loyalty-<name>`: in log lines and error messages; its
    /// gRPC address is `<NAME>_GRPC_ADDR`.
    const BINARY: &'static str;
    /// Every setting, from flags or the environment.
    type Config: clap::Parser + Send + 'static;

    /// Where the gRPC server listens, and how the binary logs and traces.
    fn serving(config: &Self::Config) -> (SocketAddr, &TelemetryArgs);

    /// Connects storage, applies migrations, starts the background work and
    /// serves on `listener`; on the wall clock unless `clock` says otherwise
    /// (tests pass a manual one).
    fn start(
        config: Self::Config,
        listener: TcpListener,
        clock: Option<Arc<dyn Clock>>,
    ) -> impl Future<Output = Result<RunningService, StartError>> + Send;
}

/// Serves `S` until `shutdown` resolves, then drains.
pub async fn run<S: Service>(
    config: S::Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let server = S::start(config, listener, None).await?;
    shutdown.await;
    server.shutdown().await?;
    tracing::info!(service = S::BINARY, "service stopped");
    Ok(())
}

/// A service binary's whole `main`: settings from flags and the environment,
/// telemetry, the gRPC listener, serving until SIGTERM or ctrl-c, and an exit
/// code with the reason on standard error.
pub fn main<S: Service>() -> std::process::ExitCode {
    use clap::Parser as _;
    let config = S::Config::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the runtime: {error}", S::BINARY);
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (addr, telemetry) = S::serving(&config);
        let telemetry = match crate::telemetry::init(S::BINARY, telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{}: {error}", S::BINARY);
                return std::process::ExitCode::FAILURE;
            }
        };
        let result = async {
            let setting = format!("{}_GRPC_ADDR", S::BINARY.trim_start_matches("loyalty-").to_uppercase());
            let listener = TcpListener::bind(addr).await.map_err(|e| format!("{setting} {addr}: {e}"))?;
            run::<S>(config, listener, crate::shutdown::termination()).await
        }
        .await;
        let code = match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(service = S::BINARY, error = %error, "service failed");
                eprintln!("{}: {error}", S::BINARY);
                std::process::ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}

/// What stands between the network and the handlers: caller checks and TLS.
pub struct Perimeter {
    pub auth: AuthLayer,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// A service that is up: where it listens, and how to stop it.
pub struct RunningService {
    bind_addr: SocketAddr,
    metrics_addr: SocketAddr,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>,
}

impl RunningService {
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Reports NOT_SERVING, stops accepting, waits for in-flight calls and background tasks.
    pub async fn shutdown(self) -> Result<(), BoxError> {
        self.trigger.fire();
        let served = self.grpc.await?;
        for task in self.tasks {
            task.await?;
        }
        served
    }
}

/// Serves `routes` (the service named `service_name`) plus health and
/// reflection on `listener` until `shutdown` fires; then reports NOT_SERVING,
/// stops accepting, and waits for in-flight calls.
pub async fn serve(
    listener: TcpListener,
    (routes, service_name): (Routes, &'static str),
    health: (Health, HealthServer),
    perimeter: Perimeter,
    metrics: Metrics,
    mut shutdown: ShutdownSignal,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health, health_server) = health;
    // Reflection lists what this port serves, not every service of the protos.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(loyalty_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service_name)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let routes = routes.add_service(health_server).add_service(reflection_v1).add_service(reflection_v1alpha);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut deadline = shutdown.clone();
    let signal = async move {
        shutdown.fired().await;
        health.set(false).await;
        tracing::info!("draining in-flight calls");
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = perimeter.tls {
        builder = builder.tls_config(tls)?;
    }
    // The observer is outermost, so refused calls are counted and traced too.
    let serving = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(RpcObserverLayer::new(metrics))
        .layer(perimeter.auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        served = serving => served?,
        () = async { deadline.fired().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out, closing the remaining connections");
        }
    }
    Ok(())
}

/// How often health asks the database, and how long an answer may take:
/// health follows an outage, and the recovery, within about a second.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Keeps health in step with the database: NOT_SERVING while it does not answer.
pub async fn watch_database(database: Database, health: Health, mut shutdown: ShutdownSignal) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(DATABASE_CHECK_INTERVAL) => {}
            () = shutdown.fired() => return,
        }
        let up = crate::db::ping(&database, DATABASE_CHECK_TIMEOUT).await;
        if up != serving && !shutdown.is_fired() {
            serving = up;
            health.set(up).await;
            if up {
                tracing::info!("database answers again, serving");
            } else {
                tracing::warn!("database does not answer, not serving");
            }
        }
    }
}
