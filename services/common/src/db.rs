//! The database pool and embedded migrations. One code path serves both
//! back-ends through sqlx's `Any` driver; the few places where PostgreSQL and
//! SQLite differ ask [`Dialect`].

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A pool and the back-end it talks to.
#[derive(Clone, Debug)]
pub struct Database {
    pub pool: AnyPool,
    pub dialect: Dialect,
}

/// How big a pool is and how long a caller waits for one of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    pub fn new(max_connections: u32, acquire_timeout_ms: u64) -> Self {
        Self { max_connections, acquire_timeout: Duration::from_millis(acquire_timeout_ms.max(1)) }
    }
}

/// Whether an error means the database cannot be reached or dropped us (a
/// lost, refused or terminated connection, a restart, a full or closed
/// pool, a busy SQLite file): worth a retry with the same idempotency key,
/// so UNAVAILABLE and never INTERNAL. Everything else is a bug or bad data.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    // Beyond a lost server, PostgreSQL: 53 (insufficient resources: too many
    // connections, disk full, out of memory), the rest of 57 (query
    // cancelled), 40001 and 40P01 (serialization failure, deadlock: the
    // transaction was rolled back and a retry succeeds). SQLite: BUSY and
    // LOCKED, with extended codes.
    is_out_of_reach(error)
        || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
            code.starts_with("53")
                || code.starts_with("57")
                || matches!(code.as_ref(), "40001" | "40P01")
                || (code.len() < 5 && code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)))
        }))
}

/// The narrower part of [`is_unavailable`]: the server or the connection to
/// it is gone, so anything else sent now would fail the same way (not a
/// conflict, a cancelled statement or a busy file, which the next try may
/// pass). PostgreSQL: class 08 (connection exception), 57P0x (admin or
/// crash shutdown, cannot connect now) and 25006 (read-only transaction: we
/// reached a standby, as after a failover before the address moved).
pub fn is_out_of_reach(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P0") || code.as_ref() == "25006")
        }
        _ => false,
    }
}

/// One numbered migration, compiled into the binary with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Declares `MIGRATIONS` (a [`Migrations`]) from one list of
/// `version "description" "file.sql"`: each file is read from
/// `<dir>/postgres/` and `<dir>/sqlite/`, relative to the calling file, so the
/// two dialects can never disagree on versions or names.
///
/// ```ignore
/// loyalty_common::embedded_migrations!("../migrations": 1 "ledger" "0001_ledger.sql", 2 "rules" "0002_rules.sql");
/// ```
#[macro_export]
macro_rules! embedded_migrations {
    ($dir:literal: $($version:literal $description:literal $file:literal),+ $(,)?) => {
        /// This crate's schema, in both dialects.
        pub const MIGRATIONS: $crate::db::Migrations = $crate::db::Migrations {
            postgres: &[$($crate::db::EmbeddedMigration {
                version: $version,
                description: $description,
                sql: include_str!(concat!($dir, "/postgres/", $file)),
            }),+],
            sqlite: &[$($crate::db::EmbeddedMigration {
                version: $version,
                description: $description,
                sql: include_str!(concat!($dir, "/sqlite/", $file)),
            }),+],
        };
    };
}

/// One schema's migrations in both dialects (see [`embedded_migrations!`]).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static [EmbeddedMigration],
    pub sqlite: &'static [EmbeddedMigration],
}

impl Migrations {
    /// The list for `dialect`.
    pub fn of(&self, dialect: Dialect) -> &'static [EmbeddedMigration] {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
        }
    }
}

/// The database settings every binary shares. The default URL is each
/// binary's own embedded file: its `Config` sets it with
/// `#[command(mut_arg("database_url", |arg| arg.required(false).default_value("sqlite://./data/NAME.db")))]`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// `postgres://user@host/db` for PostgreSQL, or `sqlite://path` for an embedded file.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub url: String,
    /// Largest number of database connections.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        value_name = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,
    /// Longest wait for a database connection before a call fails as UNAVAILABLE, in
    /// milliseconds: well under a caller's deadline, so an outage fails fast and says so.
    #[arg(
        id = "database_acquire_timeout_ms",
        long = "database-acquire-timeout-ms",
        env = "DATABASE_ACQUIRE_TIMEOUT_MS",
        value_name = "DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub acquire_timeout_ms: u64,
}

impl DatabaseArgs {
    /// `url` with `max_connections` connections and the default acquire timeout.
    pub fn new(url: impl Into<String>, max_connections: u32) -> Self {
        Self { url: url.into(), max_connections, acquire_timeout_ms: 1_000 }
    }

