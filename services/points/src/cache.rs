//! Hot balances, in Redis or in process. The database stays the source of
//! truth: a cached balance carries the account version it was read at, a
//! write only replaces an older version, and an entry that a time-based
//! change (activation, expiry) has made stale is treated as a miss.
//!
//! Redis trouble never fails a request: reads fall back to the database and
//! writes still commit. A balance we failed to refresh in Redis is
//! remembered and deleted there before this process reads from Redis again,
//! so no stale balance is served once Redis is back.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use loyalty_common::clock::Micros;
use loyalty_common::metrics::Metrics;

use crate::domain::Balance;

/// Past this many keys to clean up, clean up the whole prefix instead.
const MAX_DIRTY_KEYS: usize = 100_000;
/// Bound on the in-process cache.
const LOCAL_CAPACITY: usize = 200_000;

/// Stores `ARGV[2]` as the balance at version `ARGV[1]` unless a newer
/// version is already there.
const PUT_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

#[derive(Clone, Default)]
struct CacheCounters {
    hits: Counter,
    misses: Counter,
    errors: Counter,
}

impl CacheCounters {
    fn register(metrics: &Metrics) -> Self {
        let counters = Self::default();
        metrics.register("balance_cache_hits", "GetBalance answers served from the cache", counters.hits.clone());
        metrics.register("balance_cache_misses", "GetBalance answers read from the database", counters.misses.clone());
        metrics.register(
            "balance_cache_errors",
            "Cache operations that failed (Redis unreachable)",
            counters.errors.clone(),
        );
        counters
    }
}

pub struct BalanceCache {
    backend: Backend,
    counters: CacheCounters,
}

enum Backend {
    Local(RwLock<HashMap<(String, String), Balance>>),
    Redis(RedisCache),
}

struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    backoff: Duration,
    script: redis::Script,
    trouble: Mutex<Trouble>,
}

#[derive(Default)]
struct Trouble {
    skip_until: Option<Instant>,
    dirty: HashSet<String>,
    overflowed: bool,
}

impl BalanceCache {
    pub fn local(metrics: &Metrics) -> Self {
        Self { backend: Backend::Local(RwLock::new(HashMap::new())), counters: CacheCounters::register(metrics) }
    }

    /// `backoff`: how long to leave Redis alone after it failed.
    pub fn redis(conn: ConnectionManager, prefix: String, ttl: Duration, backoff: Duration, metrics: &Metrics) -> Self {
        let redis = RedisCache {
            conn,
            prefix,
            ttl,
            backoff,
            script: redis::Script::new(PUT_IF_NEWER),
            trouble: Mutex::new(Trouble::default()),
        };
        Self { backend: Backend::Redis(redis), counters: CacheCounters::register(metrics) }
    }

    /// A balance that is still valid at `now`, if cached.
    pub async fn get(&self, program_id: &str, customer_id: &str, now: Micros) -> Option<Balance> {
        let found = match &self.backend {
            Backend::Local(map) => {
                map.read().expect("cache lock").get(&(program_id.to_owned(), customer_id.to_owned())).cloned()
            }
            Backend::Redis(redis) => match redis.get(program_id, customer_id).await {
                Ok(found) => found,
                Err(()) => {
                    self.counters.errors.inc();
                    None
                }
            },
        };
        let fresh = found.filter(|b| b.valid_until.is_none_or(|at| now < at));
        if fresh.is_some() {
            self.counters.hits.inc()
        } else {
            self.counters.misses.inc()
        };
        fresh
    }

    /// Stores `balance` unless a newer version is cached.
    pub async fn put(&self, program_id: &str, customer_id: &str, balance: &Balance) {
        match &self.backend {
            Backend::Local(map) => {
                let mut map = map.write().expect("cache lock");
                if map.len() >= LOCAL_CAPACITY {
                    // Crude but bounded: start over rather than grow without limit.
                    map.clear();
                }
                let key = (program_id.to_owned(), customer_id.to_owned());
                if map.get(&key).is_none_or(|cached| cached.version < balance.version) {
                    map.insert(key, balance.clone());
                }
            }
            Backend::Redis(redis) => {
                if redis.put(program_id, customer_id, balance).await.is_err() {
                    self.counters.errors.inc();
                }
            }
        }
    }
}

