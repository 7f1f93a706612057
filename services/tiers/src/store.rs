//! Ladders, qualifying events and memberships in SQL (PostgreSQL or SQLite
//! through sqlx's `Any` driver). Every membership change is written with its
//! history row, in one transaction with the membership row locked.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{self, Database, Dialect};
use loyalty_common::db::{from_json, to_json};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write, request_hash};
use loyalty_common::outbox;

use crate::domain::{self, Change, Ladder, Measures, Membership, Qualifying, Reason, Window};
use crate::error::Error;

const CONSUMER: &str = "points-ledger";
/// First key of the per-program advisory lock between ladder changes and evaluations ("ti").
const LADDER_LOCK_CLASS: i32 = 0x7469;

/// What the consumer takes from a ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifyingEntry {
    pub sequence: i64,
    pub transaction_id: String,
    pub program_id: String,
    pub customer_id: String,
    pub occurred_at: Micros,
    pub change: QualifyingChange,
}

/// What a ledger entry does to qualification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QualifyingChange {
    /// An earn, with what it adds to each measure.
    Earn(Measures),
    /// A reversal of `points` of the earn `earn`; a refund also says the
    /// amount refunded. The measures taken back follow from the earn's.
    Reverse { earn: String, points: i64, refunded_minor: Option<i64> },
}

/// A membership change as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub change_id: i64,
    pub change: Change,
}

/// A manual assignment request, saved for replays.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Assignment {
    tier_id: Option<String>,
    ends_at: Option<Micros>,
}

#[derive(Clone, Debug)]
pub struct TierStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

