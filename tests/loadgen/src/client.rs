//! The gRPC side: client settings (shared by the service and the bare tonic
//! baseline), the in-process points service, seeding, and the worker that
//! calls the points service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};

use loyalty_common::auth::keys::{KeyStore, Scope};
use loyalty_common::auth::{AuthMode, ServiceSecret};
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_common::server::{RunningService, Service as _};
use tonic_types::StatusExt;

use loyalty_points::{Config, PointsServer};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::drive::{Answer, PhaseResult, Worker};
use crate::extras::{Extras, PageClient};
use crate::workload::{EARN_POINTS, ORDER_AMOUNT_MINOR, OpKind, REWARD_COST, SPEND_POINTS, Workload, customer_id};
use crate::{Args, Plan, RunError, Scenario, failed};
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;

/// Bound on one call; a call that takes longer counts as DeadlineExceeded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Points of each account spend-contended warms up on: never runs out, so
/// the warmup measures the rate of successful spends.
const WARMUP_SPEND_POINTS: i64 = 1_000_000_000;
/// Points each hot account starts with in balance-read and mixed.
const SEED_POINTS: i64 = 1_000;
/// Points each hot account starts with in redeem: enough that no redemption runs short.
const REDEEM_SEED_POINTS: i64 = 1_000_000_000;
/// Spend rate assumed when the warmup was too short to measure one.
const DEFAULT_SPEND_RATE: f64 = 200.0;

/// How clients reach a gRPC server. The service and the bare tonic baseline
/// are called with exactly these settings, so their ratio is about the
/// servers, not the clients: `connections` HTTP/2 connections (one tonic
/// `Channel` each, all its clients' calls multiplexed as streams on it),
/// TCP_NODELAY on, tonic's default HTTP/2 windows and request buffer.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connections: usize,
    /// The API key every call presents (`authorization: Bearer`), to the service and the baselines alike.
    pub key: Option<String>,
}

