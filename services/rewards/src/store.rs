//! The catalog, redemptions and vouchers in SQL (PostgreSQL or SQLite
//! through sqlx's `Any` driver). Stock is reserved under an exclusive lock
//! on the reward's row, which serialises redemptions of a reward with stock
//! or a per-customer limit, so both hold under concurrency; a reward with
//! neither is staged under a shared lock, and on PostgreSQL by group commit
//! (`store/batch.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, MICROS_PER_SECOND, Micros};
use loyalty_common::db::{self, Database, Dialect};
use loyalty_common::db::{from_json, to_json};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write, request_hash};
use loyalty_common::outbox;
use loyalty_common::privacy::customer_hash;

use crate::domain::{self, Reward};
use crate::error::Error;

mod batch;

use batch::{Activation, Batches, StageRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Active,
    Used,
    Cancelled,
    Expired,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Used => "used",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Used, Self::Cancelled, Self::Expired, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub redemption_id: String,
    pub program_id: String,
    pub customer_id: String,
    pub reward_id: String,
    pub reward_name: String,
    pub points: i64,
    pub status: Status,
    pub voucher_code: String,
    pub voucher_expires_at: Micros,
    pub consumed_order_id: String,
    pub created_at: Micros,
    /// A gift or a campaign code: who gave it and why (empty: bought with points).
    #[serde(default)]
    pub granted_by: String,
    #[serde(default)]
    pub grant_reason: String,
    /// The campaign code's batch.
    #[serde(default)]
    pub batch_id: String,
}

impl Redemption {
    /// The idempotency key of the spend, derived from the redemption.
    pub fn spend_key(&self) -> String {
        format!("redemption:{}:spend", self.redemption_id)
    }

    /// The event `event_type` (`reward.redeemed`, `voucher.consumed`,
    /// `voucher.expiring_soon`, `redemption.cancelled`) of this redemption
    /// as it stands at `at`; `docs/events/<type>.v1.schema.json` describes it.
    pub fn event(&self, event_type: &'static str, at: Micros) -> outbox::Event {
        let instant = |at: Micros| loyalty_common::clock::to_timestamp(at).to_string();
        let mut data = serde_json::json!({
            "customer_id": self.customer_id,
            "redemption_id": self.redemption_id,
            "reward_id": self.reward_id,
            "reward_name": self.reward_name,
            "points": self.points,
            "voucher_code": crate::domain::display_code(&self.voucher_code),
            "voucher_expires_at": instant(self.voucher_expires_at),
            "redeemed_at": instant(self.created_at),
        });
        if !self.consumed_order_id.is_empty() {
            data["order_id"] = self.consumed_order_id.as_str().into();
        }
        outbox::Event {
            program_id: self.program_id.clone(),
            customer_id: self.customer_id.clone(),
            event_type,
            occurred_at: at,
            data,
        }
    }
}

/// The events a redemption's states are.
pub const REDEEMED: &str = "reward.redeemed";
pub const CONSUMED: &str = "voucher.consumed";
pub const EXPIRING_SOON: &str = "voucher.expiring_soon";
pub const CANCELLED: &str = "redemption.cancelled";
pub const GRANTED: &str = "reward.granted";

/// Vouchers written per INSERT (16 values each).
const ISSUED_PER_STATEMENT: usize = 200;

/// A batch of campaign codes as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBatch {
    pub batch_id: String,
    /// Each code as stored (without dashes), in the order issued.
    pub codes: Vec<String>,
    pub valid_until: Micros,
}

/// Who gives a gift or a batch, why, and the request's idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct Giving<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
    pub key: &'a str,
}

/// A reward as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub reward: Reward,
    pub remaining_stock: Option<i64>,
    pub archived: bool,
}

impl CatalogEntry {
    /// Whether each redemption is counted against something: stock, or a
    /// per-customer limit.
    pub fn counted(&self) -> bool {
        self.remaining_stock.is_some() || self.reward.per_customer_limit > 0
    }
}

/// Points to give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTask {
    pub task_id: String,
    /// The idempotency key of the spend given back; empty for a task
    /// written before spends were restored (sent as an adjustment).
    pub spend_key: String,
    pub program_id: String,
    pub customer_id: String,
    pub points: i64,
    pub reason: String,
    /// Who caused it (`api-key:<id>` for a cancellation); empty for the service's own refunds.
    pub actor: String,
}

/// A PENDING redemption as one claim on it holds it: staging it, or taking
/// it over in recovery, draws a fresh token, and issuing the voucher,
/// failing it or renewing the lease succeeds only for the latest claim's
/// token. So a worker that lost the redemption can never finish it, even
/// when the same process claimed it again meanwhile.
#[derive(Debug, Clone)]
pub struct Claim {
    pub redemption: Redemption,
    token: String,
}

impl std::ops::Deref for Claim {
    type Target = Redemption;

    fn deref(&self) -> &Redemption {
        &self.redemption
    }
}

/// The first step of a redemption.
#[derive(Debug)]
pub enum Staged {
    /// A new redemption, stock reserved, points still to spend.
    New(Claim),
    /// The key was used before: the redemption as it stands.
    Replay(Redemption),
    /// The reward is limited to some tiers and is no longer the one the
    /// caller judged the customer's tier against: judge again on this one.
    Changed(CatalogEntry),
}

/// Rewards as this process last read them, so that a redemption starts
/// without reading its reward. A copy may be stale (another replica edited
/// the reward): what it decides is checked again where it counts, under a
/// lock on the reward's row. The batch stages only when the stored body is
/// still the one seen, and the one-row path judges stock, limit, dates and
/// cost on the row it locked, and hands a changed tier-limited reward back
/// ([`Staged::Changed`]) for the tier check; a tier refusal made on a copy
/// is confirmed on the stored reward. Every read of one reward by its id,
/// locked or not, refreshes its copy (catalog listings and batches do not).
///
/// Keyed by reward id (ids are unique across programs), with the program
/// the reward belongs to, which every lookup must match.
#[derive(Debug, Default)]
struct Seen(Mutex<HashMap<String, (String, CatalogEntry)>>);

/// Copies kept at most (rewards of all programs); past that, all are dropped
/// and read again as redeemed.
const SEEN_CAPACITY: usize = 10_000;

impl Seen {
    fn get(&self, program_id: &str, reward_id: &str) -> Option<CatalogEntry> {
        let rewards = self.0.lock().expect("seen rewards poisoned");
        rewards.get(reward_id).filter(|(program, _)| program == program_id).map(|(_, entry)| entry.clone())
    }

