//! Baselines measured in the same run, on the same machine, with the same
//! concurrency, duration and request mix as the scenario:
//! - `tonic`: a bare tonic server in this process whose GetBalance answers a
//!   constant: what the same client gets from gRPC alone;
//! - `redis`: raw GET / INCRBY on one multiplexed connection (the service's
//!   own Redis client model);
//! - `postgres`: the ledger's minimal write (single-row UPDATE + INSERT in a
//!   transaction), a conditional single-row UPDATE transaction per spend
//!   (one hot row in spend-contended), a primary-key SELECT per read, in a
//!   throwaway database, with the service's pool size.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use loyalty_proto::points::v1 as pb;

use crate::client::{Channels, Expected, ServiceWorker, StartedService};
use crate::drive::{self, Answer, Phase, PhaseResult, Worker};
use crate::workload::{EARN_POINTS, OpKind, REWARD_COST, SPEND_POINTS, Workload};
use crate::{Args, BaselineKind, Plan, RunError, Scenario, failed};
use loyalty_common::auth::AuthMode;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Balance every baseline row starts with: spends never run out.
const ROW_BALANCE: i64 = 1_000_000_000;

/// The smallest `loyalty.points.v1.PointsService` server: GetBalance answers
/// a constant, every other method is UNIMPLEMENTED. Written against tonic's
/// server codegen API rather than the generated trait, so that it keeps
/// compiling as the service grows new RPCs; it does what the generated
/// router does for one unary method.
#[derive(Clone)]
struct ConstantBalance;

const GET_BALANCE_PATH: &str = "/loyalty.points.v1.PointsService/GetBalance";

impl NamedService for ConstantBalance {
    const NAME: &'static str = "loyalty.points.v1.PointsService";
}

impl<B> Service<http::Request<B>> for ConstantBalance
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == GET_BALANCE_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(GetBalance, request).await)
            })
        } else {
            Box::pin(async { Ok(Status::unimplemented("bare baseline").into_http()) })
        }
    }
}

struct GetBalance;

impl UnaryService<pb::GetBalanceRequest> for GetBalance {
    type Response = pb::GetBalanceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, _: Request<pb::GetBalanceRequest>) -> Self::Future {
        Box::pin(async {
            Ok(Response::new(pb::GetBalanceResponse {
                balance: Some(pb::Balance {
                    available: 1_000,
                    lifetime_earned: 1_000,
                    version: 1,
                    ..pb::Balance::default()
                }),
            }))
        })
    }
}

/// What a baseline is, for the report.
pub fn describe(kind: BaselineKind) -> (&'static str, &'static str) {
    match kind {
        BaselineKind::Tonic => {
            ("tonic", "bare tonic server in this process, GetBalance answered with a constant, same client settings")
        }
        BaselineKind::Redis => {
            ("redis", "raw Redis on one multiplexed connection: GET per read or page, INCRBY per earn/spend/redeem")
        }
        BaselineKind::Postgres => (
            "postgres",
            "raw PostgreSQL, same pool size: UPDATE + INSERT transaction per earn or redeem, \
             conditional single-row UPDATE transaction per spend, SELECT per read or page",
        ),
        BaselineKind::BalanceRead => (
            "balance-read",
            "the balance-read scenario on the same service, same run (its peak, closed loop unless --rate)",
        ),
        BaselineKind::AuthOff => (
            "auth-off",
            "the same scenario on a second points service in this process with LOYALTY_AUTH=off, \
             same settings and client (the key still sent, not checked)",
        ),
        BaselineKind::None => ("none", ""),
    }
}

/// A baseline ready to run phases: its clients, and what to tear down after.
pub struct Baseline {
    pub kind: BaselineKind,
    /// Points the balance-read reference seeded on the service's accounts,
    /// for the correctness check.
    pub seeded: HashMap<u32, Expected>,
    workers: Option<Workers>,
    teardown: Teardown,
}

enum Workers {
    Service(Vec<ServiceWorker>),
    Raw(Vec<RawWorker>),
}

enum Teardown {
    Nothing,
    Tonic { stop: oneshot::Sender<()>, server: JoinHandle<Result<(), tonic::transport::Error>> },
    Redis { url: String, prefix: String },
    Postgres { admin: PgPool, pool: PgPool, name: String },
    Service(Box<StartedService>),
}

