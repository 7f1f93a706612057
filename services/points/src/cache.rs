//! Hot balances, in Redis or in process. The database stays the source of
//! truth: a cached balance carries the account version it was read at, a
//! write only replaces an older version, and an entry that a time-based
//! change (activation, expiry) has made stale is treated as a miss.
//!
//! Redis trouble never fails a request: reads fall back to the database and
//! writes still commit. A balance that could not be written to Redis is a
//! *doubt*, recorded in the database (`balance_cache_doubts`), so that it
//! survives a restart and reaches every replica. Each replica polls the doubts
//! and trusts Redis only for accounts it knows no doubt about, and only while
//! its last poll is recent (a lease); a process recording a doubt waits out
//! that lease before answering, so once a write is acknowledged no replica
//! serves the older balance. Whichever replica reaches Redis settles a doubt
//! by leaving a tombstone at the doubted version, which refuses any older
//! write still in flight, then deletes the doubt. A Redis server not seen
//! before (restarted from an old snapshot, or a promoted replica) is emptied
//! of balances before anyone trusts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use redis::AsyncCommands;

use loyalty_common::clock::Micros;
use loyalty_common::metrics::Metrics;
use loyalty_common::redis::Connection;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::spans;
use tracing::Instrument;

use crate::domain::{Account, Balance};
use crate::store::{CacheDoubt, CacheDoubts};

/// How often each replica reads the doubts.
const DOUBT_POLL: Duration = Duration::from_millis(100);
/// How long a poll's view of the doubts is trusted, and so how long a process
/// that recorded a doubt waits before answering. Well above `DOUBT_POLL`, so a
/// slow poll does not cost the hits of a healthy replica.
const DOUBT_LEASE: Duration = Duration::from_millis(400);
/// Doubts read and settled per round; past it no account is trusted until
/// the backlog is drained.
const DOUBT_BATCH: usize = 1_000;
/// Doubts this process could not record yet; past it the whole prefix is
/// deleted from Redis instead.
const MAX_OWN_DOUBTS: usize = 100_000;
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

/// Settles a doubt at version `ARGV[1]`: unless that version (or a newer one)
/// is cached, leaves a balance-less entry at the version just below, so reads
/// miss, the doubted balance can still be stored, and anything older cannot.
const SETTLE_DOUBT: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

#[derive(Clone, Default)]
struct CacheCounters {
    hits: Counter,
    misses: Counter,
    errors: Counter,
    stale_deletions: Counter,
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
        metrics.register(
            "balance_cache_stale_deletions",
            "Cached balances made unreadable because a write could not reach Redis (doubts settled)",
            counters.stale_deletions.clone(),
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
    Redis(Arc<RedisCache>),
}

struct RedisCache {
    conn: Connection,
    prefix: String,
    ttl: Duration,
    backoff: Duration,
    script: redis::Script,
    doubts: CacheDoubts,
    trouble: Mutex<Trouble>,
    stale_deletions: Counter,
}

#[derive(Default)]
struct Trouble {
    skip_until: Option<Instant>,
    /// When the last successful poll began: it read the doubts and found the
    /// Redis server checked, with no Redis failure since. Redis is trusted
    /// only within `DOUBT_LEASE` of it (never before the first poll).
    polled_at: Option<Instant>,
    /// The doubts that poll found, by Redis key.
    seen: HashMap<String, SeenDoubt>,
    /// That poll found more than `DOUBT_BATCH` doubts: trust no account.
    backlog: bool,
    /// Doubts of this process that a poll may not have seen yet.
    own: HashMap<String, OwnDoubt>,
    /// More own doubts than `MAX_OWN_DOUBTS`: trust no account until the
    /// whole prefix is deleted from Redis.
    own_overflowed: bool,
    /// Counts polls, to tell which own doubts a poll was sure to see.
    round: u64,
    /// Counts Redis failures: a poll during which one happened vouches for nothing.
    failures: u64,
}

struct SeenDoubt {
    version: i64,
    /// From then on every replica knows of the doubt, or trusts no Redis entry.
    known_at: Instant,
}

struct OwnDoubt {
    doubt: CacheDoubt,
    /// The round during which the doubt was committed; `None` until it is.
    recorded_in: Option<u64>,
    known_at: Option<Instant>,
}

impl BalanceCache {
    pub fn local(metrics: &Metrics) -> Self {
        Self { backend: Backend::Local(RwLock::new(HashMap::new())), counters: CacheCounters::register(metrics) }
    }

