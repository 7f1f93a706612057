//! The outbox's guarantees (`loyalty_common::outbox`), on the tiers
//! service's schema: positions grow in commit order, so a follower paging
//! from its cursor misses no event, even one whose transaction began first
//! and committed last; what did not commit is never seen; retention counts
//! from the write.

use loyalty_common::clock::{MICROS_PER_DAY, Micros};
use loyalty_common::db::{self, Database, Dialect, PoolSettings};
use loyalty_common::outbox::{self, Event};
use loyalty_common::testing::{Backend, Sandbox};

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;
const LOCK_KEY: i64 = 0x7465_7374;

fn event(customer: &str) -> Event {
    Event {
        program_id: "shop".into(),
        customer_id: customer.into(),
        event_type: "tier.upgraded",
        // Long before it is written, as a backdated order's would be.
        occurred_at: T0 - 30 * MICROS_PER_DAY,
        data: serde_json::json!({ "customer_id": customer }),
    }
}

async fn open(sandbox: &mut Sandbox) -> Database {
    let url = sandbox.database("tiers").await;
    db::open(&url, PoolSettings::new(4, 5_000), loyalty_tiers::MIGRATIONS).await.unwrap()
}

/// The customers of the events after `after`, in order, and the last position.
async fn after(db: &Database, after: i64) -> (Vec<String>, i64) {
    let (events, next) = outbox::page(db, after, 100).await.unwrap();
    (events.into_iter().map(|e| e.customer_id).collect(), next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_numbers_in_commit_order_not_in_write_order() {
    let mut sandbox = Sandbox::new(Backend::Postgres, T0);
    let db = open(&mut sandbox).await;
    let mut early = db.pool.begin().await.unwrap();
    outbox::append(&mut early, Dialect::Postgres, T0, &[event("early")]).await.unwrap();
    let mut late = db.pool.begin().await.unwrap();
    outbox::append(&mut late, Dialect::Postgres, T0, &[event("late-1"), event("late-2")]).await.unwrap();
    late.commit().await.unwrap();

    outbox::publish(&db, LOCK_KEY).await.unwrap();
    let (seen, cursor) = after(&db, 0).await;
    assert_eq!(seen, ["late-1", "late-2"], "what has not committed is not seen");

    early.commit().await.unwrap();
    assert_eq!(after(&db, cursor).await.0, Vec::<String>::new(), "committed but not numbered yet: not seen");
    outbox::publish(&db, LOCK_KEY).await.unwrap();
    assert_eq!(after(&db, cursor).await.0, ["early"], "numbered after the cursor: not skipped");

    let mut rolled_back = db.pool.begin().await.unwrap();
    outbox::append(&mut rolled_back, Dialect::Postgres, T0, &[event("never")]).await.unwrap();
    rolled_back.rollback().await.unwrap();
    outbox::publish(&db, LOCK_KEY).await.unwrap();
    assert_eq!(after(&db, 0).await.0, ["late-1", "late-2", "early"]);
    retention_counts_from_the_write(&db).await;
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_numbers_at_write() {
    let mut sandbox = Sandbox::new(Backend::Sqlite, T0);
    let db = open(&mut sandbox).await;
    for customers in [&["a", "b"][..], &["c"][..]] {
        let mut tx = db.pool.begin().await.unwrap();
        let events: Vec<Event> = customers.iter().map(|c| event(c)).collect();
        outbox::append(&mut tx, Dialect::Sqlite, T0, &events).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(outbox::publish(&db, LOCK_KEY).await.unwrap(), None, "nothing left to number");
    let (seen, last) = after(&db, 0).await;
    assert_eq!(seen, ["a", "b", "c"]);
    assert_eq!(after(&db, last).await.0, Vec::<String>::new());
    retention_counts_from_the_write(&db).await;
    sandbox.stop().await;
}

/// The events were written at T0 about things 30 days older: kept for
/// `RETENTION` after T0, not after what they tell.
async fn retention_counts_from_the_write(db: &Database) {
    let kept = after(db, 0).await.0.len() as u64;
    assert_eq!(outbox::purge(db, T0).await.unwrap(), 0, "nothing written before T0");
    assert_eq!(outbox::purge(db, T0 + 1).await.unwrap(), kept, "all of it once past");
    assert_eq!(after(db, 0).await.0, Vec::<String>::new());
}
