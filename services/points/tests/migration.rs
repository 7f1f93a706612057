//! A populated ledger upgrades in place: a PostgreSQL database written by
//! the schema before stream positions moved to batches (migrations 1–10) is
//! served by today's service, and every balance, lot and stream position
//! is as it was; entries waiting for a position get one after the old ones,
//! and new writes follow.

mod support;

use futures::StreamExt;
use loyalty_common::db::{self, Migrations, PoolSettings};
use loyalty_common::testing::TestDatabase;
use loyalty_points::MIGRATIONS;
use loyalty_proto::points::v1 as pb;
use support::{Backend, DAY, Harness, Options, T0};

/// The schema before migration 11.
const BEFORE_BATCHES: usize = 10;

/// The ledger as the old schema held it: ann earned 200 and 30 and spent 50
/// (her entries numbered 1, 2 and 4: positions may have gaps), bob earned
/// 100 expiring in ten days, committed but not numbered yet.
const OLD_LEDGER: &str = r#"
INSERT INTO accounts (program_id, customer_id, available, lifetime_earned, spent, version, next_transition_us, next_expiry_us, next_expiry_points)
VALUES ('shop', 'ann', 180, 230, 50, 3, NULL, NULL, 0),
       ('shop', 'bob', 100, 100, 0, 1, T_EXPIRY, T_EXPIRY, 100);
INSERT INTO point_lots (lot_id, program_id, customer_id, original, remaining, consumed, state, expires_at_us, earned_at_us)
VALUES ('lot-ann-1', 'shop', 'ann', 200, 150, 50, 'active', NULL, T_EARN),
       ('lot-ann-2', 'shop', 'ann', 30, 30, 0, 'active', NULL, T_EARN + 3),
       ('lot-bob-1', 'shop', 'bob', 100, 100, 0, 'active', T_EXPIRY, T_EARN + 2);
INSERT INTO ledger_entries (id, seq, transaction_id, program_id, customer_id, kind, points, pending_points, reason, created_at_us, amount, draws)
VALUES (1, 1, 'lot-ann-1', 'shop', 'ann', 'EARN', 200, 0, 'order 1', T_EARN, 200, ''),
       (2, 2, 'tx-ann-spend', 'shop', 'ann', 'SPEND', -50, 0, 'reward', T_EARN + 1, 50, '[{"lot_id":"lot-ann-1","points":50}]'),
       (3, NULL, 'lot-bob-1', 'shop', 'bob', 'EARN', 100, 0, 'order 2', T_EARN + 2, 100, ''),
       (4, 4, 'lot-ann-2', 'shop', 'ann', 'EARN', 30, 0, 'order 3', T_EARN + 3, 30, '');
SELECT setval('ledger_entries_id_seq', 4);
SELECT setval('ledger_stream_seq', 4);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_ledger_upgrades_in_place_keeping_every_balance_lot_and_position() {
    let test_db = TestDatabase::create().await;
    let old =
        Migrations { postgres: &MIGRATIONS.postgres[..BEFORE_BATCHES], sqlite: &MIGRATIONS.sqlite[..BEFORE_BATCHES] };
    let database = db::open(&test_db.url, PoolSettings::new(2, 5_000), old).await.unwrap();
    let ledger =
        OLD_LEDGER.replace("T_EXPIRY", &(T0 + 10 * DAY).to_string()).replace("T_EARN", &(T0 - DAY).to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(ledger)).execute(&database.pool).await.unwrap();
    database.pool.close().await;

    let options = Options { database_url: Some(test_db.url.clone()), ..Options::default() };
    let mut h = Harness::start_with(Backend::Postgres, options).await;

    // Balances and lots: what the old rows said, and spends draw from the old lots.
    assert_eq!(h.balance("shop", "ann").await.available, 180);
    assert_eq!(h.balance("shop", "bob").await.available, 100);
    let expiring = h
        .client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            program_id: "shop".into(),
            customer_id: "bob".into(),
            within: Some(prost_types::Duration { seconds: 30 * 86_400, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    let expiring: Vec<i64> = expiring.expiring.iter().map(|e| e.points).collect();
    assert_eq!(expiring, [100], "bob's lot and its expiry survive");
    let spend = h.spend("shop", "ann", 160, "after-upgrade-spend").await.unwrap();
    assert_eq!(spend.balance.as_ref().map(|b| b.available), Some(20));
    h.earn("shop", "bob", 7, "after-upgrade-earn").await;

    // The stream: old positions kept, the waiting entry numbered after them,
    // the new writes after that.
    let stream = read_stream(&mut h, 6).await;
    let positions: Vec<(i64, &str)> = stream.iter().map(|e| (e.sequence, e.transaction_id.as_str())).collect();
    assert_eq!(positions[..4], [(1, "lot-ann-1"), (2, "tx-ann-spend"), (4, "lot-ann-2"), (5, "lot-bob-1")]);
    assert_eq!(positions[4], (6, spend.transaction_id.as_str()));
    assert!(positions[5].0 == 7 && positions[5].1 != spend.transaction_id, "{positions:?}");
    // The spend drew 150 from the older lot and 10 from the newer one.
    assert_eq!(stream[4].points, -160);

    // History: every entry with its position, newest first, adding up to the balance.
    let history = h.all_entries("shop", "ann").await;
    let sequences: Vec<i64> = history.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [6, 4, 2, 1]);
    let balance = h.assert_ledger_matches_balance("shop", "ann").await;
    assert_eq!(balance.spent, 210);
    h.assert_ledger_matches_balance("shop", "bob").await;

    // The lots: ann's older one is used up, her newer one has 20 left.
    let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
    let lots: Vec<(String, i64)> =
        sqlx::query_as("SELECT lot_id, remaining FROM point_lots WHERE customer_id = 'ann' ORDER BY lot_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(lots, [("lot-ann-1".to_owned(), 0), ("lot-ann-2".to_owned(), 20)]);
    // New entries take ids after the old ones, from their batch's block.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM ledger_entries ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(ids[..4], [1, 2, 3, 4]);
    assert!(ids[4] > 4 && ids.len() == 6, "{ids:?}");
    pool.close().await;

    h.stop().await;
    test_db.drop_database().await;
}

/// The first `count` entries of the stream, from the start.
async fn read_stream(h: &mut Harness, count: usize) -> Vec<pb::LedgerEntry> {
    let mut stream = h
        .client
        .stream_events(pb::StreamEventsRequest { after_sequence: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut entries = Vec::new();
    while entries.len() < count {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the stream delivers within 10 s")
            .expect("the stream stays open")
            .unwrap();
        entries.extend(message.entry);
    }
    entries
}
