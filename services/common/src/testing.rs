//! Throwaway PostgreSQL databases and Redis key prefixes for tests, so tests
//! run in parallel and never depend on data another run left. They read
//! `LOYALTY_TEST_DATABASE_URL` / `LOYALTY_TEST_REDIS_URL` (defaults: the
//! local servers) and fail loudly when those servers do not answer.
//!
//! [`Sandbox`] is the one harness every crate's integration tests build on:
//! throwaway storage, one manual clock, and real services on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::any::install_default_drivers;
use sqlx::{AnyPool, AssertSqlSafe, Executor};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::clock::{Clock, ManualClock, Micros};
use crate::server::{RunningService, Service};

/// Runs each listed `async fn name(backend: Backend)` as two tokio tests,
/// `sqlite::name` and `postgres::name` ([`Backend`]).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where a test's services keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: SQLite files (and the in-process cache).
    Sqlite,
    /// PostgreSQL (and Redis), as in production.
    Postgres,
}

/// One test's world: a fresh directory, throwaway databases, a manual clock
/// that every service started here shares, and services on loopback ports.
/// [`Sandbox::stop`] drops the databases and the directory.
pub struct Sandbox {
    pub backend: Backend,
    /// The clock services started here read, unless [`Sandbox::on_wall_clock`].
    pub clock: ManualClock,
    /// Where SQLite files (and anything else a test writes) go.
    pub dir: PathBuf,
    wall_clock: bool,
    /// How services started here check callers: `--auth off` unless [`Sandbox::check_callers`].
    auth: Vec<String>,
    /// Flags every service started here gets ([`Sandbox::every_service`]).
    shared: Vec<String>,
    databases: Vec<TestDatabase>,
}

impl Sandbox {
    /// A sandbox whose clock reads `now`.
    pub fn new(backend: Backend, now: Micros) -> Self {
        let dir = std::env::temp_dir().join(format!("loyalty-test-{}", unique_suffix()));
        let auth = vec!["--auth".to_owned(), "off".to_owned()];
        Self {
            backend,
            clock: ManualClock::new(now),
            dir,
            wall_clock: false,
            auth,
            shared: Vec::new(),
            databases: Vec::new(),
        }
    }

    /// Services started from now on read the wall clock (for tests that
    /// sign tokens or talk to another process).
    pub fn on_wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    /// Services started from now on check callers as in production: API keys
    /// from the key store at `keys_url`, peers by the shared `service_secret`.
    pub fn check_callers(&mut self, keys_url: &str, service_secret: &str) {
        self.auth = ["--auth", "required", "--keys-database-url", keys_url, "--service-secret", service_secret]
            .map(str::to_owned)
            .to_vec();
    }

    /// Services started from now on also get `flags` (e.g. TLS settings).
    pub fn every_service(&mut self, flags: impl IntoIterator<Item = String>) {
        self.shared.extend(flags);
    }

