//! `loadgen-insights`: GetProgramKpis latency over a bulk-seeded program and
//! the insights consumer's catch-up rate, on PostgreSQL. Parses the
//! arguments, calls [`loyalty_loadgen::insights::run`], prints the report
//! (and writes it as JSON with `--json`). Exit code: 0, 1 when a check failed
//! or the run could not be done, 2 for bad arguments.

use clap::Parser;
use loyalty_loadgen::insights::{Args, Report, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (telemetry, json) = (args.telemetry.clone(), args.json.clone());
    loyalty_loadgen::harness_main("loadgen-insights", &telemetry, json, Report::ok, run(args)).await
}
