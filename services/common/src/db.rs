//! The database pool and embedded migrations. One code path serves both
//! back-ends through sqlx's `Any` driver; the few places where PostgreSQL and
//! SQLite differ ask [`Dialect`].

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor};

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

/// One numbered migration, compiled into the binary with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Declares `POSTGRES_MIGRATIONS` and `SQLITE_MIGRATIONS` from one list of
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
        const POSTGRES_MIGRATIONS: &[$crate::db::EmbeddedMigration] = &[$($crate::db::EmbeddedMigration {
            version: $version,
            description: $description,
            sql: include_str!(concat!($dir, "/postgres/", $file)),
        }),+];
        const SQLITE_MIGRATIONS: &[$crate::db::EmbeddedMigration] = &[$($crate::db::EmbeddedMigration {
            version: $version,
            description: $description,
            sql: include_str!(concat!($dir, "/sqlite/", $file)),
        }),+];
    };
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
}

/// Connects, creating the SQLite file (and its directory) when needed.
pub async fn connect(url: &str, max_connections: u32) -> Result<Database, DbError> {
    let (options, url, dialect) = pool_options(url, max_connections)?;
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
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Database, DbError> {
    let (options, url, dialect) = pool_options(url, max_connections)?;
    // A caller waiting on this pool waits for an answer, not for a slow failure.
    let pool = options.acquire_timeout(Duration::from_secs(2)).connect_lazy(&url).map_err(DbError::Connect)?;
    Ok(Database { pool, dialect })
}

fn pool_options(url: &str, max_connections: u32) -> Result<(AnyPoolOptions, String, Dialect), DbError> {
    install_default_drivers();
    let dialect = Dialect::from_url(url)?;
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
        .acquire_timeout(Duration::from_secs(10))
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

/// Connects and applies the migrations of the back-end the URL names.
pub async fn open(
    url: &str,
    max_connections: u32,
    postgres: &[EmbeddedMigration],
    sqlite: &[EmbeddedMigration],
) -> Result<Database, DbError> {
    let db = connect(url, max_connections).await?;
    migrate(&db, if db.dialect == Dialect::Postgres { postgres } else { sqlite }).await?;
    Ok(db)
}

/// True when the database answers a trivial query.
pub async fn ping(db: &Database) -> bool {
    sqlx::query("SELECT 1").execute(&db.pool).await.is_ok()
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

    #[test]
    fn dialect_follows_the_url_scheme() {
        assert_eq!(Dialect::from_url("postgres://u@h/db").unwrap(), Dialect::Postgres);
        assert_eq!(Dialect::from_url("sqlite://./data/x.db").unwrap(), Dialect::Sqlite);
        assert!(matches!(Dialect::from_url("mysql://h/db"), Err(DbError::UnsupportedUrl(s)) if s == "mysql"));
    }
}
