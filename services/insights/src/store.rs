//! Insights in SQL: orders as the ledger told of them, one row per customer
//! with what those orders add up to and the segment they put the customer
//! in, the program's thresholds, and the consumer's cursor. Every batch
//! from the ledger is applied with the cursor in one transaction, so
//! nothing counts twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, MICROS_PER_DAY, Micros};
use loyalty_common::db::{Database, Dialect, from_json, to_json};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write, request_hash};

use crate::domain::{self, History, Segment, SegmentChange, Settings, SurveyAnswer, SurveyKind};
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
        if stored.churned_days != current.churned_days {
            // Churn days move with the threshold: recomputed in the consumer's turn.
            sqlx::query("INSERT INTO kpi_rebuilds (program_id, part) VALUES ($1, 'churn') ON CONFLICT DO NOTHING")
                .bind(program_id)
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
        let facts: Vec<&LedgerFact> =
            facts.iter().filter(|(sequence, _)| *sequence > cursor).map(|(_, fact)| fact).collect();
        // The batch's new purchases first, set-wise per program: what each changed of its customer's history.
        let mut placed: HashMap<(String, String), Placed> = HashMap::new();
        let programs: BTreeSet<&str> = facts.iter().map(|f| f.program_id.as_str()).collect();
        for program_id in programs {
            let purchases: Vec<Purchase<'_>> = facts
                .iter()
                .filter(|f| f.program_id == program_id)
                .filter_map(|f| match &f.order {
                    Some(OrderEvent::Purchase { order_id, amount_minor }) => {
                        Some((*f, order_id.as_str(), *amount_minor))
                    }
                    _ => None,
                })
                .collect();
            for (order_id, order) in place_orders(&mut tx, program_id, &purchases).await? {
                placed.insert((program_id.to_owned(), order_id), order);
            }
        }
        let mut touched = BTreeSet::new();
        let mut days: BTreeMap<(String, Micros), domain::DayCounts> = BTreeMap::new();
        let mut first_seen: BTreeMap<(String, String), Micros> = BTreeMap::new();
        let mut cohorts: BTreeMap<(String, Micros, Micros), i64> = BTreeMap::new();
        let mut gaps: BTreeMap<(String, Micros, Micros), i64> = BTreeMap::new();
        let mut weeks: BTreeMap<(String, Micros), i64> = BTreeMap::new();
        let mut settings = HashMap::new();
        for fact in facts {
            let day = domain::day_of(fact.at);
            let mut counts = fact.counts;
            match &fact.order {
                Some(OrderEvent::Purchase { order_id, amount_minor }) => {
                    // An order id earns once: only a new one counts.
                    if let Some(order) = placed.remove(&(fact.program_id.clone(), order_id.clone())) {
                        touched.insert((fact.program_id.clone(), fact.customer_id.clone()));
                        counts.orders += 1;
                        counts.revenue_minor += amount_minor;
                        match order.ordinal {
                            1 => counts.first_buyers += 1,
                            2 => counts.repeat_buyers += 1,
                            _ => {}
                        }
                        let churned_days =
                            settings_cached(&mut tx, &mut settings, &fact.program_id).await?.churned_days;
                        for (at, churned, reactivated) in
                            domain::churn_changes(order.previous.map(domain::day_of), day, churned_days)
                        {
                            let counts = days.entry((fact.program_id.clone(), at)).or_default();
                            counts.churned += churned;
                            counts.reactivated += reactivated;
                        }
                        if order.first_on_day {
                            counts.day_buyers += 1;
                            let previous = order.previous.map_or(domain::NO_DAY, domain::day_of);
                            *gaps.entry((fact.program_id.clone(), day, previous)).or_default() += 1;
                        }
                        if order.first_in_week {
                            *weeks.entry((fact.program_id.clone(), domain::week_start(fact.at))).or_default() += 1;
                        }
                        if order.first_in_month {
                            let key =
                                (fact.program_id.clone(), domain::month_of(order.first), domain::month_of(fact.at));
                            *cohorts.entry(key).or_default() += 1;
                        }
                    }
                }
                Some(OrderEvent::Refund { order_id, amount_minor }) => {
                    if let Some(customer_id) = refund(&mut tx, &fact.program_id, order_id, *amount_minor).await? {
                        counts.refunded_minor += amount_minor;
                        touched.insert((fact.program_id.clone(), customer_id));
                    }
                }
                None => {}
            }
            *days.entry((fact.program_id.clone(), day)).or_default() += counts;
            let seen = first_seen.entry((fact.program_id.clone(), fact.customer_id.clone())).or_insert(day);
            *seen = (*seen).min(day);
        }
        for (program_id, day) in new_members(&mut tx, &first_seen).await? {
            days.entry((program_id, day)).or_default().new_members += 1;
        }
        for ((program_id, day), c) in &days {
            sqlx::query(
                "INSERT INTO kpi_days (program_id, day_us, new_members, orders, revenue_minor, refunded_minor, \
                 points_issued, points_redeemed, points_expired, points_reversed, points_change, first_buyers, \
                 repeat_buyers, churned, reactivated, day_buyers) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (program_id, day_us) DO UPDATE SET \
                 day_buyers = kpi_days.day_buyers + excluded.day_buyers, \
                 churned = kpi_days.churned + excluded.churned, \
                 reactivated = kpi_days.reactivated + excluded.reactivated, \
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
            .bind(c.churned)
            .bind(c.reactivated)
            .bind(c.day_buyers)
            .execute(&mut *tx)
            .await?;
        }
        for ((program_id, cohort, month), customers) in &cohorts {
            sqlx::query(
                "INSERT INTO cohort_months (program_id, cohort_us, month_us, customers) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (program_id, cohort_us, month_us) DO UPDATE SET \
                 customers = cohort_months.customers + excluded.customers",
            )
            .bind(program_id)
            .bind(cohort)
            .bind(month)
            .bind(customers)
            .execute(&mut *tx)
            .await?;
        }
        for ((program_id, week), customers) in &weeks {
            sqlx::query(
                "INSERT INTO week_buyers (program_id, week_us, customers) VALUES ($1, $2, $3) \
                 ON CONFLICT (program_id, week_us) DO UPDATE SET customers = week_buyers.customers + excluded.customers",
            )
            .bind(program_id)
            .bind(week)
            .bind(customers)
            .execute(&mut *tx)
            .await?;
        }
        for ((program_id, day, previous), customers) in &gaps {
            sqlx::query(
                "INSERT INTO buyer_gaps (program_id, day_us, previous_us, customers) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (program_id, day_us, previous_us) DO UPDATE SET \
                 customers = buyer_gaps.customers + excluded.customers",
            )
            .bind(program_id)
            .bind(day)
            .bind(previous)
            .bind(customers)
            .execute(&mut *tx)
            .await?;
        }
        let mut changes = Vec::new();
        let programs: BTreeSet<&str> = touched.iter().map(|(program_id, _)| program_id.as_str()).collect();
        for program_id in programs {
            let customers: Vec<&str> =
                touched.iter().filter(|(p, _)| p == program_id).map(|(_, c)| c.as_str()).collect();
            let settings = settings_cached(&mut tx, &mut settings, program_id).await?;
            changes.extend(refresh_many(&mut tx, self.db.dialect, &settings, program_id, &customers, now).await?);
        }
        record_changes(&mut tx, &changes).await?;
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
            let settings = settings_cached(&mut tx, &mut settings, program_id).await?;
            let changes = refresh_many(&mut tx, self.db.dialect, &settings, program_id, &[customer_id], now).await?;
            record_changes(&mut tx, &changes).await?;
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
    /// (midnights, both included), and the sums of every day before; churn
    /// days after `today` are projections and count nothing yet.
    pub async fn kpi_days(
        &self,
        program_id: &str,
        first_day: Micros,
        last_day: Micros,
        today: Micros,
    ) -> Result<(Vec<(Micros, domain::DayCounts)>, domain::DayCounts), Error> {
        const COLUMNS: [&str; 14] = [
            "new_members",
            "orders",
            "revenue_minor",
            "refunded_minor",
            "points_issued",
            "points_redeemed",
            "points_expired",
            "points_reversed",
            "points_change",
            "first_buyers",
            "repeat_buyers",
            "churned",
            "reactivated",
            "day_buyers",
        ];
        // `$today` is the parameter holding `today`.
        let value = |column: &str| match column {
            "churned" => "CASE WHEN day_us <= $today THEN churned ELSE 0 END".to_owned(),
            other => other.to_owned(),
        };
        let each: Vec<String> = COLUMNS.iter().map(|c| format!("{} AS {c}", value(c))).collect();
        let sql = format!(
            "SELECT day_us, {} FROM kpi_days WHERE program_id = $1 AND day_us >= $2 AND day_us <= $3 ORDER BY day_us",
            each.join(", ")
        )
        .replace("$today", "$4");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(first_day)
            .bind(last_day)
            .bind(today)
            .fetch_all(&self.db.pool)
            .await?;
        let days =
            rows.iter().map(|r| Ok((r.try_get("day_us")?, counts_from_row(r)?))).collect::<Result<_, Error>>()?;
        let sums: Vec<String> =
            COLUMNS.iter().map(|c| format!("CAST(COALESCE(SUM({}), 0) AS BIGINT) AS {c}", value(c))).collect();
        let sql = format!("SELECT {} FROM kpi_days WHERE program_id = $1 AND day_us < $2", sums.join(", "))
            .replace("$today", "$3");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(first_day)
            .bind(today)
            .fetch_one(&self.db.pool)
            .await?;
        Ok((days, counts_from_row(&row)?))
    }

    /// Segment changes after `after` (of `program_id`, or every program), oldest first.
    pub async fn segment_changes(
        &self,
        program_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SegmentChange>, Error> {
        let rows = sqlx::query(
            "SELECT sequence, program_id, customer_id, from_segment, to_segment, changed_at_us FROM segment_changes \
             WHERE sequence > $1 AND ($2 = '' OR program_id = $2) ORDER BY sequence LIMIT $3",
        )
        .bind(after)
        .bind(program_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let from: String = r.try_get("from_segment")?;
                Ok(SegmentChange {
                    sequence: r.try_get("sequence")?,
                    program_id: r.try_get("program_id")?,
                    customer_id: r.try_get("customer_id")?,
                    from: if from.is_empty() { None } else { Some(parse_segment(&from)?) },
                    to: parse_segment(&r.try_get::<String, _>("to_segment")?)?,
                    at: r.try_get("changed_at_us")?,
                })
            })
            .collect()
    }

    /// Where a follower of this service's own data (the win-back rule) stands.
    pub async fn follower_cursor(&self, follower: &str) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, follower).await?)
    }

    pub async fn advance_follower(&self, follower: &str, sequence: i64) -> Result<(), Error> {
        Ok(follow::advance_cursor(&self.db.pool, follower, sequence).await?)
    }

    /// The program's cohorts whose first month is from `first` to `last`
    /// (month starts): (cohort, month, customers who ordered in it).
    pub async fn cohort_months(
        &self,
        program_id: &str,
        first: Micros,
        last: Micros,
    ) -> Result<Vec<(Micros, Micros, i64)>, Error> {
        Ok(sqlx::query_as(
            "SELECT cohort_us, month_us, customers FROM cohort_months \
             WHERE program_id = $1 AND cohort_us >= $2 AND cohort_us <= $3",
        )
        .bind(program_id)
        .bind(first)
        .bind(last)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Recomputes the aggregates waiting in `kpi_rebuilds` (of `program_id`
    /// only, if given) from the buyers' days, each in the ledger consumer's
    /// turn; returns how many were done.
    pub async fn rebuild_pending(&self, program_id: Option<&str>) -> Result<usize, Error> {
        let pending: Vec<(String, String)> = sqlx::query_as(
            "SELECT program_id, part FROM kpi_rebuilds WHERE ($1 = '' OR program_id = $1) ORDER BY program_id, part",
        )
        .bind(program_id.unwrap_or(""))
        .fetch_all(&self.db.pool)
        .await?;
        let mut done = 0;
        for (program_id, part) in pending {
            let mut tx = begin_write(&self.db).await?;
            // The consumer's cursor row, locked: no batch from the ledger runs meanwhile.
            follow::advance_cursor(&mut *tx, CONSUMER, 0).await?;
            follow::lock_cursor(&mut tx, self.db.dialect, CONSUMER).await?;
            let claimed = sqlx::query("DELETE FROM kpi_rebuilds WHERE program_id = $1 AND part = $2")
                .bind(&program_id)
                .bind(&part)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                continue;
            }
            match part.as_str() {
                "churn" => {
                    let settings = settings_in(&mut tx, &program_id, "").await?;
                    rebuild_churn(&mut tx, &program_id, settings.churned_days).await?;
                }
                "cohorts" => rebuild_cohorts(&mut tx, &program_id).await?,
                "gaps" => rebuild_gaps(&mut tx, &program_id).await?,
                "weeks" => rebuild_weeks(&mut tx, &program_id).await?,
                other => return Err(Error::Corrupt(format!("unknown rebuild {other:?}"))),
            }
            tx.commit().await?;
            done += 1;
        }
        Ok(done)
    }

    /// How many customers ordered within each of `periods` (first and last
    /// day, both included; in order, not overlapping), from `buyer_gaps`: a
    /// customer counts in a range on the first day they ordered in it, the
    /// row whose previous day is before the range. One query over rows per
    /// day and previous day, never over customers; the periods go in as a
    /// `VALUES` list of our own integers. (A day's alone is `day_buyers`.)
    pub async fn active_members(&self, program_id: &str, periods: &[(Micros, Micros)]) -> Result<Vec<i64>, Error> {
        if periods.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = periods.iter().map(|(first, last)| format!("({first}, {last})")).collect();
        let sql = format!(
            "SELECT p.column1, CAST(SUM(g.customers) AS BIGINT) FROM (VALUES {}) AS p \
             JOIN buyer_gaps g ON g.program_id = $1 AND g.day_us >= p.column1 AND g.day_us <= p.column2 \
             AND g.previous_us < p.column1 GROUP BY p.column1",
            values.join(", ")
        );
        let per_period: HashMap<Micros, i64> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .fetch_all(&self.db.pool)
            .await?
            .into_iter()
            .collect();
        Ok(periods.iter().map(|(first, _)| per_period.get(first).copied().unwrap_or(0)).collect())
    }

    /// How many customers ordered in each ISO week whose Monday is from `first` to `last`.
    pub async fn week_buyers(
        &self,
        program_id: &str,
        first: Micros,
        last: Micros,
    ) -> Result<HashMap<Micros, i64>, Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT week_us, customers FROM week_buyers WHERE program_id = $1 AND week_us >= $2 AND week_us <= $3",
        )
        .bind(program_id)
        .bind(first)
        .bind(last)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// How many customers ordered in each calendar month whose start is from
    /// `first` to `last`: the sum of the cohorts' counts for the month.
    pub async fn month_buyers(
        &self,
        program_id: &str,
        first: Micros,
        last: Micros,
    ) -> Result<HashMap<Micros, i64>, Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT month_us, CAST(SUM(customers) AS BIGINT) FROM cohort_months \
             WHERE program_id = $1 AND month_us >= $2 AND month_us <= $3 GROUP BY month_us",
        )
        .bind(program_id)
        .bind(first)
        .bind(last)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// How many customers ordered from `first_day` to `last_day`, both included.
    pub async fn active_between(&self, program_id: &str, first_day: Micros, last_day: Micros) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(customers), 0) AS BIGINT) FROM buyer_gaps \
             WHERE program_id = $1 AND day_us >= $2 AND day_us <= $3 AND previous_us < $2",
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

