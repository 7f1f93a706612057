//! Group commit, at the store: several commands in one transaction, on both
//! back-ends, against the schema a real server migrated. What a batch must
//! keep from one-command-per-transaction: a refusal touches nothing else, a
//! key runs once, and results saved at commit answer every replay, also
//! from a new process after the first died before answering.

mod support;

use std::sync::Arc;

use loyalty_common::clock::{Clock, ManualClock};
use loyalty_common::db;
use loyalty_common::idempotency::request_hash;
use loyalty_points::error::Error;
use loyalty_points::store::{BatchCommand, BatchFailure, Command, Execution, LedgerStore};
use support::{Backend, Harness, T0};

loyalty_common::on_both_backends!(
    a_refused_command_leaves_its_batch_untouched,
    one_key_twice_in_a_batch_has_one_effect,
    results_saved_at_commit_answer_replays_after_a_crash,
    spends_on_one_account_are_judged_in_arrival_order,
    a_key_claimed_by_a_transaction_in_flight_makes_the_batch_retry,
    a_refused_command_leaves_its_key_free_for_a_repeat_in_the_same_batch,
);

async fn store(h: &Harness) -> LedgerStore {
    let database = db::connect(h.database_url(), db::PoolSettings::new(4, 1_000)).await.expect("database answers");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    LedgerStore::new(database, clock)
}

fn earn(customer: &str, points: i64, key: &str) -> BatchCommand {
    let command = Command::Earn {
        customer_id: customer.into(),
        points,
        reason: "order".into(),
        pending_until: None,
        expires_at: None,
        policy_expiry: None,
    };
    BatchCommand { program_id: "shop".into(), idempotency_key: key.into(), command }
}

fn spend(customer: &str, points: i64, key: &str) -> BatchCommand {
    let command = Command::Spend { customer_id: customer.into(), points, reason: "reward".into() };
    BatchCommand { program_id: "shop".into(), idempotency_key: key.into(), command }
}

async fn batch(store: &LedgerStore, commands: &[BatchCommand]) -> Vec<Result<Execution, Error>> {
    match store.execute_batch(commands).await {
        Ok(results) => results,
        Err(BatchFailure::KeyRace) => panic!("no other writer here"),
        Err(BatchFailure::Database(error)) => panic!("batch failed: {error}"),
    }
}

fn insufficient(result: &Result<Execution, Error>) -> bool {
    matches!(result, Err(Error::Rule(loyalty_points::domain::RuleViolation::InsufficientPoints { .. })))
}

async fn a_refused_command_leaves_its_batch_untouched(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let store = store(&h).await;
    let results =
        batch(&store, &[earn("ana", 100, "e1"), spend("ben", 50, "s1"), spend("ana", 30, "s2"), earn("ben", 10, "e2")])
            .await;
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(insufficient(&results[1]), "ben had nothing yet: {:?}", results[1]);
    assert_eq!(results[2].as_ref().unwrap().receipt.balance.available, 70, "ana's spend saw her earn");
    assert_eq!(h.assert_ledger_matches_balance("shop", "ana").await.available, 70);
    assert_eq!(h.assert_ledger_matches_balance("shop", "ben").await.available, 10);
    assert_eq!(h.all_entries("shop", "ben").await.len(), 1, "the refusal wrote nothing");

    // The refusal saved no result: the same key is judged afresh.
    let again = batch(&store, &[earn("ben", 100, "e3"), spend("ben", 50, "s1")]).await;
    let spent = again[1].as_ref().expect("now ben has the points");
    assert!(!spent.replayed);
    assert_eq!(spent.receipt.balance.available, 60);
    // (The server's cache still holds ben at 10: these writes bypassed it.)
    let ledger: i64 = h.all_entries("shop", "ben").await.iter().map(|e| e.points).sum();
    assert_eq!(ledger, 60);
    h.stop().await;
}

async fn one_key_twice_in_a_batch_has_one_effect(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let store = store(&h).await;
    let results = batch(&store, &[earn("cy", 10, "k"), earn("cy", 10, "k"), earn("cy", 99, "k")]).await;
    let (first, second) = (results[0].as_ref().unwrap(), results[1].as_ref().unwrap());
    assert!(!first.replayed && second.replayed);
    assert_eq!(first.receipt, second.receipt, "the duplicate answers the first's result");
    assert!(matches!(results[2], Err(Error::IdempotencyKeyReused { method: "Earn" })), "{:?}", results[2]);
    assert_eq!(h.all_entries("shop", "cy").await.len(), 1);
    assert_eq!(h.assert_ledger_matches_balance("shop", "cy").await.available, 10);
    h.stop().await;
}

