//! Referrals in SQL (PostgreSQL or SQLite through sqlx's `Any` driver).
//! Every state change writes the points calls it needs as reward tasks in
//! the same transaction, so a crash between the change and the call loses
//! nothing: the dispatcher sends them until the points service confirms.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{self, Database};
use loyalty_common::db::{from_json, to_json};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write, request_hash};
use loyalty_common::outbox;

use crate::domain::{self, OrderEffect, Referral, Refusal, Settings, Status};
use crate::error::Error;

const CONSUMER: &str = "points-ledger";
const REFERRAL_COLUMNS: &str = "referral_id, program_id, code, referrer_customer_id, referee_customer_id, status, \
     created_at_us, completed_at_us, reversed_at_us, qualifying_order_id, referrer_points";

/// An order or a refund, from the ledger or from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Purchase {
        program_id: String,
        customer_id: String,
        order_id: String,
        amount_minor: i64,
        at: Micros,
    },
    /// `refund_key` makes each refund count once (ledger transaction id or API key).
    Refund {
        program_id: String,
        order_id: String,
        refund_key: String,
        amount_minor: i64,
        at: Micros,
    },
}

/// A call still to make: to the points service (points given or taken
/// back) or to the rewards service (a voucher given or cancelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardTask {
    pub task_id: String,
    pub program_id: String,
    pub customer_id: String,
    pub kind: TaskKind,
    pub points: i64,
    /// For a voucher given, why; for one cancelled, the reason it was given with.
    pub reason: String,
    /// For what is taken back: the task id (the idempotency key) of what was given.
    pub original_key: String,
    /// For a voucher: the reward.
    pub reward_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Points earned (`Earn`).
    Earn,
    /// Points taken back (`Reverse` of the earn `original_key`).
    Reverse,
    /// A voucher given (`GrantReward`).
    Voucher,
    /// The voucher `original_key` gave, cancelled if unused (`CancelRedemption`).
    Unvoucher,
}

impl TaskKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Reverse => "reverse",
            Self::Voucher => "voucher",
            Self::Unvoucher => "unvoucher",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Earn, Self::Reverse, Self::Voucher, Self::Unvoucher].into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub invited: i64,
    pub pending: i64,
    pub completed: i64,
    pub reversed: i64,
    pub expired: i64,
    pub points_earned: i64,
}

#[derive(Clone, Debug)]
pub struct ReferralStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