    /// `backoff`: how long to leave Redis alone after it failed.
    pub fn redis(
        conn: Connection,
        prefix: String,
        ttl: Duration,
        backoff: Duration,
        doubts: CacheDoubts,
        metrics: &Metrics,
    ) -> Self {
        let counters = CacheCounters::register(metrics);
        let redis = RedisCache {
            conn,
            prefix,
            ttl,
            backoff,
            script: redis::Script::new(PUT_IF_NEWER),
            doubts,
            trouble: Mutex::new(Trouble::default()),
            stale_deletions: counters.stale_deletions.clone(),
        };
        Self { backend: Backend::Redis(Arc::new(redis)), counters }
    }

    /// The background job that reads and settles doubts until shutdown
    /// (Redis only; until it has run once, every read misses).
    pub fn doubt_watcher(&self, mut shutdown: ShutdownSignal) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Backend::Redis(redis) = &self.backend else { return None };
        let redis = redis.clone();
        Some(async move {
            let mut ticker = tokio::time::interval(DOUBT_POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.fired() => return,
                }
                // A backlog is drained batch after batch, not one batch per tick.
                while redis.poll_doubts().await && !shutdown.is_fired() {}
            }
        })
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

    /// Drops the account's cached balance (an erased customer's); `Err` when
    /// Redis could not be told.
    pub async fn forget(&self, program_id: &str, customer_id: &str) -> Result<(), String> {
        match &self.backend {
            Backend::Local(map) => {
                map.write().expect("cache lock").remove(&(program_id.to_owned(), customer_id.to_owned()));
                Ok(())
            }
            Backend::Redis(redis) => {
                let mut conn = redis.conn.clone();
                conn.del::<_, ()>(redis.key(program_id, customer_id)).await.map_err(|error| {
                    self.counters.errors.inc();
                    redis.failed(&error);
                    format!("the balance cache (Redis) did not answer: {error}")
                })
            }
        }
    }

    /// Stores the balances writes just committed, each unless a newer
    /// version is cached, in one round trip. Accounts Redis could not be
    /// told of are doubted at once in this process and returned: whoever
    /// acknowledges one of those writes awaits [`Self::confirm`] first.
    /// Whether or not anyone does, the doubt watcher records them for the
    /// other replicas, so this belongs to the commit, not to its caller.
    pub async fn put_committed(&self, balances: &[AccountBalance]) -> Vec<CacheDoubt> {
        match self.store(balances, Written::ByWrite).await {
            Ok(()) => Vec::new(),
            Err(doubts) => doubts,
        }
    }

    /// Returns once every replica knows of `doubt`, or has stopped trusting
    /// Redis: from then on no replica serves a balance older than it.
    pub async fn confirm(&self, doubt: &CacheDoubt) {
        if let Backend::Redis(redis) = &self.backend {
            redis.doubt(redis.key(&doubt.program_id, &doubt.customer_id), doubt.clone()).await;
        }
    }

    /// Stores the balance a write committed and returns once readers can no
    /// longer be served an older one.
    pub async fn put(&self, balance: AccountBalance) {
        for doubt in self.put_committed(std::slice::from_ref(&balance)).await {
            self.confirm(&doubt).await;
        }
    }

    /// Stores a balance just read from the database after a miss. A failure
    /// here leaves nothing to doubt: whatever Redis holds is what it held
    /// before, which every write since has either replaced or doubted, so
    /// a read never waits on the doubts.
    pub async fn fill(&self, program_id: &str, customer_id: &str, balance: &Balance) {
        let balance = AccountBalance {
            program_id: program_id.to_owned(),
            customer_id: customer_id.to_owned(),
            balance: balance.clone(),
        };
        let _ = self.store(std::slice::from_ref(&balance), Written::ByRead).await;
    }

    async fn store(&self, balances: &[AccountBalance], by: Written) -> Result<(), Vec<CacheDoubt>> {
        match &self.backend {
            Backend::Local(map) => {
                let mut map = map.write().expect("cache lock");
                for AccountBalance { program_id, customer_id, balance } in balances {
                    if map.len() >= LOCAL_CAPACITY {
                        // Crude but bounded: start over rather than grow without limit.
                        map.clear();
                    }
                    let key = (program_id.clone(), customer_id.clone());
                    if map.get(&key).is_none_or(|cached| cached.version < balance.version) {
                        map.insert(key, balance.clone());
                    }
                }
                Ok(())
            }
            Backend::Redis(redis) => {
                let stored = redis.put(balances, by).await;
                if stored.is_err() {
                    self.counters.errors.inc();
                }
                stored
            }
        }
    }
}

/// One account's balance, as a write left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBalance {
    pub program_id: String,
    pub customer_id: String,
    pub balance: Balance,
}

