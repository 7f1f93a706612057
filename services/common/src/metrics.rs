//! Prometheus-format metrics: one registry per process, RPC counts and
//! latency histograms by method and code (recorded by [`RpcObserverLayer`],
//! which also opens the per-RPC tracing span with the caller's W3C trace
//! context), and a small HTTP server for `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::header::CONTENT_TYPE;
use opentelemetry::global;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::shutdown::ShutdownSignal;
use crate::telemetry::HeaderExtractor;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    method: String,
    code: String,
}

/// The process's metrics registry, shared by the server layer and the service.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RpcLabels, Counter>,
    durations: Family<RpcLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RpcLabels, Counter>::default();
        // 100 µs up to ~6.5 s.
        let durations = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register("rpc_server_requests", "gRPC requests handled, by method and status code", requests.clone());
        registry.register(
            "rpc_server_duration_seconds",
            "gRPC request latency until the response headers, by method and status code",
            durations.clone(),
        );
        registry.register(
            "db_pool_acquire_seconds",
            "How long callers waited for a database connection (every pool of the process)",
            crate::spans::POOL_ACQUIRE.clone(),
        );
        registry.register(
            "db_pool_acquire_timeouts",
            "Calls answered UNAVAILABLE because no database connection was free within the acquire timeout",
            crate::spans::POOL_TIMEOUTS.clone(),
        );
        Self { registry: Arc::new(Mutex::new(registry)), requests, durations }
    }

    /// Registers a service's own metric (cache hits, job runs, ...).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().expect("metrics registry poisoned").register(name, help, metric);
    }

    /// The registry in Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    pub(crate) fn observe(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        let labels = RpcLabels { service: service.to_owned(), method: method.to_owned(), code: format!("{code:?}") };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(seconds);
    }
}

/// Serves `GET /metrics` until shutdown, and with `ready`, `GET /readyz`:
/// 200 while the service reports SERVING, else 503. Probes that cannot speak
/// gRPC over TLS (the kubelet's) read readiness there.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    tls: &crate::tls::Tls,
    ready: Option<Arc<AtomicBool>>,
    mut shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let pushed = metrics.clone();
    let mut app =
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
                }
            }),
        );
    if let Some(ready) = ready {
        app = app.route(
            "/readyz",
            axum::routing::get(move || {
                let serving = ready.load(Ordering::Relaxed);
                async move {
                    if serving {
                        (axum::http::StatusCode::OK, "serving\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                    }
                }
            }),
        );
    }
    if let Some(export) = crate::otlp_metrics::Export::from_env() {
        let instance = listener.local_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
        tokio::spawn(crate::otlp_metrics::run(export, pushed, instance, shutdown.clone()));
    }
    tls.serve_http(listener, app, async move { shutdown.fired().await }).await
}

/// Tower layer for the gRPC server: one span and one metrics sample per RPC.
#[derive(Clone)]
pub struct RpcObserverLayer {
    metrics: Metrics,
}

impl RpcObserverLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcObserverLayer {
    type Service = RpcObserver<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcObserver { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcObserver<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcObserver<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was driven to readiness is the one we must call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (service, method) = split_path(request.uri().path());
        // A span per call costs a fifth of a cache hit's throughput: it is made
        // only for a request that is recorded (exported and sampled), and
        // decided before it is made. A request left out still carries its
        // (unsampled) trace context on, so the services it calls leave it out too.
        let (span, unsampled) = if crate::telemetry::exporting() {
            let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
            if crate::telemetry::sampled(&parent) {
                let span = tracing::info_span!(
                    "rpc",
                    otel.name = format!("{service}/{method}"),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                    rpc.grpc.status_code = tracing::field::Empty,
                );
                let _ = span.set_parent(parent);
                (span, None)
            } else {
                (quiet_span(&service, &method), Some(crate::telemetry::unsampled(parent)))
            }
        } else {
            (quiet_span(&service, &method), None)
        };
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let recorded = span.clone();
        let served = async move {
            let result = inner.call(request).await;
            let code = match &result {
                // Errors are trailers-only responses: the status is in the headers.
                // Without it the call succeeded (or a stream started).
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Unknown,
            };
            recorded.record("rpc.grpc.status_code", code as i32);
            // Unknown paths would let callers mint label values at will: whether
            // answered UNIMPLEMENTED or refused by the caller checks first.
            let unknown = match &result {
                Ok(response) => response.extensions().get::<crate::auth::UnknownRpc>().is_some(),
                Err(_) => false,
            };
            let (service, method) = if unknown || code == tonic::Code::Unimplemented {
                ("unknown".to_owned(), "unknown".to_owned())
            } else {
                (service, method)
            };
            metrics.observe(&service, &method, code, started.elapsed().as_secs_f64());
            result
        }
        .instrument(span);
        match unsampled {
            Some(context) => Box::pin(opentelemetry::context::FutureExt::with_context(served, context)),
            None => Box::pin(served),
        }
    }
}

/// The span of a request that is not recorded: at DEBUG, so it costs nothing
/// unless debug logging is on (then its log lines carry the RPC).
fn quiet_span(service: &str, method: &str) -> tracing::Span {
    tracing::debug_span!("rpc", rpc.service = %service, rpc.method = %method)
}

/// `/loyalty.points.v1.PointsService/Earn` → (`loyalty.points.v1.PointsService`, `Earn`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    state: &'static str,
}

/// Keeps `db_pool_connections{state="in_use"|"idle"}` and
/// `db_pool_max_connections` current (read every second) until shutdown:
/// a pool whose connections are all in use makes callers wait.
pub fn watch_pool(
    db: crate::db::Database,
    metrics: &Metrics,
    mut shutdown: ShutdownSignal,
) -> impl Future<Output = ()> + Send + 'static {
    let connections = Family::<PoolLabel, prometheus_client::metrics::gauge::Gauge>::default();
    let max = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    metrics.register("db_pool_connections", "Database connections of this process, by state", connections.clone());
    metrics.register("db_pool_max_connections", "The most database connections this process opens", max.clone());
    async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let open = i64::from(db.pool.size());
            let idle = i64::try_from(db.pool.num_idle()).unwrap_or(i64::MAX);
            connections.get_or_create(&PoolLabel { state: "in_use" }).set((open - idle).max(0));
            connections.get_or_create(&PoolLabel { state: "idle" }).set(idle);
            max.set(i64::from(db.pool.options().get_max_connections()));
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.fired() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_the_serving_flag() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(AtomicBool::new(false));
        let (trigger, signal) = crate::shutdown::channel();
        let flag = ready.clone();
        let server = tokio::spawn(async move {
            serve(listener, Metrics::new(), &crate::tls::Tls::plain(), Some(flag), signal).await
        });
        let status = || async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer.split(' ').nth(1).unwrap_or_default().to_owned()
        };
        assert_eq!(status().await, "503");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(status().await, "200");
        trigger.fire();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/loyalty.points.v1.PointsService/Earn"),
            ("loyalty.points.v1.PointsService".to_owned(), "Earn".to_owned())
        );
    }

    #[test]
    fn observed_rpcs_show_up_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.observe("loyalty.points.v1.PointsService", "Spend", tonic::Code::FailedPrecondition, 0.002);
        let text = metrics.render();
        assert!(text.contains(r#"rpc_server_requests_total{service="loyalty.points.v1.PointsService",method="Spend",code="FailedPrecondition"} 1"#), "{text}");
        assert!(text.contains("rpc_server_duration_seconds_bucket"));
    }
}
