//! OTLP metric export beside `/metrics`: when spans are exported (an
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and `OTEL_METRICS_EXPORTER` is not
//! `none`, the same registry is pushed over OTLP/gRPC every
//! `OTEL_METRIC_EXPORT_INTERVAL` milliseconds (default 60 000), to
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or else the common endpoint.
//!
//! The registry is read through its text encoding, so every metric a
//! service registers is exported without a second instrument: counters as
//! monotonic cumulative sums, gauges as gauges, histograms as cumulative
//! explicit-bucket histograms.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// Where and how often to push, from the standard variables; `None` when export is off.
#[derive(Debug, Clone)]
pub struct Export {
    pub endpoint: String,
    pub interval: Duration,
}

impl Export {
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim() == "none") || !crate::telemetry::exporting() {
            return None;
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        let interval = var("OTEL_METRIC_EXPORT_INTERVAL").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(60_000);
        Some(Self { endpoint, interval: Duration::from_millis(interval.max(100)) })
    }
}

/// Pushes `metrics` every interval until shutdown, then once more. A failed
/// push is logged and the next one carries the cumulative values on.
/// `instance` tells this registry from others of the process (the mesh runs several).
pub async fn run(export: Export, metrics: Metrics, instance: String, mut shutdown: ShutdownSignal) {
    let started = unix_nanos(SystemTime::now());
    let channel = match tonic::transport::Endpoint::from_shared(export.endpoint.clone()) {
        Ok(endpoint) => endpoint.timeout(Duration::from_secs(10)).connect_lazy(),
        Err(error) => {
            tracing::warn!(%error, "OTLP metrics endpoint is not a URI; metric export is off");
            return;
        }
    };
    let mut client = MetricsServiceClient::new(channel);
    let mut tick = tokio::time::interval(export.interval);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = shutdown.fired() => true,
        };
        let request = encode(&metrics.render(), crate::telemetry::service_name(), &instance, started);
        if let Err(status) = client.export(request).await {
            tracing::warn!(code = ?status.code(), "OTLP metric export failed; the next push carries the totals on");
        }
        if last {
            return;
        }
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One family of the text encoding: its type, help and samples by label set.
#[derive(Default)]
struct Family {
    kind: String,
    help: String,
    /// Label set (without `le`) → sample suffix (`_total`, `_sum`, `_bucket`, ...) → values.
    series: BTreeMap<Vec<(String, String)>, Series>,
}

#[derive(Default)]
struct Series {
    value: Option<f64>,
    sum: Option<f64>,
    count: Option<f64>,
    /// (upper bound, cumulative count), `+Inf` included.
    buckets: Vec<(f64, f64)>,
}

