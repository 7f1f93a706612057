use clap::Parser;
use loyalty_points::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let telemetry = match loyalty_common::telemetry::init("loyalty-points", &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-points: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| format!("POINTS_GRPC_ADDR {}: {e}", config.grpc_addr))?;
        loyalty_points::run(config, listener, loyalty_common::shutdown::termination()).await
    }
    .await;
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "points service failed");
            eprintln!("loyalty-points: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