impl TierStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn ladder(&self, program_id: &str) -> Result<Ladder, Error> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM ladders WHERE program_id = $1")
            .bind(program_id)
            .fetch_optional(&self.db.pool)
            .await?;
        body.map_or_else(|| Ok(Ladder::default()), |b| Ok(from_json(&b)?))
    }

    /// The program's ladder read in `tx`, under a shared per-program lock
    /// that `put_ladder` takes exclusively (PostgreSQL; SQLite writes one
    /// transaction at a time): an evaluation never writes a membership with
    /// a ladder replaced while it ran, where the replacement's "review
    /// everyone" would miss it (a fresh member's row was not there yet).
    async fn ladder_in(&self, tx: &mut AnyConnection, program_id: &str) -> Result<Ladder, Error> {
        if self.db.dialect == Dialect::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_xact_lock_shared($1, hashtext($2)) AS TEXT)")
                .bind(LADDER_LOCK_CLASS)
                .bind(program_id)
                .execute(&mut *tx)
                .await?;
        }
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM ladders WHERE program_id = $1")
            .bind(program_id)
            .fetch_optional(&mut *tx)
            .await?;
        body.map_or_else(|| Ok(Ladder::default()), |b| Ok(from_json(&b)?))
    }

    /// Replaces the ladder (already validated), idempotently.
    pub async fn put_ladder(
        &self,
        program_id: &str,
        ladder: Ladder,
        expected_version: Option<i64>,
        actor: &str,
        key: &str,
    ) -> Result<Ladder, Error> {
        let now = self.now();
        let request = match expected_version {
            // The same hash as before versions were checked, for replays of keys saved then.
            None => serde_json::json!({ "ladder": ladder }),
            Some(expected) => serde_json::json!({ "ladder": ladder, "expected_version": expected }),
        };
        let hash = request_hash(program_id, &request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "PutLadder", key, &hash, now).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        if self.db.dialect == Dialect::Postgres {
            // Waits for evaluations under the old ladder to commit (see `ladder_in`).
            sqlx::query("SELECT CAST(pg_advisory_xact_lock($1, hashtext($2)) AS TEXT)")
                .bind(LADDER_LOCK_CLASS)
                .bind(program_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO ladders (program_id, body, version, updated_at_us, updated_by) VALUES ($1, $2, 0, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(program_id)
        .bind(to_json(&Ladder::default()))
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT version FROM ladders WHERE program_id = $1{}",
            self.db.dialect.for_update()
        ));
        let version: i64 = sqlx::query_scalar(sql).bind(program_id).fetch_one(&mut *tx).await?;
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(Error::VersionMismatch { expected, actual: version });
        }
        let stored = Ladder { version: version + 1, ..ladder };
        let body = to_json(&stored);
        sqlx::query(
            "UPDATE ladders SET body = $1, version = $2, updated_at_us = $3, updated_by = $4 WHERE program_id = $5",
        )
        .bind(&body)
        .bind(stored.version)
        .bind(now)
        .bind(actor)
        .bind(program_id)
        .execute(&mut *tx)
        .await?;
        // Everyone in the program is looked at again by the review job.
        sqlx::query("UPDATE memberships SET next_review_us = $1 WHERE program_id = $2")
            .bind(now)
            .bind(program_id)
            .execute(&mut *tx)
            .await?;
        idempotency::save(&mut tx, program_id, "PutLadder", key, &body, "").await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The stored membership, without evaluating it.
    pub async fn membership(&self, program_id: &str, customer_id: &str) -> Result<Option<Membership>, Error> {
        let row = sqlx::query(
            "SELECT program_id, customer_id, tier_id, since_us, qualifying, assigned_tier_id, assigned_until_us, \
             grace_until_us, next_review_us, version FROM memberships WHERE program_id = $1 AND customer_id = $2",
        )
        .bind(program_id)
        .bind(customer_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(membership_from_row).transpose().map_err(Error::from)
    }

    /// Evaluates one customer now and stores the result.
    pub async fn evaluate(&self, program_id: &str, customer_id: &str) -> Result<(Membership, Ladder), Error> {
        let mut tx = begin_write(&self.db).await?;
        let ladder = self.ladder_in(&mut tx, program_id).await?;
        let member = self.evaluate_in(&mut tx, &ladder, program_id, customer_id, None, Cause::Review).await?;
        tx.commit().await?;
        Ok((member, ladder))
    }

    /// Assigns `tier_id` by hand (or removes the assignment when `None`).
    pub async fn assign(
        &self,
        program_id: &str,
        customer_id: &str,
        tier_id: Option<&str>,
        ends_at: Option<Micros>,
        actor: &str,
        key: &str,
    ) -> Result<(Membership, Ladder), Error> {
        let now = self.now();
        let method = if tier_id.is_some() { "AssignTier" } else { "RemoveAssignment" };
        let request = Assignment { tier_id: tier_id.map(str::to_owned), ends_at };
        let hash = request_hash(program_id, &serde_json::json!({ "customer_id": customer_id, "assignment": request }));
        let mut tx = begin_write(&self.db).await?;
        if idempotency::claim(&mut tx, program_id, method, key, &hash, now).await?.is_some() {
            // The assignment is done; answer with the membership as it is now.
            tx.rollback().await?;
            return self.evaluate(program_id, customer_id).await;
        }
        let ladder = self.ladder_in(&mut tx, program_id).await?;
        if let Some(id) = tier_id
            && ladder.tier(id).is_none()
        {
            return Err(Error::UnknownTier(id.to_owned()));
        }
        let member = self
            .evaluate_in(
                &mut tx,
                &ladder,
                program_id,
                customer_id,
                Some((request.tier_id, ends_at, actor)),
                Cause::Review,
            )
            .await?;
        idempotency::save(&mut tx, program_id, method, key, "{}", "").await?;
        tx.commit().await?;
        Ok((member, ladder))
    }

    /// Memberships with a review due by now.
    pub async fn due(&self, limit: i64) -> Result<Vec<(String, String)>, Error> {
        let rows = sqlx::query(
            "SELECT program_id, customer_id FROM memberships WHERE next_review_us IS NOT NULL AND next_review_us <= $1 \
             ORDER BY next_review_us LIMIT $2",
        )
        .bind(self.now())
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("program_id")?, r.try_get("customer_id")?))).collect()
    }

    /// Members per tier now, most first (an assignment that has not ended counts as its tier).
    pub async fn distribution(&self, program_id: &str) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT tier, CAST(count(*) AS BIGINT) AS members FROM (SELECT CASE \
             WHEN assigned_tier_id IS NOT NULL AND (assigned_until_us IS NULL OR assigned_until_us > $2) \
             THEN assigned_tier_id ELSE tier_id END AS tier FROM memberships WHERE program_id = $1) AS effective \
             GROUP BY tier ORDER BY members DESC, tier",
        )
        .bind(program_id)
        .bind(self.now())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("tier")?, r.try_get("members")?))).collect()
    }

    pub async fn history(
        &self,
        program_id: &str,
        customer_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, Error> {
        let select = "SELECT change_id, from_tier_id, to_tier_id, reason, actor, changed_at_us FROM membership_history";
        let filter = [("program_id", program_id), ("customer_id", customer_id)];
        let rows = db::newest_first(&self.db, select, &filter, "change_id", before, limit).await?;
        rows.iter()
            .map(|r| {
                let reason: String = r.try_get("reason")?;
                Ok(HistoryRow {
                    change_id: r.try_get("change_id")?,
                    change: Change {
                        from_tier_id: r.try_get("from_tier_id")?,
                        to_tier_id: r.try_get("to_tier_id")?,
                        reason: Reason::parse(&reason).ok_or_else(|| Error::Corrupt(format!("reason {reason:?}")))?,
                        at: r.try_get("changed_at_us")?,
                        actor: r.try_get("actor")?,
                    },
                })
            })
            .collect()
    }

    /// The tier the customer held at `at`, from the history.
    pub async fn tier_at(&self, program_id: &str, customer_id: &str, at: Micros) -> Result<String, Error> {
        let tier: Option<String> = sqlx::query_scalar(
            "SELECT to_tier_id FROM membership_history WHERE program_id = $1 AND customer_id = $2 \
             AND changed_at_us <= $3 ORDER BY change_id DESC LIMIT 1",
        )
        .bind(program_id)
        .bind(customer_id)
        .bind(at)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(tier.unwrap_or_default())
    }

    /// Where the ledger consumer stands (0 before the first entry).
    pub async fn cursor(&self) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, CONSUMER).await?)
    }

    /// Records a batch of ledger entries and re-evaluates the customers they
    /// touch, moving the cursor in the same transaction. Entries at or below
    /// the stored cursor, or seen before, are skipped: nothing counts twice.
    /// Returns the customers whose membership was written.
    pub async fn apply(&self, entries: &[QualifyingEntry], last_sequence: i64) -> Result<Vec<Membership>, Error> {
        let mut tx = begin_write(&self.db).await?;
        let cursor = follow::lock_cursor(&mut tx, self.db.dialect, CONSUMER).await?;
        let mut touched = BTreeSet::new();
        let mut reversed = BTreeSet::new();
        for entry in entries.iter().filter(|e| e.sequence > cursor) {
            let (measures, occurred_at, reverses) = match &entry.change {
                QualifyingChange::Earn(measures) => (*measures, entry.occurred_at, None),
                QualifyingChange::Reverse { earn, points, refunded_minor } => {
                    let (measures, at) = reversal(&mut tx, earn, *points, *refunded_minor).await?;
                    (measures, at.unwrap_or(entry.occurred_at), Some(earn.as_str()))
                }
            };
            let inserted = sqlx::query(
                "INSERT INTO qualifying_events (transaction_id, program_id, customer_id, points, order_points, \
                 base_points, spend_minor, reverses, occurred_at_us, sequence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            )
            .bind(&entry.transaction_id)
            .bind(&entry.program_id)
            .bind(&entry.customer_id)
            .bind(measures.points)
            .bind(measures.order_points)
            .bind(measures.base_points)
            .bind(measures.spend_minor)
            .bind(reverses)
            .bind(occurred_at)
            .bind(entry.sequence)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                touched.insert((entry.program_id.clone(), entry.customer_id.clone()));
                if reverses.is_some() {
                    reversed.insert((entry.program_id.clone(), entry.customer_id.clone()));
                }
            }
        }
        let mut changed = Vec::new();
        let mut ladders = std::collections::HashMap::new();
        for (program_id, customer_id) in touched {
            if !ladders.contains_key(&program_id) {
                ladders.insert(program_id.clone(), self.ladder_in(&mut tx, &program_id).await?);
            }
            let ladder = &ladders[&program_id];
            let cause = if reversed.contains(&(program_id.clone(), customer_id.clone())) {
                Cause::PointsReversed
            } else {
                Cause::Review
            };
            changed.push(self.evaluate_in(&mut tx, ladder, &program_id, &customer_id, None, cause).await?);
        }
        follow::advance_cursor(&mut *tx, CONSUMER, last_sequence).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Locks (creating if needed) the membership, applies an assignment
    /// change if given, evaluates, and writes the membership and any change.
    async fn evaluate_in(
        &self,
        tx: &mut AnyConnection,
        ladder: &Ladder,
        program_id: &str,
        customer_id: &str,
        assignment: Option<(Option<String>, Option<Micros>, &str)>,
        cause: Cause,
    ) -> Result<Membership, Error> {
        let now = self.now();
        let row = sqlx::query(
            "INSERT INTO memberships (program_id, customer_id, since_us) VALUES ($1, $2, $3) \
             ON CONFLICT (program_id, customer_id) DO UPDATE SET version = memberships.version \
             RETURNING program_id, customer_id, tier_id, since_us, qualifying, assigned_tier_id, assigned_until_us, \
             grace_until_us, next_review_us, version",
        )
        .bind(program_id)
        .bind(customer_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut member = membership_from_row(&row)?;
        let mut actor = String::new();
        if let Some((tier_id, ends_at, who)) = assignment {
            actor = who.to_owned();
            match tier_id {
                Some(tier) => {
                    member.assigned_tier_id = Some(tier);
                    member.assigned_until = ends_at;
                }
                // Removing is ending it now, so the evaluation moves the member back by points.
                None if member.assigned_tier_id.is_some() => member.assigned_until = Some(now),
                None => {}
            }
        }
        let qualifying = self.qualifying(tx, ladder, program_id, customer_id, now).await?;
        let mut change = domain::evaluate(ladder, &mut member, qualifying, now);
        if let (Some(change), Cause::PointsReversed) = (change.as_mut(), cause) {
            domain::caused_by_reversal(ladder, change);
        }
        member.version += 1;
        sqlx::query(
            "UPDATE memberships SET tier_id = $1, since_us = $2, qualifying = $3, assigned_tier_id = $4, \
             assigned_until_us = $5, grace_until_us = $6, next_review_us = $7, version = $8 \
             WHERE program_id = $9 AND customer_id = $10",
        )
        .bind(&member.tier_id)
        .bind(member.since)
        .bind(member.qualifying)
        .bind(member.assigned_tier_id.clone())
        .bind(member.assigned_until)
        .bind(member.grace_until)
        .bind(member.next_review_at)
        .bind(member.version)
        .bind(program_id)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        if let Some(change) = change {
            // Who assigned a tier, or removed an assignment, by hand; nobody for
            // what points or time did (an assignment that ran out has no actor).
            let by_hand = matches!(change.reason, Reason::Manual | Reason::AssignmentEnded);
            let actor = if by_hand { actor } else { String::new() };
            let change_id: i64 = sqlx::query_scalar(
                "INSERT INTO membership_history (program_id, customer_id, from_tier_id, to_tier_id, reason, actor, \
                 changed_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING change_id",
            )
            .bind(program_id)
            .bind(customer_id)
            .bind(&change.from_tier_id)
            .bind(&change.to_tier_id)
            .bind(change.reason.as_str())
            .bind(&actor)
            .bind(change.at)
            .fetch_one(&mut *tx)
            .await?;
            let change = Change { actor, ..change };
            let event = outbox::Event {
                program_id: program_id.to_owned(),
                customer_id: customer_id.to_owned(),
                event_type: domain::event_type(ladder, &change),
                occurred_at: change.at,
                data: domain::event_data(ladder, customer_id, &change, change_id),
            };
            outbox::append(tx, self.db.dialect, now, &[event]).await?;
        }
        Ok(member)
    }

    async fn qualifying(
        &self,
        tx: &mut AnyConnection,
        ladder: &Ladder,
        program_id: &str,
        customer_id: &str,
        now: Micros,
    ) -> Result<Qualifying, Error> {
        let start = ladder.window_start(now).unwrap_or(i64::MIN);
        let column = ladder.basis.column();
        let sum_sql = format!(
            "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM qualifying_events \
             WHERE program_id = $1 AND customer_id = $2 AND occurred_at_us >= $3 AND occurred_at_us < $4"
        );
        let sum = |from: Micros, to: Micros| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sum_sql.clone()))
                .bind(program_id.to_owned())
                .bind(customer_id.to_owned())
                .bind(from)
                .bind(to)
        };
        let current = sum(start, i64::MAX).fetch_one(&mut *tx).await?;
        let previous_period = match ladder.downgrade {
            domain::Downgrade::EndOfNextPeriod => {
                let last_year = domain::year_start(start.saturating_sub(1));
                sum(last_year, start).fetch_one(&mut *tx).await?
            }
            _ => 0,
        };
        let oldest_in_window = match ladder.window {
            Window::RollingDays(_) => {
                let sql = format!(
                    "SELECT MIN(occurred_at_us) FROM qualifying_events \
                     WHERE program_id = $1 AND customer_id = $2 AND occurred_at_us >= $3 AND {column} > 0"
                );
                sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(sql))
                    .bind(program_id)
                    .bind(customer_id)
                    .bind(start)
                    .fetch_one(&mut *tx)
                    .await?
            }
            _ => None,
        };
        Ok(Qualifying { current: current.max(0), previous_period: previous_period.max(0), oldest_in_window })
    }
}

