//! Insights in SQL: orders as the ledger told of them, one row per customer
//! with what those orders add up to and the segment they put the customer
//! in, the program's thresholds, and the consumer's cursor. Every batch
//! from the ledger is applied with the cursor in one transaction, so
//! nothing counts twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{Database, Dialect, from_json, to_json};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write, request_hash};

use crate::domain::{self, History, Segment, Settings, SurveyAnswer, SurveyKind};
use crate::error::Error;

/// Names this service's row in `consumer_cursors`.
const CONSUMER: &str = "insights";

/// What one ledger entry tells: who, when, how it moves the day's counts,
/// and the order or refund it is, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerFact {
    pub program_id: String,
    pub customer_id: String,
    pub at: Micros,
    /// Points counts and the balance change; orders are counted from `order`.
    pub counts: domain::DayCounts,
    pub order: Option<OrderEvent>,
}

/// An order placed (its amount) or refunded (the amount refunded), in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Purchase { order_id: String, amount_minor: i64 },
    Refund { order_id: String, amount_minor: i64 },
}

/// A customer's stored numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    pub customer_id: String,
    pub first_order: Option<Micros>,
    pub last_order: Option<Micros>,
    pub order_count: i64,
    pub spend_minor: i64,
    pub segment: Segment,
}

/// How a customer ranks in the program: how many customers score strictly
/// lower on each RFM measure, out of `total` customers with orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranks {
    pub recency_below: i64,
    pub frequency_below: i64,
    pub monetary_below: i64,
    pub total: i64,
}

/// The order of ListCustomers: by spend or by the last order, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Spend,
    Recency,
}

impl Order {
    /// What the rows are ordered by, in SQL: a customer whose orders were all
    /// refunded has no last order and sorts last.
    fn expression(self) -> &'static str {
        match self {
            Self::Spend => "spend_minor",
            Self::Recency => "COALESCE(last_order_us, 0)",
        }
    }

    /// The value a row is ordered by (the first part of a page token).
    pub fn value(self, row: &CustomerRow) -> i64 {
        match self {
            Self::Spend => row.spend_minor,
            Self::Recency => row.last_order.unwrap_or(0),
        }
    }
}

const CUSTOMER_COLUMNS: &str = "customer_id, first_order_us, last_order_us, order_count, spend_minor, segment";

#[derive(Clone)]
pub struct InsightsStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

