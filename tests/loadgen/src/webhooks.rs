//! `loadgen-webhooks`: the webhooks service's deliveries against a receiver
//! in this process, on PostgreSQL, in two parts. `src/bin/loadgen-webhooks.rs`
//! only parses the arguments, calls [`run`] and prints the [`Report`].
//!
//! - **Throughput.** The webhooks service starts in this process on a
//!   throwaway database, with `--subscriptions` subscriptions of one program
//!   to a receiver on loopback that answers 204 at once. `--events` events
//!   are recorded through the service's own store (as its ledger follower
//!   records them: one transaction per batch, one delivery per
//!   subscription), and the run times them until the receiver has every
//!   delivery and the database says every one delivered. The baseline, in
//!   the same run: the same number of POSTs of the same bodies straight to
//!   the receiver from one HTTP client with as many in flight as the
//!   service may have (`--max-in-flight`).
//! - **Outage.** A second database and service; the receiver answers 503
//!   for `--down-secs` while `--outage-events` events for `--customers`
//!   customers are recorded, to an ordered subscription and an unordered
//!   one; then it answers 204. Every event must arrive afterwards, at least
//!   once to each, and the ordered subscription's first deliveries of each
//!   customer must come in the order the events were recorded.
//!
//! Every database the run creates (`loadgen_webhooks_<run>_<part>`) is
//! dropped at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;

use loyalty_common::clock::{Clock, SystemClock};
use loyalty_common::telemetry::TelemetryArgs;
use loyalty_proto::webhooks::v1 as wpb;
use loyalty_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use loyalty_webhooks::WebhooksServer;
use loyalty_webhooks::store::{NewEvent, WebhooksStore};

use crate::RunError;
use crate::insights::{Resources, channel, without_credentials};
use crate::system::Machine;

const PROGRAM: &str = "bench";
/// Events recorded per transaction, as the ledger follower's batches at most.
const RECORD_BATCH: usize = 256;

/// Every setting, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "loadgen-webhooks",
    version,
    about = "The webhooks service's deliveries against a receiver in this process, on PostgreSQL: \
             throughput next to plain POSTs, and every event delivered, in order, after a receiver outage.",
    long_about = "The webhooks service on PostgreSQL, in two parts (both by default, see --only).\n\n\
                  throughput: starts the webhooks service in this process on a throwaway database with \
                  --subscriptions subscriptions to a receiver on loopback (204 at once), records --events \
                  events through the service's store in batches of 256, and times them until every delivery \
                  reached the receiver and is marked delivered. The baseline POSTs the same bodies straight to \
                  the receiver, --max-in-flight at a time.\n\n\
                  outage: a second service; the receiver answers 503 for --down-secs while --outage-events \
                  events for --customers customers are recorded to an ordered and an unordered subscription; \
                  then 204. Every event must arrive at least once to each, and each customer's events must \
                  reach the ordered subscription in order.\n\n\
                  Databases are created on --database-url's server and dropped at the end. Exit code: 0, 1 \
                  when a check failed or the run could not be done, 2 for bad arguments."
)]
pub struct Args {
    /// PostgreSQL server to work on, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    #[arg(long, env = "LOADGEN_WEBHOOKS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// `throughput` or `outage`; both when absent.
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// Events recorded in the throughput part.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Subscriptions of the program in the throughput part (each event is one delivery to each).
    #[arg(long, default_value_t = 2)]
    pub subscriptions: u32,
    /// The service's WEBHOOKS_MAX_IN_FLIGHT, and the baseline's requests in flight.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: u32,
    /// The service's WEBHOOKS_ENDPOINT_CONCURRENCY (per subscription).
    #[arg(long, default_value_t = 128)]
    pub endpoint_concurrency: u32,
    /// How long the receiver answers 503 in the outage part, in seconds.
    #[arg(long, default_value_t = 600)]
    pub down_secs: u64,
    /// Events recorded while the receiver is down.
    #[arg(long, default_value_t = 2_000)]
    pub outage_events: u64,
    /// Customers the outage's events spread over.
    #[arg(long, default_value_t = 50)]
    pub customers: u32,
    /// Pool size of the service.
    #[arg(long, default_value_t = 16)]
    pub database_max_connections: u32,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Throughput,
    Outage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub server: String,
    pub throughput: Option<ThroughputReport>,
    pub outage: Option<OutageReport>,
    /// Checks that failed. Empty: the run is good.
    pub failures: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub events: u64,
    pub subscriptions: u32,
    pub deliveries: u64,
    pub max_in_flight: u32,
    pub endpoint_concurrency: u32,
    /// Recording every event (and its deliveries) took this long.
    pub record_secs: f64,
    /// From the first event recorded to the last delivery received.
    pub received_secs: f64,
    /// ... and to every delivery marked delivered in the database.
    pub settled_secs: f64,
    pub deliveries_per_sec: f64,
    /// Plain POSTs of the same bodies, per second.
    pub baseline_per_sec: f64,
    /// `deliveries_per_sec / baseline_per_sec`.
    pub ratio: f64,
    /// Deliveries the receiver got more than once (at least once allows them; none expected here).
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    pub down_secs: u64,
    pub events: u64,
    pub customers: u32,
    /// Refused attempts while the receiver was down.
    pub refused: u64,
    /// From the receiver's recovery to every event at both subscriptions.
    pub drained_secs: f64,
    pub delivered_unordered: u64,
    pub delivered_ordered: u64,
    /// Customers whose events reached the ordered subscription out of order.
    pub out_of_order_customers: u64,
}