impl ReferralStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn settings(&self, program_id: &str) -> Result<Settings, Error> {
        settings_in(&mut *self.db.pool.acquire().await?, program_id).await
    }

    pub async fn put_settings(
        &self,
        program_id: &str,
        settings: Settings,
        expected_version: Option<i64>,
        actor: &str,
        key: &str,
    ) -> Result<Settings, Error> {
        let now = self.now();
        let request = match expected_version {
            // The same hash as before versions were checked, for replays of keys saved then.
            None => serde_json::json!({ "settings": settings }),
            Some(expected) => serde_json::json!({ "settings": settings, "expected_version": expected }),
        };
        let hash = request_hash(program_id, &request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "PutReferralSettings", key, &hash, now).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        let version: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM referral_settings WHERE program_id = $1{}",
            self.db.dialect.for_update()
        )))
        .bind(program_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(expected) = expected_version
            && expected != version.unwrap_or(0)
        {
            return Err(Error::VersionMismatch { expected, actual: version.unwrap_or(0) });
        }
        let stored = Settings { version: version.unwrap_or(0) + 1, ..settings };
        let body = to_json(&stored);
        sqlx::query(
            "INSERT INTO referral_settings (program_id, body, version, updated_at_us, updated_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (program_id) DO UPDATE SET body = excluded.body, version = excluded.version, \
             updated_at_us = excluded.updated_at_us, updated_by = excluded.updated_by",
        )
        .bind(program_id)
        .bind(&body)
        .bind(stored.version)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        idempotency::save(&mut tx, program_id, "PutReferralSettings", key, &body, "").await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The customer's code and whether it is enabled, created on first call (GetOrCreateCode only).
    pub async fn code_for(&self, program_id: &str, customer_id: &str) -> Result<(String, bool), Error> {
        for _ in 0..8 {
            if let Some(found) = self.code_of(program_id, customer_id).await? {
                return Ok(found);
            }
            // A clash with another customer's code (or a concurrent first
            // call for this customer) inserts nothing; look again.
            sqlx::query(
                "INSERT INTO referral_codes (program_id, customer_id, code, created_at_us) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(program_id)
            .bind(customer_id)
            .bind(domain::new_code())
            .bind(self.now())
            .execute(&self.db.pool)
            .await?;
        }
        self.code_of(program_id, customer_id).await?.ok_or_else(|| Error::Corrupt("no free referral code".into()))
    }

    /// The customer's code and whether it is enabled, if one was made.
    pub async fn code_of(&self, program_id: &str, customer_id: &str) -> Result<Option<(String, bool)>, Error> {
        let row = sqlx::query("SELECT code, enabled FROM referral_codes WHERE program_id = $1 AND customer_id = $2")
            .bind(program_id)
            .bind(customer_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| Ok((r.try_get("code")?, r.try_get::<i64, _>("enabled")? != 0))).transpose()
    }

    /// The code's owner and whether the code is enabled.
    pub async fn resolve(&self, program_id: &str, code: &str) -> Result<Option<(String, bool)>, Error> {
        let row = sqlx::query("SELECT customer_id, enabled FROM referral_codes WHERE program_id = $1 AND code = $2")
            .bind(program_id)
            .bind(code)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| Ok((r.try_get("customer_id")?, r.try_get::<i64, _>("enabled")? != 0))).transpose()
    }

    /// Disables the customer's code, recording who did it (the first time).
    pub async fn disable_code(&self, program_id: &str, customer_id: &str, actor: &str) -> Result<String, Error> {
        let (code, _) = self.code_for(program_id, customer_id).await?;
        sqlx::query(
            "UPDATE referral_codes SET enabled = 0, disabled_by = $1, disabled_at_us = $2 \
             WHERE program_id = $3 AND customer_id = $4 AND enabled = 1",
        )
        .bind(actor)
        .bind(self.now())
        .bind(program_id)
        .bind(customer_id)
        .execute(&self.db.pool)
        .await?;
        Ok(code)
    }

    /// Records a sign-up as a PENDING referral, or says why not. The code's
    /// row is locked meanwhile, so a referrer's cap holds under concurrency.
    pub async fn signup(&self, program_id: &str, code: &str, referee: &str, key: &str) -> Result<Referral, Error> {
        let now = self.now();
        let hash = request_hash(program_id, &serde_json::json!({ "code": code, "referee": referee }));
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, "RecordSignup", key, &hash, now).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        let settings = settings_in(&mut tx, program_id).await?;
        if !settings.enabled {
            return Err(Refusal::ReferralsOff.into());
        }
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT customer_id, enabled FROM referral_codes WHERE program_id = $1 AND code = $2{}",
            self.db.dialect.for_update()
        ));
        let row = sqlx::query(sql).bind(program_id).bind(code).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Err(Refusal::UnknownCode(code.to_owned()).into()) };
        let referrer: String = row.try_get("customer_id")?;
        if row.try_get::<i64, _>("enabled")? == 0 {
            return Err(Refusal::CodeDisabled(code.to_owned()).into());
        }
        if referrer == referee {
            return Err(Refusal::SelfReferral.into());
        }
        let referred: Option<String> =
            sqlx::query_scalar("SELECT referral_id FROM referrals WHERE program_id = $1 AND referee_customer_id = $2")
                .bind(program_id)
                .bind(referee)
                .fetch_optional(&mut *tx)
                .await?;
        if referred.is_some() {
            return Err(Refusal::AlreadyReferred.into());
        }
        let ordered: Option<String> =
            sqlx::query_scalar("SELECT order_id FROM orders_seen WHERE program_id = $1 AND customer_id = $2 LIMIT 1")
                .bind(program_id)
                .bind(referee)
                .fetch_optional(&mut *tx)
                .await?;
        if ordered.is_some() {
            return Err(Refusal::ExistingCustomer.into());
        }
        if settings.cap_count > 0 {
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM referrals WHERE program_id = $1 AND referrer_customer_id = $2 AND created_at_us > $3",
            )
            .bind(program_id)
            .bind(&referrer)
            .bind(settings.cap_since(now))
            .fetch_one(&mut *tx)
            .await?;
            if recent >= i64::from(settings.cap_count) {
                return Err(Refusal::CapReached { cap: settings.cap_count, days: settings.cap_period_days }.into());
            }
        }
        let referral = Referral {
            referral_id: format!("ref_{}", uuid::Uuid::now_v7().simple()),
            program_id: program_id.to_owned(),
            code: code.to_owned(),
            referrer_customer_id: referrer,
            referee_customer_id: referee.to_owned(),
            status: Status::Pending,
            created_at: now,
            completed_at: None,
            reversed_at: None,
            qualifying_order_id: String::new(),
            referrer_points: 0,
        };
        sqlx::query(
            "INSERT INTO referrals (referral_id, program_id, code, referrer_customer_id, referee_customer_id, status, \
             created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&referral.referral_id)
        .bind(program_id)
        .bind(code)
        .bind(&referral.referrer_customer_id)
        .bind(referee)
        .bind(Status::Pending.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if !settings.referee_reward_id.is_empty() {
            let task = RewardTask {
                task_id: format!("referral:{}:referee-voucher", referral.referral_id),
                program_id: program_id.to_owned(),
                customer_id: referee.to_owned(),
                kind: TaskKind::Voucher,
                points: 0,
                // Named by the referral, never by the other customer (whose erasure must not leave their id here).
                reason: format!("welcome gift: referral {}", referral.referral_id),
                original_key: String::new(),
                reward_id: settings.referee_reward_id.clone(),
            };
            self.add_task(&mut tx, &task).await?;
        }
        idempotency::save(&mut tx, program_id, "RecordSignup", key, &to_json(&referral), &referral.referral_id).await?;
        tx.commit().await?;
        Ok(referral)
    }

    /// One order or refund from the API, in its own transaction.
    pub async fn record(&self, event: &OrderEvent) -> Result<Option<Referral>, Error> {
        let mut tx = begin_write(&self.db).await?;
        let changed = self.apply_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Where the ledger consumer stands (0 before the first entry).
    pub async fn cursor(&self) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, CONSUMER).await?)
    }

    /// A batch from the ledger, with the cursor, in one transaction.
    pub async fn apply_batch(&self, events: &[(i64, OrderEvent)], last_sequence: i64) -> Result<usize, Error> {
        let mut tx = begin_write(&self.db).await?;
        let cursor = follow::lock_cursor(&mut tx, self.db.dialect, CONSUMER).await?;
        let mut changed = 0;
        for (_, event) in events.iter().filter(|(sequence, _)| *sequence > cursor) {
            changed += usize::from(self.apply_event(&mut tx, event).await?.is_some());
        }
        follow::advance_cursor(&mut *tx, CONSUMER, last_sequence).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Applies an order or refund once; returns the referral it changed.
    async fn apply_event(&self, tx: &mut AnyConnection, event: &OrderEvent) -> Result<Option<Referral>, Error> {
        match event {
            OrderEvent::Purchase { program_id, customer_id, order_id, amount_minor, at } => {
                let first_time = sqlx::query(
                    "INSERT INTO orders_seen (program_id, order_id, customer_id, amount_minor, occurred_at_us) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(program_id)
                .bind(order_id)
                .bind(customer_id)
                .bind(amount_minor)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !first_time {
                    return Ok(None);
                }
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE program_id = $1 AND referee_customer_id = $2 \
                     AND status = 'pending'{}",
                    self.db.dialect.for_update()
                ));
                let row = sqlx::query(sql).bind(program_id).bind(customer_id).fetch_optional(&mut *tx).await?;
                let Some(mut referral) = row.as_ref().map(referral_from_row).transpose()? else { return Ok(None) };
                let settings = settings_in(tx, program_id).await?;
                match domain::order_effect(&settings, &referral, *amount_minor, *at) {
                    OrderEffect::Nothing => return Ok(None),
                    OrderEffect::Expire => referral.status = Status::Expired,
                    OrderEffect::Complete => {
                        referral.status = Status::Completed;
                        referral.completed_at = Some(*at);
                        referral.qualifying_order_id.clone_from(order_id);
                        // The referrer's reward is a voucher when the settings name one.
                        let referrer_points =
                            if settings.referrer_reward_id.is_empty() { settings.referrer_points } else { 0 };
                        referral.referrer_points = referrer_points;
                        let id = &referral.referral_id;
                        // Named by the referral, never by the other customer.
                        let referee_reason = format!("welcome bonus: referral {id}");
                        let referrer_reason = format!("referral reward: referral {id}");
                        let rewards = [
                            (&referral.referrer_customer_id, referrer_points, "referrer", referrer_reason.clone()),
                            (&referral.referee_customer_id, settings.referee_points, "referee", referee_reason),
                        ];
                        for (customer, points, side, reason) in rewards.into_iter().filter(|(_, p, _, _)| *p > 0) {
                            let task = RewardTask {
                                task_id: format!("referral:{id}:{side}"),
                                program_id: program_id.clone(),
                                customer_id: customer.clone(),
                                kind: TaskKind::Earn,
                                points,
                                reason,
                                original_key: String::new(),
                                reward_id: String::new(),
                            };
                            self.add_task(tx, &task).await?;
                        }
                        if !settings.referrer_reward_id.is_empty() {
                            let task = RewardTask {
                                task_id: format!("referral:{id}:referrer-voucher"),
                                program_id: program_id.clone(),
                                customer_id: referral.referrer_customer_id.clone(),
                                kind: TaskKind::Voucher,
                                points: 0,
                                reason: referrer_reason,
                                original_key: String::new(),
                                reward_id: settings.referrer_reward_id.clone(),
                            };
                            self.add_task(tx, &task).await?;
                        }
                    }
                }
                self.save_referral(tx, &referral).await?;
                Ok(Some(referral))
            }
            OrderEvent::Refund { program_id, order_id, refund_key, amount_minor, at } => {
                let first_time = sqlx::query(
                    "INSERT INTO refunds_seen (program_id, refund_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(program_id)
                .bind(refund_key)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !first_time {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "UPDATE orders_seen SET refunded_minor = refunded_minor + $1 WHERE program_id = $2 AND order_id = $3 \
                     RETURNING amount_minor, refunded_minor",
                )
                .bind(amount_minor)
                .bind(program_id)
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let (amount, refunded): (i64, i64) = (row.try_get("amount_minor")?, row.try_get("refunded_minor")?);
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE program_id = $1 AND qualifying_order_id = $2 \
                     AND status = 'completed'{}",
                    self.db.dialect.for_update()
                ));
                let row = sqlx::query(sql).bind(program_id).bind(order_id).fetch_optional(&mut *tx).await?;
                let Some(mut referral) = row.as_ref().map(referral_from_row).transpose()? else { return Ok(None) };
                let settings = settings_in(tx, program_id).await?;
                let completed_at = referral.completed_at.unwrap_or(referral.created_at);
                if !domain::claws_back(&settings, completed_at, amount, refunded, *at) {
                    return Ok(None);
                }
                referral.status = Status::Reversed;
                referral.reversed_at = Some(*at);
                for (customer, side) in
                    [(&referral.referrer_customer_id, "referrer"), (&referral.referee_customer_id, "referee")]
                {
                    // Only what was (to be) given is taken back: points, and a
                    // voucher (cancelled if still unused).
                    for given in [
                        format!("referral:{}:{side}", referral.referral_id),
                        format!("referral:{}:{side}-voucher", referral.referral_id),
                    ] {
                        let row =
                            sqlx::query("SELECT kind, points, reason, reward_id FROM reward_tasks WHERE task_id = $1")
                                .bind(&given)
                                .fetch_optional(&mut *tx)
                                .await?;
                        let Some(row) = row else { continue };
                        let voucher = row.try_get::<String, _>("kind")? == TaskKind::Voucher.as_str();
                        let task = RewardTask {
                            task_id: format!("{given}:clawback"),
                            program_id: program_id.clone(),
                            customer_id: customer.clone(),
                            kind: if voucher { TaskKind::Unvoucher } else { TaskKind::Reverse },
                            points: row.try_get("points")?,
                            // A cancel replays the grant first, which must ask the same.
                            reason: if voucher {
                                row.try_get("reason")?
                            } else {
                                format!("referral reversed: order {order_id} refunded")
                            },
                            original_key: given,
                            reward_id: row.try_get("reward_id")?,
                        };
                        self.add_task(tx, &task).await?;
                    }
                }
                self.save_referral(tx, &referral).await?;
                Ok(Some(referral))
            }
        }
    }

    async fn add_task(&self, tx: &mut AnyConnection, task: &RewardTask) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO reward_tasks (task_id, program_id, customer_id, kind, points, reason, original_key, \
             created_at_us, reward_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&task.task_id)
        .bind(&task.program_id)
        .bind(&task.customer_id)
        .bind(task.kind.as_str())
        .bind(task.points)
        .bind(&task.reason)
        .bind(&task.original_key)
        .bind(self.now())
        .bind(&task.reward_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn save_referral(&self, tx: &mut AnyConnection, referral: &Referral) -> Result<(), Error> {
        sqlx::query(
            "UPDATE referrals SET status = $1, completed_at_us = $2, reversed_at_us = $3, qualifying_order_id = $4, \
             referrer_points = $5 WHERE referral_id = $6",
        )
        .bind(referral.status.as_str())
        .bind(referral.completed_at)
        .bind(referral.reversed_at)
        .bind(&referral.qualifying_order_id)
        .bind(referral.referrer_points)
        .bind(&referral.referral_id)
        .execute(&mut *tx)
        .await?;
        if let Some(event) = referral.event() {
            outbox::append(tx, self.db.dialect, self.now(), &[event]).await?;
        }
        Ok(())
    }

    /// Points calls not yet confirmed, oldest first.
    pub async fn pending_tasks(&self, limit: i64) -> Result<Vec<RewardTask>, Error> {
        let rows = sqlx::query(
            "SELECT task_id, program_id, customer_id, kind, points, reason, original_key, reward_id FROM reward_tasks \
             WHERE done = 0 ORDER BY task_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RewardTask {
                    task_id: r.try_get("task_id")?,
                    program_id: r.try_get("program_id")?,
                    customer_id: r.try_get("customer_id")?,
                    kind: {
                        let kind: String = r.try_get("kind")?;
                        TaskKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("reward task kind {kind:?}")))?
                    },
                    points: r.try_get("points")?,
                    reason: r.try_get("reason")?,
                    original_key: r.try_get("original_key")?,
                    reward_id: r.try_get("reward_id")?,
                })
            })
            .collect()
    }

    pub async fn task_done(&self, task_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE reward_tasks SET done = 1, attempts = attempts + 1 WHERE task_id = $1")
            .bind(task_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// A referrer's referrals, newest first, with their list positions.
    pub async fn referrals(
        &self,
        program_id: &str,
        referrer: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Referral)>, Error> {
        let select = format!("SELECT referral_seq, {REFERRAL_COLUMNS} FROM referrals");
        let filter = [("program_id", program_id), ("referrer_customer_id", referrer)];
        let rows = db::newest_first(&self.db, &select, &filter, "referral_seq", before, limit).await?;
        rows.iter().map(|r| Ok((r.try_get("referral_seq")?, referral_from_row(r)?))).collect()
    }

    pub async fn stats(&self, program_id: &str, referrer: &str) -> Result<Stats, Error> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n, CAST(COALESCE(SUM(referrer_points), 0) AS BIGINT) AS points FROM referrals \
             WHERE program_id = $1 AND referrer_customer_id = $2 GROUP BY status",
        )
        .bind(program_id)
        .bind(referrer)
        .fetch_all(&self.db.pool)
        .await?;
        stats_from(rows)
    }

    /// The program's referrals whose friend signed up from `from` to `until` (excluded).
    pub async fn funnel(&self, program_id: &str, from: Micros, until: Micros) -> Result<Stats, Error> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n, CAST(COALESCE(SUM(referrer_points), 0) AS BIGINT) AS points FROM referrals \
             WHERE program_id = $1 AND created_at_us >= $2 AND created_at_us < $3 GROUP BY status",
        )
        .bind(program_id)
        .bind(from)
        .bind(until)
        .fetch_all(&self.db.pool)
        .await?;
        stats_from(rows)
    }
}

