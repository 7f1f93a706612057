//! `loadgen`: drives the points service over gRPC with named scenarios and
//! reports throughput and latency next to baselines measured in the same run
//! on the same machine (a bare tonic server, raw Redis, raw PostgreSQL), so
//! the headline numbers are ratios rather than absolute figures that depend
//! on the hardware. `main.rs` only parses the arguments and calls [`run`].

pub mod baseline;
pub mod check;
pub mod client;
pub mod drive;
pub mod extras;
pub mod failover;
pub mod insights;
pub mod report;
pub mod system;
pub mod webhooks;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use loyalty_common::auth::AuthMode;
use loyalty_common::telemetry::TelemetryArgs;

use crate::baseline::{Baseline, describe};
use crate::client::{ClientSettings, ServiceWorker, StartedService};
use crate::drive::{Phase, PhaseResult};
use crate::report::{BaselineReport, Memory, Report, RunResult, Settings, Startup};
use crate::workload::Workload;

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the loyalty mesh: runs a named scenario against the points service \
             and reports it as ratios to baselines measured in the same run."
)]
pub struct Args {
    /// The workload to run.
    #[arg(long, env = "LOADGEN_SCENARIO", value_enum)]
    pub scenario: Scenario,
    /// gRPC address of a running points service, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "LOADGEN_TARGET", conflicts_with = "start_points")]
    pub target: Option<String>,
    /// Process id of the service behind `--target`, to read its memory (VmRSS) from /proc.
    #[arg(long, env = "LOADGEN_TARGET_PID", requires = "target")]
    pub target_pid: Option<u32>,
    /// Start the points service in this process instead of calling `--target`.
    #[arg(long, env = "LOADGEN_START_POINTS")]
    pub start_points: bool,
    /// Caller checks of the in-process service: `required` (as in production: the run makes a key
    /// store and an admin key, and every call presents it) or `off`.
    #[arg(long, env = "LOADGEN_AUTH", value_enum, default_value = "required")]
    pub auth: AuthMode,
    /// API key presented on every call to `--target` (`authorization: Bearer`).
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true, requires = "target")]
    pub api_key: Option<String>,
    /// The services' shared secret, for the rewards service and gateway the redeem, mixed and
    /// loyalty-page scenarios start next to `--target` (with `--start-points` the run makes its own).
    /// Without `--api-key`, calls to `--target` present the service identity `loadgen` made from
    /// it, which works for any program (so every run can keep its fresh program id).
    #[arg(long, env = "LOYALTY_SERVICE_SECRET", hide_env_values = true)]
    pub service_secret: Option<String>,
    /// Database of the in-process service: `postgres://...` or `sqlite://path`. Default: a SQLite file in a fresh temporary directory.
    #[arg(long, env = "LOADGEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Pool size of the in-process service, and of the raw PostgreSQL baseline.
    #[arg(long, env = "LOADGEN_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Redis of the in-process service (unset: its in-process cache), and of the Redis baseline (unset: redis://127.0.0.1:6379); `redis+cluster://host:port,...` for a Redis Cluster (its seed nodes).
    #[arg(long, env = "LOADGEN_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// With a Redis Cluster `--redis-url`: shut one primary down (`SHUTDOWN NOSAVE`) this many
    /// seconds into the measured run, so that the run crosses a failover; the report gives the
    /// error window and the answers per second before and after, and the correctness check runs
    /// after as always. Use `--rounds 1` and a `--duration` well past the cluster's node timeout.
    #[arg(long, env = "LOADGEN_REDIS_FAIL_PRIMARY_AFTER", requires = "redis_url")]
    pub redis_fail_primary_after: Option<f64>,
    /// PostgreSQL server for the raw PostgreSQL baseline; a throwaway database is created there and dropped after.
    #[arg(
        long,
        env = "LOADGEN_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Concurrent clients (each has at most one call in flight).
    #[arg(long, env = "LOADGEN_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections the clients share, round-robin (one tonic Channel each). Same for the service and the baselines.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,
    /// Target requests per second (open loop, latency measured from the intended send time). Unset: closed loop, as fast as answers come.
    #[arg(long, env = "LOADGEN_RATE")]
    pub rate: Option<f64>,
    /// Measured seconds per run.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    pub duration: f64,
    /// Split the measured time into this many slices, alternating the
    /// service and each baseline, so that background load on a shared
    /// machine hits both alike.
    #[arg(long, env = "LOADGEN_ROUNDS", default_value_t = 1)]
    pub rounds: u32,
    /// Unmeasured seconds before each run.
    #[arg(long, env = "LOADGEN_WARMUP", default_value_t = 2.0)]
    pub warmup: f64,
    /// Customers the scenario may touch.
    #[arg(long, env = "LOADGEN_CUSTOMERS", default_value_t = 10_000)]
    pub customers: u32,
    /// Hot customers, seeded before the run: a fraction with a decimal point (`0.01` = 1 %) or a count (`100`). Default: 1 % of the customers; 1 account for spend-contended.
    #[arg(long, env = "LOADGEN_HOT_SET")]
    pub hot_set: Option<HotSet>,
    /// Share of requests that go to the hot set (the rest spread over all customers). Default: 1.0 for balance-read (every read hits the cache), 0.9 for mixed, 0 for earn (uniform).
    #[arg(long, env = "LOADGEN_SKEW")]
    pub skew: Option<f64>,
    /// Seed of the request generator.
    #[arg(long, env = "LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Program id to use. Default: a fresh one per run, so runs never depend on earlier data.
    #[arg(long, env = "LOADGEN_PROGRAM")]
    pub program: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
    /// Baselines to measure in the same run (comma list), or `none`. Default: those relevant to the scenario.
    #[arg(long, env = "LOADGEN_BASELINES", value_enum, value_delimiter = ',')]
    pub baselines: Vec<BaselineKind>,
    /// Export the in-process services' spans, sampled at this ratio (0..=1, parent-based), to an
    /// OTLP receiver in this process: what tracing costs. Unset: spans are not exported (unless
    /// OTEL_EXPORTER_OTLP_ENDPOINT says where).
    #[arg(long, env = "LOADGEN_TRACE_RATIO", value_parser = ratio)]
    pub trace_ratio: Option<f64>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text}: a sampling ratio between 0 and 1")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// GetBalance on a hot set of seeded accounts (served from the cache).
    BalanceRead,
    /// Earn with unique idempotency keys across many customers.
    Earn,
    /// Many clients Spend(1) on few accounts; both successes and INSUFFICIENT_POINTS, never an overdraft.
    SpendContended,
    /// 90 % GetBalance, 9 % Earn, 1 % Redeem through the rewards service (a Spend(1) only if it cannot be started).
    Mixed,
    /// Redeem a reward (rewards service in process, wired to the points service) with unique idempotency keys.
    Redeem,
    /// GET /v1/customers/{id}/loyalty through the HTTP gateway in process (HTTP/1.1 keep-alive).
    LoyaltyPage,
    /// EarnForOrder with unique order ids across many customers, with program settings, a campaign
    /// and a tier ladder in place (tiers service in process; points asks it for each order's tier).
    OrderEarn,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::BalanceRead => "balance-read",
            Self::Earn => "earn",
            Self::SpendContended => "spend-contended",
            Self::Mixed => "mixed",
            Self::Redeem => "redeem",
            Self::LoyaltyPage => "loyalty-page",
            Self::OrderEarn => "order-earn",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    /// A bare tonic server answering GetBalance with a constant, in this process.
    Tonic,
    /// Raw Redis: GET for reads, INCRBY for writes, one multiplexed connection.
    Redis,
    /// Raw PostgreSQL: UPDATE + INSERT per earn, conditional UPDATE per spend, SELECT per read.
    Postgres,
    /// The balance-read scenario on the same service (the peak that mixed is compared with).
    BalanceRead,
    /// The same scenario on a second in-process points service with `LOYALTY_AUTH=off`
    /// (same settings, same client, the key still sent): what checking callers costs.
    AuthOff,
    /// No baseline.
    None,
}

