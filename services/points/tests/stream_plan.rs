//! A stream read filtered to a kind that is rare reads the published batches
//! by position and their entries by primary key, never the whole ledger:
//! in a young ledger, whose statistics say nothing yet, the planner's own
//! choice for the range join was a scan of the entries.

mod support;

use std::time::Duration;

use futures::StreamExt;
use loyalty_common::db::{self, PoolSettings};
use loyalty_common::testing::TestDatabase;
use loyalty_proto::points::v1 as pb;
use support::{Backend, Harness, Options};

/// Sequential and index scans of `ledger_entries` as the statistics have them.
async fn scans(stats: &db::Database) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(seq_scan, 0), COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'ledger_entries'",
    )
    .fetch_one(&stats.pool)
    .await
    .unwrap()
}

/// How long a server process may keep its counts before they show: at most
/// once a second, and one that went idle right after counting reports them
/// within ten.
const STATS_SETTLE: Duration = Duration::from_millis(10_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_read_of_a_young_ledger_scans_no_table() {
    let test_db = TestDatabase::create().await;
    let options = Options { database_url: Some(test_db.url.clone()), ..Options::default() };
    let mut h = Harness::start_with(Backend::Postgres, options).await;
    for i in 0..40 {
        h.earn("shop", &format!("c{}", i % 7), 10 + i, &format!("e{i}")).await;
    }
    let stats = db::connect(&test_db.url, PoolSettings::new(1, 5_000)).await.unwrap();
    // The migrations' and the earns' counts first (nothing after them reads
    // the entries but the stream).
    tokio::time::sleep(STATS_SETTLE).await;
    let before = scans(&stats).await;

    let request = pb::StreamEventsRequest { kinds: vec![pb::EntryKind::Reverse as i32], ..Default::default() };
    let mut stream = h.client.stream_events(request).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert!(first.entry.is_none() && first.through_sequence >= 40, "nothing to send, only progress: {first:?}");
    drop(stream);

    // The read's counts arrive together: wait for its index scan.
    let deadline = tokio::time::Instant::now() + STATS_SETTLE + Duration::from_secs(2);
    let mut after = scans(&stats).await;
    while after.1 == before.1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scans(&stats).await;
    }
    assert_eq!(after.0, before.0, "sequential scans of the ledger (before, after: {before:?}, {after:?})");
    assert!(after.1 > before.1, "the read went by the primary key (before, after: {before:?}, {after:?})");
    stats.pool.close().await;
    h.stop().await;
    test_db.drop_database().await;
}