/// A purchase in a batch: the fact, its order id and amount.
type Purchase<'a> = (&'a LedgerFact, &'a str, i64);

/// Most rows one multi-row statement writes (well under every bound on parameters).
const ROWS_PER_STATEMENT: usize = 200;

/// A purchase seen for the first time and what it changed of its
/// customer's history: which of their orders it is, when they had last
/// ordered before it, when they first ordered (this one included), and
/// whether it was their first order on its day and in its calendar month.
struct Placed {
    ordinal: i64,
    previous: Option<Micros>,
    first: Micros,
    first_on_day: bool,
    first_in_week: bool,
    first_in_month: bool,
}

/// Records a batch's purchases of one program, in a few statements for
/// the whole batch: the customers' orders so far, the new orders, their
/// buyer days and months. Returns each new order (by id) with what it
/// changed, as if the orders had been recorded one by one in batch order.
async fn place_orders(
    tx: &mut AnyConnection,
    program_id: &str,
    purchases: &[Purchase<'_>],
) -> Result<Vec<(String, Placed)>, Error> {
    if purchases.is_empty() {
        return Ok(Vec::new());
    }
    // (count, latest, earliest) of each customer's orders before the batch.
    let customers: BTreeSet<&str> = purchases.iter().map(|(f, _, _)| f.customer_id.as_str()).collect();
    let mut before: HashMap<String, (i64, Option<Micros>, Option<Micros>)> = HashMap::new();
    let customers: Vec<&str> = customers.into_iter().collect();
    for chunk in customers.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT customer_id, COUNT(*), MAX(occurred_at_us), MIN(occurred_at_us) FROM orders \
             WHERE program_id = $1 AND customer_id IN ({}) GROUP BY customer_id",
            list(chunk.len(), 2)
        );
        // Planned with its values each time (not prepared): a plan cached while the
        // table was small would scan it whole once it is not.
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program_id).persistent(false);
        for customer in chunk {
            query = query.bind(*customer);
        }
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = query.fetch_all(&mut *tx).await?;
        before.extend(rows.into_iter().map(|(customer, count, last, first)| (customer, (count, last, first))));
    }
    let mut new_orders: HashSet<String> = HashSet::new();
    for chunk in purchases.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO orders (program_id, order_id, customer_id, amount_minor, occurred_at_us) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING order_id",
            rows(chunk.len(), 5)
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for (fact, order_id, amount_minor) in chunk {
            query = query.bind(program_id).bind(*order_id).bind(&fact.customer_id).bind(*amount_minor).bind(fact.at);
        }
        let inserted: Vec<String> = query.fetch_all(&mut *tx).await?;
        new_orders.extend(inserted);
    }
    // An order id earns once, even if the batch names it twice.
    let mut fresh: Vec<&Purchase<'_>> = Vec::new();
    for purchase in purchases {
        if new_orders.remove(purchase.1) {
            fresh.push(purchase);
        }
    }
    let days: BTreeSet<(&str, Micros)> =
        fresh.iter().map(|(f, _, _)| (f.customer_id.as_str(), domain::day_of(f.at))).collect();
    let mut new_days = insert_periods(tx, "buyer_days", "day_us", program_id, &days).await?;
    let weeks: BTreeSet<(&str, Micros)> =
        fresh.iter().map(|(f, _, _)| (f.customer_id.as_str(), domain::week_start(f.at))).collect();
    let mut new_weeks = insert_periods(tx, "buyer_weeks", "week_us", program_id, &weeks).await?;
    let months: BTreeSet<(&str, Micros)> =
        fresh.iter().map(|(f, _, _)| (f.customer_id.as_str(), domain::month_of(f.at))).collect();
    let mut new_months = insert_periods(tx, "buyer_months", "month_us", program_id, &months).await?;
    let mut placed = Vec::with_capacity(fresh.len());
    for (fact, order_id, _) in fresh {
        let (count, last, first) = before.entry(fact.customer_id.clone()).or_default();
        *count += 1;
        let previous = *last;
        *last = Some(last.map_or(fact.at, |l| l.max(fact.at)));
        *first = Some(first.map_or(fact.at, |f| f.min(fact.at)));
        let day = (fact.customer_id.clone(), domain::day_of(fact.at));
        let week = (fact.customer_id.clone(), domain::week_start(fact.at));
        let month = (fact.customer_id.clone(), domain::month_of(fact.at));
        placed.push((
            (*order_id).to_owned(),
            Placed {
                ordinal: *count,
                previous,
                first: first.unwrap_or(fact.at),
                first_on_day: new_days.remove(&day),
                first_in_week: new_weeks.remove(&week),
                first_in_month: new_months.remove(&month),
            },
        ));
    }
    Ok(placed)
}