    /// Keeps `entry` unless a newer version of it is already kept (a slow
    /// read must not put an older one back).
    fn put(&self, program_id: &str, entry: &CatalogEntry) {
        let mut rewards = self.0.lock().expect("seen rewards poisoned");
        match rewards.get(&entry.reward.reward_id) {
            Some((_, kept)) if kept.reward.version > entry.reward.version => return,
            Some(_) => {}
            None if rewards.len() >= SEEN_CAPACITY => rewards.clear(),
            None => {}
        }
        rewards.insert(entry.reward.reward_id.clone(), (program_id.to_owned(), entry.clone()));
    }

    fn forget(&self, program_id: &str, reward_id: &str) {
        let mut rewards = self.0.lock().expect("seen rewards poisoned");
        if rewards.get(reward_id).is_some_and(|(program, _)| program == program_id) {
            rewards.remove(reward_id);
        }
    }
}

const REDEMPTION_COLUMNS: &str = "redemption_id, program_id, customer_id, reward_id, reward_name, points, status, \
     voucher_code, voucher_expires_at_us, consumed_order_id, created_at_us, granted_by, grant_reason, batch_id";

/// Lease of a store made without [`RewardsStore::with_lease`]: twice the
/// default upstream deadline (`UPSTREAM_TIMEOUT_MS`, 2 s).
pub const DEFAULT_LEASE: Micros = 4 * MICROS_PER_SECOND;

/// How old a PENDING redemption without an owner (staged by a binary from
/// before leases, still running during a rolling deploy) must be before it
/// is taken over: longer than any saga's calls take.
pub const UNOWNED_GRACE: Micros = 30 * MICROS_PER_SECOND;

/// This service's name on its ledger cursor.
const CONSUMER: &str = "rewards";

#[derive(Clone, Debug)]
pub struct RewardsStore {
    db: Database,
    clock: Arc<dyn Clock>,
    /// This process's name on the PENDING redemptions it works on, new at every start.
    owner: String,
    lease: Micros,
    /// Group commit of stagings and activations (PostgreSQL).
    batches: Arc<Batches>,
    seen: Arc<Seen>,
}

