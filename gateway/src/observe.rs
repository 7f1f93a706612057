//! One span, one log line and one metrics sample per HTTP request, labelled
//! by route template (`/v1/customers/{customer_id}/loyalty`) so label values
//! stay bounded. The span continues the caller's W3C `traceparent`, and every
//! backend call made while handling the request carries it on.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::global;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use loyalty_common::metrics::Metrics;
use loyalty_common::telemetry::HeaderExtractor;

use crate::problem::Problem;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// HTTP request counts and latencies, registered in the process's registry.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    durations: Family<HttpLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        // 500 µs up to ~16 s.
        let durations = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        metrics.register("http_server_requests", "HTTP requests served, by method, route and status", requests.clone());
        metrics.register(
            "http_server_duration_seconds",
            "HTTP request latency until the response headers, by method, route and status",
            durations.clone(),
        );
        Self { requests, durations }
    }
}

/// The span, trace context, log line and metrics of one request.
pub async fn observe(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // Unmatched paths share one label, so callers cannot mint label values.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        api.key_id = tracing::field::Empty,
        loyalty.program_id = tracing::field::Empty,
    );
    // A request left out of sampling keeps its span (its log lines need it),
    // under a context marked not sampled: nothing of it is exported, here or
    // in the services it calls.
    let parent = if loyalty_common::telemetry::exporting() && !loyalty_common::telemetry::sampled(&parent) {
        loyalty_common::telemetry::unsampled(parent)
    } else {
        parent
    };
    let _ = span.set_parent(parent);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    span.in_scope(|| {
        let millis = elapsed.as_secs_f64() * 1_000.0;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), duration_ms = millis, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), duration_ms = millis, "request served");
        }
    });
    let labels = HttpLabels { method: method.to_string(), route, status: status.as_u16() };
    metrics.requests.get_or_create(&labels).inc();
    metrics.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    response
}

/// Answers 504 problem+json when a request takes longer than `limit`.
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let detail = format!("the request took longer than {} ms", limit.as_millis());
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "REQUEST_TIMEOUT", detail).into_response()
        }
    }
}
