//! `loadgen-insights`: the insights service at the size of issue 19 (a
//! million customers, ten million ledger entries), on PostgreSQL, in two
//! parts. `src/bin/loadgen-insights.rs` only parses the arguments, calls
//! [`run`] and prints the [`Report`].
//!
//! - **KPIs.** The insights service starts in this process on a throwaway
//!   database (its migrations applied), without `POINTS_ADDR`; the run then
//!   writes what the ledger consumer would have kept for a program `bench`
//!   straight into its tables with `COPY ... FROM STDIN` (orders, customers,
//!   members, buyer days, months and gaps, the days' KPIs, the cohorts),
//!   generated customer by customer from a fixed seed so that every table
//!   tells the same story, runs `ANALYZE`, and measures `GetProgramKpis` over
//!   the whole range at DAY, WEEK and MONTH granularity, checking every
//!   answer's totals against what was seeded.
//! - **Consumer catch-up.** A points service in this process on a throwaway
//!   database takes `EarnForOrder` calls; only once the ledger holds them all
//!   does an insights service start, following it from the beginning. The
//!   time until its cursor reaches the ledger's last sequence gives entries
//!   per second, next to a baseline measured in the same run: the same
//!   number of raw rows INSERTed into a plain table, one INSERT per row, in
//!   transactions of the consumer's batch size.
//!
//! Every database the run creates (`loadgen_insights_<run>_<part>`) is
//! dropped at the end, whether the run succeeded or not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgCopyIn, PgPool, PgPoolCopyExt, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, Postgres};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use loyalty_common::clock::{Clock, MICROS_PER_DAY, Micros, SystemClock, civil_from_days, to_timestamp};
use loyalty_common::server::{RunningService, Service};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_insights::domain::{History, Settings, day_of, month_of, week_start};
use loyalty_proto::insights::v1 as ipb;
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;
use loyalty_proto::points::v1 as ppb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::RunError;
use crate::baseline::database_url;
use crate::system::Machine;

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "loadgen-insights",
    version,
    about = "The insights service at scale, on PostgreSQL: GetProgramKpis latency over a bulk-seeded \
             program, and the ledger consumer's catch-up rate next to a raw INSERT baseline.",
    long_about = "The insights service at scale, on PostgreSQL, in two parts (both by default, see --only).\n\n\
                  kpis: starts the insights service in this process on a throwaway database, bulk-seeds a \
                  program `bench` (--customers customers, --entries ledger entries over --days days ending \
                  today, about half of them orders) into its tables with COPY FROM STDIN, runs ANALYZE, then \
                  measures GetProgramKpis over the whole range (DAY, WEEK and MONTH granularity) from \
                  --concurrency clients, checking each answer's totals against the seeded data.\n\n\
                  catch-up: starts the points service in this process on a throwaway database, writes \
                  --catch-up-entries EarnForOrder calls, then starts an insights service that follows the \
                  ledger from the start and times it until its cursor reaches the ledger's last sequence \
                  (entries/s); the baseline INSERTs as many raw rows into a plain table, one INSERT per row, \
                  256 rows per transaction (the consumer's batch).\n\n\
                  Every database is created on --database-url's server and dropped at the end. The services \
                  in this process take only the settings given here, never their environment variables. \
                  Exit code: 0, 1 when a check failed or the run could not be done, 2 for bad arguments."
)]
pub struct Args {
    /// PostgreSQL server to work on, e.g. `postgres://postgres@127.0.0.1:5432/postgres`: the run
    /// creates throwaway databases there (`loadgen_insights_<run>_<part>`) and drops them at the end.
    #[arg(long, env = "LOADGEN_INSIGHTS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Customers of the seeded program; every one of them ordered at least once.
    #[arg(long, env = "LOADGEN_INSIGHTS_CUSTOMERS", default_value_t = 1_000_000)]
    pub customers: u32,
    /// Ledger entries the seeded program stands for: about half order earns, a few refunds,
    /// the rest other earns, spends and expiries (counted in the days' KPIs only). At least twice --customers.
    #[arg(long, env = "LOADGEN_INSIGHTS_ENTRIES", default_value_t = 10_000_000)]
    pub entries: u64,
    /// Days the entries spread over, ending today (UTC); GetProgramKpis asks for all of them (at most 1101).
    #[arg(long, env = "LOADGEN_INSIGHTS_DAYS", default_value_t = 365)]
    pub days: u32,
    /// Measured GetProgramKpis calls at DAY granularity; WEEK and MONTH get a quarter as many each.
    #[arg(long, env = "LOADGEN_INSIGHTS_REQUESTS", default_value_t = 2_000)]
    pub requests: u64,
    /// Unmeasured GetProgramKpis calls before each granularity's measured ones.
    #[arg(long, env = "LOADGEN_INSIGHTS_WARMUP_REQUESTS", default_value_t = 16)]
    pub warmup_requests: u64,
    /// Concurrent GetProgramKpis clients, each with one call in flight.
    #[arg(long, env = "LOADGEN_INSIGHTS_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Order earns written to the points ledger before the insights consumer starts.
    #[arg(long, env = "LOADGEN_INSIGHTS_CATCH_UP_ENTRIES", default_value_t = 200_000)]
    pub catch_up_entries: u64,
    /// Customers the catch-up orders spread over.
    #[arg(long, env = "LOADGEN_INSIGHTS_CATCH_UP_CUSTOMERS", default_value_t = 20_000)]
    pub catch_up_customers: u32,
    /// EarnForOrder calls in flight while the catch-up ledger is written.
    #[arg(long, env = "LOADGEN_INSIGHTS_WRITE_CONCURRENCY", default_value_t = 32)]
    pub write_concurrency: usize,
    /// Pool size of each service started in this process.
    #[arg(long, env = "LOADGEN_INSIGHTS_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Seed of the data generator (same seed, same data).
    #[arg(long, env = "LOADGEN_INSIGHTS_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Run `VACUUM (ANALYZE)` after seeding instead of `ANALYZE`: sets the visibility map as
    /// autovacuum eventually would (index-only scans), and keeps autovacuum from starting on the
    /// fresh tables during the measurement.
    #[arg(long, env = "LOADGEN_INSIGHTS_VACUUM")]
    pub vacuum: bool,
    /// Run only one part.
    #[arg(long, env = "LOADGEN_INSIGHTS_ONLY", value_enum)]
    pub only: Option<Part>,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "LOADGEN_INSIGHTS_JSON")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The two parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// GetProgramKpis latency over the bulk-seeded program.
    Kpis,
    /// The ledger consumer's catch-up rate and its raw INSERT baseline.
    CatchUp,
}