impl ClientSettings {
    pub fn endpoint(&self, uri: &str) -> Result<Endpoint, RunError> {
        Ok(Endpoint::from_shared(uri.to_owned())
            .map_err(|e| RunError::Usage(format!("--target {uri}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT))
    }

    /// Opens the connections now, so the first measured calls do not pay for them.
    pub async fn connect(&self, uri: &str) -> Result<Channels, RunError> {
        let endpoint = self.endpoint(uri)?;
        let peers = match &self.key {
            Some(key) => Peers::with_token(key).map_err(|_| RunError::Usage("--api-key: not a valid key".into()))?,
            None => Peers::anonymous(),
        };
        let mut channels = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let channel =
                endpoint.connect().await.map_err(|e| RunError::Failed(format!("cannot connect to {uri}: {e:?}")))?;
            channels.push(peers.attach(channel));
        }
        Ok(Channels(channels))
    }
}

/// The connection groups: client `i` uses connection `i % len`.
pub struct Channels(Vec<PeerChannel>);

impl Channels {
    pub fn client(&self, i: usize) -> PointsServiceClient<PeerChannel> {
        PointsServiceClient::new(self.0[i % self.0.len()].clone())
    }
}

/// `127.0.0.1:50051` → `http://127.0.0.1:50051`; a URI stays as it is.
pub fn target_uri(target: &str) -> String {
    if target.contains("://") { target.to_owned() } else { format!("http://{target}") }
}

/// The points service started in this process.
pub struct StartedService {
    pub addr: SocketAddr,
    /// From the start call to `PointsServer::start` returning.
    pub started: Duration,
    /// From the start call to the first SERVING health check answer.
    pub ready: Duration,
    /// With `--auth required`: an admin key of the run's program, and the services' shared secret.
    pub key: Option<String>,
    pub service_secret: Option<String>,
    server: RunningService,
    sqlite_dir: Option<PathBuf>,
    keys_dir: Option<PathBuf>,
    redis: Option<(String, String)>,
}

impl StartedService {
    /// Starts the service as its binary would, from a command line; settings
    /// the load generator does not set come from the environment, as for
    /// the binary (e.g. `BALANCE_CACHE_TTL_SECS`).
    /// With `auth` required, callers are checked against a key store made
    /// for the run, and the run's program gets an admin key.
    /// `tiers_addr`: a tiers service for points to ask each order's tier.
    pub async fn start(args: &Args, auth: AuthMode, program: &str, tiers_addr: Option<&str>) -> Result<Self, RunError> {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let (database_url, sqlite_dir) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!("loadgen-{suffix}"));
                (format!("sqlite://{}/points.db", dir.display()), Some(dir))
            }
        };
        let prefix = format!("loadgen:{suffix}:");
        let pool = args.database_max_connections.to_string();
        let log_format = args
            .telemetry
            .log_format
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_else(|| "text".to_owned());
        let mut argv = vec![
            "loyalty-points",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--database-url",
            &database_url,
            "--database-max-connections",
            &pool,
            "--redis-key-prefix",
            &prefix,
            "--log-format",
            &log_format,
            "--log-filter",
            &args.telemetry.log_filter,
        ];
        if let Some(redis) = &args.redis_url {
            argv.extend(["--redis-url", redis]);
        }
        if let Some(tiers) = tiers_addr {
            argv.extend(["--tiers-addr", tiers]);
        }
        let (key, service_secret, keys_dir, keys_url) = match auth {
            AuthMode::Off => (None, None, None, String::new()),
            AuthMode::Required => {
                let dir = std::env::temp_dir().join(format!("loadgen-keys-{suffix}"));
                let url = format!("sqlite://{}/keys.db", dir.display());
                let store =
                    KeyStore::open(&url, 2).await.map_err(|e| RunError::Failed(format!("key store {url}: {e}")))?;
                let key = store
                    .create(program, Scope::Admin, "loadgen")
                    .await
                    .map_err(|e| RunError::Failed(format!("cannot create the run's API key: {e}")))?
                    .key;
                (Some(key), Some(ServiceSecret::random()), Some(dir), url)
            }
        };
        match &service_secret {
            Some(secret) => {
                argv.extend(["--auth", "required", "--keys-database-url", &keys_url, "--service-secret", secret])
            }
            None => argv.extend(["--auth", "off"]),
        }
        let config =
            Config::try_parse_from(argv).map_err(|e| RunError::Usage(format!("points service settings: {e}")))?;

        let begin = Instant::now();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RunError::Failed(format!("cannot bind 127.0.0.1:0: {e}")))?;
        let server = PointsServer::start(config, listener, None)
            .await
            .map_err(|e| RunError::Failed(format!("points service did not start: {e}")))?;
        let started = begin.elapsed();
        let addr = server.bind_addr();
        wait_ready(addr).await?;
        let ready = begin.elapsed();
        eprintln!("points service in process on {addr}, ready in {:.1} ms ({database_url})", ready.as_secs_f64() * 1e3);
        let redis = args.redis_url.clone().map(|url| (url, prefix));
        Ok(Self { addr, started, ready, key, service_secret, server, sqlite_dir, keys_dir, redis })
    }

    /// Drains the server and removes what the run left: the SQLite directory, the Redis keys.
    pub async fn stop(self) -> Result<(), RunError> {
        let stopped = self.server.shutdown().await;
        for dir in [self.sqlite_dir, self.keys_dir].into_iter().flatten() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((url, prefix)) = self.redis {
            let _ = crate::baseline::delete_redis_prefix(&url, &prefix).await;
        }
        stopped.map_err(|e| RunError::Failed(format!("points service shutdown: {e}")))
    }
}