impl RewardsStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        let owner = format!("rewards-{}", uuid::Uuid::now_v7().simple());
        Self { db, clock, owner, lease: DEFAULT_LEASE, batches: Arc::default(), seen: Arc::default() }
    }

    /// How long a PENDING redemption stays this process's after each step.
    pub fn with_lease(self, lease: Micros) -> Self {
        Self { lease, ..self }
    }

    /// Redemptions (staged, activated) by group commit so far; the others
    /// took the one-row path.
    pub fn batched(&self) -> (u64, u64) {
        self.batches.written()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn lease(&self) -> Micros {
        self.lease
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Stores a new reward (already validated) under a fresh id.
    pub async fn create(&self, program_id: &str, reward: Reward, key: &str) -> Result<CatalogEntry, Error> {
        let request = serde_json::json!({ "reward": Reward { reward_id: String::new(), ..reward.clone() } });
        let hash = request_hash(program_id, &request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "CreateReward", key, &hash, self.now()).await? {
            tx.rollback().await?;
            let reward_id: String = from_json(&saved)?;
            return self.entry(program_id, &reward_id).await;
        }
        let reward = Reward { reward_id: format!("rwd_{}", uuid::Uuid::now_v7().simple()), version: 1, ..reward };
        sqlx::query(
            "INSERT INTO rewards (reward_id, program_id, body, total_stock, remaining_stock, created_at_us) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(&reward.reward_id)
        .bind(program_id)
        .bind(to_json(&reward))
        .bind(reward.total_stock)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        idempotency::save(&mut tx, program_id, "CreateReward", key, &to_json(&reward.reward_id), "").await?;
        tx.commit().await?;
        self.entry(program_id, &reward.reward_id).await
    }

    /// Replaces a reward; vouchers already issued still count against a new
    /// total stock. With `expected_version`, a reward changed meanwhile is
    /// refused; the same replacement again (a retry) changes nothing and
    /// answers as the first did.
    pub async fn update(
        &self,
        program_id: &str,
        reward: Reward,
        expected_version: Option<i64>,
    ) -> Result<CatalogEntry, Error> {
        let mut tx = begin_write(&self.db).await?;
        let current = self.lock_reward(&mut tx, program_id, &reward.reward_id, RowLock::Exclusive).await?;
        let version = current.reward.version;
        if (Reward { version, ..reward.clone() }) == current.reward {
            tx.rollback().await?;
            return self.entry(program_id, &reward.reward_id).await;
        }
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(Error::VersionMismatch { expected, actual: version });
        }
        let reward = Reward { version: version + 1, ..reward };
        let issued = match (current.reward.total_stock, current.remaining_stock) {
            (Some(total), Some(remaining)) => total - remaining,
            _ => self.issued(&mut tx, &reward.reward_id).await?,
        };
        let remaining = reward.total_stock.map(|total| (total - issued).max(0));
        sqlx::query("UPDATE rewards SET body = $1, total_stock = $2, remaining_stock = $3 WHERE reward_id = $4")
            .bind(to_json(&reward))
            .bind(reward.total_stock)
            .bind(remaining)
            .bind(&reward.reward_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.entry(program_id, &reward.reward_id).await
    }

    pub async fn archive(&self, program_id: &str, reward_id: &str) -> Result<CatalogEntry, Error> {
        let done = sqlx::query("UPDATE rewards SET archived = 1 WHERE program_id = $1 AND reward_id = $2")
            .bind(program_id)
            .bind(reward_id)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::RewardNotFound(reward_id.to_owned()));
        }
        self.entry(program_id, reward_id).await
    }

    /// The reward as stored now.
    pub async fn entry(&self, program_id: &str, reward_id: &str) -> Result<CatalogEntry, Error> {
        let row =
            sqlx::query("SELECT body, remaining_stock, archived FROM rewards WHERE program_id = $1 AND reward_id = $2")
                .bind(program_id)
                .bind(reward_id)
                .fetch_optional(&self.db.pool)
                .await?;
        match row.as_ref().map(entry_from_row).transpose()? {
            Some(entry) => {
                self.seen.put(program_id, &entry);
                Ok(entry)
            }
            None => {
                self.seen.forget(program_id, reward_id);
                Err(Error::RewardNotFound(reward_id.to_owned()))
            }
        }
    }

    /// The reward as this process last read it, read now if it never did
    /// (then `true`): what a redemption starts from ([`Seen`] says why a
    /// stale copy is safe).
    pub async fn seen_entry(&self, program_id: &str, reward_id: &str) -> Result<(CatalogEntry, bool), Error> {
        match self.seen.get(program_id, reward_id) {
            Some(entry) => Ok((entry, false)),
            None => Ok((self.entry(program_id, reward_id).await?, true)),
        }
    }

    pub async fn catalog(&self, program_id: &str, include_archived: bool) -> Result<Vec<CatalogEntry>, Error> {
        let rows = sqlx::query(
            "SELECT body, remaining_stock, archived FROM rewards WHERE program_id = $1 AND (archived = 0 OR $2 = 1) \
             ORDER BY created_at_us, reward_id",
        )
        .bind(program_id)
        .bind(i64::from(include_archived))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Redemptions of a reward by a customer since `since` that hold or held a voucher.
    pub async fn recent_redemptions(&self, reward_id: &str, customer_id: &str, since: Micros) -> Result<i64, Error> {
        recent_in(&mut *self.db.pool.acquire().await?, reward_id, customer_id, since).await
    }

    /// Reserves stock and records a PENDING redemption, re-checking limit and
    /// stock under the reward's row lock. A replayed key gets its redemption
    /// back. `seen` is the reward as the caller read it, unlocked.
    pub async fn stage(
        &self,
        program_id: &str,
        customer_id: &str,
        seen: &CatalogEntry,
        key: &str,
    ) -> Result<Staged, Error> {
        let now = self.now();
        let reward_id = seen.reward.reward_id.as_str();
        if self.db.dialect == Dialect::Postgres
            && !seen.counted()
            && !seen.archived
            && seen.reward.is_active(now)
            && let Some(staged) = self.stage_uncounted(program_id, customer_id, seen, key, now).await?
        {
            return Ok(staged);
        }
        if let Some(redemption) = self.replayed(program_id, customer_id, reward_id, key).await? {
            return Ok(Staged::Replay(redemption));
        }
        // A reward with stock or a per-customer limit is checked and counted
        // under its row's exclusive lock, so stagings of it run one at a
        // time. Any other needs only that it does not change meanwhile (an
        // edit that adds stock counts what was issued): a shared lock, which
        // concurrent stagings hold together. The kind is known only once
        // locked; a reward that became limited is locked again, exclusively.
        let mut exclusive = self.db.dialect == Dialect::Sqlite || seen.counted();
        let (mut tx, entry) = loop {
            let mut tx = begin_write(&self.db).await?;
            let lock = if exclusive { RowLock::Exclusive } else { RowLock::Shared };
            let entry = self.lock_reward(&mut tx, program_id, reward_id, lock).await?;
            if exclusive || !entry.counted() {
                break (tx, entry);
            }
            tx.rollback().await?;
            exclusive = true;
        };
        if entry.reward.tier_limited() && entry.reward != seen.reward {
            tx.rollback().await?;
            return Ok(Staged::Changed(entry));
        }
        if entry.archived || !entry.reward.is_active(now) {
            return Err(Error::RewardNotActive(reward_id.to_owned()));
        }
        let reward = &entry.reward;
        if reward.per_customer_limit > 0
            && recent_in(&mut tx, reward_id, customer_id, reward.limit_since(now)).await?
                >= i64::from(reward.per_customer_limit)
        {
            return Err(Error::LimitReached);
        }
        if let Some(remaining) = entry.remaining_stock {
            if remaining <= 0 {
                return Err(Error::OutOfStock);
            }
            sqlx::query("UPDATE rewards SET remaining_stock = remaining_stock - 1 WHERE reward_id = $1")
                .bind(reward_id)
                .execute(&mut *tx)
                .await?;
        }
        let claim = self.new_claim(program_id, customer_id, reward, now);
        let inserted = self.insert_redemption(&mut tx, &claim, key).await?;
        if inserted == 0 {
            // The same key raced us and won (or, once in 2^60, the code clashed): answer as a replay.
            tx.rollback().await?;
            return match self.replayed(program_id, customer_id, reward_id, key).await? {
                Some(redemption) => Ok(Staged::Replay(redemption)),
                None => Err(Error::Corrupt("voucher code clash; retry".into())),
            };
        }
        tx.commit().await?;
        Ok(Staged::New(claim))
    }

    /// The common case, group-committed (PostgreSQL): a reward with no stock
    /// and no per-customer limit, unchanged since the caller read it, staged
    /// under a shared lock on its row with the other stagings of the moment.
    /// `None` when the reward changed meanwhile (or the voucher code clashed,
    /// or the batch failed): the full path decides.
    async fn stage_uncounted(
        &self,
        program_id: &str,
        customer_id: &str,
        seen: &CatalogEntry,
        key: &str,
        now: Micros,
    ) -> Result<Option<Staged>, Error> {
        let claim = self.new_claim(program_id, customer_id, &seen.reward, now);
        let r = &claim.redemption;
        let row = StageRow {
            redemption_id: r.redemption_id.clone(),
            program_id: r.program_id.clone(),
            customer_id: r.customer_id.clone(),
            reward_id: r.reward_id.clone(),
            reward_name: r.reward_name.clone(),
            points: r.points,
            voucher_code: r.voucher_code.clone(),
            voucher_expires_at_us: r.voucher_expires_at,
            idempotency_key: key.to_owned(),
            request_hash: redeem_hash(program_id, customer_id, &r.reward_id),
            created_at_us: now,
            owner: claim.token.clone(),
            lease_until_us: now + self.lease,
            body: to_json(&seen.reward),
        };
        if self.batches.stage(&self.db, row).await {
            return Ok(Some(Staged::New(claim)));
        }
        Ok(match self.replayed(program_id, customer_id, &seen.reward.reward_id, key).await? {
            // The batch committed our row, but its answer was lost (a
            // connection dropped after the commit): it is ours, not a replay.
            Some(found) if found.redemption_id == claim.redemption_id => Some(Staged::New(claim)),
            found => found.map(Staged::Replay),
        })
    }

    /// A new PENDING redemption of `reward`, owned by a fresh claim.
    fn new_claim(&self, program_id: &str, customer_id: &str, reward: &Reward, now: Micros) -> Claim {
        let redemption = Redemption {
            redemption_id: format!("rdm_{}", uuid::Uuid::now_v7().simple()),
            program_id: program_id.to_owned(),
            customer_id: customer_id.to_owned(),
            reward_id: reward.reward_id.clone(),
            reward_name: reward.name.clone(),
            points: reward.point_cost,
            status: Status::Pending,
            voucher_code: domain::new_voucher_code(),
            voucher_expires_at: reward.voucher_expires_at(now),
            consumed_order_id: String::new(),
            created_at: now,
            granted_by: String::new(),
            grant_reason: String::new(),
            batch_id: String::new(),
        };
        Claim { redemption, token: self.new_token() }
    }

    /// Inserts the claim's redemption for `key`; 0 rows when the key (or the
    /// voucher code) is taken.
    async fn insert_redemption(&self, conn: &mut AnyConnection, claim: &Claim, key: &str) -> Result<u64, Error> {
        let r = &claim.redemption;
        let inserted = sqlx::query(
            "INSERT INTO redemptions (redemption_id, program_id, customer_id, reward_id, reward_name, points, status, \
             voucher_code, voucher_expires_at_us, idempotency_key, request_hash, created_at_us, updated_at_us, \
             owner, lease_until_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14) ON CONFLICT DO NOTHING",
        )
        .bind(&r.redemption_id)
        .bind(&r.program_id)
        .bind(&r.customer_id)
        .bind(&r.reward_id)
        .bind(&r.reward_name)
        .bind(r.points)
        .bind(Status::Pending.as_str())
        .bind(&r.voucher_code)
        .bind(r.voucher_expires_at)
        .bind(key)
        .bind(redeem_hash(&r.program_id, &r.customer_id, &r.reward_id))
        .bind(r.created_at)
        .bind(&claim.token)
        .bind(r.created_at + self.lease)
        .execute(&mut *conn)
        .await?;
        Ok(inserted.rows_affected())
    }

    /// The redemption a key already made, if any: a replay is answered from
    /// it before anything else is asked (the customer's tier, stock).
    pub async fn replayed(
        &self,
        program_id: &str,
        customer_id: &str,
        reward_id: &str,
        key: &str,
    ) -> Result<Option<Redemption>, Error> {
        match self.by_key(program_id, key).await? {
            Some((stored, _)) if stored != redeem_hash(program_id, customer_id, reward_id) => {
                Err(Error::Key(idempotency::KeyError::Reused { method: "Redeem" }))
            }
            found => Ok(found.map(|(_, redemption)| redemption)),
        }
    }

    /// A token for one claim on a redemption: this process's name and a
    /// fresh suffix.
    fn new_token(&self) -> String {
        format!("{}.{}", self.owner, uuid::Uuid::now_v7().simple())
    }

    /// PENDING → ACTIVE once the points are spent, if this process still
    /// owns the redemption. If it lost it (its lease ran out and another
    /// replica took over), the redemption can only end FAILED, so the points
    /// just spent are given back; the refund's task id is the one the taker
    /// would write, so they come back once. Answers the redemption as it stands.
    pub async fn activate(&self, redemption: &Claim) -> Result<Redemption, Error> {
        let active = Redemption { status: Status::Active, ..redemption.redemption.clone() };
        if self.db.dialect == Dialect::Postgres {
            let row = Activation {
                redemption_id: redemption.redemption_id.clone(),
                token: redemption.token.clone(),
                at: self.now(),
                active: active.clone(),
            };
            if self.batches.activate(&self.db, row).await {
                return Ok(active);
            }
        }
        // The change and its event in one transaction; when it changes
        // nothing, the same transaction writes the refund below.
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        // The customer as stored: an erasure meanwhile replaced it, and the
        // event must not bring the real one back.
        let changed: Option<String> = sqlx::query_scalar(
            "UPDATE redemptions SET status = 'active', updated_at_us = $1 \
             WHERE redemption_id = $2 AND status = 'pending' AND owner = $3 RETURNING customer_id",
        )
        .bind(now)
        .bind(&redemption.redemption_id)
        .bind(&redemption.token)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(customer_id) = changed {
            let stored = Redemption { customer_id, ..active.clone() };
            outbox::append(&mut tx, self.db.dialect, now, &[stored.event(REDEEMED, now)]).await?;
            tx.commit().await?;
            // Nothing else of it changed: no need to read it back.
            return Ok(active);
        }
        self.refund_lost_spend(&mut tx, redemption).await?;
        tx.commit().await?;
        self.redemption(&redemption.redemption_id).await
    }

    /// PENDING → FAILED if this process still owns it: stock released and,
    /// when points were spent, a refund task written. When it lost the
    /// redemption and points were spent, the refund is written all the same.
    pub async fn fail(&self, redemption: &Claim, points_were_spent: bool) -> Result<Redemption, Error> {
        let mut tx = begin_write(&self.db).await?;
        let changed = sqlx::query(
            "UPDATE redemptions SET status = 'failed', updated_at_us = $1 \
             WHERE redemption_id = $2 AND status = 'pending' AND owner = $3",
        )
        .bind(self.now())
        .bind(&redemption.redemption_id)
        .bind(&redemption.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            release_stock(&mut tx, &redemption.reward_id).await?;
            if points_were_spent {
                self.add_task(&mut tx, &failure_refund(redemption)).await?;
            }
        } else if points_were_spent {
            self.refund_lost_spend(&mut tx, redemption).await?;
        }
        tx.commit().await?;
        self.redemption(&redemption.redemption_id).await
    }

    /// Our spend went through on a redemption we no longer own. Unless it
    /// became ACTIVE (only the claim that staged it activates, and no claim
    /// after a takeover ever does, so then it was ours) it ends FAILED:
    /// refund.
    async fn refund_lost_spend(&self, tx: &mut AnyConnection, redemption: &Redemption) -> Result<(), Error> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM redemptions WHERE redemption_id = $1")
            .bind(&redemption.redemption_id)
            .fetch_optional(&mut *tx)
            .await?;
        if matches!(status.as_deref(), Some("pending" | "failed")) {
            tracing::warn!(redemption = %redemption.redemption_id, "redemption taken over after its spend, refunding");
            self.add_task(tx, &failure_refund(redemption)).await?;
        }
        Ok(())
    }

    /// Extends the claim's lease before a step that calls the points
    /// service; `false` when the redemption is no longer this claim's.
    pub async fn renew(&self, redemption: &Claim) -> Result<bool, Error> {
        let changed = sqlx::query(
            "UPDATE redemptions SET lease_until_us = $1 WHERE redemption_id = $2 AND status = 'pending' AND owner = $3",
        )
        .bind(self.now() + self.lease)
        .bind(&redemption.redemption_id)
        .bind(&redemption.token)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Flags a redemption whose spend has an unknown outcome, so that this
    /// process's next recovery pass settles it without waiting for the
    /// lease to run out (other replicas still wait for it).
    pub async fn needs_compensation(&self, redemption: &Claim) -> Result<(), Error> {
        sqlx::query("UPDATE redemptions SET compensate = 1 WHERE redemption_id = $1 AND owner = $2")
            .bind(&redemption.redemption_id)
            .bind(&redemption.token)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Takes over PENDING redemptions whose lease ran out (their owner died
    /// or stalled), and this process's own flagged ones, each under a new
    /// claim, with a compare-and-set so that one replica wins each. A
    /// redemption with no owner at all, from a binary before leases, waits
    /// [`UNOWNED_GRACE`].
    pub async fn claim_unsettled(&self, limit: i64) -> Result<Vec<Claim>, Error> {
        const CLAIMABLE: &str = "status = 'pending' AND ((lease_until_us < $1 AND (owner <> '' OR updated_at_us < $2)) \
             OR (compensate = 1 AND owner LIKE $3))";
        let now = self.now();
        let unowned_before = now - UNOWNED_GRACE;
        let ours = format!("{}.%", self.owner);
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REDEMPTION_COLUMNS}, owner FROM redemptions WHERE {CLAIMABLE} ORDER BY lease_until_us LIMIT $4"
        ));
        let rows =
            sqlx::query(sql).bind(now).bind(unowned_before).bind(&ours).bind(limit).fetch_all(&self.db.pool).await?;
        let mut claimed = Vec::new();
        for row in &rows {
            let redemption = redemption_from_row(row)?;
            let seen: String = row.try_get("owner")?;
            let token = self.new_token();
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE redemptions SET owner = $4, lease_until_us = $5, compensate = 0 \
                 WHERE {CLAIMABLE} AND redemption_id = $6 AND owner = $7"
            ));
            let won = sqlx::query(sql)
                .bind(now)
                .bind(unowned_before)
                .bind(&ours)
                .bind(&token)
                .bind(now + self.lease)
                .bind(&redemption.redemption_id)
                .bind(&seen)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
            if won == 1 {
                claimed.push(Claim { redemption, token });
            }
        }
        Ok(claimed)
    }

    /// When the earliest lease on a PENDING redemption runs out, if any.
    pub async fn next_lease_expiry(&self) -> Result<Option<Micros>, Error> {
        Ok(sqlx::query_scalar("SELECT MIN(lease_until_us) FROM redemptions WHERE status = 'pending'")
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// How many redemptions are PENDING (their saga not settled), and since when the oldest is.
    pub async fn pending_sagas(&self) -> Result<(i64, Option<Micros>), Error> {
        let row = sqlx::query(
            "SELECT CAST(count(*) AS BIGINT) AS pending, MIN(created_at_us) AS oldest FROM redemptions \
             WHERE status = 'pending'",
        )
        .fetch_one(&self.db.pool)
        .await?;
        Ok((row.try_get("pending")?, row.try_get("oldest")?))
    }

    pub async fn redemption(&self, redemption_id: &str) -> Result<Redemption, Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE redemption_id = $1"));
        let row = sqlx::query(sql).bind(redemption_id).fetch_optional(&self.db.pool).await?;
        row.as_ref()
            .map(redemption_from_row)
            .transpose()?
            .ok_or_else(|| Error::RedemptionNotFound(redemption_id.to_owned()))
    }

    pub async fn by_code(&self, program_id: &str, code: &str) -> Result<Option<Redemption>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE program_id = $1 AND voucher_code = $2"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(code).fetch_optional(&self.db.pool).await?;
        row.as_ref().map(redemption_from_row).transpose()
    }

    async fn by_key(&self, program_id: &str, key: &str) -> Result<Option<(String, Redemption)>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT request_hash, {REDEMPTION_COLUMNS} FROM redemptions WHERE program_id = $1 AND idempotency_key = $2"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(key).fetch_optional(&self.db.pool).await?;
        row.map(|r| Ok((r.try_get("request_hash")?, redemption_from_row(&r)?))).transpose()
    }

    /// A customer's redemptions, newest first, with their list positions.
    pub async fn redemptions(
        &self,
        program_id: &str,
        customer_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Redemption)>, Error> {
        let select = format!("SELECT redemption_seq, {REDEMPTION_COLUMNS} FROM redemptions");
        let filter = [("program_id", program_id), ("customer_id", customer_id)];
        let rows = db::newest_first(&self.db, &select, &filter, "redemption_seq", before, limit).await?;
        rows.iter().map(|r| Ok((r.try_get("redemption_seq")?, redemption_from_row(r)?))).collect()
    }

    /// ACTIVE → USED for `order_id`, exactly once; the same order again is a
    /// replay. `customer_id` (may be empty) becomes a campaign code's holder;
    /// another customer's voucher is not found for it (a campaign code used
    /// by someone else is: used).
    pub async fn consume(
        &self,
        program_id: &str,
        code: &str,
        order_id: &str,
        customer_id: &str,
    ) -> Result<Redemption, Error> {
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE redemptions SET status = 'used', consumed_order_id = $1, updated_at_us = $2, \
             customer_id = CASE WHEN customer_id = '' THEN $5 ELSE customer_id END \
             WHERE program_id = $3 AND voucher_code = $4 AND status = 'active' AND voucher_expires_at_us > $2 \
             AND ($5 = '' OR customer_id = '' OR customer_id = $5) RETURNING {REDEMPTION_COLUMNS}"
        ));
        let used = sqlx::query(sql)
            .bind(order_id)
            .bind(now)
            .bind(program_id)
            .bind(code)
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(used) = used.as_ref().map(redemption_from_row).transpose()? {
            // A campaign code used by nobody named has nobody to tell.
            if !used.customer_id.is_empty() {
                outbox::append(&mut tx, self.db.dialect, now, &[used.event(CONSUMED, now)]).await?;
            }
            tx.commit().await?;
            return Ok(used);
        }
        tx.rollback().await?;
        let redemption = self.by_code(program_id, code).await?.ok_or(Error::VoucherNotFound)?;
        // Another customer's voucher is none of this one's business; a
        // campaign code is public, so its state is told to anyone.
        let theirs = !(customer_id.is_empty() || redemption.customer_id == customer_id);
        if theirs && redemption.batch_id.is_empty() {
            return Err(Error::VoucherNotFound);
        }
        match redemption.status {
            Status::Used if redemption.consumed_order_id == order_id => Ok(redemption),
            Status::Used => Err(Error::VoucherUsed),
            Status::Cancelled => Err(Error::VoucherCancelled),
            Status::Active | Status::Expired => Err(Error::VoucherExpired),
            Status::Pending | Status::Failed => Err(Error::VoucherNotFound),
        }
    }

    /// A gift of `reward_id` to each of `customers`: ACTIVE vouchers without
    /// points, with who gave them and why, stock taken for all or none, and
    /// a `reward.granted` event each; answered in the customers' order.
    pub async fn grant(
        &self,
        program_id: &str,
        reward_id: &str,
        customers: &[String],
        giving: Giving<'_>,
    ) -> Result<Vec<Redemption>, Error> {
        let request = serde_json::json!({ "reward_id": reward_id, "customer_ids": customers, "reason": giving.reason });
        let hash = request_hash(program_id, &request);
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "GrantReward", giving.key, &hash, now).await? {
            tx.rollback().await?;
            let ids: Vec<String> = from_json(&saved)?;
            return self.redemptions_in_order(program_id, &ids).await;
        }
        if let Some(erased) = erased_among(&mut tx, program_id, customers).await? {
            return Err(Error::CustomerErased(erased));
        }
        let entry = self.lock_reward(&mut tx, program_id, reward_id, RowLock::Exclusive).await?;
        let expires_at = entry.reward.voucher_expires_at(now);
        let gifts: Vec<Redemption> = customers
            .iter()
            .map(|customer| self.given(program_id, customer, &entry.reward, expires_at, giving, ""))
            .collect();
        self.issue_in(&mut tx, &entry, &gifts).await?;
        let events: Vec<outbox::Event> = gifts
            .iter()
            .map(|gift| {
                let mut event = gift.event(GRANTED, now);
                event.data["reason"] = giving.reason.into();
                event.data["actor"] = giving.actor.into();
                event
            })
            .collect();
        outbox::append(&mut tx, self.db.dialect, now, &events).await?;
        let ids: Vec<&str> = gifts.iter().map(|g| g.redemption_id.as_str()).collect();
        idempotency::save(&mut tx, program_id, "GrantReward", giving.key, &to_json(&ids), "").await?;
        tx.commit().await?;
        Ok(gifts)
    }

    /// `count` campaign codes of `reward_id`, held by no customer, valid
    /// until `valid_until` (default: the reward's validity from now), stock
    /// taken for all or none; the batch is kept with who asked and why.
    pub async fn issue_batch(
        &self,
        program_id: &str,
        reward_id: &str,
        count: usize,
        prefix: &str,
        valid_until: Option<Micros>,
        giving: Giving<'_>,
    ) -> Result<CodeBatch, Error> {
        let request = serde_json::json!({
            "reward_id": reward_id, "count": count, "prefix": prefix, "valid_until": valid_until, "reason": giving.reason,
        });
        let hash = request_hash(program_id, &request);
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "IssueCodeBatch", giving.key, &hash, now).await? {
            tx.rollback().await?;
            let batch_id: String = from_json(&saved)?;
            return self.batch(program_id, &batch_id).await;
        }
        let entry = self.lock_reward(&mut tx, program_id, reward_id, RowLock::Exclusive).await?;
        let valid_until = valid_until.unwrap_or_else(|| entry.reward.voucher_expires_at(now));
        let batch_id = format!("bat_{}", uuid::Uuid::now_v7().simple());
        let codes: Vec<Redemption> = (0..count)
            .map(|_| {
                let mut code = self.given(program_id, "", &entry.reward, valid_until, giving, &batch_id);
                code.voucher_code = format!("{prefix}{}", code.voucher_code);
                code
            })
            .collect();
        self.issue_in(&mut tx, &entry, &codes).await?;
        sqlx::query(
            "INSERT INTO code_batches (batch_id, program_id, reward_id, code_count, prefix, valid_until_us, reason, \
             actor, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&batch_id)
        .bind(program_id)
        .bind(reward_id)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .bind(prefix)
        .bind(valid_until)
        .bind(giving.reason)
        .bind(giving.actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        idempotency::save(&mut tx, program_id, "IssueCodeBatch", giving.key, &to_json(&batch_id), "").await?;
        tx.commit().await?;
        let codes = codes.into_iter().map(|c| c.voucher_code).collect();
        Ok(CodeBatch { batch_id, codes, valid_until })
    }

    /// An ACTIVE voucher of `reward` given without points.
    fn given(
        &self,
        program_id: &str,
        customer_id: &str,
        reward: &Reward,
        expires_at: Micros,
        giving: Giving<'_>,
        batch_id: &str,
    ) -> Redemption {
        Redemption {
            redemption_id: format!("rdm_{}", uuid::Uuid::now_v7().simple()),
            program_id: program_id.to_owned(),
            customer_id: customer_id.to_owned(),
            reward_id: reward.reward_id.clone(),
            reward_name: reward.name.clone(),
            points: 0,
            status: Status::Active,
            voucher_code: domain::new_voucher_code(),
            voucher_expires_at: expires_at,
            consumed_order_id: String::new(),
            created_at: self.now(),
            granted_by: giving.actor.to_owned(),
            grant_reason: giving.reason.to_owned(),
            batch_id: batch_id.to_owned(),
        }
    }

    /// Takes stock for `vouchers` (all or none) and writes them, under the
    /// reward's row lock. An archived reward gives nothing.
    async fn issue_in(
        &self,
        tx: &mut AnyConnection,
        entry: &CatalogEntry,
        vouchers: &[Redemption],
    ) -> Result<(), Error> {
        if entry.archived {
            return Err(Error::RewardNotActive(entry.reward.reward_id.clone()));
        }
        let wanted = i64::try_from(vouchers.len()).unwrap_or(i64::MAX);
        if let Some(remaining) = entry.remaining_stock {
            if remaining < wanted {
                return Err(Error::OutOfStock);
            }
            sqlx::query("UPDATE rewards SET remaining_stock = remaining_stock - $1 WHERE reward_id = $2")
                .bind(wanted)
                .bind(&entry.reward.reward_id)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in vouchers.chunks(ISSUED_PER_STATEMENT) {
            let values = db::placeholders(chunk.len(), 16);
            let sql = format!(
                "INSERT INTO redemptions (redemption_id, program_id, customer_id, reward_id, reward_name, points, \
                 status, voucher_code, voucher_expires_at_us, idempotency_key, request_hash, created_at_us, \
                 updated_at_us, granted_by, grant_reason, batch_id) VALUES {values}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for v in chunk {
                query = query
                    .bind(v.redemption_id.clone())
                    .bind(v.program_id.clone())
                    .bind(v.customer_id.clone())
                    .bind(v.reward_id.clone())
                    .bind(v.reward_name.clone())
                    .bind(v.points)
                    .bind(v.status.as_str())
                    .bind(v.voucher_code.clone())
                    .bind(v.voucher_expires_at)
                    // Given, not redeemed: the row's own key, never a caller's.
                    .bind(format!("given:{}", v.redemption_id))
                    .bind(String::new())
                    .bind(v.created_at)
                    .bind(v.created_at)
                    .bind(v.granted_by.clone())
                    .bind(v.grant_reason.clone())
                    .bind(v.batch_id.clone());
            }
            query.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The redemptions `ids` of the program, in that order.
    async fn redemptions_in_order(&self, program_id: &str, ids: &[String]) -> Result<Vec<Redemption>, Error> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let redemption = self.redemption(id).await?;
            if redemption.program_id != program_id {
                return Err(Error::Corrupt(format!("saved gift {id} of another program")));
            }
            found.push(redemption);
        }
        Ok(found)
    }

    /// A batch as issued, its codes in order.
    async fn batch(&self, program_id: &str, batch_id: &str) -> Result<CodeBatch, Error> {
        let valid_until: Option<i64> =
            sqlx::query_scalar("SELECT valid_until_us FROM code_batches WHERE program_id = $1 AND batch_id = $2")
                .bind(program_id)
                .bind(batch_id)
                .fetch_optional(&self.db.pool)
                .await?;
        let valid_until = valid_until.ok_or_else(|| Error::Corrupt(format!("saved batch {batch_id} is missing")))?;
        let codes = sqlx::query_scalar(
            "SELECT voucher_code FROM redemptions WHERE program_id = $1 AND batch_id = $2 ORDER BY redemption_seq",
        )
        .bind(program_id)
        .bind(batch_id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(CodeBatch { batch_id: batch_id.to_owned(), codes, valid_until })
    }

    /// The database, for the ledger consumer's leadership.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The last ledger sequence the debt watcher applied (0 before the first).
    pub async fn cursor(&self) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, CONSUMER).await?)
    }

    pub async fn save_cursor(&self, last_sequence: i64) -> Result<(), Error> {
        Ok(follow::advance_cursor(&self.db.pool, CONSUMER, last_sequence).await?)
    }

    /// Points on their way back to the customer: tasks not yet confirmed by
    /// the points service.
    pub async fn points_in_flight(&self, program_id: &str, customer_id: &str) -> Result<i64, Error> {
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM points_tasks \
             WHERE program_id = $1 AND customer_id = $2 AND done = 0",
        )
        .bind(program_id)
        .bind(customer_id)
        .fetch_one(&self.db.pool)
        .await?)
    }

    /// The customer's unused vouchers bought with points, newest first.
    pub async fn unused_vouchers(&self, program_id: &str, customer_id: &str) -> Result<Vec<Redemption>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE program_id = $1 AND customer_id = $2 \
             AND status = 'active' AND points > 0 ORDER BY redemption_seq DESC"
        ));
        let rows = sqlx::query(sql).bind(program_id).bind(customer_id).fetch_all(&self.db.pool).await?;
        rows.iter().map(redemption_from_row).collect()
    }

    /// ACTIVE → CANCELLED with a refund task; a cancelled one answers as it is.
    /// `why`, when not empty, says in the refund's reason why it was cancelled.
    pub async fn cancel(
        &self,
        program_id: &str,
        redemption_id: &str,
        actor: &str,
        why: &str,
    ) -> Result<Redemption, Error> {
        let mut tx = begin_write(&self.db).await?;
        let changed = sqlx::query(
            "UPDATE redemptions SET status = 'cancelled', updated_at_us = $1 \
             WHERE program_id = $2 AND redemption_id = $3 AND status = 'active'",
        )
        .bind(self.now())
        .bind(program_id)
        .bind(redemption_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE program_id = $1 AND redemption_id = $2"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(redemption_id).fetch_optional(&mut *tx).await?;
        let redemption = row
            .as_ref()
            .map(redemption_from_row)
            .transpose()?
            .ok_or_else(|| Error::RedemptionNotFound(redemption_id.to_owned()))?;
        if changed == 1 {
            release_stock(&mut tx, &redemption.reward_id).await?;
            let mut event = redemption.event(CANCELLED, self.now());
            if !why.is_empty() {
                event.data["reason"] = why.into();
            }
            if !actor.is_empty() {
                event.data["actor"] = actor.into();
            }
            outbox::append(&mut tx, self.db.dialect, self.now(), &[event]).await?;
            let task = RefundTask {
                task_id: format!("redemption:{redemption_id}:cancel"),
                spend_key: redemption.spend_key(),
                program_id: program_id.to_owned(),
                customer_id: redemption.customer_id.clone(),
                points: redemption.points,
                reason: match why {
                    "" => format!("voucher for {} cancelled", redemption.reward_name),
                    why => format!("voucher for {} cancelled: {why}", redemption.reward_name),
                },
                actor: actor.to_owned(),
            };
            self.add_task(&mut tx, &task).await?;
        }
        tx.commit().await?;
        match redemption.status {
            Status::Cancelled => Ok(redemption),
            Status::Used => Err(Error::VoucherUsed),
            Status::Expired => Err(Error::VoucherExpired),
            Status::Pending | Status::Failed | Status::Active => {
                Err(Error::RedemptionNotFound(redemption_id.to_owned()))
            }
        }
    }

    /// `voucher.expiring_soon` for ACTIVE vouchers that expire within
    /// `ahead`, once per voucher: the voucher is marked reminded in the
    /// transaction that writes the event, so replicas and restarts do not
    /// remind twice. Returns how many were reminded.
    /// A voucher issued less than `ahead` before its expiry is not reminded:
    /// the customer was just told of it.
    pub async fn remind_expiring(&self, ahead: Micros, limit: i64) -> Result<usize, Error> {
        const DUE: &str = "status = 'active' AND voucher_reminded_at_us IS NULL \
             AND voucher_expires_at_us > $1 AND voucher_expires_at_us <= $2 AND voucher_expires_at_us - $3 > created_at_us";
        let now = self.now();
        let horizon = now.saturating_add(ahead);
        // A read first, so that a pass with nothing due takes no write lock.
        let sql = sqlx::AssertSqlSafe(format!("SELECT redemption_id FROM redemptions WHERE {DUE} LIMIT 1"));
        let due = sqlx::query(sql).bind(now).bind(horizon).bind(ahead).fetch_optional(&self.db.pool).await?;
        if due.is_none() {
            return Ok(0);
        }
        let mut tx = begin_write(&self.db).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE redemptions SET voucher_reminded_at_us = $1 WHERE redemption_id IN \
             (SELECT redemption_id FROM redemptions WHERE {DUE} ORDER BY voucher_expires_at_us LIMIT $4{}) \
             AND voucher_reminded_at_us IS NULL RETURNING {REDEMPTION_COLUMNS}",
            if self.db.dialect == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" }
        ));
        let rows = sqlx::query(sql).bind(now).bind(horizon).bind(ahead).bind(limit).fetch_all(&mut *tx).await?;
        let events = rows
            .iter()
            .map(|row| Ok(redemption_from_row(row)?.event(EXPIRING_SOON, now)))
            .collect::<Result<Vec<_>, Error>>()?;
        outbox::append(&mut tx, self.db.dialect, now, &events).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// ACTIVE vouchers past their date → EXPIRED, with a refund task where
    /// the reward says so. Returns how many expired.
    pub async fn expire_vouchers(&self, limit: i64) -> Result<usize, Error> {
        let now = self.now();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE status = 'active' AND voucher_expires_at_us <= $1 LIMIT $2"
        ));
        let due: Vec<Redemption> = sqlx::query(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(redemption_from_row)
            .collect::<Result<_, _>>()?;
        let mut expired = 0;
        for redemption in due {
            let mut tx = begin_write(&self.db).await?;
            let changed = sqlx::query(
                "UPDATE redemptions SET status = 'expired', updated_at_us = $1 WHERE redemption_id = $2 AND status = 'active'",
            )
            .bind(now)
            .bind(&redemption.redemption_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let refund =
                self.entry(&redemption.program_id, &redemption.reward_id).await.map(|e| e.reward.refund_expired);
            if changed == 1 && refund.unwrap_or(false) {
                let task = RefundTask {
                    task_id: format!("redemption:{}:expired", redemption.redemption_id),
                    spend_key: redemption.spend_key(),
                    program_id: redemption.program_id.clone(),
                    customer_id: redemption.customer_id.clone(),
                    points: redemption.points,
                    reason: format!("voucher for {} expired unused", redemption.reward_name),
                    actor: String::new(),
                };
                self.add_task(&mut tx, &task).await?;
            }
            tx.commit().await?;
            expired += usize::try_from(changed).unwrap_or(0);
        }
        Ok(expired)
    }

    pub async fn pending_tasks(&self, limit: i64) -> Result<Vec<RefundTask>, Error> {
        let rows = sqlx::query(
            "SELECT task_id, spend_key, program_id, customer_id, points, reason, actor FROM points_tasks \
             WHERE done = 0 ORDER BY task_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RefundTask {
                    task_id: r.try_get("task_id")?,
                    spend_key: r.try_get("spend_key")?,
                    program_id: r.try_get("program_id")?,
                    customer_id: r.try_get("customer_id")?,
                    points: r.try_get("points")?,
                    reason: r.try_get("reason")?,
                    actor: r.try_get("actor")?,
                })
            })
            .collect()
    }

    pub async fn task_done(&self, task_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE points_tasks SET done = 1 WHERE task_id = $1").bind(task_id).execute(&self.db.pool).await?;
        Ok(())
    }

    async fn add_task(&self, tx: &mut AnyConnection, task: &RefundTask) -> Result<(), Error> {
        if task.points <= 0 {
            // A gift or a campaign code: no points to give back.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO points_tasks (task_id, program_id, customer_id, points, reason, created_at_us, actor, spend_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&task.task_id)
        .bind(&task.program_id)
        .bind(&task.customer_id)
        .bind(task.points)
        .bind(&task.reason)
        .bind(self.now())
        .bind(&task.actor)
        .bind(&task.spend_key)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// The reward, locked (SQLite's `BEGIN IMMEDIATE` already holds the one
    /// writer's lock).
    async fn lock_reward(
        &self,
        tx: &mut AnyConnection,
        program_id: &str,
        reward_id: &str,
        lock: RowLock,
    ) -> Result<CatalogEntry, Error> {
        let clause = match (self.db.dialect, lock) {
            (Dialect::Sqlite, _) => "",
            (Dialect::Postgres, RowLock::Exclusive) => " FOR UPDATE",
            (Dialect::Postgres, RowLock::Shared) => " FOR SHARE",
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT body, remaining_stock, archived FROM rewards WHERE program_id = $1 AND reward_id = $2{clause}"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(reward_id).fetch_optional(&mut *tx).await?;
        let entry =
            row.as_ref().map(entry_from_row).transpose()?.ok_or_else(|| Error::RewardNotFound(reward_id.to_owned()))?;
        self.seen.put(program_id, &entry);
        Ok(entry)
    }

    async fn issued(&self, tx: &mut AnyConnection, reward_id: &str) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM redemptions WHERE reward_id = $1 AND status IN ('pending', 'active', 'used', 'expired')",
        )
        .bind(reward_id)
        .fetch_one(&mut *tx)
        .await?)
    }
}