/// The seeded program's id.
pub const PROGRAM: &str = "bench";
/// The p99 GetProgramKpis must stay under at DAY granularity (issue 19), in milliseconds.
pub const TARGET_P99_MS: f64 = 50.0;
/// Entries the ledger consumer applies per transaction at most (`BATCH` in
/// `loyalty_common::follow`, private there): the baseline's transaction size.
pub const CONSUMER_BATCH: usize = 256;
/// The insights service's row in `consumer_cursors`.
const CONSUMER: &str = "insights";
/// The longest range GetProgramKpis answers for is 1,100 days from `from` to `to`.
const MAX_DAYS: u32 = 1_101;
/// Bound on one GetProgramKpis call: long, so that a slow answer is measured rather than cut.
const KPI_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one EarnForOrder call.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the insights database is asked where the consumer stands.
const CURSOR_POLL: Duration = Duration::from_millis(100);
/// A consumer whose cursor has not moved for this long has stalled: the run fails.
const STALL: Duration = Duration::from_secs(120);
/// Bytes of COPY text gathered per table before they are sent.
const COPY_CHUNK: usize = 1 << 20;
/// Order amounts, in minor units (10.00 to 150.00).
const MIN_AMOUNT_MINOR: i64 = 1_000;
const MAX_AMOUNT_MINOR: i64 = 15_000;
/// Share of orders refunded in full, at most 14 days later (not after now).
const REFUND_SHARE: f64 = 0.02;
const REFUND_DELAY_MAX: Micros = 14 * MICROS_PER_DAY;
/// Points of the entries that are not order earns nor refunds (counted in kpi_days only):
/// half bonus earns, 30 % spends, 20 % expiries.
const BONUS_POINTS: i64 = 100;
const SPEND_POINTS: i64 = 200;
const EXPIRE_POINTS: i64 = 50;
/// The seeded program earns 1 point per 1.00 (100 minor units), rounded down, like the points
/// service's default settings that the catch-up part runs on.
const MINOR_PER_POINT: i64 = 100;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine the run was on.
    pub machine: Machine,
    /// The settings the run used.
    pub settings: ReportSettings,
    /// Absent with `--only catch-up`.
    pub kpis: Option<KpiReport>,
    /// Absent with `--only kpis`.
    pub catch_up: Option<CatchUpReport>,
    /// Checks that failed: a wrong answer, a failed call. Empty: the run is good.
    pub failures: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The settings the run used.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSettings {
    /// The PostgreSQL server, credentials removed.
    pub server: String,
    /// `--customers`.
    pub customers: u32,
    /// `--entries`.
    pub entries: u64,
    /// `--days`.
    pub days: u32,
    /// `--requests`.
    pub requests: u64,
    /// `--warmup-requests`.
    pub warmup_requests: u64,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--catch-up-entries`.
    pub catch_up_entries: u64,
    /// `--catch-up-customers`.
    pub catch_up_customers: u32,
    /// `--write-concurrency`.
    pub write_concurrency: usize,
    /// `--database-max-connections`.
    pub database_max_connections: u32,
    /// `--seed`.
    pub seed: u64,
}

/// Part 1: seeding and GetProgramKpis.
#[derive(Debug, Clone, Serialize)]
pub struct KpiReport {
    /// The seeded program's id.
    pub program: String,
    /// The range asked for, as UTC dates (`YYYY-MM-DD`), both included.
    pub first_day: String,
    pub last_day: String,
    /// From the start call to `InsightsServer::start` returning (migrations applied).
    pub startup_ms: f64,
    /// What the seeding wrote.
    pub seeding: SeedReport,
    /// GetProgramKpis at DAY, WEEK and MONTH granularity, in that order.
    pub runs: Vec<KpiRun>,
    /// See [`TARGET_P99_MS`].
    pub target_p99_ms: f64,
    /// Whether the DAY run's p99 stayed under [`TARGET_P99_MS`].
    pub target_met: bool,
}

/// What the seeding wrote, and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// Rows COPY wrote per table, and each table's size with its indexes after ANALYZE.
    pub tables: Vec<TableRows>,
    /// What the seeded data adds up to.
    pub totals: SeedTotals,
    /// Generating the rows and copying them in, every table.
    pub copy_secs: f64,
    /// `ANALYZE` or `VACUUM (ANALYZE)`.
    pub analyze: String,
    /// How long the ANALYZE took.
    pub analyze_secs: f64,
}

/// One seeded table.
#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    /// The table's name.
    pub table: String,
    /// Rows written by COPY.
    pub rows: u64,
    /// `pg_total_relation_size`: heap, indexes and TOAST.
    pub bytes: i64,
}

/// What the seeded data adds up to: what a GetProgramKpis total over the whole range must say.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SeedTotals {
    /// Customers with orders (every one of them a member and a buyer in the range).
    pub customers: i64,
    /// Orders (order earns).
    pub orders: i64,
    /// Orders refunded in full (one reversal entry each).
    pub refunds: i64,
    /// Entries that are neither order earns nor refunds.
    pub other_entries: i64,
    /// orders + refunds + other_entries.
    pub ledger_entries: i64,
    /// Sum of the orders' amounts, in minor units.
    pub revenue_minor: i64,
    /// Sum of the refunded orders' amounts, in minor units.
    pub refunded_minor: i64,
    /// Points issued: order earns (1 per 1.00) and bonus earns.
    pub points_issued: i64,
    /// Rows of buyer_days: the (customer, day) pairs with an order.
    pub buyer_days: i64,
}

/// GetProgramKpis at one granularity.
#[derive(Debug, Clone, Serialize)]
pub struct KpiRun {
    /// `DAY`, `WEEK` or `MONTH`.
    pub granularity: String,
    /// Periods in an answer.
    pub periods: usize,
    /// Measured calls.
    pub requests: u64,
    /// Calls answered OK (whether their numbers were right or not).
    pub answered: u64,
    /// Failed calls by gRPC code; not timed.
    pub errors: BTreeMap<String, u64>,
    /// Answers whose totals differ from the seeded data.
    pub wrong_answers: u64,
    /// What the first wrong answer said.
    pub first_wrong: Option<String>,
    /// Wall time of the measured calls.
    pub elapsed_secs: f64,
    /// Calls answered per second.
    pub throughput_rps: f64,
    /// Latency of the answered calls.
    pub latency_ms: LatencyMs,
}

/// Latency of answered calls, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyMs {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1e3,
        }
    }
}

/// Part 2: the consumer's catch-up and its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUpReport {
    /// EarnForOrder calls that wrote the ledger.
    pub writes: Rate,
    /// Failed EarnForOrder calls by gRPC code (their entries are not in the ledger).
    pub write_errors: BTreeMap<String, u64>,
    /// Entries in the ledger when the consumer started, and the last one's sequence.
    pub ledger_entries: i64,
    pub last_sequence: i64,
    /// From the start call to `InsightsServer::start` returning (part of the consumer's time).
    pub consumer_startup_ms: f64,
    /// From the insights service's start call until its cursor reached `last_sequence`.
    pub consumer: Rate,
    /// The same number of raw rows INSERTed.
    pub baseline: Rate,
    /// How the baseline wrote them.
    pub baseline_what: String,
    /// consumer entries/s / baseline rows/s.
    pub ratio: Option<f64>,
}

/// So many entries (or rows) in so many seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rate {
    /// Entries (or rows) written or applied.
    pub entries: i64,
    /// Seconds it took.
    pub secs: f64,
    /// entries / secs.
    pub per_sec: f64,
}

impl Rate {
    fn new(entries: i64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        Self { entries, secs, per_sec: if secs > 0.0 { entries as f64 / secs } else { 0.0 } }
    }
}

/// Runs the parts asked for and checks the answers; the caller prints the
/// report and turns failed checks into a non-zero exit.
pub async fn run(args: Args) -> Result<Report, RunError> {
    validate(&args)?;
    let machine = Machine::read();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut resources =
        Resources { prefix: "loadgen_insights", admin_url: args.database_url.clone(), run_id, ..Resources::default() };
    let outcome = async {
        let resources = &mut resources;
        let kpis = match args.only {
            Some(Part::CatchUp) => None,
            _ => Some(kpis(&args, resources).await?),
        };
        let catch_up = match args.only {
            Some(Part::Kpis) => None,
            _ => Some(catch_up(&args, resources).await?),
        };
        Ok::<_, RunError>((kpis, catch_up))
    }
    .await;
    resources.release().await;
    let (kpis, catch_up) = outcome?;

    let mut failures = Vec::new();
    if let Some(kpis) = &kpis {
        for run in &kpis.runs {
            if let Some(first) = &run.first_wrong {
                failures
                    .push(format!("{}: {} wrong answer(s), the first: {first}", run.granularity, run.wrong_answers));
            }
            let errors: u64 = run.errors.values().sum();
            if errors > 0 {
                failures.push(format!("{}: {errors} GetProgramKpis call(s) failed: {:?}", run.granularity, run.errors));
            }
        }
    }
    if let Some(catch_up) = &catch_up {
        let errors: u64 = catch_up.write_errors.values().sum();
        if errors > 0 {
            failures.push(format!("catch-up: {errors} EarnForOrder call(s) failed: {:?}", catch_up.write_errors));
        }
    }
    Ok(Report {
        machine,
        settings: ReportSettings {
            server: without_credentials(&args.database_url),
            customers: args.customers,
            entries: args.entries,
            days: args.days,
            requests: args.requests,
            warmup_requests: args.warmup_requests,
            concurrency: args.concurrency,
            catch_up_entries: args.catch_up_entries,
            catch_up_customers: args.catch_up_customers,
            write_concurrency: args.write_concurrency,
            database_max_connections: args.database_max_connections,
            seed: args.seed,
        },
        kpis,
        catch_up,
        failures,
    })
}

fn validate(args: &Args) -> Result<(), RunError> {
    let usage = |message: &str| Err(RunError::Usage(message.to_owned()));
    if !args.database_url.starts_with("postgres") {
        return usage("--database-url must be a PostgreSQL URL (postgres://...)");
    }
    if args.customers == 0 || args.days == 0 || args.requests == 0 || args.concurrency == 0 {
        return usage("--customers, --days, --requests and --concurrency must be > 0");
    }
    if args.days > MAX_DAYS {
        return usage(
            "--days must be at most 1101 (GetProgramKpis answers for at most 1,100 days from `from` to `to`)",
        );
    }
    if args.entries < 2 * u64::from(args.customers) {
        return usage(
            "--entries must be at least twice --customers (every customer orders, orders are about half the entries)",
        );
    }
    if args.catch_up_entries == 0 || args.catch_up_customers == 0 || args.write_concurrency == 0 {
        return usage("--catch-up-entries, --catch-up-customers and --write-concurrency must be > 0");
    }
    if args.database_max_connections == 0 {
        return usage("--database-max-connections must be > 0");
    }
    Ok(())
}

// ------------------------------------------------------------ resources

/// The databases and services of one run, released at its end (shared
/// with the other harnesses that start services in this process).
#[derive(Default)]
pub(crate) struct Resources {
    /// Names the run's databases: `<prefix>_<run>_<part>`.
    pub(crate) prefix: &'static str,
    pub(crate) admin_url: String,
    pub(crate) run_id: String,
    /// Databases created, dropped by [`Resources::release`].
    databases: Vec<String>,
    /// Services running, stopped last first.
    services: Vec<(&'static str, RunningService)>,
}

impl Resources {
    /// A run's resources, none made yet.
    pub(crate) fn new(prefix: &'static str, admin_url: &str) -> Self {
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        Self { prefix, admin_url: admin_url.to_owned(), run_id, ..Self::default() }
    }

    /// Creates `<prefix>_<run>_<part>`; returns its URL.
    pub(crate) async fn database(&mut self, part: &str) -> Result<String, RunError> {
        let name = format!("{}_{}_{part}", self.prefix, self.run_id);
        admin_execute(&self.admin_url, &format!("CREATE DATABASE {name}")).await?;
        self.databases.push(name.clone());
        Ok(database_url(&self.admin_url, &name))
    }

    /// Starts `S` on a loopback port, callers unchecked, metrics on a free
    /// port, with `args` (its own flags) and nothing from the environment.
    pub(crate) async fn start<S: Service>(
        &mut self,
        name: &'static str,
        args: &[&str],
    ) -> Result<SocketAddr, RunError> {
        let config = service_config::<S>(args)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RunError::Failed(format!("cannot bind 127.0.0.1:0: {e}")))?;
        let server = S::start(config, listener, None)
            .await
            .map_err(|e| RunError::Failed(format!("{name} service did not start: {e}")))?;
        let addr = server.bind_addr();
        self.services.push((name, server));
        Ok(addr)
    }

    /// Stops every running service, last started first.
    async fn stop_services(&mut self) {
        while let Some((name, server)) = self.services.pop() {
            if let Err(error) = server.shutdown().await {
                eprintln!("{}: {name} service shutdown: {error}", self.prefix);
            }
        }
    }

    /// Stops the services and drops every database.
    pub(crate) async fn release(mut self) {
        self.stop_services().await;
        for name in std::mem::take(&mut self.databases) {
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = admin_execute(&self.admin_url, &statement).await {
                eprintln!("{}: {error}", self.prefix);
            }
        }
    }
}

/// `S`'s settings from `args`, never from the environment (a `POINTS_ADDR`
/// or `REDIS_URL` in the shell must not change what is measured).
fn service_config<S: Service>(args: &[&str]) -> Result<S::Config, RunError> {
    use clap::{CommandFactory, FromArgMatches};
    let fixed = [S::BINARY, "--auth", "off", "--metrics-addr", "127.0.0.1:0"];
    let command = S::Config::command().mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(fixed.iter().chain(args))
        .map_err(|e| RunError::Usage(format!("{} settings: {e}", S::BINARY)))?;
    S::Config::from_arg_matches(&matches).map_err(|e| RunError::Usage(format!("{} settings: {e}", S::BINARY)))
}

/// One statement outside a transaction (CREATE or DROP DATABASE) on the server of `url`.
async fn admin_execute(url: &str, statement: &str) -> Result<(), RunError> {
    let fail = |e: sqlx::Error| RunError::Failed(format!("{statement}: {e}"));
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(fail)?;
    let result = admin.execute(AssertSqlSafe(statement.to_owned())).await;
    admin.close().await;
    result.map(drop).map_err(fail)
}

/// A pool of `size` connections to one of the run's databases.
async fn pool(url: &str, size: u32) -> Result<PgPool, RunError> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .map_err(|e| RunError::Failed(format!("cannot connect to the run's database: {e}")))
}

pub(crate) async fn channel(addr: SocketAddr, timeout: Duration) -> Result<Channel, RunError> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| RunError::Failed(e.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| RunError::Failed(format!("cannot connect to {addr}: {e:?}")))
}

// ------------------------------------------------------------ part 1: KPIs

async fn kpis(args: &Args, resources: &mut Resources) -> Result<KpiReport, RunError> {
    let url = resources.database("kpis").await?;
    let pool_size = args.database_max_connections.to_string();
    let begin = Instant::now();
    let addr = resources
        .start::<loyalty_insights::InsightsServer>(
            "insights",
            &["--database-url", &url, "--database-max-connections", &pool_size],
        )
        .await?;
    let startup = begin.elapsed();
    eprintln!("insights service in process on {addr} (no POINTS_ADDR), started in {:.1} ms", ms(startup));

    let shape = Shape::new(args);
    let seeding = seed(&url, &shape, args).await?;
    let client = InsightsServiceClient::new(channel(addr, KPI_TIMEOUT).await?);
    let mut runs = Vec::new();
    let quarter = (args.requests / 4).max(1);
    for (granularity, requests) in
        [(ipb::Granularity::Day, args.requests), (ipb::Granularity::Week, quarter), (ipb::Granularity::Month, quarter)]
    {
        let run = measure(&client, &shape, &seeding.totals, granularity, requests, args).await?;
        eprintln!(
            "GetProgramKpis {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            run.granularity, run.throughput_rps, run.latency_ms.p50, run.latency_ms.p99, run.latency_ms.max
        );
        runs.push(run);
    }
    resources.stop_services().await;
    let target_met = runs.first().is_some_and(|day| day.answered > 0 && day.latency_ms.p99 < TARGET_P99_MS);
    Ok(KpiReport {
        program: PROGRAM.to_owned(),
        first_day: date(shape.first_day),
        last_day: date(shape.today),
        startup_ms: ms(startup),
        seeding,
        runs,
        target_p99_ms: TARGET_P99_MS,
        target_met,
    })
}

/// The seeded program's size and calendar.
struct Shape {
    customers: u32,
    entries: u64,
    days: u32,
    /// When the run started; orders are placed before it.
    now: Micros,
    /// Midnight of today (UTC), the last day, and of the first day.
    today: Micros,
    first_day: Micros,
    /// Mean orders per customer: half the entries over the customers.
    orders_per_customer: f64,
    /// The thresholds segments and churn follow: the defaults (the program stores none).
    settings: Settings,
}

impl Shape {
    fn new(args: &Args) -> Self {
        let now = SystemClock.now();
        let today = day_of(now);
        Self {
            customers: args.customers,
            entries: args.entries,
            days: args.days,
            now,
            today,
            first_day: today - i64::from(args.days - 1) * MICROS_PER_DAY,
            orders_per_customer: (args.entries / 2) as f64 / f64::from(args.customers),
            settings: Settings::default(),
        }
    }
}

/// One generated order.
#[derive(Debug, Clone, Copy)]
struct Draft {
    at: Micros,
    amount_minor: i64,
    /// When it was refunded in full, if it was.
    refunded_at: Option<Micros>,
}

/// How many orders a customer placed: 1 + a geometric number, so the mean
/// is `mean` and many customers order once, few often.
fn order_count(rng: &mut fastrand::Rng, mean: f64) -> usize {
    if mean <= 1.0 {
        return 1;
    }
    let p = 1.0 / mean;
    let extra = ((1.0 - rng.f64()).ln() / (1.0 - p).ln()).floor();
    let cap = (mean * 50.0).max(100.0);
    1 + extra.clamp(0.0, cap) as usize
}

/// One customer's orders, oldest first, each at an instant uniform over the range up to now.
fn draw_orders(rng: &mut fastrand::Rng, shape: &Shape, orders: &mut Vec<Draft>) {
    orders.clear();
    let end = shape.now.max(shape.first_day + 1);
    for _ in 0..order_count(rng, shape.orders_per_customer) {
        let at = rng.i64(shape.first_day..end);
        let amount_minor = rng.i64(MIN_AMOUNT_MINOR..=MAX_AMOUNT_MINOR);
        let refunded_at = (rng.f64() < REFUND_SHARE).then(|| (at + rng.i64(0..=REFUND_DELAY_MAX)).min(end - 1));
        orders.push(Draft { at, amount_minor, refunded_at });
    }
    orders.sort_by_key(|order| order.at);
}

/// One row of kpi_days, column for column.
#[derive(Debug, Clone, Copy, Default)]
struct KpiDay {
    new_members: i64,
    orders: i64,
    revenue_minor: i64,
    refunded_minor: i64,
    points_issued: i64,
    points_redeemed: i64,
    points_expired: i64,
    points_reversed: i64,
    points_change: i64,
    first_buyers: i64,
    repeat_buyers: i64,
    churned: i64,
    reactivated: i64,
    day_buyers: i64,
}

/// What is summed over customers: the days' KPIs, the buyer gaps, the cohorts.
#[derive(Default)]
struct Aggregates {
    days: BTreeMap<Micros, KpiDay>,
    /// (day, previous day or i64::MIN) → customers.
    gaps: HashMap<(Micros, Micros), i64>,
    /// (cohort month, month) → customers.
    cohorts: BTreeMap<(Micros, Micros), i64>,
    /// Week (its Monday) → customers who ordered in it.
    weeks: BTreeMap<Micros, i64>,
    totals: SeedTotals,
}

impl Aggregates {
    fn day(&mut self, day: Micros) -> &mut KpiDay {
        self.days.entry(day).or_default()
    }

    /// Adds one customer, whose orders are `orders` (oldest first) on the distinct `days`, as
    /// the ledger consumer would have counted them order by order.
    fn add_customer(&mut self, orders: &[Draft], days: &[Micros], churned_days: i32) {
        let (Some(first), Some(&first_day), Some(&last_day)) = (orders.first(), days.first(), days.last()) else {
            return;
        };
        self.totals.customers += 1;
        self.day(first_day).new_members += 1;
        for (n, order) in orders.iter().enumerate() {
            let points = order.amount_minor / MINOR_PER_POINT;
            let day = self.day(day_of(order.at));
            day.orders += 1;
            day.revenue_minor += order.amount_minor;
            day.points_issued += points;
            day.points_change += points;
            match n {
                0 => day.first_buyers += 1,
                1 => day.repeat_buyers += 1,
                _ => {}
            }
            self.totals.orders += 1;
            self.totals.revenue_minor += order.amount_minor;
            self.totals.points_issued += points;
            if let Some(refunded_at) = order.refunded_at {
                let day = self.day(day_of(refunded_at));
                day.refunded_minor += order.amount_minor;
                day.points_reversed += points;
                day.points_change -= points;
                self.totals.refunds += 1;
                self.totals.refunded_minor += order.amount_minor;
            }
        }
        let mut previous = i64::MIN;
        for &day in days {
            *self.gaps.entry((day, previous)).or_default() += 1;
            self.day(day).day_buyers += 1;
            previous = day;
        }
        self.totals.buyer_days += days.len() as i64;
        // Churned `churned_days` after the last day ordered; a gap that long churns and reactivates.
        let after = i64::from(churned_days) * MICROS_PER_DAY;
        for pair in days.windows(2) {
            if let [before, next] = *pair
                && next >= before + after
            {
                self.day(before + after).churned += 1;
                self.day(next).reactivated += 1;
            }
        }
        self.day(last_day + after).churned += 1;
        let weeks: BTreeSet<Micros> = days.iter().map(|&day| week_start(day)).collect();
        for week in weeks {
            *self.weeks.entry(week).or_default() += 1;
        }
        let cohort = month_of(first.at);
        let mut last_month = None;
        for &day in days {
            let month = month_of(day);
            if last_month != Some(month) {
                *self.cohorts.entry((cohort, month)).or_default() += 1;
                last_month = Some(month);
            }
        }
    }

    /// Spreads the entries that are neither order earns nor refunds evenly
    /// over the range's days: half bonus earns, 30 % spends, 20 % expiries.
    fn add_other_entries(&mut self, shape: &Shape) {
        let counted = u64::try_from(self.totals.orders + self.totals.refunds).unwrap_or(u64::MAX);
        let others = shape.entries.saturating_sub(counted);
        let days = u64::from(shape.days);
        for i in 0..days {
            let n = i64::try_from(others / days + u64::from(i < others % days)).unwrap_or(i64::MAX);
            let (bonus, spends) = (n / 2, n * 3 / 10);
            let expiries = n - bonus - spends;
            let day = self.day(shape.first_day + i64::try_from(i).unwrap_or(0) * MICROS_PER_DAY);
            day.points_issued += bonus * BONUS_POINTS;
            day.points_redeemed += spends * SPEND_POINTS;
            day.points_expired += expiries * EXPIRE_POINTS;
            day.points_change += bonus * BONUS_POINTS - spends * SPEND_POINTS - expiries * EXPIRE_POINTS;
            self.totals.points_issued += bonus * BONUS_POINTS;
            self.totals.other_entries += n;
        }
        self.totals.ledger_entries = self.totals.orders + self.totals.refunds + self.totals.other_entries;
    }
}

/// One table's `COPY ... FROM STDIN` (text format), fed in chunks.
struct CopyTable {
    table: &'static str,
    copy: PgCopyIn<PoolConnection<Postgres>>,
    buf: String,
}

impl CopyTable {
    async fn begin(pool: &PgPool, table: &'static str, columns: &str) -> Result<Self, sqlx::Error> {
        let statement = format!("COPY {table} ({columns}) FROM STDIN");
        let copy = pool.copy_in_raw(&statement).await?;
        Ok(Self { table, copy, buf: String::with_capacity(COPY_CHUNK + 4_096) })
    }

    /// Appends one row: `fields` are tab-separated, `\N` for NULL.
    fn row(&mut self, fields: fmt::Arguments<'_>) {
        // Writing into a String cannot fail.
        let _ = self.buf.write_fmt(fields);
        self.buf.push('\n');
    }

    async fn send_if_full(&mut self) -> Result<(), sqlx::Error> {
        if self.buf.len() >= COPY_CHUNK { self.send().await } else { Ok(()) }
    }

    async fn send(&mut self) -> Result<(), sqlx::Error> {
        if !self.buf.is_empty() {
            self.copy.send(self.buf.as_bytes()).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends the rest and ends the COPY: the table and the rows written.
    async fn finish(mut self) -> Result<(&'static str, u64), sqlx::Error> {
        self.send().await?;
        let Self { table, copy, .. } = self;
        Ok((table, copy.finish().await?))
    }
}

/// `\N` or the number, for COPY's text format.
struct Nullable(Option<i64>);

impl fmt::Display for Nullable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("\\N"),
        }
    }
}

/// Fills the program's tables, then ANALYZEs (or VACUUMs) the database.
async fn seed(url: &str, shape: &Shape, args: &Args) -> Result<SeedReport, RunError> {
    let pool = pool(url, 6).await?;
    let seeded = async {
        let begin = Instant::now();
        let (tables, totals) = copy_all(&pool, shape, args.seed).await?;
        let copy_secs = begin.elapsed().as_secs_f64();
        eprintln!("seeded in {copy_secs:.1} s; analysing");
        let analyze = if args.vacuum { "VACUUM (ANALYZE)" } else { "ANALYZE" };
        let begin = Instant::now();
        pool.execute(analyze).await?;
        let analyze_secs = begin.elapsed().as_secs_f64();
        let mut sized = Vec::with_capacity(tables.len());
        for (table, rows) in tables {
            let bytes: i64 =
                sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)").bind(table).fetch_one(&pool).await?;
            sized.push(TableRows { table: table.to_owned(), rows, bytes });
        }
        Ok::<_, sqlx::Error>(SeedReport { tables: sized, totals, copy_secs, analyze: analyze.to_owned(), analyze_secs })
    }
    .await;
    pool.close().await;
    seeded.map_err(|e| RunError::Failed(format!("seeding: {e}")))
}

/// Generates the program customer by customer and streams the rows into
/// five COPYs at once (one connection each), then copies the sums.
async fn copy_all(
    pool: &PgPool,
    shape: &Shape,
    seed: u64,
) -> Result<(Vec<(&'static str, u64)>, SeedTotals), sqlx::Error> {
    let mut orders = CopyTable::begin(
        pool,
        "orders",
        "program_id, order_id, customer_id, amount_minor, refunded_minor, occurred_at_us",
    )
    .await?;
    let mut customers = CopyTable::begin(
        pool,
        "customers",
        "program_id, customer_id, first_order_us, last_order_us, order_count, spend_minor, segment, review_at_us",
    )
    .await?;
    let mut members = CopyTable::begin(pool, "members", "program_id, customer_id, first_seen_us").await?;
    let mut buyer_days = CopyTable::begin(pool, "buyer_days", "program_id, day_us, customer_id").await?;
    let mut buyer_months = CopyTable::begin(pool, "buyer_months", "program_id, month_us, customer_id").await?;

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sums = Aggregates::default();
    let mut drafts = Vec::new();
    let mut days = Vec::new();
    let mut history = History::default();
    let (begin, mut reported) = (Instant::now(), Instant::now());
    for c in 0..shape.customers {
        draw_orders(&mut rng, shape, &mut drafts);
        let customer = format!("c{c:08}");
        days.clear();
        for order in &drafts {
            let day = day_of(order.at);
            if days.last() != Some(&day) {
                days.push(day);
            }
        }
        history.order_times.clear();
        history.spend_minor = 0;
        for (n, order) in drafts.iter().enumerate() {
            let refunded = if order.refunded_at.is_some() { order.amount_minor } else { 0 };
            orders.row(format_args!(
                "{PROGRAM}\to{c:08}-{n:05}\t{customer}\t{}\t{refunded}\t{}",
                order.amount_minor, order.at
            ));
            // The customer's numbers count the orders not refunded in full.
            if order.refunded_at.is_none() {
                history.order_times.push(order.at);
                history.spend_minor += order.amount_minor;
            }
        }
        let (segment, _) = history.segment(&shape.settings, shape.now);
        customers.row(format_args!(
            "{PROGRAM}\t{customer}\t{}\t{}\t{}\t{}\t{}\t\\N",
            Nullable(history.first_order()),
            Nullable(history.last_order()),
            history.order_count(),
            history.spend_minor,
            segment.as_str()
        ));
        if let Some(first_day) = days.first() {
            members.row(format_args!("{PROGRAM}\t{customer}\t{first_day}"));
        }
        let mut last_month = None;
        for &day in &days {
            buyer_days.row(format_args!("{PROGRAM}\t{day}\t{customer}"));
            let month = month_of(day);
            if last_month != Some(month) {
                buyer_months.row(format_args!("{PROGRAM}\t{month}\t{customer}"));
                last_month = Some(month);
            }
        }
        sums.add_customer(&drafts, &days, shape.settings.churned_days);
        for table in [&mut orders, &mut customers, &mut members, &mut buyer_days, &mut buyer_months] {
            table.send_if_full().await?;
        }
        if c % 4_096 == 0 && reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            eprintln!(
                "seeding: {c} of {} customers, {} orders, {:.0} s",
                shape.customers,
                sums.totals.orders,
                begin.elapsed().as_secs_f64()
            );
        }
    }
    let mut rows = Vec::new();
    for table in [orders, customers, members, buyer_days, buyer_months] {
        rows.push(table.finish().await?);
    }

    sums.add_other_entries(shape);
    let mut kpi_days = CopyTable::begin(
        pool,
        "kpi_days",
        "program_id, day_us, new_members, orders, revenue_minor, refunded_minor, points_issued, points_redeemed, \
         points_expired, points_reversed, points_change, first_buyers, repeat_buyers, churned, reactivated, day_buyers",
    )
    .await?;
    for (day, d) in &sums.days {
        kpi_days.row(format_args!(
            "{PROGRAM}\t{day}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.new_members,
            d.orders,
            d.revenue_minor,
            d.refunded_minor,
            d.points_issued,
            d.points_redeemed,
            d.points_expired,
            d.points_reversed,
            d.points_change,
            d.first_buyers,
            d.repeat_buyers,
            d.churned,
            d.reactivated,
            d.day_buyers
        ));
    }
    rows.push(kpi_days.finish().await?);

    let mut gaps: Vec<((Micros, Micros), i64)> = sums.gaps.iter().map(|(&key, &n)| (key, n)).collect();
    gaps.sort_unstable();
    let mut buyer_gaps = CopyTable::begin(pool, "buyer_gaps", "program_id, day_us, previous_us, customers").await?;
    for ((day, previous), n) in gaps {
        buyer_gaps.row(format_args!("{PROGRAM}\t{day}\t{previous}\t{n}"));
        buyer_gaps.send_if_full().await?;
    }
    rows.push(buyer_gaps.finish().await?);

    let mut week_buyers = CopyTable::begin(pool, "week_buyers", "program_id, week_us, customers").await?;
    for (week, n) in &sums.weeks {
        week_buyers.row(format_args!("{PROGRAM}\t{week}\t{n}"));
        week_buyers.send_if_full().await?;
    }
    rows.push(week_buyers.finish().await?);

    let mut cohort_months =
        CopyTable::begin(pool, "cohort_months", "program_id, cohort_us, month_us, customers").await?;
    for ((cohort, month), n) in &sums.cohorts {
        cohort_months.row(format_args!("{PROGRAM}\t{cohort}\t{month}\t{n}"));
    }
    rows.push(cohort_months.finish().await?);
    Ok((rows, sums.totals))
}

/// What every answer's total over the whole range must say.
#[derive(Debug, Clone, Copy)]
struct Expected {
    totals: SeedTotals,
    /// Periods at DAY granularity; `None` for the others (not checked).
    periods: Option<usize>,
}

impl Expected {
    /// What differs, as `field got X, seeded Y`; empty when the answer is right.
    fn differences(&self, answer: &ipb::GetProgramKpisResponse) -> Vec<String> {
        let Some(total) = &answer.total else { return vec!["no total in the answer".to_owned()] };
        let t = &self.totals;
        let mut differences: Vec<String> = [
            ("orders", total.orders, t.orders),
            ("revenue_minor", total.revenue_minor, t.revenue_minor),
            ("refunded_minor", total.refunded_minor, t.refunded_minor),
            ("points_issued", total.points_issued, t.points_issued),
            ("members", total.members, t.customers),
            ("new_members", total.new_members, t.customers),
            ("buyers", total.buyers, t.customers),
            ("active_members", total.active_members, t.customers),
        ]
        .into_iter()
        .filter(|(_, got, seeded)| got != seeded)
        .map(|(field, got, seeded)| format!("total {field} {got}, seeded {seeded}"))
        .collect();
        if let Some(periods) = self.periods.filter(|&periods| periods != answer.periods.len()) {
            differences.push(format!("{} periods, {periods} days asked for", answer.periods.len()));
        }
        differences
    }
}

/// What one client saw.
struct ClientTally {
    latency_us: Histogram<u64>,
    answered: u64,
    errors: BTreeMap<String, u64>,
    wrong: u64,
    first_wrong: Option<String>,
    periods: usize,
}

/// `requests` GetProgramKpis calls over the whole range at `granularity`
/// from `--concurrency` clients (after `--warmup-requests` unmeasured ones).
async fn measure(
    client: &InsightsServiceClient<Channel>,
    shape: &Shape,
    totals: &SeedTotals,
    granularity: ipb::Granularity,
    requests: u64,
    args: &Args,
) -> Result<KpiRun, RunError> {
    let request = ipb::GetProgramKpisRequest {
        program_id: PROGRAM.to_owned(),
        from: Some(to_timestamp(shape.first_day)),
        to: Some(to_timestamp(shape.today)),
        granularity: granularity as i32,
    };
    let periods = (granularity == ipb::Granularity::Day).then_some(shape.days as usize);
    let expected = Expected { totals: *totals, periods };
    if args.warmup_requests > 0 {
        calls(client, &request, expected, args.warmup_requests, args.concurrency).await?;
    }
    let begin = Instant::now();
    let tallies = calls(client, &request, expected, requests, args.concurrency).await?;
    let elapsed = begin.elapsed();
    let mut latency_us = crate::drive::new_histogram();
    let mut run = KpiRun {
        granularity: granularity.as_str_name().trim_start_matches("GRANULARITY_").to_owned(),
        periods: 0,
        requests,
        answered: 0,
        errors: BTreeMap::new(),
        wrong_answers: 0,
        first_wrong: None,
        elapsed_secs: elapsed.as_secs_f64(),
        throughput_rps: 0.0,
        latency_ms: LatencyMs::default(),
    };
    for tally in tallies {
        latency_us.add(&tally.latency_us).map_err(|e| RunError::Failed(format!("latency histogram: {e:?}")))?;
        run.answered += tally.answered;
        run.wrong_answers += tally.wrong;
        run.first_wrong = run.first_wrong.or(tally.first_wrong);
        run.periods = run.periods.max(tally.periods);
        for (code, n) in tally.errors {
            *run.errors.entry(code).or_default() += n;
        }
    }
    run.throughput_rps = if run.elapsed_secs > 0.0 { run.answered as f64 / run.elapsed_secs } else { 0.0 };
    run.latency_ms = LatencyMs::of(&latency_us);
    Ok(run)
}

/// `count` calls of `request` from `concurrency` clients, each with one in flight.
async fn calls(
    client: &InsightsServiceClient<Channel>,
    request: &ipb::GetProgramKpisRequest,
    expected: Expected,
    count: u64,
    concurrency: usize,
) -> Result<Vec<ClientTally>, RunError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (mut client, request, next) = (client.clone(), request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = ClientTally {
                latency_us: crate::drive::new_histogram(),
                answered: 0,
                errors: BTreeMap::new(),
                wrong: 0,
                first_wrong: None,
                periods: 0,
            };
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = Instant::now();
                let answer = client.get_program_kpis(request.clone()).await;
                let latency_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                match answer {
                    Ok(answer) => {
                        tally.latency_us.saturating_record(latency_us.max(1));
                        tally.answered += 1;
                        let answer = answer.into_inner();
                        tally.periods = answer.periods.len();
                        let differences = expected.differences(&answer);
                        if !differences.is_empty() {
                            tally.wrong += 1;
                            tally.first_wrong.get_or_insert_with(|| differences.join(", "));
                        }
                    }
                    Err(status) => {
                        *tally.errors.entry(format!("{:?}", status.code())).or_default() += 1;
                    }
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.map_err(|e| RunError::Failed(format!("a GetProgramKpis client failed: {e}")))?);
    }
    Ok(tallies)
}

// ------------------------------------------------------------ part 2: catch-up

async fn catch_up(args: &Args, resources: &mut Resources) -> Result<CatchUpReport, RunError> {
    let pool_size = args.database_max_connections.to_string();
    let points_url = resources.database("points").await?;
    let points_addr = resources
        .start::<loyalty_points::PointsServer>(
            "points",
            &["--database-url", &points_url, "--database-max-connections", &pool_size],
        )
        .await?;
    eprintln!("points service in process on {points_addr} (default program settings: 1 point per 1.00)");
    let points = PointsServiceClient::new(channel(points_addr, WRITE_TIMEOUT).await?);
    let (writes, write_errors) = write_orders(&points, args).await?;
    eprintln!("ledger written: {} order earns in {:.1} s ({:.0}/s)", writes.entries, writes.secs, writes.per_sec);

    let ledger = pool(&points_url, 1).await?;
    let settled = settled_ledger(&ledger).await;
    ledger.close().await;
    let (ledger_entries, last_sequence) = settled?;
    if ledger_entries == 0 {
        return Err(RunError::Failed("catch-up: the ledger holds no entry".into()));
    }

    let insights_url = resources.database("follow").await?;
    let cursor_db = pool(&insights_url, 1).await?;
    let followed = async {
        let points_addr = points_addr.to_string();
        let begin = Instant::now();
        let addr = resources
            .start::<loyalty_insights::InsightsServer>(
                "insights",
                &[
                    "--database-url",
                    &insights_url,
                    "--database-max-connections",
                    &pool_size,
                    "--points-addr",
                    &points_addr,
                ],
            )
            .await?;
        let startup = begin.elapsed();
        eprintln!(
            "insights service in process on {addr}, following the ledger ({ledger_entries} entries, last sequence {last_sequence})"
        );
        wait_for_cursor(&cursor_db, last_sequence).await?;
        Ok::<_, RunError>((startup, begin.elapsed()))
    }
    .await;
    cursor_db.close().await;
    let (startup, caught_up) = followed?;
    resources.stop_services().await;
    let consumer = Rate::new(ledger_entries, caught_up);
    eprintln!("caught up: {ledger_entries} entries in {:.1} s ({:.0}/s)", consumer.secs, consumer.per_sec);

    let baseline = insert_baseline(resources, args, ledger_entries).await?;
    eprintln!("baseline: {} rows in {:.1} s ({:.0}/s)", baseline.entries, baseline.secs, baseline.per_sec);
    Ok(CatchUpReport {
        writes,
        write_errors,
        ledger_entries,
        last_sequence,
        consumer_startup_ms: ms(startup),
        consumer,
        baseline,
        baseline_what: format!(
            "one INSERT per row (5 columns, no index) into a plain table, {CONSUMER_BATCH} rows per transaction, \
             one connection"
        ),
        ratio: (baseline.per_sec > 0.0).then(|| consumer.per_sec / baseline.per_sec),
    })
}

/// Order `n` of the catch-up: its customer, order id and amount, the same
/// for the ledger and the baseline.
fn catch_up_order(seed: u64, n: u64, customers: u32) -> (String, String, i64) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(n));
    let customer = rng.u32(0..customers);
    (format!("c{customer:08}"), format!("o{n:010}"), rng.i64(MIN_AMOUNT_MINOR..=MAX_AMOUNT_MINOR))
}

/// `--catch-up-entries` EarnForOrder calls, `--write-concurrency` in flight.
async fn write_orders(
    points: &PointsServiceClient<Channel>,
    args: &Args,
) -> Result<(Rate, BTreeMap<String, u64>), RunError> {
    let begin = Instant::now();
    let mut reported = Instant::now();
    let mut calls =
        futures::stream::iter(0..args.catch_up_entries)
            .map(|n| {
                let mut points = points.clone();
                let (customer_id, order_id, amount_minor) = catch_up_order(args.seed, n, args.catch_up_customers);
                let request = ppb::EarnForOrderRequest {
                    program_id: PROGRAM.to_owned(),
                    customer_id,
                    order_id,
                    amount_minor,
                    currency: "EUR".to_owned(),
                    occurred_at: None,
                };
                async move {
                    points.earn_for_order(request).await.map(drop).map_err(|status| format!("{:?}", status.code()))
                }
            })
            .buffer_unordered(args.write_concurrency);
    let (mut ok, mut errors) = (0_i64, BTreeMap::<String, u64>::new());
    while let Some(written) = calls.next().await {
        match written {
            Ok(()) => ok += 1,
            Err(code) => *errors.entry(code).or_default() += 1,
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            eprintln!(
                "writing the ledger: {ok} of {} order earns, {} failed, {:.0} s",
                args.catch_up_entries,
                errors.values().sum::<u64>(),
                begin.elapsed().as_secs_f64()
            );
        }
    }
    if ok == 0 {
        return Err(RunError::Failed(format!("catch-up: no EarnForOrder call succeeded: {errors:?}")));
    }
    Ok((Rate::new(ok, begin.elapsed()), errors))
}

/// Waits until every ledger entry has its stream position (their batches are
/// numbered just after commit); returns how many entries there are and the last position.
async fn settled_ledger(ledger: &PgPool) -> Result<(i64, i64), RunError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (entries, numbered, last): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM ledger_entries), \
                 (SELECT COALESCE(SUM(entries), 0) FROM ledger_batches WHERE last_seq IS NOT NULL), \
                 (SELECT COALESCE(MAX(last_seq), 0) FROM ledger_batches)",
        )
        .fetch_one(ledger)
        .await
        .map_err(|e| RunError::Failed(format!("reading the points ledger: {e}")))?;
        if entries == numbered {
            return Ok((entries, last));
        }
        if Instant::now() > deadline {
            return Err(RunError::Failed(format!("{} ledger entries still unnumbered after 60 s", entries - numbered)));
        }
        tokio::time::sleep(CURSOR_POLL).await;
    }
}

/// Polls the insights database until the consumer's cursor reaches `last_sequence`.
async fn wait_for_cursor(insights: &PgPool, last_sequence: i64) -> Result<(), RunError> {
    let (begin, mut reported, mut moved) = (Instant::now(), Instant::now(), Instant::now());
    let mut cursor = 0;
    loop {
        let now: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM consumer_cursors WHERE consumer = $1")
            .bind(CONSUMER)
            .fetch_optional(insights)
            .await
            .map_err(|e| RunError::Failed(format!("reading the consumer's cursor: {e}")))?;
        let now = now.unwrap_or(0);
        if now >= last_sequence {
            return Ok(());
        }
        if now != cursor {
            cursor = now;
            moved = Instant::now();
        } else if moved.elapsed() > STALL {
            return Err(RunError::Failed(format!(
                "the insights consumer stalled at sequence {cursor} of {last_sequence} ({} s without progress)",
                STALL.as_secs()
            )));
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            let secs = begin.elapsed().as_secs_f64();
            eprintln!(
                "catching up: cursor {cursor} of {last_sequence}, {secs:.0} s, {:.0} entries/s",
                cursor as f64 / secs
            );
        }
        tokio::time::sleep(CURSOR_POLL).await;
    }
}

/// The raw floor: `rows` catch-up orders INSERTed one statement per row,
/// [`CONSUMER_BATCH`] rows per transaction, on one connection (the consumer
/// applies its batches one after the other too), into a plain table.
async fn insert_baseline(resources: &mut Resources, args: &Args, rows: i64) -> Result<Rate, RunError> {
    let url = resources.database("baseline").await?;
    let db = pool(&url, 1).await?;
    let inserted = async {
        db.execute(
            "CREATE TABLE scratch_orders (program_id TEXT NOT NULL, customer_id TEXT NOT NULL, \
             order_id TEXT NOT NULL, amount_minor BIGINT NOT NULL, occurred_at_us BIGINT NOT NULL)",
        )
        .await?;
        let total = u64::try_from(rows).unwrap_or(0);
        let begin = Instant::now();
        let mut reported = Instant::now();
        let mut n = 0;
        while n < total {
            let mut tx = db.begin().await?;
            let end = (n + CONSUMER_BATCH as u64).min(total);
            let at = SystemClock.now();
            for i in n..end {
                let (customer_id, order_id, amount_minor) = catch_up_order(args.seed, i, args.catch_up_customers);
                sqlx::query(
                    "INSERT INTO scratch_orders (program_id, customer_id, order_id, amount_minor, occurred_at_us) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(PROGRAM)
                .bind(customer_id)
                .bind(order_id)
                .bind(amount_minor)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            n = end;
            if reported.elapsed() >= Duration::from_secs(1) {
                reported = Instant::now();
                eprintln!("baseline: {n} of {total} rows, {:.0} s", begin.elapsed().as_secs_f64());
            }
        }
        Ok::<_, sqlx::Error>(Rate::new(rows, begin.elapsed()))
    }
    .await;
    db.close().await;
    inserted.map_err(|e| RunError::Failed(format!("insert baseline: {e}")))
}

// ------------------------------------------------------------ report

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `YYYY-MM-DD` of a UTC instant.
fn date(at: Micros) -> String {
    let (year, month, day) = civil_from_days(at.div_euclid(MICROS_PER_DAY));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `postgres://user:secret@host/db` → `postgres://host/db`.
pub(crate) fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let m = &self.machine;
        writeln!(f, "\n# loadgen-insights\n")?;
        writeln!(
            f,
            "PostgreSQL {} (throwaway databases), machine: {} CPU(s), {}, {} MB RAM, seed {}.\n",
            s.server,
            m.cpus,
            m.cpu_model,
            m.memory_total_mb.unwrap_or(0),
            s.seed
        )?;
        if let Some(kpis) = &self.kpis {
            write_kpis(f, kpis, s)?;
        }
        if let Some(catch_up) = &self.catch_up {
            write_catch_up(f, catch_up, s)?;
        }
        writeln!(f, "## Correctness\n")?;
        if self.failures.is_empty() {
            writeln!(f, "OK: every answer's totals matched the seeded data; no call failed.")
        } else {
            for failure in &self.failures {
                writeln!(f, "- FAILED: {failure}")?;
            }
            Ok(())
        }
    }
}