// ------------------------------------------------------------ the receiver

/// What one subscription's path received.
#[derive(Default)]
struct PathTally {
    /// Accepted deliveries, by webhook-id.
    accepted: HashMap<String, u64>,
    /// Per customer, the `n` of each first accepted delivery, in arrival order.
    firsts: HashMap<String, Vec<u64>>,
}

#[derive(Default)]
struct Tally {
    paths: HashMap<String, PathTally>,
    refused: u64,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
}

impl Receiver {
    async fn start() -> Result<Self, RunError> {
        let up = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicU64::new(0));
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let (up2, accepted2, tally2) = (up.clone(), accepted.clone(), tally.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (up, accepted, tally) = (up2.clone(), accepted2.clone(), tally2.clone());
                async move {
                    if !up.load(Ordering::SeqCst) {
                        tally.lock().expect("never poisoned").refused += 1;
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let customer = value["data"]["customer_id"].as_str().unwrap_or("").to_owned();
                    let n = value["data"]["n"].as_u64().unwrap_or(0);
                    let mut tally = tally.lock().expect("never poisoned");
                    let path = tally.paths.entry(uri.path().to_owned()).or_default();
                    let count = path.accepted.entry(id).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        path.firsts.entry(customer).or_default().push(n);
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RunError::Failed(format!("cannot bind the receiver: {e}")))?;
        let addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, up, accepted, tally })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Distinct deliveries accepted at `path`.
    fn distinct(&self, path: &str) -> u64 {
        let tally = self.tally.lock().expect("never poisoned");
        tally.paths.get(path).map_or(0, |p| p.accepted.len() as u64)
    }
}

// ------------------------------------------------------------ the run

pub async fn run(args: Args) -> Result<Report, RunError> {
    if !args.database_url.starts_with("postgres") {
        return Err(RunError::Usage("--database-url must be a PostgreSQL URL (postgres://...)".into()));
    }
    if args.events == 0 || args.subscriptions == 0 || args.customers == 0 || args.outage_events == 0 {
        return Err(RunError::Usage("--events, --subscriptions, --customers and --outage-events must be > 0".into()));
    }
    let machine = Machine::read();
    let mut resources = Resources::new("loadgen_webhooks", &args.database_url);
    let mut failures = Vec::new();
    let outcome = async {
        let resources = &mut resources;
        let throughput = match args.only {
            Some(Part::Outage) => None,
            _ => Some(throughput(&args, resources, &mut failures).await?),
        };
        let outage = match args.only {
            Some(Part::Throughput) => None,
            _ => Some(outage(&args, resources, &mut failures).await?),
        };
        Ok::<_, RunError>((throughput, outage))
    }
    .await;
    resources.release().await;
    let (throughput, outage) = outcome?;
    Ok(Report { machine, server: without_credentials(&args.database_url), throughput, outage, failures })
}

