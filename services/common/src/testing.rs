//! Throwaway PostgreSQL databases and Redis key prefixes for tests, so tests
//! run in parallel and never depend on data another run left. They read
//! `LOYALTY_TEST_DATABASE_URL` / `LOYALTY_TEST_REDIS_URL` (defaults: the
//! local servers) and fail loudly when those servers do not answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::any::install_default_drivers;
use sqlx::{AnyPool, AssertSqlSafe, Executor};
use tokio::net::{TcpListener, TcpStream};

/// Runs each listed `async fn name(backend: Backend)` as two tokio tests,
/// `sqlite::name` and `postgres::name`; the calling test crate defines
/// `enum Backend { Sqlite, Postgres }`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

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
/// a dependency (Redis, a peer service) away without touching the server itself.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (accept_up, accept_generation) = (up.clone(), generation.clone());
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
        Self { addr, up, generation }
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
