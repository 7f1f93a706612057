use std::process::ExitCode;

use clap::Parser;
use loyalty_loadgen::{Args, RunError};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // A receiver in this process, so the run measures exporting without a collector.
    let sink = match args.trace_ratio {
        Some(ratio) => match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => {
                let endpoint = listener.local_addr().map(|a| format!("http://{a}")).unwrap_or_default();
                // SAFETY: before telemetry starts and before any task that reads the environment.
                unsafe {
                    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
                    std::env::set_var("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
                    std::env::set_var("OTEL_TRACES_SAMPLER_ARG", ratio.to_string());
                    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
                }
                let sink = loyalty_common::otlp_sink::Sink::new(0);
                let serving = sink.serve(listener);
                Some((sink, serving, ratio))
            }
            Err(error) => {
                eprintln!("loadgen: cannot listen for spans: {error}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
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
    if let Some((sink, serving, ratio)) = sink {
        println!(
            "trace export: {} spans received by the in-process OTLP receiver (sampling ratio {ratio})",
            sink.span_count()
        );
        serving.abort();
    }
    code
}
