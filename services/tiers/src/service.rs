//! The tiers service's core: the store, an in-process multiplier cache for
//! the points service's hot path, and the review job.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use loyalty_common::clock::Micros;
use loyalty_common::metrics::Metrics;
use loyalty_common::shutdown::ShutdownSignal;

use crate::domain::{BP_ONE, Ladder, Membership};
use crate::error::Error;
use crate::store::{QualifyingEntry, TierStore};

/// Memberships reviewed per batch by the review job.
const REVIEW_BATCH: i64 = 500;
/// Bound on the multiplier cache.
const CACHE_CAPACITY: usize = 200_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct CachedTier {
    tier_id: String,
    multiplier_bp: i64,
    birthday_multiplier_bp: i64,
    /// Since when the member holds the tier.
    since: Micros,
    fetched: Instant,
    /// When a review is due: the entry is stale from then on.
    valid_until: Option<Micros>,
}

/// A customer's tier as the points service prices with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Empty: no tier.
    pub tier_id: String,
    pub multiplier_bp: i64,
    pub birthday_multiplier_bp: i64,
}

impl Standing {
    fn on(ladder: &Ladder, tier_id: String) -> Self {
        let birthday_multiplier_bp = ladder.tier(&tier_id).map_or(BP_ONE, |t| t.benefits.birthday_bp());
        Self { multiplier_bp: ladder.multiplier_bp(&tier_id), birthday_multiplier_bp, tier_id }
    }
}

pub struct Tiers {
    store: TierStore,
    cache_ttl: Duration,
    multipliers: RwLock<HashMap<(String, String), CachedTier>>,
    hits: Counter,
    misses: Counter,
}

impl Tiers {
    /// `cache_ttl` bounds how long another replica's change can go unseen.
    pub fn new(store: TierStore, cache_ttl: Duration, metrics: &Metrics) -> Self {
        let (hits, misses) = (Counter::default(), Counter::default());
        metrics.register("tier_multiplier_cache_hits", "GetMultiplier answers served from memory", hits.clone());
        metrics.register(
            "tier_multiplier_cache_misses",
            "GetMultiplier answers read from the database",
            misses.clone(),
        );
        Self { store, cache_ttl, multipliers: RwLock::new(HashMap::new()), hits, misses }
    }

    pub fn store(&self) -> &TierStore {
        &self.store
    }

    /// The customer's tier and multipliers at `at` (default: now); from
    /// memory when fresh and the tier has not changed since `at`.
    pub async fn multiplier(&self, program_id: &str, customer_id: &str, at: Option<Micros>) -> Result<Standing, Error> {
        let key = (program_id.to_owned(), customer_id.to_owned());
        let now = self.store.now();
        let at = at.unwrap_or(now).min(now);
        let fresh = |c: &&CachedTier| {
            c.fetched.elapsed() < self.cache_ttl && c.valid_until.is_none_or(|until| now < until) && c.since <= at
        };
        if let Some(hit) = self.multipliers.read().expect("cache lock").get(&key).filter(fresh) {
            self.hits.inc();
            return Ok(Standing {
                tier_id: hit.tier_id.clone(),
                multiplier_bp: hit.multiplier_bp,
                birthday_multiplier_bp: hit.birthday_multiplier_bp,
            });
        }
        self.misses.inc();
        let (member, ladder) = self.membership(program_id, customer_id).await?;
        let tier_id = if member.since <= at {
            member.tier_id
        } else {
            // The tier changed after `at`: the history says what it was then
            // (at today's ladder multipliers).
            self.store.tier_at(program_id, customer_id, at).await?
        };
        Ok(Standing::on(&ladder, tier_id))
    }

    /// The membership now, evaluated first when a review is due.
    pub async fn membership(&self, program_id: &str, customer_id: &str) -> Result<(Membership, Ladder), Error> {
        let now = self.store.now();
        let stored = self.store.membership(program_id, customer_id).await?;
        let (member, ladder) = match stored {
            Some(member) if member.next_review_at.is_none_or(|at| at > now) => {
                (member, self.store.ladder(program_id).await?)
            }
            Some(_) => self.store.evaluate(program_id, customer_id).await?,
            None => {
                let member = Membership {
                    program_id: program_id.to_owned(),
                    customer_id: customer_id.to_owned(),
                    ..Membership::default()
                };
                (member, self.store.ladder(program_id).await?)
            }
        };
        self.remember(&member, &ladder);
        Ok((member, ladder))
    }