fn write_kpis(f: &mut fmt::Formatter<'_>, kpis: &KpiReport, s: &ReportSettings) -> fmt::Result {
    let seeding = &kpis.seeding;
    let t = &seeding.totals;
    writeln!(f, "## GetProgramKpis over a bulk-seeded program\n")?;
    writeln!(
        f,
        "Program `{}`: {} customers, {} ledger entries ({} order earns, {} refunds, {} other earns, spends and \
         expiries) from {} to {} ({} days). Insights service in process, started in {:.1} ms.\n",
        kpis.program,
        t.customers,
        t.ledger_entries,
        t.orders,
        t.refunds,
        t.other_entries,
        kpis.first_day,
        kpis.last_day,
        s.days,
        kpis.startup_ms
    )?;
    writeln!(f, "| table | rows | size (with indexes) |")?;
    writeln!(f, "|---|---:|---:|")?;
    for table in &seeding.tables {
        writeln!(f, "| {} | {} | {} |", table.table, table.rows, mb(table.bytes))?;
    }
    writeln!(
        f,
        "\nGenerated and copied (COPY FROM STDIN, five tables at once, then the sums) in {:.1} s; {} in {:.1} s.\n",
        seeding.copy_secs, seeding.analyze, seeding.analyze_secs
    )?;
    writeln!(
        f,
        "Whole range, {} clients with one call in flight each, after {} unmeasured calls per granularity:\n",
        s.concurrency, s.warmup_requests
    )?;
    writeln!(
        f,
        "| granularity | periods | calls | req/s | p50 ms | p90 ms | p99 ms | max ms | mean ms | errors | wrong |"
    )?;
    writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for run in &kpis.runs {
        let l = &run.latency_ms;
        writeln!(
            f,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            run.granularity,
            run.periods,
            run.answered,
            run.throughput_rps,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.mean,
            run.errors.values().sum::<u64>(),
            run.wrong_answers
        )?;
    }
    let day_p99 = kpis.runs.first().map_or(0.0, |run| run.latency_ms.p99);
    writeln!(
        f,
        "\nTarget p99 < {:.0} ms at DAY granularity: **{}** (p99 {day_p99:.2} ms).\n",
        kpis.target_p99_ms,
        if kpis.target_met { "met" } else { "NOT met" }
    )
}