/// Starts a webhooks service on a fresh database; returns its store and a client.
async fn service(
    args: &Args,
    resources: &mut Resources,
    part: &str,
    schedule: &str,
) -> Result<(WebhooksStore, WebhooksServiceClient<tonic::transport::Channel>), RunError> {
    let url = resources.database(part).await?;
    let (in_flight, per_endpoint, pool) = (
        args.max_in_flight.to_string(),
        args.endpoint_concurrency.to_string(),
        args.database_max_connections.to_string(),
    );
    let flags = [
        "--database-url",
        &url,
        "--database-max-connections",
        &pool,
        "--allow-http",
        "--allowed-networks",
        "127.0.0.0/8",
        "--poll-interval-ms",
        "20",
        "--max-in-flight",
        &in_flight,
        "--endpoint-concurrency",
        &per_endpoint,
        "--retry-schedule",
        schedule,
        "--timeout-ms",
        "5000",
        "--lease-secs",
        "60",
    ];
    let addr = resources.start::<WebhooksServer>("webhooks", &flags).await?;
    let client = WebhooksServiceClient::new(channel(addr, Duration::from_secs(30)).await?);
    let database = loyalty_common::db::connect(&url, loyalty_common::db::PoolSettings::new(4, 30_000))
        .await
        .map_err(|e| RunError::Failed(format!("cannot connect to {part}'s database: {e}")))?;
    Ok((WebhooksStore::new(database, Arc::new(SystemClock)), client))
}

async fn subscribe(
    client: &mut WebhooksServiceClient<tonic::transport::Channel>,
    url: String,
    ordered: bool,
) -> Result<(), RunError> {
    let request = wpb::CreateSubscriptionRequest {
        program_id: PROGRAM.into(),
        idempotency_key: url.clone(),
        url,
        event_types: vec!["points.earned".into()],
        description: "loadgen".into(),
        ordered,
        disabled: false,
    };
    client.create_subscription(request).await.map_err(|e| RunError::Failed(format!("CreateSubscription: {e}")))?;
    Ok(())
}

fn event(n: u64, customer: String, per_customer: u64) -> NewEvent {
    NewEvent {
        program_id: PROGRAM.into(),
        event_type: "points.earned",
        customer_id: customer.clone(),
        source: "loadgen",
        source_position: n.to_string(),
        occurred_at: SystemClock.now(),
        data: serde_json::json!({
            "customer_id": customer,
            "transaction_id": format!("tx-{n}"),
            "amount": 100,
            "points": 100,
            "pending_points": 0,
            "reason": "loadgen",
            "n": per_customer,
        }),
    }
}

/// Records `events` in transactions of [`RECORD_BATCH`].
async fn record(store: &WebhooksStore, events: &[NewEvent]) -> Result<(), RunError> {
    let fail = |e: &dyn fmt::Display| RunError::Failed(format!("recording events: {e}"));
    for chunk in events.chunks(RECORD_BATCH) {
        let mut tx = store.database().pool.begin().await.map_err(|e| fail(&e))?;
        let refs: Vec<&NewEvent> = chunk.iter().collect();
        WebhooksStore::record(&mut tx, &refs, None, SystemClock.now()).await.map_err(|e| fail(&e))?;
        tx.commit().await.map_err(|e| fail(&e))?;
    }
    Ok(())
}