    /// A fresh, empty database for one service: a SQLite file named after
    /// `name` in [`Sandbox::dir`], or a throwaway PostgreSQL database.
    pub async fn database(&mut self, name: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("sqlite://{}/{name}-{}.db", self.dir.display(), unique_suffix()),
            Backend::Postgres => {
                let database = TestDatabase::create().await;
                let url = database.url.clone();
                self.databases.push(database);
                url
            }
        }
    }

    /// The sandbox's clock, as services take it (`None`: the wall clock).
    pub fn shared_clock(&self) -> Option<Arc<dyn Clock>> {
        (!self.wall_clock).then(|| Arc::new(self.clock.clone()) as Arc<dyn Clock>)
    }

    /// Starts `S` on a free loopback port with [`Sandbox::config`], the
    /// sandbox's clock and caller checks, and `args` (flags of `S`'s own).
    pub async fn start<S: Service>(&self, database_url: &str, args: &[&str]) -> RunningService {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        self.start_on::<S>(listener, database_url, args).await
    }

    /// [`Sandbox::start`] on a listener the test bound itself (to tell
    /// another service the address first).
    pub async fn start_on<S: Service>(
        &self,
        listener: TcpListener,
        database_url: &str,
        args: &[&str],
    ) -> RunningService {
        let shared = self.auth.iter().chain(&self.shared).map(String::as_str);
        let args: Vec<&str> = shared.chain(args.iter().copied()).collect();
        S::start(parse::<S>(database_url, &args), listener, self.shared_clock())
            .await
            .unwrap_or_else(|e| panic!("{} starts: {e}", S::BINARY))
    }

    /// `S`'s settings for a test that starts it itself: its database at
    /// `database_url`, metrics on a free port, callers unchecked
    /// (`--auth off`), then `args`.
    pub fn config<S: Service>(database_url: &str, args: &[&str]) -> S::Config {
        let args: Vec<&str> = ["--auth", "off"].into_iter().chain(args.iter().copied()).collect();
        parse::<S>(database_url, &args)
    }

    /// Drops every database this sandbox made and removes its directory.
    pub async fn stop(self) {
        for database in self.databases {
            database.drop_database().await;
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// `S`'s settings from `args` after its database and a free metrics port,
/// and the defaults for the rest: never from the environment (a developer's
/// `REDIS_URL` must not reach a test), a flag given twice wins the second
/// time, and a bad one panics instead of exiting the test binary.
fn parse<S: Service>(database_url: &str, args: &[&str]) -> S::Config {
    use clap::{CommandFactory, FromArgMatches};
    let fixed = [S::BINARY, "--database-url", database_url, "--metrics-addr", "127.0.0.1:0"];
    let command = S::Config::command().mut_args(|arg| arg.env(None)).args_override_self(true);
    let matches = command
        .try_get_matches_from(fixed.iter().chain(args))
        .unwrap_or_else(|e| panic!("{} settings {args:?}: {e}", S::BINARY));
    S::Config::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{} settings {args:?}: {e}", S::BINARY))
}

/// A channel to a service on loopback, for a generated client's `new`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a loopback URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A channel that connects on first use: a client for a service that is
/// not started yet.
pub fn lazy_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("a loopback URL").connect_lazy()
}

/// The admin URL of the test PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("LOYALTY_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// The test Redis URL.
pub fn redis_url() -> String {
    std::env::var("LOYALTY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.to_owned())
}

/// A unique, lowercase suffix for names made by one test.
pub fn unique_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A fresh, empty PostgreSQL database; drop it with [`TestDatabase::drop_database`].
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Panics with a clear message when the test server does not answer.
    pub async fn create() -> Self {
        install_default_drivers();
        let admin_url = postgres_admin_url();
        let name = format!("loyalty_test_{}", unique_suffix());
        let admin = AnyPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL for tests does not answer at {admin_url} (set LOYALTY_TEST_DATABASE_URL or run tests/run): {e}")
        });
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        admin.close().await;
        let url = replace_database(&admin_url, &name);
        Self { url, name, admin_url }
    }

    pub async fn drop_database(self) {
        if let Ok(admin) = AnyPool::connect(&self.admin_url).await {
            let _ = admin.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))).await;
            admin.close().await;
        }
    }
}

/// `postgres://u@h:5432/postgres?x=y` with the database name replaced.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

/// A transaction of a test's own that keeps writers waiting until released:
/// on PostgreSQL the one row `program_id`/`customer_id` of `table` is locked
/// (`FOR UPDATE`), on SQLite (one writer at a time) every write waits.
pub struct WriteHold(sqlx::AnyConnection);

impl WriteHold {
    pub async fn row(database_url: &str, table: &str, program_id: &str, customer_id: &str) -> Self {
        use sqlx::Connection;
        install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(database_url).await.expect("test connection");
        if database_url.starts_with("sqlite:") {
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await.expect("the write lock");
        } else {
            sqlx::raw_sql("BEGIN").execute(&mut conn).await.expect("a transaction");
            let sql = format!("SELECT 1 FROM {table} WHERE program_id = $1 AND customer_id = $2 FOR UPDATE");
            let held = sqlx::query(AssertSqlSafe(sql))
                .bind(program_id)
                .bind(customer_id)
                .fetch_all(&mut conn)
                .await
                .expect("the row lock");
            assert_eq!(held.len(), 1, "{table} holds ({program_id}, {customer_id}) before it is held");
        }
        Self(conn)
    }

    pub async fn release(mut self) {
        sqlx::raw_sql("COMMIT").execute(&mut self.0).await.expect("the holding transaction ends");
    }
}

/// A TCP proxy that can cut every connection and refuse new ones, to take
/// a dependency (Redis, a peer service) away without touching the server
/// itself, and send new connections elsewhere (a service name moved to a
/// promoted standby).
pub struct CuttableProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    upstream: Arc<std::sync::Mutex<SocketAddr>>,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let upstream = Arc::new(std::sync::Mutex::new(upstream));
        let (accept_up, accept_generation, accept_upstream) = (up.clone(), generation.clone(), upstream.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                let upstream = *accept_upstream.lock().expect("proxy lock");
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, generation, upstream }
    }

    /// Drops every open connection and sends new ones to `upstream`.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("proxy lock") = upstream;
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_keeping_the_query() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(replace_database("postgres://p@h/db?sslmode=disable", "t2"), "postgres://p@h/t2?sslmode=disable");
        assert_eq!(replace_database("postgres://p@h", "t3"), "postgres://p@h/t3");
    }
}