/// What reversing `points` of `earn` takes from each measure, and when the
/// earn happened (a reversal stops it qualifying in the window it counted
/// in). An earn this service never saw gives only its points back.
async fn reversal(
    tx: &mut AnyConnection,
    earn: &str,
    points: i64,
    refunded_minor: Option<i64>,
) -> Result<(Measures, Option<Micros>), Error> {
    let row = sqlx::query(
        "SELECT points, order_points, base_points, spend_minor, occurred_at_us, \
         (SELECT CAST(COALESCE(SUM(r.points), 0) AS BIGINT) FROM qualifying_events r WHERE r.reverses = $1) \
         AS reversed_points, \
         (SELECT CAST(COALESCE(SUM(r.spend_minor), 0) AS BIGINT) FROM qualifying_events r WHERE r.reverses = $1) \
         AS reversed_spend FROM qualifying_events WHERE transaction_id = $1",
    )
    .bind(earn)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // Nothing it took counted here, so it takes nothing back but points.
        return Ok((Measures { points: -points, ..Measures::default() }, None));
    };
    let measures = Measures {
        points: row.try_get("points")?,
        order_points: row.try_get("order_points")?,
        base_points: row.try_get("base_points")?,
        spend_minor: row.try_get("spend_minor")?,
    };
    let before = Measures {
        points: row.try_get("reversed_points")?,
        spend_minor: row.try_get("reversed_spend")?,
        ..Measures::default()
    };
    Ok((Measures::reversal(&measures, &before, points, refunded_minor), Some(row.try_get("occurred_at_us")?)))
}

fn membership_from_row(row: &AnyRow) -> Result<Membership, sqlx::Error> {
    Ok(Membership {
        program_id: row.try_get("program_id")?,
        customer_id: row.try_get("customer_id")?,
        tier_id: row.try_get("tier_id")?,
        since: row.try_get("since_us")?,
        qualifying: row.try_get("qualifying")?,
        assigned_tier_id: row.try_get("assigned_tier_id")?,
        assigned_until: row.try_get("assigned_until_us")?,
        grace_until: row.try_get("grace_until_us")?,
        next_review_at: row.try_get("next_review_us")?,
        version: row.try_get("version")?,
    })
}

/// Why a membership is evaluated: points taken back, or anything else
/// (a review, an assignment, new points, a ladder change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Review,
    PointsReversed,
}
