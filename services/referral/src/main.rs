use clap::Parser;
use loyalty_referral::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let telemetry = match loyalty_common::telemetry::init("loyalty-referral", &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-referral: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| format!("REFERRAL_GRPC_ADDR {}: {e}", config.grpc_addr))?;
        loyalty_referral::run(config, listener, loyalty_common::shutdown::termination()).await
    }
    .await;
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "referral service failed");
            eprintln!("loyalty-referral: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