impl InsightsStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// The program's thresholds (the defaults until it stores its own).
    pub async fn settings(&self, program_id: &str) -> Result<Settings, Error> {
        settings_in(&mut *self.db.pool.acquire().await?, program_id, "").await
    }

    /// Replaces the thresholds (unless `expected_version` is stale) and
    /// marks every customer of the program for review, so segments follow.
    pub async fn put_settings(
        &self,
        program_id: &str,
        settings: Settings,
        expected_version: Option<i64>,
        actor: &str,
        key: &str,
    ) -> Result<Settings, Error> {
        const METHOD: &str = "PutInsightSettings";
        let now = self.now();
        let request = serde_json::json!({ "settings": settings, "expected_version": expected_version });
        let hash = request_hash(program_id, &request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, METHOD, key, &hash, now).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        // The defaults as version 0 first, so that there is always a row to lock:
        // two first changes made at once take turns like any two others.
        sqlx::query(
            "INSERT INTO insight_settings (program_id, body, version, updated_at_us, updated_by) \
             VALUES ($1, $2, 0, $3, '') ON CONFLICT (program_id) DO NOTHING",
        )
        .bind(program_id)
        .bind(to_json(&Settings::default()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let current = settings_in(&mut tx, program_id, self.db.dialect.for_update()).await?;
        if let Some(expected) = expected_version.filter(|&expected| expected != current.version) {
            return Err(Error::VersionMismatch { expected, actual: current.version });
        }
        let stored = Settings { version: current.version + 1, ..settings };
        let body = to_json(&stored);
        sqlx::query(
            "INSERT INTO insight_settings (program_id, body, version, updated_at_us, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id) DO UPDATE SET body = excluded.body, \
             version = excluded.version, updated_at_us = excluded.updated_at_us, updated_by = excluded.updated_by",
        )
        .bind(program_id)
        .bind(&body)
        .bind(stored.version)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        if !stored.same_segments(&current) {
            // Every segment follows the new thresholds at the next review or read.
            sqlx::query("UPDATE customers SET review_at_us = $2 WHERE program_id = $1")
                .bind(program_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        idempotency::save(&mut tx, program_id, METHOD, key, &body, "").await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Where the ledger consumer stands (0 before the first entry).
    pub async fn cursor(&self) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, CONSUMER).await?)
    }

    /// A batch from the ledger, with the cursor, in one transaction; facts
    /// at or below the stored cursor are skipped. Orders and refunds change
    /// their customers' rows; every fact adds to its day's counts, once per
    /// (program, day). Returns how many customers were written.
    pub async fn apply_batch(&self, facts: &[(i64, LedgerFact)], last_sequence: i64) -> Result<usize, Error> {
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        let cursor = follow::lock_cursor(&mut tx, self.db.dialect, CONSUMER).await?;
        let mut touched = BTreeSet::new();
        let mut days: BTreeMap<(String, Micros), domain::DayCounts> = BTreeMap::new();
        let mut first_seen: BTreeMap<(String, String), Micros> = BTreeMap::new();
        for (_, fact) in facts.iter().filter(|(sequence, _)| *sequence > cursor) {
            let day = domain::day_of(fact.at);
            let mut counts = fact.counts;
            if let Some(customer_id) = apply_order(&mut tx, fact, &mut counts).await? {
                touched.insert((fact.program_id.clone(), customer_id));
            }
            *days.entry((fact.program_id.clone(), day)).or_default() += counts;
            let seen = first_seen.entry((fact.program_id.clone(), fact.customer_id.clone())).or_insert(day);
            *seen = (*seen).min(day);
        }
        for ((program_id, customer_id), day) in &first_seen {
            let new = sqlx::query(
                "INSERT INTO members (program_id, customer_id, first_seen_us) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(program_id)
            .bind(customer_id)
            .bind(day)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            days.entry((program_id.clone(), *day)).or_default().new_members += i64::try_from(new).unwrap_or(0);
        }
        for ((program_id, day), c) in &days {
            sqlx::query(
                "INSERT INTO kpi_days (program_id, day_us, new_members, orders, revenue_minor, refunded_minor, \
                 points_issued, points_redeemed, points_expired, points_reversed, points_change, first_buyers, \
                 repeat_buyers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (program_id, day_us) DO UPDATE SET \
                 first_buyers = kpi_days.first_buyers + excluded.first_buyers, \
                 repeat_buyers = kpi_days.repeat_buyers + excluded.repeat_buyers, \
                 new_members = kpi_days.new_members + excluded.new_members, \
                 orders = kpi_days.orders + excluded.orders, \
                 revenue_minor = kpi_days.revenue_minor + excluded.revenue_minor, \
                 refunded_minor = kpi_days.refunded_minor + excluded.refunded_minor, \
                 points_issued = kpi_days.points_issued + excluded.points_issued, \
                 points_redeemed = kpi_days.points_redeemed + excluded.points_redeemed, \
                 points_expired = kpi_days.points_expired + excluded.points_expired, \
                 points_reversed = kpi_days.points_reversed + excluded.points_reversed, \
                 points_change = kpi_days.points_change + excluded.points_change",
            )
            .bind(program_id)
            .bind(day)
            .bind(c.new_members)
            .bind(c.orders)
            .bind(c.revenue_minor)
            .bind(c.refunded_minor)
            .bind(c.points_issued)
            .bind(c.points_redeemed)
            .bind(c.points_expired)
            .bind(c.points_reversed)
            .bind(c.points_change)
            .bind(c.first_buyers)
            .bind(c.repeat_buyers)
            .execute(&mut *tx)
            .await?;
        }
        let mut settings = HashMap::new();
        for (program_id, customer_id) in &touched {
            if !settings.contains_key(program_id) {
                settings.insert(program_id.clone(), settings_in(&mut tx, program_id, "").await?);
            }
            refresh(&mut tx, self.db.dialect, &settings[program_id], program_id, customer_id, now).await?;
        }
        follow::advance_cursor(&mut *tx, CONSUMER, last_sequence).await?;
        tx.commit().await?;
        Ok(touched.len())
    }

    /// Recomputes the segments that time alone changed by now, in `program_id`
    /// (every program when `None`), at most `limit`; returns how many.
    pub async fn review_due(&self, program_id: Option<&str>, limit: usize) -> Result<usize, Error> {
        let now = self.now();
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT program_id, customer_id FROM customers WHERE review_at_us <= $1 \
             AND ($2 = '' OR program_id = $2) ORDER BY review_at_us LIMIT $3",
        )
        .bind(now)
        .bind(program_id.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.pool)
        .await?;
        let mut settings = HashMap::new();
        for (program_id, customer_id) in &due {
            let mut tx = begin_write(&self.db).await?;
            if !settings.contains_key(program_id) {
                settings.insert(program_id.clone(), settings_in(&mut tx, program_id, "").await?);
            }
            refresh(&mut tx, self.db.dialect, &settings[program_id], program_id, customer_id, now).await?;
            tx.commit().await?;
        }
        Ok(due.len())
    }

    /// The customer's orders not refunded in full.
    pub async fn history(&self, program_id: &str, customer_id: &str) -> Result<History, Error> {
        history_in(&mut *self.db.pool.acquire().await?, program_id, customer_id).await
    }

    /// How a customer of these numbers ranks among the program's customers with orders.
    pub async fn ranks(&self, program_id: &str, history: &History) -> Result<Ranks, Error> {
        let (recency_below, frequency_below, monetary_below, total): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               COALESCE(SUM(CASE WHEN last_order_us < $2 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN order_count < $3 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN spend_minor < $4 THEN 1 ELSE 0 END), 0), \
               COUNT(*) \
             FROM customers WHERE program_id = $1 AND order_count > 0",
        )
        .bind(program_id)
        .bind(history.last_order().unwrap_or(0))
        .bind(history.order_count())
        .bind(history.spend_minor)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(Ranks { recency_below, frequency_below, monetary_below, total })
    }

    /// One page of the program's customers (of `segment`, if given), highest
    /// `order` first, strictly after the row at `after` (its value and id).
    pub async fn customers(
        &self,
        program_id: &str,
        segment: Option<Segment>,
        order: Order,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<CustomerRow>, Error> {
        let value = order.expression();
        let mut sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE program_id = $1");
        let mut parameters = 1;
        if segment.is_some() {
            parameters += 1;
            sql.push_str(&format!(" AND segment = ${parameters}"));
        }
        if after.is_some() {
            let (v, id) = (parameters + 1, parameters + 2);
            sql.push_str(&format!(" AND ({value} < ${v} OR ({value} = ${v} AND customer_id < ${id}))"));
            parameters += 2;
        }
        sql.push_str(&format!(" ORDER BY {value} DESC, customer_id DESC LIMIT ${}", parameters + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id);
        if let Some(segment) = segment {
            query = query.bind(segment.as_str());
        }
        if let Some((value, id)) = after {
            query = query.bind(value).bind(id);
        }
        let rows = query.bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(customer_from_row).collect()
    }

    /// How many of the program's customers each segment holds.
    pub async fn segment_counts(&self, program_id: &str) -> Result<HashMap<Segment, i64>, Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT segment, COUNT(*) FROM customers WHERE program_id = $1 GROUP BY segment")
                .bind(program_id)
                .fetch_all(&self.db.pool)
                .await?;
        rows.into_iter().map(|(segment, count)| Ok((parse_segment(&segment)?, count))).collect()
    }
}

impl InsightsStore {
    /// Records an answer and counts it in its day, once per idempotency key.
    pub async fn record_answer(
        &self,
        program_id: &str,
        answer: SurveyAnswer,
        asked_at: Option<Micros>,
        key: &str,
    ) -> Result<SurveyAnswer, Error> {
        const METHOD: &str = "RecordSurveyResponse";
        // The instant the request named, if any: a retry without one is the same request whenever it comes.
        let request = serde_json::json!({
            "customer_id": answer.customer_id, "kind": answer.kind, "score": answer.score,
            "comment": answer.comment, "answered_at": asked_at,
        });
        let hash = request_hash(program_id, &request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, METHOD, key, &hash, self.now()).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        sqlx::query(
            "INSERT INTO survey_responses (program_id, response_id, customer_id, kind, score, comment, answered_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(program_id)
        .bind(&answer.response_id)
        .bind(&answer.customer_id)
        .bind(answer.kind.as_str())
        .bind(answer.score)
        .bind(&answer.comment)
        .bind(answer.answered_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO survey_days (program_id, kind, day_us, score, responses) VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (program_id, kind, day_us, score) DO UPDATE SET responses = survey_days.responses + 1",
        )
        .bind(program_id)
        .bind(answer.kind.as_str())
        .bind(domain::day_of(answer.answered_at))
        .bind(answer.score)
        .execute(&mut *tx)
        .await?;
        idempotency::save(&mut tx, program_id, METHOD, key, &to_json(&answer), &answer.response_id).await?;
        tx.commit().await?;
        Ok(answer)
    }

    /// The program's counts of each day from `first_day` to `last_day`
    /// (midnights, both included), and the sums of every day before.
    pub async fn kpi_days(
        &self,
        program_id: &str,
        first_day: Micros,
        last_day: Micros,
    ) -> Result<(Vec<(Micros, domain::DayCounts)>, domain::DayCounts), Error> {
        const COLUMNS: &str = "new_members, orders, revenue_minor, refunded_minor, points_issued, points_redeemed, \
                               points_expired, points_reversed, points_change, first_buyers, repeat_buyers";
        let sql = format!(
            "SELECT day_us, {COLUMNS} FROM kpi_days WHERE program_id = $1 AND day_us >= $2 AND day_us <= $3 ORDER BY day_us"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(first_day)
            .bind(last_day)
            .fetch_all(&self.db.pool)
            .await?;
        let days =
            rows.iter().map(|r| Ok((r.try_get("day_us")?, counts_from_row(r)?))).collect::<Result<_, Error>>()?;
        let sums = COLUMNS.split(", ").map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"));
        let sql = format!(
            "SELECT {} FROM kpi_days WHERE program_id = $1 AND day_us < $2",
            sums.collect::<Vec<_>>().join(", ")
        );
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).bind(first_day).fetch_one(&self.db.pool).await?;
        Ok((days, counts_from_row(&row)?))
    }

    /// How many customers ordered within each of `periods` (first and last
    /// day, both included; in order, not overlapping), counted in the
    /// database: one query for whole days, one per longer period.
    pub async fn active_members(&self, program_id: &str, periods: &[(Micros, Micros)]) -> Result<Vec<i64>, Error> {
        let (Some(&(first_day, _)), Some(&(_, last_day))) = (periods.first(), periods.last()) else {
            return Ok(Vec::new());
        };
        if periods.iter().all(|(first, last)| first == last) {
            let per_day: HashMap<Micros, i64> = sqlx::query_as(
                "SELECT day_us, COUNT(*) FROM buyer_days WHERE program_id = $1 AND day_us >= $2 AND day_us <= $3 \
                 GROUP BY day_us",
            )
            .bind(program_id)
            .bind(first_day)
            .bind(last_day)
            .fetch_all(&self.db.pool)
            .await?
            .into_iter()
            .collect();
            return Ok(periods.iter().map(|(day, _)| per_day.get(day).copied().unwrap_or(0)).collect());
        }
        let mut counts = Vec::with_capacity(periods.len());
        for &(first_day, last_day) in periods {
            counts.push(self.buyers_between(program_id, first_day, last_day).await?);
        }
        Ok(counts)
    }

    /// How many customers ordered from `first_day` to `last_day`, both included.
    pub async fn buyers_between(&self, program_id: &str, first_day: Micros, last_day: Micros) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(DISTINCT customer_id) FROM buyer_days WHERE program_id = $1 AND day_us >= $2 AND day_us <= $3",
        )
        .bind(program_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_one(&self.db.pool)
        .await?)
    }

    /// How many answers of `kind` gave each score, on the UTC days from
    /// `first_day` to `last_day` (midnights), both included.
    pub async fn survey_counts(
        &self,
        program_id: &str,
        kind: SurveyKind,
        first_day: Micros,
        last_day: Micros,
    ) -> Result<Vec<(i32, i64)>, Error> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT score, CAST(SUM(responses) AS BIGINT) FROM survey_days \
             WHERE program_id = $1 AND kind = $2 AND day_us >= $3 AND day_us <= $4 GROUP BY score",
        )
        .bind(program_id)
        .bind(kind.as_str())
        .bind(first_day)
        .bind(last_day)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows)
    }
}