    pub async fn reevaluate(&self, program_id: &str, customer_id: &str) -> Result<(Membership, Ladder), Error> {
        let (member, ladder) = self.store.evaluate(program_id, customer_id).await?;
        self.remember(&member, &ladder);
        Ok((member, ladder))
    }

    pub async fn assign(
        &self,
        program_id: &str,
        customer_id: &str,
        tier_id: Option<&str>,
        ends_at: Option<Micros>,
        actor: &str,
        key: &str,
    ) -> Result<(Membership, Ladder), Error> {
        // A caller that gives up after the commit leaves no old tier in memory.
        let forget = ForgetOnDrop { tiers: self, program_id, customer_id: Some(customer_id) };
        let (member, ladder) = self.store.assign(program_id, customer_id, tier_id, ends_at, actor, key).await?;
        drop(forget);
        self.remember(&member, &ladder);
        Ok((member, ladder))
    }

    pub async fn put_ladder(
        &self,
        program_id: &str,
        ladder: Ladder,
        expected_version: Option<i64>,
        actor: &str,
        key: &str,
    ) -> Result<Ladder, Error> {
        // Multipliers of this program may all have changed, also when the
        // caller gives up after the commit.
        let _forget = ForgetOnDrop { tiers: self, program_id, customer_id: None };
        self.store.put_ladder(program_id, ladder, expected_version, actor, key).await
    }

    /// Applies a batch from the ledger consumer.
    pub async fn apply(&self, entries: &[QualifyingEntry], last_sequence: i64) -> Result<(), Error> {
        let changed = self.store.apply(entries, last_sequence).await?;
        let mut ladders: HashMap<String, Ladder> = HashMap::new();
        for member in changed {
            if !ladders.contains_key(&member.program_id) {
                ladders.insert(member.program_id.clone(), self.store.ladder(&member.program_id).await?);
            }
            self.remember(&member, &ladders[&member.program_id]);
        }
        Ok(())
    }

    /// Reviews every membership that is due (window boundary, grace end,
    /// assignment end). Returns how many were reviewed.
    pub async fn review_due(&self) -> Result<usize, Error> {
        let mut reviewed = 0;
        loop {
            let due = self.store.due(REVIEW_BATCH).await?;
            let batch = due.len();
            for (program_id, customer_id) in due {
                self.reevaluate(&program_id, &customer_id).await?;
            }
            reviewed += batch;
            if batch < usize::try_from(REVIEW_BATCH).unwrap_or(usize::MAX) {
                return Ok(reviewed);
            }
        }
    }

    /// Background job: `review_due` every `interval` until shutdown.
    pub async fn review_job(self: std::sync::Arc<Self>, interval: Duration, shutdown: ShutdownSignal) {
        loyalty_common::shutdown::every(interval, shutdown, || async {
            match self.review_due().await {
                Ok(0) => {}
                Ok(reviewed) => tracing::info!(reviewed, "membership review done"),
                Err(error) => tracing::warn!(error = %error, "membership review failed, will retry"),
            }
        })
        .await;
    }

    fn remember(&self, member: &Membership, ladder: &Ladder) {
        let mut cache = self.multipliers.write().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY {
            // Crude but bounded: start over rather than grow without limit.
            cache.clear();
        }
        cache.insert(
            (member.program_id.clone(), member.customer_id.clone()),
            CachedTier {
                tier_id: member.tier_id.clone(),
                multiplier_bp: ladder.multiplier_bp(&member.tier_id),
                birthday_multiplier_bp: ladder.tier(&member.tier_id).map_or(BP_ONE, |t| t.benefits.birthday_bp()),
                since: member.since,
                fetched: Instant::now(),
                valid_until: member.next_review_at,
            },
        );
    }
}

/// Forgets a customer's (or a whole program's) remembered multipliers when
/// dropped, which a future cancelled after its commit still does.
struct ForgetOnDrop<'a> {
    tiers: &'a Tiers,
    program_id: &'a str,
    customer_id: Option<&'a str>,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        let mut cache = self.tiers.multipliers.write().expect("cache lock");
        match self.customer_id {
            Some(customer) => {
                cache.remove(&(self.program_id.to_owned(), customer.to_owned()));
            }
            None => cache.retain(|(program, _), _| program != self.program_id),
        }
    }
}
