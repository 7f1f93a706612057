use clap::Parser;
use loyalty_tiers::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let telemetry = match loyalty_common::telemetry::init("loyalty-tiers", &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-tiers: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| format!("TIERS_GRPC_ADDR {}: {e}", config.grpc_addr))?;
        loyalty_tiers::run(config, listener, loyalty_common::shutdown::termination()).await
    }
    .await;
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "tiers service failed");
            eprintln!("loyalty-tiers: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