fn write_catch_up(f: &mut fmt::Formatter<'_>, c: &CatchUpReport, s: &ReportSettings) -> fmt::Result {
    writeln!(f, "## The ledger consumer's catch-up\n")?;
    writeln!(
        f,
        "Points service in process; {} order earns over {} customers written first, then an insights service \
         started on an empty database, following the ledger from the start ({} entries, last sequence {}). \
         Its start-up ({:.1} ms) counts in its time.\n",
        s.catch_up_entries, s.catch_up_customers, c.ledger_entries, c.last_sequence, c.consumer_startup_ms
    )?;
    writeln!(f, "| what | entries | seconds | entries/s |")?;
    writeln!(f, "|---|---:|---:|---:|")?;
    fn row(f: &mut fmt::Formatter<'_>, what: &str, rate: &Rate) -> fmt::Result {
        writeln!(f, "| {what} | {} | {:.1} | {:.0} |", rate.entries, rate.secs, rate.per_sec)
    }
    row(f, &format!("EarnForOrder over gRPC, {} in flight (writing the ledger)", s.write_concurrency), &c.writes)?;
    row(f, "insights consumer: start to cursor = last sequence", &c.consumer)?;
    row(f, &format!("baseline: {}", c.baseline_what), &c.baseline)?;
    match c.ratio {
        Some(ratio) => writeln!(f, "\nconsumer / baseline: **{ratio:.2}x**\n"),
        None => writeln!(f, "\nconsumer / baseline: not measured\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(customers: u32, entries: u64, days: u32) -> Shape {
        let now = 1_750_000_000_000_000 + 12 * 3_600_000_000;
        let today = day_of(now);
        Shape {
            customers,
            entries,
            days,
            now,
            today,
            first_day: today - i64::from(days - 1) * MICROS_PER_DAY,
            orders_per_customer: (entries / 2) as f64 / f64::from(customers),
            settings: Settings::default(),
        }
    }

    #[test]
    fn orders_average_about_half_the_entries_per_customer() {
        let mut rng = fastrand::Rng::with_seed(3);
        let n = 100_000;
        let total: usize = (0..n).map(|_| order_count(&mut rng, 5.0)).sum();
        let mean = total as f64 / f64::from(n);
        assert!((4.9..5.1).contains(&mean), "{mean}");
        assert_eq!(order_count(&mut rng, 0.5), 1);
    }

    #[test]
    fn customers_add_up_the_way_the_consumer_counts_them() {
        let shape = shape(2_000, 20_000, 365);
        let mut rng = fastrand::Rng::with_seed(9);
        let mut sums = Aggregates::default();
        let mut drafts = Vec::new();
        for _ in 0..shape.customers {
            draw_orders(&mut rng, &shape, &mut drafts);
            assert!(drafts.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(drafts.iter().all(|o| o.at >= shape.first_day && o.at < shape.now));
            assert!(drafts.iter().filter_map(|o| o.refunded_at).all(|r| r < shape.now));
            let mut days: Vec<Micros> = drafts.iter().map(|o| day_of(o.at)).collect();
            days.dedup();
            sums.add_customer(&drafts, &days, shape.settings.churned_days);
        }
        sums.add_other_entries(&shape);
        let t = sums.totals;
        assert_eq!(t.customers, 2_000);
        assert_eq!(t.ledger_entries, 20_000);
        let days: Vec<&KpiDay> = sums.days.values().collect();
        assert_eq!(days.iter().map(|d| d.orders).sum::<i64>(), t.orders);
        assert_eq!(days.iter().map(|d| d.first_buyers).sum::<i64>(), t.customers);
        assert_eq!(days.iter().map(|d| d.new_members).sum::<i64>(), t.customers);
        // Every customer churns once more than they are reactivated.
        let churned: i64 = days.iter().map(|d| d.churned).sum();
        let reactivated: i64 = days.iter().map(|d| d.reactivated).sum();
        assert_eq!(churned - reactivated, t.customers);
        // One gap row per (customer, day) ordered; the first days (previous i64::MIN) are the customers.
        assert_eq!(sums.gaps.values().sum::<i64>(), t.buyer_days);
        let firsts: i64 = sums.gaps.iter().filter(|((_, previous), _)| *previous == i64::MIN).map(|(_, n)| n).sum();
        assert_eq!(firsts, t.customers);
        // Active in the whole range: the rows whose previous day is before it.
        let active: i64 =
            sums.gaps.iter().filter(|((_, previous), _)| *previous < shape.first_day).map(|(_, n)| n).sum();
        assert_eq!(active, t.customers);
        // Cohort sizes (their own month) are the customers.
        let cohort_sizes: i64 =
            sums.cohorts.iter().filter(|((cohort, month), _)| cohort == month).map(|(_, n)| n).sum();
        assert_eq!(cohort_sizes, t.customers);
    }

    #[test]
    fn catch_up_orders_are_the_same_for_the_ledger_and_the_baseline() {
        assert_eq!(catch_up_order(1, 42, 20_000), catch_up_order(1, 42, 20_000));
        assert_ne!(catch_up_order(1, 42, 20_000).1, catch_up_order(1, 43, 20_000).1);
    }

    #[test]
    fn dates_and_nulls_print_as_postgres_reads_them() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(Nullable(None).to_string(), "\\N");
        assert_eq!(Nullable(Some(-5)).to_string(), "-5");
    }
}