impl RedisCache {
    /// `{prefix}bal:{<len>:<program>:<customer>}`: unambiguous whatever the
    /// ids contain, and one hash slot per account on Redis Cluster.
    fn key(&self, program_id: &str, customer_id: &str) -> String {
        format!("{}bal:{{{}:{program_id}:{customer_id}}}", self.prefix, program_id.len())
    }

    async fn get(&self, program_id: &str, customer_id: &str) -> Result<Option<Balance>, ()> {
        if !self.usable().await {
            return Err(());
        }
        let key = self.key(program_id, customer_id);
        let mut conn = self.conn.clone();
        match conn.hget::<_, _, Option<String>>(&key, "d").await {
            Ok(Some(json)) => Ok(serde_json::from_str(&json).ok()),
            Ok(None) => Ok(None),
            Err(error) => {
                self.failed(None, &error);
                Err(())
            }
        }
    }

    async fn put(&self, program_id: &str, customer_id: &str, balance: &Balance) -> Result<(), ()> {
        let key = self.key(program_id, customer_id);
        if self.skipping() {
            self.remember_dirty(key);
            return Err(());
        }
        let json = serde_json::to_string(balance).expect("balances serialise");
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> =
            self.script.key(&key).arg(balance.version).arg(json).arg(ttl_ms).invoke_async(&mut conn).await;
        result.map(drop).map_err(|error| self.failed(Some(key), &error))
    }

    fn skipping(&self) -> bool {
        let trouble = self.trouble.lock().expect("cache lock");
        trouble.skip_until.is_some_and(|until| Instant::now() < until)
    }

    fn remember_dirty(&self, key: String) {
        let mut trouble = self.trouble.lock().expect("cache lock");
        if trouble.dirty.len() >= MAX_DIRTY_KEYS {
            trouble.overflowed = true;
            trouble.dirty.clear();
        } else if !trouble.overflowed {
            trouble.dirty.insert(key);
        }
    }

    fn failed(&self, dirty_key: Option<String>, error: &redis::RedisError) {
        tracing::warn!(%error, "redis unavailable, serving balances from the database");
        if let Some(key) = dirty_key {
            self.remember_dirty(key);
        }
        self.trouble.lock().expect("cache lock").skip_until = Some(Instant::now() + self.backoff);
    }

    /// False while backing off, or while balances we failed to refresh could
    /// still be sitting in Redis (they are deleted first).
    async fn usable(&self) -> bool {
        let (keys, overflowed) = {
            let mut trouble = self.trouble.lock().expect("cache lock");
            if trouble.skip_until.is_some_and(|until| Instant::now() < until) {
                return false;
            }
            if trouble.dirty.is_empty() && !trouble.overflowed {
                return true;
            }
            (std::mem::take(&mut trouble.dirty), std::mem::take(&mut trouble.overflowed))
        };
        let cleaned = if overflowed { self.delete_prefix().await } else { self.delete(&keys).await };
        match cleaned {
            Ok(()) => {
                tracing::info!(keys = keys.len(), overflowed, "redis back, stale balances removed");
                true
            }
            Err(error) => {
                let mut trouble = self.trouble.lock().expect("cache lock");
                trouble.dirty.extend(keys);
                trouble.overflowed |= overflowed;
                drop(trouble);
                self.failed(None, &error);
                false
            }
        }
    }

    async fn delete(&self, keys: &HashSet<String>) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        // One key per DEL: keys of different accounts may live on different cluster slots.
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.del(key).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    async fn delete_prefix(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}bal:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.del(key).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
