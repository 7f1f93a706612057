//! One request's whole trace, as an operator's OTLP receiver gets it: the
//! services export through the real telemetry set-up (`telemetry::init`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) to a receiver in this test, and one
//! `POST /v1/orders` must arrive as one trace with the gateway's server
//! span, a client and a server span for every gRPC hop, the batch commit,
//! its database statements and Redis round trips, each under the right
//! parent, and no attribute naming the customer, the order or the key.
//! The same receiver gets each registry's metrics, pushed beside `/metrics`.
//! Its own test binary: it installs the process's global subscriber.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use loyalty_common::otlp_sink::{ReceivedSpan as Received, Sink};
use loyalty_common::telemetry::{LogFormat, TelemetryArgs};
use loyalty_gateway::keys::Scope;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use reqwest::Method;
use tokio::net::TcpListener;

use support::{Backend, Harness, Options, eventually};

#[test]
fn one_order_is_one_trace_down_to_the_database() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // SAFETY: set before any other thread of this test binary reads the
    // environment (the runtime's workers are idle; nothing has started yet).
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
        std::env::set_var("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        std::env::set_var("OTEL_TRACES_SAMPLER_ARG", "1.0");
        std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "200");
    }
    runtime.block_on(async move {
        let receiver = Sink::new(100_000);
        let collector = receiver.serve(listener);
        let args = TelemetryArgs { log_format: LogFormat::Text, log_filter: "warn".into() };
        let telemetry = loyalty_common::telemetry::init("loyalty-test", &args).expect("telemetry starts");

        let h = Harness::start_with(Options { backend: Backend::Postgres, redis: true, ..Options::default() }).await;
        let key = h.key("shop", Scope::Server).await;
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let (customer, order) = ("ottilie-traced", "order-traced-7731");
        let body = serde_json::json!({
            "customer_id": customer, "order_id": order, "amount_minor": 4200, "currency": "EUR",
        });
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", "traced-order-1"),
            ("traceparent", traceparent.as_str()),
        ];
        let answer =
            h.send(Method::POST, "/v1/orders", Some(&key), &headers, Some(serde_json::to_vec(&body).unwrap())).await;
        assert!(answer.status.is_success(), "{:?}", answer.body);

        let spans_of_trace =
            || -> Vec<Received> { receiver.spans().into_iter().filter(|s| s.trace == trace_id).collect() };
        let complete = |spans: &[Received]| {
            let has = |kind: SpanKind, attribute: &str| {
                spans.iter().any(|s| s.kind == kind as i32 && s.attributes.contains_key(attribute))
            };
            has(SpanKind::Server, "http.route")
                && has(SpanKind::Client, "rpc.service")
                && has(SpanKind::Server, "rpc.service")
                && has(SpanKind::Client, "db.system")
                && spans.iter().any(|s| s.name == "batch ledger")
                && spans.iter().any(|s| s.attributes.get("db.system").is_some_and(|v| v == "redis"))
        };
        let arrived = eventually(Duration::from_secs(20), || async { complete(&spans_of_trace()) }).await;
        let spans = spans_of_trace();
        let names: BTreeSet<_> = spans.iter().map(|s| format!("{} ({})", s.name, s.kind)).collect();
        let received = receiver.span_count();
        assert!(arrived, "the trace is incomplete after 20 s ({received} spans received in all): {names:#?}");

        let by_id: BTreeMap<&str, &Received> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
        // The root continues the caller's span; every other span's parent is in the trace.
        let root = spans.iter().find(|s| s.attributes.contains_key("http.route")).unwrap();
        assert_eq!(root.name, "POST /v1/orders");
        assert_eq!(root.parent, "00f067aa0ba902b7", "the gateway continues the caller's span");
        for span in &spans {
            if span.id != root.id {
                assert!(by_id.contains_key(span.parent.as_str()), "{} has its parent outside the trace", span.name);
            }
        }
        let ancestors = |span: &Received| {
            let mut chain = Vec::new();
            let mut at = span;
            while let Some(parent) = by_id.get(at.parent.as_str()) {
                chain.push(*parent);
                at = parent;
            }
            chain
        };
        // Each gRPC hop: the client span's child is the callee's server span of the same method.
        let clients: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client as i32 && s.attributes.contains_key("rpc.service"))
            .collect();
        assert!(clients.iter().any(|c| c.attributes["peer.service"] == "points"), "{names:#?}");
        for client in &clients {
            let served = spans.iter().find(|s| s.parent == client.id && s.kind == SpanKind::Server as i32);
            let served = served.unwrap_or_else(|| panic!("no server span under {}", client.name));
            assert_eq!(served.attributes["rpc.method"], client.attributes["rpc.method"]);
            assert_eq!(client.attributes["rpc.grpc.status_code"], "0", "{}", client.name);
        }
        // The batch commit hangs under the points server span that queued it, and links to it.
        let batch = spans.iter().find(|s| s.name == "batch ledger").unwrap();
        let queued_by = by_id[batch.parent.as_str()];
        assert_eq!(queued_by.kind, SpanKind::Server as i32, "{}", queued_by.name);
        assert!(batch.links.contains(&queued_by.id), "the batch links to its caller");
        // Database statements (and the commit) under the batch, with their class and no values.
        let statements: Vec<_> =
            spans.iter().filter(|s| s.attributes.get("db.system").is_some_and(|v| v == "postgresql")).collect();
        assert!(
            statements.iter().any(|s| ancestors(s).iter().any(|a| a.id == batch.id) && s.name.starts_with("INSERT")),
            "{names:#?}"
        );
        assert!(statements.iter().any(|s| s.attributes["db.operation.name"] == "COMMIT"), "{names:#?}");
        for statement in &statements {
            assert_eq!(statement.kind, SpanKind::Client as i32);
            assert!(!statement.attributes.contains_key("db.statement"), "{}", statement.name);
        }
        // The balance written to Redis after the commit, under the same batch.
        let redis = spans.iter().find(|s| s.attributes.get("db.system").is_some_and(|v| v == "redis")).unwrap();
        assert!(ancestors(redis).iter().any(|a| a.id == batch.id), "{}", redis.name);

        // Nothing personal and no secret in any attribute of any span received.
        let everything = receiver.spans();
        for span in &everything {
            for (name, value) in span.attributes.iter().chain([(&"name".to_owned(), &span.name)]) {
                for secret in [customer, order, key.as_str()] {
                    assert!(!value.contains(secret), "{}: {name} = {value}", span.name);
                }
            }
        }

        // A caller that decided not to sample: nothing of its request is recorded, anywhere.
        let unsampled = "5bf92f3577b34da6a3ce929d0e0e4736";
        let marker = "6bf92f3577b34da6a3ce929d0e0e4736";
        for (trace, flags) in [(unsampled, "00"), (marker, "01")] {
            let traceparent = format!("00-{trace}-00f067aa0ba902b7-{flags}");
            let page = format!("/v1/customers/{customer}/loyalty");
            let answer = h.send(Method::GET, &page, Some(&key), &[("traceparent", traceparent.as_str())], None).await;
            assert!(answer.status.is_success(), "{:?}", answer.body);
        }
        let points_served = |trace: &str| {
            receiver
                .spans()
                .iter()
                .any(|s| s.trace == trace && s.attributes.get("rpc.method").is_some_and(|m| m == "GetAccountSummary"))
        };
        // Spans are exported in order of ending: once the later request's are in, the earlier's would be.
        assert!(eventually(Duration::from_secs(10), || async { points_served(marker) }).await, "the sampled page");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leaked: Vec<_> = receiver.spans().into_iter().filter(|s| s.trace == unsampled).map(|s| s.name).collect();
        assert!(leaked.is_empty(), "spans of a request its caller did not sample: {leaked:?}");

        // Metrics are pushed beside /metrics: each registry (the gateway's, points') under its own instance.
        let gateway_instance = h.gateway().metrics_addr().to_string();
        let points_instance = h.service_metrics_addr("points").to_string();
        let pushed_all = || {
            let pushed = receiver.metric_names();
            let has = |instance: &str, name: &str| pushed.get(instance).is_some_and(|names| names.contains(name));
            has(&gateway_instance, "http_server_requests")
                && has(&points_instance, "rpc_server_requests")
                && has(&points_instance, "rpc_server_duration_seconds")
                && has(&points_instance, "ledger_stream_head")
                && has(&points_instance, "db_pool_acquire_seconds")
        };
        let arrived = eventually(Duration::from_secs(10), || async { pushed_all() }).await;
        assert!(arrived, "metrics pushed over OTLP: {:#?}", receiver.metric_names());

        h.stop().await;
        // Flushes what is left; the test's assertions are already made.
        telemetry.shutdown();
        collector.abort();
    });
}