async fn recent_in(conn: &mut AnyConnection, reward_id: &str, customer_id: &str, since: Micros) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM redemptions WHERE reward_id = $1 AND customer_id = $2 AND created_at_us > $3 \
         AND status IN ('pending', 'active', 'used', 'expired')",
    )
    .bind(reward_id)
    .bind(customer_id)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?)
}

/// The refund of a FAILED redemption's spend; one task id whoever writes it.
fn failure_refund(redemption: &Redemption) -> RefundTask {
    RefundTask {
        task_id: format!("redemption:{}:refund", redemption.redemption_id),
        spend_key: redemption.spend_key(),
        program_id: redemption.program_id.clone(),
        customer_id: redemption.customer_id.clone(),
        points: redemption.points,
        reason: format!("redemption of {} did not go through", redemption.reward_name),
        actor: String::new(),
    }
}

fn redeem_hash(program_id: &str, customer_id: &str, reward_id: &str) -> String {
    request_hash(program_id, &serde_json::json!({ "customer_id": customer_id, "reward_id": reward_id }))
}

#[derive(Debug, Clone, Copy)]
enum RowLock {
    Shared,
    Exclusive,
}

async fn release_stock(tx: &mut AnyConnection, reward_id: &str) -> Result<(), Error> {
    sqlx::query(
        "UPDATE rewards SET remaining_stock = remaining_stock + 1 WHERE reward_id = $1 AND remaining_stock IS NOT NULL",
    )
    .bind(reward_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn entry_from_row(row: &AnyRow) -> Result<CatalogEntry, Error> {
    Ok(CatalogEntry {
        reward: from_json(&row.try_get::<String, _>("body")?)?,
        remaining_stock: row.try_get("remaining_stock")?,
        archived: row.try_get::<i64, _>("archived")? != 0,
    })
}

fn redemption_from_row(row: &AnyRow) -> Result<Redemption, Error> {
    let status: String = row.try_get("status")?;
    Ok(Redemption {
        redemption_id: row.try_get("redemption_id")?,
        program_id: row.try_get("program_id")?,
        customer_id: row.try_get("customer_id")?,
        reward_id: row.try_get("reward_id")?,
        reward_name: row.try_get("reward_name")?,
        points: row.try_get("points")?,
        status: Status::parse(&status).ok_or_else(|| Error::Corrupt(format!("redemption status {status:?}")))?,
        voucher_code: row.try_get("voucher_code")?,
        voucher_expires_at: row.try_get("voucher_expires_at_us")?,
        consumed_order_id: row.try_get("consumed_order_id")?,
        created_at: row.try_get("created_at_us")?,
        granted_by: row.try_get("granted_by")?,
        grant_reason: row.try_get("grant_reason")?,
        batch_id: row.try_get("batch_id")?,
    })
}

/// The first of `customers` that was erased at their request, if any (by
/// the tombstones erasure leaves: hashes, never ids).
async fn erased_among(tx: &mut AnyConnection, program_id: &str, customers: &[String]) -> Result<Option<String>, Error> {
    if customers.is_empty() {
        return Ok(None);
    }
    let hashes: Vec<String> = customers.iter().map(|c| customer_hash(program_id, c)).collect();
    let sql = format!(
        "SELECT customer_hash FROM erased_customers WHERE customer_hash IN ({}) AND program_id = ${}",
        db::placeholders(hashes.len(), 1),
        hashes.len() + 1
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for hash in &hashes {
        query = query.bind(hash);
    }
    let query = query.bind(program_id);
    let found: Vec<String> = query.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    Ok(customers.iter().zip(&hashes).find(|(_, hash)| found.contains(hash)).map(|(customer, _)| customer.clone()))
}