impl Baseline {
    /// Starts the bare server, or creates and fills the throwaway keys or
    /// database. `service` is the connection to the points service, for the
    /// balance-read reference.
    pub async fn prepare(kind: BaselineKind, plan: &Plan, args: &Args, service: &Channels) -> Result<Self, RunError> {
        match kind {
            BaselineKind::Tonic => tonic(plan).await,
            BaselineKind::Redis => redis(plan, args.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)).await,
            BaselineKind::Postgres => postgres(plan, &args.postgres_url, args.database_max_connections).await,
            BaselineKind::BalanceRead => {
                let reference =
                    Workload { scenario: Scenario::BalanceRead, skew: 1.0, first: 0, ..plan.workload.clone() };
                let seeded = if matches!(plan.scenario, Scenario::BalanceRead | Scenario::Mixed | Scenario::LoyaltyPage)
                {
                    HashMap::new()
                } else {
                    crate::client::seed_hot_set(service, plan, &reference, "reference", 1_000).await?
                };
                Ok(Self {
                    kind,
                    seeded,
                    workers: Some(Workers::Service(ServiceWorker::many(service, plan, reference))),
                    teardown: Teardown::Nothing,
                })
            }
            BaselineKind::AuthOff => auth_off(plan, args).await,
            BaselineKind::None => Err(RunError::Usage("none is not a baseline".into())),
        }
    }

    pub async fn run(&mut self, phase: &Phase) -> PhaseResult {
        match self.workers.take().expect("workers come back after every phase") {
            Workers::Service(workers) => {
                let (workers, result) = drive::run_phase(workers, phase, None).await;
                self.workers = Some(Workers::Service(workers));
                result
            }
            Workers::Raw(workers) => {
                let (workers, result) = drive::run_phase(workers, phase, None).await;
                self.workers = Some(Workers::Raw(workers));
                result
            }
        }
    }

    /// Stops the bare server, deletes the keys, drops the database.
    pub async fn finish(self) -> Result<(), RunError> {
        drop(self.workers);
        match self.teardown {
            Teardown::Nothing => Ok(()),
            Teardown::Tonic { stop, server } => {
                let _ = stop.send(());
                let _ = server.await;
                Ok(())
            }
            Teardown::Redis { url, prefix } => {
                delete_redis_prefix(&url, &prefix).await.map_err(|e| failed("redis baseline clean-up")(e.to_string()))
            }
            Teardown::Postgres { admin, pool, name } => {
                pool.close().await;
                drop_database(admin, &name).await
            }
            Teardown::Service(service) => service.stop().await,
        }
    }
}

/// GetBalance against [`ConstantBalance`] on 127.0.0.1:0, with the client
/// settings and hot-set spread of balance-read. The server socket has
/// TCP_NODELAY like the service's.
async fn tonic(plan: &Plan) -> Result<Baseline, RunError> {
    let fail = |e: std::io::Error| failed("tonic baseline")(e.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_service(ConstantBalance).serve_with_incoming_shutdown(
            incoming,
            async {
                let _ = stopped.await;
            },
        ));
    let channels = match plan.client.connect(&format!("http://{addr}")).await {
        Ok(channels) => channels,
        Err(error) => {
            let _ = stop.send(());
            let _ = server.await;
            return Err(error);
        }
    };
    let workload = Workload { scenario: Scenario::BalanceRead, skew: 1.0, first: 0, ..plan.workload.clone() };
    Ok(Baseline {
        kind: BaselineKind::Tonic,
        seeded: HashMap::new(),
        workers: Some(Workers::Service(ServiceWorker::many(&channels, plan, workload))),
        teardown: Teardown::Tonic { stop, server },
    })
}

/// A second points service with caller checks off, loaded by the same client
/// (key included) on a program of its own, so its accounts never mix with
/// the scenario's even on a shared database.
async fn auth_off(plan: &Plan, args: &Args) -> Result<Baseline, RunError> {
    if !args.start_points {
        return Err(RunError::Usage("the auth-off baseline needs --start-points: it starts a second service".into()));
    }
    let open = Plan { program: format!("{}-open", plan.program), ..plan.clone() };
    let service = StartedService::start(args, AuthMode::Off, &open.program, None).await?;
    let channels = match plan.client.connect(&format!("http://{}", service.addr)).await {
        Ok(channels) => channels,
        Err(error) => {
            service.stop().await?;
            return Err(error);
        }
    };
    crate::client::seed(&channels, &open).await?;
    Ok(Baseline {
        kind: BaselineKind::AuthOff,
        seeded: HashMap::new(),
        workers: Some(Workers::Service(ServiceWorker::many(&channels, &open, open.workload.clone()))),
        teardown: Teardown::Service(Box::new(service)),
    })
}