/// Polls gRPC health until the service says SERVING (10 s at most).
async fn wait_ready(addr: SocketAddr) -> Result<(), RunError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let deadline = Instant::now() + Duration::from_secs(10);
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| RunError::Failed(e.to_string()))?.tcp_nodelay(true);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest { service: loyalty_points::SERVICE_NAME.to_owned() })
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(RunError::Failed(format!("points service on {addr} not SERVING after 10 s")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the ledger of one account must show, from what the service acknowledged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub earned: i64,
    pub spent: i64,
    /// Acknowledged redemptions (each spent [`REWARD_COST`]).
    pub redeemed: i64,
}

/// Everything the clients were told, for the correctness check.
#[derive(Debug, Default)]
pub struct Tally {
    pub accounts: HashMap<u32, Expected>,
    /// Successful spends whose returned balance was below zero.
    pub overdrafts: u64,
    /// Writes that failed with an error other than the expected refusal: they
    /// may or may not have committed, so the acknowledged totals are not exact.
    pub uncertain_writes: u64,
}

/// Calls the points service (or the bare tonic baseline, which answers GetBalance only).
pub struct ServiceWorker {
    client: PointsServiceClient<PeerChannel>,
    workload: Workload,
    program: String,
    key_prefix: String,
    seq: u64,
    rng: fastrand::Rng,
    acked: HashMap<u32, Expected>,
    overdrafts: u64,
    uncertain_writes: u64,
    rewards: Option<(RewardsServiceClient<Channel>, String)>,
    page: Option<PageClient>,
}

impl ServiceWorker {
    pub fn many(channels: &Channels, plan: &Plan, workload: Workload) -> Vec<Self> {
        (0..plan.concurrency)
            .map(|i| Self {
                client: channels.client(i),
                workload: workload.clone(),
                program: plan.program.clone(),
                key_prefix: format!("{}-{i}-", plan.run_id),
                seq: 0,
                rng: fastrand::Rng::with_seed(plan.seed.wrapping_add(i as u64)),
                acked: HashMap::new(),
                overdrafts: 0,
                uncertain_writes: 0,
                rewards: None,
                page: None,
            })
            .collect()
    }

    /// Lets the worker redeem (rewards service) and load the loyalty page (gateway).
    pub fn attach(&mut self, extras: &Extras) {
        self.rewards = Some((extras.rewards.clone(), extras.reward_id.clone()));
        self.page = extras.gateway.as_ref().map(|(addr, key)| PageClient::new(*addr, key));
    }

    pub fn set_workload(&mut self, workload: Workload) {
        self.workload = workload;
    }

    fn next_key(&mut self) -> String {
        self.seq += 1;
        format!("{}{}", self.key_prefix, self.seq)
    }
}

impl Worker for ServiceWorker {
    fn op_names(&self) -> [&'static str; OpKind::COUNT] {
        ["GetBalance", "Earn", "Spend", "Redeem", "GET /v1/customers/{id}/loyalty", "EarnForOrder"]
    }

    async fn call(&mut self) -> (OpKind, Answer) {
        let op = self.workload.next(&mut self.rng);
        let program_id = self.program.clone();
        let customer_id = customer_id(op.account);
        let answer = match op.kind {
            OpKind::Read => {
                let request = pb::GetBalanceRequest { program_id, customer_id };
                match self.client.get_balance(request).await {
                    Ok(_) => Answer::Ok,
                    Err(status) => error(&status),
                }
            }
            OpKind::Earn => {
                let request = pb::EarnRequest {
                    program_id,
                    customer_id,
                    points: EARN_POINTS,
                    reason: "loadgen order".to_owned(),
                    idempotency_key: self.next_key(),
                    pending_until: None,
                    expires_at: None,
                };
                match self.client.earn(request).await {
                    Ok(_) => {
                        self.acked.entry(op.account).or_default().earned += EARN_POINTS;
                        Answer::Ok
                    }
                    Err(status) => {
                        self.uncertain_writes += 1;
                        error(&status)
                    }
                }
            }
            OpKind::Spend => {
                let request = pb::SpendRequest {
                    program_id,
                    customer_id,
                    points: SPEND_POINTS,
                    reason: "loadgen reward".to_owned(),
                    idempotency_key: self.next_key(),
                };
                match self.client.spend(request).await {
                    Ok(response) => {
                        self.acked.entry(op.account).or_default().spent += SPEND_POINTS;
                        let available = response.into_inner().balance.map_or(0, |balance| balance.available);
                        if available < 0 {
                            self.overdrafts += 1;
                        }
                        Answer::Ok
                    }
                    Err(status) if insufficient_points(&status) => Answer::Refused,
                    Err(status) => {
                        self.uncertain_writes += 1;
                        error(&status)
                    }
                }
            }
            OpKind::Redeem => {
                let Some((client, reward_id)) = self.rewards.as_mut() else {
                    return (op.kind, Answer::Error("no rewards service".into()));
                };
                self.seq += 1;
                let request = loyalty_proto::rewards::v1::RedeemRequest {
                    program_id,
                    customer_id,
                    reward_id: reward_id.clone(),
                    idempotency_key: format!("{}{}", self.key_prefix, self.seq),
                };
                match client.redeem(request).await {
                    Ok(_) => {
                        let acked = self.acked.entry(op.account).or_default();
                        acked.spent += REWARD_COST;
                        acked.redeemed += 1;
                        Answer::Ok
                    }
                    Err(status) if insufficient_points(&status) => Answer::Refused,
                    Err(status) => {
                        self.uncertain_writes += 1;
                        error(&status)
                    }
                }
            }
            OpKind::Order => {
                let request = pb::EarnForOrderRequest {
                    program_id,
                    customer_id,
                    order_id: self.next_key(),
                    amount_minor: ORDER_AMOUNT_MINOR,
                    currency: ORDER_CURRENCY.to_owned(),
                    occurred_at: None,
                };
                match self.client.earn_for_order(request).await {
                    Ok(response) => {
                        self.acked.entry(op.account).or_default().earned += response.into_inner().points;
                        Answer::Ok
                    }
                    Err(status) => {
                        self.uncertain_writes += 1;
                        error(&status)
                    }
                }
            }
            OpKind::Page => {
                let Some(page) = self.page.as_mut() else {
                    return (op.kind, Answer::Error("no gateway".into()));
                };
                match page.get(&format!("/v1/customers/{customer_id}/loyalty")).await {
                    Ok(200) => Answer::Ok,
                    Ok(status) => Answer::Error(format!("HTTP {status}")),
                    Err(error) => Answer::Error(error),
                }
            }
        };
        (op.kind, answer)
    }
}

fn error(status: &tonic::Status) -> Answer {
    Answer::Error(format!("{:?}", status.code()))
}

fn insufficient_points(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.get_details_error_info().is_some_and(|info| info.reason == "INSUFFICIENT_POINTS")
}

/// What the warmup runs: the scenario itself, except that spend-contended
/// warms up on accounts of its own, past the customers.
pub fn warmup_workload(plan: &Plan) -> Workload {
    let mut workload = plan.workload.clone();
    if plan.scenario == Scenario::SpendContended {
        workload.first = workload.customers;
    }
    workload
}

/// Seeds the hot set the warmup reads or spends. spend-contended's measured
/// accounts are funded after the warmup, by [`fund_spend_accounts`].
pub async fn seed(channels: &Channels, plan: &Plan) -> Result<HashMap<u32, Expected>, RunError> {
    match plan.scenario {
        Scenario::Earn => Ok(HashMap::new()),
        Scenario::OrderEarn => {
            seed_rules(channels, plan).await?;
            Ok(HashMap::new())
        }
        Scenario::SpendContended if plan.warmup.is_zero() => Ok(HashMap::new()),
        Scenario::SpendContended => {
            seed_hot_set(channels, plan, &warmup_workload(plan), "warmup", WARMUP_SPEND_POINTS).await
        }
        Scenario::Redeem => seed_hot_set(channels, plan, &plan.workload, "seed", REDEEM_SEED_POINTS).await,
        _ => seed_hot_set(channels, plan, &plan.workload, "seed", SEED_POINTS).await,
    }
}

/// Currency of order-earn's orders and program.
pub const ORDER_CURRENCY: &str = "EUR";

/// order-earn's program: 1 point per 1.00 rounded down, points at once,
/// expiring a year after the order, and a double-points campaign running
/// for the whole run (the tier ladder is the tiers service's, see
/// [`crate::extras::start_tiers`]).
async fn seed_rules(channels: &Channels, plan: &Plan) -> Result<(), RunError> {
    let mut client = channels.client(0);
    let settings = pb::ProgramSettings {
        currency: ORDER_CURRENCY.to_owned(),
        earn_rate: Some(pb::EarnRate { points: 1, per_amount_minor: 100 }),
        rounding: pb::Rounding::Down as i32,
        minimum_order_minor: 0,
        pending_days: 0,
        expiry: Some(pb::ExpiryPolicy { kind: pb::ExpiryPolicyKind::DaysAfterEarn as i32, count: 365 }),
        activity_rules: Vec::new(),
        version: 0,
        expiry_reminder_days: 0,
        checkout: None,
    };
    client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: plan.program.clone(),
            settings: Some(settings),
            actor: "loadgen".into(),
            idempotency_key: format!("{}-settings", plan.run_id),
            expected_version: None,
        })
        .await
        .map_err(crate::rpc_failed("PutProgramSettings"))?;
    let now = std::time::SystemTime::now();
    let campaign = pb::Campaign {
        name: "loadgen double points".into(),
        kind: pb::CampaignKind::Multiplier as i32,
        multiplier_bp: 20_000,
        starts_at: Some(prost_types::Timestamp::from(now - Duration::from_secs(60))),
        ends_at: Some(prost_types::Timestamp::from(now + Duration::from_secs(86_400))),
        ..Default::default()
    };
    client
        .create_campaign(pb::CreateCampaignRequest {
            program_id: plan.program.clone(),
            campaign: Some(campaign),
            actor: "loadgen".into(),
            idempotency_key: format!("{}-campaign", plan.run_id),
        })
        .await
        .map_err(crate::rpc_failed("CreateCampaign"))?;
    Ok(())
}