async fn delivered_in_database(store: &WebhooksStore) -> Result<i64, RunError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
        .fetch_one(&store.database().pool)
        .await
        .map_err(|e| RunError::Failed(format!("counting deliveries: {e}")))
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> Result<bool, RunError>,
) -> Result<(), RunError> {
    let started = Instant::now();
    while !done().await? {
        if started.elapsed() > limit {
            return Err(RunError::Failed(format!("{what} did not happen within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn throughput(
    args: &Args,
    resources: &mut Resources,
    failures: &mut Vec<String>,
) -> Result<ThroughputReport, RunError> {
    let receiver = Receiver::start().await?;
    let (store, mut client) = service(args, resources, "throughput", "1s,5s,30s").await?;
    for i in 0..args.subscriptions {
        subscribe(&mut client, receiver.url(&format!("/s{i}")), false).await?;
    }
    let events: Vec<NewEvent> = (0..args.events).map(|n| event(n, format!("c{}", n % 1_000), n)).collect();
    let deliveries = args.events * u64::from(args.subscriptions);
    let started = Instant::now();
    record(&store, &events).await?;
    let record_secs = started.elapsed().as_secs_f64();
    let limit = Duration::from_secs(600);
    wait_until("every delivery received", limit, async || Ok(receiver.accepted.load(Ordering::Relaxed) >= deliveries))
        .await?;
    let received_secs = started.elapsed().as_secs_f64();
    wait_until("every delivery marked delivered", limit, async || {
        Ok(delivered_in_database(&store).await? as u64 >= deliveries)
    })
    .await?;
    let settled_secs = started.elapsed().as_secs_f64();
    let distinct: u64 = (0..args.subscriptions).map(|i| receiver.distinct(&format!("/s{i}"))).sum();
    let duplicates = receiver.accepted.load(Ordering::Relaxed) - distinct;
    if distinct != deliveries {
        failures.push(format!("throughput: {distinct} distinct deliveries received of {deliveries}"));
    }

    // The baseline: the same bodies POSTed straight to the receiver.
    let baseline_receiver = Receiver::start().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight as usize)
        .build()
        .map_err(|e| RunError::Failed(e.to_string()))?;
    let bodies: Arc<Vec<String>> = Arc::new(
        events.iter().map(|e| serde_json::json!({"type": e.event_type, "data": e.data}).to_string()).collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let baseline_started = Instant::now();
    let workers: Vec<_> = (0..args.max_in_flight)
        .map(|_| {
            let (http, bodies, next) = (http.clone(), bodies.clone(), next.clone());
            let url = baseline_receiver.url("/baseline");
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= deliveries {
                        return;
                    }
                    let body = bodies[(i % bodies.len() as u64) as usize].clone();
                    let request = http.post(&url).header("webhook-id", format!("b{i}")).body(body);
                    let _ = request.send().await;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let baseline_secs = baseline_started.elapsed().as_secs_f64();
    let deliveries_per_sec = deliveries as f64 / received_secs;
    let baseline_per_sec = deliveries as f64 / baseline_secs;
    Ok(ThroughputReport {
        events: args.events,
        subscriptions: args.subscriptions,
        deliveries,
        max_in_flight: args.max_in_flight,
        endpoint_concurrency: args.endpoint_concurrency,
        record_secs,
        received_secs,
        settled_secs,
        deliveries_per_sec,
        baseline_per_sec,
        ratio: deliveries_per_sec / baseline_per_sec,
        duplicates,
    })
}

async fn outage(args: &Args, resources: &mut Resources, failures: &mut Vec<String>) -> Result<OutageReport, RunError> {
    let receiver = Receiver::start().await?;
    // Retries every 30 s at most, so recovery is seen within half a minute.
    let schedule = format!("1s,2s,5s,10s,20s{}", ",30s".repeat((args.down_secs / 30 + 10) as usize));
    let (store, mut client) = service(args, resources, "outage", &schedule).await?;
    subscribe(&mut client, receiver.url("/ordered"), true).await?;
    subscribe(&mut client, receiver.url("/unordered"), false).await?;
    receiver.up.store(false, Ordering::SeqCst);
    let down_started = Instant::now();
    // The events arrive over the first half of the outage, in small batches.
    let mut per_customer: HashMap<u32, u64> = HashMap::new();
    let events: Vec<NewEvent> = (0..args.outage_events)
        .map(|n| {
            let customer = (n % u64::from(args.customers)) as u32;
            let k = per_customer.entry(customer).or_insert(0);
            *k += 1;
            event(n, format!("c{customer}"), *k)
        })
        .collect();
    let batches: Vec<&[NewEvent]> = events.chunks(20).collect();
    let spread = Duration::from_secs(args.down_secs) / 2 / batches.len().max(1) as u32;
    for batch in batches {
        record(&store, batch).await?;
        tokio::time::sleep(spread).await;
    }
    let rest = Duration::from_secs(args.down_secs).saturating_sub(down_started.elapsed());
    tokio::time::sleep(rest).await;
    let refused = receiver.tally.lock().expect("never poisoned").refused;
    receiver.up.store(true, Ordering::SeqCst);
    let recovered = Instant::now();
    let want = args.outage_events;
    wait_until("every event at both subscriptions after the outage", Duration::from_secs(300), async || {
        Ok(receiver.distinct("/ordered") >= want && receiver.distinct("/unordered") >= want)
    })
    .await?;
    let drained_secs = recovered.elapsed().as_secs_f64();
    let (delivered_ordered, delivered_unordered) = (receiver.distinct("/ordered"), receiver.distinct("/unordered"));
    let out_of_order_customers = {
        let tally = receiver.tally.lock().expect("never poisoned");
        let firsts: BTreeMap<&String, &Vec<u64>> =
            tally.paths.get("/ordered").map(|p| p.firsts.iter().collect()).unwrap_or_default();
        firsts.values().filter(|ns| ns.windows(2).any(|w| w[0] >= w[1])).count() as u64
    };
    if delivered_ordered != want || delivered_unordered != want {
        failures.push(format!(
            "outage: {delivered_ordered} (ordered) and {delivered_unordered} (unordered) of {want} events delivered"
        ));
    }
    if out_of_order_customers > 0 {
        failures.push(format!("outage: {out_of_order_customers} customer(s) got their events out of order"));
    }
    Ok(OutageReport {
        down_secs: args.down_secs,
        events: want,
        customers: args.customers,
        refused,
        drained_secs,
        delivered_unordered,
        delivered_ordered,
        out_of_order_customers,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.machine;
        writeln!(f, "\n# loadgen-webhooks\n")?;
        writeln!(
            f,
            "PostgreSQL {} (throwaway databases), machine: {} CPU(s), {}, {} MB RAM.\n",
            self.server,
            m.cpus,
            m.cpu_model,
            m.memory_total_mb.unwrap_or(0)
        )?;
        if let Some(t) = &self.throughput {
            writeln!(f, "## Throughput\n")?;
            writeln!(
                f,
                "{} events x {} subscriptions = {} deliveries, {} in flight at most ({} per endpoint).\n",
                t.events, t.subscriptions, t.deliveries, t.max_in_flight, t.endpoint_concurrency
            )?;
            writeln!(f, "| | seconds | per second |\n|---|---:|---:|")?;
            writeln!(f, "| events recorded | {:.2} | {:.0} |", t.record_secs, t.events as f64 / t.record_secs)?;
            writeln!(f, "| deliveries received | {:.2} | {:.0} |", t.received_secs, t.deliveries_per_sec)?;
            writeln!(
                f,
                "| deliveries marked delivered | {:.2} | {:.0} |",
                t.settled_secs,
                t.deliveries as f64 / t.settled_secs
            )?;
            writeln!(f, "| baseline: plain POSTs | | {:.0} |", t.baseline_per_sec)?;
            writeln!(f, "\nRatio to the baseline: {:.2}x; duplicates: {}.\n", t.ratio, t.duplicates)?;
        }
        if let Some(o) = &self.outage {
            writeln!(f, "## Outage\n")?;
            writeln!(
                f,
                "Receiver down {} s while {} events for {} customers were recorded: {} attempts refused. \
                 After it came back, every event reached both subscriptions in {:.1} s (ordered: {}, unordered: {}); \
                 customers out of order at the ordered subscription: {}.\n",
                o.down_secs,
                o.events,
                o.customers,
                o.refused,
                o.drained_secs,
                o.delivered_ordered,
                o.delivered_unordered,
                o.out_of_order_customers
            )?;
        }
        writeln!(f, "## Correctness\n")?;
        if self.failures.is_empty() {
            writeln!(f, "OK: every event delivered to every subscription, in order where asked.")
        } else {
            for failure in &self.failures {
                writeln!(f, "- FAILED: {failure}")?;
            }
            Ok(())
        }
    }
}