/// A client of a raw store, drawing the same operations as the scenario.
struct RawWorker {
    store: RawStore,
    workload: Workload,
    rng: fastrand::Rng,
}

#[derive(Clone)]
enum RawStore {
    Redis { conn: RawRedis, prefix: String },
    Postgres(PgPool),
}

/// One server on one multiplexed connection, as the baseline always was; or
/// a cluster (`redis+cluster://`), through the client the service uses.
#[derive(Clone)]
enum RawRedis {
    One(MultiplexedConnection),
    Cluster(loyalty_common::redis::Connection),
}

/// The raw Redis command standing for `kind` on `key`.
async fn raw_redis_op<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    kind: OpKind,
    key: String,
) -> redis::RedisResult<()> {
    match kind {
        OpKind::Read | OpKind::Page => conn.get::<_, Option<i64>>(key).await.map(drop),
        OpKind::Redeem => conn.incr::<_, _, i64>(key, -REWARD_COST).await.map(drop),
        OpKind::Earn | OpKind::Order => conn.incr::<_, _, i64>(key, EARN_POINTS).await.map(drop),
        OpKind::Spend => conn.incr::<_, _, i64>(key, -SPEND_POINTS).await.map(drop),
    }
}

impl RawWorker {
    fn many(store: &RawStore, plan: &Plan) -> Vec<Self> {
        (0..plan.concurrency)
            .map(|i| Self {
                store: store.clone(),
                workload: plan.workload.clone(),
                rng: fastrand::Rng::with_seed(plan.seed.wrapping_add(i as u64)),
            })
            .collect()
    }
}

impl Worker for RawWorker {
    fn op_names(&self) -> [&'static str; OpKind::COUNT] {
        match self.store {
            RawStore::Redis { .. } => ["GET", "INCRBY", "INCRBY -1", "INCRBY -100", "GET", "INCRBY"],
            RawStore::Postgres(_) => [
                "SELECT",
                "UPDATE+INSERT tx",
                "conditional UPDATE tx",
                "UPDATE+INSERT tx",
                "SELECT",
                "UPDATE+INSERT tx",
            ],
        }
    }