impl AccountBalance {
    pub fn of(account: &Account) -> Self {
        Self {
            program_id: account.program_id.clone(),
            customer_id: account.customer_id.clone(),
            balance: account.balance(),
        }
    }

    /// The doubt that Redis may hold something older than this balance.
    fn doubt(&self) -> CacheDoubt {
        CacheDoubt {
            program_id: self.program_id.clone(),
            customer_id: self.customer_id.clone(),
            version: self.balance.version,
        }
    }
}

/// What [`RedisCache::register`] found.
enum Registered {
    /// Every replica knows of the doubt from then on.
    KnownAt(Instant),
    /// Too many doubts: this process trusts no Redis entry until the prefix is emptied.
    Overflowed,
    /// Only this process knows of it yet.
    Unrecorded,
}

/// Who stores a balance: a write that committed it, or a read that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    ByWrite,
    ByRead,
}

impl RedisCache {
    /// `{prefix}bal:{<len>:<program>:<customer>}`: unambiguous whatever the
    /// ids contain, and one hash slot per account on Redis Cluster.
    fn key(&self, program_id: &str, customer_id: &str) -> String {
        format!("{}bal:{{{}:{program_id}:{customer_id}}}", self.prefix, program_id.len())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// `Ok(None)` without asking Redis for an account that is doubted, or
    /// when the view of the doubts is too old to vouch for any.
    async fn get(&self, program_id: &str, customer_id: &str) -> Result<Option<Balance>, ()> {
        let key = self.key(program_id, customer_id);
        {
            let trouble = self.trouble.lock().expect("cache lock");
            if trouble.skip_until.is_some_and(|until| Instant::now() < until) {
                return Err(());
            }
            let leased = trouble.polled_at.is_some_and(|at| at.elapsed() < DOUBT_LEASE);
            if !leased
                || trouble.backlog
                || trouble.own_overflowed
                || trouble.seen.contains_key(&key)
                || trouble.own.contains_key(&key)
            {
                return Ok(None);
            }
        }
        let mut conn = self.conn.clone();
        let span = spans::redis("HGET", 1);
        match conn.hget::<_, _, Option<String>>(&key, "d").instrument(span.clone()).await {
            Ok(Some(json)) => Ok(serde_json::from_str(&json).ok()),
            Ok(None) => Ok(None),
            Err(error) => {
                spans::failed(&span);
                self.failed(&error);
                Err(())
            }
        }
    }

    /// Puts every balance in one pipelined round trip; when Redis cannot
    /// be told, a write's balances are doubted (and returned) at once.
    async fn put(&self, balances: &[AccountBalance], by: Written) -> Result<(), Vec<CacheDoubt>> {
        if balances.is_empty() {
            return Ok(());
        }
        if !self.skipping() {
            match self.put_pipelined(balances).await {
                Ok(()) => return Ok(()),
                Err(error) => self.failed(&error),
            }
        }
        if by == Written::ByRead {
            return Err(Vec::new());
        }
        let doubts = balances
            .iter()
            .map(|b| {
                let doubt = b.doubt();
                self.register(&self.key(&b.program_id, &b.customer_id), &doubt);
                doubt
            })
            .collect();
        Err(doubts)
    }

    async fn put_pipelined(&self, balances: &[AccountBalance]) -> redis::RedisResult<()> {
        let invocations: Vec<redis::ScriptInvocation<'_>> = balances
            .iter()
            .map(|b| {
                let json = serde_json::to_string(&b.balance).expect("balances serialise");
                let mut invocation = self.script.key(self.key(&b.program_id, &b.customer_id));
                invocation.arg(b.balance.version).arg(json).arg(self.ttl_ms());
                invocation
            })
            .collect();
        let mut conn = self.conn.clone();
        let span = spans::redis("EVALSHA", invocations.len());
        let done = async {
            if conn.is_cluster() {
                // Sent together, one command per key: the client routes each
                // to its slot's primary, so a batch costs one round trip per
                // node (a cluster pipeline must stay within one slot).
                let each = invocations.iter().map(|invocation| {
                    let mut conn = conn.clone();
                    async move { invocation.invoke_async::<()>(&mut conn).await }
                });
                return futures::future::join_all(each).await.into_iter().collect::<redis::RedisResult<()>>();
            }
            let pipeline = |load: bool| {
                let mut pipe = redis::pipe();
                if load {
                    pipe.load_script(&self.script).ignore();
                }
                for invocation in &invocations {
                    pipe.invoke_script(invocation).ignore();
                }
                pipe
            };
            match pipeline(false).query_async::<()>(&mut conn).await {
                // The script is gone (a restarted server, SCRIPT FLUSH): load it, run again.
                Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    pipeline(true).query_async::<()>(&mut conn).await
                }
                other => other,
            }
        }
        .instrument(span.clone())
        .await;
        if done.is_err() {
            spans::failed(&span);
        }
        done
    }

