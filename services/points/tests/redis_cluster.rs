//! The balance cache on a Redis Cluster (three primaries, one replica
//! each, private to the test): balances spread over the primaries, batches
//! stored across slots, and a primary killed under earn + balance-read load
//! while its replica is promoted: no read is ever answered wrong, no call
//! fails, and the cache serves from Redis again by itself.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loyalty_common::throwaway::redis::ThrowawayRedisCluster;
use redis::AsyncCommands;
use support::{Backend, Harness, Options, earn_request};

const PROGRAM: &str = "shop";
/// Bound on the cache serving hits again after the failover.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

fn customers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("member-{i:02}")).collect()
}

fn key(prefix: &str, customer: &str) -> String {
    format!("{prefix}bal:{{{}:{PROGRAM}:{customer}}}", PROGRAM.len())
}

async fn cluster_connection(cluster: &ThrowawayRedisCluster) -> redis::cluster_async::ClusterConnection {
    let nodes = loyalty_common::redis::cluster_nodes(&cluster.url()).unwrap().expect("a cluster URL");
    redis::cluster::ClusterClient::new(nodes).unwrap().get_async_connection().await.expect("cluster connects")
}

async fn cached_available(conn: &mut redis::cluster_async::ClusterConnection, key: &str) -> Option<i64> {
    let json: Option<String> = conn.hget(key, "d").await.expect("HGET on the cluster");
    json.map(|json| serde_json::from_str::<serde_json::Value>(&json).unwrap()["available"].as_i64().unwrap())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn start(cluster: &ThrowawayRedisCluster) -> Harness {
    let options = Options { redis_url: Some(cluster.url()), redis_backoff_ms: 100, ..Options::default() };
    Harness::start_with(Backend::Postgres, options).await
}

/// Waits until `customer`'s balance is in Redis at `available`.
async fn await_cached(conn: &mut redis::cluster_async::ClusterConnection, key: &str, available: i64) {
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while cached_available(conn, key).await != Some(available) {
        assert!(Instant::now() < deadline, "{key} never cached at {available}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_spread_over_the_primaries_and_are_served_from_them() {
    let cluster = ThrowawayRedisCluster::spawn();
    let mut h = start(&cluster).await;
    let mut conn = cluster_connection(&cluster).await;
    let members = customers(24);

    // Concurrent earns: the group commit stores a batch's balances, on several slots, at once.
    let mut earns = tokio::task::JoinSet::new();
    for (i, customer) in members.iter().enumerate() {
        let mut client = h.client.clone();
        let request = earn_request(PROGRAM, customer, 10 + i as i64, &format!("earn-{customer}"));
        earns.spawn(async move { client.earn(request).await.map(|_| ()) });
    }
    while let Some(done) = earns.join_next().await {
        done.unwrap().expect("earn");
    }
    let mut primaries_used = std::collections::HashSet::new();
    for (i, customer) in members.iter().enumerate() {
        let key = key(&h.redis_prefix, customer);
        // The doubt watcher's first poll checks the primaries before anything is trusted.
        await_cached(&mut conn, &key, 10 + i as i64).await;
        primaries_used.insert(cluster.primary_of(&key));
    }
    assert!(primaries_used.len() >= 2, "24 accounts all on one primary: {primaries_used:?}");

    let hits_before = metric(&h.metrics_text().await, "balance_cache_hits_total");
    for (i, customer) in members.iter().enumerate() {
        assert_eq!(h.balance(PROGRAM, customer).await.available, 10 + i as i64, "{customer}");
    }
    let hits = metric(&h.metrics_text().await, "balance_cache_hits_total") - hits_before;
    assert_eq!(hits, members.len() as u64, "every read served from the cluster");
    h.stop().await;
}

/// A primary is killed under load while its replica lags behind it (asleep:
/// the primary acknowledged balances the replica never got), and the
/// replica is promoted. Per writing member, one task earns and then reads,
/// again and again, so each read must show exactly what was acknowledged
/// before it; the members whose last balances the replica missed are only
/// read, once the failover is over and the cache trusts Redis again:
/// served from the promoted replica without the check of the primaries,
/// they would show the older balance it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_serves_no_wrong_balance() {
    let mut cluster = ThrowawayRedisCluster::spawn();
    let mut h = start(&cluster).await;
    let mut conn = cluster_connection(&cluster).await;
    let members = customers(24);
    for customer in &members {
        h.earn(PROGRAM, customer, 100, &format!("warm-{customer}")).await;
        await_cached(&mut conn, &key(&h.redis_prefix, customer), 100).await;
    }
    let victim_key = key(&h.redis_prefix, &members[0]);
    let victim = cluster.primary_of(&victim_key);
    let on_victim: Vec<String> =
        members.iter().filter(|c| cluster.primary_of(&key(&h.redis_prefix, c)) == victim).cloned().collect();
    assert!(on_victim.len() >= 2, "too few accounts on one primary: {on_victim:?}");
    // Every other account on the victim is only read; all the rest are written and read.
    let still: Vec<String> = on_victim.iter().skip(1).step_by(2).cloned().collect();
    let writers: Vec<String> = members.iter().filter(|c| !still.contains(c)).cloned().collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (reads, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let read = |client: &mut loyalty_proto::points::v1::points_service_client::PointsServiceClient<_>,
                customer: &str| {
        let request =
            loyalty_proto::points::v1::GetBalanceRequest { program_id: PROGRAM.into(), customer_id: customer.into() };
        let mut client = client.clone();
        let customer = customer.to_owned();
        async move {
            let reply = client.get_balance(request).await;
            let balance = reply.unwrap_or_else(|s| panic!("{customer}: read failed: {s:?}")).into_inner();
            balance.balance.expect("balance set").available
        }
    };
    let mut load = tokio::task::JoinSet::new();
    for customer in writers.clone() {
        let (mut client, stop) = (h.client.clone(), stop.clone());
        let (reads, writes) = (reads.clone(), writes.clone());
        load.spawn(async move {
            let mut expected = 100;
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let request = earn_request(PROGRAM, &customer, 1, &format!("load-{customer}-{round}"));
                client.earn(request).await.unwrap_or_else(|s| panic!("{customer}: earn failed: {s:?}"));
                expected += 1;
                writes.fetch_add(1, Ordering::Relaxed);
                for _ in 0..3 {
                    assert_eq!(
                        read(&mut client, &customer).await,
                        expected,
                        "{customer}: a read after an acknowledged earn"
                    );
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The replica falls behind: what the victim acknowledges now, it never gets.
    let replica = cluster.replica_of(victim);
    tokio::task::block_in_place(|| {
        cluster.put_to_sleep(replica, 4);
        cluster.cut_replication(victim);
    });
    for customer in &still {
        h.earn(PROGRAM, customer, 5, &format!("lagging-{customer}")).await;
        assert_eq!(h.balance(PROGRAM, customer).await.available, 105);
    }
    let before_kill = reads.load(Ordering::Relaxed);
    cluster.kill(victim);
    let killed_at = Instant::now();
    // The replica wakes up and is promoted; the load runs on the other worker meanwhile.
    tokio::task::block_in_place(|| cluster.await_healthy());
    let promoted_after = killed_at.elapsed();
    assert!(!cluster.primary_ports().contains(&victim), "the killed node is no primary any more");
    assert!(cluster.primary_ports().contains(&replica), "its replica was promoted");
    // The cache trusts Redis again (the writers' reads hit) before the
    // accounts the replica missed are read at all: nothing read in between
    // refreshed them by a fill.
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let hits = metric(&h.metrics_text().await, "balance_cache_hits_total");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if metric(&h.metrics_text().await, "balance_cache_hits_total") > hits {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never trusted the promoted replica");
    }
    for customer in still.clone() {
        let (mut client, stop, reads) = (h.client.clone(), stop.clone(), reads.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(
                    read(&mut client, &customer).await,
                    105,
                    "{customer}: a read of a balance the replica missed"
                );
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    // Load goes on over the promoted replica for a while.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("no read was wrong and no call failed");
    }
    assert!(reads.load(Ordering::Relaxed) > before_kill, "reads went on through the failover");
    eprintln!(
        "failover: {} of {} accounts on the killed primary ({} only read), replica promoted {promoted_after:?} \
         after the kill, {} writes and {} reads, all correct",
        on_victim.len(),
        members.len(),
        still.len(),
        writes.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed)
    );

    // By itself, the cache stores and serves from the new primary again.
    let mut conn = cluster_connection(&cluster).await;
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let hits_before = metric(&h.metrics_text().await, "balance_cache_hits_total");
        h.earn(PROGRAM, &members[0], 1, &format!("after-{}", hits_before)).await;
        let expected = h.assert_ledger_matches_balance(PROGRAM, &members[0]).await.available;
        let served = h.balance(PROGRAM, &members[0]).await.available;
        assert_eq!(served, expected);
        let hit = metric(&h.metrics_text().await, "balance_cache_hits_total") > hits_before;
        if hit && cached_available(&mut conn, &victim_key).await == Some(expected) {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never served from the promoted replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}
