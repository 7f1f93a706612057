//! The quick start: every service in one process, each on its own embedded
//! SQLite file and in-process cache, wired to each other, so a fresh machine
//! needs no servers. Production runs each service as its own binary instead.

mod demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use loyalty_common::auth::{AuthArgs, AuthMode, SecurityArgs, ServiceSecret};
use loyalty_common::db::DatabaseArgs;
use loyalty_common::server::Service as _;
use loyalty_common::telemetry::TelemetryArgs;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(name = "loyalty-mesh", version, about = "Runs every loyalty service in one process on embedded storage.")]
struct Args {
    /// Directory for the services' SQLite files.
    #[arg(long, env = "LOYALTY_DATA_DIR", value_name = "LOYALTY_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// gRPC address of the points service.
    #[arg(long, env = "POINTS_GRPC_ADDR", value_name = "POINTS_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    points_grpc_addr: SocketAddr,
    /// Metrics address of the points service.
    #[arg(long, env = "POINTS_METRICS_ADDR", value_name = "POINTS_METRICS_ADDR", default_value = "127.0.0.1:9101")]
    points_metrics_addr: SocketAddr,
    /// gRPC address of the tiers service.
    #[arg(long, env = "TIERS_GRPC_ADDR", value_name = "TIERS_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    tiers_grpc_addr: SocketAddr,
    /// Metrics address of the tiers service.
    #[arg(long, env = "TIERS_METRICS_ADDR", value_name = "TIERS_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    tiers_metrics_addr: SocketAddr,
    /// gRPC address of the referral service.
    #[arg(long, env = "REFERRAL_GRPC_ADDR", value_name = "REFERRAL_GRPC_ADDR", default_value = "127.0.0.1:50053")]
    referral_grpc_addr: SocketAddr,
    /// Metrics address of the referral service.
    #[arg(long, env = "REFERRAL_METRICS_ADDR", value_name = "REFERRAL_METRICS_ADDR", default_value = "127.0.0.1:9103")]
    referral_metrics_addr: SocketAddr,
    /// gRPC address of the rewards service.
    #[arg(long, env = "REWARDS_GRPC_ADDR", value_name = "REWARDS_GRPC_ADDR", default_value = "127.0.0.1:50054")]
    rewards_grpc_addr: SocketAddr,
    /// Metrics address of the rewards service.
    #[arg(long, env = "REWARDS_METRICS_ADDR", value_name = "REWARDS_METRICS_ADDR", default_value = "127.0.0.1:9104")]
    rewards_metrics_addr: SocketAddr,
    /// gRPC address of the insights service.
    #[arg(long, env = "INSIGHTS_GRPC_ADDR", value_name = "INSIGHTS_GRPC_ADDR", default_value = "127.0.0.1:50055")]
    insights_grpc_addr: SocketAddr,
    /// Metrics address of the insights service.
    #[arg(long, env = "INSIGHTS_METRICS_ADDR", value_name = "INSIGHTS_METRICS_ADDR", default_value = "127.0.0.1:9105")]
    insights_metrics_addr: SocketAddr,
    /// gRPC address of the webhooks service.
    #[arg(long, env = "WEBHOOKS_GRPC_ADDR", value_name = "WEBHOOKS_GRPC_ADDR", default_value = "127.0.0.1:50056")]
    webhooks_grpc_addr: SocketAddr,
    /// Metrics address of the webhooks service.
    #[arg(long, env = "WEBHOOKS_METRICS_ADDR", value_name = "WEBHOOKS_METRICS_ADDR", default_value = "127.0.0.1:9106")]
    webhooks_metrics_addr: SocketAddr,
    /// HTTP address of the gateway.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", value_name = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    gateway_http_addr: SocketAddr,
    /// Metrics address of the gateway.
    #[arg(long, env = "GATEWAY_METRICS_ADDR", value_name = "GATEWAY_METRICS_ADDR", default_value = "127.0.0.1:9100")]
    gateway_metrics_addr: SocketAddr,
    /// `required`: every gRPC call needs an API key (the admin key printed at start-up works) and
    /// the services prove who they are to each other; `off`: every RPC is open to anyone on this machine.
    #[arg(long, env = "LOYALTY_AUTH", value_name = "LOYALTY_AUTH", value_enum, default_value = "required")]
    auth: AuthMode,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let telemetry = match loyalty_common::telemetry::init("loyalty-mesh", &args.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-mesh: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loyalty-mesh: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn bind(addr: SocketAddr, variable: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("{variable} {addr}: {e}"))
}

fn sqlite(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Both listeners first: each service is told where the other one is.
    let points_listener = bind(args.points_grpc_addr, "POINTS_GRPC_ADDR").await?;
    let tiers_listener = bind(args.tiers_grpc_addr, "TIERS_GRPC_ADDR").await?;
    let referral_listener = bind(args.referral_grpc_addr, "REFERRAL_GRPC_ADDR").await?;
    let (points_addr, tiers_addr) = (points_listener.local_addr()?, tiers_listener.local_addr()?);
    let referral_addr = referral_listener.local_addr()?;
    let rewards_listener = bind(args.rewards_grpc_addr, "REWARDS_GRPC_ADDR").await?;
    let rewards_addr = rewards_listener.local_addr()?;
    let insights_listener = bind(args.insights_grpc_addr, "INSIGHTS_GRPC_ADDR").await?;
    let insights_addr = insights_listener.local_addr()?;
    let webhooks_listener = bind(args.webhooks_grpc_addr, "WEBHOOKS_GRPC_ADDR").await?;
    let webhooks_addr = webhooks_listener.local_addr()?;
    let gateway_listener = bind(args.gateway_http_addr, "GATEWAY_HTTP_ADDR").await?;
    let gateway_addr = gateway_listener.local_addr()?;

    // One process, one fresh service secret; the key store is the gateway's file.
    let keys_url = sqlite(&args.data_dir, "gateway.db");
    let service_secret = ServiceSecret::random();
    let security = SecurityArgs {
        auth: match args.auth {
            AuthMode::Required => AuthArgs::required(&keys_url, &service_secret),
            AuthMode::Off => AuthArgs::off(),
        },
        tls: Default::default(),
    };
    let points_config = loyalty_points::Config {
        grpc_addr: points_addr,
        metrics_addr: args.points_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "points.db"), 8),
        write_workers: 4,
        write_queue_capacity: 1_024,
        redis_url: None,
        redis_key_prefix: "loyalty:points:".into(),
        balance_cache_ttl_secs: 300,
        redis_timeout_ms: 250,
        redis_backoff_ms: 1_000,
        tiers_addr: Some(tiers_addr.to_string()),
        tiers_timeout_ms: 300,
        insights_addr: Some(insights_addr.to_string()),
        insights_timeout_ms: 300,
        expiry_interval_secs: 60,
        birthday_interval_secs: 3_600,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    let tiers_config = loyalty_tiers::Config {
        grpc_addr: tiers_addr,
        metrics_addr: args.tiers_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "tiers.db"), 8),
        points_addr: Some(points_addr.to_string()),
        review_interval_secs: 60,
        multiplier_cache_ttl_ms: 5_000,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    let referral_config = loyalty_referral::Config {
        grpc_addr: referral_addr,
        metrics_addr: args.referral_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "referral.db"), 8),
        points_addr: Some(points_addr.to_string()),
        rewards_addr: Some(rewards_addr.to_string()),
        rewards_timeout_ms: 2_000,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    let rewards_config = loyalty_rewards::Config {
        grpc_addr: rewards_addr,
        metrics_addr: args.rewards_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "rewards.db"), 8),
        points_addr: points_addr.to_string(),
        tiers_addr: Some(tiers_addr.to_string()),
        upstream_timeout_ms: 2_000,
        recovery_interval_ms: 5_000,
        voucher_reminder_days: 3,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    let insights_config = loyalty_insights::Config {
        grpc_addr: insights_addr,
        metrics_addr: args.insights_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "insights.db"), 8),
        points_addr: Some(points_addr.to_string()),
        tiers_addr: Some(tiers_addr.to_string()),
        tiers_timeout_ms: 2_000,
        referral_addr: Some(referral_addr.to_string()),
        referral_timeout_ms: 300,
        review_interval_secs: 60,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    // On a developer's machine the endpoints under test listen here, over plain http.
    let webhooks_config = loyalty_webhooks::Config {
        grpc_addr: webhooks_addr,
        metrics_addr: args.webhooks_metrics_addr,
        database: DatabaseArgs::new(sqlite(&args.data_dir, "webhooks.db"), 8),
        points_addr: Some(points_addr.to_string()),
        points_timeout_ms: 2_000,
        reminder_interval_secs: 300,
        statement_interval_secs: 3_600,
        tiers_addr: Some(tiers_addr.to_string()),
        tiers_timeout_ms: 2_000,
        insights_addr: Some(insights_addr.to_string()),
        insights_timeout_ms: 2_000,
        segment_poll_ms: 2_000,
        referral_addr: Some(referral_addr.to_string()),
        rewards_addr: Some(rewards_addr.to_string()),
        outbox_timeout_ms: 2_000,
        outbox_poll_ms: 500,
        retry_schedule: loyalty_webhooks::domain::RetrySchedule::DEFAULT.parse()?,
        timeout_ms: 10_000,
        endpoint_concurrency: 8,
        max_in_flight: 256,
        disable_after_days: 5,
        poll_interval_ms: 1_000,
        lease_secs: 120,
        retention_days: 30,
        allowed_networks: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        allow_http: true,
        security: security.clone(),
        telemetry: args.telemetry.clone(),
    };
    let mut gateway_config = loyalty_gateway::Config::from_env()?;
    gateway_config.http_addr = gateway_addr;
    gateway_config.metrics_addr = args.gateway_metrics_addr;
    gateway_config.points_addr = points_addr.to_string();
    gateway_config.tiers_addr = Some(tiers_addr.to_string());
    gateway_config.referral_addr = Some(referral_addr.to_string());
    gateway_config.rewards_addr = Some(rewards_addr.to_string());
    gateway_config.insights_addr = Some(insights_addr.to_string());
    gateway_config.webhooks_addr = Some(webhooks_addr.to_string());
    gateway_config.database.url = keys_url;
    gateway_config.service_secret = Some(service_secret);
    let keys = loyalty_gateway::keys::KeyStore::open(&gateway_config.database.url, 2).await?;
    let demo_key = keys.create("demo", loyalty_gateway::keys::Scope::Admin, "quick start").await?;
    let points = loyalty_points::PointsServer::start(points_config, points_listener, None).await?;
    let tiers = loyalty_tiers::TiersServer::start(tiers_config, tiers_listener, None).await?;
    let referral = loyalty_referral::ReferralServer::start(referral_config, referral_listener, None).await?;
    let rewards = loyalty_rewards::RewardsServer::start(rewards_config, rewards_listener, None).await?;
    let insights = loyalty_insights::InsightsServer::start(insights_config, insights_listener, None).await?;
    let webhooks = loyalty_webhooks::WebhooksServer::start(webhooks_config, webhooks_listener, None).await?;
    demo::prepare(&mut gateway_config).await?;
    let gateway = loyalty_gateway::GatewayServer::start(gateway_config, gateway_listener).await?;

    println!("loyalty mesh is up, storage in {} (no servers needed)", args.data_dir.display());
    println!("  points  grpc {points_addr}  metrics http://{}/metrics", points.metrics_addr());
    println!("  tiers   grpc {tiers_addr}  metrics http://{}/metrics", tiers.metrics_addr());
    println!("  referral grpc {referral_addr}  metrics http://{}/metrics", referral.metrics_addr());
    println!("  rewards grpc {rewards_addr}  metrics http://{}/metrics", rewards.metrics_addr());
    println!("  insights grpc {insights_addr}  metrics http://{}/metrics", insights.metrics_addr());
    println!(
        "  webhooks grpc {webhooks_addr}  metrics http://{}/metrics  (delivers to http://localhost too, for trying it out)",
        webhooks.metrics_addr()
    );
    println!("  gateway http://{gateway_addr}  metrics http://{}/metrics", gateway.metrics_addr());
    println!("  demo shop http://{gateway_addr}/demo  (the storefront widget with sample customers)");
    // The key rides in the fragment, which browsers never send: the console keeps it for the tab only.
    println!("  admin console http://{gateway_addr}/admin#key={}  (signed in with the admin key below)", demo_key.key);
    match args.auth {
        AuthMode::Required => {
            println!("AUTH REQUIRED: every HTTP and gRPC call needs an API key. Admin key for program \"demo\"");
            println!("(shown once, a new one at every start): {}", demo_key.key);
        }
        AuthMode::Off => {
            println!("WARNING: LOYALTY_AUTH=off, every gRPC call is open to anyone who can reach these ports.");
            println!("The gateway still needs an API key; admin key for program \"demo\": {}", demo_key.key);
        }
    }
    println!("  curl -H 'Authorization: Bearer {}' http://{gateway_addr}/v1/customers/anna/loyalty", demo_key.key);
    println!("try it (grpcurl uses server reflection, no proto files needed):");
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer {key}' -d '{{\"program_id\":\"demo\",\"customer_id\":\"anna\",\"points\":120,\"reason\":\"order 1001\",\"idempotency_key\":\"order-1001\"}}' {points_addr} loyalty.points.v1.PointsService/Earn",
        key = demo_key.key
    );
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer {key}' -d '{{\"program_id\":\"demo\",\"customer_id\":\"anna\"}}' {points_addr} loyalty.points.v1.PointsService/GetBalance",
        key = demo_key.key
    );
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer {key}' -d '{{\"program_id\":\"demo\",\"customer_id\":\"anna\"}}' {tiers_addr} loyalty.tiers.v1.TiersService/GetMembership",
        key = demo_key.key
    );
    println!("stop with ctrl-c");
    loyalty_common::shutdown::termination().await;
    gateway.shutdown().await?;
    webhooks.shutdown().await?;
    insights.shutdown().await?;
    rewards.shutdown().await?;
    referral.shutdown().await?;
    tiers.shutdown().await?;
    points.shutdown().await?;
    Ok(())
}
