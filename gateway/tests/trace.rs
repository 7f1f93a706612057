//! The caller's W3C trace context reaches the backend: the gateway's request
//! span continues the incoming `traceparent`, and the gRPC calls it makes
//! carry that trace on. Its own test binary, because it installs a global
//! tracing subscriber with an OpenTelemetry layer.

mod support;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use loyalty_gateway::keys::Scope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use reqwest::Method;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use support::{Harness, Options};

/// A call's gRPC path and the `traceparent` it carried.
type Call = (String, Option<String>);

/// Stands in for the points service: notes each call's `traceparent` and answers UNAVAILABLE.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

impl NamedService for Recorder {
    const NAME: &'static str = "loyalty.points.v1.PointsService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Recorder {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.0.lock().unwrap().push((request.uri().path().to_owned(), traceparent));
        ready(Ok(tonic::Status::unavailable("recording only").into_http()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_callers_trace_reaches_every_backend_call() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway-test")))
        .try_init()
        .expect("the only subscriber in this test binary");

    let recorder = Recorder::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let points_addr = listener.local_addr().unwrap();
    let serving = tonic::transport::Server::builder()
        .add_service(recorder.clone())
        .serve_with_incoming(TcpIncoming::from(listener));
    let backend = tokio::spawn(serving);

    let h = Harness::start_with(Options { points_addr: Some(points_addr.to_string()), ..Options::default() }).await;
    let key = h.key("shop", Scope::Server).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let answer =
        h.send(Method::GET, "/v1/customers/anna/loyalty", Some(&key), &[("traceparent", &traceparent)], None).await;
    answer.problem(503, "UNAVAILABLE");

    let calls = recorder.0.lock().unwrap().clone();
    let methods: Vec<_> = calls.iter().map(|(path, _)| path.rsplit('/').next().unwrap().to_owned()).collect();
    assert!(methods.contains(&"GetAccountSummary".to_owned()), "{methods:?}");
    for (path, sent) in &calls {
        let sent = sent.as_deref().unwrap_or_else(|| panic!("{path} was called without traceparent"));
        let parts: Vec<_> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(parts[1], trace_id, "{path} left the caller's trace: {sent}");
        assert_ne!(parts[2], caller_span, "{path} should be a child of the gateway's span: {sent}");
    }

    // A request without trace context starts a fresh trace, still propagated.
    recorder.0.lock().unwrap().clear();
    h.get(&key, "/v1/customers/anna/loyalty").await.problem(503, "UNAVAILABLE");
    let calls = recorder.0.lock().unwrap().clone();
    assert!(!calls.is_empty());
    for (path, sent) in &calls {
        let sent = sent.as_deref().unwrap_or_else(|| panic!("{path} was called without traceparent"));
        assert!(!sent.contains(trace_id), "{sent}");
    }

    h.stop().await;
    backend.abort();
    let _ = provider.shutdown();
}