/// Inserts (customer, period start) rows into `table` (`buyer_days` or
/// `buyer_months`, whose period column is `column`); returns those that were new.
async fn insert_periods(
    tx: &mut AnyConnection,
    table: &str,
    column: &str,
    program_id: &str,
    periods: &BTreeSet<(&str, Micros)>,
) -> Result<HashSet<(String, Micros)>, Error> {
    let periods: Vec<&(&str, Micros)> = periods.iter().collect();
    let mut new = HashSet::new();
    for chunk in periods.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO {table} (program_id, customer_id, {column}) VALUES {} ON CONFLICT DO NOTHING \
             RETURNING customer_id, {column}",
            rows(chunk.len(), 3)
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for (customer, start) in chunk {
            query = query.bind(program_id).bind(*customer).bind(*start);
        }
        let inserted: Vec<(String, i64)> = query.fetch_all(&mut *tx).await?;
        new.extend(inserted);
    }
    Ok(new)
}

/// Adds a refund to its order; returns the order's customer, none for an
/// order this service never saw (the points service refunds at most what an
/// order was).
async fn refund(
    tx: &mut AnyConnection,
    program_id: &str,
    order_id: &str,
    amount_minor: i64,
) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar(
        "UPDATE orders SET refunded_minor = refunded_minor + $3 WHERE program_id = $1 AND order_id = $2 \
         RETURNING customer_id",
    )
    .bind(program_id)
    .bind(order_id)
    .bind(amount_minor)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Records every (program, customer) first seen on a day; returns the
