//! `loadgen-webhooks`: the webhooks service's delivery throughput next to
//! plain POSTs, and every event delivered in order after a receiver outage,
//! on PostgreSQL. Parses the arguments, calls [`loyalty_loadgen::webhooks::run`],
//! prints the report (and writes it as JSON with `--json`). Exit code: 0, 1
//! when a check failed or the run could not be done, 2 for bad arguments.

use clap::Parser;
use loyalty_loadgen::webhooks::{Args, Report, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (telemetry, json) = (args.telemetry.clone(), args.json.clone());
    loyalty_loadgen::harness_main("loadgen-webhooks", &telemetry, json, Report::ok, run(args)).await
}
