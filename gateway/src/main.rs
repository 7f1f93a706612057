use clap::Parser;
use loyalty_gateway::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Keys(args)) => {
            return match loyalty_gateway::cli::run_keys(args, &mut std::io::stdout()).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("loyalty-gateway: {error}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::CustomerSecret(args)) => {
            return match loyalty_gateway::cli::run_customer_secret(args, &mut std::io::stdout()).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("loyalty-gateway: {error}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve(config)) => *config,
        None => cli.config,
    };
    let telemetry = match loyalty_common::telemetry::init("loyalty-gateway", &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loyalty-gateway: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| format!("GATEWAY_HTTP_ADDR {}: {e}", config.http_addr))?;
        loyalty_gateway::run(config, listener, loyalty_common::shutdown::termination()).await
    }
    .await;
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "gateway failed");
            eprintln!("loyalty-gateway: {error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
