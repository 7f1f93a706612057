//! Group commit for the redemption saga's two writes on PostgreSQL: the
//! stagings of uncounted rewards and the activations of concurrent
//! redemptions are each written as one multi-row statement, so a burst of
//! redemptions costs a few commits instead of two per redemption. A row the
//! batch could not write (key taken, reward changed, redemption taken over)
//! is left to the one-row path, which decides exactly as before.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use loyalty_common::clock::Micros;
use loyalty_common::coalesce::Coalescer;
use loyalty_common::db::{Database, Dialect};
use loyalty_common::outbox;

/// Most rows in one batch statement.
const MAX_BATCH: usize = 128;
/// Rows waiting for a batch; past it a row takes the one-row path at once.
const QUEUE_CAPACITY: usize = 8 * MAX_BATCH;

/// A PENDING redemption to insert if its reward still has `body`, no stock
/// and is not archived.
#[derive(Debug, Clone, Serialize)]
pub(super) struct StageRow {
    pub redemption_id: String,
    pub program_id: String,
    pub customer_id: String,
    pub reward_id: String,
    pub reward_name: String,
    pub points: i64,
    pub voucher_code: String,
    pub voucher_expires_at_us: Micros,
    pub idempotency_key: String,
    pub request_hash: String,
    pub created_at_us: Micros,
    pub owner: String,
    pub lease_until_us: Micros,
    pub body: String,
}

/// PENDING → ACTIVE for the claim holding `token`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Activation {
    pub redemption_id: String,
    pub token: String,
    pub at: Micros,
    /// The redemption as the claim holds it, already ACTIVE: its event is
    /// made from it, so the statement returns only ids.
    #[serde(skip)]
    pub active: super::Redemption,
}

/// The two batch workers, started at first use (on the caller's runtime).
#[derive(Debug, Default)]
pub(super) struct Batches {
    workers: OnceLock<(Coalescer<StageRow, bool>, Coalescer<Activation, bool>)>,
    /// Rows staged and activated by batches, for tests and operators.
    staged: AtomicU64,
    activated: AtomicU64,
}

impl Batches {
    fn workers(&self, db: &Database) -> &(Coalescer<StageRow, bool>, Coalescer<Activation, bool>) {
        self.workers.get_or_init(|| {
            let (stage_db, activate_db) = (db.clone(), db.clone());
            let stage = Coalescer::start("stage", MAX_BATCH, QUEUE_CAPACITY, move |rows: Vec<StageRow>| {
                let db = stage_db.clone();
                async move { written(stage_all(&db, &rows).await, &rows, |r| &r.redemption_id) }
            });
            let activate = Coalescer::start("activate", MAX_BATCH, QUEUE_CAPACITY, move |rows: Vec<Activation>| {
                let db = activate_db.clone();
                async move { written(activate_all(&db, &rows).await, &rows, |r| &r.redemption_id) }
            });
            (stage, activate)
        })
    }

    /// Whether the row was inserted by its batch.
    pub async fn stage(&self, db: &Database, row: StageRow) -> bool {
        let written = self.workers(db).0.call(row).await.unwrap_or(false);
        self.staged.fetch_add(u64::from(written), Ordering::Relaxed);
        written
    }

    /// Whether the redemption became ACTIVE in its batch.
    pub async fn activate(&self, db: &Database, row: Activation) -> bool {
        let written = self.workers(db).1.call(row).await.unwrap_or(false);
        self.activated.fetch_add(u64::from(written), Ordering::Relaxed);
        written
    }

    /// Rows (staged, activated) written by batches so far.
    pub fn written(&self) -> (u64, u64) {
        (self.staged.load(Ordering::Relaxed), self.activated.load(Ordering::Relaxed))
    }
}