/// Size of the hot set: a fraction of the customers or a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HotSet {
    Fraction(f64),
    Count(u32),
}

impl std::str::FromStr for HotSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('.') {
            let fraction: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
            if fraction > 0.0 && fraction <= 1.0 {
                Ok(Self::Fraction(fraction))
            } else {
                Err(format!("fraction {s} must be in (0, 1]"))
            }
        } else {
            match s.parse::<u32>() {
                Ok(count) if count > 0 => Ok(Self::Count(count)),
                _ => Err(format!("{s:?} is neither a fraction like 0.01 nor a count like 100")),
            }
        }
    }
}

impl HotSet {
    fn resolve(self, customers: u32) -> u32 {
        let count = match self {
            // Rounded up, so a small fraction still means at least one customer.
            Self::Fraction(f) => (f * f64::from(customers)).ceil() as u32,
            Self::Count(n) => n,
        };
        count.clamp(1, customers.max(1))
    }
}

/// Why a run could not produce a report.
#[derive(Debug)]
pub enum RunError {
    /// Bad arguments, or a scenario that cannot run yet: exit code 2.
    Usage(String),
    /// Something the run needed did not work: exit code 1.
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(message) | Self::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for RunError {}

/// The `main` of a harness binary besides `loadgen` (`loadgen-insights`,
/// `loadgen-webhooks`): telemetry, the run, the report printed (and written
/// as JSON to `json`), and the exit code: 0, 1 when a check failed or the run
/// could not be done, 2 for bad arguments.
pub async fn harness_main<R, F>(
    name: &'static str,
    telemetry: &loyalty_common::telemetry::TelemetryArgs,
    json: Option<std::path::PathBuf>,
    ok: impl Fn(&R) -> bool,
    run: F,
) -> std::process::ExitCode
where
    R: std::fmt::Display + serde::Serialize,
    F: std::future::Future<Output = Result<R, RunError>>,
{
    use std::process::ExitCode;
    let guard = match loyalty_common::telemetry::init(name, telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let code = match run.await {
        Ok(report) => {
            println!("{report}");
            let written = json.map_or(Ok(()), |path| {
                let text = serde_json::to_string_pretty(&report).expect("reports serialise");
                std::fs::write(&path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))
            });
            match written {
                Err(error) => {
                    eprintln!("{name}: {error}");
                    ExitCode::FAILURE
                }
                Ok(()) if !ok(&report) => ExitCode::FAILURE,
                Ok(()) => ExitCode::SUCCESS,
            }
        }
        Err(RunError::Usage(message)) => {
            eprintln!("{name}: {message}");
            ExitCode::from(2)
        }
        Err(RunError::Failed(message)) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    };
    guard.shutdown();
    code
}

pub(crate) fn failed(context: &str) -> impl FnOnce(String) -> RunError + '_ {
    move |error| RunError::Failed(format!("{context}: {error}"))
}

