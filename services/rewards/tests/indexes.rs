//! Every index on redemptions is there for a query (BENCHMARKS.md, "A lean
//! ledger"): `redemptions_unsettled` duplicated `redemptions_leased` (the
//! same pending rows) and is gone; the queries over pending redemptions
//! (the saga metrics, the recovery's claim) are served by `redemptions_leased`.

use loyalty_common::db::{self, PoolSettings};
use loyalty_common::testing::TestDatabase;
use sqlx::{Connection, Executor, Row};

#[tokio::test]
async fn pending_redemptions_are_found_through_the_lease_index_alone() {
    let test_db = TestDatabase::create().await;
    let database = db::open(&test_db.url, PoolSettings::new(2, 5_000), loyalty_rewards::MIGRATIONS).await.unwrap();
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT CAST(indexname AS TEXT) FROM pg_indexes WHERE tablename = 'redemptions' ORDER BY 1")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert!(!indexes.iter().any(|i| i == "redemptions_unsettled"), "{indexes:?}");
    assert!(indexes.iter().any(|i| i == "redemptions_leased"), "{indexes:?}");

    let mut conn = sqlx::PgConnection::connect(&test_db.url).await.unwrap();
    conn.execute("SET enable_seqscan = off").await.unwrap();
    for query in [
        "SELECT count(*), MIN(created_at_us) FROM redemptions WHERE status = 'pending'",
        "SELECT redemption_id FROM redemptions WHERE status = 'pending' AND lease_until_us <= 0 ORDER BY lease_until_us LIMIT 10",
    ] {
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("redemptions_leased"), "{query}\n{plan}");
    }
    conn.close().await.unwrap();
    database.pool.close().await;
    test_db.drop_database().await;
}