    pub fn pool(&self) -> PoolSettings {
        PoolSettings::new(self.max_connections, self.acquire_timeout_ms)
    }

    /// Connects and brings the schema up to date.
    pub async fn open(&self, migrations: Migrations) -> Result<Database, DbError> {
        open(&self.url, self.pool(), migrations).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("must start with postgres://, postgresql:// or sqlite: (got scheme {0:?})")]
    UnsupportedUrl(String),
    #[error("cannot create the directory for the SQLite file {path}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl Dialect {
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            Err(DbError::UnsupportedUrl(scheme.to_owned()))
        }
    }

    /// ` FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write
    /// transaction already excludes every other writer.
    pub fn for_update(self) -> &'static str {
        if self == Self::Postgres { " FOR UPDATE" } else { "" }
    }
}

/// A value kept as a JSON column (settings, ladders, campaign bodies).
pub fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("stored values serialise")
}

/// A JSON column read back; [`StoredJson`] when it does not parse (damaged,
/// or written by a version that no longer reads the same).
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoredJson> {
    serde_json::from_str(text).map_err(StoredJson)
}

/// A JSON column that does not read back; every service reports it as corrupt data.
#[derive(Debug, thiserror::Error)]
#[error("a stored JSON value does not read back: {0}")]
pub struct StoredJson(#[source] serde_json::Error);

/// A pooled connection idle for this long is pinged before it is lent: one
/// used more recently was working a moment ago, and one that broke while in
/// use was closed when it came back (sqlx pings on release). A connection
/// idle through a database restart of this length or more is checked; one
/// lent within a shorter outage fails its call once as UNAVAILABLE and is
/// closed when it comes back.
const PING_IDLE_AFTER: Duration = Duration::from_millis(250);

/// Connects, creating the SQLite file (and its directory) when needed.
pub async fn connect(url: &str, pool: PoolSettings) -> Result<Database, DbError> {
    let (options, url, dialect) = pool_options(url, pool)?;
    let pool = options.connect(&url).await.map_err(DbError::Connect)?;
    if dialect == Dialect::Sqlite {
        // Readers never block the writer in WAL mode; the mode sticks to the file.
        pool.execute("PRAGMA journal_mode = WAL").await.map_err(DbError::Connect)?;
    }
    Ok(Database { pool, dialect })
}

/// A pool that connects on first use: for a database that is only read now
/// and then (the key store, from the services), whose outage must not stop
/// a service from starting.
pub fn connect_lazy(url: &str, pool: PoolSettings) -> Result<Database, DbError> {
    let (options, url, dialect) = pool_options(url, pool)?;
    let pool = options.connect_lazy(&url).map_err(DbError::Connect)?;
    Ok(Database { pool, dialect })
}

fn pool_options(url: &str, pool: PoolSettings) -> Result<(AnyPoolOptions, String, Dialect), DbError> {
    let max_connections = pool.max_connections;
    install_default_drivers();
    let dialect = Dialect::from_url(url)?;
    crate::spans::set_db_system(match dialect {
        Dialect::Postgres => "postgresql",
        Dialect::Sqlite => "sqlite",
    });
    let (url, max_connections) = match dialect {
        Dialect::Postgres => (url.to_owned(), max_connections),
        Dialect::Sqlite => {
            prepare_sqlite_path(url)?;
            let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
            // SQLite has one writer at a time; more connections only spin on the lock.
            (url, max_connections.min(8))
        }
    };
    let options = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        // sqlx closes a connection whose ping fails when it comes back to the
        // pool, but one that sat idle through a restart is only found dead by
        // a ping before lending. Only a connection idle for a while is
        // pinged: under load a connection is lent again within milliseconds,
        // and sqlx's own `test_before_acquire` cost one round trip (or, on
        // SQLite, one hop to the connection's thread) on every acquire.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(pool.acquire_timeout)
        // Every wait for a connection, as an event for `db_pool_acquire_seconds`.
        .acquire_time_level(log::LevelFilter::Trace)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // FULL: a commit is on disk before we answer (nothing lost on a crash).
                    conn.execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")
                        .await?;
                }
                Ok(())
            })
        });
    Ok((options, url, dialect))
}

