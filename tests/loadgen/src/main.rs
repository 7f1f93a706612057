use std::process::ExitCode;

use clap::Parser;
use loyalty_loadgen::{Args, RunError};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = match loyalty_common::telemetry::init("loadgen", &args.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::from(2);
        }
    };
    let json = args.json.clone();
    let code = match loyalty_loadgen::run(args).await {
        Ok(report) => {
            println!("{report}");
            let written = json.map_or(Ok(()), |path| {
                let text = serde_json::to_string_pretty(&report).expect("reports serialise");
                std::fs::write(&path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))
            });
            match written {
                Err(error) => {
                    eprintln!("loadgen: {error}");
                    ExitCode::FAILURE
                }
                Ok(()) if !report.correctness.ok => ExitCode::FAILURE,
                Ok(()) => ExitCode::SUCCESS,
            }
        }
        Err(RunError::Usage(message)) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
        Err(RunError::Failed(message)) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
