//! Runs workers for a fixed time, closed loop or open loop, and records
//! every answer: latency in microseconds in an HDR histogram per operation,
//! counts by outcome. Prints one progress line per second on stderr.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::workload::OpKind;

/// Highest latency the histograms tell apart (longer ones count as this).
const MAX_LATENCY_US: u64 = 60_000_000;

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// An answer the scenario expects, e.g. INSUFFICIENT_POINTS in spend-contended.
    Refused,
    /// Anything else, by gRPC code name (or the baseline's error kind).
    Error(String),
}

/// One client: one call in flight at a time.
pub trait Worker: Send + 'static {
    /// Names of the operations, indexed by [`OpKind`].
    fn op_names(&self) -> [&'static str; OpKind::COUNT];
    fn call(&mut self) -> impl Future<Output = (OpKind, Answer)> + Send;
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    pub duration: Duration,
    /// Requests per second for all workers together; `None`: closed loop.
    pub rate: Option<f64>,
}

/// What one operation did during a phase.
pub struct OpRecord {
    pub name: &'static str,
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub errors: BTreeMap<String, u64>,
    /// When the last OK answer came, from the start of the phase.
    pub last_ok: Duration,
}

impl OpRecord {
    pub fn answered(&self) -> u64 {
        self.ok + self.refused
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub struct PhaseResult {
    pub label: String,
    pub elapsed: Duration,
    pub ops: Vec<OpRecord>,
    /// Highest VmRSS seen by the once-a-second probe, in kB.
    pub rss_max_kb: Option<u64>,
    /// Answers (OK or refused) in each whole second of the phase.
    pub per_second: Vec<u64>,
    /// When the first and the last error came, from the start of the phase.
    pub error_window: Option<(Duration, Duration)>,
}

impl PhaseResult {
    pub fn answered(&self) -> u64 {
        self.ops.iter().map(OpRecord::answered).sum()
    }

    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.answered() as f64 / secs } else { 0.0 }
    }

    /// OK answers per second until the last one: in spend-contended, the
    /// rate of successful spends while the points lasted.
    pub fn ok_rate(&self) -> f64 {
        let ok: u64 = self.ops.iter().map(|o| o.ok).sum();
        let secs = self.ops.iter().map(|o| o.last_ok).max().unwrap_or_default().as_secs_f64();
        if secs > 0.0 { ok as f64 / secs } else { 0.0 }
    }

    /// Appends a later slice of the same run (see `--rounds`).
    pub fn merge(&mut self, next: PhaseResult) {
        for mut op in next.ops {
            if op.ok > 0 {
                op.last_ok += self.elapsed;
            }
            match self.ops.iter_mut().find(|mine| mine.name == op.name) {
                Some(mine) => {
                    mine.latency_us.add(&op.latency_us).expect("histograms share bounds");
                    mine.ok += op.ok;
                    mine.refused += op.refused;
                    for (code, n) in op.errors {
                        *mine.errors.entry(code).or_default() += n;
                    }
                    if op.ok > 0 {
                        mine.last_ok = op.last_ok;
                    }
                }
                None => self.ops.push(op),
            }
        }
        if let Some((first, last)) = next.error_window {
            let (first, last) = (first + self.elapsed, last + self.elapsed);
            self.error_window = Some(self.error_window.map_or((first, last), |(was, _)| (was, last)));
        }
        self.per_second.extend(next.per_second);
        self.elapsed += next.elapsed;
        self.rss_max_kb = self.rss_max_kb.max(next.rss_max_kb);
    }

