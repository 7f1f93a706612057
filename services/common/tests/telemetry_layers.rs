//! The subscriber `telemetry::init` installs leaves other crates' TRACE and
//! DEBUG events (h2 and hyper have many on every call) disabled at their
//! callsites, so they cost nothing: an installed layer that wanted every
//! callsite once halved the throughput of a cache hit. Its own test binary:
//! it installs the process's global subscriber (spans not exported).

use loyalty_common::telemetry::{LogFormat, TelemetryArgs};

#[test]
fn other_crates_verbose_events_are_disabled_at_the_callsite() {
    // SAFETY: the only test of this binary; nothing else reads the environment yet.
    unsafe { std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT") };
    let args = TelemetryArgs { log_format: LogFormat::Text, log_filter: "info".into() };
    let guard = loyalty_common::telemetry::init("telemetry-test", &args).expect("telemetry starts");
    assert!(!tracing::enabled!(target: "h2::proto::streams", tracing::Level::TRACE));
    assert!(!tracing::enabled!(target: "hyper::proto", tracing::Level::DEBUG));
    assert!(!tracing::enabled!(target: "loyalty_common::metrics", tracing::Level::DEBUG), "quiet spans stay off");
    assert!(tracing::enabled!(target: "loyalty_points", tracing::Level::INFO), "the log filter's own level is on");
    // What the pool's acquire-time metric needs, and nothing more of sqlx.
    assert!(tracing::enabled!(target: "sqlx::pool::acquire", tracing::Level::TRACE));
    assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::DEBUG), "statement spans only when exported");
    guard.shutdown();
}
