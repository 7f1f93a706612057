//! The client side of a trace: a span for every outgoing gRPC call, every
//! database statement, every Redis round trip and every batch commit, each
//! a child of the request it serves. Spans are made only while they are
//! exported and a traced request is in progress, so a process without an
//! OTLP endpoint (or a background job outside any request) pays nothing.
//!
//! Attributes follow the OpenTelemetry semantic conventions (`rpc.*`,
//! `db.*`) and never carry a parameter value: no customer id, no key.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{KeyValue, global};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;

use crate::telemetry::exporting;

/// True when a span made now would be exported: spans leave the process and
/// the current span belongs to a sampled trace.
pub fn tracing_request() -> bool {
    exporting() && {
        let current = tracing::Span::current();
        !current.is_none() && current.context().span().span_context().is_sampled()
    }
}

/// A client span for one Redis round trip (`operation`: the command, or
/// `PIPELINE`), or a disabled span when nothing is traced here.
pub fn redis(operation: &'static str, commands: usize) -> tracing::Span {
    if !tracing_request() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system = "redis",
        db.operation.name = operation,
        db.operation.batch.size = commands,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks `span` failed (a Redis or database error; never its message, which may quote a key).
pub fn failed(span: &tracing::Span) {
    span.record("otel.status_code", "ERROR");
}

/// The span of one batch commit (`name`: the batch worker), a child of the
/// first caller's request and linked to every caller's, so each request's
/// trace leads to the commit that carried it and the commit to all of them.
pub fn batch(name: &'static str, callers: &[tracing::Span]) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    let contexts: Vec<opentelemetry::Context> = callers
        .iter()
        .filter(|s| !s.is_none())
        .map(OpenTelemetrySpanExt::context)
        .filter(|c| c.span().span_context().is_sampled())
        .collect();
    let Some(first) = contexts.first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        parent: None,
        "batch",
        otel.name = format!("batch {name}"),
        otel.kind = "internal",
        batch.name = name,
        batch.size = callers.len(),
    );
    let _ = span.set_parent(first.clone());
    for context in &contexts {
        span.add_link(context.span().span_context().clone());
    }
    span
}

/// The current span when a request is traced (to carry into a batch), else none.
pub fn caller() -> tracing::Span {
    if exporting() { tracing::Span::current() } else { tracing::Span::none() }
}

/// Tower layer for gRPC channels: a client span per call, made current
/// while the call is sent so the trace context it carries names this span
/// as the callee's parent.
#[derive(Clone, Debug)]
pub struct ClientSpans<S> {
    inner: S,
}

impl<S> ClientSpans<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for ClientSpans<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<SpanBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = grpc_client_span(request.uri().path());
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let recorded = span.clone();
            match future.instrument(span.clone()).await {
                Ok(response) => {
                    // Errors are trailers-only responses: the status is in the headers.
                    if let Some(code) = grpc_status(response.headers()) {
                        record_status(&recorded, code);
                    }
                    Ok(response.map(|inner| SpanBody { inner, span }))
                }
                Err(error) => {
                    failed(&recorded);
                    Err(error)
                }
            }
        })
    }
}

fn grpc_client_span(path: &str) -> tracing::Span {
    if !tracing_request() {
        return tracing::Span::none();
    }
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    // `loyalty.points.v1.PointsService` → `points`.
    let peer = service.split('.').nth(1).unwrap_or(service);
    tracing::info_span!(
        "rpc client",
        otel.name = format!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        peer.service = peer,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

fn record_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        failed(span);
    }
}

/// A response body that keeps its call's span open until the last frame,
/// and records the status from the trailers.
pub struct SpanBody<B> {
    inner: B,
    span: tracing::Span,
}

impl<B> http_body::Body for SpanBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    record_status(&this.span, code);
                }
            }
            Poll::Ready(Some(Err(_))) => failed(&this.span),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a database URL names, for `db.system` (set when a pool is made).
static DB_SYSTEM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

pub(crate) fn set_db_system(system: &'static str) {
    let _ = DB_SYSTEM.set(system);
}

/// Turns sqlx's per-statement events (target `sqlx::query`, sent when a
/// statement finishes, with its duration) into client spans under the
/// current request: named by statement class (`SELECT point_lots`), with
/// the rows returned, never the statement's parameters.
pub struct StatementSpans;

