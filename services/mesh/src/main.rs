//! The quick start: every service in one process, each on its own embedded
//! SQLite file and in-process cache, so a fresh machine needs no servers.
//! Production runs each service as its own binary instead.

use std::path::PathBuf;

use clap::Parser;
use loyalty_common::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(name = "loyalty-mesh", version, about = "Runs every loyalty service in one process on embedded storage.")]
struct Args {
    /// Directory for the services' SQLite files.
    #[arg(long, env = "LOYALTY_DATA_DIR", value_name = "LOYALTY_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// gRPC address of the points service.
    #[arg(long, env = "POINTS_GRPC_ADDR", value_name = "POINTS_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    points_grpc_addr: std::net::SocketAddr,
    /// Metrics address of the points service.
    #[arg(long, env = "POINTS_METRICS_ADDR", value_name = "POINTS_METRICS_ADDR", default_value = "127.0.0.1:9101")]
    points_metrics_addr: std::net::SocketAddr,
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

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let points_config = loyalty_points::Config {
        grpc_addr: args.points_grpc_addr,
        metrics_addr: args.points_metrics_addr,
        database_url: format!("sqlite://{}", args.data_dir.join("points.db").display()),
        database_max_connections: 8,
        redis_url: None,
        redis_key_prefix: "loyalty:points:".into(),
        balance_cache_ttl_secs: 300,
        redis_timeout_ms: 250,
        redis_backoff_ms: 1_000,
        tiers_addr: None,
        tiers_timeout_ms: 300,
        expiry_interval_secs: 60,
        telemetry: args.telemetry.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.points_grpc_addr)
        .await
        .map_err(|e| format!("POINTS_GRPC_ADDR {}: {e}", args.points_grpc_addr))?;
    let points = loyalty_points::PointsServer::start(points_config, listener, None).await?;
    let grpc = points.bind_addr();
    println!("loyalty mesh is up, storage in {} (no servers needed)", args.data_dir.display());
    println!("  points  grpc {grpc}  metrics http://{}/metrics", points.metrics_addr());
    println!("try it (grpcurl uses server reflection, no proto files needed):");
    println!(
        "  grpcurl -plaintext -d '{{\"program_id\":\"demo\",\"customer_id\":\"anna\",\"points\":120,\"reason\":\"order 1001\",\"idempotency_key\":\"order-1001\"}}' {grpc} loyalty.points.v1.PointsService/Earn"
    );
    println!(
        "  grpcurl -plaintext -d '{{\"program_id\":\"demo\",\"customer_id\":\"anna\"}}' {grpc} loyalty.points.v1.PointsService/GetBalance"
    );
    println!("stop with ctrl-c");
    loyalty_common::shutdown::termination().await;
    points.shutdown().await?;
    Ok(())
}
