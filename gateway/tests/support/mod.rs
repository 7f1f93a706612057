//! Starts real points, tiers, referral and rewards services (the last three
//! following the same points service) and a real gateway in front of them,
//! all on loopback port 0, against throwaway SQLite files or throwaway
//! PostgreSQL databases, and talks to the gateway over real HTTP.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use loyalty_common::clock::Clock;
use loyalty_common::db::DatabaseArgs;
use loyalty_common::server::RunningService;
use loyalty_common::telemetry::{LogFormat, TelemetryArgs};
pub use loyalty_common::testing::Backend;
use loyalty_common::testing::Sandbox;
use loyalty_common::tls::TlsArgs;
use loyalty_gateway::customer::{self, CustomerSecrets};
use loyalty_gateway::keys::{KeyStore, NewKey, Scope};
use loyalty_gateway::widget::WidgetConfig;
use loyalty_gateway::{Config, GatewayServer};
use loyalty_insights::InsightsServer;
use loyalty_points::PointsServer;
use loyalty_referral::ReferralServer;
use loyalty_rewards::RewardsServer;
use loyalty_tiers::TiersServer;
use loyalty_webhooks::WebhooksServer;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

/// Knobs a test may turn; everything else is a sensible test default.
pub struct Options {
    pub backend: Backend,
    /// Start no points service and point the gateway here instead (then no optional service is started).
    pub points_addr: Option<String>,
    /// Start the tiers, referral and rewards services (unless an address below replaces one);
    /// false: the gateway has no address for them.
    pub optional_services: bool,
    /// Start no tiers service and point the gateway here instead.
    pub tiers_addr: Option<String>,
    /// Start no referral service and point the gateway here instead.
    pub referral_addr: Option<String>,
    /// Start no rewards service and point the gateway here instead.
    pub rewards_addr: Option<String>,
    /// Start no insights service and point the gateway here instead.
    pub insights_addr: Option<String>,
    /// Start no webhooks service and point the gateway here instead.
    pub webhooks_addr: Option<String>,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub key_cache_ttl_secs: u64,
    pub max_body_bytes: usize,
    pub upstream_timeout_ms: u64,
    pub cors_origins: Vec<String>,
    pub widget: WidgetConfig,
    /// Cache balances in the test Redis (under a fresh key prefix) instead of in process.
    pub redis: bool,
    /// The followers (tiers, referral, rewards, insights, webhooks) reach the points service
    /// here instead of directly (a [`Relay`] in front of it); rewards makes its calls to points
    /// here too.
    pub follower_points_addr: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            points_addr: None,
            optional_services: true,
            tiers_addr: None,
            referral_addr: None,
            rewards_addr: None,
            insights_addr: None,
            webhooks_addr: None,
            rate_limit_per_sec: 0,
            rate_limit_burst: 100,
            key_cache_ttl_secs: 30,
            max_body_bytes: 64 * 1024,
            upstream_timeout_ms: 2_000,
            cors_origins: Vec::new(),
            widget: WidgetConfig {
                customer_token_max_age_secs: 900,
                customer_secret_cache_ttl_secs: 30,
                widget_max_age_secs: 300,
                demo: false,
                demo_program: "demo".into(),
                demo_storefront_key: None,
            },
            redis: false,
            follower_points_addr: None,
        }
    }
}

pub struct Harness {
    pub base: String,
    pub http: reqwest::Client,
    pub keys: KeyStore,
    pub database_url: String,
    /// Each service's database, by service name (those this harness started).
    pub service_databases: BTreeMap<&'static str, String>,
    pub gateway: Option<GatewayServer>,
    points: Option<RunningService>,
    tiers: Option<RunningService>,
    referral: Option<RunningService>,
    rewards: Option<RunningService>,
    insights: Option<RunningService>,
    webhooks: Option<RunningService>,
    sandbox: Sandbox,
}

