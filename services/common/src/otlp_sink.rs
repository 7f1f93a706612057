//! A small OTLP/gRPC receiver: takes traces, logs and metrics as a
//! collector would, keeps the spans (up to a bound) and the names of the
//! metrics pushed, and counts everything. For tests and for load runs that
//! measure what exporting costs; not a collector to run in production.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A span as received, ids in hex, attributes as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace: String,
    pub id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// The span ids this span links to.
    pub links: Vec<String>,
}

/// What the receiver got; cheap to clone.
#[derive(Clone, Default)]
pub struct Sink {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    metrics: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    span_count: Arc<AtomicU64>,
    keep: usize,
}

impl Sink {
    /// Keeps the first `keep` spans (all are counted).
    pub fn new(keep: usize) -> Self {
        Self { keep, ..Self::default() }
    }

    /// Serves OTLP/gRPC on `listener` until the returned task is aborted.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
        let serving = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(LogsServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(serving)
    }

    /// The spans kept so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("sink lock").clone()
    }

    /// Every span received, kept or not.
    pub fn span_count(&self) -> u64 {
        self.span_count.load(Ordering::Relaxed)
    }

    /// The names of the metrics pushed, by the pushing registry's `service.instance.id`.
    pub fn metric_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.metrics.lock().expect("sink lock").clone()
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut kept = self.spans.lock().expect("sink lock");
        for span in request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans) {
            self.span_count.fetch_add(1, Ordering::Relaxed);
            if kept.len() >= self.keep {
                continue;
            }
            let attributes = span
                .attributes
                .iter()
                .map(|kv| {
                    (kv.key.clone(), kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or_else(String::new, text))
                })
                .collect();
            kept.push(ReceivedSpan {
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes,
                links: span.links.iter().map(|l| hex(&l.span_id)).collect(),
            });
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Logs are taken and dropped.
#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        _request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Ok(Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut pushed = self.metrics.lock().expect("sink lock");
        for resource in request.into_inner().resource_metrics {
            let instance = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(text)
                .unwrap_or_default();
            let names = pushed.entry(instance).or_default();
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().filter(|m| m.data.is_some()).map(|m| m.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

fn text(value: &AnyValue) -> String {
    match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