    /// Every operation's latencies together.
    pub fn latency_us(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for op in &self.ops {
            all.add(&op.latency_us).expect("histograms share bounds");
        }
        all
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut errors = BTreeMap::new();
        for op in &self.ops {
            for (code, n) in &op.errors {
                *errors.entry(code.clone()).or_default() += n;
            }
        }
        errors
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// Shared by the workers of one phase. One histogram per operation behind a
/// mutex rather than one per worker: a few hundred kB instead of tens of MB,
/// which matters when the service's memory is read in this same process.
struct Recorder {
    names: [&'static str; OpKind::COUNT],
    histograms: [Mutex<Option<Histogram<u64>>>; OpKind::COUNT],
    ok: [AtomicU64; OpKind::COUNT],
    refused: [AtomicU64; OpKind::COUNT],
    errors: Mutex<BTreeMap<(usize, String), u64>>,
    error_total: AtomicU64,
    last_ok_us: [AtomicU64; OpKind::COUNT],
    next_ticket: AtomicU64,
    first_error_us: AtomicU64,
    last_error_us: AtomicU64,
}

impl Recorder {
    fn new(names: [&'static str; OpKind::COUNT]) -> Self {
        Self {
            names,
            histograms: Default::default(),
            ok: Default::default(),
            refused: Default::default(),
            errors: Mutex::default(),
            error_total: AtomicU64::new(0),
            last_ok_us: Default::default(),
            next_ticket: AtomicU64::new(0),
            first_error_us: AtomicU64::new(u64::MAX),
            last_error_us: AtomicU64::new(0),
        }
    }

    fn record(&self, op: OpKind, answer: Answer, latency_us: u64, since_start_us: u64) {
        let i = op as usize;
        match answer {
            Answer::Ok => {
                self.ok[i].fetch_add(1, Ordering::Relaxed);
                self.last_ok_us[i].fetch_max(since_start_us, Ordering::Relaxed);
            }
            Answer::Refused => {
                self.refused[i].fetch_add(1, Ordering::Relaxed);
            }
            Answer::Error(code) => {
                self.error_total.fetch_add(1, Ordering::Relaxed);
                self.first_error_us.fetch_min(since_start_us, Ordering::Relaxed);
                self.last_error_us.fetch_max(since_start_us, Ordering::Relaxed);
                *self.errors.lock().expect("recorder lock").entry((i, code)).or_default() += 1;
                // Errors are counted, not timed: a fast failure must not flatter the latency.
                return;
            }
        }
        self.histograms[i]
            .lock()
            .expect("recorder lock")
            .get_or_insert_with(new_histogram)
            .saturating_record(latency_us.max(1));
    }

    fn totals(&self) -> (u64, u64, u64) {
        let sum =
            |counters: &[AtomicU64; OpKind::COUNT]| counters.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
        (sum(&self.ok), sum(&self.refused), self.error_total.load(Ordering::Relaxed))
    }

    fn error_window(&self) -> Option<(Duration, Duration)> {
        let first = self.first_error_us.load(Ordering::Relaxed);
        (first != u64::MAX)
            .then(|| (Duration::from_micros(first), Duration::from_micros(self.last_error_us.load(Ordering::Relaxed))))
    }

    fn into_records(self) -> Vec<OpRecord> {
        let mut errors: [BTreeMap<String, u64>; OpKind::COUNT] = Default::default();
        for ((op, code), n) in self.errors.into_inner().expect("recorder lock") {
            errors[op].insert(code, n);
        }
        let mut records = Vec::new();
        for ((i, histogram), op_errors) in self.histograms.into_iter().enumerate().zip(errors) {
            let histogram = histogram.into_inner().expect("recorder lock");
            let ok = self.ok[i].load(Ordering::Relaxed);
            let refused = self.refused[i].load(Ordering::Relaxed);
            if ok + refused == 0 && op_errors.is_empty() {
                continue;
            }
            records.push(OpRecord {
                name: self.names[i],
                latency_us: histogram.unwrap_or_else(new_histogram),
                ok,
                refused,
                errors: op_errors,
                last_ok: Duration::from_micros(self.last_ok_us[i].load(Ordering::Relaxed)),
            });
        }
        records
    }
}

/// Runs `workers` for `phase.duration` and hands them back for the next phase.
/// `memory`: `Some(pid)` samples VmRSS of that process (`None`: this one)
/// every second.
pub async fn run_phase<W: Worker>(
    workers: Vec<W>,
    phase: &Phase,
    memory: Option<Option<u32>>,
) -> (Vec<W>, PhaseResult) {
    let names = workers.first().map_or([""; OpKind::COUNT], Worker::op_names);
    let recorder = Arc::new(Recorder::new(names));
    let start = Instant::now();
    let end = start + phase.duration;
    let done = Arc::new(AtomicBool::new(false));
    let progress = tokio::spawn(progress(phase.clone(), recorder.clone(), done.clone(), memory));

    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let recorder = recorder.clone();
            let rate = phase.rate;
            tokio::spawn(async move {
                loop {
                    let began = match rate {
                        None => {
                            let now = Instant::now();
                            if now >= end {
                                break;
                            }
                            now
                        }
                        Some(rate) => {
                            // Open loop: ticket n is due at start + n / rate, and its
                            // latency counts from then, so a slow answer that delays
                            // the next send still shows (no coordinated omission).
                            let ticket = recorder.next_ticket.fetch_add(1, Ordering::Relaxed);
                            let due = start + Duration::from_secs_f64(ticket as f64 / rate);
                            if due >= end {
                                break;
                            }
                            tokio::time::sleep_until(due).await;
                            due
                        }
                    };
                    let (op, answer) = worker.call().await;
                    let now = Instant::now();
                    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                    recorder.record(op, answer, micros(now - began), micros(now - start));
                }
                worker
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(tasks.len());
    for task in tasks {
        workers.push(task.await.expect("load worker panicked"));
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let (rss_max_kb, per_second) = progress.await.expect("progress task panicked");
    let recorder = Arc::into_inner(recorder).expect("every worker has finished");
    let error_window = recorder.error_window();
    let ops = recorder.into_records();
    (workers, PhaseResult { label: phase.label.clone(), elapsed, ops, rss_max_kb, per_second, error_window })
}

async fn progress(
    phase: Phase,
    recorder: Arc<Recorder>,
    done: Arc<AtomicBool>,
    memory: Option<Option<u32>>,
) -> (Option<u64>, Vec<u64>) {
    let mut rss_max = memory.and_then(crate::system::rss_kb);
    let mut per_second = Vec::new();
    if phase.duration.is_zero() {
        return (rss_max, per_second);
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = (0, 0, 0);
    let mut second = 0;
    loop {
        ticker.tick().await;
        if done.load(Ordering::Relaxed) {
            return (rss_max, per_second);
        }
        second += 1;
        let now = recorder.totals();
        let rss = memory.and_then(crate::system::rss_kb);
        rss_max = rss_max.max(rss);
        let memory = rss.map_or_else(String::new, |kb| format!("  rss {:.1} MB", kb as f64 / 1024.0));
        let total = phase.duration.as_secs_f64().ceil();
        eprintln!(
            "{label:>26} {second:>3}/{total}s {rate:>9} req/s  ok {ok} refused {refused} errors {errors}{memory}",
            label = phase.label,
            rate = (now.0 + now.1) - (last.0 + last.1),
            ok = now.0 - last.0,
            refused = now.1 - last.1,
            errors = now.2 - last.2,
        );
        per_second.push((now.0 + now.1) - (last.0 + last.1));
        last = now;
    }
}
