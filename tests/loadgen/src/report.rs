//! The report: a terminal table (its `Display`) and the same data as JSON.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Correctness;
use crate::drive::{OpRecord, PhaseResult};
use crate::system::Machine;
use crate::{Args, Plan, Scenario};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub settings: Settings,
    pub machine: Machine,
    pub service: RunResult,
    pub baselines: Vec<BaselineReport>,
    /// With `--start-points` only.
    pub startup: Option<Startup>,
    pub memory: Memory,
    pub correctness: Correctness,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub target: String,
    pub in_process: bool,
    /// Back-end of the in-process service (credentials removed).
    pub database: Option<String>,
    pub cache: Option<String>,
    pub open_loop: bool,
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub connections: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    /// Slices the measured time was split into, alternating service and baselines.
    pub rounds: u32,
    pub customers: u32,
    pub hot_set: u32,
    pub skew: f64,
    pub seed: u64,
    pub program: String,
}

impl Settings {
    pub fn new(args: &Args, plan: &Plan, target: &str) -> Self {
        let in_process = args.start_points;
        Self {
            target: target.to_owned(),
            in_process,
            database: in_process.then(|| {
                args.database_url.as_deref().map_or_else(|| "sqlite (temporary file)".to_owned(), without_credentials)
            }),
            cache: in_process
                .then(|| args.redis_url.as_deref().map_or_else(|| "in-process".to_owned(), without_credentials)),
            open_loop: plan.rate.is_some(),
            rate: plan.rate,
            concurrency: plan.concurrency,
            connections: plan.client.connections,
            duration_secs: plan.duration.as_secs_f64(),
            warmup_secs: plan.warmup.as_secs_f64(),
            rounds: plan.rounds,
            customers: plan.workload.customers,
            hot_set: plan.workload.hot,
            skew: plan.workload.skew,
            seed: plan.seed,
            program: plan.program.clone(),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://host/db`.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

/// One measured run: the service, or a baseline.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub elapsed_secs: f64,
    /// Calls answered (OK or an expected refusal).
    pub answered: u64,
    pub ok: u64,
    pub refused: u64,
    /// Unexpected failures by gRPC code (or the baseline's error kind); not timed.
    pub errors: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    /// OK answers per second until the last OK one: in spend-contended, the
    /// rate of successful spends while the points lasted.
    pub ok_rate_rps: f64,
    /// Microseconds, of answered calls.
    pub latency_us: Latency,
    pub ops: Vec<OpResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    pub name: String,
    pub answered: u64,
    pub ok: u64,
    pub refused: u64,
    pub errors: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    pub latency_us: Latency,
}

impl RunResult {
    pub fn from_phase(phase: &PhaseResult) -> Self {
        let secs = phase.elapsed.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let op = |record: &OpRecord| OpResult {
            name: record.name.to_owned(),
            answered: record.answered(),
            ok: record.ok,
            refused: record.refused,
            errors: record.errors.clone(),
            throughput_rps: rate(record.answered()),
            latency_us: Latency::of(&record.latency_us),
        };
        Self {
            label: phase.label.clone(),
            elapsed_secs: secs,
            answered: phase.answered(),
            ok: phase.ops.iter().map(|o| o.ok).sum(),
            refused: phase.ops.iter().map(|o| o.refused).sum(),
            errors: phase.errors(),
            throughput_rps: phase.throughput(),
            ok_rate_rps: phase.ok_rate(),
            latency_us: Latency::of(&phase.latency_us()),
            ops: phase.ops.iter().map(op).collect(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub name: String,
    pub what: String,
    pub result: Option<RunResult>,
    /// Why the baseline could not be measured.
    pub error: Option<String>,
    /// Service throughput / baseline throughput.
    pub throughput_ratio: Option<f64>,
    /// Service OK rate / baseline OK rate (see [`RunResult::ok_rate_rps`]):
    /// the spend-contended ratio, where refusals are cheaper than spends.
    pub ok_rate_ratio: Option<f64>,
    pub service_p99_us: u64,
    pub baseline_p99_us: Option<u64>,
}

impl BaselineReport {
    pub fn measured(name: &str, what: &str, service: &PhaseResult, baseline: PhaseResult) -> Self {
        let result = RunResult::from_phase(&baseline);
        let service = RunResult::from_phase(service);
        Self {
            name: name.to_owned(),
            what: what.to_owned(),
            throughput_ratio: (result.throughput_rps > 0.0).then(|| service.throughput_rps / result.throughput_rps),
            ok_rate_ratio: (result.ok_rate_rps > 0.0).then(|| service.ok_rate_rps / result.ok_rate_rps),
            service_p99_us: service.latency_us.p99,
            baseline_p99_us: Some(result.latency_us.p99),
            result: Some(result),
            error: None,
        }
    }

    pub fn unavailable(name: &str, what: &str, error: String) -> Self {
        Self {
            name: name.to_owned(),
            what: what.to_owned(),
            result: None,
            error: Some(error),
            throughput_ratio: None,
            ok_rate_ratio: None,
            service_p99_us: 0,
            baseline_p99_us: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Startup {
    /// From the start call to `PointsServer::start` returning (storage connected, migrations applied).
    pub started_ms: f64,
    /// From the start call to the first SERVING answer of gRPC health.
    pub ready_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Whose memory: this process (service in-process), a pid, or nothing.
    pub source: String,
    /// VmRSS after start-up, before seeding and load.
    pub idle_rss_kb: Option<u64>,
    /// Highest VmRSS sampled once a second during the measured run.
    pub load_rss_max_kb: Option<u64>,
    /// VmRSS when the measured run ended.
    pub end_rss_kb: Option<u64>,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "-".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0))
}

fn row(f: &mut fmt::Formatter<'_>, name: &str, r: &RunResult) -> fmt::Result {
    writeln!(
        f,
        "{name:<34} {:>10.0} {:>10} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        r.throughput_rps,
        r.ok,
        r.refused,
        r.error_count(),
        ms(r.latency_us.p50),
        ms(r.latency_us.p90),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        ms(r.latency_us.max),
    )
}

fn op_rows(f: &mut fmt::Formatter<'_>, r: &RunResult) -> fmt::Result {
    if r.ops.len() < 2 {
        return Ok(());
    }
    for op in &r.ops {
        writeln!(
            f,
            "{:<34} {:>10.0} {:>10} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            format!("  {}", op.name),
            op.throughput_rps,
            op.ok,
            op.refused,
            op.errors.values().sum::<u64>(),
            ms(op.latency_us.p50),
            ms(op.latency_us.p90),
            ms(op.latency_us.p99),
            ms(op.latency_us.p999),
            ms(op.latency_us.max),
        )?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let mode = match s.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        let rounds = if s.rounds > 1 {
            format!(" in {} rounds alternating with the baselines", s.rounds)
        } else {
            String::new()
        };
        writeln!(
            f,
            "\nscenario {} — {mode}, {} clients on {} connection(s), {} s measured{rounds} after {} s warmup",
            self.scenario.name(),
            s.concurrency,
            s.connections,
            s.duration_secs,
            s.warmup_secs
        )?;
        match (&s.database, &s.cache) {
            (Some(database), Some(cache)) => {
                writeln!(f, "service: in process on {} (database {database}, cache {cache})", s.target)?
            }
            _ => writeln!(f, "service: {}", s.target)?,
        }
        writeln!(
            f,
            "accounts: {} customers, hot set {}, skew {}, program {}",
            s.customers, s.hot_set, s.skew, s.program
        )?;
        let m = &self.machine;
        writeln!(f, "machine: {} CPU(s), {}, {} MB RAM\n", m.cpus, m.cpu_model, m.memory_total_mb.unwrap_or(0))?;

        writeln!(
            f,
            "{:<34} {:>10} {:>10} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "run (latency in ms)", "req/s", "ok", "refused", "errors", "p50", "p90", "p99", "p99.9", "max"
        )?;
        row(f, &format!("service {}", self.scenario.name()), &self.service)?;
        op_rows(f, &self.service)?;
        for baseline in &self.baselines {
            match &baseline.result {
                Some(result) => {
                    row(f, &format!("baseline {}", baseline.name), result)?;
                    op_rows(f, result)?;
                }
                None => writeln!(
                    f,
                    "baseline {:<25} unavailable: {}",
                    baseline.name,
                    baseline.error.as_deref().unwrap_or("")
                )?,
            }
        }

        let measured: Vec<_> = self.baselines.iter().filter(|b| b.result.is_some()).collect();
        if !measured.is_empty() {
            // Refusals are cheaper than spends: OK answers per second is the fair comparison.
            let refusals = self.scenario == Scenario::SpendContended;
            writeln!(
                f,
                "\n{:<34} {:>12} {:>14} {:>14}{}",
                "service / baseline",
                "throughput",
                "service p99",
                "baseline p99",
                if refusals { "   OK/s while points lasted" } else { "" }
            )?;
            for b in measured {
                let ok_rate = match (refusals, b.ok_rate_ratio) {
                    (true, Some(ratio)) => format!(" {ratio:>14.2}x"),
                    _ => String::new(),
                };
                writeln!(
                    f,
                    "{:<34} {:>11.2}x {:>11} ms {:>11} ms{ok_rate}",
                    b.name,
                    b.throughput_ratio.unwrap_or(0.0),
                    ms(b.service_p99_us),
                    ms(b.baseline_p99_us.unwrap_or(0)),
                )?;
            }
            for b in &self.baselines {
                writeln!(f, "  {}: {}", b.name, b.what)?;
            }
        }

        writeln!(f)?;
        if !self.service.errors.is_empty() {
            let errors: Vec<String> = self.service.errors.iter().map(|(code, n)| format!("{code} {n}")).collect();
            writeln!(f, "service errors by code: {}", errors.join(", "))?;
        }
        if self.service.refused > 0 {
            writeln!(f, "refused as expected (FAILED_PRECONDITION INSUFFICIENT_POINTS): {}", self.service.refused)?;
        }
        if let Some(startup) = &self.startup {
            writeln!(
                f,
                "start-up to ready: {:.1} ms (PointsServer::start returned after {:.1} ms)",
                startup.ready_ms, startup.started_ms
            )?;
        }
        writeln!(
            f,
            "memory ({}): idle {}, under load max {}, at end {}",
            self.memory.source,
            mb(self.memory.idle_rss_kb),
            mb(self.memory.load_rss_max_kb),
            mb(self.memory.end_rss_kb)
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        writeln!(f, "{}", self.correctness.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn credentials_are_removed() {
        assert_eq!(without_credentials("postgres://u:secret@db:5432/x"), "postgres://db:5432/x");
        assert_eq!(without_credentials("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
