//! Redis outages around restarts, with a real `redis-server` that the tests
//! kill and start again, in front of a throwaway PostgreSQL database or a
//! SQLite file: whatever restarts in whatever order, no balance older than
//! the ledger is ever served, though Redis still holds one.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loyalty_common::testing::{CuttableProxy, TestDatabase, unique_suffix};
use loyalty_common::throwaway::redis::ThrowawayRedis;
use support::{Backend, Harness, Options};

const PROGRAM: &str = "shop";
const CUSTOMERS: [&str; 5] = ["ada", "bo", "cy", "di", "ed"];
/// Bound on waiting for the doubts to be settled once Redis is back.
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

loyalty_common::on_both_backends!(
    restart_during_a_redis_outage_serves_no_stale_balance,
    restart_while_redis_is_unreachable_serves_no_stale_balance,
    a_replica_cut_off_from_redis_leaves_no_stale_balance_on_another,
    redis_back_from_an_old_snapshot_serves_no_stale_balance,
    reads_during_a_redis_outage_doubt_nothing,
);

/// The database every points instance of one test shares.
enum SharedDatabase {
    Postgres(TestDatabase),
    Sqlite(PathBuf),
}

impl SharedDatabase {
    async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::Postgres(TestDatabase::create().await),
            Backend::Sqlite => Self::Sqlite(std::env::temp_dir().join(format!("loyalty-outage-{}", unique_suffix()))),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Postgres(database) => database.url.clone(),
            Self::Sqlite(dir) => format!("sqlite://{}/points.db", dir.display()),
        }
    }

    async fn remove(self) {
        match self {
            Self::Postgres(database) => database.drop_database().await,
            Self::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Redis, killed, comes back from its snapshot only after points was
/// restarted twice: the restarted process must not trust what Redis kept.
async fn restart_during_a_redis_outage_serves_no_stale_balance(backend: Backend) {
    restart_during_an_outage(backend, Outage::Killed).await;
}

/// Redis stays up with its data but out of reach while points restarts
/// twice: the doubts must outlive the process that recorded them.
async fn restart_while_redis_is_unreachable_serves_no_stale_balance(backend: Backend) {
    restart_during_an_outage(backend, Outage::Unreachable).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGKILL, then a start that loads the snapshot taken before the outage.
    Killed,
    /// The same server, its connections cut by a proxy.
    Unreachable,
}

async fn restart_during_an_outage(backend: Backend, outage: Outage) {
    let mut redis = ThrowawayRedis::spawn();
    let database = SharedDatabase::create(backend).await;
    let prefix = format!("outage:{}:", unique_suffix());
    let proxy = CuttableProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let redis_url = match outage {
        Outage::Killed => redis.url(),
        Outage::Unreachable => format!("redis://{}", proxy.addr),
    };
    let mut h = Harness::start_with(backend, options(redis_url, &database, &prefix)).await;
    warm(&mut h, &redis.url(), &prefix).await;

    match outage {
        Outage::Killed => {
            // Redis keeps the warmed balances through the outage, as one with persistence would.
            snapshot(&redis.url()).await;
            redis.kill();
        }
        Outage::Unreachable => proxy.cut(),
    }
    let mut truth = HashMap::new();
    for (i, customer) in CUSTOMERS.iter().enumerate() {
        h.spend(PROGRAM, customer, 10 * (i as i64 + 1), &format!("spend-{customer}")).await.expect("spends commit");
        let expected = ledger_available(&mut h, customer).await;
        assert_eq!(h.balance(PROGRAM, customer).await.available, expected, "{customer}: read from the database");
        truth.insert(*customer, expected);
    }

    h.restart().await;
    h.restart().await;
    match outage {
        Outage::Killed => {
            redis.start();
            assert!(keys_loaded(&redis.url()).await >= CUSTOMERS.len(), "Redis came back with its snapshot");
        }
        Outage::Unreachable => {
            assert_eq!(
                cached_available(&redis.url(), &prefix, CUSTOMERS[0]).await,
                Some(100),
                "Redis kept the old balance"
            );
            proxy.restore();
        }
    }
    for _ in 0..10 {
        assert_reads_match(&mut h, &truth, "after the restarts").await;
    }
    await_settled(&mut h, &redis.url(), &prefix, &database, &truth).await;
    assert_reads_match(&mut h, &truth, "served from Redis again").await;

    h.stop().await;
    database.remove().await;
}

/// One replica loses Redis and writes; another, still connected to Redis,
/// never serves the balance the first could not refresh, not even right
/// after the write is acknowledged. Then the cut-off replica restarts before
/// Redis is back for it.
async fn a_replica_cut_off_from_redis_leaves_no_stale_balance_on_another(backend: Backend) {
    let redis = ThrowawayRedis::spawn();
    let database = SharedDatabase::create(backend).await;
    let prefix = format!("outage:{}:", unique_suffix());
    let proxy = CuttableProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let mut cut_off =
        Harness::start_with(backend, options(format!("redis://{}", proxy.addr), &database, &prefix)).await;
    let mut connected = Harness::start_with(backend, options(redis.url(), &database, &prefix)).await;
    warm(&mut cut_off, &redis.url(), &prefix).await;
    for customer in CUSTOMERS {
        assert_eq!(connected.balance(PROGRAM, customer).await.available, 100);
    }

    proxy.cut();
    let mut truth = HashMap::new();
    for (i, customer) in CUSTOMERS.iter().enumerate() {
        cut_off
            .spend(PROGRAM, customer, 10 * (i as i64 + 1), &format!("spend-{customer}"))
            .await
            .expect("spends commit");
        let expected = ledger_available(&mut connected, customer).await;
        truth.insert(*customer, expected);
        for _ in 0..5 {
            assert_eq!(
                connected.balance(PROGRAM, customer).await.available,
                expected,
                "{customer}: the other replica serves the balance just written"
            );
        }
    }
    assert_reads_match(&mut cut_off, &truth, "on the cut-off replica").await;

    cut_off.restart().await;
    for customer in &CUSTOMERS[..2] {
        cut_off.earn(PROGRAM, customer, 7, &format!("earn-after-restart-{customer}")).await;
        *truth.get_mut(customer).unwrap() += 7;
    }
    assert_reads_match(&mut connected, &truth, "after writes from the restarted replica").await;
    proxy.restore();
    for _ in 0..5 {
        assert_reads_match(&mut cut_off, &truth, "on the restarted replica, Redis back").await;
        assert_reads_match(&mut connected, &truth, "on the other replica, Redis back").await;
    }
    await_settled(&mut connected, &redis.url(), &prefix, &database, &truth).await;
    assert_reads_match(&mut cut_off, &truth, "served from Redis again").await;

    cut_off.stop().await;
    connected.stop().await;
    database.remove().await;
}

/// Every refresh reached Redis, but Redis restarts from a snapshot taken
/// before them: what it loaded is older than the ledger.
async fn redis_back_from_an_old_snapshot_serves_no_stale_balance(backend: Backend) {
    let mut redis = ThrowawayRedis::spawn();
    let database = SharedDatabase::create(backend).await;
    let prefix = format!("outage:{}:", unique_suffix());
    // No backoff: the first read after the restart fails, the next ones reach the restarted server.
    let options = Options { redis_backoff_ms: 0, ..options(redis.url(), &database, &prefix) };
    let mut h = Harness::start_with(backend, options).await;
    warm(&mut h, &redis.url(), &prefix).await;
    snapshot(&redis.url()).await;

    let mut truth = HashMap::new();
    for (i, customer) in CUSTOMERS.iter().enumerate() {
        h.spend(PROGRAM, customer, 10 * (i as i64 + 1), &format!("spend-{customer}")).await.expect("spends commit");
        let expected = ledger_available(&mut h, customer).await;
        assert_eq!(cached_available(&redis.url(), &prefix, customer).await, Some(expected), "{customer}: refreshed");
        truth.insert(*customer, expected);
    }
    redis.kill();
    redis.start();
    assert!(
        keys_loaded(&redis.url()).await >= CUSTOMERS.len(),
        "Redis came back with the snapshot from before the spends"
    );
    for _ in 0..10 {
        assert_reads_match(&mut h, &truth, "after Redis restarted").await;
    }
    await_settled(&mut h, &redis.url(), &prefix, &database, &truth).await;

    h.stop().await;
    database.remove().await;
}

/// Reads while Redis is out of reach miss, read the database and fail to
/// refill Redis; that failure leaves nothing for any replica to distrust, so
/// no doubt is recorded (and no read waits for one to be known).
async fn reads_during_a_redis_outage_doubt_nothing(backend: Backend) {
    let redis = ThrowawayRedis::spawn();
    let database = SharedDatabase::create(backend).await;
    let prefix = format!("outage:{}:", unique_suffix());
    let proxy = CuttableProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let mut h = Harness::start_with(backend, options(format!("redis://{}", proxy.addr), &database, &prefix)).await;
    warm(&mut h, &redis.url(), &prefix).await;
    proxy.cut();
    let truth: HashMap<_, _> = CUSTOMERS.iter().map(|c| (*c, 100)).collect();
    for _ in 0..3 {
        assert_reads_match(&mut h, &truth, "during the outage").await;
    }
    assert_eq!(doubts(&database).await, 0, "reads record no doubt");
    proxy.restore();
    h.spend(PROGRAM, CUSTOMERS[0], 10, "after").await.expect("spends commit");
    assert_eq!(h.balance(PROGRAM, CUSTOMERS[0]).await.available, 90);
    h.stop().await;
    database.remove().await;
}

async fn doubts(database: &SharedDatabase) -> i64 {
    let pool = sqlx::AnyPool::connect(&database.url()).await.expect("test database answers");
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM balance_cache_doubts").fetch_one(&pool).await;
    pool.close().await;
    count.expect("the doubts table exists")
}

fn options(redis_url: String, database: &SharedDatabase, prefix: &str) -> Options {
    Options {
        redis_url: Some(redis_url),
        redis_backoff_ms: 50,
        database_url: Some(database.url()),
        redis_prefix: Some(prefix.to_owned()),
        ..Options::default()
    }
}

/// 100 points for every customer, read once so that Redis holds them.
async fn warm(h: &mut Harness, redis_url: &str, prefix: &str) {
    for customer in CUSTOMERS {
        h.earn(PROGRAM, customer, 100, &format!("earn-{customer}")).await;
        assert_eq!(h.balance(PROGRAM, customer).await.available, 100);
        assert_eq!(cached_available(redis_url, prefix, customer).await, Some(100), "{customer}: cached in Redis");
    }
}

async fn assert_reads_match(h: &mut Harness, truth: &HashMap<&str, i64>, when: &str) {
    for customer in CUSTOMERS {
        let available = h.balance(PROGRAM, customer).await.available;
        assert_eq!(available, truth[customer], "{customer} {when}: the balance must equal the ledger");
    }
}

/// Waits until no doubt is left and Redis holds every balance as the ledger
/// has it, reading through the service meanwhile (misses refill Redis).
async fn await_settled(
    h: &mut Harness,
    redis_url: &str,
    prefix: &str,
    database: &SharedDatabase,
    truth: &HashMap<&str, i64>,
) {
    let pool = sqlx::AnyPool::connect(&database.url()).await.expect("test database answers");
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        assert_reads_match(h, truth, "while Redis is being cleaned").await;
        let doubts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM balance_cache_doubts")
            .fetch_one(&pool)
            .await
            .expect("the doubts table exists");
        let mut cached = Vec::new();
        for customer in CUSTOMERS {
            cached.push(cached_available(redis_url, prefix, customer).await);
        }
        let expected: Vec<_> = CUSTOMERS.iter().map(|c| Some(truth[c])).collect();
        if doubts == 0 && cached == expected {
            pool.close().await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled within {SETTLE_DEADLINE:?}: {doubts} doubts left, Redis holds {cached:?}, ledger {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The account's available points as the ledger adds them up.
async fn ledger_available(h: &mut Harness, customer: &str) -> i64 {
    h.all_entries(PROGRAM, customer).await.iter().map(|e| e.points).sum()
}

async fn redis_connection(redis_url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url).unwrap();
    client.get_multiplexed_async_connection().await.expect("the throwaway Redis answers")
}

/// Writes Redis's data to disk, where the next start loads it from.
async fn snapshot(redis_url: &str) {
    let mut conn = redis_connection(redis_url).await;
    redis::cmd("SAVE").query_async::<()>(&mut conn).await.expect("SAVE");
}

/// How many keys Redis loaded from its snapshot at start.
async fn keys_loaded(redis_url: &str) -> usize {
    let mut conn = redis_connection(redis_url).await;
    let info: String = redis::cmd("INFO").arg("persistence").query_async(&mut conn).await.unwrap();
    let loaded = info.lines().find_map(|line| line.strip_prefix("rdb_last_load_keys_loaded:"));
    loaded.expect("redis-server reports the keys it loaded").trim().parse().unwrap()
}

async fn cached_available(redis_url: &str, prefix: &str, customer: &str) -> Option<i64> {
    let mut conn = redis_connection(redis_url).await;
    let key = format!("{prefix}bal:{{{}:{PROGRAM}:{customer}}}", PROGRAM.len());
    let json: Option<String> = redis::cmd("HGET").arg(key).arg("d").query_async(&mut conn).await.unwrap();
    json.map(|j| serde_json::from_str::<serde_json::Value>(&j).unwrap()["available"].as_i64().unwrap())
}