/// Records the order or refund `fact` is, if any, and adds it to the day's
/// `counts`; returns the customer whose orders it changed.
async fn apply_order(
    tx: &mut AnyConnection,
    fact: &LedgerFact,
    counts: &mut domain::DayCounts,
) -> Result<Option<String>, Error> {
    match &fact.order {
        None => Ok(None),
        Some(OrderEvent::Purchase { order_id, amount_minor }) => {
            let inserted = sqlx::query(
                "INSERT INTO orders (program_id, order_id, customer_id, amount_minor, occurred_at_us) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&fact.program_id)
            .bind(order_id)
            .bind(&fact.customer_id)
            .bind(amount_minor)
            .bind(fact.at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // An order id earns once.
            if inserted == 0 {
                return Ok(None);
            }
            counts.orders += 1;
            counts.revenue_minor += amount_minor;
            let (first, repeat) = buyer(tx, &fact.program_id, &fact.customer_id, domain::day_of(fact.at)).await?;
            counts.first_buyers += first;
            counts.repeat_buyers += repeat;
            Ok(Some(fact.customer_id.clone()))
        }
        Some(OrderEvent::Refund { order_id, amount_minor }) => {
            // The points service refunds at most what an order was; a refund
            // of an order this service never saw changes nothing.
            let customer: Option<String> = sqlx::query_scalar(
                "UPDATE orders SET refunded_minor = refunded_minor + $3 \
                 WHERE program_id = $1 AND order_id = $2 RETURNING customer_id",
            )
            .bind(&fact.program_id)
            .bind(order_id)
            .bind(amount_minor)
            .fetch_optional(&mut *tx)
            .await?;
            if customer.is_some() {
                counts.refunded_minor += amount_minor;
            }
            Ok(customer)
        }
    }
}

/// Notes that the customer ordered on `day`; (1, 0) when this was their
/// first order, (0, 1) their second, else (0, 0).
async fn buyer(tx: &mut AnyConnection, program_id: &str, customer_id: &str, day: Micros) -> Result<(i64, i64), Error> {
    sqlx::query("INSERT INTO buyer_days (program_id, day_us, customer_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(program_id)
        .bind(day)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE program_id = $1 AND customer_id = $2")
        .bind(program_id)
        .bind(customer_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(match orders {
        1 => (1, 0),
        2 => (0, 1),
        _ => (0, 0),
    })
}

/// Writes the customer's row from their orders, as of `now`.
async fn refresh(
    tx: &mut AnyConnection,
    dialect: Dialect,
    settings: &Settings,
    program_id: &str,
    customer_id: &str,
    now: Micros,
) -> Result<(), Error> {
    // The row first, then the orders: a review and a batch from the ledger
    // take turns, and the later one writes from the orders as they now are.
    let lock = format!("SELECT 1 FROM customers WHERE program_id = $1 AND customer_id = $2{}", dialect.for_update());
    sqlx::query(sqlx::AssertSqlSafe(lock)).bind(program_id).bind(customer_id).fetch_optional(&mut *tx).await?;
    let history = history_in(tx, program_id, customer_id).await?;
    let (segment, review_at) = history.segment(settings, now);
    sqlx::query(
        "INSERT INTO customers (program_id, customer_id, first_order_us, last_order_us, order_count, spend_minor, \
         segment, review_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (program_id, customer_id) DO \
         UPDATE SET first_order_us = excluded.first_order_us, last_order_us = excluded.last_order_us, \
         order_count = excluded.order_count, spend_minor = excluded.spend_minor, segment = excluded.segment, \
         review_at_us = excluded.review_at_us",
    )
    .bind(program_id)
    .bind(customer_id)
    .bind(history.first_order())
    .bind(history.last_order())
    .bind(history.order_count())
    .bind(history.spend_minor)
    .bind(segment.as_str())
    .bind(review_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn history_in(conn: &mut AnyConnection, program_id: &str, customer_id: &str) -> Result<History, Error> {
    let orders: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT occurred_at_us, amount_minor - refunded_minor FROM orders \
         WHERE program_id = $1 AND customer_id = $2 AND refunded_minor < amount_minor ORDER BY occurred_at_us",
    )
    .bind(program_id)
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(History {
        order_times: orders.iter().map(|(at, _)| *at).collect(),
        spend_minor: orders.iter().map(|(_, amount)| amount).sum(),
    })
}

/// The program's settings (the defaults until it stores its own); `lock`
/// is appended to the query (`FOR UPDATE` to change them).
async fn settings_in(conn: &mut AnyConnection, program_id: &str, lock: &str) -> Result<Settings, Error> {
    let sql = format!("SELECT body FROM insight_settings WHERE program_id = $1{lock}");
    let body: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(program_id).fetch_optional(&mut *conn).await?;
    Ok(body.map(|body| from_json(&body)).transpose()?.unwrap_or_default())
}

fn counts_from_row(row: &sqlx::any::AnyRow) -> Result<domain::DayCounts, Error> {
    Ok(domain::DayCounts {
        new_members: row.try_get("new_members")?,
        orders: row.try_get("orders")?,
        revenue_minor: row.try_get("revenue_minor")?,
        refunded_minor: row.try_get("refunded_minor")?,
        points_issued: row.try_get("points_issued")?,
        points_redeemed: row.try_get("points_redeemed")?,
        points_expired: row.try_get("points_expired")?,
        points_reversed: row.try_get("points_reversed")?,
        points_change: row.try_get("points_change")?,
        first_buyers: row.try_get("first_buyers")?,
        repeat_buyers: row.try_get("repeat_buyers")?,
    })
}

fn parse_segment(text: &str) -> Result<Segment, Error> {
    Segment::parse(text).ok_or_else(|| Error::Corrupt(format!("unknown segment {text:?}")))
}

fn customer_from_row(row: &sqlx::any::AnyRow) -> Result<CustomerRow, Error> {
    Ok(CustomerRow {
        customer_id: row.try_get("customer_id")?,
        first_order: row.try_get("first_order_us")?,
        last_order: row.try_get("last_order_us")?,
        order_count: row.try_get("order_count")?,
        spend_minor: row.try_get("spend_minor")?,
        segment: parse_segment(&row.try_get::<String, _>("segment")?)?,
    })
}