/// (program, day) of each that was new to the program.
async fn new_members(
    tx: &mut AnyConnection,
    first_seen: &BTreeMap<(String, String), Micros>,
) -> Result<Vec<(String, Micros)>, Error> {
    let seen: Vec<(&(String, String), &Micros)> = first_seen.iter().collect();
    let mut new = Vec::new();
    for chunk in seen.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO members (program_id, customer_id, first_seen_us) VALUES {} ON CONFLICT DO NOTHING \
             RETURNING program_id, first_seen_us",
            rows(chunk.len(), 3)
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for ((program_id, customer_id), day) in chunk {
            query = query.bind(program_id).bind(customer_id).bind(**day);
        }
        let inserted: Vec<(String, i64)> = query.fetch_all(&mut *tx).await?;
        new.extend(inserted);
    }
    Ok(new)
}

/// `$first, $first+1, …` for `count` values.
fn list(count: usize, first: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// `($1, …, $columns), (…)` for `count` rows.
fn rows(count: usize, columns: usize) -> String {
    (0..count).map(|row| format!("({})", list(columns, 1 + row * columns))).collect::<Vec<_>>().join(", ")
}

/// Every customer's churn and reactivation days, from the days they ordered
/// (as [`domain::churn_changes`] moves them order by order).
async fn rebuild_churn(tx: &mut AnyConnection, program_id: &str, churned_days: i32) -> Result<(), Error> {
    const GAPS: &str = "(SELECT program_id, day_us, \
         LEAD(day_us) OVER (PARTITION BY customer_id ORDER BY day_us) AS next_us \
         FROM buyer_days WHERE program_id = $1) AS gaps";
    let after = i64::from(churned_days) * MICROS_PER_DAY;
    sqlx::query("UPDATE kpi_days SET churned = 0, reactivated = 0 WHERE program_id = $1")
        .bind(program_id)
        .execute(&mut *tx)
        .await?;
    // A last order day, or one followed by a gap of `churned_days` or more: churned after it.
    let churned = format!(
        "INSERT INTO kpi_days (program_id, day_us, churned) SELECT program_id, day_us + $2, COUNT(*) FROM {GAPS} \
         WHERE next_us IS NULL OR next_us >= day_us + $2 GROUP BY program_id, day_us \
         ON CONFLICT (program_id, day_us) DO UPDATE SET churned = excluded.churned"
    );
    // The order day that ends such a gap: reactivated.
    let reactivated = format!(
        "INSERT INTO kpi_days (program_id, day_us, reactivated) SELECT program_id, next_us, COUNT(*) FROM {GAPS} \
         WHERE next_us >= day_us + $2 GROUP BY program_id, next_us \
         ON CONFLICT (program_id, day_us) DO UPDATE SET reactivated = excluded.reactivated"
    );
    for sql in [churned, reactivated] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).bind(after).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Every customer's order days with the day before each, from buyer_days.
async fn rebuild_gaps(tx: &mut AnyConnection, program_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM buyer_gaps WHERE program_id = $1").bind(program_id).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO buyer_gaps (program_id, day_us, previous_us, customers) \
         SELECT program_id, day_us, COALESCE(previous_us, $2), COUNT(*) FROM \
         (SELECT program_id, day_us, LAG(day_us) OVER (PARTITION BY customer_id ORDER BY day_us) AS previous_us \
          FROM buyer_days WHERE program_id = $1) AS days \
         GROUP BY program_id, day_us, COALESCE(previous_us, $2)",
    )
    .bind(program_id)
    .bind(domain::NO_DAY)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Every customer's weeks with an order and each week's buyers, from
/// buyer_days (a day's Monday: 1970-01-01 was a Thursday).
async fn rebuild_weeks(tx: &mut AnyConnection, program_id: &str) -> Result<(), Error> {
    let monday = format!("day_us - (((day_us / {MICROS_PER_DAY}) + 3) % 7) * {MICROS_PER_DAY}");
    let statements = [
        "DELETE FROM buyer_weeks WHERE program_id = $1".to_owned(),
        "DELETE FROM week_buyers WHERE program_id = $1".to_owned(),
        format!(
            "INSERT INTO buyer_weeks (program_id, week_us, customer_id) \
             SELECT DISTINCT program_id, {monday}, customer_id FROM buyer_days WHERE program_id = $1"
        ),
        "INSERT INTO week_buyers (program_id, week_us, customers) SELECT program_id, week_us, COUNT(*) \
         FROM buyer_weeks WHERE program_id = $1 GROUP BY program_id, week_us"
            .to_owned(),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Every customer's months with an order and the program's cohorts, from
/// the days they ordered.
async fn rebuild_cohorts(tx: &mut AnyConnection, program_id: &str) -> Result<(), Error> {
    let (first, last): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(day_us), MAX(day_us) FROM buyer_days WHERE program_id = $1")
            .bind(program_id)
            .fetch_one(&mut *tx)
            .await?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(());
    };
    let mut month = domain::month_of(first);
    while month <= last {
        sqlx::query("INSERT INTO calendar_months (month_us) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(month)
            .execute(&mut *tx)
            .await?;
        month = domain::add_months(month, 1);
    }
    for sql in [
        "DELETE FROM buyer_months WHERE program_id = $1",
        "DELETE FROM cohort_months WHERE program_id = $1",
        "INSERT INTO buyer_months (program_id, month_us, customer_id) \
         SELECT DISTINCT b.program_id, (SELECT MAX(m.month_us) FROM calendar_months m WHERE m.month_us <= b.day_us), \
         b.customer_id FROM buyer_days b WHERE b.program_id = $1",
        "INSERT INTO cohort_months (program_id, cohort_us, month_us, customers) \
         SELECT bm.program_id, c.cohort_us, bm.month_us, COUNT(*) FROM buyer_months bm \
         JOIN (SELECT customer_id, MIN(month_us) AS cohort_us FROM buyer_months WHERE program_id = $1 \
               GROUP BY customer_id) c ON c.customer_id = bm.customer_id \
         WHERE bm.program_id = $1 GROUP BY bm.program_id, c.cohort_us, bm.month_us",
    ] {
        sqlx::query(sql).bind(program_id).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Numbers the changes and writes them, last in their transaction: the
/// log's row stays locked until commit, so numbers commit in order.
async fn record_changes(tx: &mut AnyConnection, changes: &[SegmentChange]) -> Result<(), Error> {
    let Ok(count) = i64::try_from(changes.len()) else { return Err(Error::Corrupt("too many changes".into())) };
    if count == 0 {
        return Ok(());
    }
    let last: i64 = sqlx::query_scalar(
        "UPDATE segment_log SET last_sequence = last_sequence + $1 WHERE id = 1 RETURNING last_sequence",
    )
    .bind(count)
    .fetch_one(&mut *tx)
    .await?;
    let numbered: Vec<(i64, &SegmentChange)> = (last - count + 1..).zip(changes).collect();
    for chunk in numbered.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO segment_changes (sequence, program_id, customer_id, from_segment, to_segment, changed_at_us) \
             VALUES {}",
            rows(chunk.len(), 6)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (sequence, change) in chunk {
            query = query
                .bind(*sequence)
                .bind(&change.program_id)
                .bind(&change.customer_id)
                .bind(change.from.map_or("", Segment::as_str))
                .bind(change.to.as_str())
                .bind(change.at);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Writes the customers' rows (of one program) from their orders, as of
/// `now`, and returns the changes of segment (sequence 0 until
/// [`record_changes`] numbers them). The rows first, then the orders: a
/// review and a batch from the ledger take turns, and the later one writes
/// from the orders as they now are. One statement each for the locks, the
/// orders and the rows, per [`ROWS_PER_STATEMENT`] customers.
async fn refresh_many(
    tx: &mut AnyConnection,
    dialect: Dialect,
    settings: &Settings,
    program_id: &str,
    customers: &[&str],
    now: Micros,
) -> Result<Vec<SegmentChange>, Error> {
    let mut changes = Vec::new();
    for chunk in customers.chunks(ROWS_PER_STATEMENT) {
        let lock = format!(
            "SELECT customer_id, segment FROM customers WHERE program_id = $1 AND customer_id IN ({}){}",
            list(chunk.len(), 2),
            dialect.for_update()
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(lock)).bind(program_id).persistent(false);
        for customer in chunk {
            query = query.bind(*customer);
        }
        let stored: Vec<(String, String)> = query.fetch_all(&mut *tx).await?;
        let stored: HashMap<String, String> = stored.into_iter().collect();
        let orders = format!(
            "SELECT customer_id, occurred_at_us, amount_minor - refunded_minor FROM orders \
             WHERE program_id = $1 AND customer_id IN ({}) AND refunded_minor < amount_minor \
             ORDER BY customer_id, occurred_at_us",
            list(chunk.len(), 2)
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(orders)).bind(program_id).persistent(false);
        for customer in chunk {
            query = query.bind(*customer);
        }
        let orders: Vec<(String, i64, i64)> = query.fetch_all(&mut *tx).await?;
        let mut histories: HashMap<&str, History> = chunk.iter().map(|c| (*c, History::default())).collect();
        for (customer, at, amount) in &orders {
            if let Some(history) = histories.get_mut(customer.as_str()) {
                history.order_times.push(*at);
                history.spend_minor += amount;
            }
        }
        let upsert = format!(
            "INSERT INTO customers (program_id, customer_id, first_order_us, last_order_us, order_count, spend_minor, \
             segment, review_at_us) VALUES {} ON CONFLICT (program_id, customer_id) DO \
             UPDATE SET first_order_us = excluded.first_order_us, last_order_us = excluded.last_order_us, \
             order_count = excluded.order_count, spend_minor = excluded.spend_minor, segment = excluded.segment, \
             review_at_us = excluded.review_at_us",
            rows(chunk.len(), 8)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(upsert));
        for customer in chunk {
            let history = &histories[customer];
            let (segment, review_at) = history.segment(settings, now);
            let from = stored.get(*customer).map(|s| parse_segment(s)).transpose()?;
            if from != Some(segment) {
                changes.push(SegmentChange {
                    sequence: 0,
                    program_id: program_id.to_owned(),
                    customer_id: (*customer).to_owned(),
                    from,
                    to: segment,
                    at: now,
                });
            }
            query = query
                .bind(program_id)
                .bind(*customer)
                .bind(history.first_order())
                .bind(history.last_order())
                .bind(history.order_count())
                .bind(history.spend_minor)
                .bind(segment.as_str())
                .bind(review_at);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(changes)
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

/// The program's settings, read once per transaction.
async fn settings_cached(
    conn: &mut AnyConnection,
    cache: &mut HashMap<String, Settings>,
    program_id: &str,
) -> Result<Settings, Error> {
    if let Some(settings) = cache.get(program_id) {
        return Ok(settings.clone());
    }
    let settings = settings_in(conn, program_id, "").await?;
    cache.insert(program_id.to_owned(), settings.clone());
    Ok(settings)
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
        churned: row.try_get("churned")?,
        reactivated: row.try_get("reactivated")?,
        day_buyers: row.try_get("day_buyers")?,
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