/// Applies migrations; on PostgreSQL sqlx holds an advisory lock meanwhile,
/// so replicas starting together apply each migration once.
pub async fn migrate(db: &Database, migrations: &[EmbeddedMigration]) -> Result<(), DbError> {
    let migrations = migrations
        .iter()
        .map(|m| {
            Migration::new(
                m.version,
                m.description.into(),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(m.sql)),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations).run(&db.pool).await.map_err(DbError::Migrate)
}

/// Runs `work` only if this replica takes the advisory lock `key` now: for a
/// periodic job that one replica at a time is enough for (reviews). `None`
/// while another replica holds it. On PostgreSQL the lock belongs to a
/// transaction held open for the work, so it ends with it, even if the work
/// fails, panics or is cancelled; SQLite is one process, so always.
pub async fn exclusively<T, E: From<sqlx::Error>>(
    db: &Database,
    key: i64,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Option<T>, E> {
    if db.dialect == Dialect::Sqlite {
        return work.await.map(Some);
    }
    let mut holder = db.pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(key).fetch_one(&mut *holder).await?;
    if !locked {
        return Ok(None);
    }
    let result = work.await;
    // Now, not when the dropped transaction is next cleaned up: the next tick may be another replica's.
    holder.rollback().await?;
    result.map(Some)
}

/// One page of a list, newest first: `SELECT <columns> FROM <table>` (the
/// caller's constants, never input) where each `filter` column equals its
/// value and `key` (an increasing id) is below `before`, at most `limit`
/// rows, in descending `key` order. The next page starts before the last
/// row's key.
pub async fn newest_first(
    db: &Database,
    select: &str,
    filter: &[(&str, &str)],
    key: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut sql = format!("{select} WHERE ");
    for (n, (column, _)) in filter.iter().enumerate() {
        sql.push_str(&format!("{column} = ${} AND ", n + 1));
    }
    let n = filter.len();
    sql.push_str(&format!("{key} < ${} ORDER BY {key} DESC LIMIT ${}", n + 1, n + 2));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (_, value) in filter {
        query = query.bind(*value);
    }
    query.bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(&db.pool).await
}

/// Connects and applies the migrations of the back-end the URL names.
pub async fn open(url: &str, pool: PoolSettings, migrations: Migrations) -> Result<Database, DbError> {
    let db = connect(url, pool).await?;
    migrate(&db, migrations.of(db.dialect)).await?;
    Ok(db)
}

/// Begins a PostgreSQL transaction whose statements are planned as nested
/// loops over index lookups: no sequential scans, hash or merge joins. For
/// statements whose row source is JSON the planner knows nothing of, or a
/// join it misjudges while a young table's statistics lag behind its growth,
/// where any other plan reads a whole table.
pub async fn begin_by_index(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    pool.begin_with(
        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
    )
    .await
}

/// True when the database answers a trivial query within `within`.
pub async fn ping(db: &Database, within: Duration) -> bool {
    let query = sqlx::query("SELECT 1").execute(&db.pool);
    matches!(tokio::time::timeout(within, query).await, Ok(Ok(_)))
}

fn prepare_sqlite_path(url: &str) -> Result<(), DbError> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir { path: path.to_owned(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas' review ticks at once: one works, the other skips; then
    /// the lock is free again.
    #[tokio::test]
    async fn only_one_holder_of_an_exclusive_job_works_at_a_time() {
        let url = crate::testing::postgres_admin_url();
        let db = connect(&url, PoolSettings::new(4, 1_000)).await.expect("the test PostgreSQL answers");
        let key = i64::from(std::process::id()) << 20 | 0x5eed;
        let (entered, inside) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let db = db.clone();
            async move {
                exclusively(&db, key, async move {
                    entered.send(()).unwrap();
                    released.await.unwrap();
                    Ok::<_, sqlx::Error>(1)
                })
                .await
            }
        });
        inside.await.unwrap();
        let other = connect(&url, PoolSettings::new(2, 1_000)).await.expect("a second replica connects");
        let ok = |n| async move { Ok::<_, sqlx::Error>(n) };
        assert_eq!(exclusively(&other, key, ok(2)).await.unwrap(), None, "the second replica skips");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), Some(1));
        assert_eq!(exclusively(&other, key, ok(3)).await.unwrap(), Some(3), "free again afterwards");
        // A job that fails lets go of the lock too.
        let failed = exclusively(&db, key, async { Err::<(), _>(sqlx::Error::PoolClosed) }).await;
        assert!(failed.is_err());
        assert_eq!(exclusively(&other, key, ok(4)).await.unwrap(), Some(4), "free after a failure");
    }

    /// What PostgreSQL really answers when it ends a connection, a pool that
    /// cannot lend one, and a plain bug, classified.
    #[tokio::test]
    async fn lost_connections_and_full_pools_are_unavailable_and_bugs_are_not() {
        let url = crate::testing::postgres_admin_url();
        let db = connect(&url, PoolSettings::new(1, 200)).await.expect("the test PostgreSQL answers");
        let mut conn = db.pool.acquire().await.unwrap();
        let terminated = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())").execute(&mut *conn).await;
        let error = terminated.expect_err("the server ends its own session");
        assert!(is_unavailable(&error), "{error:?}");
        let after = sqlx::query("SELECT 1").execute(&mut *conn).await.expect_err("the connection is gone");
        assert!(is_unavailable(&after), "{after:?}");
        drop(conn);

        let held = db.pool.acquire().await.expect("a fresh connection replaces the dead one");
        let waited = db.pool.acquire().await.expect_err("the only connection is lent out");
        assert!(matches!(waited, sqlx::Error::PoolTimedOut) && is_unavailable(&waited), "{waited:?}");
        drop(held);

        let mut conn = db.pool.acquire().await.unwrap();
        sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").execute(&mut *conn).await.unwrap();
        let standby = sqlx::query("CREATE TEMP TABLE would_write (x int)").execute(&mut *conn).await;
        let standby = standby.expect_err("a read-only session refuses a write, as a standby does");
        assert!(is_unavailable(&standby), "{standby:?}");
        let conflict = sqlx::query("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$")
            .execute(&mut *conn)
            .await
            .expect_err("a serialization failure");
        assert!(is_unavailable(&conflict), "{conflict:?}");
        let full = sqlx::query("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'too_many_connections'; END $$")
            .execute(&mut *conn)
            .await
            .expect_err("too many connections");
        assert!(is_unavailable(&full), "{full:?}");
        conn.detach();

        let bug = sqlx::query("SELEC 1").execute(&db.pool).await.expect_err("a syntax error");
        assert!(!is_unavailable(&bug), "{bug:?}");
        let missing = sqlx::query("SELECT * FROM no_such_table").execute(&db.pool).await.expect_err("no table");
        assert!(!is_unavailable(&missing), "{missing:?}");
        db.pool.close().await;
    }

    /// A restart under a held and an idle connection, then a stopped server,
    /// on a private cluster: each failure is UNAVAILABLE, and the pool never
    /// lends the connection the restart broke.
    #[tokio::test]
    async fn a_restarted_or_stopped_server_is_unavailable_and_the_pool_heals() {
        let pg = crate::throwaway::postgres::ThrowawayPostgres::start();
        let db = connect(&pg.url(), PoolSettings::new(2, 300)).await.expect("the private PostgreSQL answers");
        let (mut held, idle) = (db.pool.acquire().await.unwrap(), db.pool.acquire().await.unwrap());
        drop(idle);
        // The pool takes a connection back in a task of its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while db.pool.num_idle() < 1 {
            assert!(std::time::Instant::now() < deadline, "the pool never took the idle connection back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pg.restart();
        let terminated = sqlx::query("SELECT 1").execute(&mut *held).await.expect_err("the restart ended the session");
        assert!(is_unavailable(&terminated), "{terminated:?}");
        drop(held);
        // The idle connection died too. It has been idle longer than a
        // restart takes, so the pool tests it before lending it.
        tokio::time::sleep(PING_IDLE_AFTER).await;
        sqlx::query("SELECT 1").execute(&db.pool).await.expect("the first call after a restart gets a live connection");

        pg.stop();
        let refused = sqlx::query("SELECT 1").execute(&db.pool).await.expect_err("the server is stopped");
        assert!(is_unavailable(&refused), "{refused:?}");
        let direct = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg.url()).await.expect_err("refused");
        assert!(is_unavailable(&direct), "{direct:?}");
        db.pool.close().await;
    }

    #[test]
    fn dialect_follows_the_url_scheme() {
        assert_eq!(Dialect::from_url("postgres://u@h/db").unwrap(), Dialect::Postgres);
        assert_eq!(Dialect::from_url("sqlite://./data/x.db").unwrap(), Dialect::Sqlite);
        assert!(matches!(Dialect::from_url("mysql://h/db"), Err(DbError::UnsupportedUrl(s)) if s == "mysql"));
    }
}

/// `($1, $2, …), (…)`: `rows` groups of `columns` numbered placeholders.
pub fn placeholders(rows: usize, columns: usize) -> String {
    placeholders_with(rows, columns, "")
}

/// [`placeholders`] with `suffix` (constants) at the end of every group.
pub fn placeholders_with(rows: usize, columns: usize, suffix: &str) -> String {
    (0..rows)
        .map(|r| {
            let group: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({}{suffix})", group.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
