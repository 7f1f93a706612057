//! All telemetry set-up in one place: a `tracing` subscriber that prints
//! lowercase, structured log lines, and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, OTLP export of spans and logs (the SDK reads the other `OTEL_*`
//! variables itself). W3C trace context is the propagator.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Set once OTLP export is on: per-call spans are then worth their cost.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The name `init` was given (the OTLP resource's `service.name`).
static SERVICE_NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// This process's service name, once telemetry is set up.
pub fn service_name() -> &'static str {
    SERVICE_NAME.get().copied().unwrap_or("loyalty")
}

/// The share of new traces (requests that bring no caller's decision) that
/// are recorded, as `f64` bits; 1.0 until `init` reads the sampler.
static NEW_TRACE_RATIO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x3FF0_0000_0000_0000);

/// The ratio `OTEL_TRACES_SAMPLER` (and `_ARG`) give new traces. Every form
/// is parent-based here: a caller's decision is always followed.
fn new_trace_ratio() -> f64 {
    let arg = || {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(1.0, |r| r.clamp(0.0, 1.0))
    };
    match std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default().trim() {
        "always_off" | "parentbased_always_off" => 0.0,
        "traceidratio" | "parentbased_traceidratio" => arg(),
        _ => 1.0,
    }
}

/// Whether a request that starts a trace is recorded. Decided before any
/// span is made, so the requests left out cost (almost) nothing.
pub fn sample_new_trace() -> bool {
    let ratio = f64::from_bits(NEW_TRACE_RATIO.load(std::sync::atomic::Ordering::Relaxed));
    // 53 random bits as a fraction in [0, 1).
    let unit = (random_u64() >> 11) as f64 / ((1u64 << 53) as f64);
    ratio >= 1.0 || (ratio > 0.0 && unit < ratio)
}

/// The trace context of a request that is not recorded: the caller's, or a
/// fresh one marked not sampled, so that the services it calls leave it out too.
pub fn unsampled(parent: opentelemetry::Context) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    if parent.span().span_context().is_valid() {
        return parent;
    }
    let trace = (u128::from(random_u64()) << 64) | u128::from(random_u64());
    let context = SpanContext::new(
        TraceId::from(trace.max(1)),
        SpanId::from(random_u64().max(1)),
        TraceFlags::default(),
        false,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(context)
}

/// Whether a request with this caller context is recorded: the caller's
/// decision when it made one, else [`sample_new_trace`].
pub fn sampled(parent: &opentelemetry::Context) -> bool {
    use opentelemetry::trace::TraceContextExt;
    let span = parent.span();
    let context = span.span_context();
    if context.is_valid() { context.is_sampled() } else { sample_new_trace() }
}

/// xorshift64*, one state per thread, seeded from the process's random hasher keys.
fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(0x9E37_79B9_7F4A_7C15);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// True when spans leave the process (OTLP export configured).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// How log lines are printed on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Telemetry settings every binary shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log line format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,loyalty_points=debug`.
    #[arg(long, env = "RUST_LOG", value_name = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Flushes exporters on `shutdown()`; dropping it without calling
/// `shutdown()` may lose the last spans.
#[must_use = "call shutdown() before exit to flush telemetry"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(error) = tracer.shutdown()
        {
            eprintln!("telemetry: span export shutdown failed: {error}");
        }
        if let Some(logger) = self.logger
            && let Err(error) = logger.shutdown()
        {
            eprintln!("telemetry: log export shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber. Call once, from `main`, inside the runtime.
///
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans (server, client gRPC,
/// database statements, Redis, batch commits) and logs are exported over
/// OTLP/gRPC; sampling is the SDK's, from `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` (parent-based whatever the form, ratio 1.0 when
/// unset), decided before a request's first span.
pub fn init(service_name: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard, Box<dyn std::error::Error>> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = SERVICE_NAME.set(service_name);
    let filter = || EnvFilter::try_new(&args.log_filter).map_err(|e| format!("RUST_LOG: {e}"));
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter()?);

    let export = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    let (tracer, logger) = if export {
        let resource = Resource::builder().with_service_name(service_name).build();
        let spans = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        // New traces are sampled before their first span is made (`sample_new_trace`); what
        // reaches the SDK follows its parent, and a root that reaches it was chosen already.
        NEW_TRACE_RATIO.store(new_trace_ratio().to_bits(), std::sync::atomic::Ordering::Relaxed);
        let sampler =
            opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(opentelemetry_sdk::trace::Sampler::AlwaysOn));
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_sampler(sampler)
            .with_resource(resource.clone())
            .build();
        let logs = opentelemetry_otlp::LogExporter::builder().with_tonic().build()?;
        let logger = SdkLoggerProvider::builder().with_batch_exporter(logs).with_resource(resource).build();
        opentelemetry::global::set_tracer_provider(tracer.clone());
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        (Some(tracer), Some(logger))
    } else {
        (None, None)
    };

    // Only the layers in use, each with its own filter. (An absent `Option` layer
    // would declare interest in every callsite, and the many TRACE events of h2
    // and hyper would then be dispatched on every call: half the throughput.)
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![fmt.boxed(), crate::spans::acquire_times().boxed()];
    if let Some(provider) = &tracer {
        // Spans at INFO whatever the log level: quieter logs keep their traces.
        let spans = EnvFilter::new("info");
        layers
            .push(tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)).with_filter(spans).boxed());
        // sqlx reports each statement as an event.
        let statements = Targets::new().with_target("sqlx::query", Level::DEBUG);
        layers.push(crate::spans::StatementSpans.with_filter(statements).boxed());
    }
    if let Some(provider) = &logger {
        // The log bridge must not see the exporter's own logs, or it would loop.
        let logs = filter()?
            .add_directive("h2=off".parse()?)
            .add_directive("tonic=off".parse()?)
            .add_directive("hyper=off".parse()?)
            .add_directive("opentelemetry=off".parse()?);
        layers.push(OpenTelemetryTracingBridge::new(provider).with_filter(logs).boxed());
    }
    tracing_subscriber::registry().with(layers).try_init()?;
    if export {
        tracing::info!(service = service_name, "otlp export enabled");
    }
    Ok(TelemetryGuard { tracer, logger })
}

/// Reads W3C trace context out of HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Client interceptor: carries the current span's W3C trace context to the
/// called service in the request metadata (outside any span: the context of
/// a request left out of sampling, so the callee leaves it out too).
pub fn inject_trace_context(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let spanned = tracing::Span::current().context();
    let context = if spanned.span().span_context().is_valid() { spanned } else { opentelemetry::Context::current() };
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(&value))
        {
            self.0.insert(key, value);
        }
    }
}
