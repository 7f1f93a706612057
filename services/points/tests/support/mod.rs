//! Starts a real points server on loopback against a throwaway SQLite file
//! or a throwaway PostgreSQL database (+ a Redis key prefix), with a manual
//! clock, and connects the generated client to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use loyalty_common::clock::{ManualClock, Micros};
use loyalty_common::server::{RunningService, Service as _};
pub use loyalty_common::testing::Backend;
use loyalty_common::testing::{self, Sandbox};
use loyalty_points::{Config, PointsServer};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

/// 2025-11-24T00:00:00Z.
pub const T0: Micros = 1_763_942_400_000_000;
pub const DAY: Micros = 86_400_000_000;

pub struct Harness {
    pub client: PointsServiceClient<Channel>,
    pub clock: ManualClock,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub redis_prefix: String,
    server: Option<RunningService>,
    sandbox: Option<Sandbox>,
    config: Config,
}

pub struct Options {
    /// Overrides the Redis URL (e.g. a proxy in front of the real Redis).
    pub redis_url: Option<String>,
    pub redis_backoff_ms: u64,
    pub tiers_addr: Option<String>,
    /// A database shared with other harnesses, left in place at `stop`.
    pub database_url: Option<String>,
    /// Overrides the Redis key prefix (harnesses sharing one cache).
    pub redis_prefix: Option<String>,
    /// Group-commit workers (`WRITE_WORKERS`); 0: a transaction per command.
    pub write_workers: usize,
    /// Writes that may wait per worker (`WRITE_QUEUE_CAPACITY`).
    pub write_queue_capacity: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_backoff_ms: 1_000,
            tiers_addr: None,
            database_url: None,
            redis_prefix: None,
            write_workers: 4,
            write_queue_capacity: 1_024,
        }
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let redis_prefix =
            options.redis_prefix.clone().unwrap_or_else(|| format!("loyalty-test:{}:", testing::unique_suffix()));
        let database_url = match &options.database_url {
            Some(shared) => shared.clone(),
            None => sandbox.database("points").await,
        };
        // SQLite runs with the in-process cache unless a test asks for Redis in front of the file.
        let redis_url = match backend {
            Backend::Sqlite => options.redis_url.clone(),
            Backend::Postgres => Some(options.redis_url.clone().unwrap_or_else(testing::redis_url)),
        };
        let (backoff, workers) = (options.redis_backoff_ms.to_string(), options.write_workers.to_string());
        let capacity = options.write_queue_capacity.to_string();
        let mut args = vec!["--redis-key-prefix", &redis_prefix, "--redis-timeout-ms", "500"];
        args.extend(["--redis-backoff-ms", &backoff, "--expiry-interval-secs", "3600"]);
        args.extend(["--write-workers", &workers, "--write-queue-capacity", &capacity]);
        args.extend(redis_url.iter().flat_map(|url| ["--redis-url", url.as_str()]));
        args.extend(options.tiers_addr.iter().flat_map(|addr| ["--tiers-addr", addr.as_str()]));
        let config = Sandbox::config::<PointsServer>(&database_url, &args);
        let clock = sandbox.clock.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server =
            PointsServer::start(config.clone(), listener, sandbox.shared_clock()).await.expect("server starts");
        let addr = server.bind_addr();
        let metrics_addr = server.metrics_addr();
        let client = PointsServiceClient::connect(format!("http://{addr}")).await.expect("client connects");
        Self { client, clock, addr, metrics_addr, redis_prefix, server: Some(server), sandbox: Some(sandbox), config }
    }

    /// Shuts the server down and starts a new one with the same config and
    /// clock (a new address), as a restarted process would.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock: Arc<dyn loyalty_common::clock::Clock> = Arc::new(self.clock.clone());
        let server = PointsServer::start(self.config.clone(), listener, Some(clock)).await.expect("server restarts");
        self.addr = server.bind_addr();
        self.metrics_addr = server.metrics_addr();
        self.client = PointsServiceClient::connect(format!("http://{}", self.addr)).await.expect("client connects");
        self.server = Some(server);
    }

    /// The database the server writes to, for tests that open the store themselves.
    pub fn database_url(&self) -> &str {
        &self.config.database.url
    }

    /// A fresh client on its own connection.
    pub async fn client(&self) -> PointsServiceClient<Channel> {
        PointsServiceClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// The program's audit log, newest first (the first page).
    #[allow(dead_code)] // not every test binary reads it
    pub async fn audit(&mut self, program_id: &str) -> Vec<loyalty_proto::points::v1::AuditEntry> {
        let request = loyalty_proto::points::v1::ListAuditEntriesRequest {
            program_id: program_id.into(),
            page_size: 0,
            ..Default::default()
        };
        self.client.list_audit_entries(request).await.unwrap().into_inner().entries
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.stop().await;
        }
        if let Ok(client) = redis::Client::open(testing::redis_url())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.redis_prefix))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for key in keys {
                let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
            }
        }
    }

    pub async fn earn(&mut self, program: &str, customer: &str, points: i64, key: &str) -> pb::EarnResponse {
        self.client.earn(earn_request(program, customer, points, key)).await.expect("earn").into_inner()
    }

    pub async fn spend(
        &mut self,
        program: &str,
        customer: &str,
        points: i64,
        key: &str,
    ) -> Result<pb::SpendResponse, tonic::Status> {
        let request = pb::SpendRequest {
            program_id: program.into(),
            customer_id: customer.into(),
            points,
            reason: "reward".into(),
            idempotency_key: key.into(),
        };
        self.client.spend(request).await.map(tonic::Response::into_inner)
    }

    pub async fn balance(&mut self, program: &str, customer: &str) -> pb::Balance {
        let request = pb::GetBalanceRequest { program_id: program.into(), customer_id: customer.into() };
        self.client.get_balance(request).await.expect("balance").into_inner().balance.expect("balance set")
    }

    /// Every entry of the account, newest first, following page tokens.
    pub async fn all_entries(&mut self, program: &str, customer: &str) -> Vec<pb::LedgerEntry> {
        let mut entries = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .list_transactions(pb::ListTransactionsRequest {
                    program_id: program.into(),
                    customer_id: customer.into(),
                    page_size: 7,
                    page_token: token.clone(),
                })
                .await
                .expect("list")
                .into_inner();
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return entries;
            }
            token = page.next_page_token;
        }
    }

    /// Asserts that the ledger adds up to the balance.
    pub async fn assert_ledger_matches_balance(&mut self, program: &str, customer: &str) -> pb::Balance {
        let balance = self.balance(program, customer).await;
        let entries = self.all_entries(program, customer).await;
        let available: i64 = entries.iter().map(|e| e.points).sum();
        let pending: i64 = entries.iter().map(|e| e.pending_points).sum();
        assert_eq!(available, balance.available, "ledger sum vs available");
        assert_eq!(pending, balance.pending, "ledger sum vs pending");
        balance
    }

    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(self.metrics_addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body
    }
}

/// An earn of `points` for an order, active at once, never expiring.
pub fn earn_request(program: &str, customer: &str, points: i64, key: &str) -> pb::EarnRequest {
    pb::EarnRequest {
        program_id: program.into(),
        customer_id: customer.into(),
        points,
        reason: "order".into(),
        idempotency_key: key.into(),
        pending_until: None,
        expires_at: None,
    }
}

pub fn timestamp(micros: Micros) -> prost_types::Timestamp {
    loyalty_common::clock::to_timestamp(micros)
}