    /// Remembers in this process, at once, that Redis may hold an older
    /// balance than `doubt.version`; the watcher records it for the others.
    /// Returns when every replica knows of it, if that is known already.
    fn register(&self, key: &str, doubt: &CacheDoubt) -> Registered {
        let mut trouble = self.trouble.lock().expect("cache lock");
        let seen = trouble.seen.get(key).filter(|s| s.version >= doubt.version).map(|s| s.known_at);
        let own = trouble.own.get(key).filter(|o| o.doubt.version >= doubt.version).and_then(|o| o.known_at);
        if let Some(known_at) = seen.or(own) {
            return Registered::KnownAt(known_at);
        }
        if trouble.own.len() >= MAX_OWN_DOUBTS && !trouble.own.contains_key(key) {
            trouble.own_overflowed = true;
            return Registered::Overflowed;
        }
        // A higher version still being recorded by another call stays.
        if trouble.own.get(key).is_none_or(|o| o.doubt.version < doubt.version) {
            trouble.own.insert(key.to_owned(), OwnDoubt { doubt: doubt.clone(), recorded_in: None, known_at: None });
        }
        Registered::Unrecorded
    }

    /// Remembers that Redis may hold an older balance than `doubt.version`:
    /// at once in this process, then in the database for the others. Returns
    /// once every replica knows of it, or has stopped trusting Redis.
    async fn doubt(&self, key: String, doubt: CacheDoubt) {
        let known_at = match self.register(&key, &doubt) {
            Registered::KnownAt(at) => at,
            Registered::Overflowed => return,
            Registered::Unrecorded => match self.doubts.record(&doubt).await {
                Ok(()) => self.recorded(&key, doubt.version),
                Err(error) => {
                    // The watcher retries it. Meanwhile, when the database
                    // is down for the others too, their view of the doubts
                    // ages past its lease and they stop trusting Redis: wait
                    // that long, as after a recorded doubt.
                    tracing::warn!(%error, "cannot record a cache doubt, will retry");
                    Instant::now() + DOUBT_LEASE
                }
            },
        };
        tokio::time::sleep_until(known_at.into()).await;
    }

    /// Marks an own doubt as committed; returns when every replica knows of it.
    fn recorded(&self, key: &str, version: i64) -> Instant {
        let known_at = Instant::now() + DOUBT_LEASE;
        let mut trouble = self.trouble.lock().expect("cache lock");
        let round = trouble.round;
        if let Some(own) = trouble.own.get_mut(key)
            && own.doubt.version == version
        {
            own.recorded_in = Some(round);
            own.known_at = Some(known_at);
        }
        known_at
    }

    /// One round: records own doubts not yet in the database, reads the
    /// doubts, settles a batch in Redis. True when a backlog remains to drain now.
    async fn poll_doubts(&self) -> bool {
        let unrecorded: Vec<(String, CacheDoubt)> = {
            let trouble = self.trouble.lock().expect("cache lock");
            trouble
                .own
                .iter()
                .filter(|(_, o)| o.recorded_in.is_none())
                .map(|(k, o)| (k.clone(), o.doubt.clone()))
                .collect()
        };
        for (key, doubt) in unrecorded {
            match self.doubts.record(&doubt).await {
                Ok(()) => {
                    self.recorded(&key, doubt.version);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot record cache doubts, will retry");
                    return false;
                }
            }
        }
        let (round, failures, started) = {
            let mut trouble = self.trouble.lock().expect("cache lock");
            trouble.round += 1;
            (trouble.round, trouble.failures, Instant::now())
        };
        let limit = i64::try_from(DOUBT_BATCH + 1).unwrap_or(i64::MAX);
        let doubts = match self.doubts.list(limit).await {
            Ok(doubts) => doubts,
            Err(error) => {
                tracing::warn!(%error, "cannot read cache doubts, will retry");
                return false;
            }
        };
        let backlog = doubts.len() > DOUBT_BATCH;
        let batch = &doubts[..doubts.len().min(DOUBT_BATCH)];
        let checked = !self.skipping() && self.check_server().await.map_err(|error| self.failed(&error)).is_ok();
        let settled = checked && !batch.is_empty() && self.settle(batch).await;
        let own_overflowed = self.trouble.lock().expect("cache lock").own_overflowed;
        let prefix_deleted = checked && own_overflowed && self.delete_prefix_logged().await;

        let unsettled = if settled { &doubts[batch.len()..] } else { &doubts[..] };
        let mut trouble = self.trouble.lock().expect("cache lock");
        let seen = unsettled
            .iter()
            .map(|d| {
                let key = self.key(&d.program_id, &d.customer_id);
                // Committed before this round's read began: any view older than that ends within the lease.
                let known_at = match trouble.seen.get(&key) {
                    Some(before) if before.version == d.version => before.known_at,
                    _ => started + DOUBT_LEASE,
                };
                (key, SeenDoubt { version: d.version, known_at })
            })
            .collect();
        trouble.seen = seen;
        trouble.backlog = backlog;
        if checked && trouble.failures == failures {
            trouble.polled_at = Some(started);
        }
        // Recorded before this round began, so the read above saw them (or they were settled).
        trouble.own.retain(|_, own| own.recorded_in.is_none_or(|r| r >= round));
        if prefix_deleted {
            trouble.own_overflowed = false;
        }
        backlog && settled
    }