async fn results_saved_at_commit_answer_replays_after_a_crash(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let commands = [earn("di", 500, "e1"), spend("di", 200, "s1"), earn("ed", 70, "e2")];
    let committed: Vec<Execution> = {
        // The first process commits, then dies before any caller hears back.
        let first = store(&h).await;
        batch(&first, &commands).await.into_iter().map(|r| r.expect("all succeed")).collect()
    };
    let second = store(&h).await;
    for (command, original) in commands.iter().zip(&committed) {
        let alone = second.execute(&command.program_id, &command.idempotency_key, command.command.clone()).await;
        let alone = alone.expect("a replay");
        assert!(alone.replayed, "{}", command.idempotency_key);
        assert_eq!(alone.receipt, original.receipt, "the saved result, as committed");
    }
    let again = batch(&second, &commands).await;
    for (result, original) in again.iter().zip(&committed) {
        let result = result.as_ref().expect("a replay");
        assert!(result.replayed);
        assert_eq!(result.receipt, original.receipt);
    }
    assert_eq!(h.all_entries("shop", "di").await.len(), 2, "nothing ran twice");
    assert_eq!(h.assert_ledger_matches_balance("shop", "di").await.available, 300);
    // Through the service, the replay is told apart as usual.
    let replay = h.earn("shop", "ed", 70, "e2").await;
    assert_eq!(replay.transaction_id, committed[2].receipt.transaction_id);
    h.stop().await;
}

async fn spends_on_one_account_are_judged_in_arrival_order(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let store = store(&h).await;
    batch(&store, &[earn("fay", 300, "seed")]).await;
    let spends: Vec<BatchCommand> = (0..50).map(|i| spend("fay", 10, &format!("s{i}"))).collect();
    let results = batch(&store, &spends).await;
    for (i, result) in results.iter().enumerate() {
        if i < 30 {
            let done = result.as_ref().expect("covered by the running balance");
            assert_eq!(done.receipt.balance.available, 300 - 10 * (i as i64 + 1), "spend {i}");
        } else {
            assert!(insufficient(result), "spend {i}: {result:?}");
        }
    }
    let versions: Vec<i64> = results[..30].iter().map(|r| r.as_ref().unwrap().receipt.balance.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "each spend is a new version: {versions:?}");
    let balance = h.assert_ledger_matches_balance("shop", "fay").await;
    assert_eq!((balance.available, balance.spent), (0, 300));
    h.stop().await;
}

async fn a_key_claimed_by_a_transaction_in_flight_makes_the_batch_retry(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = store(&h).await;
    // What a single-command transaction holds while it runs: the key, no result yet.
    let database = db::connect(h.database_url(), db::PoolSettings::new(1, 1_000)).await.unwrap();
    let busy = earn("gus", 10, "busy");
    let hash = request_hash("shop", &serde_json::to_value(&busy.command).unwrap());
    sqlx::query(
        "INSERT INTO idempotency_keys (program_id, method, idempotency_key, request_hash, created_at_us) \
         VALUES ('shop', 'Earn', 'busy', $1, 0)",
    )
    .bind(hash)
    .execute(&database.pool)
    .await
    .unwrap();
    let outcome = store.execute_batch(&[earn("gus", 10, "free"), busy]).await;
    assert!(matches!(outcome, Err(BatchFailure::KeyRace)), "{outcome:?}");
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE customer_id = 'gus'")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(entries, 0, "nothing of the batch was committed");
    database.pool.close().await;
    h.stop().await;
}

async fn a_refused_command_leaves_its_key_free_for_a_repeat_in_the_same_batch(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let store = store(&h).await;
    // Each command is answered as if those before it had run alone: a
    // refusal saves nothing, so a corrected retry with its key runs afresh,
    // and so does the same spend once an earn in between covers it.
    let results = batch(
        &store,
        &[
            earn("hal", 100, "e1"),
            spend("hal", 500, "k"),
            spend("hal", 50, "k"),
            spend("hal", 50, "k"),
            spend("hal", 60, "k"),
            spend("ivy", 30, "j"),
            earn("ivy", 30, "e2"),
            spend("ivy", 30, "j"),
        ],
    )
    .await;
    assert!(insufficient(&results[1]), "{:?}", results[1]);
    let corrected = results[2].as_ref().expect("the corrected retry runs");
    assert!(!corrected.replayed);
    assert_eq!(corrected.receipt.balance.available, 50);
    let repeat = results[3].as_ref().expect("a replay of the corrected one");
    assert!(repeat.replayed);
    assert_eq!(repeat.receipt, corrected.receipt);
    assert!(matches!(results[4], Err(Error::IdempotencyKeyReused { method: "Spend" })), "{:?}", results[4]);
    assert!(insufficient(&results[5]), "ivy had nothing yet: {:?}", results[5]);
    let covered = results[7].as_ref().expect("the same spend, now covered");
    assert!(!covered.replayed);
    assert_eq!(covered.receipt.balance.available, 0);
    assert_eq!(h.assert_ledger_matches_balance("shop", "hal").await.available, 50);
    assert_eq!(h.assert_ledger_matches_balance("shop", "ivy").await.available, 0);
    // The key holds the result that was saved, for replays from anywhere.
    let replay = store.execute("shop", "k", spend("hal", 50, "k").command).await.expect("a replay");
    assert!(replay.replayed);
    assert_eq!(replay.receipt.transaction_id, corrected.receipt.transaction_id);
    h.stop().await;
}