/// `map_err` for a set-up RPC: `<rpc>: <code>: <message>`.
pub(crate) fn rpc_failed(rpc: &str) -> impl FnOnce(tonic::Status) -> RunError + '_ {
    move |status| RunError::Failed(format!("{rpc}: {:?}: {}", status.code(), status.message()))
}

/// Everything a run was asked to do, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    /// Unique per run: prefixes idempotency keys, so a reused `--program` never replays.
    pub run_id: String,
    pub seed: u64,
    pub workload: Workload,
    pub program: String,
    pub concurrency: usize,
    pub client: ClientSettings,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub rounds: u32,
    pub baselines: Vec<BaselineKind>,
    /// The services' shared secret, for the rewards service and gateway started next to points.
    pub service_secret: Option<String>,
}

impl Plan {
    pub fn from_args(args: &Args) -> Result<Self, RunError> {
        let scenario = args.scenario;
        if args.target.is_none() && !args.start_points {
            return Err(RunError::Usage(
                "say which service to load: --target ADDR (a running points service) or --start-points".into(),
            ));
        }
        if let Some(after) = args.redis_fail_primary_after {
            failover::check(args.redis_url.as_deref())?;
            if !(after.is_finite() && after > 0.0) {
                return Err(RunError::Usage("--redis-fail-primary-after: seconds, more than 0".into()));
            }
        }
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(RunError::Usage(format!("--{name} must be a number of seconds ≥ 0")))
            }
        };
        let duration = positive("duration", args.duration)?;
        if duration.is_zero() {
            return Err(RunError::Usage("--duration must be > 0".into()));
        }
        let warmup = positive("warmup", args.warmup)?;
        if args.concurrency == 0 || args.connections == 0 || args.customers == 0 || args.rounds == 0 {
            return Err(RunError::Usage("--concurrency, --connections, --customers and --rounds must be > 0".into()));
        }
        if let Some(rate) = args.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(RunError::Usage("--rate must be > 0 requests per second".into()));
        }
        if let Some(skew) = args.skew
            && !(0.0..=1.0).contains(&skew)
        {
            return Err(RunError::Usage("--skew must be in [0, 1]".into()));
        }
        let hot_set = args.hot_set.unwrap_or(match scenario {
            Scenario::SpendContended => HotSet::Count(1),
            _ => HotSet::Fraction(0.01),
        });
        let workload = Workload {
            scenario,
            customers: args.customers,
            hot: hot_set.resolve(args.customers),
            first: 0,
            redeem: false,
            skew: args.skew.unwrap_or(match scenario {
                Scenario::BalanceRead | Scenario::Redeem | Scenario::LoyaltyPage => 1.0,
                Scenario::Mixed => 0.9,
                _ => 0.0,
            }),
        };
        let baselines = if args.baselines.is_empty() {
            match scenario {
                Scenario::BalanceRead if args.start_points && args.auth == AuthMode::Required => {
                    vec![BaselineKind::Tonic, BaselineKind::Redis, BaselineKind::AuthOff]
                }
                Scenario::BalanceRead => vec![BaselineKind::Tonic, BaselineKind::Redis],
                Scenario::Earn | Scenario::SpendContended | Scenario::Redeem | Scenario::OrderEarn => {
                    vec![BaselineKind::Postgres]
                }
                Scenario::LoyaltyPage => vec![BaselineKind::BalanceRead],
                _ => vec![BaselineKind::BalanceRead, BaselineKind::Tonic],
            }
        } else if args.baselines.contains(&BaselineKind::None) {
            Vec::new()
        } else {
            let mut chosen = args.baselines.clone();
            chosen.dedup();
            chosen
        };
        let program = args.program.clone().unwrap_or_else(|| format!("loadgen-{}", uuid::Uuid::now_v7().simple()));
        loyalty_common::validate::id("program", &program)
            .map_err(|v| RunError::Usage(format!("--program: {}", v.description)))?;
        Ok(Self {
            scenario,
            run_id: uuid::Uuid::now_v7().simple().to_string(),
            seed: args.seed,
            workload,
            program,
            concurrency: args.concurrency,
            client: ClientSettings { connections: args.connections, key: target_credential(args)? },
            rate: args.rate,
            duration,
            warmup,
            rounds: args.rounds,
            baselines,
            service_secret: args.service_secret.clone(),
        })
    }

    pub(crate) fn warmup(&self, label: &str) -> Phase {
        Phase { label: format!("{label} warmup"), duration: self.warmup, rate: self.rate }
    }

    /// Slice `round` (0-based) of the measured time.
    pub(crate) fn slice(&self, label: &str, round: u32) -> Phase {
        let label = if self.rounds > 1 { format!("{label} ({}/{})", round + 1, self.rounds) } else { label.to_owned() };
        Phase { label, duration: self.duration / self.rounds, rate: self.rate }
    }
}