    /// Leaves a tombstone for each doubt, then deletes the doubts.
    async fn settle(&self, batch: &[CacheDoubt]) -> bool {
        let settles = batch
            .iter()
            .map(|doubt| {
                // One EVAL per key: keys of different accounts may live on different cluster slots.
                let mut settle = redis::cmd("EVAL");
                settle
                    .arg(SETTLE_DOUBT)
                    .arg(1)
                    .arg(self.key(&doubt.program_id, &doubt.customer_id))
                    .arg(doubt.version)
                    .arg(self.ttl_ms());
                settle
            })
            .collect();
        if let Err(error) = self.conn.run_each(settles).await {
            self.failed(&error);
            return false;
        }
        match self.doubts.clear(batch).await {
            Ok(()) => {
                self.stale_deletions.inc_by(batch.len() as u64);
                tracing::info!(accounts = batch.len(), "stale balances removed from redis");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot clear settled cache doubts, will retry");
                false
            }
        }
    }

    fn skipping(&self) -> bool {
        let trouble = self.trouble.lock().expect("cache lock");
        trouble.skip_until.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&self, error: &redis::RedisError) {
        tracing::warn!(%error, "redis unavailable, serving balances from the database");
        self.conn.renew();
        let mut trouble = self.trouble.lock().expect("cache lock");
        trouble.skip_until = Some(Instant::now() + self.backoff);
        // Redis may come back as another server (restarted, failed over): check it first.
        trouble.polled_at = None;
        trouble.failures += 1;
    }

    /// Makes sure the servers we talk to are ones whose balances were
    /// checked: a restarted Redis may have loaded an old snapshot, and a
    /// promoted replica may lag, so when the primaries (their `run_id`s: one
    /// server's, or every cluster primary's) are not the ones marked, every
    /// balance is deleted before the mark is set.
    async fn check_server(&self) -> redis::RedisResult<()> {
        let marker = format!("{}server", self.prefix);
        let mut conn = self.conn.clone();
        let primaries = self.primaries().await?;
        let mut run_ids: Vec<&str> = primaries.iter().map(|(_, run_id)| run_id.as_str()).collect();
        run_ids.sort_unstable();
        let run_ids = run_ids.join(",");
        let marked: Option<String> = conn.get(&marker).await?;
        if marked.as_deref() == Some(run_ids.as_str()) {
            return Ok(());
        }
        self.delete_prefix().await?;
        conn.set::<_, _, ()>(&marker, &run_ids).await?;
        tracing::info!(run_ids, "new redis primaries, every cached balance removed");
        Ok(())
    }

    /// Each primary's address and `run_id`.
    async fn primaries(&self) -> redis::RedisResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let answers = conn.on_each_primary(redis::cmd("INFO").arg("server")).await?;
        answers
            .into_iter()
            .map(|(node, info)| {
                let info: String = redis::FromRedisValue::from_redis_value(info)?;
                let run_id = info.lines().find_map(|line| line.strip_prefix("run_id:")).unwrap_or_default().trim();
                Ok::<_, redis::RedisError>((node, run_id.to_owned()))
            })
            .collect()
    }

    async fn delete_prefix_logged(&self) -> bool {
        match self.delete_prefix().await {
            Ok(()) => {
                tracing::info!("too many unrecorded cache doubts, every cached balance removed from redis");
                true
            }
            Err(error) => {
                self.failed(&error);
                false
            }
        }
    }

    /// Deletes every cached balance, on every primary.
    async fn delete_prefix(&self) -> redis::RedisResult<()> {
        self.conn.delete_matching(&format!("{}bal:*", self.prefix)).await.map(drop)
    }
}