/// One Earn of `points` on every hot account of `workload`.
pub async fn seed_hot_set(
    channels: &Channels,
    plan: &Plan,
    workload: &Workload,
    tag: &str,
    points: i64,
) -> Result<HashMap<u32, Expected>, RunError> {
    let accounts = workload.hot_accounts().map(|account| (account, points)).collect();
    earn_each(channels, plan, tag, accounts).await
}

async fn earn_each(
    channels: &Channels,
    plan: &Plan,
    tag: &str,
    accounts: Vec<(u32, i64)>,
) -> Result<HashMap<u32, Expected>, RunError> {
    let started = Instant::now();
    let count = accounts.len();
    let seeded: HashMap<u32, Expected> = futures::stream::iter(accounts)
        .enumerate()
        .map(|(i, (account, points))| {
            let mut client = channels.client(i);
            let request = pb::EarnRequest {
                program_id: plan.program.clone(),
                customer_id: customer_id(account),
                points,
                reason: format!("loadgen {tag}"),
                idempotency_key: format!("{}-{tag}-{account}", plan.run_id),
                pending_until: None,
                expires_at: None,
            };
            async move {
                client
                    .earn(request)
                    .await
                    .map(|_| (account, Expected { earned: points, ..Expected::default() }))
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        })
        .buffer_unordered(plan.concurrency)
        .try_collect()
        .await
        .map_err(failed("seeding the hot set"))?;
    if count > 0 {
        eprintln!("{tag}: {count} accounts in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(seeded)
}

/// spend-contended: gives every measured account enough points for about
/// half of the measured run at the spend rate the warmup showed, so the run
/// sees both successful spends and INSUFFICIENT_POINTS.
pub async fn fund_spend_accounts(
    channels: &Channels,
    plan: &Plan,
    warmup: &PhaseResult,
    expected: &mut HashMap<u32, Expected>,
) -> Result<(), RunError> {
    let rate = plan.rate.unwrap_or_else(|| {
        if warmup.elapsed >= Duration::from_millis(500) && warmup.ok_rate() > 0.0 {
            warmup.ok_rate()
        } else {
            DEFAULT_SPEND_RATE
        }
    });
    let hot = f64::from(plan.workload.hot);
    let points = ((rate * plan.duration.as_secs_f64() / 2.0 / hot).ceil() as i64).max(1);
    eprintln!(
        "spend-contended: {} account(s) get {points} points each (about half the run at {rate:.0} spends/s)",
        plan.workload.hot
    );
    let accounts = plan.workload.hot_accounts().map(|account| (account, points)).collect();
    for (account, funded) in earn_each(channels, plan, "fund", accounts).await? {
        expected.entry(account).or_default().earned += funded.earned;
    }
    Ok(())
}

/// Adds what the workers were told to what seeding wrote.
pub fn tally(workers: Vec<ServiceWorker>, seeded: HashMap<u32, Expected>) -> Tally {
    let mut tally = Tally { accounts: seeded, ..Tally::default() };
    for worker in workers {
        tally.overdrafts += worker.overdrafts;
        tally.uncertain_writes += worker.uncertain_writes;
        for (account, acked) in worker.acked {
            let expected = tally.accounts.entry(account).or_default();
            expected.earned += acked.earned;
            expected.spent += acked.spent;
            expected.redeemed += acked.redeemed;
        }
    }
    tally
}