/// A decoded HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and code, and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.content_type(), "application/problem+json", "{:#}", self.body);
        assert_eq!(self.body["status"], status, "{:#}", self.body);
        assert_eq!(self.body["code"], code, "{:#}", self.body);
        for member in ["type", "title", "detail"] {
            assert!(self.body[member].is_string(), "problem without {member}: {:#}", self.body);
        }
        &self.body
    }

    /// The `field`s of the problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{:#}", self.body);
        assert_eq!(self.content_type(), "application/json");
        &self.body
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let mut sandbox = Sandbox::new(options.backend, 0).on_wall_clock();
        let points_url = sandbox.database("points").await;
        let gateway_url = sandbox.database("gateway").await;
        let mut service_databases = BTreeMap::from([("points", points_url.clone())]);
        sandbox.check_callers(&gateway_url, SERVICE_SECRET);

        // Every listener first, so each service can be told where the others are.
        let own_points = options.points_addr.is_none();
        let start = |wanted: bool| async move {
            if wanted { Some(TcpListener::bind("127.0.0.1:0").await.unwrap()) } else { None }
        };
        let optional = own_points && options.optional_services;
        let points_listener = start(own_points).await;
        let tiers_listener = start(optional && options.tiers_addr.is_none()).await;
        let referral_listener = start(optional && options.referral_addr.is_none()).await;
        let rewards_listener = start(optional && options.rewards_addr.is_none()).await;
        let insights_listener = start(optional && options.insights_addr.is_none()).await;
        let webhooks_listener = start(optional && options.webhooks_addr.is_none()).await;
        let addr = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr().unwrap().to_string());
        let points_addr = options.points_addr.clone().or_else(|| addr(&points_listener)).unwrap();
        let tiers_addr = options.tiers_addr.clone().or_else(|| addr(&tiers_listener));
        let referral_addr = options.referral_addr.clone().or_else(|| addr(&referral_listener));
        let rewards_addr = options.rewards_addr.clone().or_else(|| addr(&rewards_listener));
        let insights_addr = options.insights_addr.clone().or_else(|| addr(&insights_listener));
        let webhooks_addr = options.webhooks_addr.clone().or_else(|| addr(&webhooks_listener));

        let points = match points_listener {
            Some(listener) => {
                let tiers = addr(&tiers_listener).map(|tiers| ["--tiers-addr".to_owned(), tiers]);
                // A smaller pool, and no expiry run on the wall clock within a test.
                let mut args = vec!["--database-max-connections", "8", "--expiry-interval-secs", "3600"];
                args.extend(tiers.iter().flatten().map(String::as_str));
                let redis = options.redis.then(|| {
                    let prefix = format!("test-{}:", loyalty_common::testing::unique_suffix());
                    [
                        "--redis-url".to_owned(),
                        loyalty_common::testing::redis_url(),
                        "--redis-key-prefix".to_owned(),
                        prefix,
                    ]
                });
                args.extend(redis.iter().flatten().map(String::as_str));
                Some(sandbox.start_on::<PointsServer>(listener, &points_url, &args).await)
            }
            None => None,
        };
        let followed = options.follower_points_addr.clone().unwrap_or_else(|| points_addr.clone());
        let follower = ["--points-addr", followed.as_str()];
        let tiers = match tiers_listener {
            Some(listener) => {
                let url = sandbox.database("tiers").await;
                service_databases.insert("tiers", url.clone());
                Some(sandbox.start_on::<TiersServer>(listener, &url, &follower).await)
            }
            None => None,
        };
        let referral = match referral_listener {
            Some(listener) => {
                let url = sandbox.database("referral").await;
                service_databases.insert("referral", url.clone());
                Some(sandbox.start_on::<ReferralServer>(listener, &url, &follower).await)
            }
            None => None,
        };
        let rewards = match rewards_listener {
            Some(listener) => {
                let url = sandbox.database("rewards").await;
                service_databases.insert("rewards", url.clone());
                // Rewards follows the ledger and calls points on one address.
                let mut args = vec!["--points-addr", followed.as_str(), "--recovery-interval-ms", "200"];
                if let Some(tiers) = &tiers_addr {
                    args.extend(["--tiers-addr", tiers.as_str()]);
                }
                Some(sandbox.start_on::<RewardsServer>(listener, &url, &args).await)
            }
            None => None,
        };
        let insights = match insights_listener {
            Some(listener) => {
                let url = sandbox.database("insights").await;
                service_databases.insert("insights", url.clone());
                Some(sandbox.start_on::<InsightsServer>(listener, &url, &follower).await)
            }
            None => None,
        };
        let webhooks = match webhooks_listener {
            Some(listener) => {
                let url = sandbox.database("webhooks").await;
                service_databases.insert("webhooks", url.clone());
                // Receivers in tests listen on loopback over plain http.
                let mut args = vec!["--allow-http", "--allowed-networks", "127.0.0.0/8", "--poll-interval-ms", "50"];
                args.extend(follower);
                Some(sandbox.start_on::<WebhooksServer>(listener, &url, &args).await)
            }
            None => None,
        };
        let config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            points_addr,
            tiers_addr,
            referral_addr,
            rewards_addr,
            insights_addr,
            webhooks_addr,
            upstream_timeout_ms: options.upstream_timeout_ms,
            request_timeout_ms: 10_000,
            max_body_bytes: options.max_body_bytes,
            rate_limit_per_sec: options.rate_limit_per_sec,
            rate_limit_burst: options.rate_limit_burst,
            key_cache_ttl_secs: options.key_cache_ttl_secs,
            cors_origins: options.cors_origins.clone(),
            database: DatabaseArgs::new(gateway_url.clone(), 4),
            service_secret: Some(SERVICE_SECRET.into()),
            tls: TlsArgs::default(),
            telemetry: TelemetryArgs { log_format: LogFormat::Text, log_filter: "info".into() },
            widget: options.widget.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = GatewayServer::start(config, listener).await.expect("gateway starts");
        let keys = KeyStore::open(&gateway_url, 2).await.expect("key store opens");
        Self {
            base: format!("http://{}", gateway.bind_addr()),
            http: reqwest::Client::new(),
            keys,
            database_url: gateway_url,
            service_databases,
            gateway: Some(gateway),
            points,
            tiers,
            referral,
            rewards,
            insights,
            webhooks,
            sandbox,
        }
    }

    pub fn gateway(&self) -> &GatewayServer {
        self.gateway.as_ref().expect("gateway running")
    }

    /// A fresh key, made by the same library code as `loyalty-gateway keys create`.
    pub async fn key(&self, program: &str, scope: Scope) -> String {
        self.new_key(program, scope).await.key
    }

    pub async fn new_key(&self, program: &str, scope: Scope) -> NewKey {
        self.keys.create(program, scope, "test").await.expect("key created")
    }

    /// A customer token for `customer`, signed now with the program's secret (made on first use),
    /// as the shop's back end would sign it.
    pub async fn customer_token(&self, program: &str, customer: &str) -> String {
        let secrets = CustomerSecrets::new(self.keys.database().clone());
        let secret = secrets.ensure(program).await.expect("a customer token secret");
        customer::sign(&secret, customer, loyalty_common::clock::SystemClock.now() / 1_000_000)
    }

    /// A GET from a storefront acting for a signed-in customer.
    pub async fn get_for(&self, key: &str, token: &str, path: &str) -> Answer {
        self.send(Method::GET, path, Some(key), &[("x-customer-token", token)], None).await
    }

    /// A JSON POST from a storefront acting for a signed-in customer.
    pub async fn post_for(&self, key: &str, token: &str, path: &str, idempotency_key: &str, body: Value) -> Answer {
        self.write_for(Method::POST, key, token, path, idempotency_key, body).await
    }

    /// A JSON PUT from a storefront acting for a signed-in customer.
    pub async fn put_for(&self, key: &str, token: &str, path: &str, idempotency_key: &str, body: Value) -> Answer {
        self.write_for(Method::PUT, key, token, path, idempotency_key, body).await
    }

    async fn write_for(
        &self,
        method: Method,
        key: &str,
        token: &str,
        path: &str,
        idempotency_key: &str,
        body: Value,
    ) -> Answer {
        let headers =
            [("content-type", "application/json"), ("idempotency-key", idempotency_key), ("x-customer-token", token)];
        self.send(method, path, Some(key), &headers, Some(serde_json::to_vec(&body).unwrap())).await
    }

    pub async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("gateway shuts down cleanly");
        }
        if let Some(webhooks) = self.webhooks.take() {
            webhooks.shutdown().await.expect("webhooks shuts down cleanly");
        }
        if let Some(insights) = self.insights.take() {
            insights.shutdown().await.expect("insights shuts down cleanly");
        }
        if let Some(rewards) = self.rewards.take() {
            rewards.shutdown().await.expect("rewards shuts down cleanly");
        }
        if let Some(referral) = self.referral.take() {
            referral.shutdown().await.expect("referral shuts down cleanly");
        }
        if let Some(tiers) = self.tiers.take() {
            tiers.shutdown().await.expect("tiers shuts down cleanly");
        }
        if let Some(points) = self.points.take() {
            points.shutdown().await.expect("points shuts down cleanly");
        }
        self.keys.database().pool.close().await;
        self.sandbox.stop().await;
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)))
        };
        Answer { status, headers, body }
    }

    pub async fn get(&self, key: &str, path: &str) -> Answer {
        self.send(Method::GET, path, Some(key), &[], None).await
    }

    /// A JSON write with an idempotency key.
    pub async fn write(&self, method: Method, key: &str, path: &str, idempotency_key: &str, body: Value) -> Answer {
        let headers = [("content-type", "application/json"), ("idempotency-key", idempotency_key)];
        self.send(method, path, Some(key), &headers, Some(serde_json::to_vec(&body).unwrap())).await
    }

    pub async fn post(&self, key: &str, path: &str, idempotency_key: &str, body: Value) -> Answer {
        self.write(Method::POST, key, path, idempotency_key, body).await
    }

    pub async fn put(&self, key: &str, path: &str, idempotency_key: &str, body: Value) -> Answer {
        self.write(Method::PUT, key, path, idempotency_key, body).await
    }

    /// A write without a body (archive, cancel, end, a removal), with an idempotency key.
    pub async fn bodiless(&self, method: Method, key: &str, path: &str, idempotency_key: &str) -> Answer {
        self.send(method, path, Some(key), &[("idempotency-key", idempotency_key)], None).await
    }

    /// Records an order of `amount_minor` cents in EUR.
    pub async fn order(&self, key: &str, customer: &str, order_id: &str, amount_minor: i64) -> Answer {
        let body = serde_json::json!({
            "customer_id": customer, "order_id": order_id, "amount_minor": amount_minor, "currency": "EUR",
        });
        self.post(key, "/v1/orders", &format!("order-{order_id}"), body).await
    }

    pub async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.gateway().metrics_addr());
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// A service's `/metrics` (points, tiers, referral, rewards, insights or webhooks).
    pub async fn service_metrics(&self, service: &str) -> String {
        let addr = self.service_metrics_addr(service);
        self.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Where a service's `/metrics` listens.
    pub fn service_metrics_addr(&self, service: &str) -> SocketAddr {
        let running = match service {
            "points" => &self.points,
            "tiers" => &self.tiers,
            "referral" => &self.referral,
            "rewards" => &self.rewards,
            "insights" => &self.insights,
            "webhooks" => &self.webhooks,
            other => panic!("no service {other}"),
        };
        running.as_ref().unwrap_or_else(|| panic!("{service} is not running")).metrics_addr()
    }
}

