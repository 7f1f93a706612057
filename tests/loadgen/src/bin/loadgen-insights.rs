//! `loadgen-insights`: GetProgramKpis latency over a bulk-seeded program and
//! the insights consumer's catch-up rate, on PostgreSQL. Parses the
//! arguments, calls [`loyalty_loadgen::insights::run`], prints the report
//! (and writes it as JSON with `--json`). Exit code: 0, 1 when a check failed
//! or the run could not be done, 2 for bad arguments.

use std::process::ExitCode;

use clap::Parser;
use loyalty_loadgen::RunError;
use loyalty_loadgen::insights::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = match loyalty_common::telemetry::init("loadgen-insights", &args.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("loadgen-insights: {error}");
            return ExitCode::from(2);
        }
    };
    let json = args.json.clone();
    let code = match loyalty_loadgen::insights::run(args).await {
        Ok(report) => {
            println!("{report}");
            let written = json.map_or(Ok(()), |path| {
                let text = serde_json::to_string_pretty(&report).expect("reports serialise");
                std::fs::write(&path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))
            });
            match written {
                Err(error) => {
                    eprintln!("loadgen-insights: {error}");
                    ExitCode::FAILURE
                }
                Ok(()) if !report.ok() => ExitCode::FAILURE,
                Ok(()) => ExitCode::SUCCESS,
            }
        }
        Err(RunError::Usage(message)) => {
            eprintln!("loadgen-insights: {message}");
            ExitCode::from(2)
        }
        Err(RunError::Failed(message)) => {
            eprintln!("loadgen-insights: {message}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