/// One answer per row: written or not. A failed batch wrote nothing; its
/// rows take the one-row path, which meets the failure itself if it lasts.
fn written<T>(ids: Result<HashSet<String>, sqlx::Error>, rows: &[T], id: impl Fn(&T) -> &String) -> Vec<bool> {
    match ids {
        Ok(ids) => rows.iter().map(|r| ids.contains(id(r))).collect(),
        Err(error) => {
            tracing::warn!(%error, rows = rows.len(), "batch failed, its rows go one by one");
            vec![false; rows.len()]
        }
    }
}

/// Inserts the rows whose reward is unchanged, under a shared lock on each
/// reward row until commit (so an edit that adds stock counts them); a key
/// already taken, here or in the same batch, inserts nothing. A reward row
/// an edit holds is skipped, not waited for: its rows take the one-row
/// path, so one slow edit holds up only its own reward's redemptions.
async fn stage_all(db: &Database, rows: &[StageRow]) -> Result<HashSet<String>, sqlx::Error> {
    let sql = "WITH r AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS r(redemption_id text, \
               program_id text, customer_id text, reward_id text, reward_name text, points bigint, \
               voucher_code text, voucher_expires_at_us bigint, idempotency_key text, request_hash text, \
               created_at_us bigint, owner text, lease_until_us bigint, body text)), \
               ok AS (SELECT r.* FROM r JOIN rewards w ON w.program_id = r.program_id AND w.reward_id = r.reward_id \
               WHERE w.archived = 0 AND w.remaining_stock IS NULL AND w.body = r.body FOR SHARE OF w SKIP LOCKED) \
               INSERT INTO redemptions (redemption_id, program_id, customer_id, reward_id, reward_name, points, \
               status, voucher_code, voucher_expires_at_us, idempotency_key, request_hash, created_at_us, \
               updated_at_us, owner, lease_until_us) \
               SELECT redemption_id, program_id, customer_id, reward_id, reward_name, points, 'pending', \
               voucher_code, voucher_expires_at_us, idempotency_key, request_hash, created_at_us, created_at_us, \
               owner, lease_until_us FROM ok ORDER BY program_id, idempotency_key \
               ON CONFLICT DO NOTHING RETURNING redemption_id";
    let json = serde_json::to_string(rows).expect("rows serialise");
    let ids: Vec<String> = sqlx::query_scalar(sql).bind(json).fetch_all(&db.pool).await?;
    Ok(ids.into_iter().collect())
}

/// Activates the rows still PENDING under their claim, in id order.
async fn activate_all(db: &Database, rows: &[Activation]) -> Result<HashSet<String>, sqlx::Error> {
    // The row source is JSON the planner knows nothing of: each row is meant
    // as a primary-key lookup, never a scan of the whole table.
    let mut tx = loyalty_common::db::begin_by_index(&db.pool).await?;
    let sql = "WITH r AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS r(redemption_id text, token text, \
               at bigint) ORDER BY redemption_id) \
               UPDATE redemptions SET status = 'active', updated_at_us = r.at FROM r \
               WHERE redemptions.redemption_id = r.redemption_id AND redemptions.status = 'pending' \
               AND redemptions.owner = r.token RETURNING redemptions.redemption_id, redemptions.customer_id";
    let json = serde_json::to_string(rows).expect("rows serialise");
    // Each activated redemption's customer as stored: an erasure meanwhile
    // replaced it, and the event must not bring the real one back.
    let customers: HashMap<String, String> =
        sqlx::query_as(sql).bind(json).fetch_all(&mut *tx).await?.into_iter().collect();
    let events: Vec<outbox::Event> = rows
        .iter()
        .filter_map(|r| {
            let customer_id = customers.get(&r.redemption_id)?.clone();
            Some(super::Redemption { customer_id, ..r.active.clone() }.event(super::REDEEMED, r.at))
        })
        .collect();
    let ids: HashSet<String> = customers.into_keys().collect();
    let now = rows.iter().map(|r| r.at).max().unwrap_or(0);
    outbox::append(&mut tx, Dialect::Postgres, now, &events).await?;
    tx.commit().await?;
    Ok(ids)
}