impl<S> Layer<S> for StatementSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        if event.metadata().target() != "sqlx::query" || !tracing_request() {
            return;
        }
        let parent = tracing::Span::current().context();
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        let sql = if fields.statement.trim().is_empty() { &fields.summary } else { &fields.statement };
        let (operation, collection) = statement_class(sql);
        let name = match &collection {
            Some(collection) => format!("{operation} {collection}"),
            None => operation.clone(),
        };
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_secs_f64(fields.elapsed_secs.max(0.0))).unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("db.system", *DB_SYSTEM.get().unwrap_or(&"other_sql")),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.response.returned_rows", i64::try_from(fields.rows_returned).unwrap_or(i64::MAX)),
        ];
        if let Some(collection) = collection {
            attributes.push(KeyValue::new("db.collection.name", collection));
        }
        let tracer = global::tracer("loyalty-db");
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

#[derive(Default)]
struct StatementFields {
    summary: String,
    statement: String,
    rows_returned: u64,
    elapsed_secs: f64,
}

impl Visit for StatementFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => value.clone_into(&mut self.summary),
            "db.statement" => value.clone_into(&mut self.statement),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = value;
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// The statement's class: its first keyword, and the table it writes or
/// first reads when that is plain to see. Only keywords and identifiers
/// come out, never a literal.
fn statement_class(sql: &str) -> (String, Option<String>) {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let operation = words.first().map_or_else(|| "UNKNOWN".to_owned(), |w| w.to_ascii_uppercase());
    let after = |keyword: &str| {
        words.iter().position(|w| w.eq_ignore_ascii_case(keyword)).and_then(|i| words.get(i + 1)).copied()
    };
    let table = match operation.as_str() {
        "INSERT" => after("INTO"),
        "UPDATE" => words.get(1).copied(),
        "DELETE" | "SELECT" => after("FROM"),
        _ => None,
    };
    let table = table
        .map(|t| t.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect::<String>())
        .filter(|t| !t.is_empty() && t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()));
    (operation, table)
}

/// How long callers waited for a database connection, all pools of this process.
pub(crate) static POOL_ACQUIRE: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 18)));

/// Calls answered UNAVAILABLE because no connection was free within the
/// acquire timeout (such waits end without an acquire event).
pub(crate) static POOL_TIMEOUTS: LazyLock<prometheus_client::metrics::counter::Counter> =
    LazyLock::new(Default::default);

/// Feeds `db_pool_acquire_seconds` from sqlx's acquire events (target
/// `sqlx::pool::acquire`, sent once a connection is lent).
pub struct AcquireTimes;

/// [`AcquireTimes`], seeing nothing but the acquire events: what `telemetry::init` installs.
pub fn acquire_times<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    AcquireTimes.with_filter(
        tracing_subscriber::filter::Targets::new().with_target("sqlx::pool::acquire", tracing::Level::TRACE),
    )
}

impl<S: tracing::Subscriber> Layer<S> for AcquireTimes {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        if event.metadata().target() != "sqlx::pool::acquire" {
            return;
        }
        struct Waited(Option<f64>);
        impl Visit for Waited {
            fn record_f64(&mut self, field: &Field, value: f64) {
                if field.name() == "acquired_after_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
        }
        let mut waited = Waited(None);
        event.record(&mut waited);
        if let Some(seconds) = waited.0 {
            POOL_ACQUIRE.observe(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classed_by_keyword_and_table_never_by_literal() {
        let class = |sql: &str| statement_class(sql);
        assert_eq!(
            class("INSERT INTO point_lots (a, b) VALUES ($1, $2)"),
            ("INSERT".into(), Some("point_lots".into()))
        );
        assert_eq!(class("update accounts SET x = 1"), ("UPDATE".into(), Some("accounts".into())));
        assert_eq!(
            class("SELECT k.a FROM idempotency_keys k JOIN x"),
            ("SELECT".into(), Some("idempotency_keys".into()))
        );
        assert_eq!(class("DELETE FROM profiles WHERE id = 'anna'"), ("DELETE".into(), Some("profiles".into())));
        assert_eq!(class("SELECT 1 FROM ('anna')"), ("SELECT".into(), None));
        assert_eq!(class("COMMIT"), ("COMMIT".into(), None));
        assert_eq!(class(""), ("UNKNOWN".into(), None));
    }
}