/// The secret the test harness's services share: they check callers as in production.
pub const SERVICE_SECRET: &str = "test-service-secret-0123456789abcdef";

impl Harness {
    /// The gRPC address of the points service this harness started, to call it as the gateway does.
    pub fn points_grpc_addr(&self) -> SocketAddr {
        self.points.as_ref().expect("points started by the harness").bind_addr()
    }

    pub fn tiers_grpc_addr(&self) -> SocketAddr {
        self.tiers.as_ref().expect("tiers started by the harness").bind_addr()
    }

    pub fn referral_grpc_addr(&self) -> SocketAddr {
        self.referral.as_ref().expect("referral started by the harness").bind_addr()
    }

    pub fn rewards_grpc_addr(&self) -> SocketAddr {
        self.rewards.as_ref().expect("rewards started by the harness").bind_addr()
    }

    /// The gRPC requests each service the harness started has handled so
    /// far, by (service, method), summed over status codes, read from their
    /// `/metrics` (`rpc_server_requests_total`).
    pub async fn rpc_calls(&self) -> BTreeMap<(String, String), u64> {
        let servers = [
            self.points.as_ref(),
            self.tiers.as_ref(),
            self.referral.as_ref(),
            self.rewards.as_ref(),
            self.insights.as_ref(),
            self.webhooks.as_ref(),
        ];
        let mut calls = BTreeMap::new();
        for server in servers.into_iter().flatten() {
            let url = format!("http://{}/metrics", server.metrics_addr());
            let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
            for line in text.lines().filter_map(|l| l.strip_prefix("rpc_server_requests_total{")) {
                let (labels, count) = line.split_once("} ").expect("a sample");
                let label = |name: &str| {
                    labels.split(',').find_map(|l| l.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
                };
                let key = (label("service").unwrap().to_owned(), label("method").unwrap().to_owned());
                *calls.entry(key).or_default() += count.parse::<f64>().unwrap() as u64;
            }
        }
        calls
    }

    /// Stops the referral service early, to see the gateway without it.
    pub async fn stop_referral(&mut self) {
        if let Some(referral) = self.referral.take() {
            referral.shutdown().await.expect("referral shuts down cleanly");
        }
    }
}

/// A TCP relay that can be cut: every connection through it is dropped and
/// new ones refused until it is restored. Stands for a network partition
/// between one service and another.
pub struct Relay {
    pub addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// Listening, relaying nowhere until [`Relay::point_at`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (cut, watch) = tokio::sync::watch::channel(false);
        let to = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = *to.lock().unwrap() else { continue };
                let mut watch = watch.clone();
                if *watch.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, target, cut }
    }

    pub fn point_at(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// An address where nothing listens: bound, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A TCP server that accepts connections and never says a word, like a hung backend.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// An RFC 3339 instant `micros` from now (negative: in the past).
pub fn now_plus(micros: i64) -> String {
    loyalty_gateway::rfc3339::format(loyalty_common::clock::SystemClock.now() + micros)
}