/// What calls to `--target` present: the API key, else the load generator's service identity.
fn target_credential(args: &Args) -> Result<Option<String>, RunError> {
    if args.api_key.is_some() || args.target.is_none() {
        return Ok(args.api_key.clone());
    }
    let Some(secret) = &args.service_secret else { return Ok(None) };
    let secret = loyalty_common::auth::ServiceSecret::new(secret)
        .map_err(|e| RunError::Usage(format!("LOYALTY_SERVICE_SECRET: {e}")))?;
    Ok(Some(secret.token("loadgen")))
}

fn merge(total: &mut Option<PhaseResult>, slice: PhaseResult) {
    match total {
        Some(total) => total.merge(slice),
        None => *total = Some(slice),
    }
}

/// Runs the scenario, the correctness check and the baselines; the caller
/// prints the report and turns a failed check into a non-zero exit.
pub async fn run(args: Args) -> Result<Report, RunError> {
    let mut plan = Plan::from_args(&args)?;
    let machine = system::Machine::read();
    let scenario = plan.scenario.name();

    // order-earn prices orders with a tier ladder: points needs the tiers service before it starts.
    let tiers = match (&args.target, plan.scenario) {
        (None, Scenario::OrderEarn) => Some(extras::Tiers::start(&plan).await?),
        _ => None,
    };
    let tiers_addr = tiers.as_ref().map(|t| t.addr.to_string());
    let (service, addr, startup) = match &args.target {
        Some(target) => (None, client::target_uri(target), None),
        None => {
            let started = StartedService::start(&args, args.auth, &plan.program, tiers_addr.as_deref()).await?;
            plan.client.key = started.key.clone();
            plan.service_secret = started.service_secret.clone();
            let addr = format!("http://{}", started.addr);
            let startup = Startup {
                started_ms: started.started.as_secs_f64() * 1e3,
                ready_ms: started.ready.as_secs_f64() * 1e3,
            };
            (Some(started), addr, Some(startup))
        }
    };
    let memory_pid = if service.is_some() { None } else { args.target_pid };
    let memory_source = match (&service, memory_pid) {
        (Some(_), _) => "this process (service and load generator together)".to_owned(),
        (None, Some(pid)) => format!("pid {pid}"),
        (None, None) => "not measured (use --target-pid)".to_owned(),
    };
    let measure_memory = service.is_some() || memory_pid.is_some();

    let mut extras: Option<extras::Extras> = None;
    let outcome = async {
        let extras = &mut extras;
        let channels = plan.client.connect(&addr).await?;
        let mut notes = Vec::new();
        if matches!(plan.scenario, Scenario::Redeem | Scenario::LoyaltyPage | Scenario::Mixed) {
            let points = addr.split_once("://").map_or(addr.as_str(), |(_, rest)| rest).to_owned();
            let gateway = plan.scenario == Scenario::LoyaltyPage;
            let postgres = args.database_url.as_deref().filter(|url| url.starts_with("postgres"));
            match extras::Extras::start(&plan, &points, args.database_max_connections, gateway, postgres).await {
                Ok(started) => *extras = Some(started),
                Err(error) if plan.scenario == Scenario::Mixed => {
                    eprintln!("loadgen: {error}");
                    notes.push(format!(
                        "mixed: the rewards service did not start ({error}); the 1 % slice is a Spend(1) standing in for redeem"
                    ));
                }
                Err(error) => return Err(error),
            }
        }
        if plan.scenario == Scenario::Mixed && extras.is_some() {
            plan.workload.redeem = true;
            notes.push("mixed: the 1 % slice is a real Redeem through the rewards service in process".to_owned());
        }
        if extras.is_some() && args.database_url.as_deref().is_some_and(|url| url.starts_with("postgres")) {
            notes.push("the rewards service runs on a PostgreSQL database of its own on the same server (the gateway's key store on a SQLite file)".to_owned());
        }
        if plan.scenario == Scenario::OrderEarn {
            notes.push(if tiers_addr.is_some() {
                "order-earn: program settings, a double-points campaign and a tiers service in process (a three-tier ladder, not following the ledger, so every customer prices on the first tier)".to_owned()
            } else {
                "order-earn: program settings and a double-points campaign; the target's own TIERS_ADDR decides the tier".to_owned()
            });
        }
        if plan.scenario == Scenario::LoyaltyPage {
            notes.push("loyalty-page: gateway with points, tiers, referral and rewards in process (tiers and referral not following the ledger)".to_owned());
        }
        let plan = &plan;
        let idle_rss_kb = measure_memory.then(|| system::rss_kb(memory_pid)).flatten();
        let mut expected = client::seed(&channels, plan).await?;

        let mut workers = ServiceWorker::many(&channels, plan, client::warmup_workload(plan));
        if let Some(extras) = extras.as_ref() {
            for worker in &mut workers {
                worker.attach(extras);
            }
        }
        let (mut workers, warm) = drive::run_phase(workers, &plan.warmup(scenario), None).await;
        if plan.scenario == Scenario::SpendContended {
            client::fund_spend_accounts(&channels, plan, &warm, &mut expected).await?;
            for worker in &mut workers {
                worker.set_workload(plan.workload.clone());
            }
        }

        let mut baselines = Vec::new();
        let mut reports = Vec::new();
        for kind in &plan.baselines {
            match Baseline::prepare(*kind, plan, &args, &channels).await {
                Ok(mut baseline) => {
                    for (account, seeded) in std::mem::take(&mut baseline.seeded) {
                        expected.entry(account).or_default().earned += seeded.earned;
                    }
                    baseline.run(&plan.warmup(&format!("{} baseline", describe(*kind).0))).await;
                    baselines.push((baseline, None::<PhaseResult>));
                }
                Err(error) => {
                    let (name, what) = describe(*kind);
                    reports.push(BaselineReport::unavailable(name, what, error.to_string()));
                }
            }
        }

        let probe = measure_memory.then_some(memory_pid);
        let failover = args.redis_fail_primary_after.map(|after| {
            let url = args.redis_url.clone().unwrap_or_default();
            tokio::spawn(failover::fail_primary_after(url, Duration::from_secs_f64(after)))
        });
        let mut measured: Option<PhaseResult> = None;
        for round in 0..plan.rounds {
            let (next, slice) = drive::run_phase(workers, &plan.slice(scenario, round), probe).await;
            workers = next;
            merge(&mut measured, slice);
            for (baseline, result) in &mut baselines {
                let label = format!("{} baseline", describe(baseline.kind).0);
                merge(result, baseline.run(&plan.slice(&label, round)).await);
            }
        }
        let measured = measured.expect("at least one round");
        if let Some(failover) = failover {
            let failed = failover.await.map_err(|e| RunError::Failed(format!("redis failover: {e}")))??;
            notes.push(failover::describe(&failed, &measured));
        }
        let end_rss_kb = measure_memory.then(|| system::rss_kb(memory_pid)).flatten();
        let tally = client::tally(workers, expected);
        let correctness = check::run(&channels, plan, &tally, extras.as_ref().map(|e| &e.rewards)).await;

        for (baseline, result) in baselines {
            let (name, what) = describe(baseline.kind);
            if let Err(error) = baseline.finish().await {
                eprintln!("loadgen: {error}");
            }
            let result = result.expect("at least one round");
            reports.push(BaselineReport::measured(name, what, &measured, result));
        }
        Ok::<_, RunError>((measured, idle_rss_kb, end_rss_kb, correctness, reports, notes))
    }
    .await;

    if let Some(extras) = extras.take() {
        extras.stop().await;
    }
    let stopped = match service {
        Some(service) => service.stop().await,
        None => Ok(()),
    };
    if let Some(tiers) = tiers {
        tiers.stop().await;
    }
    let (measured, idle_rss_kb, end_rss_kb, correctness, baselines, notes) = outcome?;
    stopped?;

    Ok(Report {
        scenario: plan.scenario,
        settings: Settings::new(&args, &plan, &addr),
        machine,
        service: RunResult::from_phase(&measured),
        baselines,
        startup,
        memory: Memory { source: memory_source, idle_rss_kb, load_rss_max_kb: measured.rss_max_kb, end_rss_kb },
        correctness,
        notes,
    })
}
