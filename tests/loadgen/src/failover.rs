//! `--redis-fail-primary-after`: one primary of the Redis Cluster the
//! in-process points service caches in is shut down (`SHUTDOWN NOSAVE`, as
//! a node lost with its memory) during the measured run, so the run crosses
//! a failover; what the service did meanwhile is read from the run's error
//! window and its seconds, and the correctness check runs after as always.

use std::time::Duration;

use crate::RunError;
use crate::drive::PhaseResult;

/// Which primary went, and when (from the start of the measured run).
pub struct Failed {
    pub primary: String,
    pub at: Duration,
}

/// Checks that `url` names a cluster.
pub fn check(url: Option<&str>) -> Result<(), RunError> {
    let usage = || RunError::Usage("--redis-fail-primary-after needs --redis-url redis+cluster://...".to_owned());
    let url = url.ok_or_else(usage)?;
    match loyalty_common::redis::cluster_nodes(url) {
        Ok(Some(_)) => Ok(()),
        _ => Err(usage()),
    }
}

/// Waits `after`, then shuts down the primary listed first (by address).
pub async fn fail_primary_after(url: String, after: Duration) -> Result<Failed, RunError> {
    let failed = |e: redis::RedisError| RunError::Failed(format!("redis failover: {e}"));
    let conn = loyalty_common::redis::connect(&url, Duration::from_secs(5)).map_err(failed)?;
    tokio::time::sleep(after).await;
    let mut primaries = conn.clone().on_each_primary(&redis::cmd("PING")).await.map_err(failed)?;
    primaries.sort_by(|a, b| a.0.cmp(&b.0));
    let (primary, _) = primaries.into_iter().next().ok_or_else(|| RunError::Failed("no primary".to_owned()))?;
    let mut shutdown = redis::cmd("SHUTDOWN");
    shutdown.arg("NOSAVE");
    // The node closes the connection instead of answering: an error is the expected outcome.
    let _ = conn.clone().on_node(&primary, &shutdown).await;
    eprintln!("loadgen: redis primary {primary} shut down {:.1} s into the measured run", after.as_secs_f64());
    Ok(Failed { primary, at: after })
}

/// The report's lines on the failover: the error window and the seconds around it.
pub fn describe(failed: &Failed, measured: &PhaseResult) -> String {
    let errors: u64 = measured.errors().values().sum();
    let window = match measured.error_window {
        None => "no call failed".to_owned(),
        Some((first, last)) => format!(
            "{errors} calls failed, from {:.2} s to {:.2} s (a window of {:.2} s)",
            first.as_secs_f64(),
            last.as_secs_f64(),
            (last - first).as_secs_f64()
        ),
    };
    let second = usize::try_from(failed.at.as_secs()).unwrap_or(usize::MAX);
    let before: Vec<u64> = measured.per_second.iter().take(second).copied().collect();
    let after: Vec<u64> = measured.per_second.iter().skip(second).copied().collect();
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let lowest = after.iter().enumerate().min_by_key(|(_, n)| **n);
    let dip = lowest
        .map_or_else(String::new, |(i, n)| format!("; lowest second after: {n} answers (second {})", second + i + 1));
    format!(
        "redis failover: primary {} shut down at {:.1} s; {window}; answers per second: median {} before, {} after{dip}",
        failed.primary,
        failed.at.as_secs_f64(),
        median(before),
        median(after.clone()),
    )
}