/// Counts per status (`status`, `n`, `points` rows).
fn stats_from(rows: Vec<AnyRow>) -> Result<Stats, Error> {
    let mut stats = Stats::default();
    for row in rows {
        let (status, n, points): (String, i64, i64) =
            (row.try_get("status")?, row.try_get("n")?, row.try_get("points")?);
        stats.invited += n;
        match Status::parse(&status) {
            Some(Status::Pending) => stats.pending = n,
            Some(Status::Completed) => {
                stats.completed = n;
                stats.points_earned = points;
            }
            Some(Status::Reversed) => stats.reversed = n,
            Some(Status::Expired) => stats.expired = n,
            None => return Err(Error::Corrupt(format!("referral status {status:?}"))),
        }
    }
    Ok(stats)
}

async fn settings_in(conn: &mut AnyConnection, program_id: &str) -> Result<Settings, Error> {
    let body: Option<String> = sqlx::query_scalar("SELECT body FROM referral_settings WHERE program_id = $1")
        .bind(program_id)
        .fetch_optional(&mut *conn)
        .await?;
    body.map_or_else(|| Ok(Settings::default()), |b| Ok(from_json(&b)?))
}

fn referral_from_row(row: &AnyRow) -> Result<Referral, Error> {
    let status: String = row.try_get("status")?;
    Ok(Referral {
        referral_id: row.try_get("referral_id")?,
        program_id: row.try_get("program_id")?,
        code: row.try_get("code")?,
        referrer_customer_id: row.try_get("referrer_customer_id")?,
        referee_customer_id: row.try_get("referee_customer_id")?,
        status: Status::parse(&status).ok_or_else(|| Error::Corrupt(format!("referral status {status:?}")))?,
        created_at: row.try_get("created_at_us")?,
        completed_at: row.try_get("completed_at_us")?,
        reversed_at: row.try_get("reversed_at_us")?,
        qualifying_order_id: row.try_get("qualifying_order_id")?,
        referrer_points: row.try_get("referrer_points")?,
    })
}
