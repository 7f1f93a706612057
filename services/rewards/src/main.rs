use clap::Parser;
use loyalty_rewards::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let telemetry = match loyalty_common::telemetry::init("loyalty-rewards", &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-rewards: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| format!("REWARDS_GRPC_ADDR {}: {e}", config.grpc_addr))?;
        loyalty_rewards::run(config, listener, loyalty_common::shutdown::termination()).await
    }
    .await;
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "rewards service failed");
            eprintln!("loyalty-rewards: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
