//! A service whose database pool runs dry says so on `/metrics`: every
//! connection in use (`db_pool_connections{state="in_use"}` at
//! `db_pool_max_connections`), the callers' waits in
//! `db_pool_acquire_seconds`, and those who waited too long in
//! `db_pool_acquire_timeouts_total`. Its own test binary: it installs the
//! process's subscriber (only the layer that times acquires).

mod support;

use std::time::Duration;

use loyalty_gateway::keys::Scope;
use sqlx::Connection;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use support::{Backend, Harness, Options, eventually};

/// The value of the sample `name` exactly (labels included), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_shows_in_use_at_max_and_the_waits() {
    tracing_subscriber::registry()
        .with(loyalty_common::spans::acquire_times())
        .try_init()
        .expect("the only subscriber in this test binary");
    // Callers blocked behind the lock keep waiting (the gateway's own deadline is far).
    let options = Options { backend: Backend::Postgres, upstream_timeout_ms: 15_000, ..Options::default() };
    let h = Harness::start_with(options).await;
    let key = h.key("shop", Scope::Server).await;
    let points = h.service_metrics("points").await;
    let max = sample(&points, "db_pool_max_connections").expect("db_pool_max_connections");
    assert_eq!(max, 8.0, "the harness gives points 8 connections");
    let timeouts_before = sample(&points, "db_pool_acquire_timeouts_total").expect("db_pool_acquire_timeouts");
    let read = |n: usize, who: &str| {
        let (http, url, key) = (h.http.clone(), format!("{}/v1/customers/{who}-{n}/transactions", h.base), key.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(key).send().await.map(|r| r.status().as_u16()) })
    };
    let exhausted = || async {
        let text = h.service_metrics("points").await;
        sample(&text, r#"db_pool_connections{state="in_use"}"#) == Some(max)
    };
    let db = h.service_databases["points"].clone();
    let lock_ledger = || async {
        let mut blocker = sqlx::PgConnection::connect(&db).await.unwrap();
        sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
        sqlx::query("LOCK TABLE accounts, ledger_entries IN ACCESS EXCLUSIVE MODE")
            .execute(&mut blocker)
            .await
            .unwrap();
        blocker
    };

    // 1. Reads of the ledger wait behind a lock, each holding its connection;
    // those beyond the pool's 8 give up after the acquire timeout (1 s), UNAVAILABLE.
    let mut blocker = lock_ledger().await;
    let readers: Vec<_> = (0..20).map(|n| read(n, "first")).collect();
    assert!(eventually(Duration::from_secs(5), exhausted).await, "every connection is in use behind the lock");
    let timed_out = || async {
        let text = h.service_metrics("points").await;
        sample(&text, "db_pool_acquire_timeouts_total").is_some_and(|n| n >= timeouts_before + 12.0)
    };
    assert!(eventually(Duration::from_secs(5), timed_out).await, "the twelve timed-out waits are counted");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    let mut answered = Vec::new();
    for reader in readers {
        answered.push(reader.await.unwrap().expect("the gateway answers"));
    }
    // At most 8 hold a connection (fewer when background work holds one too).
    assert!(answered.iter().filter(|s| **s == 503).count() >= 12, "{answered:?}");
    assert!(answered.iter().all(|s| *s == 200 || *s == 503), "{answered:?}");

    // 2. Waits that end with a connection are timed: four callers wait while
    // eight hold every connection, until the lock goes 500 ms later. On a
    // busy machine a waiter's call may reach points a few hundred ms after it
    // is sent, and a waiter may still be waiting when the 1 s acquire timeout
    // ends it: 500 ms leaves room on both sides, and a wait over 0.1 s (an
    // acquire with a free connection takes well under 25 ms) is the proof.
    let waits_before = sample(&h.service_metrics("points").await, "db_pool_acquire_seconds_count").unwrap();
    let mut blocker = lock_ledger().await;
    let holders: Vec<_> = (0..8).map(|n| read(n, "holder")).collect();
    assert!(eventually(Duration::from_secs(5), exhausted).await, "the holders take every connection");
    let waiters: Vec<_> = (0..4).map(|n| read(n, "waiter")).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    for reader in holders.into_iter().chain(waiters) {
        let status = reader.await.unwrap().expect("the gateway answers");
        assert!(status == 200 || status == 503, "{status}");
    }
    let text = h.service_metrics("points").await;
    let waits = sample(&text, "db_pool_acquire_seconds_count").unwrap();
    assert!(waits > waits_before, "acquires are counted: {waits_before} -> {waits}");
    let quick = text
        .lines()
        .filter_map(|l| l.strip_prefix("db_pool_acquire_seconds_bucket{le=\""))
        .filter_map(|l| l.split_once("\"} "))
        .find(|(le, _)| le.parse::<f64>().is_ok_and(|le| le >= 0.1))
        .map(|(_, count)| count.trim().parse::<f64>().unwrap())
        .expect("a bucket at 0.1 s or above");
    assert!(waits - quick >= 1.0, "a waiter waited longer than 0.1 s for a connection:\n{text}");
    let idle = || async {
        let text = h.service_metrics("points").await;
        sample(&text, r#"db_pool_connections{state="in_use"}"#).is_some_and(|n| n < max)
    };
    assert!(eventually(Duration::from_secs(5), idle).await, "the pool recovers");
    h.stop().await;
}