/// The OTLP request for one reading of the registry's text encoding.
fn encode(text: &str, service: &str, instance: &str, started: u64) -> ExportMetricsServiceRequest {
    let now = unix_nanos(SystemTime::now());
    let families = parse(text);
    let metrics = families
        .into_iter()
        .filter_map(|(name, family)| {
            let data = match family.kind.as_str() {
                "counter" => metric::Data::Sum(Sum {
                    data_points: numbers(&family, started, now),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                "gauge" => metric::Data::Gauge(Gauge { data_points: numbers(&family, started, now) }),
                "histogram" => metric::Data::Histogram(Histogram {
                    data_points: histograms(&family, started, now),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
                _ => return None,
            };
            let description = family.help.trim_end_matches('.').to_owned();
            Some(Metric { name, description, unit: String::new(), metadata: Vec::new(), data: Some(data) })
        })
        .collect();
    let resource = Resource {
        attributes: vec![attribute("service.name", service), attribute("service.instance.id", instance)],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    let scope = InstrumentationScope { name: "loyalty".into(), ..InstrumentationScope::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope), metrics, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        key_strindex: 0,
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn numbers(family: &Family, started: u64, now: u64) -> Vec<NumberDataPoint> {
    family
        .series
        .iter()
        .filter_map(|(labels, series)| {
            let value = series.value?;
            Some(NumberDataPoint {
                attributes: attributes(labels),
                start_time_unix_nano: started,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..NumberDataPoint::default()
            })
        })
        .collect()
}

fn histograms(family: &Family, started: u64, now: u64) -> Vec<HistogramDataPoint> {
    family
        .series
        .iter()
        .map(|(labels, series)| {
            let mut buckets = series.buckets.clone();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let explicit_bounds: Vec<f64> = buckets.iter().map(|b| b.0).filter(|b| b.is_finite()).collect();
            // Cumulative counts per upper bound → a count per bucket.
            let mut previous = 0.0;
            let bucket_counts = buckets
                .iter()
                .map(|&(_, cumulative)| {
                    let count = (cumulative - previous).max(0.0);
                    previous = cumulative;
                    count as u64
                })
                .collect();
            HistogramDataPoint {
                attributes: attributes(labels),
                start_time_unix_nano: started,
                time_unix_nano: now,
                count: series.count.unwrap_or(previous) as u64,
                sum: series.sum,
                bucket_counts,
                explicit_bounds,
                ..HistogramDataPoint::default()
            }
        })
        .collect()
}

/// Reads the OpenMetrics text that `Metrics::render` writes.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().kind = kind.trim().to_owned();
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().help = help.to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((sample, labels, value)) = split_sample(line) else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (family, suffix) = family_of(&families, sample);
        let Some(family) = family.and_then(|name| families.get_mut(&name)) else { continue };
        let mut le = None;
        let labels: Vec<(String, String)> = labels
            .into_iter()
            .filter(|(k, v)| {
                if k == "le" {
                    le = Some(if v == "+Inf" { f64::INFINITY } else { v.parse().unwrap_or(f64::INFINITY) });
                    false
                } else {
                    true
                }
            })
            .collect();
        let series = family.series.entry(labels).or_default();
        match suffix {
            "_sum" => series.sum = Some(value),
            "_count" => series.count = Some(value),
            "_bucket" => series.buckets.push((le.unwrap_or(f64::INFINITY), value)),
            _ => series.value = Some(value),
        }
    }
    families
}

/// The family a sample belongs to, and the suffix it carries.
fn family_of<'a>(families: &BTreeMap<String, Family>, sample: &'a str) -> (Option<String>, &'a str) {
    if families.contains_key(sample) {
        return (Some(sample.to_owned()), "");
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && families.contains_key(base)
        {
            return (Some(base.to_owned()), suffix);
        }
    }
    (None, "")
}

/// `name{a="x",b="y"} 1.5` → (`name`, labels, `1.5`).
fn split_sample(line: &str) -> Option<(&str, Vec<(String, String)>, &str)> {
    match line.find('{') {
        None => {
            let (name, value) = line.split_once(' ')?;
            Some((name, Vec::new(), value.split(' ').next()?))
        }
        Some(open) => {
            let name = &line[..open];
            let mut labels = Vec::new();
            let mut rest = &line[open + 1..];
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(after) = rest.strip_prefix('}') {
                    let value = after.trim().split(' ').next()?;
                    return Some((name, labels, value));
                }
                let (key, after) = rest.split_once("=\"")?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars.next()?;
                    match c {
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        '"' => break i,
                        other => value.push(other),
                    }
                };
                labels.push((key.to_owned(), value));
                rest = &after[end + 1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge as PromGauge;

    use super::*;

    fn point_value(metric: &Metric) -> Vec<(Vec<(String, String)>, f64)> {
        let points = match metric.data.as_ref().unwrap() {
            metric::Data::Sum(sum) => &sum.data_points,
            metric::Data::Gauge(gauge) => &gauge.data_points,
            other => panic!("{other:?}"),
        };
        points
            .iter()
            .map(|p| {
                let labels = p
                    .attributes
                    .iter()
                    .map(|kv| {
                        let Some(any_value::Value::StringValue(v)) = kv.value.as_ref().unwrap().value.as_ref() else {
                            panic!()
                        };
                        (kv.key.clone(), v.clone())
                    })
                    .collect();
                let Some(number_data_point::Value::AsDouble(v)) = p.value else { panic!() };
                (labels, v)
            })
            .collect()
    }

    #[test]
    fn every_kind_of_metric_in_the_registry_is_exported_with_its_values() {
        let metrics = Metrics::new();
        metrics.observe("loyalty.points.v1.PointsService", "Earn", tonic::Code::Ok, 0.003);
        metrics.observe("loyalty.points.v1.PointsService", "Earn", tonic::Code::Ok, 0.2);
        metrics.observe("loyalty.points.v1.PointsService", "Spend", tonic::Code::Unavailable, 0.001);
        let hits = Counter::<u64>::default();
        hits.inc_by(7);
        metrics.register("balance_cache_hits", "GetBalance answers served from the cache", hits);
        let head = PromGauge::<i64>::default();
        head.set(42);
        metrics.register("ledger_stream_head", "The \"last\" sequence", head);

        let request = encode(&metrics.render(), "points", "127.0.0.1:9101", 1);
        let resource = &request.resource_metrics[0];
        let names: Vec<_> = resource.resource.as_ref().unwrap().attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(names, ["service.name", "service.instance.id"]);
        let metrics: BTreeMap<_, _> = resource.scope_metrics[0].metrics.iter().map(|m| (m.name.as_str(), m)).collect();

        let hits = metrics["balance_cache_hits"];
        assert!(matches!(hits.data, Some(metric::Data::Sum(Sum { is_monotonic: true, .. }))));
        assert_eq!(point_value(hits), vec![(vec![], 7.0)]);
        assert_eq!(point_value(metrics["ledger_stream_head"]), vec![(vec![], 42.0)]);
        assert_eq!(metrics["ledger_stream_head"].description, "The \"last\" sequence");

        let requests = point_value(metrics["rpc_server_requests"]);
        let earn = vec![
            ("service".to_owned(), "loyalty.points.v1.PointsService".to_owned()),
            ("method".to_owned(), "Earn".to_owned()),
            ("code".to_owned(), "Ok".to_owned()),
        ];
        assert!(requests.contains(&(earn.clone(), 2.0)), "{requests:?}");

        let Some(metric::Data::Histogram(latency)) = &metrics["rpc_server_duration_seconds"].data else { panic!() };
        let point = latency.data_points.iter().find(|p| attributes(&earn) == p.attributes).unwrap();
        assert_eq!(point.count, 2);
        assert!((point.sum.unwrap() - 0.203).abs() < 1e-9);
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1, "one more bucket: +Inf");
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 2);
        // 3 ms and 200 ms fall in different buckets.
        assert_eq!(point.bucket_counts.iter().filter(|c| **c == 1).count(), 2);
    }

    #[test]
    fn label_values_are_unescaped() {
        let (name, labels, value) = split_sample(r#"m_total{a="x\"y",b="c\\d,e"} 3"#).unwrap();
        assert_eq!((name, value), ("m_total", "3"));
        assert_eq!(labels, vec![("a".into(), "x\"y".into()), ("b".into(), "c\\d,e".into())]);
    }
}