    async fn call(&mut self) -> (OpKind, Answer) {
        let op = self.workload.next(&mut self.rng);
        let answer = match &mut self.store {
            RawStore::Redis { conn, prefix } => {
                let key = format!("{prefix}{}", op.account);
                let result = match conn {
                    RawRedis::One(conn) => raw_redis_op(conn, op.kind, key).await,
                    RawRedis::Cluster(conn) => raw_redis_op(conn, op.kind, key).await,
                };
                match result {
                    Ok(()) => Answer::Ok,
                    Err(error) => Answer::Error(format!("redis {:?}", error.kind())),
                }
            }
            RawStore::Postgres(pool) => {
                let id = i64::from(op.account);
                let result = match op.kind {
                    OpKind::Read | OpKind::Page => sqlx::query("SELECT balance FROM accounts WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&*pool)
                        .await
                        .map(drop),
                    // A redemption is a ledger write: the closest raw equivalent.
                    OpKind::Earn | OpKind::Redeem | OpKind::Order => ledger_write(pool, id).await,
                    OpKind::Spend => hot_row_update(pool, id).await,
                };
                match result {
                    Ok(()) => Answer::Ok,
                    Err(error) => Answer::Error(format!("postgres {}", sqlx_kind(&error))),
                }
            }
        };
        (op.kind, answer)
    }
}

async fn ledger_write(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE accounts SET balance = balance + $2, version = version + 1 WHERE id = $1")
        .bind(id)
        .bind(EARN_POINTS)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO entries (account_id, points) VALUES ($1, $2)")
        .bind(id)
        .bind(EARN_POINTS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn hot_row_update(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE accounts SET balance = balance - $2, version = version + 1 \
         WHERE id = $1 AND balance >= $2",
    )
    .bind(id)
    .bind(SPEND_POINTS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn sqlx_kind(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::Database(_) => "database error",
        sqlx::Error::PoolTimedOut => "pool timed out",
        sqlx::Error::Io(_) => "io error",
        _ => "error",
    }
}

async fn redis(plan: &Plan, url: &str) -> Result<Baseline, RunError> {
    let context = format!("redis baseline ({url})");
    let fail = |e: redis::RedisError| RunError::Failed(format!("{context}: {e}"));
    let conn = if loyalty_common::redis::cluster_nodes(url).map_err(fail)?.is_some() {
        RawRedis::Cluster(loyalty_common::redis::connect(url, Duration::from_secs(5)).map_err(fail)?)
    } else {
        RawRedis::One(redis::Client::open(url).map_err(fail)?.get_multiplexed_async_connection().await.map_err(fail)?)
    };
    let prefix = format!("loadgen:{}:baseline:", plan.run_id);
    if !matches!(plan.scenario, Scenario::Earn | Scenario::SpendContended) {
        // Reads find a value, as the service's reads find a cached balance.
        let seeder = loyalty_common::redis::connect(url, Duration::from_secs(5)).map_err(fail)?;
        for chunk in (0..plan.workload.customers).collect::<Vec<_>>().chunks(1_000) {
            let sets = chunk
                .iter()
                .map(|account| {
                    let mut set = redis::cmd("SET");
                    set.arg(format!("{prefix}{account}")).arg(ROW_BALANCE);
                    set
                })
                .collect();
            if let Err(error) = seeder.run_each(sets).await {
                let _ = delete_redis_prefix(url, &prefix).await;
                return Err(fail(error));
            }
        }
    }
    let store = RawStore::Redis { conn, prefix: prefix.clone() };
    Ok(Baseline {
        kind: BaselineKind::Redis,
        seeded: HashMap::new(),
        workers: Some(Workers::Raw(RawWorker::many(&store, plan))),
        teardown: Teardown::Redis { url: url.to_owned(), prefix },
    })
}

/// Deletes every key under `prefix` (on every primary of a cluster).
pub async fn delete_redis_prefix(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let conn = loyalty_common::redis::connect(url, Duration::from_secs(5))?;
    conn.delete_matching(&format!("{prefix}*")).await.map(drop)
}

async fn postgres(plan: &Plan, admin_url: &str, pool_size: u32) -> Result<Baseline, RunError> {
    let fail = |e: sqlx::Error| RunError::Failed(format!("postgres baseline: {e}"));
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(admin_url)
        .await
        .map_err(fail)?;
    let name = format!("loadgen_{}", plan.run_id);
    admin.execute(AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.map_err(fail)?;
    let prepared = async {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(&database_url(admin_url, &name))
            .await?;
        pool.execute(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, version BIGINT NOT NULL DEFAULT 0); \
             CREATE TABLE entries (id BIGSERIAL PRIMARY KEY, account_id BIGINT NOT NULL, points BIGINT NOT NULL, \
                                   created_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
             CREATE INDEX entries_account ON entries (account_id, id);",
        )
        .await?;
        sqlx::query("INSERT INTO accounts (id, balance) SELECT g, $2 FROM generate_series(0, $1 - 1) g")
            .bind(i64::from(plan.workload.customers))
            .bind(ROW_BALANCE)
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(pool)
    }
    .await;
    match prepared {
        Ok(pool) => Ok(Baseline {
            kind: BaselineKind::Postgres,
            seeded: HashMap::new(),
            workers: Some(Workers::Raw(RawWorker::many(&RawStore::Postgres(pool.clone()), plan))),
            teardown: Teardown::Postgres { admin, pool, name },
        }),
        Err(error) => {
            let _ = drop_database(admin, &name).await;
            Err(fail(error))
        }
    }
}

async fn drop_database(admin: PgPool, name: &str) -> Result<(), RunError> {
    let dropped = admin.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
    admin.close().await;
    dropped.map(drop).map_err(|e| failed("postgres baseline clean-up")(e.to_string()))
}

/// `postgres://u@h:5432/postgres?x=y` with the database name replaced.
pub(crate) fn database_url(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(query) => format!("{host}/{name}?{query}"),
        None => format!("{host}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(database_url("postgres://p@h/db?sslmode=disable", "y"), "postgres://p@h/y?sslmode=disable");
        assert_eq!(database_url("postgres://p@h", "z"), "postgres://p@h/z");
    }
}
